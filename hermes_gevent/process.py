"""The process around the clients: every client alive in it, fork, interpreter exit, patching.

A forked child (gunicorn's workers) must not write on its parent's connection nor
send its parent's queue: each client resets itself in the child and starts fresh on
first use. At interpreter exit every started client stops gracefully (flush, close 1000).
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import TYPE_CHECKING

import gevent.monkey

from .lifecycle import State
from .logs import ClientLog
from .memory_store import MemoryStore

if TYPE_CHECKING:
    from .client import WebSocketClient

__all__ = ["all_clients", "register", "reset_in_child", "warn_if_unpatched"]

_warned_unpatched = False
_all_clients: "weakref.WeakSet[WebSocketClient]" = weakref.WeakSet()


def register(client: "WebSocketClient") -> None:
    _all_clients.add(client)


def all_clients() -> list["WebSocketClient"]:
    """Every client alive in this process (for server hooks)."""
    return list(_all_clients)


def warn_if_unpatched(log: ClientLog) -> None:
    """Once per process: an unpatched app is served, but its other libraries block the hub."""
    global _warned_unpatched
    if not _warned_unpatched and not gevent.monkey.is_module_patched("socket"):
        _warned_unpatched = True
        log.warning(
            "gevent has not monkey-patched this process: the client stays cooperative, "
            "but other blocking libraries in the app will stall it (call gevent.monkey.patch_all() first)"
        )


def reset_in_child(client: "WebSocketClient") -> None:
    """In a forked child: hold nothing of the parent's, and start fresh when used."""
    was_waiting = client.lifecycle.running or client.lifecycle.pending
    session = client._session
    if session is not None:
        session.conn.aborted = True  # never write on the parent's connection
        try:
            session.conn.sock.close()  # our copy of the descriptor only; the parent keeps its own
        except OSError:
            pass
    # The parent's greenlets were copied too: orphan them (they see a stale session
    # and an empty outbox); they are killed lazily if they ever run.
    client._orphans = list(client._loops.values())
    client._outbox = None  # queued messages are the parent's to send
    # The parent's store (its thread, its SQLite connection) is never touched here, nor closed.
    client._orphan_stores.append(client._store)
    client._store = MemoryStore()
    client._commits.clear()  # the parent's transactions, the parent's to take
    client._commit_taker = None
    client._new_id.reseed()  # the parent's id sequence is the parent's
    client._reset_run()
    client._reset_counters()
    client.lifecycle.reset(State.PENDING if was_waiting else State.IDLE)


def _reset_after_fork() -> None:
    for client in list(_all_clients):
        reset_in_child(client)


def _stop_all_at_exit() -> None:
    for client in list(_all_clients):
        if client.lifecycle.started:  # also waits for a stop() already under way
            try:
                client.stop()
            except Exception:  # interpreter exit: never raise from here
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_stop_all_at_exit)
