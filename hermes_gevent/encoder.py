"""The client's frames: masked (RFC 6455: every frame a client sends), framed one by one or as a
batch with one call to the entropy source, large ones in pieces; and the close frame's payload.
Masking is in C when the optional speedups are installed (websockets' routine), else
websocket-client's pure Python.
"""

from __future__ import annotations

import functools
import os
import struct
from typing import Callable, Iterator, Optional

from websocket import ABNF

from .frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RSV1, Item

__all__ = ["MASK_PIECE", "MAX_CLOSE_REASON", "MaskKeys", "close_payload", "encode_frame", "encode_frame_pieces",
           "frame_chunks", "frame_one", "frame_rest", "mask", "write_buffers"]

_c_apply_mask: Optional[Callable[[bytes, bytes], bytes]]
try:  # the optional speedups extra: websockets' C masking routine
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pragma: no cover - exercised by HERMES_GEVENT_PURE_PYTHON in the tests
    _c_apply_mask = None
if os.environ.get("HERMES_GEVENT_PURE_PYTHON"):
    _c_apply_mask = None
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def _python_mask(data: bytes, key: bytes) -> bytes:
    return ABNF.mask(key, data)


#: apply_mask(data, key): the C routine when installed (called as it is in frame_chunks' loop)
_apply_mask: Callable[[bytes, bytes], bytes] = _c_apply_mask if _c_apply_mask is not None else _python_mask


def mask(key: bytes, data: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` (in C with the speedups, else websocket-client's)."""
    return _apply_mask(data, key)


@functools.lru_cache(maxsize=512)
def _key_split(count: int) -> struct.Struct:
    """Cuts ``count`` masking keys apart in one call."""
    return struct.Struct("4s" * count)


#: Payloads above this are masked piece by piece, so the caller can yield between pieces.
MASK_PIECE = 256 * 1024


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455, the format websocket-client's ABNF writes)."""
    key = os.urandom(4)
    return _header(opcode, len(payload)) + key + mask(key, payload)


class MaskKeys:
    """Masking keys drawn from os.urandom in blocks: one call to the entropy source per
    1,024 frames instead of one per frame (the keys stay unpredictable, as RFC 6455 asks)."""

    BLOCK = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def take(self, count: int) -> bytes:
        """``count`` keys, 4 bytes each, concatenated."""
        size = 4 * count
        if self._pos + size > len(self._pool):
            self._pool = os.urandom(max(self.BLOCK, size))
            self._pos = 0
        keys = self._pool[self._pos : self._pos + size]
        self._pos += size
        return keys


def frame_chunks(items: list[Item], keys: MaskKeys) -> tuple[list[bytes], list[int]]:
    """The frames of several messages as a flat list of chunks to write (header and key,
    masked payload, ...) and each frame's size: the writer's hot path, kept lean."""
    if len(items) == 1:  # one message: no loop to set up
        head, masked = frame_one(items[0][0], items[0][1], keys)
        return [head, masked], [len(head) + len(masked)]
    count = len(items)
    chunks: list[bytes] = []
    lengths: list[int] = []
    add_chunk, add_length, small, apply = chunks.append, lengths.append, _SMALL_HEADERS, _apply_mask
    for key, item in zip(_key_split(count).unpack(keys.take(count)), items):
        payload = item[1]
        size = len(payload)
        head = small[item[0]][size] + key if size < 126 else _header(item[0], size) + key
        add_chunk(head)
        add_chunk(apply(payload, key))
        add_length(len(head) + size)
    return chunks, lengths


def frame_one(opcode: int, payload: bytes, keys: MaskKeys) -> tuple[bytes, bytes]:
    """One message's frame as its header (with the key) and its masked payload."""
    key = keys.take(1)
    return _header(opcode, len(payload)) + key, _apply_mask(payload, key)


def frame_rest(head: bytes, payload: bytes, cut: int) -> memoryview:
    """What a write that took ``cut`` bytes of a frame left of it: a view of the masked payload,
    not a copy (64 KiB per cut-off frame), unless the cut fell in the header."""
    if cut >= len(head):
        return memoryview(payload)[cut - len(head) :]
    return memoryview(head + payload)[cut:]


def write_buffers(chunks: list[bytes], vector_min: Optional[int]) -> list[bytes]:
    """The buffers of one write of ``chunks``: all joined into one, or with ``vector_min``, each
    chunk of at least that size as it is (no copy of a large payload) and the runs between joined."""
    if vector_min is None:
        return [chunks[0] if len(chunks) == 1 else b"".join(chunks)]
    buffers: list[bytes] = []
    small: list[bytes] = []
    for chunk in chunks:
        if len(chunk) >= vector_min:
            if small:
                buffers.append(b"".join(small))
                small = []
            buffers.append(chunk)
        else:
            small.append(chunk)
    if small:
        buffers.append(b"".join(small))
    return buffers


def encode_frame_pieces(opcode: int, payload: bytes) -> Iterator[bytes]:
    """The same frame as ``encode_frame``, as a header then masked pieces of
    MASK_PIECE bytes: masking 16 MB at once would hold the CPU for a long while."""
    key = os.urandom(4)
    yield _header(opcode, len(payload)) + key
    for start in range(0, len(payload), MASK_PIECE):  # MASK_PIECE % 4 == 0: the mask stays aligned
        yield mask(key, payload[start : start + MASK_PIECE])


#: Two-byte headers of masked frames with payloads under 126 bytes, by opcode and length.
_SMALL_HEADERS = {
    op: [bytes((0x80 | op, 0x80 | n)) for n in range(126)]
    for op in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT | RSV1, OP_BINARY | RSV1)
}


def _header(opcode: int, length: int) -> bytes:
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, 0x80 | length))
    if length < 65536:
        return _HEADER_16.pack(first, 0x80 | 126, length)
    return _HEADER_64.pack(first, 0x80 | 127, length)


#: A close frame's payload is at most 125 bytes: the code, then up to 123 bytes of reason.
MAX_CLOSE_REASON = 123


def close_payload(code: int, reason: str = "") -> bytes:
    """The code and the reason, cut to MAX_CLOSE_REASON bytes without splitting a character."""
    encoded = reason.encode("utf-8")
    if len(encoded) > MAX_CLOSE_REASON:
        encoded = encoded[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + encoded
