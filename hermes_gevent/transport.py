"""One WebSocket connection on a gevent socket.

``connect()`` opens a cooperative gevent socket (and gevent's TLS for wss://)
whether or not the process is monkey-patched, hands it to websocket-client for
the HTTP upgrade, and returns a ``Connection``. The connection reads with large
``recv`` calls through ``FrameParser`` and serializes every write - data,
ping, pong, close - behind one gevent lock, so frames never interleave.
"""

from __future__ import annotations

import collections
import socket as _stdlib_socket
import ssl as _stdlib_ssl
import struct
import time
from typing import Iterator, Mapping, Optional
from urllib.parse import urlsplit

import gevent
import gevent.lock
import gevent.socket
import gevent.ssl
import websocket

from . import frames

try:  # Linux and most Unixes: the TCP send queue's unacknowledged byte count
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None
from .errors import ConfigError, ConnectionClosed, ConnectTimeout, ConnectionFailed, HandshakeRejected

READ_SIZE = 256 * 1024
#: The ledger of unacknowledged writes is trimmed once it holds this many entries.
LEDGER_TRIM_EVERY = 512
#: Parts at least this large are written as they are (vectored); smaller ones are joined.
VECTOR_MIN = 4096
IOV_MAX = 512
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


class WriteFailed(ConnectionClosed):
    """A write failed after the first ``handed`` items of the batch reached the kernel whole."""

    def __init__(self, handed: int, reason: str) -> None:
        self.handed = handed
        super().__init__(frames.CLOSE_ABNORMAL, reason)


