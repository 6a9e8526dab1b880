"""Logging: the formatter, the switch, and redaction of secrets.

The library logs through the stdlib logger ``hermes_gevent`` (children:
``hermes_gevent.client``...), which carries only a NullHandler until the
application configures logging or turns on the built-in stderr handler with
``HERMES_WS_LOG=true`` or ``log=True``. Every line that could carry a URL or a
header passes through ``Redactor`` first.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["ClientLog", "HermesFormatter", "REDACTED", "ROOT_LOGGER_NAME", "RateLimitedCounter", "Redactor", "SECRET_HEADERS",
           "enable_stderr_logging", "env_flag", "is_secret_name", "redact_url", "secrets_in"]

ROOT_LOGGER_NAME = "hermes_gevent"
logging.getLogger(ROOT_LOGGER_NAME).addHandler(logging.NullHandler())

REDACTED = "***"
#: Header names whose values are secrets.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
#: Header or query-parameter names that look like they carry a credential.
_SECRET_NAME = re.compile(r"token|secret|passw|pwd|auth|key|sig|session|jwt|credential|cookie", re.I)
#: Shortest value we redact by search-and-replace (shorter ones would mangle text).
_MIN_SECRET_LENGTH = 4
_LEVEL_NAMES = {"WARNING": "WARN", "CRITICAL": "FATAL"}


def env_flag(value: str | None) -> bool:
    """True for "1", "true", "yes", "on" (any case)."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_secret_name(name: str) -> bool:
    """True when a header or query parameter called ``name`` carries a credential."""
    return name.lower() in SECRET_HEADERS or bool(_SECRET_NAME.search(name))


def redact_url(url: str) -> str:
    """The URL with its password and credential-like query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_in(url: str | None, headers: Mapping[str, str] | None) -> set[str]:
    """The secret strings in a URL and a header mapping, for the Redactor."""
    found: set[str] = set()
    if url:
        try:
            parts = urlsplit(url)
            if parts.password:
                found.add(parts.password)
            for key, value in parse_qsl(parts.query, keep_blank_values=True):
                if is_secret_name(key):
                    found.add(value)
        except ValueError:
            pass
    for name, value in (headers or {}).items():
        if is_secret_name(name) and value:
            value = str(value)
            found.add(value)
            # "Bearer abc" - the credential alone may show up elsewhere too.
            found.update(part for part in value.split() if len(part) >= 8)
    return {s for s in found if len(s) >= _MIN_SECRET_LENGTH}


class Redactor:
    """Replaces every secret the client has seen with *** in a piece of text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def learn(self, secrets: Iterable[str]) -> None:
        self._secrets.update(secrets)

    def __call__(self, text: str) -> str:
        # Longest first, so "Bearer abc" is replaced before "abc".
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class HermesFormatter(logging.Formatter):
    """``{INFO}: [MyClient][14:30:15]: connected to wss://host/path``"""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelname, record.levelname)
        client = getattr(record, "client", record.name)
        line = f"{{{level}}}: [{client}][{self.formatTime(record, self.datefmt)}]: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_stderr_handler: logging.Handler | None = None


def enable_stderr_logging(level: int = logging.INFO) -> logging.Handler:
    """Add (once per process) a stderr handler in the original client's format."""
    global _stderr_handler
    logger = logging.getLogger(ROOT_LOGGER_NAME)
    if _stderr_handler is None:
        _stderr_handler = logging.StreamHandler(sys.stderr)
        _stderr_handler.setFormatter(HermesFormatter())
        logger.addHandler(_stderr_handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return _stderr_handler


class ClientLog:
    """A client's logger: adds the client's name, redacts secrets, truncates bodies."""

    BODY_PREVIEW = 200

    def __init__(self, name: str, redactor: Redactor) -> None:
        self.name = name
        self.logger = logging.getLogger(f"{ROOT_LOGGER_NAME}.client")
        self.redact = redactor

    def log(self, level: int, message: str, *, exc_info: bool = False) -> None:
        if self.logger.isEnabledFor(level):
            self.logger.log(level, self.redact(message), exc_info=exc_info, extra={"client": self.name})

    def debug(self, message: str) -> None:
        self.log(logging.DEBUG, message)

    def info(self, message: str) -> None:
        self.log(logging.INFO, message)

    def warning(self, message: str) -> None:
        self.log(logging.WARNING, message)

    def error(self, message: str, *, exc_info: bool = False) -> None:
        self.log(logging.ERROR, message, exc_info=exc_info)

    def body(self, direction: str, payload: str | bytes) -> None:
        """Log a message body at DEBUG, truncated."""
        if not self.logger.isEnabledFor(logging.DEBUG):
            return
        preview = payload[: self.BODY_PREVIEW]
        more = f" (+{len(payload) - len(preview)} more)" if len(payload) > len(preview) else ""
        self.debug(f"{direction} {len(payload)} {'chars' if isinstance(payload, str) else 'bytes'}: {preview!r}{more}")


class RateLimitedCounter:
    """Counts events and says when a summary line is due, at most once per ``period``.

    Pure: the caller passes the current time, so it is tested without a clock.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self.pending = 0
        self._last_report: float | None = None

    def add(self, now: float) -> int:
        """Count one event; return how many to report now (0: stay quiet)."""
        self.pending += 1
        if self._last_report is None or now - self._last_report >= self.period:
            count, self.pending = self.pending, 0
            self._last_report = now
            return count
        return 0

    def flush(self) -> int:
        count, self.pending = self.pending, 0
        return count
