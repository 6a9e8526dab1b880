"""An in-process WebSocket server peer, for tests that only need a well-behaved server.

The client opens every connection through one callable (``WebSocketClient(connector=...)``).
``Peer.connector`` answers it with one end of a TCP socket pair on 127.0.0.1, wrapped as the
library's own ``Connection`` (already upgraded: there is no HTTP here), and serves the
other end in a greenlet with a real protocol implementation: websockets' sans-I/O
``Protocol`` on the server side. It reads the client's bytes, feeds them to the protocol,
records what came out (messages in order, pings, pongs, the close code) and writes what
the protocol answers (pongs, the close handshake). Frames the client gets wrong (unmasked,
bad UTF-8, bad close codes) fail the connection as a real server would, and are recorded
in ``errors``.

A test drives the timeline: refuse or reject attempts (a server that is down or says
401), push messages or raw bytes, close with a code, drop the socket, withhold pongs, and
wait - on events, never by sleeping, always bounded - for what the client did.

What stays on the real subprocess server (tests/wsserver.py) and the fault proxy: the
HTTP upgrade itself, TCP faults (resets, half-open, slow links, a killed server), TLS,
gunicorn, and load.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable, Mapping

import gevent
import gevent.lock
import gevent.socket
from websockets.frames import Opcode
from websockets.protocol import SEND_EOF, Protocol, Side, State

from hermes_gevent.errors import HandshakeRejected

# The one place the tests name the connection class (its module may move):
from hermes_gevent.connection import Connection

from .frames_util import frame
from .support import Changes, t

READ_SIZE = 65536
Refusal = BaseException | Callable[[], BaseException]


def tcp_pair():
    """Two connected TCP sockets on 127.0.0.1 (the client's end with TCP_NODELAY, as transport.connect
    sets it): the kernel acknowledges bytes as it does for a real server, so the client's ledger of
    unacknowledged writes works as in production (on a Unix socket pair it cannot)."""
    with gevent.socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client_sock = gevent.socket.create_connection(listener.getsockname())
        server_sock, _ = listener.accept()
    client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_sock, server_sock


class PeerConnection:
    """The server's end of one accepted connection, served by websockets' Protocol."""

    def __init__(self, peer: Peer, index: int, sock, headers: dict[str, str]) -> None:
        self.peer = peer
        self.index = index
        self.sock = sock
        self.headers = headers  # the upgrade headers the client sent for this connection
        self.protocol = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
        self.messages: list[str | bytes] = []
        self.pings: list[bytes] = []  # payloads of the client's pings
        self.pongs: list[bytes] = []  # payloads of the client's pongs (answers to ping())
        self.withheld_pongs = 0
        self.close_code: int | None = None  # the code of the client's close frame, None without one
        self.close_reason: str | None = None
        self.ended = False  # the TCP stream is over (EOF, dropped, failed)
        self._failed = False
        self._dropping = False
        self._fragments: list[bytes] = []
        self._fragment_opcode = None
        self._to_ack: list[str] = []  # ids of JSON messages read, acknowledged after each read
        self._write_lock = gevent.lock.Semaphore()
        self._greenlet: gevent.Greenlet | None = None

    @property
    def open(self) -> bool:
        return not self.ended and self.protocol.state is State.OPEN

    # -- serving ---------------------------------------------------------------------

    def serve(self) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(READ_SIZE)
                except OSError:
                    data = b""
                if not data:
                    self.protocol.receive_eof()
                    self._flush()
                    break
                self.protocol.receive_data(data)
                for event in self.protocol.events_received():
                    self._on_frame(event)
                if self._to_ack and self.protocol.state is State.OPEN and not self._dropping:
                    ids, self._to_ack = self._to_ack, []
                    self.protocol.send_text(json.dumps({"ack": ids}).encode())  # one ack per read, after recording
                if self.protocol.parser_exc is not None and not self._failed:
                    self._failed = True  # the client broke the protocol: the Protocol failed the connection
                    self.peer._error(f"connection {self.index}: {self.protocol.parser_exc!r}")
                self._flush()
                self.peer._changes.notify()
        finally:
            self._end()

    def _on_frame(self, event) -> None:
        if self._failed:
            return  # the peer failed this connection: what followed is not processed (RFC 6455 7.1.7)
        opcode, data = event.opcode, bytes(event.data)
        if opcode in (Opcode.TEXT, Opcode.BINARY):
            self._fragment_opcode, self._fragments = opcode, [data]
        elif opcode is Opcode.CONT:
            self._fragments.append(data)
        elif opcode is Opcode.PING:
            self.pings.append(data)  # the protocol queued the pong already
        elif opcode is Opcode.PONG:
            self.pongs.append(data)
        elif opcode is Opcode.CLOSE:
            close = self.protocol.close_rcvd
            self.close_code = close.code if close is not None else None
            self.close_reason = close.reason if close is not None else None
        if opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) and event.fin:
            payload = b"".join(self._fragments)
            self._fragments = []
            if self._fragment_opcode is Opcode.TEXT:
                try:
                    message: str | bytes = payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    self.peer._error(f"connection {self.index}: invalid UTF-8 in a text message: {exc}")
                    self._failed = True
                    self.protocol.fail(1007, "invalid UTF-8")
                    return
            else:
                message = payload
            self.messages.append(message)
            self.peer.messages.append(message)
            if self.peer.acking and isinstance(message, str) and message.startswith("{"):
                ack_id = json.loads(message).get(self.peer.ack_key)
                if ack_id is not None:
                    self._to_ack.append(ack_id)
            if self.peer.echo and self.protocol.state is State.OPEN and not self._dropping:
                self._send(message)

    def _flush(self) -> None:
        """Write what the protocol has to send, in order, whoever calls (one writer at a time)."""
        with self._write_lock:
            for chunk in self.protocol.data_to_send():
                try:
                    if chunk == SEND_EOF:
                        self.sock.shutdown(socket.SHUT_WR)
                    elif self.peer.pongs_withheld and chunk[:1] == b"\x8a":  # a pong, unmasked, whole
                        self.withheld_pongs += 1
                    else:
                        self.sock.sendall(chunk)
                except OSError:
                    pass  # the client has gone: the reader sees the end of the stream

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            try:
                self.sock.close()
            except OSError:
                pass
            self.peer._changes.notify()

    # -- what a test does with it ------------------------------------------------------

    def _check_open(self) -> None:
        if not self.open:
            raise AssertionError(f"peer connection {self.index} is not open (state {self.protocol.state.name})")

    def _send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.protocol.send_text(message.encode("utf-8"))
        else:
            self.protocol.send_binary(bytes(message))
        self._flush()

    def send(self, message: str | bytes) -> None:
        self._check_open()
        self._send(message)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are, past the protocol (which does not learn of them)."""
        if self.ended:
            raise AssertionError(f"peer connection {self.index} has ended")
        with self._write_lock:
            self.sock.sendall(data)

    def ping(self, payload: bytes) -> None:
        self._check_open()
        self.protocol.send_ping(payload)
        self._flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake; the client's answer is recorded as ``close_code``."""
        self._check_open()
        self.protocol.send_close(code, reason)
        self._flush()

    def drop(self) -> None:
        """Abort: no close frame, the socket just goes. What the client's writes already put
        in the socket is read and recorded first, as a server whose TCP acknowledged it
        would have had it; a frame cut short there is not a message. Nothing is answered."""
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=True, timeout=t(5))
        if not self.ended:
            self._dropping = True
            self._drain()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._end()

    def _drain(self) -> None:
        """Read what is already buffered, without waiting (and without yielding: the client
        cannot write in between, so nothing is lost between this read and the close)."""
        self.sock.settimeout(0)
        while True:
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError:  # nothing more buffered (or the client has gone)
                break
            if not data:
                break
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                self._on_frame(event)
        self.protocol.data_to_send()  # pongs or a close the protocol wanted to send: never sent


