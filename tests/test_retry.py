"""Reconnection as a value and the lifecycle: pure, no clock, no sockets."""

import pytest

from hermes_gevent import Backoff
from hermes_gevent.errors import ConnectionClosed, HandshakeRejected
from hermes_gevent.lifecycle import Lifecycle, LifecycleError, State
from hermes_gevent.retry import Retry

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
