"""The outbox (OUTBOX_PATH, or OUTBOX_URL on PostgreSQL), each benchmark in its own process:

    python -m benchmarks.outbox always URL COUNT PATH   64 handler greenlets, OUTBOX_SYNC="always"
    python -m benchmarks.outbox always URL COUNT -      the same with OUTBOX_PATH=None (memory)
    python -m benchmarks.outbox spill URL COUNT PATH    the server down: COUNT queued, time stop()
    python -m benchmarks.outbox reload URL COUNT PATH   time start() -> the COUNT spilled ones taken over

PATH may be a postgresql:// URL instead (passed as outbox_url=), with an optional OUTBOX_TABLE
after it (default hermes_outbox). PostgreSQL alone:

    python -m benchmarks.outbox txn URL COUNT PG_URL [TABLE]   the cost a transactional send adds to a commit

The takeover of a killed process's messages, PATH a file or a postgresql:// URL (TABLE "-" for a file):

    python -m benchmarks.outbox hold URL COUNT PATH TABLE LEASE CLAIM       accept COUNT (URL down), then wait
    python -m benchmarks.outbox takeover URL COUNT PATH TABLE LEASE CLAIM   the live client of a takeover

Prints one JSON line (takeover: two, "ready" and then its result).

always: HANDLERS greenlets call send_message in a loop, as the request handlers of a gevent
worker do, against /sink?expect=COUNT (COUNT rounded down to a multiple of HANDLERS). Every
setting is a user's (MAX_QUEUE_SIZE 10000, drop_oldest); with a path, OUTBOX_SYNC="always":
each send_message returns once its message is committed (a group commit). A handler sends one
message per request and yields (sleep(0)), as a handler returns to the hub; above the one-way
producer's high-water mark (benchmarks/peer.py: half the queue) it waits for the queue to
drain (flush) instead. Under "always" every call waits for its commit anyway. The clock stops
when the server has counted COUNT messages: only what it received counts. A run that dropped or
refused anything has no time. Meanwhile a ticker greenlet sleeps TICK in a loop and records its
largest gap (the time past TICK between two ticks), as tests/scripts/hub_ticker.py does; the
store's commit counters give the messages per group commit.

spill: a client whose server is down (URL: a closed port) with OUTBOX_SYNC="stop" and
MAX_QUEUE_SIZE raised to COUNT (the default 10000 could not hold 100,000) queues COUNT messages;
the figure is how long stop() takes to spill them to the file (the ticker runs meanwhile).
reload: a new process, the same settings, the server up: the time from start() until all COUNT
are taken over from the file (messages_reloaded == COUNT, noted as the claim sets it: see
TimedClient), and until the server has them all; the ticker runs meanwhile too.

txn (PostgreSQL): the app's transaction on a SQLAlchemy Connection ("postgresql+psycopg://", the
outbox's database), as a request handler runs it: a Connection from the engine's pool, INSERT one
row into the app's table (TABLE_app), commit. COUNT such transactions without a send and COUNT
with send_message(msg, transaction=conn) between the INSERT and the commit, in pairs whose order
alternates, in one process; each timed from the INSERT to the end of commit() (the checkout and
return of the pooled connection are not in it: they are the same on both sides). WARMUP pairs
first, not counted. The client is connected to /sink?expect=COUNT: the run counts once the server
has every message sent in a transaction (each is taken from the table after its commit, as the
next transactions run). Prints both sides' samples (ms), the pooled percentiles are the harness's.

hold and takeover (the same identifier, file or TABLE): ``takeover`` starts a live client
connected to /sink?expect=COUNT, prints {"ready": ...} once connected and its first claim is done,
and waits for the server's "done". ``hold`` (URL: a closed port) accepts COUNT messages with
OUTBOX_SYNC="always" from HANDLERS greenlets - each committed, under its lease - prints one JSON
line and waits to be killed. The harness SIGKILLs it and (PostgreSQL) reads its lease's age in the
database; the live client's claim loop takes the rows once the lease is LEASE seconds old
(lease.LEASE_TIMEOUT as this process judges others' leases) - in a file, as soon as the holder's
PID is dead - at its next claim (every CLAIM s: persistence.CLAIM_EVERY).
Both processes set LEASE and CLAIM (the production values are 25 and 5). The live client notes
(time.monotonic(), the system's CLOCK_MONOTONIC: the harness's clock too) when the claim that took
them began and ended, and when the server said it had all COUNT.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402
from hermes_gevent.run import Counters  # noqa: E402

#: Concurrent request-handler greenlets in the "always" workload.
HANDLERS = 64
#: Message size (bytes of text), as one-way 100 B.
SIZE = 100
#: The ticker's sleep.
TICK = 0.001
#: txn: pairs run first and not counted (the pool's connection, prepared plans, the client's first take).
WARMUP = 20
#: hold/takeover: the identifier both clients share.
TAKEOVER_IDENTIFIER = "bench-takeover"


def store_options(path: str, table: str | None = None) -> dict:
    """The client's outbox keywords for PATH: "-" memory only, a postgresql:// URL, or a file."""
    if path == "-":
        return {}
    if path.startswith(("postgresql://", "postgres://", "postgresql+")):
        return {"outbox_url": path, **({"outbox_table": table} if table else {})}
    return {"outbox_path": path}


