"""Opening a connection: TCP, TLS and the HTTP upgrade, on a gevent socket.

``connect()`` opens a cooperative gevent socket (and TLS for wss://) whether or
not the process is monkey-patched, hands it to websocket-client to write the
upgrade request and validate the answer (which we read ourselves, bounded: see
upgrade.py), and returns a ``Connection`` (connection.py) on the upgraded socket.
The request's headers go as given (an ``Origin`` among them replaces
websocket-client's own; a ``Sec-WebSocket-Protocol`` is the offer the 101 is
checked against); a rejection carries the answer's headers (its Retry-After).
With ``proxy=`` (a proxy URL: see proxy.py) the socket goes to the proxy, which opens a
tunnel to the server; TLS to the server then runs inside the tunnel, verified as usual.
"""

from __future__ import annotations

import socket as _stdlib_socket
import ssl as _stdlib_ssl
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Union
from urllib.parse import urlsplit

import gevent
import gevent.lock
import gevent.socket
import gevent.ssl
import websocket

from . import deflate
from .connection import Connection, StreamSocket
from .errors import ConfigError, ConnectTimeout, ConnectionFailed, HandshakeRejected
from .fairness import new_turns, take_turn
from .headers import check_request, check_url, offered_subprotocols, offers_extensions
from .proxy import open_tunnel, parse_proxy
from .upgrade import UpgradeAnswer, agreed_compression, chosen_subprotocol, headers_of, status_of

__all__ = ["ANSWER_CHUNK", "Connector", "connect", "default_ssl_context", "parse_ws_url", "ssl_context_for"]

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
    context: _stdlib_ssl.SSLContext = gevent.ssl.create_default_context(cafile=ca_file)
    return context


def ssl_context_for(ssl_context: Optional[_stdlib_ssl.SSLContext], ca_file: Optional[str]) -> Optional[_stdlib_ssl.SSLContext]:
    """The context a client configured with ``ssl_context=`` or ``ca_file=`` uses (None: the default)."""
    if ssl_context is None and ca_file is not None:
        return default_ssl_context(ca_file)
    return ssl_context


def _wrap_tls(sock: gevent.socket.socket, context: _stdlib_ssl.SSLContext, host: str) -> StreamSocket:
    if isinstance(context, gevent.ssl.SSLContext):
        return context.wrap_socket(sock, server_hostname=host)
    # A standard-library context in an unpatched process would make a blocking socket:
    # run its TLS in memory (SSLObject) over our cooperative socket instead.
    tls = _MemoryTLS(sock, context, host)
    tls.do_handshake()
    return tls


class _MemoryTLS:
    """TLS through ``SSLContext.wrap_bio`` over a gevent socket: what a standard-library
    context needs to stay cooperative when the process is not monkey-patched. Offers the
    socket methods the upgrade and the connection use."""

    RECORD_READ = 64 * 1024

    def __init__(self, sock: StreamSocket, context: _stdlib_ssl.SSLContext, host: str) -> None:
        self._sock = sock
        # The reader and the sender both run TLS operations; each may need to read a record
        # (a key update) or write one: one greenlet at a time on each direction of the socket.
        self._reading = gevent.lock.Semaphore()
        self._writing = gevent.lock.Semaphore()
        self._incoming = _stdlib_ssl.MemoryBIO()
        self._outgoing = _stdlib_ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=host)

    def _run(self, operation: Any, *args: Any) -> Any:
        while True:
            try:
                result = operation(*args)
            except _stdlib_ssl.SSLWantReadError:
                self._flush()
                with self._reading:
                    if self._incoming.pending or self._incoming.eof:
                        continue  # another greenlet read a record while we waited
                    data = self._sock.recv(self.RECORD_READ)
                    if data:
                        self._incoming.write(data)
                    else:
                        self._incoming.write_eof()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        with self._writing:  # taken and written together: records stay in order
            data = self._outgoing.read()
            if data:
                self._sock.sendall(data)

    def do_handshake(self) -> None:
        self._run(self._tls.do_handshake)

    def cipher(self) -> Any:
        return self._tls.cipher()

    def recv(self, size: int) -> bytes:
        try:
            data: bytes = self._run(self._tls.read, size)
            return data
        except (_stdlib_ssl.SSLZeroReturnError, _stdlib_ssl.SSLEOFError):
            return b""

    def send(self, data: Union[bytes, memoryview]) -> int:
        sent: int = self._run(self._tls.write, data)
        return sent

    def sendall(self, data: Union[bytes, memoryview]) -> None:
        view = memoryview(data)
        while view:
            view = view[self.send(view) :]

    def fileno(self) -> int:
        fileno: int = self._sock.fileno()
        return fileno

    def gettimeout(self) -> Optional[float]:
        timeout: Optional[float] = self._sock.gettimeout()
        return timeout

    def settimeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._sock.close()


class Connector(Protocol):
    """How the client opens a connection (``WebSocketClient(connector=...)``); ``connect`` is one.
    ``proxy`` (a proxy URL, credentials included) is passed only when PROXY selects a proxy for
    the attempt, so a connector that knows nothing of proxies works wherever none is in use."""

    def __call__(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        max_message_size: int,
        ssl_context: Optional[_stdlib_ssl.SSLContext] = None,
        proxy: Optional[str] = None,
    ) -> Connection: ...


