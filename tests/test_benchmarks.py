"""The benchmarks run (a fraction of a second per workload): this checks they work, not the figures.

It does check what every run must report: the messages each peer dropped (none, for
hermes with its default queue: --quick never sends more than it holds), and the Flask
app's delivery lag."""

import json
import shutil
import sys

import pytest

from .support import run_script, t

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
    assert report["recovery"]["seconds"] > 0
    flask = report["flask"]
    if "skipped" not in flask:
        assert flask["plain_rps"] > 0 and flask["send_rps"] > 0
        assert flask["failed"] is None and flask["dropped"]["messages"] == 0
        lag = flask["lag_ms"]
        assert lag["messages"] > 0
        assert all(isinstance(lag[key], (int, float)) for key in ("p50", "p99", "max")), lag
        assert isinstance(flask["queue_size_max"], int)
        assert flask["request_latency_ms"]["p99"] >= flask["request_latency_ms"]["p50"] > 0
