"""Fair under load: the client keeps sending and reading while its process is busy.

A gunicorn gevent worker serving wrk's requests, a producer that yields with
sleep(0), greenlets spinning on sleep(0): the loops must keep running in each,
with the settings a user gets by default. (With the old yield policy, gevent.idle(),
all four failed: the sender and the reader never ran again until the load ended.)
"""

import re
import shutil
import sys
import time

import gevent
import gevent.event
import pytest

from .support import free_port, http, run_script, t, wait_http, wait_until

#: The load: wrk from outside the process, as the issue measured it.
LOAD_SECONDS = 10
LOAD_CONNECTIONS = 64
#: What the server streams in the receive test: several thousand messages a second, so
#: that a reader that falls behind finds more than 16 KiB waiting.
STREAM_RATE = 5000
STREAM_SIZE = 500
#: Under load the queue must stay below the queue_high alert level (0.9 x the default 10,000).
QUEUE_BOUND = 9000

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")


@pytest.fixture
def worker(server, procs):
    """`gunicorn -k gevent -w 1` serving tests/scripts/load_app.py, connected to ``server``."""

    def start(**settings):
        port = free_port()
        env = {"HERMES_WS_URL": server.url, **{f"LOAD_HERMES_{k}": str(v) for k, v in settings.items()}}
        procs([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}",
               "--log-level", "warning", "tests.scripts.load_app:app"], **env)
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/report", t(30))
        server.wait_for(lambda: server.of("connect"), t(10), "the worker's connection")
        return base

    return start


def wrk(base: str) -> int:
    """Load /send for LOAD_SECONDS; return how many requests wrk completed."""
    out, _ = run_script(["wrk", "-t1", f"-c{LOAD_CONNECTIONS}", f"-d{LOAD_SECONDS}s", f"{base}/send"],
                        LOAD_SECONDS + t(30))
    return int(re.search(r"(\d+) requests in", out).group(1))


def loop_turns(before: dict, after: dict) -> str:
    """How often the worker's event loop turned during the load (libev counts; libuv does not)."""
    if before["loop_turns"] < 0:
        return "loop turns not counted"
    return f"the worker's event loop turned {(after['loop_turns'] - before['loop_turns']) / LOAD_SECONDS:.0f} times/s"


@needs_wrk
def test_send_under_http_load(server, worker):
    server.command(cmd="mode", count=True)
    base = worker()
    before = http("GET", f"{base}/report")
    requests = wrk(base)
    report = http("GET", f"{base}/report")
    sent = report["sent"]
    assert requests > 1000  # the load happened
    assert report["queue_samples"] - before["queue_samples"] >= LOAD_SECONDS  # the sampler ran during it
    print(f"\n{requests} requests in {LOAD_SECONDS}s; queue depth at most {report['max_queue']} in "
          f"{report['queue_samples'] - before['queue_samples']} samples; {loop_turns(before, report)}")
    assert report["status"]["messages_dropped"] == 0, report["status"]["drops_by_reason"]
    assert report["max_queue"] < QUEUE_BOUND

    stats = server.tally(sent, t(15))
    assert stats == {"received": sent, "distinct": sent, "dups": 0, "out_of_order": 0, "highest": sent - 1}
    assert report["status"]["reconnects"] == 0 and len(server.of("connect")) == 1


@needs_wrk
def test_receive_under_http_load(server, worker):
    server.command(cmd="mode", count=True)  # the worker's own sends are tallied, not printed
    base = worker(PING_INTERVAL=1, PING_TIMEOUT=2)
    server.command(cmd="stream", rate=STREAM_RATE, seconds=LOAD_SECONDS, size=STREAM_SIZE)
    before = http("GET", f"{base}/report")
    requests = wrk(base)
    after = http("GET", f"{base}/report")
    streamed = server.wait_event(lambda e: e["ev"] == "streamed", t(15))
    assert "error" not in streamed, streamed
    assert streamed["sent"] > STREAM_RATE * LOAD_SECONDS * 0.5  # the server could stream (its own precondition)
    report = wait_until(lambda: (r := http("GET", f"{base}/report"))["received"] >= streamed["sent"] and r,
                        t(15), "every streamed message handled")
    print(f"\n{requests} requests; {loop_turns(before, after)}; {report['received']} messages handled; a message waited "
          f"{report['lag_p50'] * 1000:.1f} / {report['lag_p99'] * 1000:.0f} / {report['max_lag'] * 1000:.0f} ms (p50/p99/max) from the server's send to the handler; largest gap between "
          f"two messages {report['max_gap'] * 1000:.0f} ms; largest read {report['max_read']} bytes")
    assert report["received"] == streamed["sent"] and report["out_of_order"] == 0
    assert report["status"]["reconnects"] == 0 and len(server.of("connect")) == 1
    # The reader runs once per event-loop turn, and request greenlets that serve wrk's next request
    # without yielding hold the hub between turns: at 6 turns/s on a slow day one hold left a 960 ms
    # gap (1,088 ms lag), and at 2 turns/s a 2.5 s lag. A reader that stalled would fall behind for
    # the rest of the load (LOAD_SECONDS): the bound is a good part of it, not a guess at the holds.
    assert report["max_lag"] < t(LOAD_SECONDS * 0.5)
    assert report["max_read"] > 16 * 1024  # the load did hold the reader back: reads found data piled up


def test_a_producer_that_yields_with_sleep0_loses_nothing(server, make_client):
    server.command(cmd="mode", count=True)
    client = make_client(url=server.url)  # default MAX_QUEUE_SIZE and overflow strategy
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(50_000):
        client.send_message(f"n:{i}")
        if i % 100 == 99:
            gevent.sleep(0)  # the way a gevent app's loop yields
    assert client.flush(t(10))
    assert client.status()["messages_dropped"] == 0, client.status()["drops_by_reason"]
    stats = server.tally(50_000, t(10))
    assert stats == {"received": 50_000, "distinct": 50_000, "dups": 0, "out_of_order": 0, "highest": 49_999}


def test_flush_completes_while_greenlets_spin_on_sleep0(server, make_client):
    server.command(cmd="mode", count=True)
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    done = gevent.event.Event()
    deadline = time.monotonic() + t(30)

    def spin():  # a hub that always has runnable work
        while not done.is_set() and time.monotonic() < deadline:
            gevent.sleep(0)

    spinners = [gevent.spawn(spin) for _ in range(20)]
    try:
        gevent.sleep(0.01)
        for i in range(5000):
            client.send_message(f"n:{i}")
        began = time.monotonic()
        flushed = client.flush(t(1))
        took = time.monotonic() - began
    finally:
        done.set()
        gevent.joinall(spinners, timeout=t(5))
    assert flushed, f"5,000 messages not flushed within {t(1):.1f}s while 20 greenlets spun"
    print(f"\nflushed 5,000 messages in {took * 1000:.0f} ms next to 20 sleep(0) spinners")
    assert server.tally(5000, t(10))["distinct"] == 5000
