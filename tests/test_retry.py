"""Reconnection as a value and the lifecycle: pure, no clock, no sockets."""

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from hermes_gevent import Backoff
from hermes_gevent.errors import ConnectionClosed, ExtensionMismatch, HandshakeRejected, SubprotocolMismatch
from hermes_gevent.lifecycle import Lifecycle, LifecycleError, State
from hermes_gevent.retry import Retry, parse_retry_after, retry_after, should_retry

from .test_policies import FixedRandom

REFUSED = ConnectionRefusedError("refused")
RETRY = Retry(Backoff(initial=1, maximum=8, jitter=0), limit=4, min_uptime=5)


def test_failed_attempts_back_off_then_give_up_at_the_limit():
    retry, delays = RETRY, []
    for _ in range(3):
        decision = retry.next(REFUSED, retryable=True)
        assert decision.give_up is None
        delays.append(decision.delay)
        retry = decision.retry
    assert delays == [1, 2, 4] and retry.failures == 3
    last = retry.next(REFUSED, retryable=True)
    assert last.delay is None and last.retry.failures == 4
    assert last.give_up == "giving up after 4 consecutive failed attempts (ConnectionRefusedError: refused)"


def test_the_value_never_changes():
    decision = RETRY.next(REFUSED, retryable=True)
    assert RETRY.failures == 0 and decision.retry.failures == 1
    assert decision.retry.reset() == RETRY


def test_a_connection_that_lived_min_uptime_resets_the_count():
    retry = Retry(RETRY.backoff, limit=4, min_uptime=5, failures=3)
    decision = retry.next(ConnectionClosed(1006), retryable=True, uptime=5.0)
    assert (decision.delay, decision.retry.failures, decision.give_up) == (1, 0, None)


def test_a_connection_shorter_than_min_uptime_is_a_failed_attempt():
    retry = Retry(RETRY.backoff, limit=4, min_uptime=5, failures=3)
    decision = retry.next(ConnectionClosed(1006), retryable=True, uptime=4.9)
    assert decision.retry.failures == 4 and decision.give_up.startswith("giving up after 4")


def test_not_retryable_gives_up_at_once_and_says_why():
    decision = RETRY.next(HandshakeRejected(401, "Unauthorized"), retryable=False)
    assert decision.retry.failures == 0 and decision.delay is None
    assert decision.give_up == (
        "not retrying after HandshakeRejected: server answered the upgrade with HTTP 401 Unauthorized"
        " - check the credentials this client sends"
    )


def test_no_limit_never_gives_up_and_stays_at_the_cap():
    retry = Retry(Backoff(initial=1, maximum=8, jitter=0.5), limit=None)
    for _ in range(1000):
        decision = retry.next(REFUSED, retryable=True, rng=FixedRandom(1.0))
        assert decision.give_up is None
        retry = decision.retry
    assert retry.failures == 1000 and decision.delay == 4  # the cap, halved by the jitter


def test_lifecycle_of_a_run_and_its_derived_flags():
    lines = []
    life = Lifecycle(lambda level, line: lines.append(line))
    assert not life.started and not life.running and not life.ended
    for state in (State.CONNECTING, State.OPEN, State.BACKING_OFF, State.CONNECTING, State.GAVE_UP):
        life.move(state)
        assert life.started and life.running and not life.ended
    assert life.gave_up
    life.move(State.STOPPING, "stop()")
    assert (life.started, life.running, life.stopping, life.ended) == (True, False, True, True)
    life.move(State.STOPPED)
    assert (life.started, life.running, life.stopping, life.ended) == (False, False, False, True)
    assert lines[0] == "state idle -> connecting" and lines[-2] == "state gave_up -> stopping (stop())"


@pytest.mark.parametrize(
    "path",
    [
        [State.OPEN],  # from idle, without connecting
        [State.CONNECTING, State.STOPPING, State.OPEN],  # a connect that finished after stop()
        [State.CONNECTING, State.STOPPING, State.STOPPED, State.STOPPING],
        [State.PENDING, State.GAVE_UP],
    ],
)
def test_a_transition_the_table_forbids_raises(path):
    life = Lifecycle()
    for state in path[:-1]:
        life.move(state)
    with pytest.raises(LifecycleError, match=f"to {path[-1].value}"):
        life.move(path[-1])


def test_a_connection_that_lived_resets_the_count_even_when_it_gives_up_or_no_decision_follows():
    retry = Retry(RETRY.backoff, limit=4, min_uptime=5, failures=3)
    assert retry.after_connection(5.0).failures == 0  # reconnect() or stop(): no decision, still a success
    assert retry.after_connection(4.9) is retry
    decision = retry.next(ConnectionClosed(1008), retryable=False, uptime=60.0)
    assert decision.give_up.startswith("not retrying") and decision.retry.failures == 0


# -- polite reconnects: Retry-After and close code 1013 (issue 13) ------------------------

RECEIVED = datetime(2026, 11, 26, 6, 0, 0, tzinfo=timezone.utc)
POLITE = Retry(Backoff(initial=1, maximum=30, jitter=0), limit=None)


