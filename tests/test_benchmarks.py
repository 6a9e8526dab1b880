"""The benchmarks run (a fraction of a second per workload): this checks they work, not the figures.

It does check what every run must report: the messages each peer dropped (none, for
hermes with its default queue: --quick never sends more than it holds), each peer's CPU
time per message in every workload that runs peers (printed beside its figure), the Flask
app's delivery lag and its worker's CPU per request, the outbox file's figures (OUTBOX_SYNC="always" beside memory
only, the spill and the reload, the ticker's gap beside its bound, the takeover of a
SIGKILLed holder), and the PostgreSQL outbox's beside them (the same, the cost of a
transactional send, the takeover by lease) - on the session's cluster (the postgres/pg_url
fixtures) through --pg-url; without PostgreSQL, the reason they were skipped. The private
cluster the benchmarks start on their own (benchmarks/pgserver.py) is checked apart."""

import json
import os
import re
import shutil
import signal
import sys

import gevent.subprocess
import pytest

from .support import TESTS, run_script, t
from .test_hub import MAX_GAP_MS

WORKLOADS = ["one-way 100 B", "one-way 1 KiB", "one-way 64 KiB", "one-way 64 KiB bytes", "receive 100 B", "echo 100 B"]
ACKED = ["one-way 100 B, acks", "one-way 1 KiB, acks"]
PEERS = {"raw", "websockets", "hermes", "hermes-pure"}


@pytest.mark.skipif(shutil.which("node") is None, reason="the benchmark server runs on Node.js (node not found)")
def test_every_benchmark_runs(tmp_path, request):
    try:
        pg_url = request.getfixturevalue("pg_url")  # a fresh database of the session's cluster
    except pytest.skip.Exception:
        pg_url = None  # PostgreSQL is not installed: the run says why it skips those
    output = tmp_path / "bench.json"
    text, _ = run_script([sys.executable, "-m", "benchmarks", "--quick", "--output", str(output),
                          *(["--pg-url", pg_url] if pg_url else [])], t(300))
    for name in WORKLOADS:
        assert name in text
    report = json.loads(output.read_text())
    assert list(report["workloads"]) == WORKLOADS
    for name, row in report["workloads"].items():
        assert row["failed"] is None, (name, row["failed"])
        assert set(row["peers"]) == PEERS
        assert all(p["median"] > 0 for p in row["peers"].values())
        check_cpu(name, row["peers"], PEERS)
        assert row["cpu_ratio_to_raw"] > 0 and row["cpu_ratio_to_websockets"] > 0
        # round by round, hermes over each baseline (one round here: the ratio of the two figures)
        assert row["paired_ratio_to"]["websockets"] == pytest.approx(row["ratio_to_websockets"])
        assert row["paired_ratio_to"]["raw"] == pytest.approx(row["ratio_to_raw"])
        # printed beside each peer's figure: "raw  96,839  10.31 us" (and so on for every peer)
        line = next(x for x in text.splitlines() if x.partition(" raw ")[0].rstrip() == name)
        assert len(re.findall(r"[\d,.]+ +[\d.]+ us", line)) == len(PEERS), line
        assert set(row["dropped"]) == PEERS
        assert all(d["messages"] == 0 and d["runs"] == 1 for d in row["dropped"].values()), (name, row["dropped"])
    # the sink's ceiling (frames built in advance) beside what a Node client drives it to, and the
    # 100 B row's share of it, printed with its target
    assert report["sink_capacity"]["ceiling_msgs_per_s"] > report["sink_capacity"]["msgs_per_s"] > 0
    ceiling = report["workloads"]["one-way 100 B"]["ceiling"]
    assert 0 < ceiling["share"] and ceiling["target"] == 0.35 and ceiling["met"] == (ceiling["share"] >= 0.35)
    assert re.search(r"hermes at \d+% of the sink's ceiling .*target 35%: (met|NOT met)", text)
    assert list(report["acks"]) == ACKED
    for name, row in report["acks"].items():
        assert name in text
        assert row["failed"] is None, (name, row["failed"])
        assert row["off"]["median"] > 0 and row["on"]["median"] > 0 and row["ratio"] > 0
        check_cpu(name, {side: row[side] for side in ("off", "on")}, {"off", "on"})
        assert all(d["messages"] == 0 and d["runs"] == 1 for d in row["dropped"].values()), (name, row["dropped"])
        # every message of the "on" run was acknowledged (the harness fails a run left unacked)
        assert row["acks"]["runs_left_unacked"] == 0 and row["acks"]["messages_acked"] >= row["count"], row["acks"]
        assert row["acks"]["handler_saw_acks"] == 0  # acknowledgements are the client's, not the handler's
        assert row["on"]["bytes_per_message"] > row["off"]["bytes_per_message"]  # the id the client added
    assert report["enqueue"]["failed"] is None and report["enqueue"]["dropped"]["hermes"]["messages"] == 0
    assert report["enqueue"]["hermes_median_ns"] > 0 and report["memory"]["bytes_per_message"] > 0
    check_cpu("enqueue", report["enqueue"]["peers"], {"hermes", "raw"})
    assert report["metrics"]["on_ns"] > 0 and report["metrics"]["off_ns"] > 0  # the probe ran (no timing asserts)
    assert report["recovery"]["seconds"] > 0
    check_outbox(report["outbox"], text)
    check_postgres(report["outbox"]["postgres"], text, pg_url, request)
    flask = report["flask"]
    if "skipped" not in flask:
        assert flask["plain_rps"] > 0 and flask["send_rps"] > 0
        assert flask["failed"] is None and flask["dropped"]["messages"] == 0
        lag = flask["lag_ms"]
        assert lag["messages"] > 0
        assert all(isinstance(lag[key], (int, float)) for key in ("p50", "p99", "max")), lag
        assert isinstance(flask["queue_size_max"], int)
        assert flask["request_latency_ms"]["p99"] >= flask["request_latency_ms"]["p50"] > 0
        cpu = flask["cpu_us_per_request"]  # the worker's, from /proc/<pid>/stat: it did serve the requests
        assert cpu["plain"] > 0 and cpu["send"] > 0 and "CPU per request" in text, cpu


