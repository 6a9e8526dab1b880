"""A hostile server for the upgrade tests: raw sockets on 127.0.0.1, one connection at a time.

    python tests/scripts/hostile_server.py MODE

Prints "listening <port>", then answers every connection in MODE:
  endless-line     a 101 status line, then one header line that never ends (as fast as it can)
  endless-headers  a 101 status line, then header lines forever
  endless-status   a status line that never ends
  drip             a 101 status line, then one header byte every 10 ms, never ending
  frames-with-101  a valid 101 and two text frames ("first", "second") in the same write
  reject-with-body "401 Unauthorized" with a body, then closes
  blank-first      an empty line before the status line
  extension=VALUE  a valid 101 with "Sec-WebSocket-Extensions: VALUE", then reads until the client goes away
  bomb             a 101 agreeing to permessage-deflate, then one compressed message that inflates to
                   256 MiB (in about 256 KiB of frames); prints "close <code>" for the client's close frame
  corrupt          a 101 agreeing to permessage-deflate, then a compressed frame zlib cannot read;
                   prints "close <code>" likewise
A connection is served until the client goes away, for SECONDS at most.
"""

import base64
import hashlib
import socket
import struct
import sys
import time
import zlib

SECONDS = 20
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
FLOOD = {
    "endless-line": (b"HTTP/1.1 101 Switching Protocols\r\nX-Endless: ", b"a" * 65536),
    "endless-headers": (b"HTTP/1.1 101 Switching Protocols\r\n", b"X-More: header\r\n" * 4096),
    "endless-status": (b"HTTP/1.1 101 ", b"x" * 65536),
}


def read_request(conn) -> bytes:
    data = b""
    deadline = time.monotonic() + 5
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def text_frame(text: str) -> bytes:
    payload = text.encode()
    return bytes([0x81, len(payload)]) + payload


def handshake_101(request: bytes) -> bytes:
    """A valid 101 for ``request``, without its closing blank line."""
    key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n")


def compressed_frame(payload: bytes) -> bytes:
    """One unmasked server frame with RSV1 set (FIN, binary)."""
    head = bytes([0xC2])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 65536:
        return head + bytes([126]) + struct.pack("!H", len(payload)) + payload
    return head + bytes([127]) + struct.pack("!Q", len(payload)) + payload


def bomb() -> bytes:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    chunk = b"\0" * (1 << 20)
    data = b"".join(deflater.compress(chunk) for _ in range(256)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4]


def report_close(conn) -> None:
    """Read the client's frames until it goes away; print the code of its close frame."""
    data = b""
    conn.settimeout(SECONDS)
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
        while len(data) >= 6 and len(data) >= 6 + (data[1] & 0x7F):  # control frames are short
            length = data[1] & 0x7F
            key = data[2:6]
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[6:6 + length]))
            if data[0] & 0x0F == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                print(f"close {code}", flush=True)
                return
            data = data[6 + length:]


def serve(conn, mode: str) -> None:
    request = read_request(conn)
    deadline = time.monotonic() + SECONDS
    if mode.startswith("extension="):
        answer = mode.partition("=")[2].encode()
        conn.sendall(handshake_101(request) + b"Sec-WebSocket-Extensions: " + answer + b"\r\n\r\n")
        conn.settimeout(SECONDS)
        while conn.recv(4096):
            pass
        return
    if mode in ("bomb", "corrupt"):
        conn.sendall(handshake_101(request) + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
        conn.sendall(compressed_frame(bomb() if mode == "bomb" else b"\xff\xff\xff\xff not deflate at all"))
        report_close(conn)
        return
    if mode in FLOOD:
        start, repeat = FLOOD[mode]
        conn.sendall(start)
        while time.monotonic() < deadline:
            conn.sendall(repeat)
    elif mode == "drip":
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nX-Drip: ")
        while time.monotonic() < deadline:
            conn.sendall(b"a")
            time.sleep(0.01)
    elif mode == "reject-with-body":
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\n\r\nUnauthorized")
    elif mode == "blank-first":
        conn.sendall(b"\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n")
    elif mode == "frames-with-101":
        conn.sendall(handshake_101(request) + b"\r\n" + text_frame("first") + text_frame("second"))
        conn.settimeout(SECONDS)
        while conn.recv(4096):  # until the client goes away
            pass


def main() -> None:
    mode = sys.argv[1]
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening {listener.getsockname()[1]}", flush=True)
    while True:
        conn, _ = listener.accept()
        try:
            serve(conn, mode)
        except OSError:
            pass  # the client went away: what it should do
        finally:
            conn.close()


if __name__ == "__main__":
    main()
