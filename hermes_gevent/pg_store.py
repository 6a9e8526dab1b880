"""The PostgreSQL store: one table shared by every host that sends for an identifier.

    hermes_outbox(seq, identifier, owner, opcode, payload, ack_id, created_at)   owner: a lease's token, NULL: nobody
    hermes_outbox_leases(owner, identifier, host, pid, renewed_at)               one lease per running client

The same contract as the SQLite file (sqlite_store.py), across hosts: ownership is a lease
(lease.py) judged on the database's clock (``now()``), never a PID. A claim renews this
process's lease, frees the messages of leases not renewed for LEASE_TIMEOUT, and takes the
oldest messages nobody holds (``FOR UPDATE SKIP LOCKED``: two claimers never wait on each
other, nor take the same row). Every statement that deletes or re-owns a row names this
process's token (fencing), and every commit renews the lease in its own transaction: a process
whose lease was taken over writes nothing under it.

The database goes away: a failed call turns the store off (messages wait in memory, counted in
``errors``); every claim (every RENEW_EVERY) reconnects, and once it answers the client writes
what waited in memory into it (sql_store.py). Connecting waits at most CONNECT_TIMEOUT, and the
connection carries TCP keepalives and a user timeout, so a server that vanishes is noticed.

psycopg 3 (the ``hermes_gevent[postgres]`` extra) runs in the store's own thread (a gevent
ThreadPool(1)): the hub never waits on the database, patched or unpatched.
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from typing import Any, Optional

from .errors import ConfigError
from .frames import Item
from .lease import owner_token
from . import lease
from .logs import ClientLog
from .sql_database import Database, LeaseLost
from .sql_store import SQLStore
from .store import seq_of, stored_item
from .store_url import StoreLocation

__all__ = ["EXTRA", "PostgresStore", "config_error", "connect", "create_schema", "driver_errors", "ensure_schema",
           "insert_sql", "quoted_names", "require", "schema_sql"]

EXTRA = "hermes_gevent[postgres]"
#: SQLSTATEs that no reconnection will cure: a wrong password or role, a missing database,
#: no right to create the table.
_CONFIG_STATES = {"28P01": "the password or user is refused", "28000": "the user is refused",
                  "3D000": "the database does not exist", "42501": "the user may not create or use the table"}


def require() -> None:
    """ConfigError naming the extra when psycopg 3 is not installed."""
    try:
        found = importlib.util.find_spec("psycopg") is not None
    except (ImportError, ValueError):  # hidden (sys.modules["psycopg"] = None), or half-installed
        found = False
    if not found:
        raise ConfigError(f"OUTBOX_URL names PostgreSQL, which needs psycopg 3: pip install '{EXTRA}'.")


def quoted_names(table: str) -> dict[str, str]:
    """The quoted names of the store's objects for OUTBOX_TABLE ``table`` (already checked)."""
    schema, _, name = table.rpartition(".")
    prefix = f'"{schema}".' if schema else ""
    return {"t": f'{prefix}"{name}"', "leases": f'{prefix}"{name}_leases"', "free": f'"{name}_free"',
            "owned": f'"{name}_owned"', "name": name}


def schema_sql(table: str) -> str:
    """The DDL of the store's two tables (``flask hermes outbox-sql`` prints it for migrations)."""
    n = quoted_names(table)
    return f"""CREATE TABLE IF NOT EXISTS {n['t']} (
    seq bigserial PRIMARY KEY,
    identifier text NOT NULL,
    owner text,
    opcode smallint NOT NULL,
    payload bytea NOT NULL,
    ack_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {n['free']} ON {n['t']} (identifier, seq) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS {n['owned']} ON {n['t']} (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS {n['leases']} (
    owner text PRIMARY KEY,
    identifier text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    renewed_at timestamptz NOT NULL DEFAULT now()
);
"""


