"""The benchmarks run (a fraction of a second per workload): this checks they work, not the figures."""

import json
import shutil
import sys

import pytest

from .support import run_script, t

WORKLOADS = ["one-way 100 B", "one-way 1 KiB", "one-way 64 KiB", "one-way 64 KiB bytes", "receive 100 B", "echo 100 B"]


@pytest.mark.skipif(shutil.which("node") is None, reason="the benchmark server runs on Node.js (node not found)")
def test_every_benchmark_runs(tmp_path):
    output = tmp_path / "bench.json"
    text, _ = run_script([sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)], t(300))
    for name in WORKLOADS:
        assert name in text
    report = json.loads(output.read_text())
    assert list(report["workloads"]) == WORKLOADS
    for row in report["workloads"].values():
        assert set(row["peers"]) == {"raw", "websockets", "hermes", "hermes-pure"}
        assert all(p["median"] > 0 for p in row["peers"].values())
    assert report["enqueue"]["hermes_median_ns"] > 0 and report["memory"]["bytes_per_message"] > 0
    assert report["recovery"]["seconds"] > 0
    assert "skipped" in report["flask"] or report["flask"]["plain_rps"] > 0
