"""What may go into the upgrade request: header names and values, and the URL.

Checked before anything is sent, so a value read from a database or an
environment variable can never add a header of its own ("evil\\r\\nX-Injected:
yes") or bend the request line. Errors name the header or the setting, never the
value: it may be a secret.

- Names are RFC 7230 tokens.
- Values are visible ASCII, spaces and tabs. No CR, LF, NUL or other control
  character; and no non-ASCII character either: HTTP allows Latin-1 there, but
  websocket-client writes the request as UTF-8, so such a value would reach the
  server as other bytes than it means. Percent-encode or base64 such values.
- URLs have no whitespace and no control character (percent-encode them).

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from .errors import ConfigError

__all__ = ["check_header", "check_headers", "check_request", "check_url", "HANDSHAKE_OWN", "RESERVED"]

_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_CHARS = r"[\t\x20-\x7e]*"
_TOKEN = re.compile(_TOKEN_CHARS)
_FIELD_VALUE = re.compile(_FIELD_CHARS)
_HEADER_LINE = re.compile(f"({_TOKEN_CHARS}):{_FIELD_CHARS}")
_URL_ALLOWED = re.compile(r"[\x21-\x7e]+")
#: Headers websocket-client writes itself: a second copy would confuse the upgrade or the framing.
RESERVED = frozenset({"host", "upgrade", "connection", "content-length", "transfer-encoding"})


def check_header(name: Any, value: Any) -> None:
    """ConfigError unless ``name: value`` is a header line we may send as it is."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(f"header name {_show_name(name)} is not a valid HTTP token (letters, digits, !#$%&'*+-.^_`|~).")
    if name.lower() in RESERVED or name.lower().startswith("sec-websocket-"):
        raise ConfigError(f"header {name} is written by the WebSocket handshake itself and cannot be set.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # sent as its decimal text, as websocket-client would
    if not isinstance(value, str):
        raise ConfigError(f"header {name} must have a str value, not {type(value).__name__}.")
    if not _FIELD_VALUE.fullmatch(value):
        raise ConfigError(
            f"header {name} has a value with a line break, a control or a non-ASCII character "
            "(refused: it could inject headers; percent-encode or base64 such values)."
        )


def check_headers(headers: Any) -> None:
    """check_header for every item of a mapping."""
    if not isinstance(headers, Mapping):
        raise ConfigError(f"headers must be a mapping of names to values, not {type(headers).__name__}.")
    for name, value in headers.items():
        check_header(name, value)


def check_url(url: Any) -> None:
    """ConfigError unless the URL is printable ASCII without spaces (it goes into the request line)."""
    if not isinstance(url, str):
        raise ConfigError(f"url must be a str, not {type(url).__name__}.")
    if not _URL_ALLOWED.fullmatch(url):
        raise ConfigError(
            "url contains whitespace, a control or a non-ASCII character; percent-encode it (e.g. %20 for a space)."
        )


#: The header lines websocket-client writes itself (Cookie: from its cookie jar, which servers fill).
HANDSHAKE_OWN = frozenset({"host", "upgrade", "connection", "origin", "sec-websocket-key", "sec-websocket-version",
                           "cookie"})


def check_request(request: str, ours: Any) -> None:
    """The whole upgrade request as it will be written: every header line valid, and each one
    either ours (the names in ``ours``) or one the handshake writes itself, once. A cookie a
    server set with a line break inside cannot add a line of its own."""
    head, _, _ = request.partition("\r\n\r\n")
    allowed = HANDSHAKE_OWN | {name.lower() for name in ours}
    seen: set[str] = set()
    for line in head.split("\r\n")[1:]:
        match = _HEADER_LINE.fullmatch(line)
        name = match.group(1).lower() if match else None
        if name is None or name not in allowed or name in seen:
            # Not named: the line may come from what a server put in a cookie.
            raise ConfigError(
                "the upgrade request would carry an unexpected or invalid header line (after a Cookie, "
                "one the server set with a line break inside?); refused before sending."
            )
        seen.add(name)


def _show_name(name: Any) -> str:
    """A header name for an error message: printable, short, never a line break."""
    if not isinstance(name, str):
        return f"of type {type(name).__name__}"
    return repr(name[:40].encode("ascii", "backslashreplace").decode("ascii"))
