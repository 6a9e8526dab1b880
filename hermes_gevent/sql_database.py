"""The database half of an SQL store, as the gevent half (sql_store.py) sees it.

``Database`` is what SQLite (sqlite_store.py) and PostgreSQL (pg_store.py) each implement: the
SQL of one store, a handful of transactions, each run whole. ``DatabaseThread`` runs those
calls in one OS thread of their own (a gevent ``ThreadPool(1)``): the calling greenlet waits, the
hub does not - it never waits on a disk or a database server - and one connection serves the
calls in order. ``LeaseLost`` and ``StoreClosed`` are what a call may raise besides the driver's
errors.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

import gevent.threadpool

from .frames import Item

__all__ = ["Database", "DatabaseThread", "LeaseLost", "StoreClosed"]


class LeaseLost(Exception):
    """The database no longer knows this owner's lease: another process took its messages over."""

    def __init__(self, owner: Any) -> None:
        super().__init__(f"the lease of owner {owner} is gone")
        self.owner = owner  # the token the failing statement used (a newer one may have replaced it since)


class StoreClosed(Exception):
    """The store was closed, or failed earlier: the call was not made."""


class Database(Protocol):
    """The SQL of one store. Every method runs in the store's thread and may raise
    ``LeaseLost`` (where it renews the lease) or the driver's errors (``errors``)."""

    errors: tuple[type[BaseException], ...]
    owner: Any

    def open(self) -> list[str]: ...  # create the schema, register the lease; warnings to log
    def commit(self, items: list[Item], forget: list[int], restore: list[Item]) -> list[Optional[Item]]: ...
    def claim(self, limit: int, forget: list[int]) -> tuple[list[Item], int]: ...
    def spill(self, items: list[Item], forget: list[int], restore: list[Item]) -> tuple[int, list[Item], list[Item], int]: ...
    def renew(self) -> None: ...
    def new_lease(self, lost: Any) -> None: ...  # a new owner token, unless ``lost`` is not the current one
    def abandon(self) -> None: ...  # a new owner token, registered only once the database answers
    def reconnect(self) -> None: ...
    def in_this_thread(self) -> "Database": ...  # a connection of its own, for the calling OS thread
    def close(self) -> None: ...


def _captured(work: Callable[..., Any], *args: Any) -> tuple[bool, Any]:
    try:
        return True, work(*args)
    except BaseException as exc:  # noqa: B036 - handed back to the greenlet that waits for it
        return False, exc


class DatabaseThread:
    """The one OS thread a store's database calls run in, between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self._pool: Optional[gevent.threadpool.ThreadPool] = None

    @property
    def running(self) -> bool:
        """Started, and not stopped since: ``run`` makes its calls."""
        return self._pool is not None

    def start(self) -> None:
        self._pool = gevent.threadpool.ThreadPool(1)

    def run(self, work: Callable[..., Any], *args: Any) -> Any:
        """``work(*args)`` in the store's thread; this greenlet waits, the hub does not. Its
        exception is raised here (gevent's pool would also print it to stderr); ``StoreClosed``
        when the thread is not running."""
        pool = self._pool
        if pool is None:
            raise StoreClosed("the outbox is closed")
        ok, value = pool.apply(_captured, (work, *args))
        if not ok:
            raise value
        return value

    def stop(self, last: Optional[Callable[[], Any]] = None) -> None:
        """End the thread, once ``last()`` ran in it (its exception ignored: the store is let go
        of anyway). Nothing runs in it after this; a thread not running is left alone."""
        pool = self._pool
        if pool is None:
            return
        self._pool = None
        try:
            if last is not None:
                pool.apply(_captured, (last,))
        finally:
            pool.kill()
