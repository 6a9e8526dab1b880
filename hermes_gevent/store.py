"""The store interface: what every place that keeps messages outside the queue must do.

The outbox (outbox.py) holds the queue in memory. A ``Store`` keeps messages beyond it, for a
later start of this process or of another one with the same identifier. There are three:

- ``MemoryStore`` (memory_store.py): keeps nothing (no OUTBOX_URL/OUTBOX_PATH); ``stop()`` drops
  what is left, counted;
- ``SQLiteStore`` (sqlite_store.py): a file shared by the processes of a host;
- ``PostgresStore`` (pg_store.py): a table shared by every host.

The two durable ones are ``SQLStore``s (sql_store.py) and hold messages under a lease (lease.py).
``persistence.open_store`` picks one from the settings, once per run (``start()``); the client
talks to it from persistence.py, client.py and sender.py, and nowhere else.

A run, as the store sees it::

    open()                      start(): ready the store (ConfigError: the setting cannot be used)
    claim(limit)                at once, then every CLAIM_EVERY s (the claim loop): take over
                                this identifier's messages nobody holds, oldest first
    append(items)               a durable store (OUTBOX_SYNC="always"): in the store on return
    check_lease()               before the sender writes stored messages
    forget(items)/restore(...)  delivered or dropped / to be sent again
    take(seqs)/release(items)   rows the app's own transactions committed (transaction=)
    spill(items)                stop(): keep what is left undelivered, release everything held
    close()                     after spill(); the store is not used again

Rules every store keeps:

- **Threads.** Every method is called from a greenlet of the client's hub thread, but for
  ``append_from_thread`` (an OS thread of the app's). None of them blocks the hub: a method
  that "may wait" makes its calling greenlet wait (the store's I/O runs in a thread of its own),
  and is never called from the hub itself; a method that "never waits" returns at once - the
  work it stands for is done later (by the store's own greenlet) or not at all.
- **Numbers.** A message the store holds carries its number: ``stored_item(...)``, read back with
  ``seq_of(item)``; a message without one is held in memory only. ``forget``, ``restore`` and
  ``release`` ignore items without a number.
- **Failures** (a durable store; the memory store never fails). A read or a write that fails is
  not raised to the caller - only ``open``'s ConfigError is: the store logs it once, counts it in
  ``errors``, turns itself off (``available`` False, ``durable`` False: messages wait in memory)
  and says so in what it returns (an empty claim, the exception among ``append``'s results, a
  ``Spilled`` that failed). The client then goes on in memory.
- **Leases.** A durable store holds what it claimed, appended or took under this process's
  lease; another process takes them over only once the lease lapsed. Found lapsed, the store
  calls ``on_lease_lost`` and holds nothing it held before (but ``unstored()``).
"""

from __future__ import annotations

import abc
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


