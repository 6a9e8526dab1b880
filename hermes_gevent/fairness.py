"""How the library's busy loops share the gevent hub with the application.

The reader, the sender and the large-frame writer can each have more work than
time: a server streaming faster than we read, a queue longer than one write. Such
a loop must give other greenlets their turn while it works, and let the event
loop poll I/O and run timers often enough that the app's requests and timeouts,
and our own ping clock, stay on time. gevent offers three ways to yield:

- ``gevent.idle()`` waits until the event loop has nothing else to do. In a worker
  serving requests, or next to any greenlet that yields with ``sleep(0)``, that
  moment never comes, and the loop that called it stalls until the load ends.
  Never used here.
- ``gevent.sleep(0)`` queues a callback. Queued callbacks run round-robin, so this
  interleaves fairly with other greenlets yielding the same way (a producer loop,
  request greenlets being spawned). But gevent runs callbacks in one batch and
  checks the clock only every 50 callbacks: a chain of callbacks that each do a
  millisecond of work keeps timers and I/O waiting for 50 ms.
- A zero-delay timer resumes the caller after one full turn of the event loop: I/O
  is polled and every due timer runs first (libuv gets a one-shot check watcher
  from gevent for this; same effect).

So a busy loop shares with ``sleep(0)`` after each unit of work (a batch written,
a read parsed, a large-frame piece), and at least every ``gevent.getswitchinterval()``
(5 ms by default, the bound gevent itself promises for ``sleep(0)``) it takes a full
loop turn instead. A wait for I/O or a timer is a full loop turn too and resets
the clock.

``Turns`` is the pure decision (tested without a clock); ``take_turn`` performs it.
"""

from __future__ import annotations

import enum
import time
from typing import Callable, Optional

import gevent

__all__ = ["Yield", "Turns", "new_turns", "take_turn", "cycle_loop", "loop_turn_counter", "timer_floor"]


class Yield(enum.Enum):
    SHARE = "share"  # sleep(0): let other runnable greenlets run, round-robin
    CYCLE = "cycle"  # a zero-delay timer: one full event-loop turn (I/O polled, due timers run)


class Turns:
    """When a busy loop last let the event loop turn, and how it should yield next.

    Owned by one greenlet. ``next_yield(now)`` says how to yield after a unit of
    work; ``cycled(now)`` records that the event loop turned (we yielded with a timer,
    or waited for I/O)."""

    __slots__ = ("cycle_every", "_cycled_at")

    def __init__(self, cycle_every: float, now: float) -> None:
        if cycle_every < 0:
            raise ValueError("cycle_every must be >= 0")
        self.cycle_every = cycle_every
        self._cycled_at = now

    def next_yield(self, now: float) -> Yield:
        return Yield.CYCLE if now - self._cycled_at >= self.cycle_every else Yield.SHARE

    def cycled(self, now: float) -> None:
        self._cycled_at = now

    def __repr__(self) -> str:
        return f"Turns(cycle_every={self.cycle_every!r})"


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


def take_turn(turns: Turns) -> None:
    """Yield after a unit of work, as ``turns`` decides."""
    now = time.monotonic()
    if turns.next_yield(now) is Yield.CYCLE:
        cycle_loop()
        turns.cycled(time.monotonic())
    else:
        gevent.sleep(0)