def connect(
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_message_size: int,
    ssl_context: Optional[_stdlib_ssl.SSLContext] = None,
    proxy: Optional[str] = None,
) -> "Connection":
    """Open a connection; the whole of TCP, the proxy's tunnel (``proxy``: a proxy URL, or None
    for a direct connection), TLS and the upgrade is bounded by ``timeout``."""
    host, port, secure = parse_ws_url(url)
    through = parse_proxy(proxy) if proxy is not None else None
    sock: Optional[StreamSocket] = None
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        if through is not None:
            tcp = sock = open_tunnel(through, host, port)
        else:
            tcp = sock = gevent.socket.create_connection((host, port))
            tcp.setsockopt(_stdlib_socket.IPPROTO_TCP, _stdlib_socket.TCP_NODELAY, 1)
        if secure:
            sock = _wrap_tls(tcp, ssl_context or default_ssl_context(), host)
        rest, subprotocol, compression = _upgrade(sock, url, headers)
        sock.settimeout(None)
        conn = Connection(sock, max_message_size, subprotocol=subprotocol, compression=compression)
        if rest:
            conn.protocol.receive_data(rest)  # frames sent along with the 101: the reader processes them first
        return conn
    except gevent.Timeout as exc:
        if sock is not None:
            sock.close()
        if exc is not timer:
            raise
        via = f" through proxy {through.display}" if through is not None else ""
        raise ConnectTimeout(f"no WebSocket upgrade from {host}:{port}{via} within {timeout:g}s") from None
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

    def __init__(self, sock: StreamSocket, header_names: Iterable[str]) -> None:
        self._sock = sock
        self._ours = tuple(header_names)
        self._head: Optional[memoryview] = None
        self.answer: Optional[bytes] = None  # the answer's head, once read
        self.received_at: Optional[datetime] = None
        self.status: tuple[Optional[int], str] = (None, "")  # the answer's status and reason, once read
        self.rest = b""

    def send(self, data: Union[str, bytes]) -> int:
        check_request(data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else data, self._ours)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        self._sock.sendall(payload)  # the request whole: websocket-client ignores a short send
        return len(data)

    def sendall(self, data: Union[str, bytes]) -> None:
        self.send(data)

    def gettimeout(self) -> Optional[float]:
        timeout: Optional[float] = self._sock.gettimeout()
        return timeout

    def settimeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)

    def fileno(self) -> int:
        fileno: int = self._sock.fileno()
        return fileno

    def close(self) -> None:
        """websocket-client closes its socket when the upgrade fails: ours is closed by connect()."""

    def recv(self, size: int) -> bytes:
        if self._head is None:
            head, self.rest = _read_answer(self._sock)
            self.received_at = datetime.now(timezone.utc)
            self.answer = head
            self.status = status_of(head)
            self._head = memoryview(head)
        data, self._head = self._head[:size], self._head[size:]
        return bytes(data)


def _read_answer(sock: StreamSocket) -> tuple[bytes, bytes]:
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


def _upgrade(sock: StreamSocket, url: str,
             headers: Mapping[str, str]) -> tuple[bytes, Optional[str], Optional[deflate.Agreement]]:
    """Upgrade ``sock``; return the bytes the server sent after its answer (frames, for the
    parser), the subprotocol it chose (None: none) and the compression it agreed to (None:
    none). ``headers`` go as they are: with an ``Origin`` among them websocket-client does not
    write its own; a ``Sec-WebSocket-Protocol`` or ``Sec-WebSocket-Extensions`` among them is
    the offer the answer is checked against."""
    ws = websocket.WebSocket(skip_utf8_validation=True)
    header_lines = [f"{name}: {value}" for name, value in headers.items()]
    own_origin = any(name.lower() == "origin" for name in headers)
    shim = _AnswerReadByUs(sock, headers)
    handshake: Callable[..., None] = ws.connect  # websocket-client's own method is not annotated
    try:
        handshake(url, socket=shim, header=header_lines, redirect_limit=0, suppress_origin=own_origin)
    except websocket.WebSocketBadStatusException as exc:
        if not exc.status_code:
            raise ConnectionFailed("the server's upgrade answer has no valid status line") from None
        # status_message is stored from websocket-client 1.9.1 on; our own read of the head has it too.
        reason = getattr(exc, "status_message", None) or shim.status[1]
        raise _rejected(shim, exc.status_code, reason) from None
    except websocket.WebSocketException as exc:
        status, reason = shim.status
        if status is not None and status != 101 and status not in _REDIRECTS:
            # A rejection with a body: websocket-client reads the body past the head we hand
            # it and fails; the status in our head is the answer.
            raise _rejected(shim, status, reason) from None
        response = getattr(ws, "handshake_response", None)
        if response is not None and response.status in _REDIRECTS:
            raise HandshakeRejected(response.status, "redirect (not followed)") from None
        raise ConnectionFailed(f"WebSocket upgrade failed: {exc}") from None
    finally:
        ws.sock = None  # the socket is ours from here on; websocket-client must not close it
    answer = headers_of(shim.answer or b"")
    subprotocol = chosen_subprotocol(answer, offered_subprotocols(headers))
    return shim.rest, subprotocol, agreed_compression(answer, offers_extensions(headers))


def _rejected(shim: _AnswerReadByUs, status: int, reason: str) -> HandshakeRejected:
    """The rejection, with the answer's headers (a Retry-After: retry.py) when we read them."""
    return HandshakeRejected(status, reason, headers=headers_of(shim.answer or b""), received_at=shim.received_at)
