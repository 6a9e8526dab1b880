"""The fault matrix's rows for polite clients (issue 13): a server that asks to wait
(503 with Retry-After, close code 1013) and a client held to MAX_SEND_RATE through a
reconnection. Same producer (about 2,000 messages a second), server and accounting as
test_matrix.py: while the client waits as asked, the queue absorbs what is produced,
and nothing is lost or sent twice."""

from __future__ import annotations

import time

import pytest

from ..support import t
from ..test_polite import assert_within_rate
from .test_matrix import FAST_FAULTS, judge
from .test_matrix import acks, server  # noqa: F401  (the fixtures)
from .scenario import Run

pytestmark = pytest.mark.faults


def test_handshake_503_with_retry_after_then_101(server, make_client, acks):
    run = Run(make_client, server.url, acks=acks, **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    server.command(cmd="mode", reject=503, retry_after="1")
    run.fault()
    server.command(cmd="close", code=1012)
    server.wait_for(lambda: server.of("rejected"), t(5), "a 503")
    asked_at = time.monotonic()
    server.command(cmd="mode", reject=None)  # ready again at once: the client still waits the second
    assert run.client.wait_until_connected(t(5))
    waited = time.monotonic() - asked_at
    assert len(server.of("rejected")) == 1 and waited >= 0.95, waited  # the backoff alone: 0.05 s
    run.produce_for(0.3)
    judge(run.finish(server, "handshake answered 503 + Retry-After: 1, then 101"), acks, 1, graceful=True)


def test_server_closes_with_1013_try_again_later(server, make_client, acks):
    longest = FAST_FAULTS["max_retry_delay"]
    run = Run(make_client, server.url, acks=acks, **{**FAST_FAULTS, "min_uptime": 0.1}).start_producer()
    for _ in range(2):
        run.produce_for(0.4)
        connects = len(server.of("connect"))
        run.fault()
        closing = time.monotonic()
        server.command(cmd="close", code=1013, reason="overloaded")
        server.wait_for(lambda: len(server.of("connect")) > connects, t(5), "the next connection")
        assert time.monotonic() - closing >= longest  # MAX_RETRY_DELAY at least; the backoff: 0.05 s
    run.produce_for(0.4)
    judge(run.finish(server, "server closes with 1013 x2 (waits MAX_RETRY_DELAY)"), acks, 2, graceful=True)


def test_max_send_rate_through_a_reconnection(server, make_client, acks):
    """The producer outruns the rate (about 2,000 a second against 800): the queue absorbs the
    difference, the server never sees more than the rate allows, across a reconnection."""
    rate = 800
    server.command(cmd="mode", stamp=True)
    run = Run(make_client, server.url, acks=acks, max_send_rate=rate, **FAST_FAULTS).start_producer()
    run.produce_for(0.6)
    run.fault()
    server.command(cmd="close", code=1012)
    run.produce_for(0.6)
    result = run.finish(server, f"MAX_SEND_RATE={rate}, producer at ~2,000/s, server closes with 1012")
    judge(result, acks, 1, graceful=True)
    assert_within_rate(server.of("msg"), rate)
