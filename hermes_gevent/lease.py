"""Leases on a shared store: who holds which messages, and when a holder has lost them. Pure.

Every running client holds one lease in its store (SQLite or PostgreSQL): an owner token that
names a host, a process and a random part, renewed every ``RENEW_EVERY`` seconds. A lease not
renewed for ``LEASE_TIMEOUT`` seconds has lapsed: any live client of the same identifier frees
the messages it held and takes them over. The lapsed owner is *fenced*: every statement that
deletes or re-owns a message names the owner's token in its ``WHERE``, so once its lease is gone
it can touch nothing another owner holds.

A process frozen for longer than the lease (SIGSTOP, a debugger, a long GC pause) is the case
that the token alone does not cover: when it wakes, the messages it held are still in its memory,
ready to be written. So before each batch it asks ``Lease.fresh(now)``; past ``CHECK_RATIO`` of it since
the last renewal it goes to the store first (``Store.check_lease``), and sends none of what it lost.

``Lease`` only does arithmetic on times it is given (a monotonic clock): tested without a clock,
like ``Retry``.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Optional

__all__ = ["CHECK_RATIO", "LEASE_TIMEOUT", "Lease", "RENEW_EVERY", "owner_token"]

#: Seconds between two renewals of a live lease (the claim loop's period).
RENEW_EVERY = 5.0
#: A lease not renewed for this long has lapsed: its messages are taken over.
LEASE_TIMEOUT = 25.0
#: Past this fraction of LEASE_TIMEOUT without a renewal (15 s of 25), a holder checks its lease in
#: the store before it sends what it holds: a lease another process may soon judge lapsed is never
#: trusted on this process's word alone (clocks of two hosts do not run at the same rate).
CHECK_RATIO = 0.6


def owner_token(host: Optional[str] = None, pid: Optional[int] = None) -> str:
    """A new owner token: host name, PID and 64 random bits (``web-3:4121:9f2c...``). The random
    part keeps two runs of one PID (a restart in a fresh container, where PIDs repeat) apart."""
    host = host if host is not None else socket.gethostname()
    pid = pid if pid is not None else os.getpid()
    return f"{host}:{pid}:{secrets.token_hex(8)}"


class Lease:
    """What this process knows of its own lease: when it was last renewed (monotonic seconds,
    None: never), and the limits. Immutable: ``renewed(at)`` returns a new value."""

    __slots__ = ("renewed_at", "timeout", "check_after")

    def __init__(self, renewed_at: Optional[float] = None, *, timeout: Optional[float] = None,
                 check_after: Optional[float] = None) -> None:
        timeout = LEASE_TIMEOUT if timeout is None else timeout  # read now: tests shorten it
        check_after = timeout * CHECK_RATIO if check_after is None else check_after
        if not 0 < check_after <= timeout:
            raise ValueError(f"check_after must be in (0, timeout], got {check_after!r} for timeout {timeout!r}")
        self.renewed_at = renewed_at
        self.timeout = timeout
        self.check_after = check_after

    def renewed(self, at: float) -> "Lease":
        """The lease after a renewal that *began* at ``at`` (a renewal that took long counts from
        its start: the store may have judged it at any moment after)."""
        latest = at if self.renewed_at is None else max(at, self.renewed_at)
        return Lease(latest, timeout=self.timeout, check_after=self.check_after)

    def forgotten(self) -> "Lease":
        """The same limits, never renewed (a new lease not yet registered)."""
        return Lease(timeout=self.timeout, check_after=self.check_after)

    def fresh(self, now: float) -> bool:
        """True when what the lease covers may be sent without asking the store first."""
        return self.renewed_at is not None and now - self.renewed_at < self.check_after

    def lapsed(self, now: float) -> bool:
        """True when another process may already have taken over what this lease covered."""
        return self.renewed_at is None or now - self.renewed_at >= self.timeout

    def __repr__(self) -> str:
        return f"Lease(renewed_at={self.renewed_at!r}, timeout={self.timeout!r}, check_after={self.check_after!r})"
