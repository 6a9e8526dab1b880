"""The process around the clients: every client alive in it, fork, interpreter exit, patching.

A forked child (gunicorn's workers) must not write on its parent's connection nor
send its parent's queue: each client resets itself in the child and starts fresh on
first use. At interpreter exit every started client stops gracefully (flush, close 1000).
"""

from __future__ import annotations

import atexit
import os
import weakref
from typing import Optional, Protocol

import gevent.monkey

from .lifecycle import Lifecycle
from .logs import ClientLog

__all__ = ["all_clients", "ProcessClient", "register", "warn_if_unpatched"]


class ProcessClient(Protocol):
    """What the process asks of each client it knows."""

    lifecycle: Lifecycle

    def stop(self, timeout: Optional[float] = None) -> int: ...
    def reset_in_child(self) -> None: ...


_warned_unpatched = False
_all_clients: "weakref.WeakSet[ProcessClient]" = weakref.WeakSet()


def register(client: ProcessClient) -> None:
    _all_clients.add(client)


def all_clients() -> list[ProcessClient]:
    """Every client alive in this process."""
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


def _reset_after_fork() -> None:
    for client in list(_all_clients):
        client.reset_in_child()


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
