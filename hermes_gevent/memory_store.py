"""The memory store: nothing outlives the process (no OUTBOX_URL, no OUTBOX_PATH).

The queue is all there is: nothing to claim at start, no lease, nothing to forget, and ``stop()``
drops what is left undelivered - ``spill`` fails, so the client counts each message as dropped
("stopped", or "unacked" for those the server never acknowledged). It is never durable:
OUTBOX_SYNC="always" without a store queues in memory, and ``append`` is never called.
"""

from __future__ import annotations

from typing import Any, Optional

from .frames import Item
from .store import Spilled, Store

__all__ = ["MemoryStore"]


def _nothing() -> None:
    pass


class MemoryStore(Store):
    """Nothing outlives the process: the queue is all there is, and ``stop()`` drops what is left."""

    def __init__(self) -> None:
        self.durable = False
        self.path = None
        self.errors = 0
        # Never called: a memory store has no lease to lose, and never fails.
        self.on_lease_lost = _nothing
        self.on_recovered = _nothing
        self.on_error = _nothing

    @property
    def available(self) -> Optional[bool]:
        return None  # no store

    def open(self) -> None:
        pass  # nothing to ready, nothing that could be misconfigured

    def claim(self, limit: int) -> list[Item]:
        return []  # nothing was kept

    def check_lease(self) -> bool:
        return True  # no lease to lose

    def release(self, items: list[Item]) -> None:
        pass  # never took anything

    def unstored(self) -> set[int]:
        return set()

    def take(self, seqs: list[int]) -> list[Item]:
        return []  # the app cannot write to memory in its transactions

    def append(self, items: list[Item]) -> list[Any]:
        raise NotImplementedError("only a durable store accepts messages")

    def append_from_thread(self, items: list[Item]) -> list[Any]:
        raise NotImplementedError("only a durable store accepts messages")

    def restore(self, items: list[Item]) -> None:
        pass  # nothing was forgotten

    def forget(self, items: list[Item]) -> None:
        pass  # nothing to remove

    def spill(self, items: list[Item]) -> Spilled:
        return Spilled(failed=True)  # none kept: the client counts them as dropped

    def close(self) -> None:
        pass
