"""WebSocket frames as the server sends them: a pure parser, and the constants both directions
share (opcodes, close codes, the queued message's shape). No sockets here: the transport feeds
bytes in, so every protocol rule is tested with plain asserts. The client's own frames (masked,
in batches) are encoder.py's.

The frame format is RFC 6455's, with websocket-client's constants; the parser is ours because
it must refuse an oversized message from its header, before buffering it, and read many frames
out of one large ``recv``.
"""

from __future__ import annotations

import struct
from typing import Callable, Iterator, Optional, Union

from websocket import ABNF

from .deflate import Decompressor
from .errors import ProtocolError
from .utf8 import CLOSE_INVALID_DATA, PartialFrame, TextFragments, invalid

__all__ = ["CLOSE_ABNORMAL", "CLOSE_INVALID_DATA", "CLOSE_NORMAL", "CLOSE_NO_STATUS", "CLOSE_PROTOCOL_ERROR", "CLOSE_TOO_BIG", "CLOSE_TRY_AGAIN_LATER",
           "CLOSE_FORBIDDEN", "CLOSE_POLICY_VIOLATION", "CLOSE_UNAUTHORIZED", "Close", "Event", "FrameParser", "Item", "Message", "OP_BINARY", "OP_CLOSE",
           "OP_CONT", "OP_PING", "OP_PONG", "OP_TEXT", "Ping", "Pong", "RSV1", "valid_close_code"]

_U64 = struct.Struct("!Q")

OP_CONT = ABNF.OPCODE_CONT
OP_TEXT = ABNF.OPCODE_TEXT
OP_BINARY = ABNF.OPCODE_BINARY
OP_CLOSE = ABNF.OPCODE_CLOSE
OP_PING = ABNF.OPCODE_PING
OP_PONG = ABNF.OPCODE_PONG
#: The first byte's bit a compressed message's first frame carries (permessage-deflate).
RSV1 = 0x40

