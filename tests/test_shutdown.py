"""Graceful shutdown: flush, close 1000, bounded, idempotent, from anywhere."""

import signal
import sys
import time

import gevent
import gevent.subprocess
import pytest

from .conftest import TESTS, t, wait_until


def test_stop_flushes_the_queue_and_closes_with_1000(server, make_client):
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(2000):
        client.send_message(f"m-{i}")
    assert client.stop(timeout=t(5)) == 0
    assert server.texts() == [f"m-{i}" for i in range(2000)] or server.wait_for(
        lambda: len(server.texts()) == 2000, t(5), "every message")
    close = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert close["code"] == 1000
    assert server.texts() == [f"m-{i}" for i in range(2000)]
    status = client.status()
    assert not status["started"] and status["state"] == "stopped"
    assert not any(status[k] for k in ("event_thread_alive", "send_thread_alive", "health_thread_alive"))


def test_stop_while_disconnected_returns_and_reports_the_undelivered(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    proxy.refuse()
    drops = []
    client = make_client(url=proxy.url, on_drop=lambda m, r: drops.append((m, r)))
    client.start()
    for i in range(7):
        client.send_message(f"m-{i}")
    assert client.stop(timeout=t(1)) == 7
    wait_until(lambda: len(drops) == 7, t(2), "drop hooks")
    assert drops[0] == ("m-0", "stopped")
    assert client.status()["drops_by_reason"] == {"stopped": 7}
    assert client.stop() == 0  # idempotent


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


def test_stop_from_a_handler_and_from_two_greenlets(server, make_client):
    client = make_client(url=server.url)
    results = []

    def handle(msg):
        if msg == "push-0":
            results.append(client.stop())

    client.handle_message = handle
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="push", n=1)
    wait_until(lambda: results, t(5), "stop() from the handler")
    assert results == [0]
    close = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert close["code"] == 1000

    other = make_client(url=server.url)
    other.start()
    assert other.wait_until_connected(t(5))
    both = [gevent.spawn(other.stop), gevent.spawn(other.stop)]
    gevent.joinall(both, timeout=t(10))
    assert [g.value for g in both] == [0, 0]


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
