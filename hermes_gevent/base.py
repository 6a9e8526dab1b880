"""BaseClient: the contract subclasses override, the singleton, the hooks.

Subclasses override ``url``, ``identifier``, ``last_connected_at``,
``headers``, ``origin`` and ``handle_message``; or a plain client takes the same things as
keywords (``url=``, ``identifier=``, ``headers=``, ``origin=``, ``on_message=``...).
Nothing here does I/O; the client and its loops live in ``client.py`` and the modules it names.
"""

from __future__ import annotations

import os
import ssl
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Iterable, Mapping, Optional, TypeVar, Union

from . import acks, retry
from .errors import ConfigError
from .headers import check_header, check_headers, check_origin
from .settings import Defaults, Settings

__all__ = ["BaseClient", "Headers", "iso_utc"]

Headers = Mapping[str, str]
_C = TypeVar("_C", bound="BaseClient")
_HOOKS = ("on_message", "on_open", "on_close", "on_error", "on_drop", "on_give_up")


class BaseClient(Defaults):
    """The overridable surface of a hermes_gevent client (see WebSocketClient). Every setting
    in ``Defaults`` is a class constant here, and a lower-case keyword of the constructor."""

    #: Environment variables read by the default url()/identifier() and the log switch.
    URL_ENV: ClassVar[str] = "HERMES_WS_URL"
    IDENTIFIER_ENV: ClassVar[str] = "HERMES_WS_IDENTIFIER"
    LOG_ENV: ClassVar[str] = "HERMES_WS_LOG"
    #: Header names the default headers() uses.
    IDENTIFIER_HEADER: ClassVar[str] = "X-Hermes-Identifier"
    LAST_CONNECTED_AT_HEADER: ClassVar[str] = "X-Hermes-Last-Connected-At"

    _instances: ClassVar[dict[type, "BaseClient"]] = {}

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        identifier: Optional[str] = None,
        headers: Union[Headers, Callable[[], Headers], None] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        origin: Optional[str] = None,
        log: Optional[bool] = None,
        name: Optional[str] = None,
        **options: Any,
    ) -> None:
        hooks = {key: options.pop(key) for key in _HOOKS if key in options}
        unknown = sorted(set(options) - set(Settings.keyword_map()))
        if unknown:
            raise ConfigError(
                f"unknown setting {unknown[0]!r}; settings are: {', '.join(sorted(Settings.keyword_map()))}."
            )
        for key, hook in hooks.items():
            if hook is not None and not callable(hook):
                raise ConfigError(f"{key} must be callable, got {hook!r}.")
        self.settings = Settings.resolve(type(self), options)
        self.name = name or type(self).__name__
        self._url = url
        self._identifier = identifier
        self._extra_headers = headers
        check_origin(origin)
        self._origin = origin
        self._check_static_headers()
        self._hooks = hooks
        self._message_hook = hooks.get("on_message")
        self._log_enabled = log
        if ssl_context is not None and ca_file is not None:
            raise ConfigError("give ssl_context or ca_file, not both.")
        self.ssl_context = ssl_context
        self.ca_file = ca_file
        self._last_connected_at: Optional[datetime] = None
        self._new_id = acks.IdSource()

    def _check_static_headers(self) -> None:
        """Header values known at construction fail here; those from overridable methods
        fail the attempt that reads them (see the client's connect)."""
        for name in (self.IDENTIFIER_HEADER, self.LAST_CONNECTED_AT_HEADER):
            check_header(name, "")
        if self._identifier is not None:
            check_header(self.IDENTIFIER_HEADER, str(self._identifier))  # headers() sends str(identifier)
        if self._extra_headers is not None and not callable(self._extra_headers):
            check_headers(self._extra_headers)

    # -- singleton ---------------------------------------------------------------

    @classmethod
    def instance(cls: type[_C], **options: Any) -> _C:
        """The one client of this class in this process (made on first call)."""
        client = BaseClient._instances.get(cls)
        if client is None:
            client = BaseClient._instances[cls] = cls(**options)
        elif options:
            raise ConfigError(f"{cls.__name__}.instance() already exists; pass settings on the first call only.")
        assert isinstance(client, cls)
        return client

    @classmethod
    def reset_instance(cls) -> None:
        """Forget this class's instance (tests; the caller stops it first)."""
        BaseClient._instances.pop(cls, None)

    # -- the overridable contract -------------------------------------------------

    def url(self) -> str:
        """The ws:// or wss:// URL to connect to; read on every attempt."""
        url = self._url or os.environ.get(self.URL_ENV)
        if not url:
            raise ConfigError(f"{self.URL_ENV} is not set: give the client a url (keyword, subclass or environment).")
        return url

    def identifier(self) -> Optional[str]:
        """Who this client is, sent in a header on every attempt."""
        return self._identifier or os.environ.get(self.IDENTIFIER_ENV)

    def last_connected_at(self) -> Optional[str]:
        """When the last connection succeeded (ISO 8601, UTC), None before the first."""
        return iso_utc(self._last_connected_at)

    def headers(self) -> dict[str, str]:
        """Headers for the upgrade request; called anew on every attempt."""
        headers: dict[str, str] = {}
        identifier = self.identifier()
        if identifier:
            headers[self.IDENTIFIER_HEADER] = str(identifier)
        last = self.last_connected_at()
        if last:
            headers[self.LAST_CONNECTED_AT_HEADER] = str(last)
        extra = self._extra_headers() if callable(self._extra_headers) else self._extra_headers
        if extra:
            headers.update(extra)
        return headers

    def origin(self) -> Optional[str]:
        """The ``Origin`` header of the upgrade request (None: websocket-client's default,
        ``http(s)://host[:port]`` of the URL, unless ``headers()`` has an Origin); read on every
        attempt."""
        return self._origin

    def handle_message(self, msg: Union[str, bytes]) -> None:
        """Called for every message received: str for text, bytes for binary."""
        hook = self._message_hook
        if hook is not None:
            hook(msg)

    def stamp(self, message: Any) -> tuple[Any, str]:
        """With ACK_TIMEOUT set: the message to send and its id (default: a dict, sent as JSON
        with a string id under ACK_ID_KEY; TypeError for anything else). Override it, with
        ``acked_ids``, for another wire convention."""
        return acks.stamp_json(message, self.settings.ACK_ID_KEY, self._new_id)

    def acked_ids(self, message: Union[str, bytes]) -> Optional[Iterable[Any]]:
        """With ACK_TIMEOUT set: the ids a received message acknowledges, or None when it is
        not an acknowledgement (it then goes to handle_message). Default: ``{"ack": id}`` or
        ``{"ack": [ids]}``."""
        return acks.acked_ids_json(message)

    def should_retry(self, exc: BaseException) -> bool:
        """Whether to try again after ``exc``; see ``hermes_gevent.retry``."""
        return retry.should_retry(exc)

    # -- optional hooks (no-ops unless given as keywords) -------------------------

    def on_open(self) -> None:
        """A connection opened (every time, reconnections too)."""
        self._call_hook("on_open")

    def on_close(self, code: int, reason: str) -> None:
        """A connection ended, with its close code and reason (1006: no close frame)."""
        self._call_hook("on_close", code, reason)

    def on_error(self, exc: BaseException) -> None:
        """An attempt failed or a connection was lost, with the exception that says why."""
        self._call_hook("on_error", exc)

    def on_drop(self, msg: Union[str, bytes], reason: str) -> None:
        """A message was accepted and then lost: ``reason`` is "overflow", "stopped" or "unacked"."""
        self._call_hook("on_drop", msg, reason)

    def on_give_up(self, exc: BaseException) -> None:
        """The retry limit was reached (or an error that is not retried came): the client stopped
        trying until ``reconnect()``."""
        self._call_hook("on_give_up", exc)

    def _call_hook(self, name: str, *args: Any) -> None:
        hook = self._hooks.get(name)
        if hook is not None:
            hook(*args)

    def mark_connected(self) -> None:
        """Record that a connection succeeded just now (the default last_connected_at reads it)."""
        self._last_connected_at = datetime.now(timezone.utc)


def iso_utc(moment: Optional[datetime]) -> Optional[str]:
    """The one timestamp format of this library: ISO 8601, UTC, whole seconds, "Z"."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
