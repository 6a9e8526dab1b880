"""The fault matrix: each scenario runs a producer greenlet that sends numbered
messages the whole time, injects a fault through the real server or the fault
proxy, lets the client recover, and accounts for every message. Every scenario
runs twice: with acknowledgements off (text messages "n:<int>", the server as
before) and on (ACK_TIMEOUT set, dicts {"n": <int>}, the server started with
--ack, so it acknowledges what it recorded, across its restarts). The rows are
printed as two tables at the end of the run (see tests/conftest.py).

What each row must show (see accounting.py for the columns):

- every row: first arrivals in order (the record deduplicated by number, keeping
  each first arrival, is increasing) and no number the client did not accept;
- acknowledgements off, graceful faults: nothing lost, nothing twice;
- acknowledgements off, abrupt faults: losses and duplicates only among messages
  accepted inside a fault window (what the kernels and the proxy held when it hit,
  or what a blackhole swallowed before the ping timeout), printed;
- acknowledgements on, every fault: nothing lost; duplicates only inside fault
  windows, each one a resend the client counted, printed.
"""

from __future__ import annotations

import logging

import pytest

from ..conftest import ServerProcess, free_port, t, wait_until
from ..test_tls import tls_server  # noqa: F401  (the fixture, for the wss:// row)
from .accounting import numbers_in
from .scenario import Run

pytestmark = pytest.mark.faults


@pytest.fixture(params=[False, True], ids=["acks-off", "acks-on"])
def acks(request):
    return request.param


@pytest.fixture
def server(request, acks):
    """The recording server; with acknowledgements on it is started with --ack, which
    every restart (server.start()) keeps. A row parametrized with ``server="deflate"``
    (indirect) gets it with permessage-deflate on: the client's messages go compressed."""
    wire = getattr(request, "param", "plain")
    srv = ServerProcess(free_port(), *(["--ack"] if acks else []),
                        *(["--compression"] if wire == "deflate" else [])).start()
    yield srv
    srv.stop()


#: Rows run twice, the second time compressed: a message resent after a reconnection must be
#: compressed again for the new connection's context (its old bytes mean nothing there).
BOTH_WIRES = pytest.mark.parametrize("server", ["plain", "deflate"], indirect=True)


def wire_options(server) -> dict:
    """Messages large enough to be compressed (each checked on arrival) when the server compresses."""
    return {"body": 300} if "--compression" in server.extra_args else {}


def compressed(server) -> str:
    return ", compressed" if "--compression" in server.extra_args else ""


def started(run, server):
    """The run, once its client is connected - with permessage-deflate agreed when the server offers it."""
    assert run.client.wait_until_connected(t(10))
    agreed = run.client.status()["compression"]
    assert (agreed is not None) == ("--compression" in server.extra_args), agreed
    return run.start_producer()


def check_order(result) -> None:
    """First arrivals in order, and nothing the client never accepted."""
    assert result.out_of_order == 0, f"first arrivals out of order: {result}"
    assert result.phantom == 0, f"numbers the client never accepted: {result}"


def assert_exact(result) -> None:
    """Graceful faults, acknowledgements off: every message delivered once, in order, or counted."""
    check_order(result)
    assert (result.lost, result.duplicated, result.dropped_delivered) == (0, 0, 0), result


def abrupt_bound(result, faults: int) -> None:
    """Abrupt faults (RST, kill, blackhole), acknowledgements off: the client recovers from
    each fault; what it loses or sends twice was accepted inside a fault window (so at most
    ``window`` messages are lost), and first arrivals stay in order."""
    check_order(result)
    assert result.delivered > 0 and result.reconnects >= faults, result
    assert result.lost <= result.window, result
    assert result.lost_outside == 0, f"lost outside every fault window: {result}"
    assert result.dup_outside == 0, f"duplicated outside every fault window: {result}"
    assert result.dropped_delivered == 0, result


