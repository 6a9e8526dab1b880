"""Where messages wait outside this process's memory: the interface, and the memory store.

The outbox (outbox.py) holds the queue in memory. A ``Store`` keeps messages beyond it:

- ``spill(items)`` at ``stop()``: what could not be delivered is left for the next start
  (of this process or another with the same identifier) instead of being dropped;
- ``claim(limit)`` at start and then every ``CLAIM_EVERY`` seconds: take over this
  identifier's messages that nobody holds - spilled ones, and those of a process that died -
  oldest first, to be sent before newer ones;
- ``append(items)`` (a durable store, OUTBOX_SYNC="always"): the messages are in the store
  when it returns; ``forget(items)`` once they were written (or acknowledged) or dropped.

``MemoryStore`` keeps nothing outside memory (no OUTBOX_URL/OUTBOX_PATH); ``SQLiteStore``
(sqlite_store.py) is a file shared by the processes of a host; ``PostgresStore`` (pg_store.py) a
table shared by every host. Both are ``SQLStore``s (sql_store.py) and hold messages under a
lease (lease.py). ``persistence.open_store`` picks one from the settings. Every method is called
from a greenlet of the client's hub and may make that greenlet wait; none blocks the hub.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .frames import Item
from .lease import RENEW_EVERY

__all__ = ["CLAIM_EVERY", "Spilled", "Store", "seq_of", "stored_item"]

#: Seconds between two claims: a live client renews its lease and takes over the messages of
#: a process whose lease lapsed (lease.LEASE_TIMEOUT) within this period.
CLAIM_EVERY = RENEW_EVERY


def seq_of(item: Item) -> Optional[int]:
    """The store's number for ``item``, None for a message held in memory only."""
    return item[3] if len(item) > 3 else None


def stored_item(opcode: int, payload: bytes, ack_id: str, seq: int) -> Item:
    """A message as a store hands it back: the acknowledgement id ("" for none), then its number."""
    return (opcode, payload, ack_id, seq)  # type: ignore[return-value]


class Spilled:
    """What ``spill()`` did with the messages it was given: ``kept`` of them are in the store,
    ``refused`` (of them) and ``evicted`` (older ones from the store) were dropped to stay within
    the bound; ``failed``: the store could not be written, none of them is kept - those with a
    number stay where they are, but for ``unstored`` (numbers whose rows were deleted)."""

    def __init__(self, kept: int = 0, refused: Optional[list[Item]] = None, evicted: Optional[list[Item]] = None,
                 failed: bool = False, unstored: Optional[set[int]] = None) -> None:
        self.kept = kept
        self.refused = refused or []
        self.evicted = evicted or []
        self.failed = failed
        self.unstored = unstored or set()


class Store:
    """The interface; ``MemoryStore`` keeps nothing outside memory."""

    #: A durable store: send_message() returns once the message is in it (OUTBOX_SYNC="always").
    durable = False
    #: Where the store keeps messages (None: memory only), for status() and log lines.
    path: Optional[str] = None
    #: Reads and writes that failed (each logged; the first one turns the store off).
    errors = 0
    #: Called (in the hub, never waiting) when this process's lease was found taken over: drop
    #: every stored message held in memory (another process sends them).
    on_lease_lost: Callable[[], None]
    #: Called (in a greenlet that may wait) when a store that failed answers again.
    on_recovered: Callable[[], None]

    @property
    def available(self) -> Optional[bool]:
        """False while the store cannot be written (messages wait in memory); None: no store."""
        return None

    def open(self) -> None:
        """Ready the store for this run; ConfigError naming the setting when it cannot be used."""

    def claim(self, limit: int) -> list[Item]:
        """Take over at most ``limit`` messages nobody holds, oldest first."""
        return []

    def check_lease(self) -> bool:
        """Before sending stored messages: False when this process's lease was taken over
        (``on_lease_lost`` dropped them already). Asks the store only when the lease is not fresh."""
        return True

    def release(self, items: list[Item]) -> None:
        """Taken over, but not to be sent by this process now: held by nobody again (soon)."""

    def unstored(self) -> set[int]:
        """Numbers of stored messages whose rows were deleted and are still to be put back (memory
        holds their only copy)."""
        return set()

    def take(self, seqs: list[int]) -> list[Item]:
        """Take over these messages if nobody holds them (rows committed by the app's own
        transactions), in order; those not visible (yet) are left out."""
        return []

    def append(self, items: list[Item]) -> list[Any]:
        """Durable stores: for each item, the stored item (with its number), None when the
        store's bound refused it, or the exception that kept it from being stored."""
        raise NotImplementedError("only a durable store accepts messages")

    def append_from_thread(self, items: list[Item]) -> list[Any]:
        """append() from an OS thread other than the hub's (it waits in that thread)."""
        raise NotImplementedError("only a durable store accepts messages")

    def restore(self, items: list[Item]) -> None:
        """These stored messages were forgotten once written, and are to be sent again (the
        server's TCP never acknowledged them): keep them again (soon; never waits)."""

    def forget(self, items: list[Item]) -> None:
        """These stored messages were delivered or dropped: remove them (soon; never waits)."""

    def spill(self, items: list[Item]) -> Spilled:
        """At stop: keep ``items`` (oldest first) for a later start; release everything held."""
        return Spilled(failed=True)

    def close(self) -> None:
        """Let go of the store (after spill)."""