def sqlalchemy_url(url: str) -> str:
    """The outbox's postgresql:// URL as SQLAlchemy's psycopg 3 dialect names it."""
    scheme, rest = url.split("://", 1)
    return f"postgresql+psycopg://{rest}" if scheme in ("postgresql", "postgres") else url


class Ticker:
    """A greenlet that sleeps TICK in a loop; ``max_gap`` is the longest it overslept (s)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        last = time.perf_counter()
        while True:
            gevent.sleep(TICK)
            now = time.perf_counter()
            self.gaps.append(now - last - TICK)
            last = now

    def stop(self) -> dict:
        self.greenlet.kill()
        gaps = sorted(self.gaps)
        if not gaps:
            return {"ticks": 0, "max_gap_ms": None, "p99_gap_ms": None}
        return {"ticks": len(gaps), "max_gap_ms": round(gaps[-1] * 1000, 2),
                "p99_gap_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 2)}


class SinkDone:
    """The client's on_message: the sink's "done <count> ..." reply, when (CLOCK_MONOTONIC), and an
    event set by it."""

    def __init__(self) -> None:
        self.event = gevent.event.Event()
        self.replies: list[str] = []
        self.at: list[float] = []

    def __call__(self, msg) -> None:
        if isinstance(msg, str) and msg.startswith("done"):
            self.at.append(time.monotonic())
            self.replies.append(msg)
            self.event.set()


def always(url: str, count: int, path: str, table: str | None = None) -> dict:
    per_handler = count // HANDLERS
    total = per_handler * HANDLERS
    sink = SinkDone()
    done, replies, on_message = sink.event, sink.replies, sink

    options = store_options(path, table)
    if options:
        options["outbox_sync"] = "always"
    client = WebSocketClient(url=f"{url}/sink?expect={total}", on_message=on_message, **options)
    client.start()
    assert client.wait_until_connected(10)
    high_water = min(client.settings.MAX_QUEUE_SIZE // 2, 4 * 2**20 // SIZE)
    text = "x" * SIZE
    refused = [0]

    def handler() -> None:
        for _ in range(per_handler):
            if not client.send_message(text):
                refused[0] += 1
            if client.queue_size > high_water:
                client.flush(60)
            else:
                gevent.sleep(0)

    ticker = Ticker()
    gevent.sleep(0.05)
    start = time.perf_counter()
    gevent.joinall([gevent.spawn(handler) for _ in range(HANDLERS)])
    accepted_in = time.perf_counter() - start
    status = client.status()
    result = {"seconds": None, "count": total, "handlers": HANDLERS, "accepted_seconds": accepted_in}
    if not status["messages_dropped"] and not refused[0]:
        done.wait(120)
        result["seconds"] = time.perf_counter() - start
        assert replies and replies[0].startswith(f"done {total} "), replies
    result.update(ticker.stop())
    store = client.run.store
    result["commits"] = getattr(store, "commits", None)
    result["committed"] = getattr(store, "committed", None)
    status = client.status()  # before stop(): stop() counts what it discards as drops of its own
    client.stop(5)
    by_reason = dict(status["drops_by_reason"], **({"refused": refused[0]} if refused[0] else {}))
    result.update(dropped=status["messages_dropped"] + refused[0], drops_by_reason=by_reason,
                  refused=refused[0], outbox_errors=status["outbox_errors"])
    return result


class TimedCounters(Counters):
    """Counters that note when ``messages_reloaded`` reaches ``expect``: the claim sets it as it
    hands the messages to the queue. The sender, woken then, starts writing them before a greenlet
    polling status() runs again, and may hold the hub meanwhile (the ticker shows how long): the
    poll's figure is kept too ("seen_seconds")."""

    expect = None
    reloaded_at = None

    @property
    def messages_reloaded(self) -> int:
        return self.__dict__.get("_reloaded", 0)

    @messages_reloaded.setter
    def messages_reloaded(self, value: int) -> None:
        self.__dict__["_reloaded"] = value
        if self.expect is not None and self.reloaded_at is None and value >= self.expect:
            self.reloaded_at = time.perf_counter()


