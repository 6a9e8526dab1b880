"""The outbox stores as the shared contract tests see them (test_store_contract.py): one object
per store kind with the client options that select it, the store's content read directly -
with sqlite3 from the file, with psycopg from the table - as another process or host would, and
``store(identifier)``: the store object itself (hermes_gevent.store.Store), opened.

``keeps``: the store keeps messages outside the process (SQLite, PostgreSQL); the memory store
does not - nothing is found outside the process, and nothing survives ``stop()``."""

import json
import sqlite3
from contextlib import closing

from .support import t, wait_until


def report_of(proc, timeout=20):
    """The first JSON line a script printed (its report), waited for."""
    line = wait_until(lambda: next((x for x in proc.output if x.startswith('{"')), None), t(timeout),
                      "the script's report")
    return json.loads(line)


def _log():
    from hermes_gevent.logs import ClientLog, Redactor

    return ClientLog("contract", Redactor())


class MemoryOutbox:
    """No OUTBOX_URL, no OUTBOX_PATH: the queue is all there is."""

    kind = "memory"
    keeps = False

    def __init__(self) -> None:
        self.url = None
        self.location = None
        self.options = {}

    def rows(self, identifier):
        return []  # nothing outside the process to read

    def leases(self, identifier):
        return {}

    def texts(self, identifier):
        return []

    def store(self, identifier, durable=False, max_size=100, strategy="drop_oldest"):
        from hermes_gevent.memory_store import MemoryStore

        store = MemoryStore()
        store.open()
        return store


class SQLiteOutbox:
    kind = "sqlite"
    keeps = True

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"  # an absolute path: four slashes
        self.location = path  # as the scripts take it (tests/scripts/outbox_ticker.py)
        self.options = {"outbox_path": path}

    def rows(self, identifier):
        """(text, owner) of ``identifier``'s messages, oldest first (owner None: held by nobody)."""
        with closing(sqlite3.connect(self.path, timeout=t(10))) as conn:
            found = conn.execute("SELECT payload, owner FROM messages WHERE identifier = ? ORDER BY seq", (identifier,))
            return [(bytes(payload).decode(), owner) for payload, owner in found]

    def leases(self, identifier):
        """owner -> pid of the running clients of ``identifier``."""
        with closing(sqlite3.connect(self.path, timeout=t(10))) as conn:
            found = conn.execute("SELECT owner, pid FROM owners WHERE identifier = ?", (identifier,))
            return dict(found.fetchall())

    def texts(self, identifier):
        return [text for text, _ in self.rows(identifier)]

    def store(self, identifier, durable=False, max_size=100, strategy="drop_oldest"):
        from hermes_gevent.sqlite_store import SQLiteStore

        store = SQLiteStore(self.path, identifier, durable=durable, max_size=max_size, strategy=strategy, log=_log())
        store.open()
        return store


class PostgresOutbox(SQLiteOutbox):
    kind = "postgres"

    def __init__(self, cluster, url: str) -> None:
        self.cluster = cluster
        self.url = url
        self.location = url
        self.options = {"outbox_url": url}

    def rows(self, identifier):
        found = self.cluster.execute("SELECT payload, owner FROM hermes_outbox WHERE identifier = %s ORDER BY seq",
                                     (identifier,), url=self.url)
        return [(bytes(payload).decode(), owner) for payload, owner in found]

    def leases(self, identifier):
        return dict(self.cluster.execute("SELECT owner, pid FROM hermes_outbox_leases WHERE identifier = %s",
                                         (identifier,), url=self.url))

    def store(self, identifier, durable=False, max_size=100, strategy="drop_oldest"):
        from hermes_gevent.pg_store import PostgresStore
        from hermes_gevent.store_url import locate

        store = PostgresStore(locate(self.url, None), identifier, durable=durable, max_size=max_size,
                              strategy=strategy, timeout=t(5), log=_log())
        store.open()
        return store
