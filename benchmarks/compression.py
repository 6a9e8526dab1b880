"""The compression benchmark: 1 KiB JSON one-way with permessage-deflate, hermes beside websockets.

Both peers negotiate permessage-deflate, with the settings a user gets, with the same Node ws
server (benchmarks/sink, started with "deflate": ws' defaults, which leave the client's window
to the client - 15 bits for websockets, hermes' own 12 - and read anything), send the same
JSON texts (benchmarks.peer.json_corpus: 64 different events of 1,024 bytes), and stop the
clock when the server has counted them all. One short run of each peer warms the server
first (not counted). Reported per peer: msg/s (median of the rounds, alternating who goes
first), bytes on the wire per message (what the server read off the socket, frames and all,
over the messages), and CPU per message of the peer's process (time.process_time over the
run, every thread) and of the Node server (process.cpuUsage from its first message to its
last, its zlib threads included). Target: hermes >= 1.0x websockets' msg/s.

Beside it, in the same run and against the same server:

- 100 B: hermes with compression on (the default: these messages are under
  COMPRESSION_THRESHOLD and go plain), off, and with every message compressed (threshold 0):
  what compression costs messages too small to gain from it.
- memory per connection, hermes and websockets, compression on and off: what
  MEMORY_CONNECTIONS connections, each having sent MEMORY_MESSAGES (benchmarks.peer) 1 KiB
  texts to /echo and got them back, left allocated in a fresh process after a first one
  (tracemalloc: every block Python and zlib hold - zlib's window and tables come from
  PyMem_RawMalloc, which it traces). RSS would count only the pages touched so far (zlib
  allocates its window whole and fills it as messages pass), and moves in pages; allocated
  bytes are what each connection will hold.
"""

from __future__ import annotations

import statistics

from hermes_gevent import deflate

from .harness import add_drops, drop_failure, no_drops, run_peer, start_sink, stop

SIZE = 1024
SMALL = 100
TARGET = 1.0
PEERS = ("websockets", "hermes")
#: The 100 B runs: hermes' workload for each (benchmarks.peer.DEFLATE_OPTIONS).
SMALL_RUNS = {"on": "deflate", "off": "deflate-off", "every": "deflate-all"}
MEMORY_CONNECTIONS = 20
WARMUP = 5000


def compression_benchmark(scale: float, rounds: int) -> dict:
    count = max(20, int(50_000 * scale))
    small_count = max(20, int(200_000 * scale))
    sink, port = start_sink(deflate=True)
    url = f"ws://127.0.0.1:{port}"
    runs: dict[str, list[dict]] = {peer: [] for peer in PEERS}
    small: dict[str, list[dict]] = {name: [] for name in SMALL_RUNS}
    extensions: dict[str, set] = {name: set() for name in (*PEERS, *(f"hermes 100 B {n}" for n in SMALL_RUNS))}
    windows: dict[str, set] = {peer: set() for peer in PEERS}  # the window each compressed with
    drops = {name: no_drops() for name in extensions}
    memory: dict = {}
    try:
        for peer in PEERS:  # the server's JIT warms up on nobody's clock
            run_peer(peer, "deflate", SIZE, min(count, WARMUP), url)
        for r in range(rounds):
            for peer in PEERS[r % 2:] + PEERS[: r % 2]:
                result = run_peer(peer, "deflate", SIZE, count, url)
                add_drops(drops[peer], result)
                extensions[peer].add(result.get("extension"))
                windows[peer].add(result.get("window_bits"))
                if result["seconds"] is not None:
                    runs[peer].append(result)
            names = list(SMALL_RUNS)
            for name in names[r % 3:] + names[: r % 3]:
                n = count if name == "every" else small_count  # compressed, each is 10 times slower
                result = run_peer("hermes", SMALL_RUNS[name], SMALL, n, url)
                add_drops(drops[f"hermes 100 B {name}"], result)
                extensions[f"hermes 100 B {name}"].add(result.get("extension"))
                if result["seconds"] is not None:
                    small[name].append(result)
        for peer in PEERS:
            memory[peer] = {state: run_peer(peer, workload, SIZE, MEMORY_CONNECTIONS, url)
                            for state, workload in (("on", "deflate-memory"), ("off", "deflate-memory-off"))}
    finally:
        stop(sink)
    failed = drop_failure(drops)
    compressed = [name for name in extensions if not name.endswith(" off")]
    if failed is None and any(None in extensions[name] for name in compressed):
        failed = "a peer did not negotiate permessage-deflate"
    if failed is None and extensions["hermes 100 B off"] != {None}:
        failed = "hermes negotiated permessage-deflate with compression off"
    if failed is None and any(m["on"]["extension"] is None or m["off"]["extension"] for m in memory.values()):
        failed = "a memory run did not negotiate as asked (on: permessage-deflate, off: nothing)"
    busy = [result["sink_busy"] for peer in PEERS for result in runs[peer]]
    row: dict = {"count": count, "size": SIZE, "target": TARGET, "failed": failed, "dropped": drops,
                 "sink_busy_max": max(busy) if busy else None,
                 "extensions": {name: sorted(str(e) for e in found) for name, found in extensions.items()},
                 "window_bits": {peer: sorted(found, key=str) for peer, found in windows.items()}}
    if failed is None:
        row["peers"] = {peer: figures(runs[peer], count) for peer in PEERS}
        row["ratio_to_websockets"] = row["peers"]["hermes"]["median"] / row["peers"]["websockets"]["median"]
        row["met"] = row["ratio_to_websockets"] >= TARGET
        variants = {name: figures(small[name], count if name == "every" else small_count)
                    for name in SMALL_RUNS}
        row["small"] = {"size": SMALL, "count": small_count, "count_every": count, "threshold": deflate.THRESHOLD,
                        "variants": variants,
                        "ratio_on_to_off": variants["on"]["median"] / variants["off"]["median"],
                        "cpu_us_added": variants["on"]["cpu_us_per_message"] - variants["off"]["cpu_us_per_message"]}
        row["memory"] = {"connections": MEMORY_CONNECTIONS, "method": "tracemalloc",
                         "messages_each": memory["hermes"]["on"]["messages_each"],
                         "peers": {peer: memory_figures(m) for peer, m in memory.items()}}
    return row


