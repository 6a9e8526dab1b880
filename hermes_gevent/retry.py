"""Reconnection as a value: after a failure, retry after N seconds or give up, and why.

``should_retry(exc)`` classifies a failure from the exception alone (a client
subclass can override its own ``should_retry`` method). ``Retry`` is an immutable
value, like urllib3's: it counts consecutive failed attempts and applies the
backoff, the retry limit and the MIN_UPTIME rule; ``next()`` answers with a
``Decision`` that carries the next value. No clock, no I/O, no sleeping: the
client waits out the delay on an event that ``stop()`` and ``reconnect()`` set.

Polite reconnects: a server that answers the upgrade with 429 or 503 and a
``Retry-After`` (seconds, or an HTTP date counted from when the answer came) gets
at least that long, up to RETRY_AFTER_CAP times the backoff's maximum; a server
that closes with 1013 (try again later) gets at least the backoff's maximum. Such
a floor is never shortened by jitter: jitter spreads the delay above it instead.
"""

from __future__ import annotations

import random
import socket
import ssl
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Optional

from .backoff import Backoff, RandomSource
from .errors import (ConfigError, ConnectionClosed, ExtensionMismatch, HandshakeRejected, ProtocolError, ProxyRejected,
                     SocksError, SubprotocolMismatch)
from .frames import CLOSE_FORBIDDEN, CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, CLOSE_UNAUTHORIZED

__all__ = ["CREDENTIAL_STATUSES", "Decision", "describe", "GIVE_UP_CLOSE_CODES", "parse_retry_after", "Retry",
    "PROXY_CREDENTIAL_STATUSES", "RETRY_AFTER_CAP", "RETRY_AFTER_STATUSES", "RETRY_HTTP_STATUSES",
    "RETRY_PROXY_STATUSES", "RETRY_SOCKS_KINDS", "retry_after", "should_retry"]

#: HTTP statuses on the upgrade that mean "try again later".
RETRY_HTTP_STATUSES = frozenset({408, 429})
#: Close codes that mean "you are not welcome": policy violation, and the
#: registered 3000 Unauthorized / 3003 Forbidden. Every other close code is retried.
GIVE_UP_CLOSE_CODES = frozenset({CLOSE_POLICY_VIOLATION, CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN})
#: HTTP statuses that mean the credentials are wrong: the give-up line says so.
CREDENTIAL_STATUSES = frozenset({401, 403})
#: What an HTTP proxy answers CONNECT with when the way on is down for a while: retried
#: (407, 403 and every other refusal are given up).
RETRY_PROXY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: What an HTTP proxy answers CONNECT with when it refuses our proxy credentials, or wants
#: some: 407, and 401 (tinyproxy 1.11 answers a CONNECT with bad credentials so).
PROXY_CREDENTIAL_STATUSES = frozenset({401, 407})
#: SOCKS refusals worth retrying (SocksError.kind): the destination down or unreachable
#: from the proxy, or a general failure. Bad credentials, a ruleset that forbids it, an
#: unsupported request or a proxy that does not speak SOCKS are given up.
RETRY_SOCKS_KINDS = frozenset({"unreachable"})
#: Upgrade answers whose Retry-After sets the next delay (RFC 9110 10.2.3, RFC 6585 4).
RETRY_AFTER_STATUSES = frozenset({429, 503})
#: A Retry-After is honoured up to this many times the backoff's maximum (MAX_RETRY_DELAY).
RETRY_AFTER_CAP = 10


def should_retry(exc: BaseException) -> bool:
    """True when a connection attempt that failed with ``exc`` is worth retrying.

    Retried: network errors, timeouts, DNS failures, HTTP 5xx/408/429 on the
    upgrade, a proxy's 502/503/504 (RETRY_PROXY_STATUSES), a SOCKS proxy that cannot reach the
    server (RETRY_SOCKS_KINDS), close codes outside GIVE_UP_CLOSE_CODES (1000 included: this client keeps
    one long-lived connection, and a server closing it normally is usually a restart),
    protocol errors we detected. Not retried: other HTTP statuses (401, 403, 404,
    redirects), a proxy's 407, 403 and other refusals, SOCKS refusals of the credentials or by rule, certificate and hostname failures, GIVE_UP_CLOSE_CODES, configuration errors,
    a subprotocol the server chose that we did not offer, an extension answer we did not offer
    or cannot honour (the two sides' configurations disagree: trying again changes nothing
    until one of them changes).
    """
    if isinstance(exc, (ConfigError, SubprotocolMismatch, ExtensionMismatch)):
        return False
    if isinstance(exc, ProxyRejected):
        return exc.status in RETRY_PROXY_STATUSES
    if isinstance(exc, SocksError):
        return exc.kind in RETRY_SOCKS_KINDS
    if isinstance(exc, HandshakeRejected):
        return exc.status >= 500 or exc.status in RETRY_HTTP_STATUSES
    if isinstance(exc, ConnectionClosed):
        # Unknown application codes (4000-4999) are retried: giving up forever on a
        # code we do not understand would be worse than a bounded retry loop.
        return exc.code not in GIVE_UP_CLOSE_CODES
    if isinstance(exc, ProtocolError):
        return True
    if isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)):
        return False
    if isinstance(exc, socket.gaierror):
        return True  # a name that does not resolve may resolve later (DNS outage, container start)
    # Network errors, timeouts, and anything else (websocket-client's own exceptions included)
    # count as transient: a bounded retry is safer than a silent death.
    return True


