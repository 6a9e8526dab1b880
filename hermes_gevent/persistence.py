"""The client and its store (store.py): open it, take over messages, accept durably, spill.

    start()         open the store for the run (ConfigError naming OUTBOX_URL/OUTBOX_PATH if it cannot be)
    claim loop      at once, then every store.CLAIM_EVERY s: renew the lease, take over this
                    identifier's messages nobody holds (spilled, or of a process that died),
                    oldest first, ahead of the queue; the sender waits for the first claim
    send_message()  OUTBOX_SYNC="always": the message is committed before it is queued
    delivered       written (or acknowledged, with acknowledgements on) or dropped: forgotten
    stop()          what is left is spilled instead of dropped (messages_spilled)
    lease lost      the stored messages held in memory are dropped: another process sends them
    recovered       the database answers again: what waited in memory is written into it
    transaction=    the row goes in with the app's transaction; once committed, it is taken and queued
"""

from __future__ import annotations

import collections
import functools
import time
from typing import Any, Callable, Optional

import gevent

from .errors import ConfigError, QueueFull
from .frames import Item
from .outbox import DROP_OVERFLOW, DROP_STOPPED, DROP_UNACKED, in_hub, on_thread_of
from .pg_store import PostgresStore, ensure_schema
from .run import App, Greenlet, Run
from .settings import Settings
from .sqlite_store import SQLiteStore
from .memory_store import MemoryStore
from .store import CLAIM_EVERY, Store, seq_of
from . import transactional

__all__ = ["claim_loop", "Commits", "leave_unsent", "open_store", "send_durably", "send_in_transaction", "spill_at_stop",
           "store_identifier", "store_status"]

#: After a Connection's commit event (it fires before the COMMIT), how long the client looks for
#: the rows (at most CONNECT_TIMEOUT): the first look at once, then every 1, 2, 4... ms, up to this.
_LOOK_EVERY_MAX = 0.05
#: (conninfo, table) whose tables this process made sure of, for clients not started yet.
_schemas_ready: set[tuple[Any, str]] = set()


def store_status(settings: Settings) -> dict[str, Any]:
    """Where the store is, as status() shows it: the path, or scheme://host:port/database (never the
    password); ``outbox_errors`` of the stores closed already is added by the caller."""
    location = settings.outbox_location()
    sqlite = location is not None and location.kind == "sqlite"
    return {
        "outbox_path": location.path if location is not None and sqlite else None,
        "outbox_url": location.shown if location is not None and (settings.OUTBOX_URL or not sqlite) else None,
        "outbox_sync": settings.OUTBOX_SYNC if location is not None else None,
    }


def store_identifier(app: App) -> str:
    return str(app.identifier() or type(app).__name__)


def open_store(run: Run) -> Store:
    """The store for ``run``: PostgreSQL or SQLite as OUTBOX_URL/OUTBOX_PATH say, else memory only."""
    s = run.settings
    location = s.outbox_location()
    if location is None:
        return MemoryStore()
    identifier = store_identifier(run.app)
    store: SQLiteStore | PostgresStore
    if location.kind == "sqlite":
        store = SQLiteStore(
            str(location.path), identifier, durable=s.OUTBOX_SYNC == "always",
            max_size=s.MAX_QUEUE_SIZE, strategy=s.QUEUE_OVERFLOW_STRATEGY, log=run.log,
        )
    else:
        run.redactor.learn(location.secrets)  # a driver's error may quote the password: never logged
        store = PostgresStore(
            location, identifier, durable=s.OUTBOX_SYNC == "always", max_size=s.MAX_QUEUE_SIZE,
            strategy=s.QUEUE_OVERFLOW_STRATEGY, timeout=s.CONNECT_TIMEOUT, log=run.log,
        )
    store.on_lease_lost = functools.partial(_drop_taken_over, run, store)
    store.on_recovered = functools.partial(_write_back, run, store)
    if run.metrics is not None:
        store.on_error = run.metrics.outbox_error
    store.open()
    return store


def _drop_taken_over(run: Run, store: Store) -> None:
    """This process's lease was taken over: every stored message it holds is another's to send -
    but those whose rows it deleted and has yet to put back (memory holds their only copy: they
    go back in under the new lease)."""
    outbox = run.outbox
    if run.store is not store or outbox is None:
        return
    keep = store.unstored()

    def theirs(item: Item) -> bool:
        seq = seq_of(item)
        return seq is not None and seq not in keep

    dropped = outbox.discard(theirs)
    if run.window is not None:
        dropped += run.window.discard(theirs)  # never resent from here either
    run.counters.messages_handed_over += len(dropped)
    if dropped:
        run.log.warning(f"{len(dropped)} message(s) held here are not sent: another process took them over")


