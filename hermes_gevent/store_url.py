"""Where the outbox lives: OUTBOX_URL, OUTBOX_PATH and OUTBOX_TABLE, checked, and shown without secrets.

    OUTBOX_URL = "postgresql://user:password@db:5432/app"    PostgreSQL (also postgres:// and
                                                              SQLAlchemy's postgresql+psycopg://)
    OUTBOX_URL = "sqlite:///var/hermes.db"                   SQLite, a relative path (as SQLAlchemy)
    OUTBOX_URL = "sqlite:////var/lib/hermes.db"              SQLite, an absolute path
    OUTBOX_PATH = "/var/lib/hermes.db"                       SQLite (the older setting; not with OUTBOX_URL)

Pure: no driver is imported here (``pg_store.require()`` checks the extra).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any, Optional

from .errors import ConfigError

__all__ = ["OUTBOX_SYNC_MODES", "POSTGRES_SCHEMES", "StoreLocation", "check_sync", "check_table", "locate", "shown_url"]

OUTBOX_SYNC_MODES = ("stop", "always")
#: SQLAlchemy's drivers whose URLs carry libpq's parameters (the outbox itself speaks psycopg 3).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
_TABLE = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,50}$")


class StoreLocation:
    """A checked outbox location: ``kind`` "sqlite" (``path``) or "postgres" (``conninfo``, a
    libpq URL with its secrets; ``shown``, the same without them; ``secrets``, the password as
    written and as meant, for the log's redactor)."""

    __slots__ = ("kind", "path", "conninfo", "shown", "table", "secrets")

    def __init__(self, kind: str, *, path: Optional[str] = None, conninfo: Optional[str] = None,
                 shown: str, table: str, secrets: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.path = path
        self.conninfo = conninfo
        self.shown = shown
        self.table = table
        self.secrets = secrets

    def __repr__(self) -> str:
        return f"StoreLocation({self.kind!r}, {self.shown!r})"


def _split_userinfo(url: str) -> tuple[str, Optional[str], Optional[str], str]:
    """(scheme, user, password, the rest) of ``scheme://user:password@rest``. The user info ends
    at the *last* @ (as SQLAlchemy reads it), so a password may hold / ? # @ : unencoded."""
    scheme, _, rest = url.partition("://")
    at = rest.rfind("@")
    if at < 0:
        return scheme, None, None, rest
    user, colon, password = rest[:at].partition(":")
    return scheme, user, password if colon else None, rest[at + 1:]


def shown_url(url: Any) -> Any:
    """``url`` without its user's password (and a query's password=...), for repr, logs and status."""
    if not isinstance(url, str) or "://" not in url:
        return url
    scheme, user, _, rest = _split_userinfo(url)
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
    except ValueError:
        return f"{scheme}://(unreadable URL)"
    netloc = f"{user}@{parts.netloc}" if user else parts.netloc
    query = urllib.parse.urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_table(table: Any) -> str:
    if not isinstance(table, str) or not _TABLE.match(table):
        raise ConfigError(f"OUTBOX_TABLE must be a table name (letters, digits, _; optionally schema.table), "
                          f"got {table!r}.")
    return table


def check_sync(sync: Any) -> None:
    if sync not in OUTBOX_SYNC_MODES:
        raise ConfigError(f"OUTBOX_SYNC must be one of {', '.join(OUTBOX_SYNC_MODES)}; got {sync!r}.")


def locate(url: Any, path: Any, table: Any = "hermes_outbox") -> Optional[StoreLocation]:
    """The outbox location the settings name, None for memory only; ConfigError naming the setting."""
    table = check_table(table)
    if url is not None and url != "":
        if path is not None and path != "":
            raise ConfigError("OUTBOX_URL and OUTBOX_PATH are both set; set only one (OUTBOX_URL can say "
                              "sqlite:///path).")
        return _from_url(url, table)
    if path is None or path == "":
        return None
    return StoreLocation("sqlite", path=_check_path(path, "OUTBOX_PATH"), shown=str(path), table=table)


def _check_path(path: Any, name: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{name} must be a file path or None, got {path!r}.")
    text = os.fspath(path)
    if not isinstance(text, str) or "\0" in text or not text:
        raise ConfigError(f"{name} must be a file path or None, got {path!r}.")
    return text


def _from_url(url: Any, table: str) -> StoreLocation:
    if not isinstance(url, str):
        raise ConfigError(f"OUTBOX_URL must be a postgresql:// or sqlite:/// URL or None, got a {type(url).__name__}.")
    shown = shown_url(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"OUTBOX_URL must be a postgresql:// or sqlite:/// URL, got {shown!r}.")
    if scheme == "sqlite":
        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path (no host).
        if not rest.startswith("/") or "?" in rest or "#" in rest:
            raise ConfigError(f"OUTBOX_URL {shown!r}: an SQLite URL is sqlite:/// and a file path "
                              "(four slashes for an absolute path).")
        path = urllib.parse.unquote(rest[1:])
        if path in ("", ":memory:"):
            raise ConfigError(f"OUTBOX_URL {shown!r} names no file; an outbox in memory is OUTBOX_URL=None.")
        return StoreLocation("sqlite", path=_check_path(path, "OUTBOX_URL"), shown=url, table=table)
    if scheme not in POSTGRES_SCHEMES:
        raise ConfigError(f"OUTBOX_URL {shown!r}: the scheme must be one of "
                          f"{', '.join(s + '://' for s in POSTGRES_SCHEMES)} or sqlite:///.")
    _, user, password, rest = _split_userinfo(url)
    try:
        parts = urllib.parse.urlsplit(f"postgresql://{rest}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"OUTBOX_URL {shown!r} is malformed ({exc}).") from None
    if parts.fragment or not parts.path.strip("/") and not parts.hostname and not parts.query:
        raise ConfigError(f"OUTBOX_URL {shown!r} is malformed: it names no server or database.")
    # The user and password re-encoded for libpq, whatever they hold (as SQLAlchemy decodes them).
    userinfo = ""
    secrets: tuple[str, ...] = ()
    if user is not None:
        userinfo = urllib.parse.quote(urllib.parse.unquote(user), safe="")
        if password is not None:
            meant = urllib.parse.unquote(password)
            userinfo += ":" + urllib.parse.quote(meant, safe="")
            secrets = tuple({s for s in (password, meant, urllib.parse.quote(meant, safe="")) if s})
        userinfo += "@"
    conninfo = urllib.parse.urlunsplit(("postgresql", userinfo + parts.netloc, parts.path, parts.query, ""))
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    database = parts.path.lstrip("/") or urllib.parse.unquote(user or "")
    return StoreLocation("postgres", conninfo=conninfo, shown=f"postgresql://{host}:{port}/{database}", table=table,
                         secrets=secrets)