def describe(exc: BaseException) -> str:
    """A one-line human description of why an attempt failed, without secrets."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message or exc.reason}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def parse_retry_after(value: str, received_at: Optional[datetime]) -> Optional[float]:
    """The seconds a ``Retry-After`` value asks for: delay-seconds ("120"), or an HTTP date
    counted from ``received_at`` (a date already past asks for 0). None when the value is
    neither, or a date came without ``received_at``."""
    text = value.strip()
    if text.isdigit() and text.isascii():
        return float(int(text)) if len(text) <= 15 else 1e15  # any cap is far below; no huge ints
    if received_at is None:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, with no claim about the local zone (RFC 5322)
        moment = moment.replace(tzinfo=timezone.utc)
    try:
        return max(0.0, (moment - received_at).total_seconds())
    except (TypeError, OverflowError):  # a naive received_at; a date out of range
        return None


def retry_after(exc: BaseException) -> Optional[float]:
    """The seconds a 429 or 503 upgrade answer asked us to wait (its Retry-After), or None."""
    if not isinstance(exc, HandshakeRejected) or exc.status not in RETRY_AFTER_STATUSES:
        return None
    value = exc.headers.get("retry-after")
    return None if value is None else parse_retry_after(value, exc.received_at)


@dataclass(frozen=True)
class Decision:
    """What follows a failure: wait ``delay`` seconds and try again with ``retry``, or give
    up (``give_up`` says why, in one line)."""

    retry: "Retry"
    delay: Optional[float] = None
    give_up: Optional[str] = None
    #: Why the delay is longer than the backoff's (the server asked), for the log line.
    note: Optional[str] = None


@dataclass(frozen=True)
class Retry:
    """Consecutive failed attempts so far, and the rules that turn a failure into a Decision.

    ``limit``: give up after this many consecutive failed attempts (None: never).
    ``min_uptime``: a connection that lived at least this long was a success, and resets
    the count; one that ended sooner counts as a failed attempt (a server that accepts and
    drops at once must not be hammered).
    """

    backoff: Backoff = Backoff()
    limit: Optional[int] = None
    min_uptime: float = 0.0
    failures: int = 0

    def next(
        self,
        exc: BaseException,
        *,
        retryable: bool,
        uptime: Optional[float] = None,
        rng: RandomSource = random,
    ) -> Decision:
        """The decision after ``exc``: an attempt that failed (``uptime`` None) or a connection
        that ended after ``uptime`` seconds. ``retryable`` is should_retry's answer."""
        lived = self.lived(uptime)
        current = self.reset() if lived else self
        if not retryable:
            return Decision(current, give_up=f"not retrying after {describe(exc)}{_hint(exc)}")
        if lived:
            return self._wait(current, exc, 0, rng)
        retry = replace(self, failures=self.failures + 1)
        if self.limit is not None and retry.failures >= self.limit:
            return Decision(
                retry,
                give_up=f"giving up after {retry.failures} consecutive failed attempts ({describe(exc)}){_hint(exc)}",
            )
        return self._wait(retry, exc, self.failures, rng)

    def _wait(self, retry: "Retry", exc: BaseException, attempt: int, rng: RandomSource) -> Decision:
        """The backoff's delay for ``attempt``, or the server's floor when it asked for one
        (Retry-After, close code 1013): never shorter than either, jitter spread above."""
        backoff = self.backoff
        cap = RETRY_AFTER_CAP * backoff.maximum
        base = backoff.base_delay(attempt)
        asked = retry_after(exc)
        note: Optional[str] = None
        if asked is not None:
            floor = min(asked, cap)
            if floor > base:  # said only when the server's ask lengthens the wait
                capped = f", capped at {_seconds(cap)}s" if asked > cap else ""
                note = f"the server asked to wait {_seconds(asked)}s (Retry-After{capped})"
        elif isinstance(exc, ConnectionClosed) and exc.code == CLOSE_TRY_AGAIN_LATER:
            floor = backoff.maximum
            note = "the server asked to try again later (close code 1013): waiting at least MAX_RETRY_DELAY"
        else:
            return Decision(retry, delay=backoff.delay(attempt, rng))
        spread = base * backoff.jitter * rng.random() if backoff.jitter else 0.0
        # base <= maximum <= cap: the delay is at least the floor and the backoff's, at most the cap.
        return Decision(retry, delay=min(cap, max(floor, base) + spread), note=note)

    def lived(self, uptime: Optional[float]) -> bool:
        """True for a connection that stayed up MIN_UPTIME: a success, whatever ended it."""
        return uptime is not None and uptime >= self.min_uptime

    def after_connection(self, uptime: float) -> "Retry":
        """The count after a connection that lived ``uptime`` seconds (reset if it lived long
        enough), for when no decision follows (reconnect() or stop() asked to act now)."""
        return self.reset() if self.lived(uptime) else self

    def reset(self) -> "Retry":
        """The same rules with no failure counted (after reconnect())."""
        return replace(self, failures=0)


def _seconds(value: float) -> str:
    """Seconds for a log line: "120", "0.4", "86400" (never "8.64e+04")."""
    return f"{value:.1f}".removesuffix(".0")


def _hint(exc: BaseException) -> str:
    if isinstance(exc, ProxyRejected) and exc.status in PROXY_CREDENTIAL_STATUSES:
        return " - the proxy refused its credentials: check the user and password in the proxy URL (PROXY or the *_proxy variable)"
    if isinstance(exc, ProxyRejected) and exc.status == 403:
        return " - the proxy does not allow this destination (its rules)"
    if isinstance(exc, SocksError) and exc.kind == "auth":
        return " - the SOCKS proxy refused its credentials: check the user and password in the proxy URL (PROXY or the *_proxy variable)"
    if isinstance(exc, SocksError) and exc.kind == "protocol":
        return " - is it a SOCKS proxy of this version? (check the proxy URL's scheme)"
    if isinstance(exc, HandshakeRejected) and exc.status in CREDENTIAL_STATUSES:
        return " - check the credentials this client sends"
    return ""