def memory_figures(m: dict) -> dict:
    on, off = m["on"]["bytes_per_connection"], m["off"]["bytes_per_connection"]
    return {"on_bytes": on, "off_bytes": off, "added_bytes": on - off, "extension": m["on"]["extension"]}


def figures(results: list[dict], count: int) -> dict:
    """Medians over the runs: msg/s, wire bytes, the peer's and the server's CPU per message."""
    return {"median": statistics.median(count / r["seconds"] for r in results),
            "runs": [round(count / r["seconds"]) for r in results],
            "wire_bytes_per_message": statistics.median(r["wire_bytes"] / count for r in results),
            "cpu_us_per_message": statistics.median(r["cpu_seconds"] / count * 1e6 for r in results),
            "sink_cpu_us_per_message": statistics.median(r["sink_cpu_seconds"] / count * 1e6 for r in results)}


def windows(row: dict, peer: str) -> str:
    return "/".join(str(bits) for bits in row["window_bits"][peer])


def print_compression(row: dict) -> None:
    if row["failed"]:
        print(f"compression, 1 KiB JSON: FAILED — {row['failed']}", flush=True)
        return
    p = row["peers"]
    ws, hermes = p["websockets"], p["hermes"]
    print(f"compression, 1 KiB JSON (permessage-deflate both): websockets {ws['median']:,.0f}  "
          f"hermes {hermes['median']:,.0f} msg/s  x{row['ratio_to_websockets']:.2f} websockets  "
          f"target x{TARGET:.1f}: {'met' if row['met'] else 'NOT met'}; bytes on the wire per message: "
          f"websockets {ws['wire_bytes_per_message']:.0f}, hermes {hermes['wire_bytes_per_message']:.0f} "
          f"({SIZE:,} uncompressed; windows: {windows(row, 'websockets')} and {windows(row, 'hermes')} bits); "
          f"CPU per message: websockets {ws['cpu_us_per_message']:.1f} us, "
          f"hermes {hermes['cpu_us_per_message']:.1f} us, the Node server {ws['sink_cpu_us_per_message']:.0f} us "
          f"for websockets' and {hermes['sink_cpu_us_per_message']:.0f} us for hermes'; 0 dropped  "
          f"(sink busy <= {row['sink_busy_max']:.0%})", flush=True)
    s = row["small"]
    on, off, every = (s["variants"][name] for name in ("on", "off", "every"))
    print(f"compression, {SMALL} B JSON (hermes, under COMPRESSION_THRESHOLD={s['threshold']}): "
          f"on {on['median']:,.0f}  off {off['median']:,.0f} msg/s  x{s['ratio_on_to_off']:.2f} of off; "
          f"CPU per message {on['cpu_us_per_message']:.2f} us on, {off['cpu_us_per_message']:.2f} off "
          f"({s['cpu_us_added']:+.2f}); every message compressed (threshold 0): {every['median']:,.0f} msg/s, "
          f"{every['cpu_us_per_message']:.2f} us, {every['wire_bytes_per_message']:.0f} B on the wire "
          f"(plain {on['wire_bytes_per_message']:.0f}), the Node server {every['sink_cpu_us_per_message']:.0f} us "
          f"per message (plain {on['sink_cpu_us_per_message']:.1f})", flush=True)
    m = row["memory"]
    parts = [f"{peer} {v['on_bytes'] / 1024:,.0f} KiB with, {v['off_bytes'] / 1024:,.0f} without "
             f"({v['added_bytes'] / 1024:+,.0f})" for peer, v in m["peers"].items()]
    print(f"compression, memory per connection ({m['method']}, {m['connections']} connections after "
          f"{m['messages_each']} echoes of {SIZE:,} B): {'; '.join(parts)}", flush=True)