def check_cpu(name, peers, expected):
    """Every peer (or side) has its CPU us per message: a positive number, the median of its runs."""
    assert set(peers) == set(expected), (name, set(peers))
    for peer, figures in peers.items():
        value = figures.get("cpu_us_per_message")
        assert isinstance(value, (int, float)) and value > 0, (name, peer, value)
        assert len(figures["cpu_us_runs"]) == 1 and all(v > 0 for v in figures["cpu_us_runs"]), (name, peer)


def check_outbox(outbox, text):
    """The outbox file's three figures are there, beside their targets; none of their timings is checked."""
    assert set(outbox) >= {"always", "spill", "reload", "ticker", "load_average_at_start"}
    assert '"always"' in text and "spill at stop()" in text and "reload from start()" in text and "hub ticker" in text
    always = outbox["always"]
    assert always["failed"] is None, always["failed"]
    assert set(always["dropped"]) == {"always", "memory"}
    assert all(d["messages"] == 0 and d["runs"] == 1 for d in always["dropped"].values()), always["dropped"]
    assert always["always"]["median"] > 0 and always["memory"]["median"] > 0 and always["ratio"] > 0
    assert always["target"] == 20_000 and isinstance(always["met"], bool)
    assert always["commits"] > 0 and always["messages_per_commit"] >= 1  # group commits were counted
    assert always["outbox_errors"] == 0
    for part in ("spill", "reload"):
        row = outbox[part]
        assert row["failed"] is None, (part, row["failed"])
        assert row["dropped"]["messages"] == 0 and row["seconds"] > 0 and row["target_seconds"] == 1.0
    assert outbox["spill"]["spilled"] == outbox["spill"]["count"]
    assert outbox["reload"]["reloaded"] == outbox["reload"]["count"]
    assert outbox["reload"]["delivered_seconds"] is not None  # the server got every one taken over
    assert {"seen_seconds", "ticker_max_gap_ms"} <= set(outbox["reload"]) and "ticker_max_gap_ms" in outbox["spill"]
    ticker = outbox["ticker"]
    assert ticker["bound_ms"] == MAX_GAP_MS  # the bound the ticker test holds the hub to, printed beside the gap
    assert isinstance(ticker["max_gap_ms"], (int, float))
    takeover = outbox["takeover"]
    assert set(takeover) == {"shortened"}  # --quick: no run with the production lease (25 s)
    check_takeover(takeover["shortened"], "file")
    assert "takeover after SIGKILL" in text


