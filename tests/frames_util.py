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


def client_frames(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    """Decode what the client wrote (masked frames) into (opcode, payload) pairs."""
    data = b"".join(chunks)
    out = []
    while data:
        b1, b2 = data[0], data[1]
        assert b2 & 0x80, "a client frame must be masked"
        n, pos = b2 & 0x7F, 2
        if n == 126:
            n, pos = struct.unpack("!H", data[2:4])[0], 4
        elif n == 127:
            n, pos = struct.unpack("!Q", data[2:10])[0], 10
        key, payload = data[pos:pos + 4], data[pos + 4:pos + 4 + n]
        out.append((b1 & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(payload))))
        data = data[pos + 4 + n:]
    return out
