"""The yield policy: the pure decision without a clock, then the loop turn on a real hub."""

import time

import gevent
import gevent.event
import pytest

from hermes_gevent.fairness import Turns, Yield, cycle_loop, take_turn

from .support import t


def test_a_busy_loop_shares_until_the_cycle_interval_then_cycles():
    turns = Turns(0.25, now=100.0)  # binary-exact times: no float rounding at the boundary
    assert turns.next_yield(100.0) is Yield.SHARE
    assert turns.next_yield(100.125) is Yield.SHARE
    assert turns.next_yield(100.25) is Yield.CYCLE
    assert turns.next_yield(102.0) is Yield.CYCLE


def test_a_loop_turn_resets_the_clock():
    turns = Turns(0.25, now=0.0)
    turns.cycled(0.5)  # e.g. the reader waited for data: the event loop turned
    assert turns.next_yield(0.625) is Yield.SHARE
    assert turns.next_yield(0.75) is Yield.CYCLE


def test_cycling_every_time_is_allowed_but_a_negative_interval_is_not():
    assert Turns(0.0, now=0.0).next_yield(0.0) is Yield.CYCLE
    with pytest.raises(ValueError):
        Turns(-1.0, now=0.0)


@pytest.fixture
def spinners():
    """Greenlets that always have work: the hub is never idle while they run."""
    done = gevent.event.Event()
    deadline = time.monotonic() + t(30)

    def spin():
        while not done.is_set() and time.monotonic() < deadline:
            gevent.sleep(0)

    greenlets = [gevent.spawn(spin) for _ in range(5)]
    gevent.sleep(0)
    yield
    done.set()
    gevent.joinall(greenlets, timeout=t(5))


def test_a_loop_turn_never_waits_for_an_idle_hub(spinners):
    with gevent.Timeout(t(1), AssertionError("cycle_loop waited for the hub to be idle")):
        for _ in range(10):
            cycle_loop()


def test_a_loop_turn_runs_due_timers_first(spinners):
    fired = []
    gevent.get_hub().loop.timer(0.0).start(fired.append, "timer")
    cycle_loop()
    assert fired == ["timer"]


UNITS, UNIT_SECONDS = 150, 0.004


def test_a_greenlet_taking_turns_keeps_pace_with_a_sleep0_spinner_and_lets_timers_fire():
    """Round-robin with sleep(0) callers, and a due timer never waits more than a few turns."""
    progress = {"spinner": 0, "worker": 0}
    gaps = []
    done = gevent.event.Event()

    def spinner():
        while not done.is_set() and progress["spinner"] < 1_000_000:
            progress["spinner"] += 1
            gevent.sleep(0)

    def ticker():
        last = time.perf_counter()
        while not done.is_set():
            gevent.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last - 0.002)
            last = now

    def worker():
        turns = Turns(gevent.getswitchinterval(), time.monotonic())
        for _ in range(UNITS):
            began = time.perf_counter()
            while time.perf_counter() - began < UNIT_SECONDS:  # CPU work, as parsing a large read is
                pass
            progress["worker"] += 1
            take_turn(turns)
        progress["spinner_when_worker_done"] = progress["spinner"]
        done.set()

    greenlets = [gevent.spawn(spinner), gevent.spawn(ticker), gevent.spawn(worker)]
    assert done.wait(t(10)), progress
    gevent.joinall(greenlets, timeout=t(5))
    # Both made progress side by side: the worker did not wait for the spinner to give up.
    assert progress["worker"] == UNITS and 100 <= progress["spinner_when_worker_done"] < 1_000_000, progress
    # sleep(0) alone: gevent checks the clock every 50 callbacks, 25 units here, ~100 ms.
    assert max(gaps) < t(0.04), f"a timer waited {max(gaps) * 1000:.0f} ms"
