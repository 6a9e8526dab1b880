"""The SQLite store: one file per host, shared by every process that sends for an identifier.

    messages(seq, identifier, owner, opcode, payload, ack_id)   owner: the run that holds it, NULL: nobody
    owners(owner, identifier, pid, renewed_at)                  one lease per running client

A running client holds a lease it renews at every claim (store.CLAIM_EVERY). A claim first
frees the messages of owners that died - their process is gone, or their lease was not renewed
for LEASE_TIMEOUT - then takes the oldest messages nobody holds. ``seq`` only grows
(AUTOINCREMENT), so "oldest" is acceptance order.

The database runs in one thread of its own (a gevent ThreadPool of size 1): the hub never waits
on the disk, and one connection serves every call in order. ``append`` joins the commit that
is being prepared - a group commit: while one transaction runs, the next one fills - and makes
the calling greenlet wait for it. WAL mode, ``synchronous=NORMAL``: a committed message
survives the process being killed (SIGKILL, the OOM killer); the last commits can be lost only
if the machine itself loses power.

Two halves, kept in one module because they share the schema and the lease rules: ``_Database``
(the SQL of five transactions, in the store's thread) and ``SQLiteStore`` (the gevent side).
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import time
from typing import Any, Callable, Optional

import gevent
import gevent.event
import gevent.threadpool

from .errors import ConfigError
from .frames import Item
from .logs import ClientLog
from .store import Spilled, Store, seq_of, stored_item

__all__ = ["BUSY_TIMEOUT", "LEASE_TIMEOUT", "SQLiteStore"]

#: A lease not renewed for this long is dead (its process hangs, or runs in another PID namespace).
LEASE_TIMEOUT = 25.0
#: How long one process waits for another's write transaction.
BUSY_TIMEOUT = 10.0
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    identifier TEXT NOT NULL,
    owner INTEGER,
    opcode INTEGER NOT NULL,
    payload BLOB NOT NULL,
    ack_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_by_identifier ON messages (identifier, owner, seq);
CREATE TABLE IF NOT EXISTS owners (
    owner INTEGER PRIMARY KEY,
    identifier TEXT NOT NULL,
    pid INTEGER NOT NULL,
    renewed_at REAL NOT NULL
);
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "not a database" in text or "malformed" in text


class _Database:
    """The SQL. Every method runs in the store's thread (or in a caller's own OS thread)."""

    def __init__(self, path: str, identifier: str, owner: int, max_size: int, strategy: str) -> None:
        self.path = path
        self.identifier = identifier
        self.owner = owner
        self.max_size = max_size
        self.strategy = strategy
        self.conn: Optional[sqlite3.Connection] = None

    # -- opening ------------------------------------------------------------------------

    def open(self) -> list[str]:
        """Open (creating, or replacing a corrupt file); register our lease. Returns warnings."""
        path = self.path
        if os.path.isdir(path):
            raise ConfigError(f"OUTBOX_PATH {path!r} is a directory; give the path of a file.")
        try:
            lock = open(path + ".lock", "a")
        except OSError as exc:
            raise ConfigError(f"OUTBOX_PATH {path!r} cannot be opened: {exc.strerror or exc}.") from None
        warnings = []
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time checks, repairs, creates
            try:
                self.conn = self._connect()
            except sqlite3.DatabaseError as exc:
                if not _is_corruption(exc):
                    raise ConfigError(f"OUTBOX_PATH {path!r} cannot be opened: {exc}.") from None
                moved = self._move_aside()
                warnings.append(
                    f"outbox file {path} was corrupt ({exc}); moved it to {moved} and started a fresh one"
                )
                try:
                    self.conn = self._connect()
                except sqlite3.DatabaseError as again:
                    raise ConfigError(f"OUTBOX_PATH {path!r} cannot be opened: {again}.") from None
        finally:
            lock.close()  # releases the flock
        try:
            self._transaction(self._renew, time.time())  # the first write: a file we may only read fails here
        except sqlite3.Error as exc:
            self.close()
            raise ConfigError(f"OUTBOX_PATH {path!r} cannot be written: {exc}.") from None
        return warnings

    def _connect(self, check: bool = True) -> sqlite3.Connection:
        """A connection; ``check``: verify the file and create the schema (once per run, at open)."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            if check:
                found = conn.execute("PRAGMA quick_check").fetchone()
                if found is None or found[0] != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed: {found[0] if found else 'no answer'}")
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if check:
                conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> str:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = f"{self.path}.corrupt-{stamp}-{os.getpid()}"
        os.replace(self.path, target)
        for suffix in ("-wal", "-shm"):
            try:
                os.replace(self.path + suffix, target + suffix)
            except FileNotFoundError:
                pass
        return target

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    # -- transactions ---------------------------------------------------------------------

    def _transaction(self, work: Callable[..., Any], *args: Any) -> Any:
        conn = self.conn
        assert conn is not None, "the store is not open"
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _renew(self, conn: sqlite3.Connection, now: float) -> None:
        conn.execute("INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?)", (self.owner, self.identifier, os.getpid(), now))

    def commit(self, items: list[Item], forget: list[int], restore: Optional[list[Item]] = None) -> list[Optional[Item]]:
        return self._transaction(self._commit, items, forget, restore or [])  # type: ignore[no-any-return]

    def _commit(self, conn: sqlite3.Connection, items: list[Item], forget: list[int],
                restore: list[Item]) -> list[Optional[Item]]:
        if forget:
            conn.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in forget])
        if restore:
            self._put_back(conn, restore)
        if not items:
            return []
        accepted = items
        if self.strategy != "drop_oldest":
            # drop_newest and raise refuse what goes past the bound, counted over the identifier
            # (drop_oldest drops in the owner's memory queue, and forgets what it drops there).
            room = max(0, self.max_size - self._count(conn))
            accepted = items[:room]
        conn.executemany(
            "INSERT INTO messages (identifier, owner, opcode, payload, ack_id) VALUES (?, ?, ?, ?, ?)",
            [(self.identifier, self.owner, item[0], item[1], item[2] if len(item) > 2 else "") for item in accepted],
        )
        # One writer at a time, and seq only grows: this transaction's rows are numbered in a row.
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        first = last - len(accepted) + 1
        stored: list[Optional[Item]] = [
            stored_item(item[0], item[1], item[2] if len(item) > 2 else "", first + i)
            for i, item in enumerate(accepted)
        ]
        return stored + [None] * (len(items) - len(accepted))

    def _put_back(self, conn: sqlite3.Connection, restore: list[Item]) -> None:
        """Messages forgotten once written, then found unacknowledged by the server's TCP: back
        under their own numbers, so they keep their place (a number is never reused)."""
        conn.executemany(
            "INSERT OR IGNORE INTO messages (seq, identifier, owner, opcode, payload, ack_id) VALUES (?, ?, ?, ?, ?, ?)",
            [(seq_of(item), self.identifier, self.owner, item[0], item[1], item[2]) for item in restore],  # type: ignore[misc]
        )

    def _count(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT count(*) FROM messages WHERE identifier = ?", (self.identifier,)).fetchone()[0])

    def claim(self, limit: int, forget: list[int]) -> tuple[list[Item], int]:
        """Renew our lease, free the messages of dead owners, take at most ``limit`` of the
        oldest nobody holds. Returns them and how many owners were found dead."""
        return self._transaction(self._claim, limit, forget)  # type: ignore[no-any-return]

    def _claim(self, conn: sqlite3.Connection, limit: int, forget: list[int]) -> tuple[list[Item], int]:
        now = time.time()
        if forget:
            conn.executemany("DELETE FROM messages WHERE seq = ?", [(seq,) for seq in forget])
        self._renew(conn, now)
        dead = [
            owner for owner, pid, renewed_at in conn.execute(
                "SELECT owner, pid, renewed_at FROM owners WHERE identifier = ? AND owner != ?",
                (self.identifier, self.owner),
            )
            if now - renewed_at > LEASE_TIMEOUT or not _pid_alive(pid)
        ]
        for owner in dead:
            conn.execute("DELETE FROM owners WHERE owner = ?", (owner,))
        # Messages whose owner holds no lease (it died, or its lease was found dead) belong to nobody.
        conn.execute(
            "UPDATE messages SET owner = NULL WHERE identifier = ? AND owner IS NOT NULL "
            "AND owner NOT IN (SELECT owner FROM owners)",
            (self.identifier,),
        )
        if limit <= 0:
            return [], len(dead)
        rows = conn.execute(
            "SELECT seq, opcode, payload, ack_id FROM messages WHERE identifier = ? AND owner IS NULL "
            "ORDER BY seq LIMIT ?",
            (self.identifier, limit),
        ).fetchall()
        if rows:
            conn.execute(
                "UPDATE messages SET owner = ? WHERE identifier = ? AND owner IS NULL AND seq <= ?",
                (self.owner, self.identifier, rows[-1][0]),
            )
        return [stored_item(opcode, bytes(payload), ack_id, seq) for seq, opcode, payload, ack_id in rows], len(dead)

    def spill(self, items: list[Item], forget: list[int], restore: list[Item]) -> tuple[int, list[Item], list[Item], int]:
        """Keep ``items`` for a later start (owned by nobody), in order, within the bound; give up
        our lease. Returns how many were kept, ours that were not, older ones dropped, and how many
        another process had taken over meanwhile (its own now)."""
        return self._transaction(self._spill, items, forget, restore)  # type: ignore[no-any-return]

    def _spill(self, conn: sqlite3.Connection, items: list[Item], forget: list[int],
               restore: list[Item]) -> tuple[int, list[Item], list[Item], int]:
        if forget:  # only ours: a row another process took over is its to send or forget
            conn.executemany("DELETE FROM messages WHERE seq = ? AND owner = ?", [(seq, self.owner) for seq in forget])
        if restore:
            self._put_back(conn, restore)
        # Messages already in the file keep their numbers (their place among every process's);
        # one no longer ours was taken over while this process could not renew its lease.
        held: list[int] = []
        new: list[Item] = []
        gone = 0
        for item in items:
            seq = seq_of(item)
            if seq is None:
                new.append(item)
                continue
            row = conn.execute("SELECT owner FROM messages WHERE seq = ?", (seq,)).fetchone()
            if row is not None and row[0] == self.owner:
                held.append(seq)
            else:
                gone += 1
        room = self.max_size - self._count(conn)
        refused: list[Item] = []
        evicted: list[Item] = []
        if len(new) > room:
            excess = len(new) - max(room, 0)
            if self.strategy == "drop_oldest":
                rows = conn.execute(
                    "SELECT seq, opcode, payload, ack_id FROM messages WHERE identifier = ? AND owner IS NULL "
                    "ORDER BY seq LIMIT ?",
                    (self.identifier, excess),
                ).fetchall()
                conn.executemany("DELETE FROM messages WHERE seq = ?", [(row[0],) for row in rows])
                evicted = [stored_item(opcode, bytes(payload), ack_id, seq) for seq, opcode, payload, ack_id in rows]
                excess -= len(rows)
                refused, new = new[:excess], new[excess:]
            else:
                refused, new = new[len(new) - excess:], new[: len(new) - excess]
        conn.executemany(
            "INSERT INTO messages (identifier, owner, opcode, payload, ack_id) VALUES (?, NULL, ?, ?, ?)",
            [(self.identifier, item[0], item[1], item[2] if len(item) > 2 else "") for item in new],
        )
        conn.execute("UPDATE messages SET owner = NULL WHERE owner = ?", (self.owner,))  # nothing we held is lost
        conn.execute("DELETE FROM owners WHERE owner = ?", (self.owner,))
        return len(held) + len(new), refused, evicted, gone


def _captured(work: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, work(*args)
    except Exception as exc:
        return False, exc


class _Commit:
    """One group commit being filled: the messages, and the event their callers wait on."""

    __slots__ = ("items", "done", "results", "error")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.done = gevent.event.Event()
        self.results: list[Optional[Item]] = []
        self.error: Optional[BaseException] = None


class SQLiteStore(Store):
    """Messages in an SQLite file (see the module docstring); ``durable`` for OUTBOX_SYNC="always"."""

    def __init__(self, path: str, identifier: str, *, durable: bool, max_size: int, strategy: str,
                 log: ClientLog) -> None:
        self.path = path
        self.durable = durable
        self._log = log
        self._db = _Database(path, identifier, random.getrandbits(62), max_size, strategy)
        self._pool: Optional[gevent.threadpool.ThreadPool] = None
        self._next = _Commit()
        self._forgets: list[int] = []
        self._restores: list[Item] = []  # forgotten, then requeued: to put back
        self._work = gevent.event.Event()
        self._committer: Optional[gevent.Greenlet[..., Any]] = None
        self._closing = False
        self.errors = 0
        self.failed = False
        #: Group commits that carried messages, and how many they carried (messages per commit:
        #: committed / commits; the benchmarks report it).
        self.commits = 0
        self.committed = 0

    # -- the run --------------------------------------------------------------------------

    def open(self) -> None:
        self._pool = gevent.threadpool.ThreadPool(1)
        try:
            warnings = self._run(self._db.open)
        except BaseException:
            self._pool.kill()
            self._pool = None
            raise
        for line in warnings:
            self._log.warning(line)
        self._committer = gevent.spawn(self._commit_loop)
        self._committer.name = f"hermes:{self._log.name}:outbox"

    def claim(self, limit: int) -> list[Item]:
        if self.failed or self._pool is None:
            return []
        forgets, self._forgets = self._forgets, []
        items: list[Item]
        try:
            items, dead = self._run(self._db.claim, limit, forgets)
        except sqlite3.Error as exc:
            self._forgets[:0] = forgets  # not deleted: spill() tries again
            self._failure("could not read", exc)
            return []
        if dead:
            self._log.info(f"outbox {self.path}: {dead} process(es) with this identifier are gone; "
                           "their messages are taken over")
        return items

    def append(self, items: list[Item]) -> list[Any]:
        commit = self._next
        first = len(commit.items)
        commit.items.extend(items)
        self._work.set()
        commit.done.wait()
        if commit.error is not None:
            return [commit.error] * len(items)
        return commit.results[first : first + len(items)]

    def append_from_thread(self, items: list[Item]) -> list[Any]:
        """append() from another OS thread: a connection of its own, committed in that thread."""
        own = _Database(self._db.path, self._db.identifier, self._db.owner, self._db.max_size, self._db.strategy)
        try:
            own.conn = own._connect(check=False)  # the run's open() checked the file
            return own.commit(items, [])
        except sqlite3.Error as exc:
            self._failure("could not write", exc)  # logged once and counted, as from the hub's thread
            return [exc] * len(items)
        finally:
            own.close()

    def restore(self, items: list[Item]) -> None:
        if self.failed:
            return
        stored = [item for item in items if seq_of(item) is not None]
        if stored:
            seqs = {seq_of(item) for item in stored}
            self._forgets = [seq for seq in self._forgets if seq not in seqs]  # not deleted yet: keep them
            self._restores.extend(stored)
            self._work.set()

    def forget(self, items: list[Item]) -> None:
        seqs = [seq for seq in map(seq_of, items) if seq is not None]
        if seqs:
            # Kept after a failure too: spill() deletes them if the file can be written by then
            # (else a delivered message would stay in the file and be sent again by the next start).
            self._forgets.extend(seqs)
            if not self.failed:
                self._work.set()

    def spill(self, items: list[Item]) -> Spilled:
        pool = self._pool
        if pool is None:
            return Spilled(failed=True)
        self._finish_commits()
        forgets, self._forgets = self._forgets, []
        restores, self._restores = self._restores, []
        try:
            kept, refused, evicted, gone = self._run(self._db.spill, items, forgets, restores)
        except sqlite3.Error as exc:
            self._failure("could not keep the undelivered messages", exc)
            return Spilled(failed=True)
        if gone:
            self._log.warning(f"outbox {self.path}: {gone} message(s) held here were taken over by another process "
                              f"while this one could not renew its lease (blocked over {LEASE_TIMEOUT:g} s); "
                              "they are that process's to send now")
        if refused or evicted:
            self._log.warning(f"outbox {self.path} is full (MAX_QUEUE_SIZE={self._db.max_size} for this identifier): "
                              f"{len(refused) + len(evicted)} message(s) dropped")
        return Spilled(kept, refused, evicted)

    def close(self) -> None:
        if self._committer is not None:
            self._committer.kill(block=False)
            self._committer = None
        pool = self._pool
        if pool is not None:
            self._pool = None
            try:
                pool.apply(_captured, (self._db.close,))
            finally:
                pool.kill()

    def _run(self, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)`` in the store's thread; this greenlet waits, the hub does not. Its
        exception is raised here (gevent's pool would also print it to stderr)."""
        pool = self._pool
        if pool is None:
            raise sqlite3.OperationalError("the outbox file is closed")
        ok, value = pool.apply(_captured, (work, *args))
        if not ok:
            raise value
        return value

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
                if self.failed or self._pool is None:
                    raise sqlite3.OperationalError("the outbox file failed earlier")
                commit.results = self._run(self._db.commit, commit.items, forgets, restores)
                if commit.items:
                    self.commits += 1
                    self.committed += len(commit.items)
            except Exception as exc:  # every waiter must wake, whatever went wrong
                self._forgets[:0] = forgets  # not deleted: spill() tries again
                if not self.failed:
                    self._failure("could not write", exc)
                commit.error = exc
            except BaseException:  # killed (stop() waited BUSY_TIMEOUT for it): its callers must not wait forever
                self.errors += 1
                commit.error = sqlite3.OperationalError("the client stopped before this commit ended")
                commit.done.set()
                raise
            commit.done.set()
            if self._closing:
                return

    def _finish_commits(self) -> None:
        """Let the commits under way end (bounded), so spill() sees every stored message;
        a message appended after that is refused (its caller keeps it in memory)."""
        committer = self._committer
        if committer is not None:
            self._closing = True
            self._work.set()
            committer.join(timeout=BUSY_TIMEOUT)
            committer.kill(block=False)
            self._committer = None
        pending = self._next
        pending.error = sqlite3.OperationalError("the client is stopping")
        pending.done.set()

    def _failure(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if not self.failed:
            self.failed = True
            self.durable = False
            self._log.error(f"outbox {self.path}: {what} ({exc}); messages are kept in memory only from now on")

