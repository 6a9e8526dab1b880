"""``python -m benchmarks``: every workload, every peer, alternating rounds, one run.

Peers: a raw websocket-client loop under gevent (the baseline), the ``websockets``
asyncio client, and hermes_gevent (with its C speedups, and pure Python). All talk
to the same Node ``ws`` server on 127.0.0.1 (benchmarks/sink), whose own capacity
is measured first so the table shows it is not the bottleneck. Prints the table of
medians and ratios, writes benchmarks/results/latest.json, and draws
benchmarks/results/chart.png when matplotlib is installed.

hermes runs with the defaults a user gets (MAX_QUEUE_SIZE 10000, drop_oldest) and its
producers yield as a gevent app does (sleep(0) every 100 sends). Every workload
reports the messages each peer dropped; where hermes dropped any, the workload
reports FAILED instead of a figure, and the command exits with status 1 (after
writing the JSON).

Acknowledgements: hermes alone sends the same dicts with application-level
acknowledgements off and on (ACK_TIMEOUT 5 s, every other setting a user's), the
two alternating in each round; the server acknowledges in batches. The ratio on / off
is the cost of acknowledgements. An "on" run counts only once the server has every
id and the client's flush() says every message is acknowledged; one that ends with
messages unacknowledged fails the workload, as drops do.

The outbox file (OUTBOX_PATH, benchmarks/outbox.py), hermes alone: OUTBOX_SYNC="always" with 64
request-handler greenlets beside the same workload in memory only (OUTBOX_PATH=None), every
other setting a user's; the "stop" spill at stop() and the reload at start() of 100,000 messages
(MAX_QUEUE_SIZE raised to 100,000 for that figure alone); and the largest gap of a 1 ms ticker
greenlet while "always" commits, beside the bound of the ticker test (tests/test_hub.py). A run
that dropped, refused or lost a message fails its workload, as above.

    python -m benchmarks             # 5 rounds (a few minutes)
    python -m benchmarks --quick     # one short round: checks that everything runs
    python -m benchmarks --only outbox   # the outbox benchmarks alone, merged into the existing JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hermes_gevent.fairness import MAX_BUDGET

HERE = Path(__file__).parent
SINK = HERE / "sink"
RESULTS = HERE / "results"
PEERS = ["raw", "websockets", "hermes", "hermes-pure"]
BASELINES = ["raw", "websockets"]

# name, workload, message size, messages per run, unit, target ratio to the best peer
THROUGHPUT = [
    ("one-way 100 B", "oneway", 100, 100_000, "msg/s", 1.5),
    ("one-way 1 KiB", "oneway", 1024, 50_000, "msg/s", 1.0),
    ("one-way 64 KiB", "oneway", 65536, 3_000, "MB/s", 1.0),
    ("one-way 64 KiB bytes", "oneway-bin", 65536, 3_000, "MB/s", 1.0),
    ("receive 100 B", "receive", 100, 200_000, "msg/s", 1.0),
    ("echo 100 B", "echo", 100, 5_000, "round trips/s", 1.0),
]

# name, message size (JSON before the id), messages per run, target ratio acks on / off (None: reported)
ACKED = [
    ("one-way 100 B, acks", 100, 100_000, 0.5),
    ("one-way 1 KiB, acks", 1024, 50_000, None),
]
#: the two sides of an acknowledgement workload: the same dicts, acknowledgements off and on
ACK_SIDES = {"off": "oneway-json", "on": "oneway-ack"}

#: The outbox benchmarks (benchmarks/outbox.py): messages per run, and the targets of the issue.
OUTBOX_ALWAYS_COUNT = 100_000  # over the 64 handler greenlets, 100 B each
OUTBOX_ALWAYS_TARGET = 20_000  # msg/s delivered, OUTBOX_SYNC="always"
OUTBOX_SPILL_COUNT = 100_000  # spilled at stop(), then taken over at start()
OUTBOX_SECONDS_TARGET = 1.0  # each of spill and reload
#: MAX_QUEUE_SIZE a user gets (hermes_gevent's default)
DEFAULT_QUEUE_SIZE = 10_000
#: The ticker test's bound on the largest gap between ticks (tests/test_hub.py MAX_GAP_MS).
TICKER_BOUND_MS = 50
#: The sender's longest turn while the queue is above sender.BACKLOG_URGENT (fairness.MAX_BUDGET).
CATCH_UP_MS = MAX_BUDGET * 1000
#: the two sides of the "always" workload: the same handlers, with the file and in memory only
OUTBOX_SIDES = ("always", "memory")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one short round (the test suite uses it)")
    parser.add_argument("--output", default=str(RESULTS / "latest.json"))
    parser.add_argument("--only", choices=["outbox"],
                        help="run these benchmarks alone and replace their part of the JSON at --output "
                             "(the rest of it stays as it was)")
    args = parser.parse_args()
    scale, rounds = (0.02, 1) if args.quick else (1.0, args.rounds)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its servers (finally)

    ensure_node_deps()
    if args.only == "outbox":
        return only_outbox(Path(args.output), scale, rounds, args.quick)
    sink, port = start_sink()
    url = f"ws://127.0.0.1:{port}"
    report: dict = {"machine": machine(), "rounds": rounds, "quick": args.quick, "workloads": {}}
    try:
        report["sink_capacity"] = sink_capacity(url, scale)
        for name, workload, size, count, unit, target in THROUGHPUT:
            row = run_workload(workload, size, max(20, int(count * scale)), unit, target, rounds, url)
            report["workloads"][name] = row
            print_row(name, row)
        report["acks"] = {}
        for name, size, count, target in ACKED:
            row = run_acked(size, max(20, int(count * scale)), target, rounds, url)
            text_row = report["workloads"].get(name.removesuffix(", acks"))
            if text_row and not text_row["failed"] and row["on"]:  # the same size as text, acks off
                row["text_hermes_median"] = text_row["peers"]["hermes"]["median"]
                row["ratio_to_text"] = row["on"]["median"] / row["text_hermes_median"]
            report["acks"][name] = row
            print_acked(name, row)
        report["enqueue"] = enqueue_cost(url, max(1000, int(20_000 * scale)), rounds)
        print_enqueue(report["enqueue"])
        report["metrics"] = probe("metrics", str(max(5000, int(200_000 * scale))))
        print_metrics(report["metrics"])
        report["memory"] = probe("memory", str(max(1000, int(100_000 * scale))))
        print(f"memory: {report['memory']['bytes_per_message']} bytes per queued 100-byte message "
              f"(target <= 250); queue op {report['memory']['op_ns_at_1k']} ns at 1k deep, "
              f"{report['memory']['op_ns_at_100k']} ns at 100k deep")
        report["outbox"] = outbox_benchmarks(url, scale, rounds, args.quick)
        print_outbox(report["outbox"])
    finally:
        stop(sink)
    report["recovery"] = probe("recovery", str(free_port()), "0.5")
    print(f"recovery: first message delivered {report['recovery']['seconds'] * 1000:.0f} ms after the server "
          f"came back (configured retry delay {report['recovery']['retry_delay'] * 1000:.0f} ms)")
    report["flask"] = flask_in_gunicorn(scale, rounds)
    print_flask(report["flask"])

    busy = [w["sink_busy_max"] for w in report["workloads"].values() if w["sink_busy_max"] is not None]
    busy += [b for w in report["acks"].values() for b in w["sink_busy_max"].values() if b is not None]
    capacity = report["sink_capacity"]["msgs_per_s"]
    print(f"sink server: at most {max(busy, default=0):.0%} of one core busy while it received or pushed, in any "
          f"run; a Node client drives it to {capacity:,.0f} msg/s of 100 B")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    draw_chart(report, Path(args.output).with_name("chart.png"))
    failed = failures(report)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def run_workload(workload: str, size: int, count: int, unit: str, target: float, rounds: int, url: str) -> dict:
    """Every peer, ``rounds`` times, alternating who goes first; the drops of every run."""
    runs: dict[str, list[float]] = {peer: [] for peer in PEERS}
    drops = {peer: no_drops() for peer in PEERS}
    busy: list[float] = []
    for r in range(rounds):
        order = PEERS[r % len(PEERS):] + PEERS[: r % len(PEERS)]  # alternate who goes first
        for peer in order:
            result = run_peer(peer, workload, size, count, url)
            add_drops(drops[peer], result)
            if result["seconds"] is None:
                continue  # it dropped messages: a failure, not a figure
            if result["sink_busy"] is not None:
                busy.append(result["sink_busy"])
            rate = count / result["seconds"]
            runs[peer].append(rate * size / 1e6 if unit == "MB/s" else rate)
    failed = drop_failure(drops)
    row = {"unit": unit, "target": target, "failed": failed, "met": False} if failed else summarize(runs, unit, target)
    row["dropped"] = drops
    # The server runs on one core: well under 100% busy means it never limited a peer.
    row["sink_busy_max"] = max(busy) if busy else None
    return row


def run_acked(size: int, count: int, target: float | None, rounds: int, url: str) -> dict:
    """hermes sending dicts with acknowledgements off and on, alternating who goes first."""
    runs: dict[str, list[float]] = {side: [] for side in ACK_SIDES}
    drops = {side: no_drops() for side in ACK_SIDES}
    ack_timeouts = set()
    acks = {"messages_acked": 0, "messages_resent": 0, "sink_duplicates": 0, "handler_saw_acks": 0,
            "runs_left_unacked": 0, "unacked_left": 0}
    busy: dict[str, list[float]] = {side: [] for side in ACK_SIDES}
    wire: dict[str, list[float]] = {side: [] for side in ACK_SIDES}
    sides = list(ACK_SIDES)
    for r in range(rounds):
        for side in sides[r % 2:] + sides[: r % 2]:
            result = run_peer("hermes", ACK_SIDES[side], size, count, url)
            add_drops(drops[side], result)
            if side == "on":
                ack_timeouts.add(result["ack_timeout"])
                acks["messages_acked"] += result["messages_acked"] or 0
                acks["messages_resent"] += result["messages_resent"] or 0
                acks["sink_duplicates"] += result.get("sink_duplicates") or 0
                acks["handler_saw_acks"] += result["handler_saw_other"]
                if result["all_acked"] is False:
                    acks["runs_left_unacked"] += 1
                    acks["unacked_left"] += result["unacked"] or 0
            if result["seconds"] is None:
                continue  # dropped, or left messages unacknowledged: a failure, not a figure
            busy[side].append(result["sink_busy"])
            wire[side].append(result["bytes_per_message"])
            runs[side].append(count / result["seconds"])
    reasons = [drop_failure({f"hermes (acks {side})": d for side, d in drops.items()})]
    if acks["runs_left_unacked"]:
        reasons.append(f"hermes left {acks['unacked_left']:,} messages unacknowledged "
                       f"in {acks['runs_left_unacked']} of {rounds} runs")
    failed = "; ".join(r for r in reasons if r) or None
    sides_summary = {side: {"median": statistics.median(values), "runs": [round(v, 1) for v in values],
                            "bytes_per_message": statistics.median(wire[side])} if values else None
                     for side, values in runs.items()}
    ratio = (sides_summary["on"]["median"] / sides_summary["off"]["median"]
             if not failed and sides_summary["on"] and sides_summary["off"] else None)
    return {
        "unit": "msg/s", "size": size, "count": count, "target": target, **sides_summary, "ratio": ratio,
        "met": ratio is not None and (target is None or ratio >= target), "failed": failed,
        "dropped": drops, "acks": acks,
        "ack_timeout": sorted(ack_timeouts),  # the client's, as the peer reports it
        "sink_busy_max": {side: max(values) if values else None for side, values in busy.items()},
    }


def print_acked(name: str, row: dict) -> None:
    if row["failed"]:
        print(f"{name}: FAILED — {row['failed']}", flush=True)
        return
    acks = row["acks"]
    target = (f"target x{row['target']} of off: {'met' if row['met'] else 'NOT met'}" if row["target"] is not None
              else "reported")
    text = (f"; x{row['ratio_to_text']:.2f} of hermes sending text (one-way, {row['text_hermes_median']:,.0f})"
            if "ratio_to_text" in row else "")
    busy = row["sink_busy_max"]
    print(f"{name:<20} off {row['off']['median']:>9,.0f}  on {row['on']['median']:>9,.0f} msg/s of dicts  "
          f"x{row['ratio']:.2f} of off, {target}{text}; 0 dropped, 0 unacknowledged, "
          f"{acks['messages_acked']:,} acknowledged, {acks['messages_resent']:,} resent, "
          f"{acks['sink_duplicates']:,} duplicates at the server; {row['on']['bytes_per_message']:.0f} B per "
          f"message with its id ({row['off']['bytes_per_message']:.0f} B without); sink busy <= "
          f"{busy['off']:.0%} off, {busy['on']:.0%} on", flush=True)


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


def failures(report: dict) -> list[str]:
    found = [f"{name}: {row['failed']}" for name, row in report["workloads"].items() if row.get("failed")]
    found += [f"{name}: {row['failed']}" for name, row in report.get("acks", {}).items() if row.get("failed")]
    for part in ("enqueue", "flask"):
        if report[part].get("failed"):
            found.append(f"{part}: {report[part]['failed']}")
    return found + outbox_failures(report.get("outbox", {}))


def outbox_failures(outbox: dict) -> list[str]:
    return [f"outbox {part}: {outbox[part]['failed']}" for part in ("always", "spill", "reload")
            if part in outbox and outbox[part].get("failed")]


def summarize(runs: dict[str, list[float]], unit: str, target: float) -> dict:
    peers = {peer: {"median": statistics.median(values), "runs": [round(v, 1) for v in values]}
             for peer, values in runs.items()}
    best = max(peers[p]["median"] for p in BASELINES)
    return {
        "unit": unit,
        "target": target,
        "peers": peers,
        "ratio_to_raw": peers["hermes"]["median"] / peers["raw"]["median"],
        "ratio_to_websockets": peers["hermes"]["median"] / peers["websockets"]["median"],
        "ratio_to_best": peers["hermes"]["median"] / best,
        "pure_ratio_to_best": peers["hermes-pure"]["median"] / best,
        "met": peers["hermes"]["median"] / best >= target,
        "failed": None,
    }


def print_row(name: str, row: dict) -> None:
    if row["failed"]:
        print(f"{name}: FAILED — {row['failed']}", flush=True)
        return
    p = row["peers"]
    fmt = (lambda v: f"{v:,.1f}") if row["unit"] == "MB/s" else (lambda v: f"{v:,.0f}")
    print(f"{name:<16} raw {fmt(p['raw']['median']):>9}  websockets {fmt(p['websockets']['median']):>9}  "
          f"hermes {fmt(p['hermes']['median']):>9}  pure {fmt(p['hermes-pure']['median']):>9} {row['unit']:<14}"
          f" x{row['ratio_to_raw']:.2f} raw  x{row['ratio_to_websockets']:.2f} websockets  "
          f"target x{row['target']} of best: {'met' if row['met'] else 'NOT met'}; 0 dropped"
          + (f"  (sink busy <= {row['sink_busy_max']:.0%})" if row["sink_busy_max"] is not None else ""), flush=True)


def run_peer(peer: str, workload: str, size: int, count: int, url: str) -> dict:
    env = dict(os.environ)
    if peer == "hermes-pure":
        env["HERMES_GEVENT_PURE_PYTHON"] = "1"
    out = subprocess.run([sys.executable, "-m", "benchmarks.peer", peer, workload, str(size), str(count), url],
                         cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{peer} {workload} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def enqueue_cost(url: str, count: int, rounds: int) -> dict:
    """The cost of one send_message call against one raw ws.send(); hermes must deliver them all."""
    results = {peer: [run_peer(peer, "enqueue", 100, count, url) for _ in range(rounds)] for peer in ("hermes", "raw")}
    drops = {peer: no_drops() for peer in results}
    for peer, runs in results.items():
        for result in runs:
            add_drops(drops[peer], result)
    failed = drop_failure(drops)
    if failed:
        return {"failed": failed, "dropped": drops, "met": False}
    median = statistics.median(r["costs_ns"]["median"] for r in results["hermes"])
    p99 = statistics.median(r["costs_ns"]["p99"] for r in results["hermes"])
    raw_median = statistics.median(r["costs_ns"]["median"] for r in results["raw"])
    return {"hermes_median_ns": median, "hermes_p99_ns": p99,
            "raw_median_ns": raw_median, "ratio": median / raw_median, "met": median / raw_median <= 0.2,
            "failed": None, "dropped": drops}


def print_metrics(m: dict) -> None:
    print(f"metrics cost: send_message {m['off_ns']} ns with metrics off, {m['on_ns']} ns on (+{m['added_ns']} ns, "
          f"target: a few hundred); the sender's hook {m['written_hook_ns_per_message']} ns per message written")


def print_enqueue(e: dict) -> None:
    if e["failed"]:
        print(f"enqueue cost: FAILED — {e['failed']}")
        return
    print(f"enqueue cost: send_message median {e['hermes_median_ns']} ns, p99 {e['hermes_p99_ns']} ns; raw ws.send() "
          f"median {e['raw_median_ns']} ns (ratio {e['ratio']:.3f}, target <= 0.2); 0 dropped")


def only_outbox(output: Path, scale: float, rounds: int, quick: bool) -> int:
    """``--only outbox``: the outbox benchmarks alone; their part of the JSON at ``output`` is
    replaced, the rest kept (a full run's figures stay beside them)."""
    sink, port = start_sink()
    try:
        outbox = outbox_benchmarks(f"ws://127.0.0.1:{port}", scale, rounds, quick)
    finally:
        stop(sink)
    print_outbox(outbox)
    report = json.loads(output.read_text()) if output.exists() else {"machine": machine()}
    report["outbox"] = outbox
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    failed = outbox_failures(outbox)
    for line in failed:
        print(f"FAILED: {line}", file=sys.stderr)
    return 1 if failed else 0


def outbox_benchmarks(url: str, scale: float, rounds: int, quick: bool) -> dict:
    """The three figures of the outbox file, each file fresh in a directory of its own (on the
    disk the system keeps temporary files on). The load average at the start is kept with them:
    the figures are of a machine as busy as it was."""
    directory = tempfile.mkdtemp(prefix="hermes-outbox-bench-")
    load = [round(x, 2) for x in os.getloadavg()]
    try:
        always = run_outbox_always(url, max(64 * 20, int(OUTBOX_ALWAYS_COUNT * scale)), rounds, directory)
        spill, reload = run_spill_reload(url, max(1000, int(OUTBOX_SPILL_COUNT * scale)), rounds, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    ticker = always.pop("ticker")
    return {"rounds": rounds, "quick": quick, "load_average_at_start": load, "directory": directory,
            "always": always, "spill": spill, "reload": reload, "ticker": ticker}


def run_outbox_always(url: str, count: int, rounds: int, directory: str) -> dict:
    """64 handler greenlets, OUTBOX_SYNC="always" and memory only, alternating who goes first."""
    runs: dict[str, list[float]] = {side: [] for side in OUTBOX_SIDES}
    drops = {side: no_drops() for side in OUTBOX_SIDES}
    gaps: dict[str, list[dict]] = {side: [] for side in OUTBOX_SIDES}
    per_commit: list[float] = []
    commits = errors = 0
    total = count
    for r in range(rounds):
        for side in OUTBOX_SIDES[r % 2:] + OUTBOX_SIDES[: r % 2]:
            path = os.path.join(directory, f"always-{r}.db") if side == "always" else "-"
            result = outbox_probe("always", url, count, path)
            total = result["count"]
            add_drops(drops[side], result)
            errors += result["outbox_errors"]
            gaps[side].append(result)
            if side == "always" and result["commits"]:
                commits += result["commits"]
                per_commit.append(result["committed"] / result["commits"])
            if result["seconds"] is not None:
                runs[side].append(total / result["seconds"])
    reasons = [drop_failure({f"hermes ({side})": d for side, d in drops.items()})]
    if errors:
        reasons.append(f"the outbox file failed {errors} time(s) (outbox_errors)")
    failed = "; ".join(r for r in reasons if r) or None
    sides = {side: {"median": statistics.median(values), "runs": [round(v, 1) for v in values]} if values else None
             for side, values in runs.items()}
    ratio = sides["always"]["median"] / sides["memory"]["median"] if not failed else None
    ticker = {
        "bound_ms": TICKER_BOUND_MS, "tick_ms": 1.0,
        "max_gap_ms": max((g["max_gap_ms"] for g in gaps["always"] if g["max_gap_ms"] is not None), default=None),
        "runs_max_gap_ms": [g["max_gap_ms"] for g in gaps["always"]],
        "p99_gap_ms": statistics.median(g["p99_gap_ms"] for g in gaps["always"] if g["p99_gap_ms"] is not None)
        if any(g["p99_gap_ms"] is not None for g in gaps["always"]) else None,
        "memory_max_gap_ms": max((g["max_gap_ms"] for g in gaps["memory"] if g["max_gap_ms"] is not None),
                                 default=None),
    }
    ticker["met"] = ticker["max_gap_ms"] is not None and ticker["max_gap_ms"] < TICKER_BOUND_MS
    return {
        "unit": "msg/s", "count": total, "handlers": 64, "size": 100, "target": OUTBOX_ALWAYS_TARGET, **sides,
        "ratio": ratio, "met": not failed and sides["always"] is not None
        and sides["always"]["median"] >= OUTBOX_ALWAYS_TARGET,
        "failed": failed, "dropped": drops, "outbox_errors": errors, "commits": commits,
        "messages_per_commit": statistics.median(per_commit) if per_commit else None, "ticker": ticker,
    }


def run_spill_reload(url: str, count: int, rounds: int, directory: str) -> tuple[dict, dict]:
    """OUTBOX_SYNC="stop": spill ``count`` messages at stop() with the server down, then take
    them over in a new process, the server up; ``rounds`` times, each with a fresh file."""
    spills: list[dict] = []
    reloads: list[dict] = []
    for r in range(rounds):
        path = os.path.join(directory, f"stop-{r}.db")
        spills.append(outbox_probe("spill", f"ws://127.0.0.1:{free_port()}/down", count, path))
        reloads.append(outbox_probe("reload", url, count, path))

    def summary(results: list[dict], failed: str | None, **extra) -> dict:
        times = [r["seconds"] for r in results if r["seconds"] is not None]
        median = statistics.median(times) if times and not failed else None
        return {"count": count, "max_queue_size": spills[0]["max_queue_size"], "target_seconds": OUTBOX_SECONDS_TARGET,
                "seconds": median, "runs": [round(t, 4) for t in times],
                "met": median is not None and median < OUTBOX_SECONDS_TARGET, "failed": failed, **extra}

    spill_drops, reload_drops = no_drops(), no_drops()
    for result in spills:
        add_drops(spill_drops, result)
    for result in reloads:
        add_drops(reload_drops, result)
    short = [r["spilled"] for r in spills if r["spilled"] != count or r["left_undelivered"]]
    reasons = [drop_failure({"hermes": spill_drops}),
               f"spilled {short} of {count:,}" if short else None,
               "the outbox file failed" if any(r["outbox_errors"] for r in spills) else None]
    spill = summary(spills, "; ".join(r for r in reasons if r) or None, dropped=spill_drops,
                    spilled=sum(r["spilled"] for r in spills), ticker_max_gap_ms=largest_gap(spills))
    short = [r["reloaded"] for r in reloads if r["reloaded"] != count]
    undelivered = sum(1 for r in reloads if r["delivered_seconds"] is None)
    reasons = [drop_failure({"hermes": reload_drops}),
               f"took over {short} of {count:,}" if short else None,
               f"the server did not get all {count:,} in {undelivered} run(s)" if undelivered else None,
               "the outbox file failed" if any(r["outbox_errors"] for r in reloads) else None]
    delivered = [r["delivered_seconds"] for r in reloads if r["delivered_seconds"] is not None]
    seen = [r["seen_seconds"] for r in reloads if r["seconds"] is not None]
    reload = summary(reloads, "; ".join(r for r in reasons if r) or None, dropped=reload_drops,
                     reloaded=sum(r["reloaded"] for r in reloads),
                     delivered_seconds=statistics.median(delivered) if delivered else None,
                     # when a greenlet polling status() saw messages_reloaded == count: after the
                     # sender, woken as the claim ends, let the hub go (benchmarks/outbox.py TimedClient)
                     seen_seconds=statistics.median(seen) if seen else None,
                     ticker_max_gap_ms=largest_gap(reloads))
    return spill, reload


def largest_gap(results: list[dict]) -> float | None:
    """The largest gap a 1 ms ticker saw in any of these runs (ms)."""
    return max((r["ticker_max_gap_ms"] for r in results if r["ticker_max_gap_ms"] is not None), default=None)


def outbox_probe(what: str, url: str, count: int, path: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.outbox", what, url, str(count), path], cwd=HERE.parent,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"outbox {what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def print_outbox(o: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in o["load_average_at_start"])
    print(f"outbox file (load average {load} at the start; files in {os.path.dirname(o['directory'])}):")
    a = o["always"]
    if a["failed"]:
        print(f"  \"always\": FAILED — {a['failed']}", flush=True)
    else:
        print(f"  \"always\", {a['handlers']} handler greenlets, {a['size']} B, defaults: "
              f"{a['always']['median']:>9,.0f} msg/s delivered  memory only {a['memory']['median']:>9,.0f}  "
              f"x{a['ratio']:.2f} of memory  target >= {a['target']:,} msg/s: {'met' if a['met'] else 'NOT met'}; "
              f"{a['messages_per_commit']:.1f} messages per commit; 0 dropped", flush=True)
    for part, what in (("spill", "spill at stop(), server down"), ("reload", "reload from start(), all taken over")):
        row = o[part]
        if row["failed"]:
            print(f"  \"stop\" {what}: FAILED — {row['failed']}", flush=True)
            continue
        extra = (f", the server had them all after {row['delivered_seconds']:.3f} s"
                 if part == "reload" and row["delivered_seconds"] is not None else "")
        gap = row["ticker_max_gap_ms"]
        if gap is not None:
            # The queue is full of them: the sender works up to its catch-up budget before yielding
            # (fairness.MAX_BUDGET), by design - waiting would let new messages evict them.
            extra += (f" (a 1 ms ticker's largest gap meanwhile {gap:.1f} ms; with the queue this full the "
                      f"sender's catch-up budget is {CATCH_UP_MS:g} ms: {'within' if gap < CATCH_UP_MS + 10 else 'OVER'})")
        queue = (f"MAX_QUEUE_SIZE raised to {row['max_queue_size']:,} for this figure"
                 if row["max_queue_size"] > DEFAULT_QUEUE_SIZE else "default MAX_QUEUE_SIZE")
        print(f"  \"stop\" {what}: {row['count']:,} messages in {row['seconds']:.3f} s{extra}  target < "
              f"{row['target_seconds']:g} s: {'met' if row['met'] else 'NOT met'}; {queue}; 0 dropped", flush=True)
    t = o["ticker"]
    if t["max_gap_ms"] is not None:
        memory = (f"; memory only, same handlers: {t['memory_max_gap_ms']:.1f} ms"
                  if t["memory_max_gap_ms"] is not None else "")
        print(f"  hub ticker ({t['tick_ms']:g} ms sleeps) while \"always\" commits: largest gap "
              f"{t['max_gap_ms']:.1f} ms (p99 {t['p99_gap_ms']:.1f} ms)  bound {t['bound_ms']} ms (the ticker "
              f"test's): {'met' if t['met'] else 'NOT met'}{memory}", flush=True)


def probe(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.probes", *args], cwd=HERE.parent,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sink_capacity(url: str, scale: float) -> dict:
    count = max(1000, int(500_000 * scale))
    out = subprocess.run(["node", str(SINK / "blast.js"), url, str(count), "100"], capture_output=True, text=True,
                         timeout=120, check=True)
    seconds = float(out.stdout.strip())
    return {"msgs_per_s": count / seconds}


#: wrk's open connections in the Flask benchmark: a worker in production serves many at once.
#: The req/s comparison and the delivery lag are measured in the same runs, at this load.
WRK_CONNECTIONS = 64


def flask_in_gunicorn(scale: float, rounds: int) -> dict:
    """Requests/s of one gevent worker, with and without a send per request, and the delivery
    lag of those sends (send_message in the handler -> the sink has the message). On 2+ CPUs
    the worker gets CPU 0 to itself and the load generator and the sink share CPU 1, so the
    figure is the worker's own cost, not the sink's CPU taken from it."""
    if shutil.which("wrk") is None:
        return {"skipped": "wrk is not installed (apt-get install wrk)"}
    pinned = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    pin = (lambda cpu: ["taskset", "-c", str(cpu)]) if pinned else (lambda cpu: [])
    sink, port = start_sink(prefix=pin(1))
    http_port = free_port()
    env = dict(os.environ, HERMES_WS_URL=f"ws://127.0.0.1:{port}/lag")
    base, lag_url = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{port}/lag"
    app = None
    try:
        app = subprocess.Popen([*pin(0), sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b",
                                f"127.0.0.1:{http_port}", "--log-level", "warning", "benchmarks.flask_app:app"],
                               cwd=HERE.parent, env=env)
        wait_http(f"{base}/plain", 30)
        for path in ("plain", "send"):  # warm-up, not counted: the first seconds of a worker run slower
            wrk(pin(1), f"{base}/{path}", "1s")
        if not drained(base, 10)["connected"]:
            raise RuntimeError("the Flask app's client did not connect to the sink")
        get_json(lag_url)  # forget the warm-up's lags
        duration = "1s" if scale < 1 else "3s"
        rates: dict[str, list[float]] = {"plain": [], "send": []}
        lags: list[dict] = []
        latencies: list[dict] = []  # wrk's request latency in the send runs, to set the lag beside
        for r in range(rounds * 2):
            for path in (["plain", "send"] if r % 2 == 0 else ["send", "plain"]):
                run = wrk_run(pin(1), f"{base}/{path}", duration)
                rates[path].append(run["rps"])
                if path == "send":
                    latencies.append(run)
                    drained(base, 10)  # every message of this run reached the sink before the next run
                    lags.append(get_json(lag_url))
        status = get_json(f"{base}/hermes-status")
    finally:
        if app is not None:
            stop(app)
        stop(sink)
    return flask_summary(rates, lags, latencies, status, pinned)


def flask_summary(rates: dict[str, list[float]], lags: list[dict], latencies: list[dict], status: dict,
                  pinned: bool) -> dict:
    """Medians of the runs; the lag as the median of each run's p50 and p99, and the worst of all."""
    plain, send = statistics.median(rates["plain"]), statistics.median(rates["send"])
    drops = {"messages": status["messages_dropped"], "by_reason": status["drops_by_reason"]}
    failed = None
    if drops["messages"]:
        failed = (f"hermes dropped {drops['messages']:,} messages ({', '.join(sorted(drops['by_reason']))}) "
                  f"under wrk -c{WRK_CONNECTIONS}")
    measured = [run for run in lags if run["count"]]
    return {
        "plain_rps": plain, "send_rps": send, "ratio": send / plain, "met": not failed and send / plain >= 0.95,
        "connections": WRK_CONNECTIONS, "pinned": pinned, "runs": rates, "failed": failed, "dropped": drops,
        "lag_ms": {
            "p50": statistics.median(run["p50_ms"] for run in measured) if measured else None,
            "p99": statistics.median(run["p99_ms"] for run in measured) if measured else None,
            "max": max((run["max_ms"] for run in measured), default=None),
            "messages": sum(run["count"] + run["unrecorded"] for run in lags),
            "runs": lags,
        },
        "request_latency_ms": {"p50": statistics.median(r["p50_ms"] for r in latencies),
                               "p99": statistics.median(r["p99_ms"] for r in latencies)},
        "messages_sent": status["messages_sent"],  # warm-up included
        "queue_size_max": status["queue_size_max"],  # sampled every 10 ms, warm-up included
    }


def print_flask(f: dict) -> None:
    if "skipped" in f:
        print(f"flask under gunicorn: skipped ({f['skipped']})")
    elif f["failed"]:
        print(f"flask under gunicorn: FAILED — {f['failed']}")
    else:
        lag = f["lag_ms"]
        print(f"flask under gunicorn (wrk -c{f['connections']}): {f['send_rps']:.0f} req/s with send_message vs "
              f"{f['plain_rps']:.0f} without (ratio {f['ratio']:.3f}, target >= 0.95; "
              f"{'worker pinned to its own CPU' if f['pinned'] else 'not pinned'}); 0 dropped")
        print(f"  delivery lag, send_message -> sink: p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, "
              f"max {lag['max']:.2f} ms over {lag['messages']:,} messages; deepest queue seen {f['queue_size_max']:,}")
        latency = f["request_latency_ms"]
        print(f"  request latency in the same runs (wrk): p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms")


def wrk(prefix: list[str], url: str, duration: str) -> float:
    """Requests/s that wrk measured; every response must be a 200. A slow response is a slow
    response, not an error: the event loop of a loaded worker can stall for a second."""
    return wrk_run(prefix, url, duration)["rps"]


def wrk_run(prefix: list[str], url: str, duration: str) -> dict:
    """wrk's requests/s and its request latency percentiles (ms)."""
    out = subprocess.run([*prefix, "wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", duration, "--timeout", "10s",
                          "--latency", url], capture_output=True, text=True, timeout=60, check=True)
    if "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise RuntimeError(f"wrk saw errors from {url}:\n{out.stdout}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("Requests/sec:"))
    # wrk pads a one-letter unit with a trailing space ("1.02s "): allow it.
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out.stdout, re.MULTILINE))
    return {"rps": float(line.split()[1]), "p50_ms": _ms(percentiles["50"]), "p99_ms": _ms(percentiles["99"])}


def _ms(text: str) -> float:
    """wrk's durations ("812.00us", "12.5ms", "1.02s", "1.10m") in milliseconds."""
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"not a wrk duration: {text!r}")


def drained(base: str, timeout: float) -> dict:
    """The app's client status once its queue is empty (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = get_json(f"{base}/hermes-status")
        if status["queue_size"] == 0 or time.monotonic() > deadline:
            time.sleep(0.1)  # written is not yet read: give the sink a moment to read the last ones
            return status
        time.sleep(0.01)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def ensure_node_deps() -> None:
    if not all((SINK / "node_modules" / name).exists() for name in ("ws", "bufferutil", "utf-8-validate")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=SINK, check=True, timeout=300)


def start_sink(port: int = 0, prefix: list[str] | None = None):
    proc = subprocess.Popen([*(prefix or []), "node", str(SINK / "server.js"), str(port)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        stop(proc)
        raise RuntimeError("the Node sink server did not start")
    return proc, int(line.split()[1])


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)  # the harness is a plain script, not a gevent app


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}


def draw_chart(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("chart: skipped (pip install 'hermes_gevent[bench]' for matplotlib)")
        return
    names = [n for n, row in report["workloads"].items() if not row["failed"]]  # a failure has no figure
    if not names:
        print("chart: skipped (every workload failed)")
        return
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.2
    for i, peer in enumerate(PEERS):
        values = [report["workloads"][n]["peers"][peer]["median"] / report["workloads"][n]["peers"]["raw"]["median"]
                  for n in names]
        ax.bar([x + (i - 1.5) * width for x in range(len(names))], values, width, label=peer)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(names)), names)
    failed = [n for n, row in report["workloads"].items() if row["failed"]]
    if failed:
        ax.set_xlabel(f"FAILED (hermes dropped messages), no figure: {', '.join(failed)}", color="firebrick")
    ax.set_ylabel("throughput / raw websocket-client")
    ax.set_title(f"hermes_gevent vs peers (medians of {report['rounds']} rounds, {report['machine']['cpus']} CPUs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


if __name__ == "__main__":
    sys.exit(main())