#: (opcode, payload), or (opcode, payload, ack id) with acknowledgements on: one message as it
#: waits to be framed, the payload already encoded.
Item = Union[tuple[int, bytes], tuple[int, bytes, str]]

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHORIZED = 3000  # registered with IANA, as 3003
CLOSE_FORBIDDEN = 3003
# Codes a peer may put in a close frame (RFC 6455 section 7.4, plus IANA's 1012-1014).
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class _Event:
    """Base of the parser's events: small slotted values, compared by type and fields."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Message(_Event):
    """A complete data message: ``data`` is str for text, bytes for binary."""

    __slots__ = ("data",)

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data


class Ping(_Event):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong(_Event):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close(_Event):
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = Union[Message, Ping, Pong, Close]


def valid_close_code(code: int) -> bool:
    return code in _VALID_CLOSE_CODES or 3000 <= code <= 4999


class FrameParser:
    """Turns the bytes a server sends into events; raises ProtocolError on abuse.

    ``feed(data)`` then iterate ``events()``. Messages larger than ``max_size``
    raise ProtocolError(1009) as soon as a frame header announces them, so the
    parser never buffers more than ``max_size`` plus one read. Frames are read
    at an offset and the buffer is compacted once per ``feed``, not per frame.
    """

    def __init__(self, max_size: int, inflater: Optional[Decompressor] = None) -> None:
        self.max_size = max_size
        self.inflater = inflater  # permessage-deflate agreed: RSV1 marks a compressed message
        self._compressed = False  # the message being reassembled is compressed
        self._buffer = bytearray()
        self._pos = 0
        self._fragments: list[bytes] = []
        self._text: Optional[TextFragments] = None  # the text message in fragments, decoded so far
        self._partial: Optional[PartialFrame] = None  # the text frame arriving, checked so far
        self._fragment_opcode: int | None = None
        self._fragment_size = 0
        self.closed = False  # a close frame was parsed: the stream is over

    @property
    def buffered(self) -> int:
        """Bytes fed and not parsed yet."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        if self.closed:
            return
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def events(self) -> Iterator[Event]:
        """Yield every event complete in the buffer, leaving any partial frame; events
        before a protocol violation are yielded before the ProtocolError is raised."""
        out: list[Event] = []
        error = None
        try:
            self.parse(lambda data: out.append(Message(data)), out.append)
        except ProtocolError as exc:
            error = exc
        yield from out
        if error is not None:
            raise error

    def parse(self, on_message: Callable[[Union[str, bytes]], object], on_control: Callable[[Event], object],
              pause: Optional[Callable[[], object]] = None) -> None:
        """Call ``on_message(data)`` for each complete data message and ``on_control(event)``
        for each Ping, Pong or Close, in order, leaving any partial frame in the buffer.
        Raises ProtocolError at the first violation (after the callbacks for what came
        before it). Parsing ends after a close frame; the bytes after it are never parsed.
        ``pause`` is called between slices of inflating a large compressed frame."""
        buf = self._buffer
        size = len(buf)
        max_size = self.max_size
        while True:
            pos = self._pos
            if size - pos < 2:
                return
            b1, b2 = buf[pos], buf[pos + 1]
            opcode = b1 & 0x0F
            if b1 & 0x70 and (b1 & 0x70 != RSV1 or self.inflater is None or not (opcode == OP_TEXT or opcode == OP_BINARY)):
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set where no negotiated extension allows them")
            if b2 & 0x80:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "the server sent a masked frame")
            length = b2 & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    return
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    return
                (length,) = _U64.unpack_from(buf, pos + 2)
                start = pos + 10
            if opcode == OP_TEXT or opcode == OP_BINARY or opcode == OP_CONT:
                if self._fragment_size + length > max_size:
                    # Refused from the header alone: the payload is never buffered.
                    raise ProtocolError(
                        CLOSE_TOO_BIG,
                        f"message of {self._fragment_size + length} bytes exceeds MAX_MESSAGE_SIZE={max_size}",
                    )
            elif opcode == OP_CLOSE or opcode == OP_PING or opcode == OP_PONG:
                if length > 125:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
                if not b1 & 0x80:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            else:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            end = start + length
            if end > size:
                if size > start and not b1 & RSV1 and (opcode == OP_TEXT or (
                        opcode == OP_CONT and self._text is not None and not self._compressed)):
                    self._check_partial(opcode, buf, start, size)
                return
            self._pos = end
            self._partial = None  # a text frame arriving in pieces is whole now
            if b1 & 0x80 and self._fragment_opcode is None and opcode != OP_CONT:
                # The common case: a whole message in one frame.
                payload = buf[start:end] if not b1 & RSV1 else self.inflater.frame(buf[start:end], True, max_size, pause)  # type: ignore[union-attr]
                if opcode == OP_TEXT:
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        raise invalid() from None
                    on_message(text)
                    continue
                if opcode == OP_BINARY:
                    on_message(bytes(payload))
                    continue
            event = self._on_frame(bool(b1 & 0x80), opcode, bytes(buf[start:end]), bool(b1 & RSV1), pause)
            if event is None:
                continue
            if type(event) is Message:
                on_message(event.data)
            else:
                if opcode == OP_CLOSE:
                    # Nothing after a close frame belongs to the connection: never parsed, never kept.
                    self.closed = True
                    del self._buffer[:]
                    self._pos = 0
                    on_control(event)
                    return
                on_control(event)

    def _on_frame(self, fin: bool, opcode: int, payload: bytes, compressed: bool = False,
                  pause: Optional[Callable[[], object]] = None) -> Event | None:
        if opcode == OP_PING:
            return Ping(payload)
        if opcode == OP_PONG:
            return Pong(payload)
        if opcode == OP_CLOSE:
            return _parse_close(payload)
        if opcode == OP_CONT:
            if self._fragment_opcode is None:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
        elif self._fragment_opcode is not None:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message started before the previous one ended")
        else:
            self._fragment_opcode, self._compressed = opcode, compressed
            if opcode == OP_TEXT:
                self._text = TextFragments()
        if self._compressed:  # inflated frame by frame, within what is left of max_size
            payload = self.inflater.frame(payload, fin, self.max_size - self._fragment_size, pause)  # type: ignore[union-attr]
        self._fragment_size += len(payload)
        text = self._text
        if text is not None:
            text.add(payload, fin)  # invalid bytes fail the connection now, not at the last fragment
        else:
            self._fragments.append(payload)
        if not fin:
            return None
        self._fragment_opcode, self._fragment_size, self._text = None, 0, None
        if text is not None:
            return Message(text.text())
        data = b"".join(self._fragments) if len(self._fragments) > 1 else self._fragments[0]
        self._fragments = []
        return Message(data)

    def _check_partial(self, opcode: int, buf: bytearray, start: int, size: int) -> None:
        """A text frame (or a text message's next fragment) not all here yet: are its bytes so
        far already invalid? Each byte is checked once, whatever the number of reads."""
        partial = self._partial
        if partial is None:
            text = self._text
            partial = self._partial = PartialFrame() if opcode == OP_TEXT else text.partial()  # type: ignore[union-attr]
        partial.extend(buf, start, size)


def _parse_close(payload: bytes) -> Close:
    if not payload:
        return Close(CLOSE_NO_STATUS, "")
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    if not valid_close_code(code):
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"close frame with invalid code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    return Close(code, reason)
