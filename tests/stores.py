"""The outbox stores as the shared contract tests see them (test_store_contract.py): one object
per store kind with the client options that select it, and the store's content read directly -
with sqlite3 from the file, with psycopg from the table - as another process or host would."""

import json
import sqlite3
from contextlib import closing

from .support import t, wait_until


def report_of(proc, timeout=20):
    """The first JSON line a script printed (its report), waited for."""
    line = wait_until(lambda: next((x for x in proc.output if x.startswith('{"')), None), t(timeout),
                      "the script's report")
    return json.loads(line)


class SQLiteOutbox:
    kind = "sqlite"

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
