"""Raw WebSocket frames built by hand, for tests that must send what a well-behaved
library would refuse to build (bad opcodes, bad UTF-8, masked server frames, lying
lengths). The one home of these builders: test_frames, test_receive, the fault tests
and the in-process peer (tests/peer.py) all use them."""

import struct


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0, mask: bytes | None = None) -> bytes:
    """One frame as the bytes on the wire: ``rsv`` is the RSV bits already shifted
    (0x40 is RSV1); ``mask`` a 4-byte key (a server must not send one)."""
    b1 = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([b1, masked | n])
    elif n < 65536:
        head = bytes([b1, masked | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b1, masked | 127]) + struct.pack("!Q", n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def header_only(opcode: int, length: int) -> bytes:
    """The header of an unmasked final frame announcing ``length`` payload bytes, without them."""
    return bytes([0x80 | opcode, 127]) + struct.pack("!Q", length)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's payload, with any code (even one the protocol forbids on the wire)."""
    return struct.pack("!H", code) + reason
