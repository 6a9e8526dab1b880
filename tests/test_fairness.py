"""The yield policy: the pure decision without a clock, then the loop turn on a real hub."""

import sys
import time

import gevent
import gevent.event
import gevent.socket
import pytest

from hermes_gevent.fairness import MAX_BUDGET, Turns, cycle_loop, new_turns, take_turn

from .support import t


def test_a_busy_loop_works_for_its_budget_then_lets_the_loop_turn():
    turns = Turns(0.25, now=100.0, cap=2.0)  # binary-exact times: no float rounding at the boundary
    assert not turns.due(100.0)
    assert not turns.due(100.125)
    assert turns.due(100.25)
    assert turns.due(102.0)


def test_a_wait_for_io_restarts_the_budget():
    turns = Turns(0.25, now=0.0, cap=2.0)
    turns.turned(0.5)  # e.g. the reader waited for data: the event loop turned
    assert not turns.due(0.625)
    assert turns.due(0.75)


def test_when_other_greenlets_held_the_hub_longer_the_loop_may_work_as_long_up_to_the_cap():
    turns = Turns(0.25, now=0.0, cap=2.0)
    turns.turned(10.0, others=1.0)  # the loop turn took 1 s to come back: the app held the hub
    assert not turns.due(10.5) and turns.due(11.0)
    turns.turned(20.0, others=8.0)  # never more than the cap
    assert not turns.due(21.5) and turns.due(22.0)
    turns.turned(30.0, others=0.0)  # a quick turn: back to the base budget
    assert not turns.due(30.125) and turns.due(30.25)


def test_an_urgent_loop_works_for_the_whole_cap():
    turns = Turns(0.25, now=0.0, cap=2.0)
    assert turns.due(0.5) and not turns.due(0.5, urgent=True)
    assert turns.due(2.0, urgent=True)


def test_the_default_cap_and_bad_budgets():
    assert Turns(0.005, now=0.0).cap == MAX_BUDGET == 0.08
    assert Turns(0.0, now=0.0).due(0.0)  # a zero budget turns after every unit
    with pytest.raises(ValueError):
        Turns(-1.0, now=0.0)
    with pytest.raises(ValueError):
        Turns(1.0, now=0.0, cap=0.5)


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


def test_a_switch_interval_longer_than_the_cap_is_cut_to_it():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        assert new_turns().budget == MAX_BUDGET
    finally:
        sys.setswitchinterval(before)


def test_a_loop_turn_runs_the_io_and_timers_that_became_ready_while_we_worked():
    order = []
    a, b = gevent.socket.socketpair()

    def io_reader():
        a.recv(10)
        order.append("io")

    def timer_waiter():
        gevent.sleep(0.002)
        order.append("timer")

    def worker():
        gevent.sleep(0.0002)  # resumed by a timer, as a busy loop is after its first turn
        b.send(b"x")  # I/O becomes ready while we work...
        began = time.perf_counter()
        while time.perf_counter() - began < 0.006:  # ...and the 2 ms timer falls due
            pass
        order.append("worker yields")
        cycle_loop()
        order.append("worker resumed")

    try:
        greenlets = [gevent.spawn(io_reader), gevent.spawn(timer_waiter), gevent.spawn(worker)]
        gevent.joinall(greenlets, timeout=t(5))
    finally:
        a.close()
        b.close()
    assert order[0] == "worker yields" and order[-1] == "worker resumed", order
    assert sorted(order[1:3]) == ["io", "timer"], order


def test_two_busy_loops_do_not_grow_each_others_budget():
    """Each counts the other's work as the library's, not the app's: both stay at the base budget."""
    stints = {"a": [], "b": []}

    def busy(name):
        turns = new_turns()
        resumed = time.perf_counter()
        for _ in range(150):
            began = time.perf_counter()
            while time.perf_counter() - began < 0.001:  # 1 ms units of work
                pass
            before = time.perf_counter()
            take_turn(turns)
            if time.perf_counter() - before > 0.0005:  # it let the loop turn: a stint ended
                stints[name].append(before - resumed)
                resumed = time.perf_counter()

    gevent.joinall([gevent.spawn(busy, "a"), gevent.spawn(busy, "b")], timeout=t(10))
    assert stints["a"] and stints["b"]
    # The base budget (5 ms) plus one unit, with room for noise; the ratchet made every stint reach
    # the cap (80 ms). The 90th percentile, not the maximum: one OS preemption on a busy machine
    # once stretched a single stint to 26 ms.
    every = sorted(stints["a"] + stints["b"])
    assert every[int(len(every) * 0.9)] < 0.005 + 0.001 + t(0.015), every


UNITS, UNIT_SECONDS = 150, 0.004


def test_a_greenlet_taking_turns_keeps_pace_with_a_sleep0_spinner_and_lets_timers_fire():
    """Side by side with a sleep(0) caller, and a due timer never waits much more than the budget."""
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
    # sleep(0) after each unit instead: gevent checks the clock every 50 callbacks, 25 units here, ~100 ms.
    assert max(gaps) < t(0.06), f"a timer waited {max(gaps) * 1000:.0f} ms"