class TimedClient(WebSocketClient):
    """A WebSocketClient whose counters are TimedCounters (the runs it starts count into them).
    spill and reload both use this class: a client's identifier (its class name when it has
    none) owns the messages."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.counters = TimedCounters()


def queue_size(count: int) -> int:
    """MAX_QUEUE_SIZE for spill and reload: the default, raised to ``count`` when it holds fewer."""
    return max(count, WebSocketClient.MAX_QUEUE_SIZE)


def spill(url: str, count: int, path: str, table: str | None = None) -> dict:
    client = TimedClient(url=url, max_queue_size=queue_size(count), retry_delay=5, max_retry_delay=5,
                         **store_options(path, table))
    client.start()
    for i in range(count):
        client.send_message("x" * (SIZE - 8) + f"{i:08d}")
        if i % 100 == 99:
            gevent.sleep(0)
    queued = client.queue_size
    ticker = Ticker()
    gevent.sleep(0.05)
    began = time.perf_counter()
    left = client.stop()
    seconds = time.perf_counter() - began
    gaps = ticker.stop()
    status = client.status()
    return {"seconds": seconds, "max_queue_size": client.settings.MAX_QUEUE_SIZE, "queued": queued,
            "spilled": status["messages_spilled"], "left_undelivered": left, "ticker_max_gap_ms": gaps["max_gap_ms"],
            "dropped": status["messages_dropped"], "drops_by_reason": status["drops_by_reason"],
            "outbox_errors": status["outbox_errors"]}


def reload(url: str, count: int, path: str, table: str | None = None) -> dict:
    sink = SinkDone()
    done, replies, on_message = sink.event, sink.replies, sink

    client = TimedClient(url=f"{url}/sink?expect={count}", max_queue_size=queue_size(count),
                         on_message=on_message, **store_options(path, table))
    client.counters.expect = count
    ticker = Ticker()
    gevent.sleep(0.05)
    began = time.perf_counter()
    client.start()
    deadline = began + 30
    while client.counters.messages_reloaded < count and time.perf_counter() < deadline:
        gevent.sleep(0.0005)
    seen = time.perf_counter() - began
    delivered = None
    if client.counters.messages_reloaded == count and done.wait(60):
        delivered = time.perf_counter() - began
        assert replies[0].startswith(f"done {count} "), replies
    gaps = ticker.stop()
    status = client.status()
    client.stop(5)
    reloaded_at = client.counters.reloaded_at
    return {"seconds": reloaded_at - began if reloaded_at is not None else None,
            "seen_seconds": seen, "reloaded": status["messages_reloaded"], "delivered_seconds": delivered,
            "max_queue_size": client.settings.MAX_QUEUE_SIZE, "ticker_max_gap_ms": gaps["max_gap_ms"],
            "dropped": status["messages_dropped"], "drops_by_reason": status["drops_by_reason"],
            "outbox_errors": status["outbox_errors"]}


def txn(url: str, count: int, pg_url: str, table: str | None = None) -> dict:
    import sqlalchemy

    table = table or "hermes_outbox"
    sink = SinkDone()
    done, replies, on_message = sink.event, sink.replies, sink

    total = WARMUP + count
    client = WebSocketClient(url=f"{url}/sink?expect={total}", on_message=on_message,
                             **store_options(pg_url, table))
    client.start()
    assert client.wait_until_connected(10)
    engine = sqlalchemy.create_engine(sqlalchemy_url(pg_url), pool_size=1, max_overflow=0)
    app_table = f"{table}_app"
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f'CREATE TABLE IF NOT EXISTS "{app_table}" '
                                     "(id bigserial PRIMARY KEY, item text NOT NULL, "
                                     "created_at timestamptz NOT NULL DEFAULT now())"))
    insert = sqlalchemy.text(f'INSERT INTO "{app_table}" (item) VALUES (:item)')
    text = "x" * SIZE
    samples: dict[str, list[float]] = {"plain": [], "send": []}
    refused = [0]

    def transaction(kind: str, i: int) -> float:
        with engine.connect() as conn:  # a request's connection, from the pool
            began = time.perf_counter()
            conn.execute(insert, {"item": f"{kind}-{i}"})
            if kind == "send" and not client.send_message(text, transaction=conn):
                refused[0] += 1
            conn.commit()
            return time.perf_counter() - began

    ticker = Ticker()
    began = time.perf_counter()
    for i in range(total):
        for kind in (("plain", "send") if i % 2 == 0 else ("send", "plain")):
            seconds = transaction(kind, i)
            if i >= WARMUP:
                samples[kind].append(round(seconds * 1000, 4))
    transactions_in = time.perf_counter() - began
    delivered = None
    if done.wait(60):
        delivered = time.perf_counter() - began
        assert replies[0].startswith(f"done {total} "), replies
    gaps = ticker.stop()
    status = client.status()
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(f'SELECT count(*) FROM "{app_table}"')).scalar_one()
    engine.dispose()
    client.stop(5)
    return {"count": count, "warmup": WARMUP, "plain_ms": samples["plain"], "send_ms": samples["send"],
            "transactions_seconds": transactions_in, "delivered_seconds": delivered, "app_rows": rows,
            "sent_in_transactions": total, "ticker_max_gap_ms": gaps["max_gap_ms"],
            "dropped": status["messages_dropped"] + refused[0],
            "drops_by_reason": dict(status["drops_by_reason"], **({"refused": refused[0]} if refused[0] else {})),
            "outbox_errors": status["outbox_errors"]}


def set_lease(lease_timeout: float, claim_every: float) -> None:
    """lease.LEASE_TIMEOUT (how this process judges others' leases) and persistence.CLAIM_EVERY
    (the claim loop's period, which renews its own), read when used: set before start()."""
    from hermes_gevent import lease, persistence

    lease.LEASE_TIMEOUT, persistence.CLAIM_EVERY = lease_timeout, claim_every


def hold(url: str, count: int, pg_url: str, table: str, lease_timeout: float, claim_every: float) -> None:
    """Accept ``count`` messages durably while ``url`` is down, say so, and wait to be killed."""
    set_lease(lease_timeout, claim_every)
    client = WebSocketClient(url=url, identifier=TAKEOVER_IDENTIFIER, outbox_sync="always", retry_delay=5,
                             max_retry_delay=5, max_queue_size=queue_size(count), **store_options(pg_url, table))
    client.start()
    per_handler = -(-count // HANDLERS)
    accepted = [0]

    def handler(first: int) -> None:
        for i in range(first, min(first + per_handler, count)):
            ok = client.send_message(f"h-{i:08d}" + "x" * (SIZE - 10))  # waits for its commit
            accepted[0] += bool(ok)

    began = time.perf_counter()
    gevent.joinall([gevent.spawn(handler, first) for first in range(0, count, per_handler)])
    status = client.status()
    print(json.dumps({"pid": os.getpid(), "owner": client.run.store._db.owner, "accepted": accepted[0],
                      "accept_seconds": time.perf_counter() - began, "dropped": status["messages_dropped"],
                      "drops_by_reason": status["drops_by_reason"], "outbox_errors": status["outbox_errors"]}),
          flush=True)
    gevent.event.Event().wait()  # until the SIGKILL


def takeover(url: str, count: int, pg_url: str, table: str, lease_timeout: float, claim_every: float) -> dict:
    """The live client: its claims (start, end) and the server's "done", on CLOCK_MONOTONIC."""
    set_lease(lease_timeout, claim_every)
    sink = SinkDone()
    done, replies, done_at, on_message = sink.event, sink.replies, sink.at, sink

    client = TimedClient(url=f"{url}/sink?expect={count}", identifier=TAKEOVER_IDENTIFIER, on_message=on_message,
                         max_queue_size=queue_size(count), **store_options(pg_url, table))
    client.start()
    store = client.run.store
    claims: list[tuple[float, float, int]] = []  # (began, ended, messages taken), monotonic
    claim = store.claim

    def timed_claim(limit):
        began = time.monotonic()
        items = claim(limit)
        claims.append((began, time.monotonic(), len(items)))
        return items

    store.claim = timed_claim  # the claim loop calls store.claim(limit): its next call is timed
    assert client.wait_until_connected(10)
    client.run.store_ready.wait(10)
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    deadline = lease_timeout + claim_every + 60
    result = {"count": count, "lease_timeout": lease_timeout, "claim_every": claim_every, "done_at": None}
    if done.wait(deadline):
        assert replies[0].startswith(f"done {count} "), replies
        result["done_at"] = done_at[0]
    taking = [c for c in claims if c[2]]
    status = client.status()
    client.stop(5)
    result.update(claims=len(claims), claim_began_at=taking[0][0] if taking else None,
                  claim_ended_at=taking[0][1] if taking else None, claims_that_took=len(taking),
                  reloaded=status["messages_reloaded"], dropped=status["messages_dropped"],
                  drops_by_reason=status["drops_by_reason"], outbox_errors=status["outbox_errors"])
    return result


if __name__ == "__main__":
    what, url, count, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if what in ("hold", "takeover"):
        table, lease_s, claim_s = sys.argv[5], float(sys.argv[6]), float(sys.argv[7])
        if what == "hold":
            hold(url, count, path, table, lease_s, claim_s)
        result = takeover(url, count, path, table, lease_s, claim_s)
    else:
        table = sys.argv[5] if len(sys.argv) > 5 else None
        result = {"always": always, "spill": spill, "reload": reload, "txn": txn}[what](url, count, path, table)
    print(json.dumps(result), flush=True)
