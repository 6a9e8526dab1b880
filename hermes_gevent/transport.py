"""One WebSocket connection on a gevent socket.

``connect()`` opens a cooperative gevent socket (and gevent's TLS for wss://)
whether or not the process is monkey-patched, hands it to websocket-client for
the HTTP upgrade, and returns a ``Connection``. The connection reads with large
``recv`` calls through ``FrameParser`` and serializes every write - data,
ping, pong, close - behind one gevent lock, so frames never interleave.
"""

from __future__ import annotations

import socket as _stdlib_socket
import ssl as _stdlib_ssl
from typing import Iterator, Mapping, Optional
from urllib.parse import urlsplit

import gevent
import gevent.lock
import gevent.socket
import gevent.ssl
import websocket

from . import frames
from .errors import ConfigError, ConnectionClosed, ConnectTimeout, ConnectionFailed, HandshakeRejected

READ_SIZE = 256 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def parse_ws_url(url: str) -> tuple[str, int, bool]:
    """(host, port, secure) of a ws:// or wss:// URL; ConfigError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"url is not a valid URL: {exc}.") from None
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"url must start with ws:// or wss://, got scheme {parts.scheme or 'none'!r}.")
    if not parts.hostname:
        raise ConfigError("url has no host name.")
    secure = parts.scheme == "wss"
    return parts.hostname, port or (443 if secure else 80), secure


def default_ssl_context(ca_file: Optional[str] = None) -> _stdlib_ssl.SSLContext:
    """A verifying TLS context (certificates and host names checked)."""
    return gevent.ssl.create_default_context(cafile=ca_file)


def _wrap_tls(sock, context: _stdlib_ssl.SSLContext, host: str):
    if isinstance(context, gevent.ssl.SSLContext):
        return context.wrap_socket(sock, server_hostname=host)
    # A stdlib context in an unpatched process would give a blocking socket:
    # build gevent's cooperative SSLSocket around the caller's context instead.
    return gevent.ssl.SSLSocket(sock=sock, server_hostname=host, _context=context)


def connect(
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_message_size: int,
    ssl_context: Optional[_stdlib_ssl.SSLContext] = None,
) -> "Connection":
    """Open a connection; the whole of TCP, TLS and the upgrade is bounded by ``timeout``."""
    host, port, secure = parse_ws_url(url)
    sock = None
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        sock = gevent.socket.create_connection((host, port))
        sock.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
        if secure:
            sock = _wrap_tls(sock, ssl_context or default_ssl_context(), host)
        _upgrade(sock, url, headers)
        sock.settimeout(None)
        return Connection(sock, max_message_size)
    except gevent.Timeout as exc:
        if sock is not None:
            sock.close()
        if exc is not timer:
            raise
        raise ConnectTimeout(f"no WebSocket upgrade from {host}:{port} within {timeout:g}s") from None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        timer.close()


def _upgrade(sock, url: str, headers: Mapping[str, str]) -> None:
    ws = websocket.WebSocket(skip_utf8_validation=True)
    header_lines = [f"{name}: {value}" for name, value in headers.items()]
    try:
        ws.connect(url, socket=sock, header=header_lines, redirect_limit=0)
    except websocket.WebSocketBadStatusException as exc:
        raise HandshakeRejected(exc.status_code, exc.status_message or "") from None
    except websocket.WebSocketException as exc:
        response = getattr(ws, "handshake_response", None)
        if response is not None and response.status in _REDIRECTS:
            raise HandshakeRejected(response.status, "redirect (not followed)") from None
        raise ConnectionFailed(f"WebSocket upgrade failed: {exc}") from None
    finally:
        ws.sock = None  # the socket is ours from here on; websocket-client must not close it


class Connection:
    """An open WebSocket connection. Reads from one greenlet; writes from any."""

    def __init__(self, sock, max_message_size: int) -> None:
        self.sock = sock
        self.parser = frames.FrameParser(max_message_size)
        self._write_lock = gevent.lock.Semaphore()
        self.close_sent = False
        self.aborted = False

    def events(self) -> Iterator[frames.Event]:
        """Yield events as they arrive; raise ConnectionClosed(1006) when TCP ends."""
        parser = self.parser
        while True:
            yield from parser.events()
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError as exc:
                raise ConnectionClosed(frames.CLOSE_ABNORMAL, f"read failed: {exc}") from None
            if not data:
                raise ConnectionClosed(frames.CLOSE_ABNORMAL, "TCP connection ended without a close frame")
            parser.feed(data)
            # recv() does not yield while data is waiting: let timers and other I/O run per read
            # (idle, not sleep(0): a chain of sleep(0) callbacks can starve timers for tens of ms).
            gevent.idle()

    def write(self, data: bytes) -> None:
        """Write already-framed bytes, whole, with no other write in between."""
        with self._write_lock:
            if self.close_sent or self.aborted:
                raise ConnectionClosed(frames.CLOSE_ABNORMAL, "connection is closing")
            self.sock.sendall(data)

    def send_frames(self, items: list[tuple[int, bytes]]) -> None:
        """Frame several messages and write them with as few socket calls as possible:
        small frames joined into one write, large ones masked and written in pieces,
        yielding to other greenlets between pieces."""
        encode = frames.encode_frame
        with self._write_lock:
            if self.close_sent or self.aborted:
                raise ConnectionClosed(frames.CLOSE_ABNORMAL, "connection is closing")
            pending: list[bytes] = []
            for opcode, payload in items:
                if len(payload) <= frames.MASK_PIECE:
                    pending.append(encode(opcode, payload))
                    continue
                if pending:
                    self.sock.sendall(b"".join(pending))
                    pending = []
                for piece in frames.encode_frame_pieces(opcode, payload):
                    self.sock.sendall(piece)
                    gevent.idle()
            if pending:
                self.sock.sendall(b"".join(pending))

    def ping(self, payload: bytes = b"") -> None:
        self.write(frames.encode_frame(frames.OP_PING, payload))

    def pong(self, payload: bytes) -> None:
        self.write(frames.encode_frame(frames.OP_PONG, payload))

    def send_close(self, code: int, reason: str = "") -> bool:
        """Send a close frame once; False when it could not be written."""
        with self._write_lock:
            if self.close_sent or self.aborted:
                return False
            self.close_sent = True
            try:
                self.sock.sendall(frames.encode_frame(frames.OP_CLOSE, frames.close_payload(code, reason)))
                return True
            except OSError:
                return False

    def abort(self) -> None:
        """Close the socket now, without a close frame (idempotent)."""
        self.aborted = True
        try:
            self.sock.close()
        except OSError:
            pass
