"""Session: one live connection, and what the client's loops learn about it."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import gevent.event

from .connection import Connection
from .errors import ConnectionClosed, PingTimeout
from .frames import CLOSE_ABNORMAL


__all__ = ["Session", "is_abrupt", "now"]


def now() -> float:
    """Monotonic seconds: the clock of the loops' timeline (time.monotonic, as everywhere here)."""
    return time.monotonic()


def is_abrupt(exc: BaseException) -> bool:
    """A connection that ended without a close handshake: unacknowledged data is suspect."""
    return isinstance(exc, PingTimeout) or (isinstance(exc, ConnectionClosed) and exc.code == CLOSE_ABNORMAL)


class Session:
    """One live connection. The supervisor publishes it to the reader and the sender,
    and watches it; whichever loop sees it die first calls ``fail``."""

    def __init__(self, conn: Connection, on_unacknowledged: Optional[Callable[[list[Any]], None]] = None) -> None:
        self.conn = conn
        self._on_unacknowledged = on_unacknowledged
        self.opened_at = now()
        self.last_frame_at = self.opened_at
        self.ping_sent_at: Optional[float] = None
        self.handler_since: Optional[float] = None  # set while the reader runs handle_message
        self.slow_handler_warned: Optional[float] = None
        self.lost = gevent.event.Event()
        self.error: Optional[BaseException] = None

    def fail(self, exc: BaseException) -> None:
        """Mark the connection dead with ``exc`` (first cause wins) and close its socket.

        After an abrupt end (no close handshake), the messages whose bytes the peer's
        TCP never acknowledged are handed back to be sent again before the socket goes.
        """
        if not self.lost.is_set():
            self.error = exc
            self.lost.set()
            if is_abrupt(exc) and self._on_unacknowledged is not None:
                self._on_unacknowledged(self.conn.unacknowledged())
        self.conn.abort()

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()
