"""Retry or give up: a decision taken from the exception alone, with no I/O.

The reconnect loop obeys ``should_retry(exc)``; a client subclass can override
its own ``should_retry`` method to change the decision.
"""

from __future__ import annotations

import socket
import ssl

from .errors import ConfigError, ConnectionClosed, HandshakeRejected, ProtocolError

#: HTTP statuses on the upgrade that mean "try again later".
RETRY_HTTP_STATUSES = frozenset({408, 429})
#: Close codes after which reconnecting makes sense (server going away, restart,
#: overload, abnormal end, bad gateway) - and 1000, since this client keeps one
#: long-lived connection and a server closing it normally is usually a restart.
RETRY_CLOSE_CODES = frozenset({1000, 1001, 1006, 1011, 1012, 1013, 1014})
#: Close codes that mean "you are not welcome": policy violation, and the
#: registered 3000 Unauthorized / 3003 Forbidden.
GIVE_UP_CLOSE_CODES = frozenset({1008, 3000, 3003})


def should_retry(exc: BaseException) -> bool:
    """True when a connection attempt that failed with ``exc`` is worth retrying.

    Retried: network errors, timeouts, DNS failures, HTTP 5xx/408/429 on the
    upgrade, close codes in RETRY_CLOSE_CODES, protocol errors we detected.
    Not retried: other HTTP statuses (401, 403, 404, redirects), certificate
    and hostname failures, close codes in GIVE_UP_CLOSE_CODES, configuration errors.
    """
    if isinstance(exc, ConfigError):
        return False
    if isinstance(exc, HandshakeRejected):
        return exc.status >= 500 or exc.status in RETRY_HTTP_STATUSES
    if isinstance(exc, ConnectionClosed):
        if exc.code in GIVE_UP_CLOSE_CODES:
            return False
        # Unknown application codes (4000-4999) are retried: giving up forever on a
        # code we do not understand would be worse than a bounded retry loop.
        return True
    if isinstance(exc, ProtocolError):
        return True
    if isinstance(exc, ssl.SSLCertVerificationError):
        return False
    if isinstance(exc, ssl.CertificateError):  # hostname mismatch on older Pythons
        return False
    if isinstance(exc, socket.gaierror):
        # A name that does not resolve may resolve later (DNS outage, container start).
        return True
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return True
    # Anything else (websocket-client's own exceptions included) is treated as a
    # transient network problem: a bounded retry is safer than a silent death.
    return True


def describe(exc: BaseException) -> str:
    """A one-line human description of why an attempt failed, without secrets."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {exc.verify_message or exc.reason}"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
