"""Run by test_store.py: a ticker greenlet must keep ticking while OUTBOX_SYNC="always" sends
commit (and, once written, their rows are deleted) - SQLite runs in the store's thread.

usage: outbox_ticker.py URL PATH PRODUCERS PER_PRODUCER [unpatched]

PATH is an SQLite file, or a postgresql:// URL (OUTBOX_URL: psycopg in the store's thread);
"unpatched": gevent does not monkey-patch the process (the store must not need it).

PRODUCERS greenlets each send PER_PRODUCER numbered messages ("n:<int>", the server's count
mode) to URL, each send returning once committed; then the client flushes and the rows leave
the file. A greenlet that sleeps 1 ms records the gaps between its ticks all along, as
hub_ticker.py does. MAX_QUEUE_SIZE is large enough that the sender never works in its
near-overflow mode (fairness.MAX_BUDGET): the gaps are the store's, not that budget's.
Prints one JSON line.
"""

import sys

from gevent import monkey

if sys.argv[5:6] != ["unpatched"]:
    monkey.patch_all()

import gc  # noqa: E402
import json  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

url, path, producers, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
TICK = 0.001
gaps = []
collections = []  # the garbage collector's pauses: a gap as long as one of them is not the store's


def ticker():
    last = time.perf_counter()
    while True:
        gevent.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last - TICK)
        last = now


def on_collection(phase, info, started=[0.0]):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        collections.append(time.perf_counter() - started[0])


def rows():
    if path.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(path) as conn:
            return conn.execute("SELECT count(*) FROM hermes_outbox").fetchone()[0]
    conn = sqlite3.connect(path, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        conn.close()


where = dict(outbox_url=path) if path.startswith("postgresql://") else dict(outbox_path=path)
client = WebSocketClient(url=url, identifier="ticker", outbox_sync="always", **where,
                         max_queue_size=10 * producers * per)
client.start()
report = {"connected": client.wait_until_connected(10)}
gc.callbacks.append(on_collection)
ticking = gevent.spawn(ticker)
gevent.sleep(0.05)


def produce(p):
    accepted = 0
    for i in range(per):
        accepted += client.send_message(f"n:{p * per + i}")
    return accepted


began = time.perf_counter()
senders = [gevent.spawn(produce, p) for p in range(producers)]
gevent.joinall(senders, timeout=60)
report["accepted"] = sum(g.value or 0 for g in senders)
report["send_seconds"] = round(time.perf_counter() - began, 3)
report["flushed"] = client.flush(30)
deadline = time.monotonic() + 10
while rows() and time.monotonic() < deadline:
    gevent.sleep(0.01)  # the last deletes go with the committer's next transaction
report["rows_left"] = rows()
report["seconds"] = round(time.perf_counter() - began, 3)
ticking.kill()
gc.callbacks.remove(on_collection)
report["ticks"] = len(gaps)
report["max_gap_ms"] = round(max(gaps) * 1000, 2)
report["max_gc_ms"] = round(max(collections, default=0) * 1000, 2)
report["undelivered"] = client.stop(5)
print(json.dumps(report), flush=True)
