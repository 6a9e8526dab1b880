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
from .fairness import new_turns, take_turn

try:  # Linux and most Unixes: the TCP send queue's unacknowledged byte count
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = termios = None
from .errors import ConfigError, ConnectionClosed, ConnectTimeout, ConnectionFailed, HandshakeRejected
from .headers import check_request, check_url
from .upgrade import UpgradeAnswer, status_of

READ_SIZE = 256 * 1024
#: The ledger of unacknowledged writes is trimmed once it holds this many writes.
LEDGER_TRIM_EVERY = 64
#: Parts at least this large are written as they are (vectored); smaller ones are joined.
VECTOR_MIN = 4096
IOV_MAX = 512
#: The upgrade answer is read this much at a time (a real one fits in the first chunk).
ANSWER_CHUNK = 4096
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def parse_ws_url(url: str) -> tuple[str, int, bool]:
    """(host, port, secure) of a ws:// or wss:// URL; ConfigError otherwise."""
    check_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError("url is not a valid URL (check its port, and percent-encode / # @ in a password).") from None
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
        rest = _upgrade(sock, url, headers)
        sock.settimeout(None)
        conn = Connection(sock, max_message_size)
        if rest:
            conn.parser.feed(rest)  # frames sent along with the 101: the reader parses them first
        return conn
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


class _AnswerReadByUs:
    """The socket as websocket-client sees it during the upgrade: its request goes straight
    through; the answer is read by us (upgrade.py: in chunks, bounded, yielding while a
    server floods) and served back from memory. What followed the answer stays in ``rest``."""

    def __init__(self, sock, header_names) -> None:
        self._sock = sock
        self._ours = tuple(header_names)
        self._head: Optional[memoryview] = None
        self.status: tuple[Optional[int], str] = (None, "")  # the answer's status and reason, once read
        self.rest = b""

    def send(self, data) -> int:
        check_request(data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data, self._ours)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self._sock.sendall(payload)  # the request whole: websocket-client ignores a short send
        return len(data)

    def sendall(self, data) -> None:
        self.send(data)

    def gettimeout(self):
        return self._sock.gettimeout()

    def settimeout(self, timeout) -> None:
        self._sock.settimeout(timeout)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        """websocket-client closes its socket when the upgrade fails: ours is closed by connect()."""

    def recv(self, size: int) -> bytes:
        if self._head is None:
            head, self.rest = _read_answer(self._sock)
            self.status = status_of(head)
            self._head = memoryview(head)
        data, self._head = self._head[:size], self._head[size:]
        return bytes(data)


def _read_answer(sock) -> tuple[bytes, bytes]:
    answer = UpgradeAnswer()
    turns = new_turns()
    while True:
        chunk = sock.recv(ANSWER_CHUNK)
        if not chunk:
            raise ConnectionFailed("the server closed the connection before its upgrade answer was complete")
        done = answer.feed(chunk)
        if done is not None:
            return done
        take_turn(turns)  # a server that floods must not hold the hub (nor the connect timeout's timer)


def _upgrade(sock, url: str, headers: Mapping[str, str]) -> bytes:
    """Upgrade ``sock``; return the bytes the server sent after its answer (frames, for the parser)."""
    ws = websocket.WebSocket(skip_utf8_validation=True)
    header_lines = [f"{name}: {value}" for name, value in headers.items()]
    shim = _AnswerReadByUs(sock, headers)
    try:
        ws.connect(url, socket=shim, header=header_lines, redirect_limit=0)
    except websocket.WebSocketBadStatusException as exc:
        if not exc.status_code:
            raise ConnectionFailed("the server's upgrade answer has no valid status line") from None
        raise HandshakeRejected(exc.status_code, exc.status_message or "") from None
    except websocket.WebSocketException as exc:
        status, reason = shim.status
        if status is not None and status != 101 and status not in _REDIRECTS:
            # A rejection with a body: websocket-client reads the body past the head we hand
            # it and fails; the status in our head is the answer.
            raise HandshakeRejected(status, reason) from None
        response = getattr(ws, "handshake_response", None)
        if response is not None and response.status in _REDIRECTS:
            raise HandshakeRejected(response.status, "redirect (not followed)") from None
        raise ConnectionFailed(f"WebSocket upgrade failed: {exc}") from None
    finally:
        ws.sock = None  # the socket is ours from here on; websocket-client must not close it
    return shim.rest