def _write_back(run: Run, store: Store) -> None:
    """The store answers again: what was accepted meanwhile (memory only) goes into it, so a
    crash from now on loses nothing (OUTBOX_SYNC="always"; with "stop" it is spilled at stop)."""
    outbox = run.outbox
    if run.store is not store or outbox is None or not store.durable:
        return
    waiting = [item for item in outbox.held() if seq_of(item) is None]
    if not waiting:
        return
    results = store.append(waiting)
    stored = {id(item): result for item, result in zip(waiting, results) if isinstance(result, tuple)}
    still = {id(item) for item in outbox.held()}
    store.forget([result for key, result in stored.items() if key not in still])  # sent meanwhile
    outbox.replace(lambda item: stored.get(id(item)))
    run.log.info(f"{len(stored)} message(s) kept in memory while {store.path} was down are in it again")


def claim_loop(run: Run) -> None:
    store = run.store
    limit = run.settings.MAX_QUEUE_SIZE  # the first claim: all of them, ahead of anything sent since start()
    try:
        if store.path is None:
            return
        while run.active:
            items = store.claim(limit)
            if items and run.active:
                run.outbox_or_create().requeue_front(items)
                run.counters.messages_reloaded += len(items)
                run.log.info(f"took over {len(items)} message(s) kept in {store.path}; they go out first")
            run.store_ready.set()
            gevent.sleep(CLAIM_EVERY)
            # Later claims (a process that died) take what the queue has room for.
            limit = run.settings.MAX_QUEUE_SIZE - len(run.outbox_or_create())
    finally:
        run.store_ready.set()  # the sender never waits on a claim that will not come


def send_durably(run: Run, item: Item) -> bool:
    """OUTBOX_SYNC="always": queue ``item`` once it is committed to the store."""
    outbox = run.outbox_or_create()
    store = run.store
    s = run.settings
    if in_hub():
        gevent.spawn(_send_durably_later, run, item)  # the hub never waits on a commit
        return True
    if s.QUEUE_OVERFLOW_STRATEGY != "drop_oldest" and len(outbox) >= s.MAX_QUEUE_SIZE:
        return outbox.put(item)  # full: refused (or QueueFull) as without a store, no disk touched
    if on_thread_of(run.hub):
        result = store.append([item])[0]
    else:
        result = store.append_from_thread([item])[0]
    if result is None:  # the store's bound, over every process of this identifier
        if s.QUEUE_OVERFLOW_STRATEGY == "raise":
            raise QueueFull(f"outbox is full (MAX_QUEUE_SIZE={s.MAX_QUEUE_SIZE} for this identifier)")
        run.drops.count(item, DROP_OVERFLOW)
        return False
    if run.outbox is not outbox:
        # stop() closed the queue meanwhile, after the commit under way (it waits for that one):
        # a committed message is in the store, left for the next start like the queue; one that
        # was not committed is refused. Never queued where no run will send it.
        if isinstance(result, BaseException):
            run.drops.count(item, DROP_STOPPED)
            return False
        run.counters.messages_spilled += 1
        return True
    if isinstance(result, BaseException):
        return outbox.put(item)  # the store failed (logged once, counted): memory only
    try:
        return outbox.put(result)
    except QueueFull:
        store.forget([result])
        raise


def _send_durably_later(run: Run, item: Item) -> None:
    try:
        if run.store.durable:
            send_durably(run, item)
        elif run.lifecycle.ended or not run.active:
            run.drops.count(item, DROP_STOPPED)  # stop() ran before this greenlet did
        else:
            run.outbox_or_create().put(item)  # the store failed meanwhile: memory only
    except QueueFull:
        run.drops.count(item, DROP_OVERFLOW)  # nobody to raise to: counted as the other strategies are


def leave_unsent(run: Run) -> int:
    """What stop() leaves undelivered - unacknowledged messages (oldest), then the queue - is
    kept in the store, or counted as dropped; returns how many were neither delivered nor kept."""
    unacked = run.window.drain() if run.window is not None else []
    run.acks_changed.set()  # a flush() waiting on them returns (False: they were not acknowledged)
    outbox = run.outbox
    remaining = outbox.close() if outbox is not None else []
    run.outbox = None
    return spill_at_stop(run, unacked, remaining)


