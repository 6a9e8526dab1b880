"""The outbox file (OUTBOX_PATH), each benchmark in its own process:

    python -m benchmarks.outbox always URL COUNT PATH   64 handler greenlets, OUTBOX_SYNC="always"
    python -m benchmarks.outbox always URL COUNT -      the same with OUTBOX_PATH=None (memory)
    python -m benchmarks.outbox spill URL COUNT PATH    the server down: COUNT queued, time stop()
    python -m benchmarks.outbox reload URL COUNT PATH   time start() -> the COUNT spilled ones taken over

Prints one JSON line.

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
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

#: Concurrent request-handler greenlets in the "always" workload.
HANDLERS = 64
#: Message size (bytes of text), as one-way 100 B.
SIZE = 100
#: The ticker's sleep.
TICK = 0.001


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


def always(url: str, count: int, path: str) -> dict:
    per_handler = count // HANDLERS
    total = per_handler * HANDLERS
    done = gevent.event.Event()
    replies: list[str] = []

    def on_message(msg):
        if isinstance(msg, str) and msg.startswith("done"):
            replies.append(msg)
            done.set()

    options = {} if path == "-" else {"outbox_path": path, "outbox_sync": "always"}
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
    store = client._store
    result["commits"] = getattr(store, "commits", None)
    result["committed"] = getattr(store, "committed", None)
    status = client.status()  # before stop(): stop() counts what it discards as drops of its own
    client.stop(5)
    by_reason = dict(status["drops_by_reason"], **({"refused": refused[0]} if refused[0] else {}))
    result.update(dropped=status["messages_dropped"] + refused[0], drops_by_reason=by_reason,
                  refused=refused[0], outbox_errors=status["outbox_errors"])
    return result


class TimedClient(WebSocketClient):
    """A WebSocketClient that notes when ``messages_reloaded`` reaches ``expect``: the claim sets
    it as it hands the messages to the queue. The sender, woken then, starts writing them before
    a greenlet polling status() runs again, and may hold the hub meanwhile (the ticker shows how
    long): the poll's figure is kept too ("seen_seconds"). spill and reload both use this class:
    a client's identifier (its class name when it has none) owns the messages."""

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


def queue_size(count: int) -> int:
    """MAX_QUEUE_SIZE for spill and reload: the default, raised to ``count`` when it holds fewer."""
    return max(count, WebSocketClient.MAX_QUEUE_SIZE)


def spill(url: str, count: int, path: str) -> dict:
    client = TimedClient(url=url, outbox_path=path, max_queue_size=queue_size(count), retry_delay=5,
                         max_retry_delay=5)
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


def reload(url: str, count: int, path: str) -> dict:
    done = gevent.event.Event()
    replies: list[str] = []

    def on_message(msg):
        if isinstance(msg, str) and msg.startswith("done"):
            replies.append(msg)
            done.set()

    client = TimedClient(url=f"{url}/sink?expect={count}", outbox_path=path, max_queue_size=queue_size(count),
                         on_message=on_message)
    client.expect = count
    ticker = Ticker()
    gevent.sleep(0.05)
    began = time.perf_counter()
    client.start()
    deadline = began + 30
    while client.messages_reloaded < count and time.perf_counter() < deadline:
        gevent.sleep(0.0005)
    seen = time.perf_counter() - began
    delivered = None
    if client.messages_reloaded == count and done.wait(60):
        delivered = time.perf_counter() - began
        assert replies[0].startswith(f"done {count} "), replies
    gaps = ticker.stop()
    status = client.status()
    client.stop(5)
    return {"seconds": client.reloaded_at - began if client.reloaded_at is not None else None,
            "seen_seconds": seen, "reloaded": status["messages_reloaded"], "delivered_seconds": delivered,
            "max_queue_size": client.settings.MAX_QUEUE_SIZE, "ticker_max_gap_ms": gaps["max_gap_ms"],
            "dropped": status["messages_dropped"], "drops_by_reason": status["drops_by_reason"],
            "outbox_errors": status["outbox_errors"]}


if __name__ == "__main__":
    what, url, count, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    result = {"always": always, "spill": spill, "reload": reload}[what](url, count, path)
    print(json.dumps(result), flush=True)