def acknowledged(result, faults: int = 0, *, delivered_expected: bool = True) -> None:
    """Acknowledgements on, whatever the fault: nothing lost, first arrivals in order,
    duplicates only inside fault windows and each one a resend the client counted."""
    check_order(result)
    assert result.lost == 0, f"lost with acknowledgements on: {result}"
    assert result.reconnects >= faults, result
    assert result.dup_outside == 0, f"duplicated outside every fault window: {result}"
    assert result.resent >= result.duplicated, f"a duplicate the client never resent: {result}"
    if delivered_expected:
        assert result.queued == 0 and "unacked" not in result.dropped, result


def judge(result, acks: bool, faults: int, *, graceful: bool) -> None:
    if acks:
        acknowledged(result, faults)
    elif graceful:
        assert_exact(result)
    else:
        abrupt_bound(result, faults)


FAST_FAULTS = dict(retry_delay=0.05, max_retry_delay=0.2, max_queue_size=100_000)


@BOTH_WIRES
def test_graceful_server_restarts(server, make_client, acks):
    run = started(Run(make_client, server.url, acks=acks, **wire_options(server), **FAST_FAULTS), server)
    for _ in range(3):
        run.produce_for(0.4)
        run.fault()
        server.command(cmd="close", code=1001, reason="restarting")  # close 1001, then exit
        server.wait_for(lambda: len(server.of("close")) >= len(server.of("connect")), t(5), "the close")
        server.kill()
        run.produce_for(0.3)
        server.start()
    run.produce_for(0.4)
    judge(run.finish(server, f"server restarted gracefully x3 (1001, exit){compressed(server)}"), acks, 3,
          graceful=True)


@BOTH_WIRES
def test_server_killed_and_restarted(server, make_client, acks):
    run = started(Run(make_client, server.url, acks=acks, **wire_options(server), **FAST_FAULTS), server)
    for _ in range(3):
        run.produce_for(0.4)
        run.fault()
        server.kill()  # SIGKILL: no close frame, the kernel resets the connection
        run.produce_for(0.3)
        server.start()
    run.produce_for(0.4)
    judge(run.finish(server, f"server killed (SIGKILL) and restarted x3{compressed(server)}"), acks, 3,
          graceful=False)


def test_tls_server_killed_and_restarted(tls_server, make_client, acks):  # noqa: F811
    """wss://: the TLS layer hides which bytes the server's TCP acknowledged, so with
    acknowledgements off only the batch whose write failed is sent again; with them on,
    nothing is lost."""
    server, cafile = tls_server("127.0.0.1", *(["--ack"] if acks else []))
    run = Run(make_client, server.url, acks=acks, ca_file=cafile, **FAST_FAULTS).start_producer()
    for _ in range(2):
        run.produce_for(0.4)
        run.fault()
        server.kill()
        run.produce_for(0.3)
        server.start()
    run.produce_for(0.4)
    judge(run.finish(server, "wss:// server killed (SIGKILL) and restarted x2"), acks, 2, graceful=False)


@BOTH_WIRES
def test_connection_reset_mid_stream(server, proxy_to, make_client, acks):
    proxy = proxy_to(server.port)
    run = started(Run(make_client, proxy.url, acks=acks, **wire_options(server), **FAST_FAULTS), server)
    for _ in range(3):
        run.produce_for(0.4)
        run.fault()
        proxy.reset_all()
    run.produce_for(0.5)
    judge(run.finish(server, f"connection reset (RST) mid-stream x3{compressed(server)}"), acks, 3, graceful=False)


def test_half_open_connection_detected_by_ping_timeout(server, proxy_to, make_client, acks):
    proxy = proxy_to(server.port)
    errors = []
    run = Run(make_client, proxy.url, acks=acks, ping_interval=t(0.2), ping_timeout=t(0.4), on_error=errors.append,
              **FAST_FAULTS).start_producer()
    run.produce_for(0.4)
    run.fault()
    proxy.blackhole = True  # nothing crosses, no FIN, no RST
    wait_until(lambda: any(type(e).__name__ == "PingTimeout" for e in errors), t(5), "the ping timeout")
    proxy.blackhole = False
    run.produce_for(0.5)
    result = run.finish(server, "half-open (blackhole, no FIN)", note="detected by PING_TIMEOUT")
    judge(result, acks, 1, graceful=False)
    if not acks:
        # The proxy's kernel acknowledged what it swallowed: only acknowledgements can tell.
        assert result.lost > 0, result