def spill_at_stop(run: Run, unacked: list[Item], queued: list[Item]) -> int:
    """Keep what stop() leaves undelivered in the store; count the rest as dropped.
    Returns how many were neither delivered nor kept."""
    store = run.store
    counters = run.counters
    spilled = store.spill(unacked + queued)
    store.close()
    counters.outbox_errors += store.errors
    run.store = MemoryStore()
    if spilled.failed:
        # Messages already in the store stay there (under a lease that will be found dead): kept;
        # but not those whose rows were deleted and never put back.
        def lost(item: Item) -> bool:
            seq = seq_of(item)
            return seq is None or seq in spilled.unstored

        lost_unacked = [item for item in unacked if lost(item)]
        lost_queued = [item for item in queued if lost(item)]
        for item in lost_unacked:
            run.drops.count(item, DROP_UNACKED, log=False)  # stop() logs the total once
        for item in lost_queued:
            run.drops.count(item, DROP_STOPPED, log=False)
        counters.messages_spilled += len(unacked) + len(queued) - len(lost_unacked) - len(lost_queued)
        return len(lost_unacked) + len(lost_queued)
    counters.messages_spilled += spilled.kept
    for item in spilled.evicted + spilled.refused:
        run.drops.count(item, DROP_OVERFLOW, log=False)
    if spilled.kept:
        run.log.info(f"{spilled.kept} undelivered message(s) kept in {store.path} for the next start")
    return len(spilled.refused)


class Commits:
    """Rows of the app's transactions that committed, taken and queued in commit order by one
    greenlet into the run that is current then (``current_run``)."""

    def __init__(self, current_run: Callable[[], Run]) -> None:
        self.current_run = current_run
        self.pending: collections.deque[tuple[list[int], bool]] = collections.deque()
        self.taker: Optional[Greenlet] = None

    def abandon(self) -> None:
        """In a forked child: the parent's commits are the parent's to take (a taker copied from
        the parent finds nothing left)."""
        self.pending.clear()

    def committed(self, hub: Any, seqs: list[int], confirmed: bool) -> None:
        """A transaction that wrote rows committed (or is committing): take them, in commit order."""
        if not on_thread_of(hub):
            hub.loop.run_callback_threadsafe(self.committed, hub, seqs, confirmed)
            return
        self.pending.append((seqs, confirmed))
        if self.taker is None or self.taker.dead:
            self.taker = gevent.spawn(self._take)

    def _take(self) -> None:
        commits = self.pending
        while commits:
            seqs, confirmed = commits[0]
            run = self.current_run()
            store = run.store
            missing = seqs
            deadline = time.monotonic() + run.settings.CONNECT_TIMEOUT
            pause = 0.001
            looks = 0
            while missing and run.lifecycle.running and isinstance(store, PostgresStore) and run.store is store:
                items = store.take(missing)
                looks += 1
                if items:
                    outbox = self.current_run().outbox_or_create()  # a new run's, if one began meanwhile
                    for i, item in enumerate(items):
                        try:
                            outbox.put(item)
                        except QueueFull:  # "raise" and a full queue: nobody to raise to; a later claim takes them
                            store.release(items[i:])
                            break
                    taken = {seq_of(item) for item in items}
                    missing = [seq for seq in missing if seq not in taken]
                # Not visible: the COMMIT is still under way, or failed; or another client took them.
                if not missing or (confirmed and looks >= 2) or time.monotonic() + pause > deadline:
                    break
                gevent.sleep(pause)
                pause = min(pause * 2, _LOOK_EVERY_MAX)
            commits.popleft()


def send_in_transaction(run: Run, commits: Commits, item: Item, transaction: Any) -> bool:
    """send_message(msg, transaction=T): the row goes in through T; it is sent once T commits."""
    location = run.settings.outbox_location()
    if location is None or location.kind != "postgres":
        raise ConfigError("transaction= needs OUTBOX_URL to name the PostgreSQL database the transaction is on.")
    key = (location.conninfo, location.table)
    if not isinstance(run.store, PostgresStore) and key not in _schemas_ready:
        # Never started (its start() creates the tables): an INSERT into a missing table would
        # abort the app's transaction.
        if on_thread_of(run.hub):
            gevent.get_hub().threadpool.apply(ensure_schema, (location, run.settings.CONNECT_TIMEOUT))
        else:
            ensure_schema(location, run.settings.CONNECT_TIMEOUT)  # an OS thread of the app's: it may wait
        _schemas_ready.add(key)
    transactional.enlist(transaction, location, store_identifier(run.app), item,
                         functools.partial(commits.committed, run.hub))
    return True
