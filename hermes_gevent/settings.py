"""Client settings: declared once, with their defaults; keywords; validation.

``Defaults`` declares every setting as a class constant. ``BaseClient`` inherits
them, so a subclass sets ``MAX_QUEUE_SIZE = 100``; a plain ``WebSocketClient``
takes ``max_queue_size=100``. The keyword is the constant's name in lower case,
with the ``DEFAULT_`` prefix optional (``retry_limit`` or ``default_retry_limit``).
``Settings`` is the resolved, validated, immutable set one client runs with.
Validation raises ConfigError with one sentence that names the setting.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping, Optional, Union

from .backoff import Backoff, check_delays, check_number
from . import deflate, metrics, pg_store
from .errors import ConfigError
from .headers import check_subprotocols
from .proxy import check_proxy_setting, shown_proxy
from .store_url import StoreLocation, check_sync, locate, shown_url

__all__ = ["Defaults", "OVERFLOW_STRATEGIES", "Settings"]

OVERFLOW_STRATEGIES = ("drop_oldest", "drop_newest", "raise")


class Defaults:
    """Every setting and its default; each one's ``#:`` comment is its description in docs/settings.rst."""

    #: Consecutive failed attempts before giving up; ``None``: never give up.
    DEFAULT_RETRY_LIMIT: ClassVar[Optional[int]] = 500
    #: First backoff delay, seconds.
    DEFAULT_RETRY_DELAY: ClassVar[float] = 3
    #: Backoff cap, seconds.
    MAX_RETRY_DELAY: ClassVar[float] = 30
    #: Each delay is shortened by a random fraction up to this; 0 = exact delays.
    RETRY_JITTER: ClassVar[float] = 0.5
    #: Outgoing messages held at most.
    MAX_QUEUE_SIZE: ClassVar[int] = 10000
    #: ``drop_oldest``, ``drop_newest`` or ``raise``.
    QUEUE_OVERFLOW_STRATEGY: ClassVar[str] = "drop_oldest"
    #: ``stop()``'s default budget: flush, close, wait for the loops.
    MAX_THREAD_WAIT_TIME: ClassVar[float] = 10
    #: Seconds between health checks.
    HEALTH_CHECK_INTERVAL: ClassVar[float] = 60
    #: TCP + TLS + HTTP upgrade, together.
    CONNECT_TIMEOUT: ClassVar[float] = 10
    #: Seconds between client pings.
    PING_INTERVAL: ClassVar[float] = 20
    #: No frame at all within this after a ping: the connection is dead.
    PING_TIMEOUT: ClassVar[float] = 10
    #: A connection must stay up this long before ``retry_count`` resets.
    MIN_UPTIME: ClassVar[float] = 5
    #: Largest message accepted, incoming and outgoing (16 MiB).
    MAX_MESSAGE_SIZE: ClassVar[int] = 16 * 2**20
    #: ``None``: acknowledgements off. Seconds: at-least-once delivery with server acknowledgements
    #: (see :doc:`guarantees`); a message unacknowledged this long on a live connection is sent
    #: again.
    ACK_TIMEOUT: ClassVar[Optional[float]] = None
    #: With acknowledgements on, the most messages written but not yet acknowledged; at the limit
    #: the sender waits and messages stay queued.
    MAX_UNACKED: ClassVar[int] = 1000
    #: With acknowledgements on, the key of a message's id in the JSON object sent.
    ACK_ID_KEY: ClassVar[str] = "id"
    #: ``None``: messages live in memory only (unless ``OUTBOX_PATH``).
    #: ``postgresql://user:password@host:port/db`` (also ``postgres://`` and SQLAlchemy's
    #: ``postgresql+psycopg://``, so ``SQLALCHEMY_DATABASE_URI`` can be reused as it is): an outbox
    #: table shared by every host (see :doc:`guarantees`; needs ``pip install
    #: 'hermes_gevent[postgres]'``, else a ``ConfigError`` naming the extra).
    #: ``sqlite:///relative/path`` or ``sqlite:////absolute/path``, as SQLAlchemy writes them: the
    #: SQLite outbox file. Another scheme, a malformed URL, or both ``OUTBOX_URL`` and
    #: ``OUTBOX_PATH`` set: a ``ConfigError`` naming them. The password never reaches a log line,
    #: ``status()``, an exception or ``repr(settings)``.
    OUTBOX_URL: ClassVar[Optional[str]] = None
    #: A file path: an SQLite outbox file that survives restarts and crashes, shared by the
    #: processes of a host (see :doc:`guarantees`); a directory or a path that cannot be opened is a
    #: ``ConfigError`` at ``start()``.
    OUTBOX_PATH: ClassVar[Optional[str]] = None
    #: With an outbox: ``"stop"`` keeps in it what ``stop()`` cannot deliver; ``"always"`` makes
    #: ``send_message`` return only once the message is committed to it.
    OUTBOX_SYNC: ClassVar[str] = "stop"
    #: With PostgreSQL: the table (``schema.table`` allowed) and, beside it, ``<table>_leases``;
    #: created if missing. ``flask hermes outbox-sql`` prints the DDL for apps whose migrations
    #: (Alembic) own the schema.
    OUTBOX_TABLE: ClassVar[str] = "hermes_outbox"
    #: ``True``: from the environment (``https_proxy`` for ``wss://``, ``http_proxy`` for ``ws://``,
    #: then ``all_proxy``; ``no_proxy`` honoured; see :doc:`networks`). ``None`` or ``False``:
    #: never. A URL: that proxy — ``http://[user:password@]host:port`` (HTTP CONNECT),
    #: ``socks5://``, ``socks5h://``, ``socks4://`` (SOCKS needs ``pip install
    #: 'hermes_gevent[socks]'``). In a Flask config the strings ``"true"``, ``"false"``, ``"none"``,
    #: ``"off"``, ``""``… mean ``True`` and ``None``, not a proxy host.
    PROXY: ClassVar[Union[bool, str, None]] = True
    #: ``None``: no limit. Messages per second: the sender never writes data messages faster (a
    #: token bucket: a burst of up to one second's worth, then this rate; resends count, pings and
    #: pongs do not); the queue absorbs what comes faster, with ``QUEUE_OVERFLOW_STRATEGY`` as
    #: usual. **A server's limit is per host, and every worker of the host has its own client**:
    #: with ``workers = 4``, set a quarter of it.
    MAX_SEND_RATE: ClassVar[Optional[float]] = None
    #: Subprotocols to offer in the upgrade (``Sec-WebSocket-Protocol``), most preferred first: a
    #: list of tokens (a bare string is a ``ConfigError``). The one the server chose is
    #: ``status()["subprotocol"]``; a server that chooses none is accepted (``None``); one that
    #: chooses a subprotocol we did not offer fails the handshake (``SubprotocolMismatch``) and is
    #: **not retried** (the two sides' configurations disagree: retrying changes nothing until one
    #: changes; ``reconnect()`` tries again).
    SUBPROTOCOLS: ClassVar[tuple[str, ...]] = ()
    #: ``"deflate"``: offer permessage-deflate (RFC 7692) as ``permessage-deflate;
    #: client_max_window_bits``; a server that agrees gets compressed messages (those under
    #: ``COMPRESSION_THRESHOLD`` bytes go plain) and may send compressed ones, inflated within
    #: ``MAX_MESSAGE_SIZE``. The negotiated extension is ``status()["compression"]``. A server that
    #: agrees to another extension or to parameters this client cannot honour fails the handshake
    #: (``ExtensionMismatch``, not retried). ``None``: offer nothing (see :doc:`networks` for what
    #: compression costs and when to turn it off).
    COMPRESSION: ClassVar[Optional[str]] = "deflate"
    #: zlib's compression level for our messages, 1 (fastest) to 9 (smallest).
    COMPRESSION_LEVEL: ClassVar[int] = deflate.LEVEL
    #: Our compressor's window, 9 to 15 bits (2^bits bytes of history; the server may ask for
    #: less). Memory per connection grows with it.
    COMPRESSION_WINDOW_BITS: ClassVar[int] = deflate.WINDOW_BITS
    #: zlib's memLevel for our compressor, 1 to 9: memory for its internal state.
    COMPRESSION_MEM_LEVEL: ClassVar[int] = deflate.MEM_LEVEL
    #: Messages shorter than this many bytes are sent uncompressed (compressing them costs more
    #: than it saves).
    COMPRESSION_THRESHOLD: ClassVar[int] = deflate.THRESHOLD
    #: ``True``: compress each message alone, and say so in the offer
    #: (``client_no_context_takeover``): the server keeps no window for this client between
    #: messages, at the cost of a worse ratio on streams of similar messages.
    COMPRESSION_NO_CONTEXT_TAKEOVER: ClassVar[bool] = False
    #: ``True``: record Prometheus metrics (see :doc:`operations`). Needs the
    #: ``hermes_gevent[metrics]`` extra (prometheus_client); without it, ``True`` is a
    #: ``ConfigError`` naming the extra. Anything but ``True``/``False`` is a ``ConfigError``. Off,
    #: the client never imports prometheus_client.
    METRICS: ClassVar[bool] = False