def _kernel_send_limit() -> int:
    """The most bytes a TCP send queue can hold here (Linux: tcp_wmem's maximum)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 2**20


_SEND_LIMIT = _kernel_send_limit()


class _KernelLedger:
    """The last writes handed to the kernel, newest last, so that after an abrupt
    failure the messages TCP never acknowledged can be told apart (Linux TIOCOUTQ:
    bytes in the send queue not yet acknowledged by the peer)."""

    def __init__(self, limit: int) -> None:
        self.entries: collections.deque = collections.deque()  # (item or None, bytes in kernel)
        self.size = 0
        self.limit = limit

    def record(self, item, nbytes: int) -> None:
        self.entries.append((item, nbytes))
        self.size += nbytes
        while self.size > self.limit and len(self.entries) > 1:
            self.size -= self.entries.popleft()[1]

    def trim(self, outq: int) -> None:
        """Forget the oldest writes the peer has acknowledged (all but the last ``outq`` bytes)."""
        entries = self.entries
        while entries and self.size - entries[0][1] >= outq:
            self.size -= entries.popleft()[1]

    def unacknowledged(self, outq: int) -> list:
        """The messages (oldest first) covering the last ``outq`` bytes written."""
        items = []
        for item, nbytes in reversed(self.entries):
            if outq <= 0:
                break
            if item is not None:
                items.append(item)
            outq -= nbytes
        items.reverse()
        return items


class Connection:
    """An open WebSocket connection. Reads from one greenlet; writes from any."""

    def __init__(self, sock, max_message_size: int) -> None:
        self.sock = sock
        self.parser = frames.FrameParser(max_message_size)
        self._write_lock = gevent.lock.Semaphore()
        self._ledger = _KernelLedger(_SEND_LIMIT)
        self._keys = frames.MaskKeys()
        # TLS records do not map byte for byte onto frames: no unacknowledged count there.
        plain = not isinstance(sock, _stdlib_ssl.SSLSocket)
        self.tracks_acks = plain and hasattr(termios, "TIOCOUTQ")
        self._vectored = plain and hasattr(sock, "sendmsg")
        self.close_sent = False
        self.aborted = False
        self.last_read_at = time.monotonic()
        self.last_read_size = 0
        self.writes = 0  # write calls so far (the reader's coalescing looks at it)

    def receive(self) -> float:
        """Wait for data and buffer one large read for ``parser``; return when it came.
        Raises ConnectionClosed(1006) when the TCP stream ends."""
        try:
            data = self.sock.recv(READ_SIZE)
        except OSError as exc:
            raise ConnectionClosed(frames.CLOSE_ABNORMAL, f"read failed: {exc}") from None
        if not data:
            raise ConnectionClosed(frames.CLOSE_ABNORMAL, "TCP connection ended without a close frame")
        self.last_read_at = time.monotonic()
        self.last_read_size = len(data)
        self.parser.feed(data)
        return self.last_read_at

    def events(self) -> Iterator[frames.Event]:
        """Yield events as they arrive (for simple callers; the client parses with callbacks)."""
        while True:
            self.receive()
            yield from self.parser.events()

    def _check_open(self) -> None:
        if self.close_sent or self.aborted:
            raise WriteFailed(0, "connection is closing")

    def write(self, data: bytes) -> None:
        """Write one control frame, whole, with no other write in between."""
        with self._write_lock:
            self._check_open()
            self._send([(None, (data,))])

    def send_frames(self, items: list[tuple[int, bytes]]) -> None:
        """Frame several messages and write them with as few socket calls as possible:
        small frames joined into one write, large ones masked and written in pieces,
        yielding to other greenlets between pieces. Raises WriteFailed(handed)."""
        with self._write_lock:
            self._check_open()
            handed = 0
            try:
                small: list[tuple[int, bytes]] = []
                for item in items:
                    if len(item[1]) <= frames.MASK_PIECE:
                        small.append(item)
                        continue
                    if small:
                        handed += self._send(list(zip(small, frames.encode_frames(small, self._keys))))
                        small = []
                    opcode, payload = item
                    last_piece = -(-len(payload) // frames.MASK_PIECE)  # pieces after the header
                    # Masked lazily, one piece at a time, yielding in between; the ledger
                    # counts the message once its last byte is in the kernel.
                    for index, piece in enumerate(frames.encode_frame_pieces(opcode, payload)):
                        self._send([(item if index == last_piece else None, (piece,))])
                        gevent.idle()
                    handed += 1
                if small:
                    handed += self._send(list(zip(small, frames.encode_frames(small, self._keys))))
            except _Partial as partial:
                raise WriteFailed(handed + partial.handed, f"write failed: {partial.error}") from None

    def _send(self, entries: list[tuple[object, tuple[bytes, ...]]]) -> int:
        """Write the entries' parts in order, recording in the ledger what reached the
        kernel; returns how many entries were handed over (all, unless it raises _Partial).

        Small parts are joined into one buffer; large ones go to the kernel as they are,
        in one vectored write (sendmsg) on plain TCP, so a payload is never copied again.
        """
        buffers, small, lengths = [], [], []
        vectored = self._vectored
        for _, parts in entries:
            length = 0
            for part in parts:
                length += len(part)
                if vectored and len(part) >= VECTOR_MIN:
                    if small:
                        buffers.append(b"".join(small))
                        small = []
                    buffers.append(part)
                else:
                    small.append(part)
            lengths.append(length)
        if small:
            buffers.append(small[0] if len(small) == 1 else b"".join(small))
        views = [memoryview(b) for b in buffers]
        total, offset, index, entry_start, first = sum(lengths), 0, 0, 0, 0
        track, ledger = self.tracks_acks, self._ledger
        self.writes += 1
        try:
            while offset < total:
                if len(views) - first == 1:
                    sent = self.sock.send(views[first])
                else:
                    sent = self.sock.sendmsg(views[first : first + IOV_MAX])
                offset += sent
                while sent:
                    view = views[first]
                    if sent >= len(view):
                        sent -= len(view)
                        first += 1
                    else:
                        views[first] = view[sent:]
                        sent = 0
                while index < len(entries) and entry_start + lengths[index] <= offset:
                    if track:
                        ledger.record(entries[index][0], lengths[index])
                    entry_start += lengths[index]
                    index += 1
            if track and len(ledger.entries) > LEDGER_TRIM_EVERY:
                # Forget what TCP has acknowledged: one ioctl per LEDGER_TRIM_EVERY messages.
                outq = self._outq()
                if outq is not None:
                    ledger.trim(outq)
        except OSError as exc:
            if track and offset > entry_start:
                # Part of a frame reached the kernel: its bytes count, but the message stays
                # with the caller - an incomplete frame is never delivered, so it must go again.
                ledger.record(None, offset - entry_start)
            raise _Partial(index, exc) from None
        return index

    def unacknowledged(self) -> list:
        """After an abrupt failure, before abort(): the messages whose bytes TCP never
        acknowledged (Linux, plain TCP; empty elsewhere)."""
        if not self.tracks_acks or self.aborted:
            return []
        outq = self._outq()
        return self._ledger.unacknowledged(outq) if outq is not None else []

    def _outq(self) -> Optional[int]:
        """Bytes in the kernel's send queue that the peer has not acknowledged."""
        try:
            return struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return None

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
                self._send([(None, (frames.encode_frame(frames.OP_CLOSE, frames.close_payload(code, reason)),))])
                return True
            except _Partial:
                return False

    def abort(self) -> None:
        """Close the socket now, without a close frame (idempotent)."""
        self.aborted = True
        try:
            self.sock.close()
        except OSError:
            pass


class _Partial(Exception):
    def __init__(self, handed: int, error: OSError) -> None:
        self.handed = handed
        self.error = error
