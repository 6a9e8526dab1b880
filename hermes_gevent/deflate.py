"""permessage-deflate (RFC 7692) without I/O: the offer, the check of the server's answer, the codec.

    Options        our side, from the settings: the compressor's level, window and memLevel, the
                   threshold, and whether to offer client_no_context_takeover
    offer()        the Sec-WebSocket-Extensions value of the upgrade request
    accept(answer) what the server's answer agreed to (Agreement), None for no extension, or
                   ExtensionMismatch for an answer this client did not offer or cannot honour
    Compressor     one message -> its compressed payload (RSV1 set), or None below the threshold
    Decompressor   frame by frame -> the message's bytes, never more than the size bound

The offer is websockets' after its #1065 lesson: ``permessage-deflate; client_max_window_bits``
- the server may limit our window, we ask nothing of its own (asking obliges us to fail an
answer that ignores it, and some gateways refuse any window parameter). zlib cannot compress
with a window of 8 bits (since 1.2.9 it silently uses 9, which a peer that asked for 8 cannot
read), so an answer asking that of us is refused rather than honoured badly.

Inflating is bounded as it goes (``max_length``): a small frame that inflates to gigabytes
is refused with 1009 after at most the bound was produced; a corrupt stream is a 1002.
"""

from __future__ import annotations

import zlib
from typing import Callable, Iterator, Optional, Union

from .errors import ExtensionMismatch, ProtocolError

__all__ = ["Agreement", "Compressor", "Decompressor", "EXTENSION", "INFLATE_SLICE", "LEVEL", "MAX_WINDOW_BITS", "MEM_LEVEL",
           "MIN_WINDOW_BITS", "Options", "SLICE", "THRESHOLD", "WINDOW_BITS", "accept", "offer", "parse_extensions"]

EXTENSION = "permessage-deflate"
#: Our compressor: zlib's level, window and memLevel (websockets' 12/5: 64 KiB per connection),
#: and the size under which a message goes plain (RSV1 clear).
LEVEL, WINDOW_BITS, MEM_LEVEL, THRESHOLD = 6, 12, 5, 128
#: A large message is compressed this many bytes at a time, the writer yielding in between
#: (about 1 ms of zlib's work on JSON here: the hub is never held long).
SLICE = 64 * 1024
#: A large compressed frame is inflated this many bytes at a time, the reader letting the hub
#: turn in between (about 1 ms of zlib's work on JSON here).
INFLATE_SLICE = 256 * 1024
#: Window sizes this client honours in an answer (RFC 7692 allows 8, which zlib cannot produce).
MIN_WINDOW_BITS, MAX_WINDOW_BITS = 9, 15
_TAIL = b"\x00\x00\xff\xff"  # what every Z_SYNC_FLUSH ends with: left off the wire (RFC 7692 7.2.1)
_PARAMETERS = ("server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
               "client_max_window_bits")


def offer(no_context_takeover: bool = False) -> str:
    """The extension this client offers, as the upgrade request's header value; with
    ``no_context_takeover`` it says our messages are each compressed alone (RFC 7692 7.1.1.1:
    a hint the server may use to keep no window for them)."""
    hint = "; client_no_context_takeover" if no_context_takeover else ""
    return f"{EXTENSION}{hint}; client_max_window_bits"


class Options:
    """Our compressor, as the settings ask: zlib's ``level``, ``window_bits`` and ``mem_level``,
    the ``threshold`` under which a message goes plain, and ``no_context_takeover`` (each message
    compressed alone, and the offer says so)."""

    __slots__ = ("level", "window_bits", "mem_level", "threshold", "no_context_takeover")

    def __init__(self, level: int = LEVEL, window_bits: int = WINDOW_BITS, mem_level: int = MEM_LEVEL,
                 threshold: int = THRESHOLD, no_context_takeover: bool = False) -> None:
        self.level, self.window_bits, self.mem_level = level, window_bits, mem_level
        self.threshold, self.no_context_takeover = threshold, no_context_takeover

    def offer(self) -> str:
        return offer(self.no_context_takeover)


