"""How the library's busy loops share the gevent hub with the application.

The reader, the sender and the large-frame writer can each have more work than
time: a server streaming faster than we read, a queue longer than one write. Such
a loop must keep up with its own work while the app is busy, and still let the
event loop poll I/O and run timers often enough that the app's requests and
timeouts, and our own ping clock, stay on time. gevent offers three ways to yield:

- ``gevent.idle()`` waits until the event loop has nothing else to do. In a worker
  serving requests, or next to any greenlet that yields with ``sleep(0)``, that
  moment never comes, and the loop that called it stalls until the load ends.
- ``gevent.sleep(0)`` queues a callback. gevent runs queued callbacks in one batch
  before it polls, checking the clock only every 50 callbacks: a chain of callbacks
  that each do a few milliseconds of work keeps timers and I/O waiting for 100 ms
  and more. And a callback queued while the loop dispatches I/O waits for the next
  turn anyway.
- A zero-delay timer, started with the loop's clock brought up to date and at the
  lowest priority, resumes the caller after one full turn of the event loop: I/O
  is polled, and the I/O that became ready and every timer that fell due while we
  worked run first (libev runs pending watchers by priority; libuv runs I/O
  callbacks during the poll, before timers).

So a busy loop works without yielding for a budget, then takes one full loop
turn with such a timer. The budget is ``gevent.getswitchinterval()`` (5 ms by
default: the bound gevent itself sets for a greenlet holding the hub) - unless
the last loop turn took longer to come back, because the app's own greenlets held
the hub that long. Request greenlets in a gunicorn gevent worker do: each one
serves request after request without yielding while its client has the next one
ready, and under wrk's load the event loop turned only 8 to 22 times a second
(tests/test_load.py prints it). A loop that then worked 5 ms per turn would get
a few percent of the hub, and the reader fell seconds behind a stream of 5,000
messages a second. So the budget grows to what the app's greenlets just took -
the library's own loops' time is counted apart, per hub, so that a busy reader
and a busy sender do not grow each other's budgets - capped at MAX_BUDGET.

A loop whose backlog is about to be lost (the sender, with its queue more than a
quarter full) takes the whole cap before it yields: a message dropped is worse
than a timer 80 ms late. A wait for I/O is a loop turn too and restarts the
budget, so a loop that is not busy never yields more than it waits (where the
caller can tell that it waited: see loop_turn_counter).

``Turns`` is the pure decision (tested without a clock); ``take_turn`` performs it.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Optional

import gevent

__all__ = ["cycle_loop", "loop_turn", "loop_turn_counter", "LOWEST_PRIORITY", "MAX_BUDGET", "new_turns", "pause",
    "take_turn", "timer_floor", "Turns"]


#: The longest a busy loop works between loop turns, however long the app's greenlets hold
#: the hub: under gevent's default max_blocking_time (0.1 s), the hold its monitor reports,
#: with 20 ms to spare for the unit of work that ends past the budget.
MAX_BUDGET = 0.08
#: libev's lowest watcher priority (EV_MINPRI): our resuming timer runs after the rest.
LOWEST_PRIORITY = -2


class Turns:
    """How long a busy loop has worked since the event loop last turned, and for how
    long it may.

    Owned by one greenlet. After each unit of work, ``due(now)`` says whether the
    loop has had the hub for its budget and must let the event loop turn;
    ``turned(now, others)`` records that it did, and that other greenlets held the
    hub for ``others`` seconds before it came back (0 for a wait for I/O)."""

    __slots__ = ("budget", "cap", "_turned_at", "_allowed")

    def __init__(self, budget: float, now: float, cap: float = MAX_BUDGET) -> None:
        if not 0 <= budget <= cap:
            raise ValueError("budget must be >= 0 and <= cap")
        self.budget = budget
        self.cap = cap
        self._turned_at = now
        self._allowed = budget

    @property
    def turned_at(self) -> float:
        """When the event loop last turned for this loop (it has worked since)."""
        return self._turned_at

    def due(self, now: float, urgent: bool = False) -> bool:
        """True once the loop has worked its budget (the whole cap when ``urgent``)."""
        return now - self._turned_at >= (self.cap if urgent else self._allowed)

    def turned(self, now: float, others: float = 0.0) -> None:
        self._turned_at = now
        self._allowed = min(max(self.budget, others), self.cap)

    def __repr__(self) -> str:
        return f"Turns(budget={self.budget!r}, cap={self.cap!r})"


def new_turns() -> Turns:
    """A Turns on gevent's switch interval (at most MAX_BUDGET), starting now."""
    return Turns(min(gevent.getswitchinterval(), MAX_BUDGET), time.monotonic())


class _LibraryTime:
    """Seconds the library's busy loops worked, in total, on one hub: what a loop was away
    for, minus this, is what the app's greenlets took."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0


_library_time: "weakref.WeakKeyDictionary[object, _LibraryTime]" = weakref.WeakKeyDictionary()


def _library_time_here() -> _LibraryTime:
    hub = gevent.get_hub()
    spent = _library_time.get(hub)
    if spent is None:
        spent = _library_time[hub] = _LibraryTime()
    return spent


def loop_turn(loop: Any) -> int:
    """How many turns ``loop`` has made (libev's ev_iteration); -1 on loops that count none (libuv)."""
    iteration: int = getattr(loop, "iteration", -1)
    return iteration


def loop_turn_counter() -> Optional[Callable[[], int]]:
    """A function counting the event loop's turns (loop_turn), so a caller can tell whether a
    call waited (the loop turned meanwhile) or returned at once; None on loops that do not
    count them (libuv), where callers fall back on timing the call."""
    loop = gevent.get_hub().loop
    return (lambda: loop.iteration) if loop_turn(loop) >= 0 else None


def timer_floor(seconds: float) -> float:
    """``seconds``, raised to the loop's timer resolution where it is coarser (libuv: 1 ms,
    and gevent warns about every shorter timer)."""
    if type(gevent.get_hub().loop).__module__.startswith("gevent.libuv"):
        return max(seconds, 0.001)
    return seconds


def cycle_loop() -> None:
    """Resume after one full turn of the event loop (never waits for it to be idle): the
    I/O that became ready and the timers that fell due meanwhile run first."""
    hub = gevent.get_hub()
    loop = hub.loop
    loop.update_now()  # the timer's deadline is now, after every timer already due
    timer = loop.timer(0.0, priority=LOWEST_PRIORITY)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def take_turn(turns: Turns, urgent: bool = False) -> None:
    """After a unit of work: let the event loop turn once the budget is spent."""
    began = time.monotonic()
    if turns.due(began, urgent):
        _away(turns, began, cycle_loop, 0.0)


def pause(turns: Turns, seconds: float) -> None:
    """Sleep ``seconds`` on a timer (a loop turn too), and restart the budget."""
    _away(turns, time.monotonic(), lambda: gevent.sleep(seconds), seconds)


def _away(turns: Turns, began: float, wait: Callable[[], None], asked: float) -> None:
    """Wait, then restart the budget with what the app's greenlets took meanwhile: the time
    away, less what we asked for, less the library's other loops' work (counted per hub)."""
    spent = _library_time_here()
    spent.seconds += began - turns.turned_at
    ours_before = spent.seconds
    wait()
    now = time.monotonic()
    turns.turned(now, max(0.0, now - began - asked - (spent.seconds - ours_before)))
