"""The fault matrix: each scenario runs a producer greenlet that sends numbered
messages the whole time, injects a fault through the real server or the fault
proxy, lets the client recover, and accounts for every message. The rows are
printed as one table at the end of the run (see tests/conftest.py)."""

from __future__ import annotations

import logging

import pytest

from ..conftest import t, wait_until
from .accounting import numbers_in
from .scenario import Run

pytestmark = pytest.mark.faults

def assert_exact(result) -> None:
    """Graceful faults: every message is delivered once, in order, or counted."""
    assert (result.lost, result.duplicated, result.out_of_order) == (0, 0, 0), result
    assert result.offered == result.delivered + sum(result.dropped.values()) + result.refused + result.queued, result


def abrupt_bound(result, faults: int) -> None:
    """Abrupt faults (RST, kill, blackhole): what TCP had accepted may be lost, and is
    printed; the client still recovers, counts the rest, and never reorders what it resends."""
    assert result.delivered > 0 and result.reconnects >= faults, result
    assert result.offered == result.delivered + sum(result.dropped.values()) + result.refused + result.queued \
        + result.lost, result


FAST_FAULTS = dict(retry_delay=0.05, max_retry_delay=0.2, max_queue_size=100_000)


def test_graceful_server_restarts(server, make_client):
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    for _ in range(3):
        run.produce_for(0.4)
        server.command(cmd="close", code=1001, reason="restarting")  # close 1001, then exit
        server.wait_for(lambda: len(server.of("close")) >= len(server.of("connect")), t(5), "the close")
        server.kill()
        run.produce_for(0.3)
        server.start()
    run.produce_for(0.4)
    assert_exact(run.finish(server, "server restarted gracefully x3 (1001, exit)"))


def test_server_killed_and_restarted(server, make_client):
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    for _ in range(3):
        run.produce_for(0.4)
        server.kill()  # SIGKILL: no close frame, the kernel resets the connection
        run.produce_for(0.3)
        server.start()
    run.produce_for(0.4)
    abrupt_bound(run.finish(server, "server killed (SIGKILL) and restarted x3"), 3)


def test_connection_reset_mid_stream(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    run = Run(make_client, proxy.url, **FAST_FAULTS).start_producer()
    for _ in range(3):
        run.produce_for(0.4)
        proxy.reset_all()
    run.produce_for(0.5)
    abrupt_bound(run.finish(server, "connection reset (RST) mid-stream x3"), 3)


def test_half_open_connection_detected_by_ping_timeout(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    errors = []
    run = Run(make_client, proxy.url, ping_interval=t(0.2), ping_timeout=t(0.4), on_error=errors.append,
              **FAST_FAULTS).start_producer()
    run.produce_for(0.4)
    proxy.blackhole = True  # nothing crosses, no FIN, no RST
    wait_until(lambda: any(type(e).__name__ == "PingTimeout" for e in errors), t(5), "the ping timeout")
    proxy.blackhole = False
    run.produce_for(0.5)
    abrupt_bound(run.finish(server, "half-open (blackhole, no FIN)", note="detected by PING_TIMEOUT"), 1)


def test_handshake_that_hangs(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    errors = []
    run = Run(make_client, proxy.url, connect_timeout=t(0.3), on_error=errors.append,
              **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    proxy.hang_new = True
    server.command(cmd="close", code=1012)
    wait_until(lambda: sum(type(e).__name__ == "ConnectTimeout" for e in errors) >= 2, t(5), "connect timeouts")
    proxy.hang_new = False
    run.produce_for(0.5)
    assert_exact(run.finish(server, "handshake hangs (CONNECT_TIMEOUT)"))


def test_connection_refused_for_a_while(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    run = Run(make_client, proxy.url, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    proxy.refuse()
    server.command(cmd="close", code=1012)
    run.produce_for(1.0)
    assert run.client.status()["retry_count"] >= 2
    proxy.reopen()
    run.produce_for(0.5)
    assert_exact(run.finish(server, "connection refused for 1 s"))


def test_slow_link(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    proxy.latency, proxy.chunk = 0.02, 64  # 20 ms per read, 64-byte slices
    run = Run(make_client, proxy.url, **FAST_FAULTS).start_producer()
    run.produce_for(1.5)
    assert_exact(run.finish(server, "slow link (20 ms latency, 64-byte chunks)"))


@pytest.mark.parametrize("code", [1001, 1011, 1012])
def test_server_close_codes_that_reconnect(server, make_client, code):
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    for _ in range(2):
        run.produce_for(0.4)
        server.command(cmd="close", code=code)
    run.produce_for(0.4)
    assert_exact(run.finish(server, f"server closes with {code} x2"))


def test_server_close_1008_gives_up(server, make_client, caplog):
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    run.produce_for(0.4)
    server.command(cmd="close", code=1008, reason="policy")
    wait_until(lambda: run.client.status()["max_retries_reached"], t(5), "give up")
    run.produce_for(0.2)
    result = run.finish(server, "server closes with 1008 (give up)", delivered_expected=False)
    assert result.queued > 0 and result.lost == 0 and result.duplicated == 0, result
    assert any("not retrying" in r.getMessage() for r in caplog.records)


def test_handshake_503_is_retried(server, make_client):
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    server.command(cmd="mode", reject=503)
    server.command(cmd="close", code=1012)
    server.wait_for(lambda: len(server.of("rejected")) >= 3, t(5), "three 503s")
    server.command(cmd="mode", reject=None)
    run.produce_for(0.5)
    assert_exact(run.finish(server, "handshake answered 503 x3, then 101"))


@pytest.mark.parametrize("status", [401, 403])
def test_handshake_401_403_gives_up_with_a_clear_log(server, make_client, caplog, status):
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    run = Run(make_client, server.url, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    server.command(cmd="mode", reject=status)
    server.command(cmd="close", code=1012)
    wait_until(lambda: run.client.status()["max_retries_reached"], t(5), "give up")
    result = run.finish(server, f"handshake answered {status} (give up)", delivered_expected=False)
    assert result.lost == 0 and result.duplicated == 0 and result.out_of_order == 0, result
    assert len(server.of("rejected")) == 1
    assert any(f"HTTP {status}" in r.getMessage() and "credentials" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("strategy", ["drop_oldest", "drop_newest", "raise"])
def test_queue_overflow_while_the_server_is_down(server, proxy_to, make_client, strategy):
    proxy = proxy_to(server.port)
    proxy.refuse()
    run = Run(make_client, proxy.url, retry_delay=0.05, max_retry_delay=0.1, max_queue_size=500,
              queue_overflow_strategy=strategy)
    run.send(1500)
    proxy.reopen()
    result = run.finish(server, f"overflow while down: {strategy} (500 of 1500)")
    assert result.lost == 0 and result.duplicated == 0 and result.out_of_order == 0, result
    delivered = numbers_in(server.texts())
    if strategy == "drop_oldest":
        assert delivered == list(range(1000, 1500)) and result.dropped == {"overflow": 1000}
    elif strategy == "drop_newest":
        assert delivered == list(range(500)) and result.dropped == {"overflow": 1000}
    else:
        assert delivered == list(range(500)) and result.refused == 1000 and result.accepted == 500