def parse_extensions(header: str) -> list[tuple[str, list[tuple[str, Optional[str]]]]]:
    """``a; x=1, b`` -> [("a", [("x", "1")]), ("b", [])]; quoted values unquoted. ValueError for
    what the grammar (RFC 6455 9.1) does not allow: an empty name, a parameter without a name."""
    extensions = []
    for item in _split(header, ","):
        parts = _split(item, ";")
        name = parts[0].strip().lower()
        if not name or not _is_token(name):
            raise ValueError(f"extension without a valid name in {header!r}")
        params: list[tuple[str, Optional[str]]] = []
        for part in parts[1:]:
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if not _is_token(key):
                raise ValueError(f"parameter without a valid name in {header!r}")
            if not sep:
                params.append((key, None))
                continue
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not _is_token(value):
                raise ValueError(f"parameter {key} with an invalid value in {header!r}")
            params.append((key, value))
        extensions.append((name, params))
    return extensions


class Agreement:
    """What the server's answer agreed to. ``*_max_window_bits`` None: the largest (15);
    ``answer``: the header as the server wrote it (status()["compression"])."""

    def __init__(self, answer: str, *, server_no_context_takeover: bool = False,
                 client_no_context_takeover: bool = False, server_max_window_bits: Optional[int] = None,
                 client_max_window_bits: Optional[int] = None) -> None:
        self.answer = answer
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits

    def __repr__(self) -> str:
        return f"Agreement({self.answer!r})"


def accept(answer: Optional[str]) -> Optional[Agreement]:
    """The server's Sec-WebSocket-Extensions answer to ``offer()``: None when it agreed to no
    extension (plain frames); ExtensionMismatch, saying why, for anything else than one
    permessage-deflate with parameters this client offered and can honour."""
    if answer is None or not answer.strip():
        return None
    try:
        extensions = parse_extensions(answer)
    except ValueError as exc:
        raise ExtensionMismatch(f"the server's extension answer cannot be read: {exc}") from None
    names = [name for name, _ in extensions]
    if names != [EXTENSION]:
        raise ExtensionMismatch(f"the server agreed to {', '.join(names)}; this client offered only {EXTENSION}")
    found: dict[str, Optional[str]] = {}
    for key, value in extensions[0][1]:
        if key not in _PARAMETERS:
            raise ExtensionMismatch(f"the server's {EXTENSION} answer has a parameter this client does not know: {key}")
        if key in found:
            raise ExtensionMismatch(f"the server's {EXTENSION} answer repeats {key}")
        found[key] = value
    for key in ("server_no_context_takeover", "client_no_context_takeover"):
        if key in found and found[key] is not None:
            raise ExtensionMismatch(f"the server's {EXTENSION} answer gives {key} a value; it takes none")
    return Agreement(
        answer.strip(),
        server_no_context_takeover="server_no_context_takeover" in found,
        client_no_context_takeover="client_no_context_takeover" in found,
        server_max_window_bits=_window_bits(found, "server_max_window_bits", allow=range(8, 16)),
        client_max_window_bits=_window_bits(found, "client_max_window_bits", allow=range(MIN_WINDOW_BITS, 16)),
    )


def _window_bits(found: dict[str, Optional[str]], key: str, allow: range) -> Optional[int]:
    if key not in found:
        return None
    value = found[key]
    if value is None or not value.isdigit() or int(value) not in range(8, 16):
        raise ExtensionMismatch(f"the server's {EXTENSION} answer has {key}={value}; it must be 8 to 15")
    if int(value) not in allow:  # 8 for our own window: zlib cannot compress with it
        raise ExtensionMismatch(f"the server's {EXTENSION} answer asks {key}={value}; this client's zlib "
                                f"cannot compress with a window under {MIN_WINDOW_BITS} bits")
    return int(value)