class Store(abc.ABC):
    """Where messages wait outside this process's memory; see the module docstring.

    Every store implements each abstract method below, and sets the attributes (``durable``,
    ``path``, ``errors``, and the three callbacks, which persistence.py replaces for a durable
    store before ``open()``).
    """

    #: A durable store: send_message() returns once the message is in it (OUTBOX_SYNC="always"),
    #: through ``append``. False for a store that keeps nothing, and while a durable one is off.
    durable: bool
    #: Where the store keeps messages, for status() and log lines; None: memory only (the client
    #: then never calls ``forget``, ``restore`` nor ``claim``).
    path: Optional[str]
    #: Reads and writes that failed (each counted; the first one is logged and turns the store off).
    errors: int
    #: Called by the store (in the hub, never waiting) when it found this process's lease taken
    #: over: the client drops every stored message it holds in memory (another process sends
    #: them), but those in ``unstored()``.
    on_lease_lost: Callable[[], None]
    #: Called by the store (in a greenlet that may wait) when a store that failed answers again:
    #: the client appends what it kept in memory meanwhile.
    on_recovered: Callable[[], None]
    #: Called by the store for every failed read or write (metrics), from the thread that met it.
    on_error: Callable[[], None]

    @property
    @abc.abstractmethod
    def available(self) -> Optional[bool]:
        """For status(): True while the store can be written; False while it cannot (it failed:
        messages wait in memory); None: there is no store. Never waits."""

    @abc.abstractmethod
    def open(self) -> None:
        """Ready the store for this run, before any other method: called once, by ``start()``, in
        a greenlet that may wait (never in the hub: start() then spawns one). Raises ConfigError
        naming the setting when the store cannot be used (the client does not start); a store
        that cannot be reached now but may be later opens turned off (``available`` False).
        After it, this process holds a lease (a durable store)."""

    @abc.abstractmethod
    def claim(self, limit: int) -> list[Item]:
        """Take over at most ``limit`` messages of this identifier that nobody holds - spilled by
        an earlier run, or held by a process whose lease lapsed (it died, or froze) - oldest
        first. Called by the claim loop at start (``limit``: MAX_QUEUE_SIZE, before the sender
        writes anything) and then every CLAIM_EVERY seconds (``limit``: the room left in the
        queue); may wait. Renews the lease. Returns stored items (each with its number), now
        held by this process; [] when there are none, when the store keeps nothing, or when it
        failed (a store that ``reconnects`` tries the database again first)."""

    @abc.abstractmethod
    def check_lease(self) -> bool:
        """Before the sender writes messages it holds: False when this process's lease was found
        taken over (``on_lease_lost`` dropped what it covered already: the batch is read again).
        Called by the sender's greenlet; returns at once while the lease is fresh, else asks the
        store (may wait). True when there is no lease to lose."""

    @abc.abstractmethod
    def release(self, items: list[Item]) -> None:
        """``items`` were taken (``take``) but have no room in the queue: held by nobody again,
        for a later claim (this one or another process's). Called from the greenlet that takes
        committed rows; may wait. Those it cannot release stay under this lease (spilled at stop)."""

    @abc.abstractmethod
    def unstored(self) -> set[int]:
        """Numbers of stored messages whose rows were deleted (forgotten once written) and are
        still to be put back: memory holds their only copy, so a lost lease must not drop them.
        Called from ``on_lease_lost`` (in the hub); never waits."""

    @abc.abstractmethod
    def take(self, seqs: list[int]) -> list[Item]:
        """transaction=: take over the messages numbered ``seqs`` - rows the app's own
        transactions committed - if they are visible and nobody holds them, in order; those not
        visible (yet), or taken by another client, are left out. Called from the greenlet that
        takes committed rows, again until all are found or a deadline passes; may wait. [] for a
        store the app cannot write to in its transactions."""

    @abc.abstractmethod
    def append(self, items: list[Item]) -> list[Any]:
        """Store ``items`` (OUTBOX_SYNC="always"), called only while ``durable`` is True, from a
        greenlet of the hub's thread (never the hub) that waits until they are committed - or a
        bounded time. Returns, for each item in order: the stored item (with its number: held by
        this process from now on), None when the store's bound (MAX_QUEUE_SIZE for the
        identifier) refused it, or the exception that kept it from being stored (the caller keeps
        it in memory). A store that is not durable raises NotImplementedError."""

    @abc.abstractmethod
    def append_from_thread(self, items: list[Item]) -> list[Any]:
        """``append()`` from an OS thread other than the hub's (an app's thread sends): the same
        results, committed in that thread, which waits. Same conditions as ``append``."""

    @abc.abstractmethod
    def restore(self, items: list[Item]) -> None:
        """These stored messages were forgotten once written, and are to be sent again (the
        server's TCP never acknowledged them): keep them again. Called in the hub's thread;
        never waits (the store puts them back later, and reports them in ``unstored()`` until
        then; a ``forget`` of them not done yet is cancelled)."""

    @abc.abstractmethod
    def forget(self, items: list[Item]) -> None:
        """These stored messages were delivered (written, or acknowledged) or dropped: remove them,
        so no later start sends them. Called in the hub's thread (the sender, the reader, the
        queue's drops); never waits: done with the next write, kept through failures until the
        store can be written again."""

    @abc.abstractmethod
    def spill(self, items: list[Item]) -> Spilled:
        """At ``stop()``: keep ``items`` - everything left undelivered, unacknowledged first, in
        order - for a later start, and release everything this process holds (held by nobody:
        the next claim of any process takes them). Called once, after the loops ended, from the
        greenlet that stops the client; may wait (a bounded time for the commits under way).
        Returns what it did (``Spilled``): the client counts ``kept`` as spilled, ``refused`` and
        ``evicted`` as dropped (overflow), and, when it ``failed``, every item without a number
        (or in ``unstored``) as dropped. A store that keeps nothing fails: none is kept."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the store, after ``spill`` (its thread, its connection). Called once; may
        wait. No other method is called after it."""
