"""The outgoing queue: bounded, with overflow strategies, safe from OS threads.

Messages live in a deque owned by the hub of the thread that made the outbox
(an event wakes the sender waiting for one). Greenlets of that hub put into it directly. Any other OS
thread (a thread pool in an unpatched app) appends to a plain deque - atomic
in CPython - and wakes the hub through a loop ``async`` watcher, whose
``send()`` is the one gevent call documented as safe from another thread; the
hub then moves those messages into the queue in arrival order.

The sender takes a batch, writes it, then ``settle()``s the part that reached
the kernel. What did not stays in flight and is taken again first; messages
the peer's TCP never acknowledged before an abrupt failure come back through
``requeue_front()`` and go out before everything else, a batch at a time. So a failed write
neither loses nor reorders messages.
"""

from __future__ import annotations

import collections
import operator
import time
from typing import Any, Callable, Optional

import gevent
import gevent.event
import gevent.hub

from .errors import QueueFull
from .frames import Item

__all__ = ["DEEP", "DROP_OVERFLOW", "DROP_STOPPED", "DROP_UNACKED", "DropSink", "in_hub", "Item", "on_thread_of", "Outbox"]

DropSink = Callable[[Item, str], None]

DROP_OVERFLOW = "overflow"
DROP_STOPPED = "stopped"
DROP_UNACKED = "unacked"
_payload = operator.itemgetter(1)
#: The fraction of maxsize above which a put sets ``deep``.
DEEP = 0.25


def _batch_from(source: collections.deque[Item], max_items: int, max_bytes: int) -> list[Item]:
    """The first messages of ``source``, taken out: at most ``max_items``, and none after the one
    that reaches ``max_bytes``. The whole deque in one C call when it fits (the common case)."""
    if len(source) <= max_items:
        batch = list(source)
        source.clear()
    else:
        batch = [source.popleft() for _ in range(max_items)]
    if sum(map(len, map(_payload, batch))) > max_bytes:
        size, keep = 0, 0
        while size < max_bytes:
            size += len(batch[keep][1])
            keep += 1
        source.extendleft(reversed(batch[keep:]))
        del batch[keep:]
    return batch


def in_hub() -> bool:
    """True when the caller runs in a hub greenlet (a loop callback, a signal handler)."""
    return isinstance(gevent.getcurrent(), gevent.hub.Hub)


def _thread_root(glet: Any) -> Any:
    while glet.parent is not None:
        glet = glet.parent
    return glet


def on_thread_of(hub: gevent.hub.Hub, hub_root: Any = None) -> bool:
    """True when the caller runs in the OS thread of ``hub``: greenlets never cross threads,
    so the caller and the hub then descend from the same main greenlet (``hub_root``, when
    the caller has it at hand). The common cases - a greenlet the hub runs, the thread's
    main greenlet - are answered without walking."""
    current = gevent.getcurrent()
    parent = current.parent
    if parent is hub or current is hub:
        return True
    root = hub_root if hub_root is not None else _thread_root(hub)
    if parent is None:
        return current is root
    return _thread_root(current) is root


