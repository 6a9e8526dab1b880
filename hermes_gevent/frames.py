"""WebSocket frames: a pure parser for what the server sends, and the encoder
for what the client sends. No sockets here: the transport feeds bytes in and
writes bytes out, so every protocol rule is tested with plain asserts.

The frame format itself is websocket-client's (``ABNF``); the parser is ours
because it must refuse an oversized message from its header, before buffering it,
and must read many frames out of one large ``recv``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Iterator, Union

from websocket import ABNF

from .errors import ProtocolError

OP_CONT = ABNF.OPCODE_CONT
OP_TEXT = ABNF.OPCODE_TEXT
OP_BINARY = ABNF.OPCODE_BINARY
OP_CLOSE = ABNF.OPCODE_CLOSE
OP_PING = ABNF.OPCODE_PING
OP_PONG = ABNF.OPCODE_PONG
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
# Codes a peer may put in a close frame (RFC 6455 section 7.4, plus IANA's 1012-1014).
_VALID_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


@dataclass(frozen=True)
class Message:
    """A complete data message: ``data`` is str for text, bytes for binary."""

    data: Union[str, bytes]


@dataclass(frozen=True)
class Ping:
    payload: bytes


@dataclass(frozen=True)
class Pong:
    payload: bytes


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


Event = Union[Message, Ping, Pong, Close]


def valid_close_code(code: int) -> bool:
    return code in _VALID_CLOSE_CODES or 3000 <= code <= 4999


def _unmask(mask: bytes, data: bytes) -> bytes:
    return ABNF.mask(mask, data)


class FrameParser:
    """Turns the bytes a server sends into events; raises ProtocolError on abuse.

    ``feed(data)`` then iterate ``events()``. Messages larger than ``max_size``
    raise ProtocolError(1009) as soon as a frame header announces them, so the
    parser never buffers more than ``max_size`` plus one read.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._fragment_opcode: int | None = None
        self._fragment_size = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def events(self) -> Iterator[Event]:
        """Yield every event complete in the buffer, leaving any partial frame."""
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            event = self._on_frame(*frame)
            if event is not None:
                yield event

    def _next_frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        b1, b2 = buf[0], buf[1]
        fin, opcode, masked, length = b1 & 0x80, b1 & 0x0F, b2 & 0x80, b2 & 0x7F
        if b1 & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES and opcode != OP_CONT:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "the server sent a masked frame")
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            (length,) = struct.unpack_from("!H", buf, 2)
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            (length,) = struct.unpack_from("!Q", buf, 2)
            offset = 10
        if opcode in _CONTROL_OPCODES:
            if length > 125:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
            if not fin:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
        elif self._fragment_size + length > self.max_size:
            # Refused from the header alone: the payload is never buffered.
            raise ProtocolError(
                CLOSE_TOO_BIG,
                f"message of {self._fragment_size + length} bytes exceeds MAX_MESSAGE_SIZE={self.max_size}",
            )
        end = offset + length
        if len(buf) < end:
            return None
        payload = bytes(buf[offset:end])
        del buf[:end]
        return bool(fin), opcode, payload

    def _on_frame(self, fin: bool, opcode: int, payload: bytes) -> Event | None:
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
            self._fragment_opcode = opcode
        self._fragments.append(payload)
        self._fragment_size += len(payload)
        if not fin:
            return None
        data = b"".join(self._fragments) if len(self._fragments) > 1 else self._fragments[0]
        kind = self._fragment_opcode
        self._fragments, self._fragment_opcode, self._fragment_size = [], None, 0
        if kind == OP_TEXT:
            try:
                return Message(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
        return Message(data)


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


#: Payloads above this are masked piece by piece, so the caller can yield between pieces.
MASK_PIECE = 256 * 1024


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame, in websocket-client's ABNF format."""
    frame = ABNF(1, 0, 0, 0, opcode, 1, payload)
    frame.get_mask_key = os.urandom
    return frame.format()


def encode_frame_pieces(opcode: int, payload: bytes) -> Iterator[bytes]:
    """The same frame as ``encode_frame``, as a header then masked pieces of
    MASK_PIECE bytes: masking 16 MB at once would hold the CPU for a long while."""
    mask = os.urandom(4)
    yield _header(opcode, len(payload)) + mask
    for start in range(0, len(payload), MASK_PIECE):  # MASK_PIECE % 4 == 0: the mask stays aligned
        yield ABNF.mask(mask, payload[start : start + MASK_PIECE])


def _header(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return struct.pack("!BB", first, 0x80 | length)
    if length < 65536:
        return struct.pack("!BBH", first, 0x80 | 126, length)
    return struct.pack("!BBQ", first, 0x80 | 127, length)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]
