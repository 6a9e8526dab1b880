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
- A zero-delay timer resumes the caller after one full turn of the event loop: I/O
  is polled and every due timer and ready greenlet runs first (on libuv gevent turns
  it into a one-shot check watcher; same effect).

So a busy loop works without yielding for a budget, then takes one full loop
turn with a zero-delay timer. The budget is ``gevent.getswitchinterval()`` (5 ms
by default: the bound gevent itself sets for a greenlet holding the hub) - unless
the last loop turn took longer to come back, because the app's own greenlets held
the hub that long. Request greenlets in a gunicorn gevent worker do: each one
serves request after request without yielding while its client has the next one
ready, and under wrk's load the event loop turned only 4 to 14 times a second. A
loop that then worked 5 ms per turn would get a few percent of the hub, and the
reader fell seconds behind a stream of 5,000 messages a second. So the budget
grows to what the others just took - at most half the hub for us - capped at
MAX_BUDGET, so the library never holds the hub long enough for a person to notice.
A loop whose backlog is about to be lost (the sender, with its queue more than a
quarter full) takes the whole cap before it yields: a message dropped is worse
than a timer 100 ms late. A wait for I/O or a timer is a loop turn too and
restarts the budget, so a loop that is not busy never yields more than it waits.

``Turns`` is the pure decision (tested without a clock); ``take_turn`` performs it.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import gevent

__all__ = ["MAX_BUDGET", "Turns", "new_turns", "take_turn", "cycle_loop", "loop_turn_counter", "timer_floor"]


#: The longest a busy loop holds the hub, however long the app's greenlets hold it.
MAX_BUDGET = 0.1


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

    def due(self, now: float, urgent: bool = False) -> bool:
        """True once the loop has worked its budget (the whole cap when ``urgent``)."""
        return now - self._turned_at >= (self.cap if urgent else self._allowed)

    def turned(self, now: float, others: float = 0.0) -> None:
        self._turned_at = now
        self._allowed = min(max(self.budget, others), self.cap)

    def __repr__(self) -> str:
        return f"Turns(budget={self.budget!r}, cap={self.cap!r})"


def new_turns() -> Turns:
    """A Turns on gevent's switch interval, starting now."""
    return Turns(gevent.getswitchinterval(), time.monotonic())


def loop_turn_counter() -> Optional[Callable[[], int]]:
    """A function counting the event loop's turns (libev's ev_iteration), so a caller can
    tell whether a call waited (the loop turned meanwhile) or returned at once; None on
    loops that do not count them (libuv), where callers fall back on timing the call."""
    loop = gevent.get_hub().loop
    return (lambda: loop.iteration) if getattr(loop, "iteration", -1) >= 0 else None


def timer_floor(seconds: float) -> float:
    """``seconds``, raised to the loop's timer resolution where it is coarser (libuv: 1 ms,
    and gevent warns about every shorter timer)."""
    if type(gevent.get_hub().loop).__module__.startswith("gevent.libuv"):
        return max(seconds, 0.001)
    return seconds


def cycle_loop() -> None:
    """Resume after one full turn of the event loop (never waits for it to be idle)."""
    hub = gevent.get_hub()
    with hub.loop.timer(0.0) as timer:
        hub.wait(timer)


def take_turn(turns: Turns, urgent: bool = False) -> None:
    """After a unit of work: let the event loop turn once the budget is spent."""
    began = time.monotonic()
    if turns.due(began, urgent):
        cycle_loop()
        now = time.monotonic()
        turns.turned(now, now - began)
