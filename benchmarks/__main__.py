"""``python -m benchmarks``: every workload, every peer, alternating rounds, one run.

Peers: a raw websocket-client loop under gevent (the baseline), the ``websockets``
asyncio client, and hermes_gevent (with its C speedups, and pure Python). All talk
to the same Node ``ws`` server on 127.0.0.1 (benchmarks/sink), whose own capacity
is measured first so the table shows it is not the bottleneck. Prints the table of
medians and ratios (and beside them, "round by round", the median of each round's
hermes / peer: the two figures taken seconds apart), writes benchmarks/results/latest.json, and draws
benchmarks/results/chart.png when matplotlib is installed.

Beside each peer's figure: the CPU time its process spent per message (user + system, every
thread: time.process_time read by the peer before and after its timed run, never in the
loop, divided by the messages; per round trip for echo), the median of the rounds
("cpu_us_per_message" in the JSON), so a regression shows where it is even when msg/s is
bounded by the server or the loopback. The same for the acknowledgement sides and the enqueue
cost (from the first call until the server has every message). The Flask workload reports
its gunicorn worker's CPU per request instead (utime + stime from /proc/<pid>/stat).

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

The PostgreSQL outbox (OUTBOX_URL), printed beside the file's figures, each with its target: the
same "always" handlers (alternating with the file and memory only in each round) and the same
spill and reload, each on a fresh table; the cost a transactional send (transaction=, a SQLAlchemy
Connection on "postgresql+psycopg://") adds to the app's INSERT + commit, with and without it in
the same run; and the takeover after a SIGKILL - a holder accepts messages ("always", its server
down) and is killed, a live client of the same identifier delivers them - with a lease shortened so
that every round takes seconds (reported as lease + claim period, and what came over the lease),
then once with the production LEASE_TIMEOUT and CLAIM_EVERY (not with --quick). The takeover of
the file (a dead PID, seen at the next claim) is measured beside it. The PostgreSQL server is
--pg-url's, else a private cluster started for the run (tests/pgcluster.py, benchmarks/pgserver.py:
127.0.0.1, a free port, fsync on) and removed after; without PostgreSQL installed they are skipped,
with the reason printed.

    python -m benchmarks             # 5 rounds (a few minutes)
    python -m benchmarks --quick     # one short round: checks that everything runs
    python -m benchmarks --only outbox   # the outbox benchmarks alone, merged into the existing JSON
    python -m benchmarks --only outbox --pg-url postgresql://user:pw@127.0.0.1:5432/db   # that server's
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from benchmarks.compression import compression_benchmark, print_compression
from benchmarks.harness import (SINK, add_drops, drop_failure, ensure_node_deps, no_drops, run_peer,  # noqa: F401
                                start_sink, stop)
from hermes_gevent import lease as hermes_lease
from hermes_gevent import store as hermes_store
from hermes_gevent.fairness import MAX_BUDGET

HERE = Path(__file__).parent
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

#: Workloads whose hermes figure is also set against the sink's ceiling (sink_capacity: frames built in
#: advance), with the share of it to reach.
CEILING_SHARE = {"one-way 100 B": 0.35}
#: The Flask workload: requests/s with a send_message per request, at least this share of the same app's
#: requests/s without one.
FLASK_TARGET = 0.97

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
#: (and a third, "postgres", the same handlers with OUTBOX_URL, when PostgreSQL is there)
OUTBOX_SIDES = ("always", "memory")

#: The PostgreSQL outbox (OUTBOX_URL): the targets of the issue. The counts are the file's.
PG_ALWAYS_TARGET = 10_000  # msg/s delivered, OUTBOX_SYNC="always", 64 handler greenlets
PG_SECONDS_TARGET = 2.0  # each of spill and reload of 100,000
#: Transactional sends: transactions of each kind (with and without a send) per round.
TXN_PAIRS = 1_000
#: Takeover after a SIGKILL: messages the holder accepted (the default MAX_QUEUE_SIZE: one claim takes them all).
TAKEOVER_COUNT = 10_000
#: The shortened lease of the takeover rounds (s), with the production ratio of lease to claim period (25 / 5).
TAKEOVER_LEASE, TAKEOVER_CLAIM = 2.5, 0.5
TAKEOVER_LEASE_QUICK, TAKEOVER_CLAIM_QUICK = 1.0, 0.2
#: The production settings (lease.LEASE_TIMEOUT; store.CLAIM_EVERY, the claim loop's period).
PRODUCTION_LEASE, PRODUCTION_CLAIM = hermes_lease.LEASE_TIMEOUT, hermes_store.CLAIM_EVERY


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one short round (the test suite uses it)")
    parser.add_argument("--output", default=str(RESULTS / "latest.json"))
    parser.add_argument("--only", choices=["outbox"],
                        help="run these benchmarks alone and replace their part of the JSON at --output "
                             "(the rest of it stays as it was)")
    parser.add_argument("--pg-url", help="the PostgreSQL outbox benchmarks on this database (postgresql://...: "
                                         "they create tables of their own and drop them); default: a private "
                                         "cluster started for the run")
    parser.add_argument("--no-production-takeover", action="store_true",
                        help=f"skip the takeover with the production lease (one run of "
                             f"{PRODUCTION_LEASE:g}-{PRODUCTION_LEASE + PRODUCTION_CLAIM:g} s per store)")
    args = parser.parse_args()
    scale, rounds = (0.02, 1) if args.quick else (1.0, args.rounds)
    production = not (args.quick or args.no_production_takeover)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still stops its servers (finally)

    ensure_node_deps()
    if args.only == "outbox":
        return only_outbox(Path(args.output), scale, rounds, args.quick, args.pg_url, production)
    sink, port = start_sink()
    url = f"ws://127.0.0.1:{port}"
    report: dict = {"machine": machine(), "rounds": rounds, "quick": args.quick, "workloads": {}}
    try:
        report["sink_capacity"] = sink_capacity(url, scale)
        for name, workload, size, count, unit, target in THROUGHPUT:
            row = run_workload(workload, size, max(20, int(count * scale)), unit, target, rounds, url)
            if name in CEILING_SHARE and not row["failed"]:
                share = row["peers"]["hermes"]["median"] / report["sink_capacity"]["ceiling_msgs_per_s"]
                row["ceiling"] = {"share": share, "target": CEILING_SHARE[name], "met": share >= CEILING_SHARE[name]}
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
        report["compression"] = compression_benchmark(scale, rounds)
        print_compression(report["compression"])
        report["enqueue"] = enqueue_cost(url, max(1000, int(20_000 * scale)), rounds)
        print_enqueue(report["enqueue"])
        report["metrics"] = probe("metrics", str(max(5000, int(200_000 * scale))))
        print_metrics(report["metrics"])
        report["memory"] = probe("memory", str(max(1000, int(100_000 * scale))))
        print(f"memory: {report['memory']['bytes_per_message']} bytes per queued 100-byte message "
              f"(target <= 250); queue op {report['memory']['op_ns_at_1k']} ns at 1k deep, "
              f"{report['memory']['op_ns_at_100k']} ns at 100k deep")
        report["outbox"] = outbox_benchmarks(url, scale, rounds, args.quick, args.pg_url, production)
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
          f"run; a Node client drives it to {capacity:,.0f} msg/s of 100 B; its ceiling (frames built in advance, "
          f"written in 256 KiB calls) {report['sink_capacity']['ceiling_msgs_per_s']:,.0f} msg/s")
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
    cpu: dict[str, list[float]] = {peer: [] for peer in PEERS}  # the client process's CPU us per message
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
            cpu[peer].append(cpu_us(result, count))
    failed = drop_failure(drops)
    row = ({"unit": unit, "target": target, "failed": failed, "met": False} if failed
           else summarize(runs, unit, target, cpu))
    row["cpu_unit"] = CPU_UNIT[workload]
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
    cpu: dict[str, list[float]] = {side: [] for side in ACK_SIDES}
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
            cpu[side].append(cpu_us(result, count))
    reasons = [drop_failure({f"hermes (acks {side})": d for side, d in drops.items()})]
    if acks["runs_left_unacked"]:
        reasons.append(f"hermes left {acks['unacked_left']:,} messages unacknowledged "
                       f"in {acks['runs_left_unacked']} of {rounds} runs")
    failed = "; ".join(r for r in reasons if r) or None
    sides_summary = {side: {"median": statistics.median(values), "runs": [round(v, 1) for v in values],
                            "bytes_per_message": statistics.median(wire[side]),
                            "cpu_us_per_message": statistics.median(cpu[side]),
                            "cpu_us_runs": [round(v, 3) for v in cpu[side]]} if values else None
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
    print(f"{name:<20} off {row['off']['median']:>9,.0f} {row['off']['cpu_us_per_message']:>6.2f} us  "
          f"on {row['on']['median']:>9,.0f} {row['on']['cpu_us_per_message']:>6.2f} us  msg/s of dicts, "
          f"CPU per message  x{row['ratio']:.2f} of off, {target}{text}; 0 dropped, 0 unacknowledged, "
          f"{acks['messages_acked']:,} acknowledged, {acks['messages_resent']:,} resent, "
          f"{acks['sink_duplicates']:,} duplicates at the server; {row['on']['bytes_per_message']:.0f} B per "
          f"message with its id ({row['off']['bytes_per_message']:.0f} B without); sink busy <= "
          f"{busy['off']:.0%} off, {busy['on']:.0%} on", flush=True)


def failures(report: dict) -> list[str]:
    found = [f"{name}: {row['failed']}" for name, row in report["workloads"].items() if row.get("failed")]
    found += [f"{name}: {row['failed']}" for name, row in report.get("acks", {}).items() if row.get("failed")]
    for part in ("compression", "enqueue", "flask"):
        if report[part].get("failed"):
            found.append(f"{part}: {report[part]['failed']}")
    return found + outbox_failures(report.get("outbox", {}))


def outbox_failures(outbox: dict) -> list[str]:
    found = [f"outbox {part}: {outbox[part]['failed']}" for part in ("always", "spill", "reload")
             if part in outbox and outbox[part].get("failed")]
    found += [f"outbox takeover ({kind}): {row['failed']}" for kind, row in outbox.get("takeover", {}).items()
              if row.get("failed")]
    pg = outbox.get("postgres", {})
    found += [f"outbox postgres {part}: {pg[part]['failed']}" for part in ("always", "spill", "reload", "txn")
              if isinstance(pg.get(part), dict) and pg[part].get("failed")]
    found += [f"outbox postgres takeover ({kind}): {row['failed']}" for kind, row in pg.get("takeover", {}).items()
              if row.get("failed")]
    return found


def cpu_us(result: dict, count: int) -> float:
    """The peer process's CPU time over its timed run (user + system, every thread:
    time.process_time, read before and after it), in microseconds per message."""
    return result["cpu_seconds"] / count * 1e6


#: What a workload's CPU figure is per: the messages it sends (one-way), receives (receive), or
#: the round trips (echo: one message each way).
CPU_UNIT = {"oneway": "message", "oneway-bin": "message", "receive": "message received", "echo": "round trip"}


def summarize(runs: dict[str, list[float]], unit: str, target: float, cpu: dict[str, list[float]]) -> dict:
    peers = {peer: {"median": statistics.median(values), "runs": [round(v, 1) for v in values],
                    # CPU us per message of the client process, median of the rounds (each round's beside it)
                    "cpu_us_per_message": statistics.median(cpu[peer]),
                    "cpu_us_runs": [round(v, 3) for v in cpu[peer]]}
             for peer, values in runs.items()}
    best = max(peers[p]["median"] for p in BASELINES)
    return {
        "unit": unit,
        "target": target,
        "peers": peers,
        "ratio_to_raw": peers["hermes"]["median"] / peers["raw"]["median"],
        "ratio_to_websockets": peers["hermes"]["median"] / peers["websockets"]["median"],
        # hermes' CPU per message over each baseline's: below 1 it spends less
        "cpu_ratio_to_raw": peers["hermes"]["cpu_us_per_message"] / peers["raw"]["cpu_us_per_message"],
        "cpu_ratio_to_websockets": (peers["hermes"]["cpu_us_per_message"]
                                    / peers["websockets"]["cpu_us_per_message"]),
        "ratio_to_best": peers["hermes"]["median"] / best,
        "pure_ratio_to_best": peers["hermes-pure"]["median"] / best,
        # hermes' figure over each baseline's in the same round (seconds apart), the median of the rounds: the
        # machine's slow spells, which come and go over tens of seconds, then fall on both sides of a ratio
        "paired_ratio_to": {peer: statistics.median(h / b for h, b in zip(runs["hermes"], runs[peer]))
                            for peer in BASELINES},
        "met": peers["hermes"]["median"] / best >= target,
        "failed": None,
    }


def print_row(name: str, row: dict) -> None:
    if row["failed"]:
        print(f"{name}: FAILED — {row['failed']}", flush=True)
        return
    p = row["peers"]
    fmt = (lambda v: f"{v:,.1f}") if row["unit"] == "MB/s" else (lambda v: f"{v:,.0f}")

    def peer(label: str, key: str) -> str:  # the figure, and beside it the client's CPU per message
        return f"{label} {fmt(p[key]['median']):>9} {p[key]['cpu_us_per_message']:>6.2f} us"

    print(f"{name:<16} {peer('raw', 'raw')}  {peer('websockets', 'websockets')}  {peer('hermes', 'hermes')}  "
          f"{peer('pure', 'hermes-pure')}  {row['unit']}, CPU per {row['cpu_unit']}  "
          f"x{row['ratio_to_raw']:.2f} raw  x{row['ratio_to_websockets']:.2f} websockets  (round by round "
          f"x{row['paired_ratio_to']['raw']:.2f}, x{row['paired_ratio_to']['websockets']:.2f})  "
          f"target x{row['target']} of best: {'met' if row['met'] else 'NOT met'}; CPU x{row['cpu_ratio_to_raw']:.2f} "
          f"raw, x{row['cpu_ratio_to_websockets']:.2f} websockets; 0 dropped"
          + (f"  (sink busy <= {row['sink_busy_max']:.0%})" if row["sink_busy_max"] is not None else ""), flush=True)
    if "ceiling" in row:
        c = row["ceiling"]
        print(f"{'':<16} hermes at {c['share']:.0%} of the sink's ceiling (frames built in advance), target "
              f"{c['target']:.0%}: {'met' if c['met'] else 'NOT met'}", flush=True)


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
    # The whole process, from the first call until the server has every message: hermes' sender
    # greenlet (framing, writes) included, as ws.send's framing and write are in raw's.
    cpu = {peer: {"cpu_us_per_message": statistics.median(cpu_us(r, count) for r in runs),
                  "cpu_us_runs": [round(cpu_us(r, count), 3) for r in runs]} for peer, runs in results.items()}
    return {"hermes_median_ns": median, "hermes_p99_ns": p99,
            "raw_median_ns": raw_median, "ratio": median / raw_median, "met": median / raw_median <= 0.2,
            "peers": cpu, "failed": None, "dropped": drops}


def print_metrics(m: dict) -> None:
    print(f"metrics cost: send_message {m['off_ns']} ns with metrics off, {m['on_ns']} ns on (+{m['added_ns']} ns, "
          f"target: a few hundred); the sender's hook {m['written_hook_ns_per_message']} ns per message written")


def print_enqueue(e: dict) -> None:
    if e["failed"]:
        print(f"enqueue cost: FAILED — {e['failed']}")
        return
    print(f"enqueue cost: send_message median {e['hermes_median_ns']} ns, p99 {e['hermes_p99_ns']} ns; raw ws.send() "
          f"median {e['raw_median_ns']} ns (ratio {e['ratio']:.3f}, target <= 0.2); CPU per message until the server "
          f"has them all: hermes {e['peers']['hermes']['cpu_us_per_message']:.2f} us, raw "
          f"{e['peers']['raw']['cpu_us_per_message']:.2f} us; 0 dropped")


def only_outbox(output: Path, scale: float, rounds: int, quick: bool, pg_url: str | None = None,
                production: bool = False) -> int:
    """``--only outbox``: the outbox benchmarks alone; their part of the JSON at ``output`` is
    replaced, the rest kept (a full run's figures stay beside them)."""
    sink, port = start_sink()
    try:
        outbox = outbox_benchmarks(f"ws://127.0.0.1:{port}", scale, rounds, quick, pg_url, production)
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


def outbox_benchmarks(url: str, scale: float, rounds: int, quick: bool, pg_url: str | None = None,
                      production: bool = False) -> dict:
    """The figures of the outbox file, each file fresh in a directory of its own (on the disk the
    system keeps temporary files on), and beside them the PostgreSQL outbox's, each on a fresh
    table (``pg_url``'s database, else a private cluster's). The load average at the start is kept
    with them: the figures are of a machine as busy as it was."""
    load = [round(x, 2) for x in os.getloadavg()]
    pg, reason = Postgres.open(pg_url)
    directory = tempfile.mkdtemp(prefix="hermes-outbox-bench-")
    spill_count = max(1000, int(OUTBOX_SPILL_COUNT * scale))
    takeover_count = max(200, int(TAKEOVER_COUNT * scale))
    short = (TAKEOVER_LEASE_QUICK, TAKEOVER_CLAIM_QUICK) if quick else (TAKEOVER_LEASE, TAKEOVER_CLAIM)
    postgres: dict = {"skipped": reason} if pg is None else {"server": pg.info}
    try:
        always, pg_always = run_outbox_always(url, max(64 * 20, int(OUTBOX_ALWAYS_COUNT * scale)), rounds,
                                              directory, pg)
        spill, reload = run_spill_reload(url, spill_count, rounds, directory)
        takeover = {"shortened": run_takeover(url, takeover_count, *short, rounds, directory)}
        if pg is not None:
            postgres["always"] = pg_always
            postgres["spill"], postgres["reload"] = run_spill_reload(url, spill_count, rounds, directory, pg)
            postgres["txn"] = run_txn(url, pg, max(50, int(TXN_PAIRS * scale)), rounds)
            postgres["takeover"] = {"shortened": run_takeover(url, takeover_count, *short, rounds, directory, pg)}
        if production:  # one run each: the production lease is 25 s
            takeover["production"] = run_takeover(url, takeover_count, PRODUCTION_LEASE, PRODUCTION_CLAIM, 1,
                                                  directory)
            if pg is not None:
                postgres["takeover"]["production"] = run_takeover(url, takeover_count, PRODUCTION_LEASE,
                                                                  PRODUCTION_CLAIM, 1, directory, pg)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if pg is not None:
            pg.close()
    ticker = always.pop("ticker")
    return {"rounds": rounds, "quick": quick, "load_average_at_start": load, "directory": directory,
            "always": always, "spill": spill, "reload": reload, "ticker": ticker, "takeover": takeover,
            "postgres": postgres}


class Postgres:
    """Where the PostgreSQL benchmarks run: ``url`` (--pg-url), or a private cluster that
    benchmarks/pgserver.py runs for this harness (stopped by its PID in ``close()``). Every probe
    gets a table of its own (``new_table``), dropped after it (``drop``)."""

    def __init__(self, url: str, info: dict, server: subprocess.Popen | None = None) -> None:
        self.url = url
        self.info = info
        self.server = server
        self.run_id = uuid.uuid4().hex[:8]
        self.tables = 0

    @classmethod
    def open(cls, url: str | None) -> tuple[Postgres | None, str | None]:
        """(Postgres, None), or (None, why the PostgreSQL benchmarks are skipped)."""
        try:
            import psycopg
        except ImportError:
            return None, "psycopg is not installed (pip install 'hermes_gevent[postgres]')"
        if url:
            with psycopg.connect(url, connect_timeout=10) as conn:
                version = conn.execute("SHOW server_version").fetchone()[0]
            return cls(url, {"private": False, "version": version, "shown": shown_pg(url)}), None
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.pgserver"], cwd=HERE.parent,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = read_json_line(server, 120)
        except BaseException:
            stop(server)
            raise
        if "unavailable" in line:
            server.wait(10)
            return None, line["unavailable"]
        info = {"private": True, "version": line["version"], "shown": shown_pg(line["url"]), "port": line["port"],
                "data": line["data"], "initdb_seconds": line["initdb_seconds"], "fsync": True}
        return cls(line["url"], info, server), None

    def new_table(self, what: str) -> str:
        self.tables += 1
        return f"hb_{self.run_id}_{what}_{self.tables}"

    def drop(self, table: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            for name in (table, f"{table}_leases", f"{table}_app"):
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')

    def lease_age(self, table: str, owner: str) -> float | None:
        """Seconds since ``owner``'s lease was last renewed, on the database's clock (None: no lease)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            row = conn.execute(f'SELECT extract(epoch FROM clock_timestamp() - renewed_at) FROM "{table}_leases" '
                               "WHERE owner = %s", (owner,)).fetchone()
        return float(row[0]) if row else None

    def close(self) -> None:
        if self.server is not None:
            stop(self.server, 30)  # SIGTERM: the cluster is stopped and its directory removed
            self.server.stdin.close()
            self.server.stdout.close()


def shown_pg(url: str) -> str:
    """postgresql://host:port/db, without the user's password."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    """The next line ``proc`` writes to its stdout (a pipe), as JSON; RuntimeError if it exits or
    says nothing within ``timeout``."""
    import select

    fd = proc.stdout.fileno()
    data = getattr(proc, "_pending", b"")
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"{proc.args[2:4]} said nothing within {timeout:.0f} s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait(10)
                raise RuntimeError(f"{proc.args[2:4]} exited ({proc.returncode}) before its line")
            data += chunk
    line, _, proc._pending = data.partition(b"\n")  # type: ignore[attr-defined]
    return json.loads(line)


def run_outbox_always(url: str, count: int, rounds: int, directory: str,
                      pg: Postgres | None = None) -> tuple[dict, dict | None]:
    """64 handler greenlets: OUTBOX_SYNC="always" with the file, memory only, and (with ``pg``)
    OUTBOX_SYNC="always" on PostgreSQL, alternating who goes first. The file's row, and PostgreSQL's."""
    sides = OUTBOX_SIDES + (("postgres",) if pg is not None else ())
    runs: dict[str, list[float]] = {side: [] for side in sides}
    drops = {side: no_drops() for side in sides}
    gaps: dict[str, list[dict]] = {side: [] for side in sides}
    per_commit: dict[str, list[float]] = {"always": [], "postgres": []}
    commits = {"always": 0, "postgres": 0}
    errors = {side: 0 for side in sides}
    total = count
    for r in range(rounds):
        first = r % len(sides)
        for side in sides[first:] + sides[:first]:
            if side == "postgres":
                table = pg.new_table("always")
                try:
                    result = outbox_probe("always", url, count, pg.url, table)
                finally:
                    pg.drop(table)
            else:
                path = os.path.join(directory, f"always-{r}.db") if side == "always" else "-"
                result = outbox_probe("always", url, count, path)
            total = result["count"]
            add_drops(drops[side], result)
            errors[side] += result["outbox_errors"]
            gaps[side].append(result)
            if side in commits and result["commits"]:
                commits[side] += result["commits"]
                per_commit[side].append(result["committed"] / result["commits"])
            if result["seconds"] is not None:
                runs[side].append(total / result["seconds"])
    reasons = [drop_failure({f"hermes ({side})": drops[side] for side in OUTBOX_SIDES})]
    if errors["always"] or errors["memory"]:
        reasons.append(f"the outbox file failed {errors['always'] + errors['memory']} time(s) (outbox_errors)")
    failed = "; ".join(r for r in reasons if r) or None
    summary = {side: {"median": statistics.median(values), "runs": [round(v, 1) for v in values]} if values else None
               for side, values in runs.items()}
    ratio = summary["always"]["median"] / summary["memory"]["median"] if not failed else None
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
    file_row = {
        "unit": "msg/s", "count": total, "handlers": 64, "size": 100, "target": OUTBOX_ALWAYS_TARGET,
        "always": summary["always"], "memory": summary["memory"],
        "ratio": ratio, "met": not failed and summary["always"] is not None
        and summary["always"]["median"] >= OUTBOX_ALWAYS_TARGET,
        "failed": failed, "dropped": {side: drops[side] for side in OUTBOX_SIDES},
        "outbox_errors": errors["always"] + errors["memory"], "commits": commits["always"],
        "messages_per_commit": statistics.median(per_commit["always"]) if per_commit["always"] else None,
        "ticker": ticker,
    }
    if pg is None:
        return file_row, None
    reasons = [drop_failure({"hermes (postgres)": drops["postgres"]})]
    if errors["postgres"]:
        reasons.append(f"the PostgreSQL outbox failed {errors['postgres']} time(s) (outbox_errors)")
    pg_failed = "; ".join(r for r in reasons if r) or None
    pg_side = summary["postgres"] if not pg_failed else None
    pg_row = {
        "unit": "msg/s", "count": total, "handlers": 64, "size": 100, "target": PG_ALWAYS_TARGET,
        "postgres": pg_side, "memory": summary["memory"],
        "ratio": pg_side["median"] / summary["memory"]["median"] if pg_side and summary["memory"] else None,
        "ratio_to_file": pg_side["median"] / summary["always"]["median"] if pg_side and summary["always"] else None,
        "met": pg_side is not None and pg_side["median"] >= PG_ALWAYS_TARGET,
        "failed": pg_failed, "dropped": {"postgres": drops["postgres"]}, "outbox_errors": errors["postgres"],
        "commits": commits["postgres"],
        "messages_per_commit": statistics.median(per_commit["postgres"]) if per_commit["postgres"] else None,
        "ticker_max_gap_ms": max((g["max_gap_ms"] for g in gaps["postgres"] if g["max_gap_ms"] is not None),
                                 default=None),
    }
    return file_row, pg_row


def run_spill_reload(url: str, count: int, rounds: int, directory: str,
                     pg: Postgres | None = None) -> tuple[dict, dict]:
    """OUTBOX_SYNC="stop": spill ``count`` messages at stop() with the server down, then take
    them over in a new process, the server up; ``rounds`` times, each with a fresh file (or, with
    ``pg``, a fresh PostgreSQL table)."""
    spills: list[dict] = []
    reloads: list[dict] = []
    target = OUTBOX_SECONDS_TARGET if pg is None else PG_SECONDS_TARGET
    for r in range(rounds):
        if pg is None:
            where = [os.path.join(directory, f"stop-{r}.db")]
        else:
            where = [pg.url, pg.new_table("stop")]
        try:
            spills.append(outbox_probe("spill", f"ws://127.0.0.1:{free_port()}/down", count, *where))
            reloads.append(outbox_probe("reload", url, count, *where))
        finally:
            if pg is not None:
                pg.drop(where[1])

    def summary(results: list[dict], failed: str | None, **extra) -> dict:
        times = [r["seconds"] for r in results if r["seconds"] is not None]
        median = statistics.median(times) if times and not failed else None
        return {"count": count, "max_queue_size": spills[0]["max_queue_size"], "target_seconds": target,
                "seconds": median, "runs": [round(t, 4) for t in times],
                "met": median is not None and median < target, "failed": failed, **extra}

    store = "the outbox file" if pg is None else "the PostgreSQL outbox"
    spill_drops, reload_drops = no_drops(), no_drops()
    for result in spills:
        add_drops(spill_drops, result)
    for result in reloads:
        add_drops(reload_drops, result)
    short = [r["spilled"] for r in spills if r["spilled"] != count or r["left_undelivered"]]
    reasons = [drop_failure({"hermes": spill_drops}),
               f"spilled {short} of {count:,}" if short else None,
               f"{store} failed" if any(r["outbox_errors"] for r in spills) else None]
    spill = summary(spills, "; ".join(r for r in reasons if r) or None, dropped=spill_drops,
                    spilled=sum(r["spilled"] for r in spills), ticker_max_gap_ms=largest_gap(spills))
    short = [r["reloaded"] for r in reloads if r["reloaded"] != count]
    undelivered = sum(1 for r in reloads if r["delivered_seconds"] is None)
    reasons = [drop_failure({"hermes": reload_drops}),
               f"took over {short} of {count:,}" if short else None,
               f"the server did not get all {count:,} in {undelivered} run(s)" if undelivered else None,
               f"{store} failed" if any(r["outbox_errors"] for r in reloads) else None]
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


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; None for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else None


def run_txn(url: str, pg: Postgres, pairs: int, rounds: int) -> dict:
    """The app's INSERT + commit on a SQLAlchemy Connection, with and without a transactional send
    in it, ``pairs`` of each per round (benchmarks/outbox.py txn); percentiles over every round's
    transactions pooled."""
    if importlib.util.find_spec("sqlalchemy") is None:
        return {"skipped": "SQLAlchemy is not installed (transaction= takes a SQLAlchemy Connection or Session)"}
    results = []
    for _ in range(rounds):
        table = pg.new_table("txn")
        try:
            results.append(outbox_probe("txn", url, pairs, pg.url, table))
        finally:
            pg.drop(table)
    drops = no_drops()
    for result in results:
        add_drops(drops, result)
    plain = [ms for r in results for ms in r["plain_ms"]]
    send = [ms for r in results for ms in r["send_ms"]]
    undelivered = sum(1 for r in results if r["delivered_seconds"] is None)
    reasons = [drop_failure({"hermes": drops}),
               f"the server did not get every message sent in a transaction in {undelivered} run(s)"
               if undelivered else None,
               "the PostgreSQL outbox failed" if any(r["outbox_errors"] for r in results) else None]
    failed = "; ".join(r for r in reasons if r) or None
    sides = {name: {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99),
                    "max_ms": max(values, default=None), "transactions": len(values),
                    "runs_p50_ms": [percentile(r[f"{name}_ms"], 0.5) for r in results]}
             for name, values in (("plain", plain), ("send", send))}
    return {
        "pairs_per_round": pairs, "rounds": rounds, "warmup_pairs": results[0]["warmup"] if results else None,
        "without_send": sides["plain"], "with_send": sides["send"],
        "added_p50_ms": sides["send"]["p50_ms"] - sides["plain"]["p50_ms"] if plain and send else None,
        "added_p99_ms": sides["send"]["p99_ms"] - sides["plain"]["p99_ms"] if plain and send else None,
        "delivered": sum(r["sent_in_transactions"] for r in results if r["delivered_seconds"] is not None),
        "ticker_max_gap_ms": largest_gap(results),
        "target": None, "failed": failed, "dropped": drops,
    }


def run_takeover(url: str, count: int, lease_s: float, claim_s: float, rounds: int, directory: str,
                 pg: Postgres | None = None) -> dict:
    """A live client of the identifier (benchmarks/outbox.py takeover) is up; a holder accepts
    ``count`` messages with OUTBOX_SYNC="always", its server down, and is SIGKILLed by its PID as
    soon as they are accepted (its lease renewed by its last commit, as a process killed while busy);
    the time from the kill until the server has all ``count`` from the live client. Both processes run
    with LEASE_TIMEOUT ``lease_s`` and CLAIM_EVERY ``claim_s``. With ``pg``, the holder's lease age
    at the kill is read from the database (the lease lapses ``lease_s`` after its last renewal);
    the file's (SQLite) holder is seen dead by its PID at the live client's next claim."""
    runs: list[dict] = []
    drops = no_drops()
    errors = 0
    reasons: list[str] = []
    for r in range(rounds):
        if pg is None:
            table = "-"
            where = os.path.join(directory, f"takeover-{r}-{lease_s:g}.db")
        else:
            table = pg.new_table("takeover")
            where = pg.url
        args = [str(count), where, table, repr(lease_s), repr(claim_s)]
        live = holder = None
        try:
            live = probe_process("takeover", url, *args)
            read_json_line(live, 60)  # connected, its first claim done
            # The holder's start (and so the kill, right after its last commit renewed its lease)
            # falls at a random point of the live client's claim period: otherwise the phase is the
            # same in every round (a process's start-up takes as long each time), not random.
            time.sleep(random.uniform(0, claim_s))
            holder = probe_process("hold", f"ws://127.0.0.1:{free_port()}/down", *args)
            held = read_json_line(holder, 120)
            holder.kill()  # SIGKILL, by its PID
            killed_at = time.monotonic()
            holder.wait(10)
            run = {"accepted": held["accepted"], "accept_seconds": held["accept_seconds"]}
            add_drops(drops, held)
            errors += held["outbox_errors"]
            age = None
            if pg is not None:
                asked = time.monotonic()
                age = pg.lease_age(table, held["owner"])
                if age is not None:  # as it was at the kill
                    age -= (asked + time.monotonic()) / 2 - killed_at
            result = read_json_line(live, lease_s + claim_s + 90)
            live.wait(30)
            add_drops(drops, result)
            errors += result["outbox_errors"]
            run["reloaded"] = result["reloaded"]
            if held["accepted"] != count:
                reasons.append(f"the holder accepted {held['accepted']:,} of {count:,}")
            if result["done_at"] is None:
                reasons.append(f"the live client's server did not get all {count:,} "
                               f"({result['reloaded']:,} taken over)")
            else:
                run["seconds"] = result["done_at"] - killed_at
                if result["claim_began_at"] is not None:
                    began, ended = result["claim_began_at"], result["claim_ended_at"]
                    lapsed_at = killed_at + lease_s - (age or 0.0) if pg is not None else killed_at
                    run.update(waited_for_claim_seconds=began - lapsed_at, claim_seconds=ended - began,
                               delivery_seconds=result["done_at"] - ended, claims_that_took=result["claims_that_took"])
                if pg is not None:
                    run.update(over_lease_seconds=run["seconds"] - lease_s,
                               lease_age_at_kill_ms=round(age * 1000, 1) if age is not None else None)
            runs.append(run)
        finally:
            for proc in (holder, live):
                if proc is not None:
                    stop(proc)
                    proc.stdout.close()
            if pg is not None:
                pg.drop(table)
    if errors:
        reasons.append(f"the outbox failed {errors} time(s) (outbox_errors)")
    failure = drop_failure({"hermes": drops})
    failed = "; ".join(sorted(set(reasons)) + ([failure] if failure else [])) or None
    times = [run["seconds"] for run in runs if "seconds" in run]

    def median_of(key: str) -> float | None:
        values = [run[key] for run in runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    production = (lease_s, claim_s) == (PRODUCTION_LEASE, PRODUCTION_CLAIM)
    return {
        "store": "postgres" if pg is not None else "file", "count": count, "rounds": rounds,
        "lease_timeout": lease_s, "claim_every": claim_s, "production": production,
        # PostgreSQL: lapsed lease + the wait for the next claim; the file: the dead PID at the next claim
        "bound_seconds": lease_s + claim_s if pg is not None else claim_s,
        "seconds": statistics.median(times) if times and not failed else None,
        "max_seconds": max(times) if times else None, "runs_seconds": [round(t, 3) for t in times],
        "over_lease_seconds": median_of("over_lease_seconds") if pg is not None else None,
        "waited_for_claim_seconds": median_of("waited_for_claim_seconds"), "claim_seconds": median_of("claim_seconds"),
        "delivery_seconds": median_of("delivery_seconds"), "lease_age_at_kill_ms": median_of("lease_age_at_kill_ms"),
        "holder_accept_seconds": median_of("accept_seconds"), "runs": runs, "failed": failed, "dropped": drops,
    }


def largest_gap(results: list[dict]) -> float | None:
    """The largest gap a 1 ms ticker saw in any of these runs (ms)."""
    return max((r["ticker_max_gap_ms"] for r in results if r["ticker_max_gap_ms"] is not None), default=None)


def outbox_probe(what: str, url: str, count: int, path: str, *extra: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.outbox", what, url, str(count), path, *extra],
                         cwd=HERE.parent, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"outbox {what} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def probe_process(what: str, url: str, *args: str) -> subprocess.Popen:
    """benchmarks/outbox.py ``what`` running beside the harness; its stdout is read with read_json_line."""
    return subprocess.Popen([sys.executable, "-m", "benchmarks.outbox", what, url, *args], cwd=HERE.parent,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)


def print_outbox(o: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in o["load_average_at_start"])
    pg = o.get("postgres", {})
    server = pg.get("server")
    if server is None:
        where = f"PostgreSQL skipped: {pg.get('skipped', 'not run')}"
    elif server["private"]:
        where = (f"PostgreSQL {server['version'].split()[0]}: a private cluster on {server['shown'].split('//')[1]}, "
                 f"data in {server['data'].split('/hermes-pg-')[0]}, fsync on")
    else:
        where = f"PostgreSQL {server['version'].split()[0]}: {server['shown']} (--pg-url)"
    print(f"outbox (load average {load} at the start; files in {os.path.dirname(o['directory'])}; {where}):")
    a, pa = o["always"], pg.get("always")
    memory = (f" (memory only: {a['memory']['median']:,.0f} msg/s)" if a["memory"] else "")
    print(f"  \"always\", {a['handlers']} handler greenlets, {a['size']} B, defaults{memory}:", flush=True)
    rows = [("SQLite file", a, "always")] + ([("PostgreSQL", pa, "postgres")] if pa else [])
    for label, row, side in rows:
        if row["failed"]:
            print(f"    {label:<14}FAILED — {row['failed']}", flush=True)
            continue
        print(f"    {label:<14}{row[side]['median']:>9,.0f} msg/s delivered  x{row['ratio']:.2f} of memory  "
              f"target >= {row['target']:,} msg/s: {'met' if row['met'] else 'NOT met'}; "
              f"{row['messages_per_commit']:.1f} messages per commit; 0 dropped", flush=True)
    for part, what in (("spill", "spill at stop(), server down"), ("reload", "reload from start(), all taken over")):
        queue = (f"MAX_QUEUE_SIZE raised to {o[part]['max_queue_size']:,} for this figure"
                 if o[part]["max_queue_size"] > DEFAULT_QUEUE_SIZE else "default MAX_QUEUE_SIZE")
        print(f"  \"stop\" {what}, {o[part]['count']:,} messages ({queue}):", flush=True)
        for label, row in [("SQLite file", o[part])] + ([("PostgreSQL", pg[part])] if part in pg else []):
            if row["failed"]:
                print(f"    {label:<14}FAILED — {row['failed']}", flush=True)
                continue
            extra = (f", the server had them all after {row['delivered_seconds']:.3f} s"
                     if part == "reload" and row["delivered_seconds"] is not None else "")
            gap = row["ticker_max_gap_ms"]
            if gap is not None:
                # The queue is full of them: the sender works up to its catch-up budget before yielding
                # (fairness.MAX_BUDGET), by design - waiting would let new messages evict them.
                extra += (f" (a 1 ms ticker's largest gap meanwhile {gap:.1f} ms; with the queue this full the "
                          f"sender's catch-up budget is {CATCH_UP_MS:g} ms: "
                          f"{'within' if gap < CATCH_UP_MS + 10 else 'OVER'})")
            print(f"    {label:<14}{row['seconds']:.3f} s{extra}  target < {row['target_seconds']:g} s: "
                  f"{'met' if row['met'] else 'NOT met'}; 0 dropped", flush=True)
    txn = pg.get("txn")
    if txn is not None:
        print_txn(txn)
    print_takeover(o.get("takeover", {}), pg.get("takeover", {}))
    t = o["ticker"]
    if t["max_gap_ms"] is not None:
        memory = (f"; memory only, same handlers: {t['memory_max_gap_ms']:.1f} ms"
                  if t["memory_max_gap_ms"] is not None else "")
        postgres = (f"; PostgreSQL \"always\": {pa['ticker_max_gap_ms']:.1f} ms"
                    if pa and pa.get("ticker_max_gap_ms") is not None else "")
        print(f"  hub ticker ({t['tick_ms']:g} ms sleeps) while \"always\" commits: largest gap "
              f"{t['max_gap_ms']:.1f} ms (p99 {t['p99_gap_ms']:.1f} ms)  bound {t['bound_ms']} ms (the ticker "
              f"test's): {'met' if t['met'] else 'NOT met'}{memory}{postgres}", flush=True)


def print_txn(txn: dict) -> None:
    head = ("  transactional send, PostgreSQL only (send_message(msg, transaction=conn), a SQLAlchemy Connection on "
            "postgresql+psycopg://): the app's INSERT + commit")
    if "skipped" in txn:
        print(f"{head}: skipped ({txn['skipped']})", flush=True)
        return
    if txn["failed"]:
        print(f"{head}: FAILED — {txn['failed']}", flush=True)
        return
    w, s = txn["without_send"], txn["with_send"]
    print(f"{head}, {w['transactions']:,} of each kind ({txn['rounds']} x {txn['pairs_per_round']:,}, alternating):",
          flush=True)
    print(f"    {'without a send':<16}p50 {w['p50_ms']:6.2f} ms  p99 {w['p99_ms']:6.2f} ms", flush=True)
    print(f"    {'with a send':<16}p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms   added: p50 "
          f"{txn['added_p50_ms']:+.2f} ms, p99 {txn['added_p99_ms']:+.2f} ms  (no target: reported); all "
          f"{txn['delivered']:,} sent in transactions delivered after their commits, 0 dropped", flush=True)


def print_takeover(file: dict, pg: dict) -> None:
    count = next((row["count"] for row in [*file.values(), *pg.values()]), None)
    if count is None:
        return
    print(f"  takeover after SIGKILL: a holder accepted {count:,} (\"always\", its server down) and was SIGKILLed; "
          f"a live client of its identifier, kill -> the server has all {count:,}:", flush=True)
    for kind in ("shortened", "production"):
        for label, row in (("SQLite file", file.get(kind)), ("PostgreSQL", pg.get(kind))):
            if row is None:
                continue
            settings = (f"{'production' if row['production'] else 'SHORTENED'} LEASE_TIMEOUT {row['lease_timeout']:g} s,"
                        f" CLAIM_EVERY {row['claim_every']:g} s")
            if row["failed"]:
                print(f"    {label:<14}{settings}: FAILED — {row['failed']}", flush=True)
                continue
            of = f"median of {row['rounds']}, max {row['max_seconds']:.2f} s" if row["rounds"] > 1 else "one run"
            parts = (f"waited for the next claim {row['waited_for_claim_seconds']:.2f} s + claim "
                     f"{row['claim_seconds'] * 1000:.0f} ms + delivery {row['delivery_seconds'] * 1000:.0f} ms"
                     if row["claim_seconds"] is not None else "")
            if row["store"] == "postgres":
                print(f"    {label:<14}{settings}: {row['seconds']:.2f} s ({of}); bound lease + claim = "
                      f"{row['bound_seconds']:g} s: {'within' if row['seconds'] <= row['bound_seconds'] else 'OVER'}; "
                      f"over the lease {row['over_lease_seconds']:.2f} s = {parts} (the lease was "
                      f"{row['lease_age_at_kill_ms']:.0f} ms old at the kill); 0 dropped", flush=True)
            else:
                print(f"    {label:<14}{settings}: {row['seconds']:.2f} s ({of}); the dead PID is seen at the next "
                      f"claim, bound CLAIM_EVERY = {row['bound_seconds']:g} s: "
                      f"{'within' if row['seconds'] <= row['bound_seconds'] else 'OVER'}; {parts}; 0 dropped",
                      flush=True)
    short = pg.get("shortened")
    if short and not short["failed"] and "production" not in pg:
        extra = short["claim_seconds"] + short["delivery_seconds"]
        print(f"    (production lease not measured in this run: with LEASE_TIMEOUT {PRODUCTION_LEASE:g} s and "
              f"CLAIM_EVERY {PRODUCTION_CLAIM:g} s the same path takes {PRODUCTION_LEASE:g} s + up to "
              f"{PRODUCTION_CLAIM:g} s for the next claim + {extra * 1000:.0f} ms measured above)", flush=True)


def probe(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.probes", *args], cwd=HERE.parent,
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sink_capacity(url: str, scale: float) -> dict:
    """What the sink takes of 100 B messages: from a Node client (ws.send per message), and its ceiling,
    fed by the raw syscall path - frames built and masked once, before the clock starts, written in
    256 KiB sendall() calls - so no client's per-message work limits it (the median of three)."""
    count = max(1000, int(500_000 * scale))
    out = subprocess.run(["node", str(SINK / "blast.js"), url, str(count), "100"], capture_output=True, text=True,
                         timeout=120, check=True)
    seconds = float(out.stdout.strip())
    ceiling = statistics.median(prebuilt_blast(url, max(10_000, int(2_000_000 * scale)), 100) for _ in range(3))
    return {"msgs_per_s": count / seconds, "ceiling_msgs_per_s": ceiling}


def prebuilt_blast(url: str, count: int, size: int) -> float:
    """Messages/s the sink takes of ``count`` masked text frames of ``size`` bytes framed in advance."""
    import websocket

    from hermes_gevent.encoder import MaskKeys, frame_chunks
    from hermes_gevent.frames import OP_TEXT

    frame = frame_chunks([(OP_TEXT, b"x" * size)], MaskKeys())[1][0]  # one frame's bytes: header, key, payload
    per_write = max(1, 256 * 1024 // frame)
    block = b"".join(frame_chunks([(OP_TEXT, b"x" * size)] * per_write, MaskKeys())[0])
    writes, rest = divmod(count, per_write)
    tail = block[: rest * frame]
    ws = websocket.create_connection(f"{url}/sink?expect={count}", enable_multithread=False)
    try:
        sock = ws.sock
        start = time.perf_counter()
        for _ in range(writes):
            sock.sendall(block)
        if tail:
            sock.sendall(tail)
        reply = ws.recv()
        seconds = time.perf_counter() - start
    finally:
        ws.close()
    assert reply.startswith(f"done {count} "), reply
    return count / seconds


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
        warm = drained(base, 10)
        if not warm["connected"]:
            raise RuntimeError("the Flask app's client did not connect to the sink")
        worker = warm["pid"]  # gunicorn's one worker (app.pid is its master)
        get_json(lag_url)  # forget the warm-up's lags
        duration = "1s" if scale < 1 else "3s"
        rates: dict[str, list[float]] = {"plain": [], "send": []}
        cpu: dict[str, list[float]] = {"plain": [], "send": []}  # the worker's CPU us per request
        lags: list[dict] = []
        latencies: list[dict] = []  # wrk's request latency in the send runs, to set the lag beside
        for r in range(rounds * 2):
            for path in (["plain", "send"] if r % 2 == 0 else ["send", "plain"]):
                before = process_cpu_seconds(worker)
                run = wrk_run(pin(1), f"{base}/{path}", duration)
                rates[path].append(run["rps"])
                if path == "send":
                    latencies.append(run)
                    drained(base, 10)  # every message of this run reached the sink before the next run
                # after the drain: the sender's writes of this run's messages are counted with its requests
                cpu[path].append((process_cpu_seconds(worker) - before) / run["requests"] * 1e6)
                if path == "send":
                    lags.append(get_json(lag_url))
        status = get_json(f"{base}/hermes-status")
    finally:
        if app is not None:
            stop(app)
        stop(sink)
    return flask_summary(rates, lags, latencies, status, pinned, cpu)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (/proc/<pid>/stat, in clock ticks: 10 ms
    on Linux), read from outside: the worker does nothing for it."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def flask_summary(rates: dict[str, list[float]], lags: list[dict], latencies: list[dict], status: dict,
                  pinned: bool, cpu: dict[str, list[float]]) -> dict:
    """Medians of the runs; the lag as the median of each run's p50 and p99, and the worst of all;
    the worker's CPU per request (its whole process: the request, and with a send, send_message
    and the sender's writes)."""
    plain, send = statistics.median(rates["plain"]), statistics.median(rates["send"])
    drops = {"messages": status["messages_dropped"], "by_reason": status["drops_by_reason"]}
    failed = None
    if drops["messages"]:
        failed = (f"hermes dropped {drops['messages']:,} messages ({', '.join(sorted(drops['by_reason']))}) "
                  f"under wrk -c{WRK_CONNECTIONS}")
    measured = [run for run in lags if run["count"]]
    return {
        "plain_rps": plain, "send_rps": send, "ratio": send / plain, "met": not failed and send / plain >= FLASK_TARGET,
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
        "cpu_us_per_request": {"plain": statistics.median(cpu["plain"]), "send": statistics.median(cpu["send"]),
                               "added": statistics.median(cpu["send"]) - statistics.median(cpu["plain"]),
                               "runs": {path: [round(v, 1) for v in values] for path, values in cpu.items()},
                               "how": "the gunicorn worker's utime + stime (/proc/<pid>/stat) over each wrk run "
                                      "(a send run's until its queue drained), over wrk's requests"},
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
              f"{f['plain_rps']:.0f} without (ratio {f['ratio']:.3f}, target >= {FLASK_TARGET}; "
              f"{'worker pinned to its own CPU' if f['pinned'] else 'not pinned'}); 0 dropped")
        print(f"  delivery lag, send_message -> sink: p50 {lag['p50']:.2f} ms, p99 {lag['p99']:.2f} ms, "
              f"max {lag['max']:.2f} ms over {lag['messages']:,} messages; deepest queue seen {f['queue_size_max']:,}")
        latency = f["request_latency_ms"]
        print(f"  request latency in the same runs (wrk): p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms")
        cpu = f["cpu_us_per_request"]
        print(f"  the worker's CPU per request: {cpu['send']:.0f} us with send_message, {cpu['plain']:.0f} us without "
              f"({cpu['added']:+.0f} us: send_message and the sender's writes)")


def wrk(prefix: list[str], url: str, duration: str) -> float:
    """Requests/s that wrk measured; every response must be a 200. A slow response is a slow
    response, not an error: the event loop of a loaded worker can stall for a second."""
    return wrk_run(prefix, url, duration)["rps"]


def wrk_run(prefix: list[str], url: str, duration: str) -> dict:
    """wrk's requests/s, its request latency percentiles (ms) and the requests it completed."""
    out = subprocess.run([*prefix, "wrk", "-t", "1", "-c", str(WRK_CONNECTIONS), "-d", duration, "--timeout", "10s",
                          "--latency", url], capture_output=True, text=True, timeout=60, check=True)
    if "Non-2xx" in out.stdout or "Socket errors" in out.stdout:
        raise RuntimeError(f"wrk saw errors from {url}:\n{out.stdout}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("Requests/sec:"))
    # wrk pads a one-letter unit with a trailing space ("1.02s "): allow it.
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out.stdout, re.MULTILINE))
    requests = int(re.search(r"^\s*(\d+) requests in ", out.stdout, re.MULTILINE).group(1))
    return {"rps": float(line.split()[1]), "p50_ms": _ms(percentiles["50"]), "p99_ms": _ms(percentiles["99"]),
            "requests": requests}


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
