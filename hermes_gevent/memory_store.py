"""The memory store: nothing outlives the process (no OUTBOX_URL, no OUTBOX_PATH)."""

from __future__ import annotations

from .store import Store

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Nothing outlives the process: the queue is all there is, and ``stop()`` drops what is left."""