def rejected(status, retry_after, received_at=RECEIVED):
    return HandshakeRejected(status, "Busy", headers={"retry-after": retry_after}, received_at=received_at)


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), (" 7 ", 7.0), ("0", 0.0),
    ("Thu, 26 Nov 2026 06:02:00 GMT", 120.0),  # IMF-fixdate, from when the answer came
    ("Thursday, 26-Nov-26 06:00:30 GMT", 30.0),  # RFC 850, which RFC 9110 still asks recipients to read
    ("Thu Nov 26 06:00:05 2026", 5.0),  # asctime
    ("Thu, 26 Nov 2026 05:00:00 GMT", 0.0),  # already past: no wait of its own
    ("Thu, 26 Nov 2026 06:01:00 -0000", 60.0),  # a zone that says nothing: UTC
    ("-5", None), ("1.5", None), ("soon", None), ("", None), ("١٢", None),  # Arabic-Indic digits are no delay-seconds
    ("9" * 400, 1e15),  # absurd, capped by the Retry value later; never an int too large for a float
])
def test_retry_after_reads_delay_seconds_and_http_dates(value, seconds):
    assert parse_retry_after(value, RECEIVED) == seconds


def test_an_http_date_needs_the_moment_the_answer_came():
    assert parse_retry_after("Thu, 26 Nov 2026 06:02:00 GMT", None) is None
    assert parse_retry_after("60", None) == 60.0


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("value", ["120", "Thu, 26 Nov 2026 06:02:00 GMT"])
def test_retry_after_on_429_or_503_sets_the_next_delay_and_says_so(status, value):
    decision = POLITE.next(rejected(status, value), retryable=True)
    assert decision.delay == 120 and decision.retry.failures == 1
    assert decision.note == "the server asked to wait 120s (Retry-After)"


def test_retry_after_on_other_statuses_is_ignored():
    for status in (500, 502, 408):
        decision = POLITE.next(rejected(status, "120"), retryable=True)
        assert (decision.delay, decision.note) == (1, None)
    assert retry_after(ConnectionClosed(1006)) is None
    assert retry_after(HandshakeRejected(503)) is None  # no headers at all


def test_retry_after_never_shortens_the_backoff():
    retry = Retry(POLITE.backoff, failures=4)  # the backoff's own delay is 16 s
    for asked in ("2", "16", "Thu, 26 Nov 2026 05:00:00 GMT"):
        decision = retry.next(rejected(503, asked), retryable=True)
        assert (decision.delay, decision.note) == (16, None)  # nothing to say: the server's ask changed nothing


def test_retry_after_is_capped_at_ten_times_max_retry_delay():
    decision = POLITE.next(rejected(429, "86400"), retryable=True)
    assert decision.delay == 300 and decision.note == "the server asked to wait 86400s (Retry-After, capped at 300s)"
    assert POLITE.next(rejected(429, "9" * 30), retryable=True).delay == 300


@pytest.mark.parametrize("r", [0.0, 0.25, 0.999])
def test_jitter_spreads_above_the_servers_floor_never_below_it(r):
    retry = Retry(Backoff(initial=1, maximum=30, jitter=0.5), limit=None)
    for failures in range(8):
        current = replace(retry, failures=failures)
        backoff = current.backoff.delay(failures, FixedRandom(r))
        for asked in ("0", "5", "45", "299", "300", "100000"):
            delay = current.next(rejected(503, asked), retryable=True, rng=FixedRandom(r)).delay
            assert min(float(asked), 300) <= delay <= 300 and delay >= backoff, (failures, asked)
        delay = current.next(ConnectionClosed(1013), retryable=True, rng=FixedRandom(r)).delay
        assert 30 <= delay <= 300 and delay >= backoff
    spread = retry.next(rejected(503, "120"), retryable=True, rng=FixedRandom(1.0)).delay
    assert spread == 120.5  # a fleet given the same Retry-After does not all come back at its instant


def test_close_code_1013_waits_at_least_max_retry_delay():
    for uptime in (None, 0.1, 3600.0):  # an attempt that failed, a short connection, a long one
        decision = POLITE.next(ConnectionClosed(1013, "overloaded"), retryable=True, uptime=uptime)
        assert decision.delay == 30 and "1013" in decision.note
    assert POLITE.next(ConnectionClosed(1011), retryable=True).delay == 1


def test_a_server_that_asks_to_wait_still_counts_toward_the_limit_and_can_be_refused():
    retry = Retry(POLITE.backoff, limit=2, failures=1)
    assert retry.next(rejected(503, "120"), retryable=True).give_up.startswith("giving up after 2")
    assert POLITE.next(rejected(503, "120"), retryable=False).give_up.startswith("not retrying")


def test_a_subprotocol_the_server_chose_unoffered_is_not_retried():
    exc = SubprotocolMismatch("chat.v9", ["chat.v2", "chat.v1"])
    assert not should_retry(exc)
    assert str(exc) == "the server chose subprotocol 'chat.v9', which this client did not offer (offered: chat.v2, chat.v1)"
    assert POLITE.next(exc, retryable=should_retry(exc)).give_up.startswith("not retrying after SubprotocolMismatch")


def test_an_extension_answer_this_client_cannot_honour_is_not_retried():
    exc = ExtensionMismatch("the server's permessage-deflate answer asks client_max_window_bits=8; ...")
    assert not should_retry(exc)
    assert POLITE.next(exc, retryable=should_retry(exc)).give_up.startswith("not retrying after ExtensionMismatch")
