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

__all__ = ["check_header", "check_headers", "check_url"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def check_header(name: Any, value: Any) -> None:
    """ConfigError unless ``name: value`` is a header line we may send as it is."""
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise ConfigError(f"header name {_show_name(name)} is not a valid HTTP token (letters, digits, !#$%&'*+-.^_`|~).")
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


def check_url(url: str) -> None:
    """ConfigError when the URL would bend the request line (whitespace, control characters)."""
    if _URL_FORBIDDEN.search(url):
        raise ConfigError("url contains whitespace or a control character; percent-encode it (e.g. %20 for a space).")


def _show_name(name: Any) -> str:
    """A header name for an error message: printable, short, never a line break."""
    if not isinstance(name, str):
        return f"of type {type(name).__name__}"
    return repr(name[:40].encode("ascii", "backslashreplace").decode("ascii"))
