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
A connection is served until the client goes away, for SECONDS at most.
"""

import base64
import hashlib
import socket
import sys
import time

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


def serve(conn, mode: str) -> None:
    request = read_request(conn)
    deadline = time.monotonic() + SECONDS
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
