"""The compression benchmark: 1 KiB JSON one-way with permessage-deflate, hermes beside websockets.

Both peers negotiate permessage-deflate with the same Node ws server (benchmarks/sink, started
with "deflate": ws' defaults, which compress what they send from 1 KiB on and read anything),
send the same JSON texts (benchmarks.peer.json_corpus: 64 different events of 1,024 bytes),
and stop the clock when the server has counted them all. Reported per peer: msg/s (median of
the rounds, alternating who goes first) and bytes on the wire per message (what the server read
off the socket, frames and all, over the messages). Target: hermes >= 1.0x websockets' msg/s.
"""

from __future__ import annotations

import statistics

from .harness import add_drops, drop_failure, no_drops, run_peer, start_sink, stop

SIZE = 1024
TARGET = 1.0
PEERS = ("websockets", "hermes")


def compression_benchmark(scale: float, rounds: int) -> dict:
    count = max(20, int(50_000 * scale))
    sink, port = start_sink(deflate=True)
    url = f"ws://127.0.0.1:{port}"
    rates: dict[str, list[float]] = {peer: [] for peer in PEERS}
    wire: dict[str, list[float]] = {peer: [] for peer in PEERS}
    extensions: dict[str, set] = {peer: set() for peer in PEERS}
    busy: list[float] = []  # how busy the one-core Node server was: near 1.0, it bounds both peers
    drops = {peer: no_drops() for peer in PEERS}
    try:
        for r in range(rounds):
            for peer in PEERS[r % 2:] + PEERS[: r % 2]:
                result = run_peer(peer, "deflate", SIZE, count, url)
                add_drops(drops[peer], result)
                extensions[peer].add(result.get("extension"))
                if result["seconds"] is None:
                    continue
                rates[peer].append(count / result["seconds"])
                busy.append(result["sink_busy"])
                wire[peer].append(result["wire_bytes"] / count)
    finally:
        stop(sink)
    failed = drop_failure(drops)
    if failed is None and None in extensions["hermes"] | extensions["websockets"]:
        failed = "a peer did not negotiate permessage-deflate"
    row: dict = {"count": count, "size": SIZE, "target": TARGET, "failed": failed, "dropped": drops,
                 "sink_busy_max": max(busy) if busy else None,
                 "extensions": {peer: sorted(str(e) for e in found) for peer, found in extensions.items()}}
    if failed is None:
        row["peers"] = {peer: {"median": statistics.median(rates[peer]), "runs": [round(v) for v in rates[peer]],
                               "wire_bytes_per_message": statistics.median(wire[peer])} for peer in PEERS}
        row["ratio_to_websockets"] = row["peers"]["hermes"]["median"] / row["peers"]["websockets"]["median"]
        row["met"] = row["ratio_to_websockets"] >= TARGET
    return row


def print_compression(row: dict) -> None:
    if row["failed"]:
        print(f"compression, 1 KiB JSON: FAILED — {row['failed']}", flush=True)
        return
    p = row["peers"]
    print(f"compression, 1 KiB JSON (permessage-deflate both): websockets {p['websockets']['median']:,.0f}  "
          f"hermes {p['hermes']['median']:,.0f} msg/s  x{row['ratio_to_websockets']:.2f} websockets  "
          f"target x{TARGET:.1f}: {'met' if row['met'] else 'NOT met'}; bytes on the wire per message: "
          f"websockets {p['websockets']['wire_bytes_per_message']:.0f}, hermes {p['hermes']['wire_bytes_per_message']:.0f} "
          f"({SIZE:,} uncompressed); 0 dropped  (sink busy <= {row['sink_busy_max']:.0%})", flush=True)
