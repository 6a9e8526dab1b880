"""The gevent side of a store kept in a database (SQLite: sqlite_store.py, PostgreSQL: pg_store.py).

A ``Database`` (sql_database.py) holds the SQL of one store: a handful of transactions, each
run whole in the store's own thread. ``SQLStore`` is what the client talks to, in its hub:

- every call into the database runs in one thread of its own (``DatabaseThread``, sql_database.py):
  the hub never waits on a disk or a database server, and one connection serves the calls in order;
- ``append`` joins the commit being prepared (a group commit: while one transaction runs, the
  next one fills) and waits for it - at most ``wait_limit`` seconds, after which its caller keeps
  the message in memory (a database that hangs never holds a request longer than that);
- ``forget`` and ``restore`` are batched into the next transaction;
- the lease (lease.py): every claim and commit renews it; ``check_lease()`` asks the database
  when it is no longer fresh; a lease found gone means this process was taken over while it could
  not renew: ``on_lease_lost`` drops what it held (another process sends it), and a new lease is
  taken for what comes next;
- a failure is logged once and counted; the store turns itself off (memory only) - until the
  next start (SQLite), or until the database answers again (``reconnects``: PostgreSQL), when
  ``on_recovered`` writes what was kept in memory meanwhile back into it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import gevent
import gevent.event

from .frames import Item
from .lease import Lease
from .logs import ClientLog
from .sql_database import Database, DatabaseThread, LeaseLost, StoreClosed
from .store import Spilled, Store, seq_of

__all__ = ["Database", "LeaseLost", "SQLStore", "StoreClosed"]


class _Commit:
    """One group commit being filled: the messages, and the event their callers wait on."""

    __slots__ = ("items", "done", "results", "error", "abandoned")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.done = gevent.event.Event()
        self.results: list[Optional[Item]] = []
        self.error: Optional[BaseException] = None
        self.abandoned: list[tuple[int, int]] = []  # (first, count) whose callers stopped waiting


class SQLStore(Store):
    """A store whose messages live in a database; see the module docstring. Each database's
    store (SQLiteStore, PostgresStore) adds ``take`` and ``release`` (transaction= rows)."""

    #: True: after a failure, every claim tries the database again (PostgreSQL); False: the store
    #: stays off until the next start (SQLite: a full disk does not empty itself).
    reconnects = False

    def __init__(self, db: Database, *, durable: bool, log: ClientLog, where: str,
                 wait_limit: Optional[float] = None) -> None:
        self.path = where
        self.durable = durable
        self._durable_wanted = durable
        self._log = log
        self._db = db
        self._wait_limit = wait_limit
        self._thread = DatabaseThread()
        self._next = _Commit()
        self._forgets: list[int] = []
        self._restores: list[Item] = []  # forgotten, then requeued: to put back
        self._work = gevent.event.Event()
        self._committer: Optional[gevent.Greenlet[..., Any]] = None
        self._closing = False
        self.lease = Lease()
        self.errors = 0
        self.failed = False
        #: Times this process found its lease taken over (it was frozen, or cut off, too long).
        self.leases_lost = 0
        #: Called (in the hub, without waiting) when the lease was found gone: drop what it covered.
        self.on_lease_lost: Callable[[], None] = lambda: None
        self._abandoned = False  # the lease was given up while the database could not be asked
        #: Called (in a greenlet that may wait) when a failed store works again.
        self.on_recovered: Callable[[], None] = lambda: None
        #: Called for every failed read or write (metrics), from the thread that met it.
        self.on_error: Callable[[], None] = lambda: None
        #: Group commits that carried messages, and how many they carried.
        self.commits = 0
        self.committed = 0

    # -- the run --------------------------------------------------------------------------

    def open(self) -> None:
        self._thread.start()
        began = time.monotonic()
        warnings: list[str] = []
        try:
            warnings = self._run(self._db.open)
        except BaseException as exc:
            if not (self.reconnects and isinstance(exc, self._db.errors)):
                self._thread.stop()
                raise
            self._failure("could not connect", exc)  # a server that is down: every claim tries again
        else:
            self.lease = self.lease.renewed(began)
        for line in warnings:
            self._log.warning(line)
        self._committer = gevent.spawn(self._commit_loop)
        self._committer.name = f"hermes:{self._log.name}:outbox"

    @property
    def available(self) -> Optional[bool]:
        return not self.failed

    def claim(self, limit: int) -> list[Item]:
        if not self._thread.running:
            return []
        if self.failed:
            if not self.reconnects or not self._reconnect():
                return []
        forgets, self._forgets = self._forgets, []
        began = time.monotonic()
        items: list[Item]
        try:
            items, dead = self._run(self._db.claim, limit, forgets)
        except LeaseLost as lost:
            self._lease_lost(lost.owner)
            return []
        except self._db.errors as exc:
            self._forgets[:0] = forgets  # not deleted: tried again
            self._failure("could not read", exc)
            return []
        self.lease = self.lease.renewed(began)
        if dead:
            self._log.info(f"outbox {self.path}: {dead} process(es) with this identifier are gone (exited, or "
                           "their lease lapsed); their messages are taken over")
        return items

    def check_lease(self) -> bool:
        """True when what this process holds may be sent: its lease is fresh, or the database
        renewed it now. False: it was taken over (``on_lease_lost`` has dropped what it covered).

        A database that cannot be asked: while the lease has not lapsed by this process's clock,
        nobody can have taken it over, and what it holds goes out. Past that, another host may
        hold it now: this process gives the lease up - drops the stored messages it holds (they
        stay in the database, and are taken over, by it too, once the lease lapses there) - rather
        than send them a second time."""
        began = time.monotonic()
        if self.lease.fresh(began) or not self._thread.running:
            return True
        if not self.failed:
            try:
                self._run(self._db.renew)
            except LeaseLost as lost:
                self._lease_lost(lost.owner)
                return False
            except self._db.errors as exc:
                self._failure("could not renew the lease", exc)
            else:
                self.lease = self.lease.renewed(began)
                return True
        if not self.lease.lapsed(began) or self._abandoned:
            return True
        self._abandoned = True
        self.leases_lost += 1
        self._log.warning(f"outbox {self.path}: this process's lease could not be renewed for {self.lease.timeout:g} s "
                          "(the database does not answer); it gives the lease up: the messages it held are sent by "
                          "whichever process takes them over once the database answers")
        self.on_lease_lost()
        self._run(self._db.abandon)  # no I/O: a new token, registered when the database answers
        return False

    def append(self, items: list[Item]) -> list[Any]:
        commit = self._next
        first = len(commit.items)
        commit.items.extend(items)
        self._work.set()
        if not commit.done.wait(self._wait_limit):
            commit.abandoned.append((first, len(items)))
            error = TimeoutError(f"the outbox did not answer within {self._wait_limit:g} s")
            self._failure("did not answer in time", error)
            return [error] * len(items)
        if commit.error is not None:
            return [commit.error] * len(items)
        return commit.results[first : first + len(items)]

    def append_from_thread(self, items: list[Item]) -> list[Any]:
        """append() from another OS thread: a connection of its own, committed in that thread."""
        own = None
        try:
            own = self._db.in_this_thread()
            return own.commit(items, [], [])
        except LeaseLost as exc:
            return [exc] * len(items)  # kept in memory by the caller; the hub's next claim takes a new lease
        except self._db.errors as exc:
            self._failure("could not write", exc)  # logged once and counted, as from the hub's thread
            return [exc] * len(items)
        finally:
            if own is not None:
                own.close()

    def restore(self, items: list[Item]) -> None:
        stored = [item for item in items if seq_of(item) is not None]
        if stored:
            seqs = {seq_of(item) for item in stored}
            self._forgets = [seq for seq in self._forgets if seq not in seqs]  # not deleted yet: keep them
            # Their rows are gone: until a commit puts them back (kept across failures and lost
            # leases), memory holds the only copy.
            self._restores.extend(stored)
            if not self.failed:
                self._work.set()

    def unstored(self) -> set[int]:
        """Numbers of messages whose rows were deleted and are still to be put back."""
        return {seq for seq in map(seq_of, self._restores) if seq is not None}

    def forget(self, items: list[Item]) -> None:
        seqs = [seq for seq in map(seq_of, items) if seq is not None]
        if seqs:
            # Kept after a failure too: deleted once the database can be written again (else a
            # delivered message would stay and be sent again by the next start).
            self._forgets.extend(seqs)
            if not self.failed:
                self._work.set()

    def spill(self, items: list[Item]) -> Spilled:
        if not self._thread.running:
            return Spilled(failed=True)
        self._finish_commits()
        if self.failed and self.reconnects and not self._reconnect(recover=False):
            return Spilled(failed=True, unstored=self.unstored())  # still down
        forgets, self._forgets = self._forgets, []
        restores, self._restores = self._restores, []
        try:
            kept, refused, evicted, gone = self._run(self._db.spill, items, forgets, restores)
        except self._db.errors as exc:
            self._failure("could not keep the undelivered messages", exc)
            return Spilled(failed=True, unstored={seq for seq in map(seq_of, restores) if seq is not None})
        if gone:
            self._log.warning(f"outbox {self.path}: {gone} message(s) held here were taken over by another process "
                              "while this one could not renew its lease; they are that process's to send now")
        if refused or evicted:
            self._log.warning(f"outbox {self.path} is full (MAX_QUEUE_SIZE for this identifier): "
                              f"{len(refused) + len(evicted)} message(s) dropped")
        return Spilled(kept, refused, evicted)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.kill(block=False)
            self._committer = None
        self._thread.stop(last=self._db.close)

    def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)`` in the store's thread (``DatabaseThread.run``): this greenlet waits."""
        return self._thread.run(work, *args)

    # -- the lease and failures -------------------------------------------------------------

    def _lease_lost(self, lost: Any) -> None:
        if lost != self._db.owner:
            return  # found gone by another call, already replaced: what it covered was dropped then
        self.leases_lost += 1
        self._log.warning(f"outbox {self.path}: this process's lease was taken over (it could not renew it for "
                          f"{self.lease.timeout:g} s); the messages it held are another process's to send now")
        self.on_lease_lost()  # before anything else runs: what the lost lease covered is dropped
        self.lease = self.lease.forgotten()
        began = time.monotonic()
        try:
            self._run(self._db.new_lease, lost)
        except self._db.errors as exc:
            self._failure("could not take a new lease", exc)
            return
        self.lease = self.lease.renewed(began)

    def _reconnect(self, recover: bool = True) -> bool:
        began = time.monotonic()
        lost: Optional[LeaseLost] = None
        try:
            self._run(self._db.reconnect)
        except LeaseLost as exc:
            lost = exc
        except self._db.errors:
            return False  # still down: logged once, when it went
        self.failed = False
        self._abandoned = False
        self.durable = self._durable_wanted
        if lost is not None:
            self._lease_lost(lost.owner)  # drops what the old lease covered, takes a new one (which may fail)
            if self.failed:
                return False
        else:
            self.lease = self.lease.renewed(began)
        self._log.warning(f"outbox {self.path} answers again; messages are kept in it again")
        self._work.set()  # forgets and restores kept meanwhile
        if recover:
            self.on_recovered()
        return True

    def _failure(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self.on_error()
        if not self.failed:
            self.failed = True
            self.durable = False
            until = "until it answers again" if self.reconnects else "from now on"
            self._log.error(f"outbox {self.path}: {what} ({exc}); messages are kept in memory only {until}")

    # -- the committer ----------------------------------------------------------------------

    def _commit_loop(self) -> None:
        while True:
            self._work.wait()
            self._work.clear()
            commit, self._next = self._next, _Commit()
            forgets, self._forgets = self._forgets, []
            restores, self._restores = self._restores, []
            if not commit.items and not forgets and not restores:
                if self._closing:
                    return
                continue
            try:
                if self.failed or not self._thread.running:
                    raise StoreClosed("the outbox failed earlier")
                commit.results = self._commit(commit.items, forgets, restores)
                if commit.items:
                    self.commits += 1
                    self.committed += len(commit.items)
            except Exception as exc:  # every waiter must wake, whatever went wrong
                self._forgets[:0] = forgets  # not deleted: tried again
                self._restores[:0] = restores  # not put back: tried again
                if not self.failed and not isinstance(exc, StoreClosed):
                    self._failure("could not write", exc)
                commit.error = exc
            except BaseException:  # killed (stop() waited for it): its callers must not wait forever
                self.errors += 1
                commit.error = StoreClosed("the client stopped before this commit ended")
                commit.done.set()
                raise
            commit.done.set()
            if commit.abandoned and commit.error is None:
                self._forget_abandoned(commit)
            if self._closing:
                return

    def _commit(self, items: list[Item], forgets: list[int], restores: list[Item]) -> list[Optional[Item]]:
        began = time.monotonic()
        try:
            results: list[Optional[Item]] = self._run(self._db.commit, items, forgets, restores)
        except LeaseLost as lost:
            # Nothing of this transaction was written: the rows it forgot are another's now; the
            # new messages, and those to put back (deleted by us: nobody else has them), go in
            # under a new lease.
            self._lease_lost(lost.owner)
            if not items and not restores:
                return []
            began = time.monotonic()
            results = self._run(self._db.commit, items, [], restores)
        self.lease = self.lease.renewed(began)
        return results

    def _forget_abandoned(self, commit: _Commit) -> None:
        """Their callers stopped waiting and keep them in memory: the stored copies must go, or
        a later start would send them a second time."""
        for first, count in commit.abandoned:
            self.forget([item for item in commit.results[first : first + count] if item is not None])

    def _finish_commits(self) -> None:
        """Let the commits under way end (bounded), so spill() sees every stored message;
        a message appended after that is refused (its caller keeps it in memory)."""
        committer = self._committer
        if committer is not None:
            self._closing = True
            self._work.set()
            committer.join(timeout=self._wait_limit or 10.0)
            committer.kill(block=False)
            self._committer = None
        pending = self._next
        pending.error = StoreClosed("the client is stopping")
        pending.done.set()