class Compressor:
    """Compresses the messages of one connection, in order, as ``options`` say (the server's
    ``client_max_window_bits`` caps the window); messages shorter than the threshold go
    uncompressed (``compress`` returns None)."""

    def __init__(self, agreement: Agreement, options: Options) -> None:
        limit = agreement.client_max_window_bits
        self.window_bits = options.window_bits if limit is None else min(options.window_bits, limit)
        self.threshold = options.threshold
        self._deflater = zlib.compressobj(options.level, zlib.DEFLATED, -self.window_bits, options.mem_level)
        # Without context takeover each message ends with a full flush: zlib forgets the window
        # there (the next message refers to nothing before it: the same bytes a fresh compressor
        # writes), and one compressor serves the connection instead of a fresh copy per message.
        reset = agreement.client_no_context_takeover or options.no_context_takeover
        self._flush = zlib.Z_FULL_FLUSH if reset else zlib.Z_SYNC_FLUSH

    def compress(self, payload: bytes) -> Optional[bytes]:
        """The payload of a message frame with RSV1 set, or None: send ``payload`` as it is."""
        if len(payload) < self.threshold:
            return None
        deflater = self._deflater
        data = deflater.compress(payload)
        data = data + deflater.flush(self._flush) if data else deflater.flush(self._flush)
        return data[:-4] if data.endswith(_TAIL) else data

    def in_slices(self, payload: bytes, size: int) -> Iterator[Optional[bytes]]:
        """compress(), ``size`` bytes at a time: yields None after each slice but the last (the
        caller may let other greenlets run), then what compress() returns."""
        if len(payload) < self.threshold:
            yield None
            return
        view, parts = memoryview(payload), list[bytes]()
        for start in range(0, len(payload), size):
            if parts:
                yield None
            parts.append(self._deflater.compress(view[start : start + size]))
        yield self.finish(parts)

    def finish(self, parts: list[bytes]) -> bytes:
        parts.append(self._deflater.flush(self._flush))
        data = b"".join(parts)
        return data[:-4] if data.endswith(_TAIL) else data


class Decompressor:
    """Inflates the compressed messages of one connection, frame by frame, never producing
    more than the room left under the message size bound."""

    def __init__(self, agreement: Agreement) -> None:
        bits = agreement.server_max_window_bits or MAX_WINDOW_BITS
        self._wbits = -max(bits, MIN_WINDOW_BITS)  # a larger window reads a smaller one's stream
        self._reset = agreement.server_no_context_takeover
        self._inflater = zlib.decompressobj(self._wbits)

    def frame(self, data: Union[bytes, bytearray], fin: bool, room: int,
              pause: Optional[Callable[[], object]] = None) -> bytes:
        """The bytes ``data`` (one frame of a compressed message) inflates to; ``fin``: the
        message's last frame. ProtocolError 1009 once the message would pass ``room`` bytes,
        1002 for a stream zlib cannot read. Inflated INFLATE_SLICE bytes at a time, calling
        ``pause`` in between (the reader lets the hub turn there)."""
        inflater = self._inflater
        parts: list[bytes] = []
        size, limit, pending = 0, room + 1, data
        try:
            while pending:
                part = inflater.decompress(pending, min(INFLATE_SLICE, limit - size))
                parts.append(part)
                size += len(part)
                if size > room:
                    break
                pending = inflater.unconsumed_tail
                if pending and pause is not None:
                    pause()
            if fin and size <= room:
                part = inflater.decompress(_TAIL, limit - size)
                parts.append(part)
                size += len(part)
        except zlib.error as exc:
            raise ProtocolError(1002, f"compressed message cannot be inflated ({exc})") from None
        if size > room or inflater.unconsumed_tail:
            raise ProtocolError(1009, "message inflates past MAX_MESSAGE_SIZE")
        if fin and self._reset:
            self._inflater = zlib.decompressobj(self._wbits)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _split(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_token(text: str) -> bool:
    return bool(text) and all(char in _TOKEN for char in text)
