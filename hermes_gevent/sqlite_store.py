"""The SQLite store: one file per host, shared by every process that sends for an identifier.

    messages(seq, identifier, owner, opcode, payload, ack_id)   owner: the run that holds it, NULL: nobody
    owners(owner, identifier, pid, renewed_at)                  one lease per running client

A running client holds a lease it renews at every claim (store.CLAIM_EVERY). A claim first
frees the messages of owners that died - their process is gone, or their lease was not renewed
for LEASE_TIMEOUT - then takes the oldest messages nobody holds. ``seq`` only grows
(AUTOINCREMENT), so "oldest" is acceptance order.

The SQL runs in the store's own thread (sql_store.py: group commits, the lease, failures). WAL
mode, ``synchronous=NORMAL``: a committed message survives the process being killed (SIGKILL,
the OOM killer); the last commits can be lost only if the machine itself loses power. Fencing
(lease.py): every delete names the owner, and a commit or claim whose lease is gone changes
nothing (``LeaseLost``).
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import time
from typing import Any, Callable, Optional

from . import lease
from .errors import ConfigError
from .frames import Item
from .logs import ClientLog
from .sql_database import Database, LeaseLost
from .sql_store import SQLStore
from .store import seq_of, stored_item

__all__ = ["BUSY_TIMEOUT", "SQLiteStore"]

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
    """The SQL (sql_store.Database). Every method runs in the store's thread (or in a caller's own OS thread)."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

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
            self._transaction(self._register)  # the first write: a file we may only read fails here
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

    def _register(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?)",
                     (self.owner, self.identifier, os.getpid(), time.time()))

    def _renew(self, conn: sqlite3.Connection, now: float) -> None:
        """LeaseLost (the transaction rolls back) when another process found our lease dead."""
        found = conn.execute("UPDATE owners SET renewed_at = ? WHERE owner = ?", (now, self.owner)).rowcount
        if not found:
            raise LeaseLost(self.owner)

    def renew(self) -> None:
        self._transaction(self._renew, time.time())

    def new_lease(self, lost: Any) -> None:
        if self.owner == lost:
            self.owner = random.getrandbits(62)
            self._transaction(self._register)

    def abandon(self) -> None:
        self.owner = random.getrandbits(62)  # the file failed: nothing more is written this run

    def reconnect(self) -> None:
        self.close()
        self.conn = self._connect(check=False)
        self.renew()

    def in_this_thread(self) -> "Database":
        own = _Database(self.path, self.identifier, self.owner, self.max_size, self.strategy)
        own.conn = own._connect(check=False)  # the run's open() checked the file
        return own

    def commit(self, items: list[Item], forget: list[int], restore: Optional[list[Item]] = None) -> list[Optional[Item]]:
        return self._transaction(self._commit, items, forget, restore or [])  # type: ignore[no-any-return]

    def _commit(self, conn: sqlite3.Connection, items: list[Item], forget: list[int],
                restore: list[Item]) -> list[Optional[Item]]:
        self._renew(conn, time.time())
        if forget:
            conn.executemany("DELETE FROM messages WHERE seq = ? AND owner = ?", [(seq, self.owner) for seq in forget])
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
        self._renew(conn, now)
        if forget:
            conn.executemany("DELETE FROM messages WHERE seq = ? AND owner = ?", [(seq, self.owner) for seq in forget])
        dead = [
            owner for owner, pid, renewed_at in conn.execute(
                "SELECT owner, pid, renewed_at FROM owners WHERE identifier = ? AND owner != ?",
                (self.identifier, self.owner),
            )
            if now - renewed_at > lease.LEASE_TIMEOUT or not _pid_alive(pid)
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


class SQLiteStore(SQLStore):
    """Messages in an SQLite file (see the module docstring); ``durable`` for OUTBOX_SYNC="always"."""

    def __init__(self, path: str, identifier: str, *, durable: bool, max_size: int, strategy: str,
                 log: ClientLog) -> None:
        db = _Database(path, identifier, random.getrandbits(62), max_size, strategy)
        super().__init__(db, durable=durable, log=log, where=path, wait_limit=None)

    def take(self, seqs: list[int]) -> list[Item]:
        """Nothing to take: the app's transactions never write to an SQLite outbox (transaction=
        is PostgreSQL's)."""
        return []

    def release(self, items: list[Item]) -> None:
        """Nothing was taken (``take``), so nothing to release: what a claim took is held until
        it is forgotten or spilled."""