_NAMES: tuple[str, ...] = tuple(Defaults.__annotations__)


class Settings(Defaults):
    """The settings one client runs with: ``Settings(MAX_QUEUE_SIZE=100)`` overrides defaults."""

    __slots__ = _NAMES

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(_NAMES))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}; settings are: {', '.join(_NAMES)}.")
        for name in _NAMES:
            value = values.get(name, getattr(Defaults, name))
            if name == "SUBPROTOCOLS" and (value is None or isinstance(value, list)):
                value = tuple(value or ())  # immutable, like every other setting (and hashable); None: none
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Settings are immutable: build new ones with Settings.resolve()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Settings) and self.values() == other.values()

    def __hash__(self) -> int:
        return hash(tuple(self.values().items()))

    def __repr__(self) -> str:
        shown = self.values()
        if isinstance(shown["PROXY"], str):
            shown["PROXY"] = shown_proxy(shown["PROXY"])  # never its credentials
        shown["OUTBOX_URL"] = shown_url(shown["OUTBOX_URL"])  # never the database's password
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _NAMES}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return _NAMES

    @classmethod
    def keyword_map(cls) -> dict[str, str]:
        """Every accepted keyword -> the constant it sets."""
        mapping = {}
        for name in _NAMES:
            mapping[name.lower()] = name
            if name.startswith("DEFAULT_"):
                mapping[name[len("DEFAULT_"):].lower()] = name
        return mapping

    @classmethod
    def resolve(cls, owner: type, keywords: Mapping[str, Any]) -> "Settings":
        """Class constants of ``owner`` overridden by ``keywords``, validated."""
        values = {name: getattr(owner, name) for name in _NAMES}
        mapping = cls.keyword_map()
        for key, value in keywords.items():
            values[mapping[key]] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def outbox_location(self) -> Optional[StoreLocation]:
        """Where these settings keep the outbox; None for memory only."""
        return locate(self.OUTBOX_URL, self.OUTBOX_PATH, self.OUTBOX_TABLE)

    def compression_options(self) -> Optional[deflate.Options]:
        """Our side of permessage-deflate; None when compression is off."""
        if self.COMPRESSION is None:
            return None
        return deflate.Options(self.COMPRESSION_LEVEL, self.COMPRESSION_WINDOW_BITS, self.COMPRESSION_MEM_LEVEL,
                               self.COMPRESSION_THRESHOLD, self.COMPRESSION_NO_CONTEXT_TAKEOVER)

    def backoff(self) -> Backoff:
        """The reconnection delays these settings ask for."""
        return Backoff(self.DEFAULT_RETRY_DELAY, self.MAX_RETRY_DELAY, jitter=self.RETRY_JITTER)

    def validate(self) -> None:
        check_delays(
            self.DEFAULT_RETRY_DELAY, self.MAX_RETRY_DELAY, self.RETRY_JITTER,
            names=("DEFAULT_RETRY_DELAY", "MAX_RETRY_DELAY", "RETRY_JITTER"),
        )
        if self.DEFAULT_RETRY_LIMIT is not None:
            _integer("DEFAULT_RETRY_LIMIT", self.DEFAULT_RETRY_LIMIT, "a positive integer or None (never give up)")
        _integer("MAX_QUEUE_SIZE", self.MAX_QUEUE_SIZE, "a positive integer")
        _integer("MAX_MESSAGE_SIZE", self.MAX_MESSAGE_SIZE, "a positive integer")
        if self.QUEUE_OVERFLOW_STRATEGY not in OVERFLOW_STRATEGIES:
            raise ConfigError(
                f"QUEUE_OVERFLOW_STRATEGY must be one of {', '.join(OVERFLOW_STRATEGIES)}; "
                f"got {self.QUEUE_OVERFLOW_STRATEGY!r}."
            )
        for name in ("MAX_THREAD_WAIT_TIME", "HEALTH_CHECK_INTERVAL", "CONNECT_TIMEOUT", "PING_INTERVAL", "PING_TIMEOUT"):
            check_number(name, getattr(self, name), allow_zero=False)
        check_number("MIN_UPTIME", self.MIN_UPTIME, allow_zero=True)
        if self.ACK_TIMEOUT is not None:
            check_number("ACK_TIMEOUT", self.ACK_TIMEOUT, allow_zero=False)
        _integer("MAX_UNACKED", self.MAX_UNACKED, "a positive integer")
        if not isinstance(self.ACK_ID_KEY, str) or not self.ACK_ID_KEY:
            raise ConfigError(f"ACK_ID_KEY must be a non-empty string, got {self.ACK_ID_KEY!r}.")
        check_sync(self.OUTBOX_SYNC)
        location = self.outbox_location()
        if location is not None and location.kind == "postgres":
            pg_store.require()  # ConfigError naming the extra when psycopg is missing
        check_proxy_setting(self.PROXY)
        rate = self.MAX_SEND_RATE
        if rate is not None and (
            not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate <= 0
        ):
            raise ConfigError(f"MAX_SEND_RATE must be a positive number of messages per second or None, got {rate!r}.")
        check_subprotocols(self.SUBPROTOCOLS)
        if self.COMPRESSION not in (None, "deflate"):
            raise ConfigError(f"COMPRESSION must be \"deflate\" or None, got {self.COMPRESSION!r}.")
        _in_range("COMPRESSION_LEVEL", self.COMPRESSION_LEVEL, 1, 9)
        _in_range("COMPRESSION_WINDOW_BITS", self.COMPRESSION_WINDOW_BITS, deflate.MIN_WINDOW_BITS, deflate.MAX_WINDOW_BITS)
        _in_range("COMPRESSION_MEM_LEVEL", self.COMPRESSION_MEM_LEVEL, 1, 9)
        _in_range("COMPRESSION_THRESHOLD", self.COMPRESSION_THRESHOLD, 0, None)
        if not isinstance(self.COMPRESSION_NO_CONTEXT_TAKEOVER, bool):
            raise ConfigError(f"COMPRESSION_NO_CONTEXT_TAKEOVER must be True or False, "
                              f"got {self.COMPRESSION_NO_CONTEXT_TAKEOVER!r}.")
        if not isinstance(self.METRICS, bool):
            raise ConfigError(f"METRICS must be True or False, got {self.METRICS!r}.")
        if self.METRICS:
            metrics.require()  # ConfigError naming the extra when prometheus_client is missing


def _in_range(name: str, value: Any, low: int, high: Optional[int]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        wanted = f"an integer from {low} to {high}" if high is not None else f"an integer, at least {low}"
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")


def _integer(name: str, value: Any, wanted: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be {wanted}, got {value!r}.")

