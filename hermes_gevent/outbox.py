"""The outgoing queue: bounded, with overflow strategies, safe from OS threads.

Messages live in a ``gevent.queue.Queue`` owned by the hub of the thread that
made the outbox. Greenlets of that hub put into it directly. Any other OS
thread (a thread pool in an unpatched app) appends to a plain deque - atomic
in CPython - and wakes the hub through a loop ``async`` watcher, whose
``send()`` is the one gevent call documented as safe from another thread; the
hub then moves those messages into the queue in arrival order.

The sender takes a batch, writes it, then ``ack()``s it. A batch whose write
failed stays in flight and is taken again first, so a failed write neither
loses nor reorders messages.
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Optional

import gevent
import gevent.event
import gevent.hub
from gevent._hub_local import get_hub_if_exists
from gevent.queue import Empty, Queue

from .errors import QueueFull

#: (opcode, payload) - the payload already encoded by the caller.
Item = tuple[int, bytes]
DropSink = Callable[[Item, str], None]

DROP_OVERFLOW = "overflow"
DROP_STOPPED = "stopped"


class Outbox:
    """A bounded FIFO of encoded messages with the overflow strategy applied on put."""

    def __init__(self, maxsize: int, strategy: str, on_drop: DropSink, hub: Optional[gevent.hub.Hub] = None) -> None:
        self.maxsize = maxsize
        self.strategy = strategy
        self._on_drop = on_drop
        self._hub = hub or gevent.get_hub()
        self._queue: Queue = Queue()  # unbounded: we enforce maxsize so strategies see "full" first
        self._inflight: list[Item] = []
        self._handoff: collections.deque[tuple[Item, bool]] = collections.deque()
        self._wakeup = self._hub.loop.async_()
        self._wakeup.ref = False  # a pending hand-off must not keep the loop alive on its own
        self._wakeup.start(self._drain_handoff)
        self._empty = gevent.event.Event()
        self._empty.set()
        self.closed = False

    # -- producers ---------------------------------------------------------

    def put(self, item: Item) -> bool:
        """Queue ``item`` from any greenlet or thread; False if it was dropped.

        Raises QueueFull under the "raise" strategy when the queue is full.
        """
        if get_hub_if_exists() is not self._hub:
            return self._put_from_thread(item)
        return self._put_local(item)

    def _put_local(self, item: Item, in_drain: bool = False) -> bool:
        size = self._queued_here() if in_drain else len(self)
        if size >= self.maxsize:
            if self.strategy == "raise":
                raise QueueFull(f"send queue is full (MAX_QUEUE_SIZE={self.maxsize})")
            if self.strategy == "drop_newest" or not self._queue.qsize():
                self._on_drop(item, DROP_OVERFLOW)
                return False
            self._on_drop(self._queue.get_nowait(), DROP_OVERFLOW)
        self._queue.put_nowait(item)
        self._empty.clear()
        return True

    def _put_from_thread(self, item: Item) -> bool:
        # The size check is approximate across threads; the hub re-applies the
        # strategy when it moves the item, so the bound still holds.
        if len(self) >= self.maxsize:
            if self.strategy == "raise":
                raise QueueFull(f"send queue is full (MAX_QUEUE_SIZE={self.maxsize})")
            if self.strategy == "drop_newest":
                self._handoff.append((item, True))  # the hub counts the drop, in order
                self._wakeup.send()
                return False
        self._handoff.append((item, False))
        self._wakeup.send()
        return True

    def _drain_handoff(self) -> None:
        # Runs in the hub as a loop callback: nothing here may block.
        handoff = self._handoff
        while handoff:
            item, must_drop = handoff.popleft()
            if must_drop or (self.strategy == "raise" and self._queued_here() >= self.maxsize):
                self._on_drop(item, DROP_OVERFLOW)
                continue
            self._put_local(item, in_drain=True)

    # -- the sender ----------------------------------------------------------

    def take(self, max_items: int, max_bytes: int, timeout: Optional[float]) -> list[Item]:
        """The batch to write next: the unacknowledged one if any, else up to
        ``max_items``/``max_bytes`` queued items (waiting up to ``timeout`` for one)."""
        if self._inflight:
            return self._inflight
        try:
            first = self._queue.get(timeout=timeout)
        except Empty:
            return []
        batch = [first]
        size = len(first[1])
        queue = self._queue
        while len(batch) < max_items and size < max_bytes and queue.qsize():
            item = queue.get_nowait()
            batch.append(item)
            size += len(item[1])
        self._inflight = batch
        return batch

    def ack(self) -> int:
        """The in-flight batch was written: forget it; return its length."""
        count = len(self._inflight)
        self._inflight = []
        if not self._queue.qsize() and not self._handoff:
            self._empty.set()
        return count

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
        self.closed = True
        self._drain_handoff()
        remaining = list(self._inflight)
        self._inflight = []
        while self._queue.qsize():
            remaining.append(self._queue.get_nowait())
        self._empty.set()
        self._wakeup.stop()
        self._wakeup.close()
        return remaining

    def _queued_here(self) -> int:
        return self._queue.qsize() + len(self._inflight)

    def __len__(self) -> int:
        return self._queue.qsize() + len(self._inflight) + len(self._handoff)