class Outbox:
    """A bounded FIFO of encoded messages with the overflow strategy applied on put."""

    def __init__(self, maxsize: int, strategy: str, on_drop: DropSink, hub: Optional[gevent.hub.Hub] = None) -> None:
        self.maxsize = maxsize
        self.strategy = strategy
        self.on_drop = on_drop
        self._hub = hub or gevent.get_hub()
        self._hub_root = _thread_root(self._hub)  # the main greenlet of the hub's thread
        self._queue: collections.deque[Item] = collections.deque()  # maxsize is ours to apply: strategies see "full" first
        self._arrival = gevent.event.Event()  # a message (or a wake()) for the sender waiting in take()
        self._taker_waits = False
        self._woken = False  # wake() was called: the next take() that would wait returns at once
        self._inflight: list[Item] = []
        self._redo: collections.deque[Item] = collections.deque()  # to resend before _inflight
        # Resends (and messages taken over from a store) too many for one batch: after _inflight,
        # before the queue, taken a batch at a time.
        self._ahead: collections.deque[Item] = collections.deque()
        self._held_out = 0  # len(_inflight) + len(_redo) + len(_ahead), recounted by every method that changes them
        self._handoff: collections.deque[tuple[Item, bool]] = collections.deque()
        self._wakeup = self._hub.loop.async_()
        # A pending hand-off must not keep the loop alive on its own (watcher.ref is documented
        # gevent API that types-gevent does not declare).
        self._wakeup.ref = False  # type: ignore[attr-defined]
        self._wakeup.start(self._drain_handoff)
        self._empty = gevent.event.Event()
        self._empty.set()
        #: False from a put until the sender settled everything held: send_message's one cheap
        #: check before it tries to write a message itself (a hint; idle_here() decides)
        self.drained = True
        #: The last put found the queue at least DEEP full: send_message's one cheap check before it
        #: looks whether the sender is starved (sender.help_starved)
        self.deep = False
        self._deep_at = int(maxsize * DEEP)
        self._doomed: Optional[Callable[[Item], bool]] = None  # discard() of the batch in flight, due at take()

    # -- producers ---------------------------------------------------------

    def put(self, item: Item) -> bool:
        """Queue ``item`` from any greenlet or thread; False if it was dropped.

        Raises QueueFull under the "raise" strategy when the queue is full.
        """
        current = gevent.getcurrent()
        # A greenlet the hub runs, or the thread's main greenlet (the common cases): no walk to a root.
        if current.parent is not self._hub and current is not self._hub_root and not on_thread_of(self._hub, self._hub_root):
            return self._put_from_thread(item)
        # len(self) from the count kept of what left the queue (_held_out): this runs once per message
        size = len(self._queue) + self._held_out + len(self._handoff)
        if size >= self._deep_at:
            self.deep = True
            if size >= self.maxsize and not self._room_for(item):
                return False
        elif self.deep:
            self.deep = False
        # _append(item), spelled out for the same reason
        self._queue.append(item)
        if self._taker_waits:
            self._arrival.set()
        if self.drained:
            self._empty.clear()
            self.drained = False
        return True

    def idle_here(self) -> bool:
        """True when nothing is held (queued, in flight, to resend, handed over from a thread) and
        the caller runs in the hub's thread: a message sent now would be the next one written."""
        held = self._queue or self._held_out or self._handoff  # len(self), without the call: once per message
        return not held and on_thread_of(self._hub, self._hub_root)

    def _room_for(self, item: Item) -> bool:
        """The queue is full: apply the strategy. True when ``item`` may go in (the oldest made room)."""
        if self.strategy == "raise":
            raise self._full()
        oldest = self._pop_oldest() if self.strategy == "drop_oldest" else None
        if oldest is None:
            self.on_drop(item, DROP_OVERFLOW)
            return False
        self.on_drop(oldest, DROP_OVERFLOW)
        return True

    def _append(self, item: Item) -> None:
        self._queue.append(item)
        if self._taker_waits:
            self._arrival.set()
        if self.drained:  # else _empty is clear already (every set() sets drained too)
            self._empty.clear()
            self.drained = False

    def _put_from_thread(self, item: Item) -> bool:
        # The size check is approximate across threads; the hub re-applies the
        # strategy when it moves the item, so the bound still holds.
        if len(self) >= self.maxsize:
            if self.strategy == "raise":
                raise self._full()
            if self.strategy == "drop_newest":
                self._handoff.append((item, True))  # the hub counts the drop, in order
                self._wakeup.send()
                return False
        self._handoff.append((item, False))
        self._wakeup.send()
        return True

    def _full(self) -> QueueFull:
        return QueueFull(f"send queue is full (MAX_QUEUE_SIZE={self.maxsize})")

    def _drain_handoff(self) -> None:
        # Runs in the hub as a loop callback: nothing here may block.
        handoff = self._handoff
        while handoff:
            item, must_drop = handoff.popleft()
            full = self._queued_here() >= self.maxsize  # the hand-off's rest comes later: not counted
            if must_drop or (full and self.strategy == "raise"):  # never raise in the hub
                self.on_drop(item, DROP_OVERFLOW)
            elif not full or self._room_for(item):
                self._append(item)

    # -- the sender ----------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, timeout: Optional[float]) -> list[Item]:
        """The batch to write next: messages to resend first, then the unwritten rest of
        the last batch, else up to ``max_items``/``max_bytes`` queued messages (waiting
        up to ``timeout`` for one; ``wake()`` ends the wait early, with an empty batch if nothing
        came)."""
        if self._doomed is not None:
            doomed, self._doomed = self._doomed, None
            self._inflight[:] = [item for item in self._inflight if not doomed(item)]
            self._recount()  # before any wait below: len() and flush() see what is left at once
            self._mark_if_empty()
        if self._redo:
            # To resend: ahead of the unwritten rest of the last batch, which is ahead of the rest.
            ahead = self._ahead
            ahead.extendleft(reversed(self._inflight))
            ahead.extendleft(reversed(self._redo))
            self._redo.clear()
            self._inflight = []
        if not self._inflight and self._ahead:
            self._inflight = _batch_from(self._ahead, max_items, max_bytes)
        if not self._inflight:
            if not self._queue and not self._woken:
                self._wait_for_arrival(timeout)
            self._woken = False
            self._inflight = _batch_from(self._queue, max_items, max_bytes)  # what is queued now, without waiting
        self._recount()
        return self._inflight

    def _wait_for_arrival(self, timeout: Optional[float]) -> None:
        arrival = self._arrival
        arrival.clear()
        self._taker_waits = True  # put() and wake() set the event only while someone waits on it
        try:
            arrival.wait(timeout)
        finally:
            self._taker_waits = False

    def take_now(self, max_items: int, max_bytes: int) -> list[Item]:
        """take() for a writer other than the sender, never waiting: the next queued messages, or
        nothing while the sender has a batch in flight or messages to resend."""
        if self._inflight or self._redo or self._ahead or self._doomed is not None or not self._queue:
            return []
        return self.take(max_items, max_bytes, timeout=None)  # something is queued: no wait

    def wake(self) -> None:
        """End a take() that is waiting for a message, or the next one that would wait (it
        returns what is pending, maybe nothing)."""
        self._woken = True
        if self._taker_waits:
            self._arrival.set()

    def settle(self, batch: list[Item], written: int) -> int:
        """The first ``written`` items of ``batch`` (the list take() returned) reached
        the kernel: forget them, keep the rest in flight; return ``written``."""
        if batch is self._inflight:
            del batch[:written]
            self._recount()
        self._mark_if_empty()
        return written

    def ack(self) -> int:
        """The whole in-flight batch was written; return its length."""
        return self.settle(self._inflight, len(self._inflight))

    def requeue_front(self, items: list[Item]) -> None:
        """Messages written but never acknowledged by the peer: send them again, first."""
        if items:
            self._redo.extend(items)
            self._recount()
            self._empty.clear()
            self.drained = False
            self.wake()

    def discard(self, doomed: Callable[[Item], bool]) -> list[Item]:
        """Remove every held message for which ``doomed(item)`` is true - queued, to resend - and
        return them, oldest first. The batch in flight is the sender's: a write may be under way,
        counting its items by position, so its doomed ones leave at the sender's next take(). In
        the hub, without waiting."""
        self._drain_handoff()
        removed = [item for item in self._redo if doomed(item)]
        removed += [item for item in self._ahead if doomed(item)]
        self._redo = collections.deque(item for item in self._redo if not doomed(item))
        self._ahead = collections.deque(item for item in self._ahead if not doomed(item))
        removed += self._rebuild_queue(lambda item: None if doomed(item) else item)
        self._doomed = doomed
        self._recount()
        self._mark_if_empty()
        return removed

    def replace(self, new: Callable[[Item], Optional[Item]]) -> None:
        """Swap each held message for ``new(item)`` where that is not None, in place (a message
        kept in memory during an outage, now also in the store under a number)."""
        self._drain_handoff()
        swap = lambda item: new(item) or item  # noqa: E731
        self._redo = collections.deque(map(swap, self._redo))
        self._inflight[:] = map(swap, self._inflight)
        self._ahead = collections.deque(map(swap, self._ahead))
        self._recount()
        self._rebuild_queue(swap)

    def held(self) -> list[Item]:
        """Every message held, oldest first (a snapshot)."""
        self._drain_handoff()
        return list(self._redo) + list(self._inflight) + list(self._ahead) + list(self._queue)

    def _rebuild_queue(self, keep: Callable[[Item], Optional[Item]]) -> list[Item]:
        """Pass every queued message through ``keep`` (None: removed); returns the removed."""
        removed: list[Item] = []
        queued, self._queue = self._queue, collections.deque()
        for item in queued:
            kept = keep(item)
            if kept is None:
                removed.append(item)
            else:
                self._queue.append(kept)
        return removed

    def wait_empty(self, timeout: Optional[float]) -> bool:
        """True once nothing is queued or in flight (within ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self):
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            if self._empty.is_set():
                # Items from another thread are not moved in yet: let the hub run.
                self._empty.clear()
                gevent.sleep(0)
            else:
                self._empty.wait(remaining)
        return True

    # -- shutdown --------------------------------------------------------------

    def close(self) -> list[Item]:
        """Refuse nothing more here (the client refuses first); return and forget
        everything still held, oldest first."""
        self._drain_handoff()
        remaining = list(self._redo) + list(self._inflight) + list(self._ahead)
        self._redo.clear()
        self._ahead.clear()
        self._inflight = []
        self._recount()
        while True:
            item = self._pop_oldest()
            if item is None:
                break
            remaining.append(item)
        self._empty.set()
        self.drained = True
        self._wakeup.stop()
        self._wakeup.close()
        return remaining

    def _mark_if_empty(self) -> None:
        if not len(self):  # nothing held: flush() returns, send_message may write at once
            self._empty.set()
            self.drained = True

    def _pop_oldest(self) -> Optional[Item]:
        """The oldest queued message (never one in flight or to resend), or None."""
        return self._queue.popleft() if self._queue else None

    def _recount(self) -> None:
        self._held_out = len(self._inflight) + len(self._redo) + len(self._ahead)

    def _queued_here(self) -> int:
        return len(self._queue) + len(self._inflight) + len(self._redo) + len(self._ahead)

    def __len__(self) -> int:
        return len(self._queue) + self._held_out + len(self._handoff)  # _queued_here(), from the kept count