@pytest.mark.parametrize("acks", [False, True], ids=["acks-off", "acks-on"], indirect=True)
def test_server_discards_on_a_live_connection(server, make_client, acks):
    """The server's application reads messages and throws them away for 0.3 s, the
    connection staying up: nothing the client can see. Acknowledgements off: they are
    lost (and nothing else). On: each is sent again once it waited ACK_TIMEOUT, so
    nothing is lost - but its first arrival comes after newer messages: on a live
    connection, first arrivals are in order only where the server lost nothing."""
    run = live_fault(Run(make_client, server.url, acks=acks, **FAST_FAULTS), server, "discard")
    result = run.finish(server, "server app discards for 0.3 s (live connection)", delivered_expected=True)
    assert result.phantom == 0 and result.reconnects == 0, result
    assert result.lost_outside == 0 and result.dup_outside == 0 and result.late_outside == 0, result
    if acks:
        assert result.lost == 0, result
        # the discarded messages arrive first as resends, after newer ones: only those
        assert 0 < result.out_of_order <= result.window and result.resent >= result.out_of_order, result
    else:
        assert result.lost > 0 and result.out_of_order == 0 and result.duplicated == 0, result


def live_fault(run: Run, server, mode: str) -> Run:
    """Produce, turn the server's ``mode`` on for 0.3 s (the connection staying up), produce on."""
    run.start_producer()
    run.produce_for(0.2)
    run.fault()
    server.command(cmd="mode", **{mode: True})
    run.produce_for(0.3)
    server.command(cmd="mode", **{mode: False})
    run.fault_over()
    run.produce_for(0.4)
    return run


@pytest.mark.parametrize("acks", [True], ids=["acks-on"], indirect=True)
def test_server_withholds_acknowledgements(server, make_client, acks):
    """The server records every message but sends no acknowledgement for 0.3 s (ids
    forgotten): the client sends those again once they waited ACK_TIMEOUT, on the live
    connection; they arrive twice, none is lost, first arrivals stay in order."""
    run = live_fault(Run(make_client, server.url, acks=acks, **FAST_FAULTS), server, "ack_drop")
    result = run.finish(server, "server withholds acks for 0.3 s (live connection)")
    acknowledged(result, 0)
    assert result.reconnects == 0 and result.duplicated > 0, result


