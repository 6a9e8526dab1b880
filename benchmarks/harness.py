"""What every benchmark shares: running one peer in its own process, the Node sink server, and
the accounting of what a peer dropped (a run that dropped anything has no figure)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SINK = HERE / "sink"


def no_drops() -> dict:
    return {"messages": 0, "by_reason": {}, "runs_with_drops": 0, "runs": 0}


def add_drops(total: dict, result: dict) -> None:
    total["runs"] += 1
    if result["dropped"]:
        total["messages"] += result["dropped"]
        total["runs_with_drops"] += 1
        for reason, n in result["drops_by_reason"].items():
            total["by_reason"][reason] = total["by_reason"].get(reason, 0) + n


def drop_failure(drops: dict) -> str | None:
    """Why the workload failed ("hermes dropped 1234 messages (overflow) in 2 of 5 runs"), or None."""
    parts = [f"{peer} dropped {d['messages']:,} messages ({', '.join(sorted(d['by_reason']))}) "
             f"in {d['runs_with_drops']} of {d['runs']} runs"
             for peer, d in drops.items() if d["messages"]]
    return "; ".join(parts) or None


def run_peer(peer: str, workload: str, size: int, count: int, url: str) -> dict:
    env = dict(os.environ)
    if peer == "hermes-pure":
        env["HERMES_GEVENT_PURE_PYTHON"] = "1"
    out = subprocess.run([sys.executable, "-m", "benchmarks.peer", peer, workload, str(size), str(count), url],
                         cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{peer} {workload} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_node_deps() -> None:
    if not all((SINK / "node_modules" / name).exists() for name in ("ws", "bufferutil", "utf-8-validate")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=SINK, check=True, timeout=300)


def start_sink(port: int = 0, prefix: list[str] | None = None, deflate: bool = False):
    """The Node sink server (``deflate``: agreeing to permessage-deflate); returns (process, port)."""
    args = [*(prefix or []), "node", str(SINK / "server.js"), str(port), *(["deflate"] if deflate else [])]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        stop(proc)
        raise RuntimeError("the Node sink server did not start")
    return proc, int(line.split()[1])


def stop(proc, timeout: float = 5) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
