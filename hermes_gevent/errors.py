"""The exceptions hermes_gevent raises, and which layer raises each.

    HermesError                      base of everything raised here
    ├── ConfigError                  settings: raised by the constructor or start()
    ├── QueueFull                    send_message() under the "raise" overflow strategy
    └── ConnectionFailed             transport: one connection attempt or connection ended
        ├── ConnectTimeout           TCP + TLS + upgrade took longer than CONNECT_TIMEOUT
        ├── HandshakeRejected        the server answered the upgrade with another HTTP status
        ├── SubprotocolMismatch      the server chose a subprotocol this client did not offer
        ├── ExtensionMismatch        the server agreed to an extension this client did not offer or cannot honour
        ├── AnswerTooLarge           the server's upgrade answer went past its limits (upgrade.py)
        ├── ProxyError               the proxy (PROXY) would not open the tunnel (proxy.py)
        │   ├── ProxyRejected        an HTTP proxy answered CONNECT with another status than 2xx
        │   └── SocksError           a SOCKS proxy refused, or did not speak SOCKS
        ├── ConnectionClosed         the server sent a close frame, or the TCP stream ended
        ├── ProtocolError            the server broke RFC 6455; we close with .code
        └── PingTimeout              no frame arrived within PING_TIMEOUT after a ping

TypeError and ValueError (not HermesError) come from send_message() for a message that
cannot be encoded, so the caller sees them like any other bad argument.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Optional, Sequence

__all__ = ["AnswerTooLarge", "ConfigError", "ConnectTimeout", "ConnectionClosed", "ConnectionFailed", "ExtensionMismatch",
           "HandshakeRejected",
           "HermesError", "ProxyError", "ProxyRejected", "SocksError", "PingTimeout", "ProtocolError", "QueueFull",
           "SubprotocolMismatch"]


class HermesError(Exception):
    """Base class of every exception hermes_gevent raises."""


class ConfigError(HermesError, ValueError):
    """A setting is missing or invalid; the message names the setting."""


class QueueFull(HermesError):
    """The send queue is at MAX_QUEUE_SIZE and the overflow strategy is "raise"."""


class ConnectionFailed(HermesError):
    """A connection attempt failed, or a live connection ended."""


class ConnectTimeout(ConnectionFailed):
    """Connecting (TCP, TLS and the HTTP upgrade together) exceeded CONNECT_TIMEOUT."""


class HandshakeRejected(ConnectionFailed):
    """The server answered the upgrade request with ``status`` instead of 101.

    ``headers``: the answer's headers, names in lower case (empty when the answer could not
    be read); ``received_at``: when the answer came (UTC), the moment a ``Retry-After`` date
    is counted from (retry.py)."""

    def __init__(self, status: int, reason: str = "", *, headers: Optional[Mapping[str, str]] = None,
                 received_at: Optional[datetime] = None) -> None:
        self.status = status
        self.reason = reason
        self.headers: Mapping[str, str] = dict(headers or {})
        self.received_at = received_at
        super().__init__(f"server answered the upgrade with HTTP {status} {reason}".rstrip())


class ExtensionMismatch(ConnectionFailed):
    """The server's 101 agreed to an extension (or parameters of one) this client did not offer
    or cannot honour: RFC 6455 says the client must fail the connection. Not retried (see
    retry.should_retry): the two sides' configurations disagree until one of them changes."""


class SubprotocolMismatch(ConnectionFailed):
    """The server's 101 named a subprotocol (``chosen``) this client did not offer: RFC 6455
    says the client must fail the connection. Not retried (see retry.should_retry)."""

    def __init__(self, chosen: str, offered: Sequence[str]) -> None:
        self.chosen = chosen
        self.offered = tuple(offered)
        listed = ", ".join(self.offered) if self.offered else "none"
        super().__init__(
            f"the server chose subprotocol {chosen[:60]!r}, which this client did not offer (offered: {listed})"
        )


class AnswerTooLarge(ConnectionFailed):
    """The server's upgrade answer went past MAX_ANSWER_BYTES or MAX_ANSWER_HEADERS without its end."""


class ProxyError(ConnectionFailed):
    """The proxy would not open the tunnel. ``proxy`` names it as scheme://host:port: never
    with its credentials, nor does the message carry them."""

    def __init__(self, proxy: str, message: str) -> None:
        self.proxy = proxy
        super().__init__(message)


class ProxyRejected(ProxyError):
    """An HTTP proxy answered CONNECT with ``status`` (407: it refused our credentials or
    wanted some; 403: it does not allow this destination; 502/503/504: retried)."""

    def __init__(self, proxy: str, status: int, reason: str = "") -> None:
        self.status = status
        self.reason = reason
        super().__init__(proxy, f"proxy {proxy} answered CONNECT with HTTP {status} {reason}".rstrip())


class SocksError(ProxyError):
    """A SOCKS proxy refused the tunnel, or its answer was not SOCKS. ``kind`` is "auth" (the
    credentials: given up), "refused" (its rules forbid the destination: given up),
    "unsupported" (command or address type: given up), "protocol" (not a SOCKS proxy of this
    version: given up) or "unreachable" (the destination is down or unreachable from the
    proxy, a general failure: retried); ``code`` is the SOCKS reply code when there was one."""

    def __init__(self, proxy: str, kind: str, detail: str, code: int | None = None) -> None:
        self.kind = kind
        self.code = code
        super().__init__(proxy, f"SOCKS proxy {proxy} refused the tunnel: {detail}")


class ConnectionClosed(ConnectionFailed):
    """The connection ended: ``code`` is the close code (1006 when no close frame came)."""

    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        text = f"connection closed with code {code}"
        super().__init__(f"{text} ({reason})" if reason else text)


class ProtocolError(ConnectionFailed):
    """The server broke the WebSocket protocol; the client closes with ``code``.

    1002 protocol error, 1007 invalid UTF-8 in a text message, 1009 message too big.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{reason} (closing with {code})")


class PingTimeout(ConnectionFailed):
    """No frame arrived within PING_TIMEOUT after a ping: the connection is dead."""