class Peer:
    """The server side of every connection one test's clients open through ``connector``.

    Records: ``attempts`` (every connector call: url, headers, outcome), ``connections``
    (accepted ones, each with its messages, pings, pongs, close code and headers),
    ``messages`` (every message from every connection, in arrival order), ``errors``
    (protocol errors the client made). Everything it spawns ends in ``stop()``.
    """

    url = "ws://peer.invalid/ws"  # any valid ws:// URL: the connector never resolves it

    def __init__(self, *, echo: bool = False) -> None:
        self.echo = echo
        #: Acknowledge JSON messages carrying ``ack_key``, with {"ack": [ids]} after each read
        #: (after recording them, as a server that processed them would).
        self.acking = False
        self.ack_key = "id"
        self.attempts: list[dict] = []
        self.connections: list[PeerConnection] = []
        self.messages: list[str | bytes] = []
        self.errors: list[str] = []
        self.pongs_withheld = False
        self._refusal: Refusal | None = None
        self._close_on_open: tuple[int, str, int | None] | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._client_socks: list = []
        self._changes = Changes()
        self._stopped = False

    # -- the seam ------------------------------------------------------------------------

    def connector(self, url: str, headers: Mapping[str, str], *, timeout: float, max_message_size: int,
                  ssl_context=None) -> Connection:
        """transport.connect's signature: raises while refusing or rejecting, else a Connection."""
        attempt = {"url": url, "headers": dict(headers), "timeout": timeout, "max_message_size": max_message_size,
                   "outcome": "accepted"}
        self.attempts.append(attempt)
        try:
            if self._stopped:
                raise ConnectionRefusedError(errno.ECONNREFUSED, "the peer has stopped")
            if self._refusal is not None:
                exc = self._refusal() if callable(self._refusal) else self._refusal
                attempt["outcome"] = exc
                raise exc.with_traceback(None)  # the same instance may be raised many times
            client_sock, server_sock = tcp_pair()
            self._client_socks.append(client_sock)
            conn = PeerConnection(self, len(self.connections), server_sock, dict(headers))
            conn._greenlet = gevent.spawn(conn.serve)
            self._greenlets.append(conn._greenlet)
            self.connections.append(conn)
            if self._close_on_open is not None:
                code, reason, times = self._close_on_open
                conn.close(code, reason)  # along with the "101": the client reads it first
                if times is not None:
                    self._close_on_open = (code, reason, times - 1) if times > 1 else None
            return Connection(client_sock, max_message_size)
        finally:
            self._changes.notify()

    # -- controls ------------------------------------------------------------------------

    def refuse(self, exc: Refusal | None = None) -> None:
        """Every attempt raises ``exc`` (default: connection refused) until accept()."""
        self._refusal = exc if exc is not None else ConnectionRefusedError(
            errno.ECONNREFUSED, "Connection refused (the peer is refusing)")

    def reject(self, exc: int | Refusal) -> None:
        """Every attempt fails its handshake: an HTTP status (``HandshakeRejected``) or ``exc``."""
        self._refusal = HandshakeRejected(exc, "Rejected") if isinstance(exc, int) else exc

    def accept(self) -> None:
        """Accept attempts again, and keep the connections open (ends refuse, reject, close_on_open)."""
        self._refusal = None
        self._close_on_open = None

    def close_on_open(self, code: int, reason: str = "closing at once", times: int | None = None) -> None:
        """Accept each attempt, then start closing it with ``code`` at once (a flapping server);
        only the next ``times`` connections when given, then keep them open again."""
        self._close_on_open = (code, reason, times)

    def withhold_pongs(self, withhold: bool = True) -> None:
        """Stop answering the client's pings (a server alive but silent), or answer again."""
        self.pongs_withheld = withhold

    @property
    def current(self) -> PeerConnection:
        """The latest connection, which must be open."""
        if not self.connections:
            raise AssertionError("the peer has no connection")
        conn = self.connections[-1]
        conn._check_open()
        return conn

    def send_text(self, text: str) -> None:
        self.current.send(text)

    def send_bytes(self, data: bytes) -> None:
        self.current.send(bytes(data))

    def send_raw(self, data: bytes) -> None:
        """Raw bytes on the latest connection (bad frames for protocol-error tests)."""
        self.current.send_raw(data)

    def send_frame(self, opcode: int, payload: bytes = b"", **options) -> None:
        """A hand-built frame (frames_util.frame) on the latest connection."""
        self.send_raw(frame(opcode, payload, **options))

    def ping(self, payload: bytes = b"") -> None:
        self.current.ping(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """A server-initiated close handshake on the latest connection."""
        self.current.close(code, reason)

    def drop(self) -> None:
        """Abort the latest connection: no close frame, the socket just goes."""
        if not self.connections:
            raise AssertionError("the peer has no connection")
        self.connections[-1].drop()

    # -- waits (bounded; they fail the test on timeout) ----------------------------------

    def _wait(self, predicate, timeout: float | None, what: str):
        timeout = t(5) if timeout is None else timeout
        return self._changes.wait_for(predicate, timeout, lambda: f"{what} ({self.summary()})")

    def wait_attempts(self, n: int, timeout: float | None = None) -> list[dict]:
        self._wait(lambda: len(self.attempts) >= n, timeout, f"{n} connection attempt(s)")
        return list(self.attempts)

    def wait_connections(self, n: int, timeout: float | None = None) -> list[PeerConnection]:
        self._wait(lambda: len(self.connections) >= n, timeout, f"{n} accepted connection(s)")
        return list(self.connections)

    def wait_messages(self, n: int, timeout: float | None = None) -> list[str | bytes]:
        """Every message received so far (all connections, in order), once there are ``n``."""
        self._wait(lambda: len(self.messages) >= n, timeout, f"{n} message(s)")
        return list(self.messages)

    def wait_pings(self, n: int, timeout: float | None = None, index: int = -1) -> list[bytes]:
        """The client's pings on connection ``index`` (default the latest), once there are ``n``."""
        self._wait(lambda: self.connections and len(self.connections[index].pings) >= n, timeout, f"{n} ping(s)")
        return list(self.connections[index].pings)

    def wait_pongs(self, n: int, timeout: float | None = None, index: int = -1) -> list[bytes]:
        self._wait(lambda: self.connections and len(self.connections[index].pongs) >= n, timeout, f"{n} pong(s)")
        return list(self.connections[index].pongs)

    def wait_closed(self, timeout: float | None = None, index: int = -1) -> int | None:
        """Wait until connection ``index`` (default the latest) has ended; the close code the
        client sent on it, or None if it sent none."""
        conn = self._wait(lambda: self.connections and self.connections[index].ended and self.connections[index],
                          timeout, f"connection {index} to end")
        return conn.close_code

    def summary(self) -> str:
        return (f"peer: {len(self.attempts)} attempt(s), {len(self.connections)} connection(s), "
                f"{len(self.messages)} message(s), close codes {[c.close_code for c in self.connections]}, "
                f"errors {self.errors}")

    def _error(self, text: str) -> None:
        self.errors.append(text)

    # -- teardown ------------------------------------------------------------------------

    def stop(self) -> None:
        """Refuse from now on, kill every greenlet it spawned, close every socket."""
        self._stopped = True
        gevent.killall(self._greenlets, block=True, timeout=t(5))
        alive = [g for g in self._greenlets if not g.dead]
        for conn in self.connections:
            conn._end()
        for sock in self._client_socks:
            sock.close()
        assert not alive, f"peer greenlets still alive after kill: {alive}"