class WriteFailed(ConnectionClosed):
    """A write failed after the first ``handed`` items of the batch reached the kernel whole.

    ``code`` is 1006 when the socket failed, 1000 when the connection was already closing
    (a close handshake under way is not an abrupt failure)."""

    def __init__(self, handed: int, reason: str, code: int = frames.CLOSE_ABNORMAL) -> None:
        self.handed = handed
        super().__init__(code, reason)


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
    bytes in the send queue not yet acknowledged by the peer). One entry per write
    call: (messages or None for control frames, their byte counts, total)."""

    def __init__(self, limit: int) -> None:
        self.entries: collections.deque = collections.deque()
        self.size = 0
        self.limit = limit

    def record(self, items: list, lengths: list[int]) -> None:
        total = sum(lengths)
        self.entries.append((items, lengths, total))
        self.size += total
        while self.size > self.limit and len(self.entries) > 1:
            self.size -= self.entries.popleft()[2]

    def trim(self, outq: int) -> None:
        """Forget the oldest writes the peer has acknowledged (all but the last ``outq`` bytes)."""
        entries = self.entries
        while entries and self.size - entries[0][2] >= outq:
            self.size -= entries.popleft()[2]

    def unacknowledged(self, outq: int) -> list:
        """The messages (oldest first) covering the last ``outq`` bytes written."""
        found = []
        for items, lengths, _ in reversed(self.entries):
            for index in range(len(items) - 1, -1, -1):
                if outq <= 0:
                    found.reverse()
                    return found
                if items[index] is not None:
                    found.append(items[index])
                outq -= lengths[index]
        found.reverse()
        return found


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
        self.write_turns = new_turns()  # the data writer's share of the hub (the sender's greenlet)

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
            raise WriteFailed(0, "connection is closing", frames.CLOSE_NORMAL)

    def write(self, data: bytes) -> None:
        """Write one control frame, whole, with no other write in between."""
        with self._write_lock:
            self._check_open()
            self._send([None], [data], [len(data)])

    def send_frames(self, items: list[tuple[int, bytes]]) -> None:
        """Frame several messages and write them with as few socket calls as possible:
        small frames joined into one write, large ones masked and written in pieces,
        yielding to other greenlets between pieces. Raises WriteFailed(handed)."""
        with self._write_lock:
            self._check_open()
            handed = 0
            try:
                start = 0
                for index, item in enumerate(items):
                    if len(item[1]) <= frames.MASK_PIECE:
                        continue
                    if index > start:
                        handed += self._send_frames_whole(items[start:index])
                    handed += self._send_frame_in_pieces(item)
                    start = index + 1
                if start < len(items):
                    handed += self._send_frames_whole(items[start:])
            except _Partial as partial:
                raise WriteFailed(handed + partial.handed, f"write failed: {partial.error}") from None

    def _send_frames_whole(self, items: list[tuple[int, bytes]]) -> int:
        chunks, lengths = frames.frame_chunks(items, self._keys)
        return self._send(items, chunks, lengths)

    def _send_frame_in_pieces(self, item: tuple[int, bytes]) -> int:
        """Masked lazily, one piece at a time, yielding in between; the ledger counts
        the message once its last byte is in the kernel."""
        opcode, payload = item
        pieces = frames.encode_frame_pieces(opcode, payload)
        last = -(-len(payload) // frames.MASK_PIECE)  # pieces after the header
        for index, piece in enumerate(pieces):
            self._send([item if index == last else None], [piece], [len(piece)])
            take_turn(self.write_turns)
        return 1

    def _send(self, items: list, chunks: list[bytes], lengths: list[int]) -> int:
        """Write ``chunks`` (the frames of ``items``, whose sizes are ``lengths``) in order,
        recording in the ledger what reached the kernel; return how many items were
        handed over whole (all, unless it raises _Partial).

        Small chunks are joined into one buffer; on plain TCP large ones go to the kernel
        as they are, in one vectored write (sendmsg), so a payload is never copied again.
        """
        if self._vectored and len(chunks) > 1 and any(len(c) >= VECTOR_MIN for c in chunks):
            buffers, small = [], []
            for chunk in chunks:
                if len(chunk) >= VECTOR_MIN:
                    if small:
                        buffers.append(b"".join(small))
                        small = []
                    buffers.append(chunk)
                else:
                    small.append(chunk)
            if small:
                buffers.append(b"".join(small))
        else:
            buffers = [chunks[0] if len(chunks) == 1 else b"".join(chunks)]
        views = [memoryview(b) for b in buffers]
        total, offset, first = sum(lengths), 0, 0
        track, ledger = self.tracks_acks, self._ledger
        recorded, recorded_bytes = 0, 0  # items in the ledger so far, and their bytes
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
                if track and offset < total:
                    # A partial write, and we may wait before the rest: the ledger must match
                    # the kernel now, in case another greenlet declares the connection dead.
                    done = recorded
                    while done < len(items) and recorded_bytes + lengths[done] <= offset:
                        recorded_bytes += lengths[done]
                        done += 1
                    if done > recorded:
                        ledger.record(items[recorded:done], lengths[recorded:done])
                        recorded = done
        except OSError as exc:
            raise _Partial(self._record_partial(items, lengths, offset, recorded, recorded_bytes), exc) from None
        if track:
            if recorded < len(items):
                ledger.record(items[recorded:], lengths[recorded:])
            if len(ledger.entries) > LEDGER_TRIM_EVERY:
                # Forget what TCP has acknowledged: one ioctl per LEDGER_TRIM_EVERY writes.
                outq = self._outq()
                if outq is not None:
                    ledger.trim(outq)
        return len(items)

    def _record_partial(self, items: list, lengths: list[int], offset: int, recorded: int, whole: int) -> int:
        """After a failed write of ``offset`` bytes (``recorded`` items, ``whole`` bytes, already
        in the ledger): ledger the rest of the whole items, and the bytes of a cut-off frame
        without its message (an incomplete frame is never delivered, so the message stays with
        the caller to go again). Returns how many items went whole."""
        handed = recorded
        while handed < len(items) and whole + lengths[handed] <= offset:
            whole += lengths[handed]
            handed += 1
        if self.tracks_acks:
            done_items, done_lengths = items[recorded:handed], lengths[recorded:handed]
            if offset > whole:
                done_items, done_lengths = [*done_items, None], [*done_lengths, offset - whole]
            if done_items:
                self._ledger.record(done_items, done_lengths)
        return handed

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
                frame = frames.encode_frame(frames.OP_CLOSE, frames.close_payload(code, reason))
                self._send([None], [frame], [len(frame)])
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
