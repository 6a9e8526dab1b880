"""The benchmarks run (a fraction of a second per workload): this checks they work, not the figures.

It does check what every run must report: the messages each peer dropped (none, for
hermes with its default queue: --quick never sends more than it holds), the Flask
app's delivery lag, and the outbox file's three figures (OUTBOX_SYNC="always" beside memory
only, the spill and the reload, the ticker's gap beside its bound)."""

import json
import shutil
import sys

import pytest

from .support import run_script, t
from .test_hub import MAX_GAP_MS

WORKLOADS = ["one-way 100 B", "one-way 1 KiB", "one-way 64 KiB", "one-way 64 KiB bytes", "receive 100 B", "echo 100 B"]
ACKED = ["one-way 100 B, acks", "one-way 1 KiB, acks"]
PEERS = {"raw", "websockets", "hermes", "hermes-pure"}


@pytest.mark.skipif(shutil.which("node") is None, reason="the benchmark server runs on Node.js (node not found)")
def test_every_benchmark_runs(tmp_path):
    output = tmp_path / "bench.json"
    text, _ = run_script([sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)], t(300))
    for name in WORKLOADS:
        assert name in text
    report = json.loads(output.read_text())
    assert list(report["workloads"]) == WORKLOADS
    for name, row in report["workloads"].items():
        assert row["failed"] is None, (name, row["failed"])
        assert set(row["peers"]) == PEERS
        assert all(p["median"] > 0 for p in row["peers"].values())
        assert set(row["dropped"]) == PEERS
        assert all(d["messages"] == 0 and d["runs"] == 1 for d in row["dropped"].values()), (name, row["dropped"])
    assert list(report["acks"]) == ACKED
    for name, row in report["acks"].items():
        assert name in text
        assert row["failed"] is None, (name, row["failed"])
        assert row["off"]["median"] > 0 and row["on"]["median"] > 0 and row["ratio"] > 0
        assert all(d["messages"] == 0 and d["runs"] == 1 for d in row["dropped"].values()), (name, row["dropped"])
        # every message of the "on" run was acknowledged (the harness fails a run left unacked)
        assert row["acks"]["runs_left_unacked"] == 0 and row["acks"]["messages_acked"] >= row["count"], row["acks"]
        assert row["acks"]["handler_saw_acks"] == 0  # acknowledgements are the client's, not the handler's
        assert row["on"]["bytes_per_message"] > row["off"]["bytes_per_message"]  # the id the client added
    assert report["enqueue"]["failed"] is None and report["enqueue"]["dropped"]["hermes"]["messages"] == 0
    assert report["enqueue"]["hermes_median_ns"] > 0 and report["memory"]["bytes_per_message"] > 0
    assert report["metrics"]["on_ns"] > 0 and report["metrics"]["off_ns"] > 0  # the probe ran (no timing asserts)
    assert report["recovery"]["seconds"] > 0
    check_outbox(report["outbox"], text)
    flask = report["flask"]
    if "skipped" not in flask:
        assert flask["plain_rps"] > 0 and flask["send_rps"] > 0
        assert flask["failed"] is None and flask["dropped"]["messages"] == 0
        lag = flask["lag_ms"]
        assert lag["messages"] > 0
        assert all(isinstance(lag[key], (int, float)) for key in ("p50", "p99", "max")), lag
        assert isinstance(flask["queue_size_max"], int)
        assert flask["request_latency_ms"]["p99"] >= flask["request_latency_ms"]["p50"] > 0


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
