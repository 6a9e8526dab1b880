"""Graceful shutdown: flush, close 1000, bounded, idempotent, from anywhere.

Against the in-process peer (tests/peer.py) where a well-behaved server is all a test
needs; against the real server for a slow link and for stopping at exit or on a signal
in a subprocess."""

import signal
import sys
import time

import gevent
import gevent.subprocess
import pytest

from .conftest import TESTS, Recorder, t


def test_stop_flushes_the_queue_and_closes_with_1000(peer, make_client):
    client = make_client(connector=peer.connector, url=peer.url)
    client.start()
    assert client.wait_until_connected(t(5))
    # 2 MB: more than the socket buffers hold, so the close must wait for the flush.
    sent = [f"m-{i}-".ljust(1000, "x") for i in range(2000)]
    for message in sent:
        client.send_message(message)
    assert client.queue_size == 1999  # the first went at once (nothing was queued): stop() has the rest to flush
    assert client.stop(timeout=t(5)) == 0
    assert peer.wait_closed() == 1000
    assert peer.messages == sent  # all before the close frame, in order, once
    status = client.status()
    assert not status["started"] and not status["stopping"] and status["state"] == "stopped"  # one state: consistent
    assert not any(status[k] for k in ("event_thread_alive", "send_thread_alive", "health_thread_alive"))


def test_stop_while_disconnected_returns_and_reports_the_undelivered(peer, make_client):
    peer.refuse()
    drops, errors = Recorder(), Recorder()
    client = make_client(connector=peer.connector, url=peer.url, on_drop=drops, on_error=errors)
    client.start()
    errors.wait(1)  # refused: backing off
    for i in range(7):
        client.send_message(f"m-{i}")
    assert client.stop(timeout=t(1)) == 7
    assert drops.wait(7) == [(f"m-{i}", "stopped") for i in range(7)]
    assert client.status()["drops_by_reason"] == {"stopped": 7}
    assert client.stop() == 0  # idempotent
    assert peer.connections == []


def test_stop_gives_up_flushing_at_its_timeout(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    client = make_client(url=proxy.url)
    client.start()
    assert client.wait_until_connected(t(5))
    proxy.chunk, proxy.latency = 1024, 0.05  # about 20 KB/s: far too slow to flush 5 MB
    for i in range(50):
        client.send_message(b"x" * 100_000)
    began = time.monotonic()
    undelivered = client.stop(timeout=t(0.5))
    elapsed = time.monotonic() - began
    assert undelivered > 0
    assert elapsed < t(0.5) + t(1.5)  # the flush budget, then bounded close and kill steps


def test_stop_from_a_handler_and_from_two_greenlets(peer, make_client):
    client = make_client(connector=peer.connector, url=peer.url)
    results = Recorder()

    def handle(msg):
        if msg == "push-0":
            results(client.stop())

    client.handle_message = handle
    client.start()
    assert client.wait_until_connected(t(5))
    peer.send_text("push-0")
    assert results.wait(1) == [0]
    assert peer.wait_closed(index=0) == 1000

    other = make_client(connector=peer.connector, url=peer.url)
    other.start()
    assert other.wait_until_connected(t(5))
    both = [gevent.spawn(other.stop), gevent.spawn(other.stop)]
    gevent.joinall(both, timeout=t(10))
    assert [g.value for g in both] == [0, 0]
    assert peer.wait_closed(index=1) == 1000 and len(peer.connections) == 2


@pytest.mark.parametrize("mode, patched", [("atexit", "patched"), ("signal", "patched"), ("signal", "unpatched"),
                                           ("atexit", "unpatched")])
def test_stop_at_exit_and_from_a_signal_handler(server, mode, patched):
    proc = gevent.subprocess.Popen(
        [sys.executable, str(TESTS / "scripts" / "shutdown_child.py"), server.url, mode, patched, "300"],
        stdout=gevent.subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        if mode == "signal":
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(t(20)) == 0
        close = server.wait_event(lambda e: e["ev"] == "close", t(5))
        assert close["code"] == 1000
        assert server.texts() == [f"c-{i}" for i in range(300)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(t(5))