def check_takeover(row, store):
    assert row["failed"] is None, row["failed"]
    assert row["store"] == store and row["production"] is False and row["rounds"] == 1
    assert row["lease_timeout"] < 25 and row["bound_seconds"] > 0
    assert row["dropped"]["messages"] == 0 and row["seconds"] > 0
    (run,) = row["runs"]
    assert run["accepted"] == run["reloaded"] == row["count"]  # the holder's, every one taken over by the live client
    assert {"waited_for_claim_seconds", "claim_seconds", "delivery_seconds"} <= set(run)


def check_postgres(pg, text, pg_url, request):
    """The PostgreSQL figures beside the file's, on --pg-url's database; none of their timings is checked."""
    if pg_url is None:
        assert set(pg) == {"skipped"} and pg["skipped"] in text
        return
    assert pg["server"]["private"] is False and pg["server"]["shown"].startswith("postgresql://127.0.0.1:")
    assert "PostgreSQL" in text and "transactional send" in text and "(--pg-url)" in text
    always = pg["always"]
    assert always["failed"] is None, always["failed"]
    assert always["target"] == 10_000 and isinstance(always["met"], bool)
    assert always["postgres"]["median"] > 0 and always["ratio"] > 0 and always["ratio_to_file"] > 0
    assert always["dropped"]["postgres"]["messages"] == 0 and always["dropped"]["postgres"]["runs"] == 1
    assert always["commits"] > 0 and always["messages_per_commit"] >= 1 and always["outbox_errors"] == 0
    for part in ("spill", "reload"):
        row = pg[part]
        assert row["failed"] is None, (part, row["failed"])
        assert row["dropped"]["messages"] == 0 and row["seconds"] > 0 and row["target_seconds"] == 2.0
    assert pg["spill"]["spilled"] == pg["spill"]["count"] and pg["reload"]["reloaded"] == pg["reload"]["count"]
    assert pg["reload"]["delivered_seconds"] is not None
    txn = pg["txn"]
    assert txn["failed"] is None, txn["failed"]
    assert txn["dropped"]["messages"] == 0 and txn["target"] is None
    for side in ("without_send", "with_send"):
        assert txn[side]["transactions"] == txn["pairs_per_round"]
        assert txn[side]["p99_ms"] >= txn[side]["p50_ms"] > 0
    assert isinstance(txn["added_p50_ms"], float) and isinstance(txn["added_p99_ms"], float)
    assert txn["delivered"] == txn["pairs_per_round"] + txn["warmup_pairs"]  # every transactional send went out
    assert set(pg["takeover"]) == {"shortened"}
    check_takeover(pg["takeover"]["shortened"], "postgres")
    assert pg["takeover"]["shortened"]["lease_age_at_kill_ms"] is not None
    # every table the benchmarks made in the database is dropped again
    postgres = request.getfixturevalue("postgres")
    assert postgres.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'hb\\_%'", url=pg_url) == []


def test_the_benchmarks_private_postgresql_cluster_starts_and_goes(postgres):
    """``python -m benchmarks`` without --pg-url: benchmarks/pgserver.py runs a cluster of its own,
    says where, and removes it when told to go (SIGTERM by its PID) - or when its stdin closes."""
    for how in ("sigterm", "stdin"):
        proc = gevent.subprocess.Popen([sys.executable, "-m", "benchmarks.pgserver"], cwd=str(TESTS.parent),
                                       stdin=gevent.subprocess.PIPE, stdout=gevent.subprocess.PIPE)
        try:
            with gevent.Timeout(t(60)):
                line = json.loads(proc.stdout.readline())
            assert "unavailable" not in line, line  # the postgres fixture did start one
            assert line["url"].startswith("postgresql://hermes:") and "@127.0.0.1:" in line["url"]
            data = line["data"]
            assert postgres.execute("SHOW fsync", url=line["url"]) == [("on",)]
            if how == "sigterm":
                proc.send_signal(signal.SIGTERM)
            else:
                proc.stdin.close()
            assert proc.wait(t(30)) == 0
            assert not os.path.exists(os.path.dirname(os.path.dirname(data)))  # the cluster's directory
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(t(5))
