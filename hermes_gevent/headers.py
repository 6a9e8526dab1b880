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
- Subprotocols (SUBPROTOCOLS) are tokens, like header names (RFC 6455 4.1); ``origin=``
  is checked as the value of an ``Origin`` header.

Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

from .errors import ConfigError

__all__ = ["check_header", "check_headers", "check_origin", "check_request", "check_subprotocols", "check_url",
           "EXTENSIONS_HEADER", "HANDSHAKE_OWN", "handshake_headers", "offered_subprotocols", "offers_extensions", "ORIGIN", "RESERVED", "SUBPROTOCOL_HEADER"]

_TOKEN_CHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FIELD_CHARS = r"[\t\x20-\x7e]*"
_TOKEN = re.compile(_TOKEN_CHARS)
_FIELD_VALUE = re.compile(_FIELD_CHARS)
_HEADER_LINE = re.compile(f"({_TOKEN_CHARS}):{_FIELD_CHARS}")
_URL_ALLOWED = re.compile(r"[\x21-\x7e]+")
#: The request headers the ``origin=`` keyword and the SUBPROTOCOLS setting write.
ORIGIN = "Origin"
SUBPROTOCOL_HEADER = "Sec-WebSocket-Protocol"
EXTENSIONS_HEADER = "Sec-WebSocket-Extensions"
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


def check_origin(origin: Any) -> None:
    """ConfigError unless ``origin`` is None or a value an ``Origin`` header may carry."""
    if origin is None:
        return
    if not isinstance(origin, str):
        raise ConfigError(f"origin must be a str or None, not {type(origin).__name__}.")
    check_header(ORIGIN, origin)


def check_subprotocols(subprotocols: Any) -> tuple[str, ...]:
    """SUBPROTOCOLS as a tuple, or ConfigError: a list or tuple of distinct tokens (a bare
    str is refused: it would be read as a list of letters)."""
    if isinstance(subprotocols, str) or not isinstance(subprotocols, (list, tuple)):
        raise ConfigError(
            f"SUBPROTOCOLS must be a list of names (e.g. [\"chat.v2\"]), not {type(subprotocols).__name__}."
        )
    for name in subprotocols:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigError(
                f"SUBPROTOCOLS has {_show_name(name)}, which is not a valid token (letters, digits, !#$%&'*+-.^_`|~)."
            )
    if len(set(subprotocols)) != len(subprotocols):
        raise ConfigError("SUBPROTOCOLS names a subprotocol twice.")
    return tuple(subprotocols)


def handshake_headers(headers: Mapping[str, str], origin: Optional[str], subprotocols: Sequence[str],
                      extensions: Optional[str] = None) -> dict[str, str]:
    """The upgrade request's headers: ``headers`` (checked already), with ``Origin`` when
    ``origin`` is given (it replaces an Origin in ``headers``), the subprotocols offered,
    in order of preference, in one ``Sec-WebSocket-Protocol``, and the ``extensions`` offered
    (a ``Sec-WebSocket-Extensions`` value)."""
    result = dict(headers)
    if origin is not None:
        check_origin(origin)
        for name in [name for name in result if name.lower() == "origin"]:
            del result[name]
        result[ORIGIN] = origin
    if subprotocols:
        result[SUBPROTOCOL_HEADER] = ", ".join(check_subprotocols(subprotocols))
    if extensions:
        result[EXTENSIONS_HEADER] = extensions
    return result


def offers_extensions(headers: Mapping[str, str]) -> bool:
    """Whether an upgrade request's headers offer an extension (what handshake_headers wrote)."""
    return any(name.lower() == EXTENSIONS_HEADER.lower() for name in headers)


def offered_subprotocols(headers: Mapping[str, str]) -> list[str]:
    """The subprotocols an upgrade request's headers offer (what handshake_headers wrote)."""
    for name, value in headers.items():
        if name.lower() == SUBPROTOCOL_HEADER.lower():
            return [part.strip() for part in value.split(",") if part.strip()]
    return []


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