def test_handshake_that_hangs(server, proxy_to, make_client, acks):
    proxy = proxy_to(server.port)
    errors = []
    run = Run(make_client, proxy.url, acks=acks, connect_timeout=t(0.3), on_error=errors.append,
              **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    proxy.hang_new = True
    run.fault()
    server.command(cmd="close", code=1012)
    wait_until(lambda: sum(type(e).__name__ == "ConnectTimeout" for e in errors) >= 2, t(5), "connect timeouts")
    proxy.hang_new = False
    run.produce_for(0.5)
    judge(run.finish(server, "handshake hangs (CONNECT_TIMEOUT)"), acks, 1, graceful=True)


def test_connection_refused_for_a_while(server, proxy_to, make_client, acks):
    proxy = proxy_to(server.port)
    run = Run(make_client, proxy.url, acks=acks, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    proxy.refuse()
    run.fault()
    server.command(cmd="close", code=1012)
    run.produce_for(1.0)
    assert run.client.status()["retry_count"] >= 2
    proxy.reopen()
    run.produce_for(0.5)
    judge(run.finish(server, "connection refused for 1 s"), acks, 1, graceful=True)


def test_slow_link(server, proxy_to, make_client, acks):
    proxy = proxy_to(server.port)
    proxy.latency, proxy.chunk = 0.02, 64  # 20 ms per read, 64-byte slices: some 30 KB/s
    run = Run(make_client, proxy.url, acks=acks, **FAST_FAULTS)
    # The same bytes per second either way (~25 KB/s, within what the link carries): a stamped
    # JSON message is ~4x an "n:<int>" one, so a quarter of the messages with acknowledgements.
    run.start_producer(pause=0.02 if acks else 0.005)
    run.produce_for(1.5)
    judge(run.finish(server, "slow link (20 ms latency, 64-byte chunks)"), acks, 0, graceful=True)


@pytest.mark.parametrize("code", [1001, 1011, 1012])
def test_server_close_codes_that_reconnect(server, make_client, code, acks):
    run = Run(make_client, server.url, acks=acks, **FAST_FAULTS).start_producer()
    for _ in range(2):
        run.produce_for(0.4)
        run.fault()
        server.command(cmd="close", code=code)
    run.produce_for(0.4)
    judge(run.finish(server, f"server closes with {code} x2"), acks, 2, graceful=True)


def test_server_close_1008_gives_up(server, make_client, caplog, acks):
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    run = Run(make_client, server.url, acks=acks, **FAST_FAULTS).start_producer()
    run.produce_for(0.4)
    run.fault()
    server.command(cmd="close", code=1008, reason="policy")
    wait_until(lambda: run.client.status()["max_retries_reached"], t(5), "give up")
    run.produce_for(0.2)
    result = run.finish(server, "server closes with 1008 (give up)", delivered_expected=False)
    check_order(result)
    assert result.queued > 0 and result.lost == 0 and result.duplicated == 0, result
    if not acks:
        assert result.dropped_delivered == 0, result
    assert any("not retrying" in r.getMessage() for r in caplog.records)


def test_handshake_503_is_retried(server, make_client, acks):
    run = Run(make_client, server.url, acks=acks, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    server.command(cmd="mode", reject=503)
    run.fault()
    server.command(cmd="close", code=1012)
    server.wait_for(lambda: len(server.of("rejected")) >= 3, t(5), "three 503s")
    server.command(cmd="mode", reject=None)
    run.produce_for(0.5)
    judge(run.finish(server, "handshake answered 503 x3, then 101"), acks, 1, graceful=True)


@pytest.mark.parametrize("status", [401, 403])
def test_handshake_401_403_gives_up_with_a_clear_log(server, make_client, caplog, status, acks):
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    run = Run(make_client, server.url, acks=acks, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    server.command(cmd="mode", reject=status)
    run.fault()
    server.command(cmd="close", code=1012)
    wait_until(lambda: run.client.status()["max_retries_reached"], t(5), "give up")
    result = run.finish(server, f"handshake answered {status} (give up)", delivered_expected=False)
    check_order(result)
    assert result.lost == 0 and result.duplicated == 0, result
    assert len(server.of("rejected")) == 1
    assert any(f"HTTP {status}" in r.getMessage() and "credentials" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("strategy", ["drop_oldest", "drop_newest", "raise"])
def test_queue_overflow_while_the_server_is_down(server, proxy_to, make_client, strategy, acks):
    proxy = proxy_to(server.port)
    proxy.refuse()
    run = Run(make_client, proxy.url, acks=acks, retry_delay=0.05, max_retry_delay=0.1, max_queue_size=500,
              queue_overflow_strategy=strategy)
    run.send(1500)
    proxy.reopen()
    result = run.finish(server, f"overflow while down: {strategy} (500 of 1500)")
    check_order(result)
    assert result.lost == 0 and result.duplicated == 0, result
    delivered = numbers_in(server.texts())
    if strategy == "drop_oldest":
        assert delivered == list(range(1000, 1500)) and result.dropped == {"overflow": 1000}
    elif strategy == "drop_newest":
        assert delivered == list(range(500)) and result.dropped == {"overflow": 1000}
    else:
        assert delivered == list(range(500)) and result.refused == 1000 and result.accepted == 500