def create_schema(conn: Any, table: str) -> None:
    """The tables, if missing, in ``conn``'s transaction: one process at a time (an advisory lock),
    as CREATE ... IF NOT EXISTS races otherwise."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (quoted_names(table)["t"],))
    conn.execute(schema_sql(table))


def ensure_schema(location: StoreLocation, timeout: float) -> None:
    """Create the tables if they are missing, on a short connection of its own (blocking: call it
    from a thread, never from the hub). For a transactional send before the client first started."""
    assert location.conninfo is not None
    try:
        with connect(location.conninfo, timeout) as conn, conn.transaction():
            create_schema(conn, location.table)
    except BaseException as exc:
        error = config_error(exc, location.shown)
        if error is not None:
            raise error from None
        raise


def insert_sql(table: str) -> str:
    """The row a transactional send inserts (SQLAlchemy's named parameters), held by nobody:
    after the COMMIT the sending process takes it, or any live client of the identifier."""
    return (f"INSERT INTO {quoted_names(table)['t']} (identifier, owner, opcode, payload, ack_id) "
            "VALUES (:identifier, NULL, :opcode, :payload, :ack_id) RETURNING seq")


def connect(conninfo: str, timeout: float) -> Any:
    """A psycopg connection (autocommit: transactions are explicit) that notices a vanished server,
    and whose statements give up after ``timeout`` - a lock held by a migration included - so the
    store's thread is never stuck behind one."""
    import psycopg

    ms = max(1, int(timeout * 1000))
    return psycopg.connect(
        conninfo, autocommit=True, connect_timeout=max(1, math.ceil(timeout)), application_name="hermes_gevent",
        keepalives=1, keepalives_idle=max(1, int(timeout)), keepalives_interval=1, keepalives_count=3,
        tcp_user_timeout=ms, options=f"-c statement_timeout={ms} -c lock_timeout={ms}",
    )


def driver_errors() -> tuple[type[BaseException], ...]:
    """What psycopg raises (importing it, if this is the first time)."""
    import psycopg

    return (psycopg.Error,)


def config_error(exc: BaseException, shown: str) -> Optional[ConfigError]:
    """A ConfigError naming OUTBOX_URL for a failure no reconnection cures, else None."""
    state = getattr(exc, "sqlstate", None)
    text = str(exc)
    reason = _CONFIG_STATES.get(state or "")
    if reason is None and "password authentication failed" in text:
        reason = _CONFIG_STATES["28P01"]
    if reason is None and "does not exist" in text and "database" in text:
        reason = _CONFIG_STATES["3D000"]
    if reason is None:
        return None
    return ConfigError(f"OUTBOX_URL {shown}: {reason} ({text.strip().splitlines()[-1] if text.strip() else state}).")


class _Database:
    """The SQL (sql_store.Database), in the store's thread (or a caller's own OS thread)."""

    def __init__(self, location: StoreLocation, identifier: str, max_size: int, strategy: str, timeout: float,
                 owner: Optional[str] = None) -> None:
        # psycopg is first imported by open(), in the store's thread, not here in the hub: its import
        # is ~110 ms of CPU that would keep every timer of the process waiting.
        self.errors: tuple[type[BaseException], ...] = ()
        self.location = location
        self.identifier = identifier
        self.max_size = max_size
        self.strategy = strategy
        self.timeout = timeout
        self.owner = owner or owner_token()
        self.n = quoted_names(location.table)
        self.conn: Any = None
        self.opened = False

    # -- connecting -----------------------------------------------------------------------

    def open(self) -> list[str]:
        assert self.location.conninfo is not None
        self.errors = driver_errors()
        try:
            self.conn = connect(self.location.conninfo, self.timeout)
            with self.conn.transaction():
                create_schema(self.conn, self.location.table)
                self._register()
                # Rows of a token that has no lease (a process that died between the two) belong to nobody.
                self.conn.execute(
                    f"UPDATE {self.n['t']} SET owner = NULL WHERE identifier = %s AND owner IS NOT NULL "
                    f"AND owner NOT IN (SELECT owner FROM {self.n['leases']})", (self.identifier,))
        except BaseException as exc:
            self.close()
            error = config_error(exc, self.location.shown)
            if error is not None:
                raise error from None
            raise
        self.opened = True
        return []

    def reconnect(self) -> None:
        if not self.opened:
            self.open()
            return
        self.close()
        self.conn = connect(self.location.conninfo or "", self.timeout)
        self.renew()

    def in_this_thread(self) -> "Database":
        own = _Database(self.location, self.identifier, self.max_size, self.strategy, self.timeout, self.owner)
        own.errors = driver_errors()
        own.conn = connect(self.location.conninfo or "", self.timeout)
        return own

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # a broken connection: nothing more to release
                pass

    # -- the lease ------------------------------------------------------------------------

    def _register(self) -> None:
        self.conn.execute(
            f"INSERT INTO {self.n['leases']} (owner, identifier, host, pid) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (owner) DO UPDATE SET renewed_at = now()",
            (self.owner, self.identifier, socket.gethostname(), os.getpid()))

    def _renew(self) -> None:
        cur = self.conn.execute(f"UPDATE {self.n['leases']} SET renewed_at = now() WHERE owner = %s", (self.owner,))
        if not cur.rowcount:
            raise LeaseLost(self.owner)  # the transaction rolls back

    def renew(self) -> None:
        with self._transaction():
            self._renew()

    def new_lease(self, lost: Any) -> None:
        if self.owner == lost:
            self.owner = owner_token()
            with self._transaction():
                self._register()

    def abandon(self) -> None:
        self.owner = owner_token()  # registered by reconnect(), whose renewal finds it missing

    def _transaction(self) -> Any:
        if self.conn is None:
            import psycopg

            raise psycopg.OperationalError("not connected to the outbox database")
        return self.conn.transaction()

    # -- transactions ---------------------------------------------------------------------

    def commit(self, items: list[Item], forget: list[int], restore: list[Item]) -> list[Optional[Item]]:
        with self._transaction():
            self._renew()
            self._forget(forget)
            self._put_back(restore)
            if not items:
                return []
            accepted = items
            if self.strategy != "drop_oldest":
                # drop_newest and raise refuse what goes past the bound, over every process of the identifier.
                accepted = items[: max(0, self.max_size - self._count_locked())]
            stored = self._insert(accepted, self.owner)
        return stored + [None] * (len(items) - len(accepted))

    def claim(self, limit: int, forget: list[int]) -> tuple[list[Item], int]:
        with self._transaction():
            self._renew()
            self._forget(forget)
            lapsed = [row[0] for row in self.conn.execute(
                f"DELETE FROM {self.n['leases']} WHERE identifier = %s AND owner <> %s "
                "AND renewed_at < now() - make_interval(secs => %s) RETURNING owner",
                (self.identifier, self.owner, lease.LEASE_TIMEOUT))]
            if lapsed:
                self.conn.execute(f"UPDATE {self.n['t']} SET owner = NULL WHERE owner = ANY(%s)", (lapsed,))
            if limit <= 0:
                return [], len(lapsed)
            rows = self.conn.execute(
                f"UPDATE {self.n['t']} SET owner = %s WHERE seq IN (SELECT seq FROM {self.n['t']} "
                "WHERE identifier = %s AND owner IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                "RETURNING seq, opcode, payload, ack_id", (self.owner, self.identifier, limit)).fetchall()
        return _items(rows), len(lapsed)

    def take(self, seqs: list[int]) -> list[Item]:
        with self._transaction():
            self._renew()
            rows = self.conn.execute(
                f"UPDATE {self.n['t']} SET owner = %s WHERE seq = ANY(%s) AND identifier = %s AND owner IS NULL "
                "RETURNING seq, opcode, payload, ack_id", (self.owner, seqs, self.identifier)).fetchall()
        return _items(rows)

    def release(self, seqs: list[int]) -> None:
        """Ours no longer: held by nobody, for the next claim (of this process or another)."""
        with self._transaction():
            self.conn.execute(f"UPDATE {self.n['t']} SET owner = NULL WHERE seq = ANY(%s) AND owner = %s",
                              (seqs, self.owner))

    def spill(self, items: list[Item], forget: list[int], restore: list[Item]) -> tuple[int, list[Item], list[Item], int]:
        with self._transaction():
            self._forget(forget)
            self._put_back(restore)
            mine = [seq for seq in map(seq_of, items) if seq is not None]
            held = {row[0] for row in self.conn.execute(
                f"SELECT seq FROM {self.n['t']} WHERE seq = ANY(%s) AND owner = %s", (mine, self.owner))}
            new = [item for item in items if seq_of(item) is None]
            gone = len(mine) - len(held)
            room = self.max_size - self._count_locked()
            refused: list[Item] = []
            evicted: list[Item] = []
            if len(new) > room:
                excess = len(new) - max(room, 0)
                if self.strategy == "drop_oldest":
                    rows = self.conn.execute(
                        f"DELETE FROM {self.n['t']} WHERE seq IN (SELECT seq FROM {self.n['t']} WHERE identifier = %s "
                        "AND owner IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                        "RETURNING seq, opcode, payload, ack_id", (self.identifier, excess)).fetchall()
                    evicted = _items(rows)
                    excess -= len(evicted)
                    refused, new = new[:excess], new[excess:]
                else:
                    refused, new = new[len(new) - excess:], new[: len(new) - excess]
            self._insert(new, None)
            self.conn.execute(f"UPDATE {self.n['t']} SET owner = NULL WHERE owner = %s", (self.owner,))
            self.conn.execute(f"DELETE FROM {self.n['leases']} WHERE owner = %s", (self.owner,))
        return len(held) + len(new), refused, evicted, gone

    # -- statements -----------------------------------------------------------------------

    def _forget(self, seqs: list[int]) -> None:
        if seqs:  # only ours: a row another process took over is its to send or forget
            self.conn.execute(f"DELETE FROM {self.n['t']} WHERE seq = ANY(%s) AND owner = %s", (seqs, self.owner))

    def _put_back(self, restore: list[Item]) -> None:
        """Messages forgotten once written, then found unacknowledged by the server's TCP: back
        under their own numbers, so they keep their place (a number is never reused)."""
        if restore:
            self.conn.execute(
                f"INSERT INTO {self.n['t']} (seq, identifier, owner, opcode, payload, ack_id) "
                "SELECT s, %s, %s, o, p, a FROM unnest(%s::bigint[], %s::smallint[], %b::bytea[], %s::text[]) "
                "AS u(s, o, p, a) ON CONFLICT (seq) DO NOTHING",
                (self.identifier, self.owner, [seq_of(i) for i in restore], [i[0] for i in restore],
                 [i[1] for i in restore], [i[2] for i in restore]))  # type: ignore[misc]  # stored: 4 fields

    def _insert(self, items: list[Item], owner: Optional[str]) -> list[Optional[Item]]:
        if not items:
            return []
        acks = [item[2] if len(item) > 2 else "" for item in items]
        # Rows go in in the order given (ORDER BY ord), each taking the next number: sorted, the
        # numbers returned are the items' in order.
        seqs = sorted(row[0] for row in self.conn.execute(
            f"INSERT INTO {self.n['t']} (identifier, owner, opcode, payload, ack_id) "
            "SELECT %s, %s, o, p, a FROM unnest(%s::smallint[], %b::bytea[], %s::text[]) WITH ORDINALITY "
            "AS u(o, p, a, ord) ORDER BY ord RETURNING seq",
            (self.identifier, owner, [item[0] for item in items], [item[1] for item in items], acks)))
        return [stored_item(item[0], item[1], ack, seq) for item, ack, seq in zip(items, acks, seqs)]

    def _count_locked(self) -> int:
        """Messages of the identifier, counted under a lock that other counters of it wait for."""
        self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{self.n['t']}:{self.identifier}",))
        return int(self.conn.execute(f"SELECT count(*) FROM {self.n['t']} WHERE identifier = %s",
                                     (self.identifier,)).fetchone()[0])


def _items(rows: list[tuple[Any, ...]]) -> list[Item]:
    return [stored_item(opcode, bytes(payload), ack_id, seq) for seq, opcode, payload, ack_id in sorted(rows)]


class PostgresStore(SQLStore):
    """Messages in a PostgreSQL table (see the module docstring); ``durable`` for OUTBOX_SYNC="always"."""

    reconnects = True

    def __init__(self, location: StoreLocation, identifier: str, *, durable: bool, max_size: int, strategy: str,
                 timeout: float, log: ClientLog) -> None:
        db = _Database(location, identifier, max_size, strategy, timeout)
        super().__init__(db, durable=durable, log=log, where=location.shown, wait_limit=timeout)
        self._pg = db

    def take(self, seqs: list[int]) -> list[Item]:
        if self.failed or not self._thread.running or not seqs:
            return []
        try:
            return self._run(self._pg.take, seqs)  # type: ignore[no-any-return]
        except LeaseLost as lost:
            self._lease_lost(lost.owner)
        except self._pg.errors as exc:
            self._failure("could not read", exc)
        return []

    def release(self, items: list[Item]) -> None:
        """Taken, but with no room in the queue: back to nobody, for a later claim."""
        seqs = [seq for seq in map(seq_of, items) if seq is not None]
        if seqs and not self.failed and self._thread.running:
            try:
                self._run(self._pg.release, seqs)
            except self._pg.errors as exc:
                self._failure("could not release", exc)  # held under this lease: spilled at stop
