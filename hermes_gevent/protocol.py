"""The WebSocket protocol of one client connection, without I/O.

``Protocol`` owns everything RFC 6455 says about a connection once it is open:
its state (OPEN, CLOSING, CLOSED), the close handshake both ways, the close code
sent after a protocol error, answering pings, and framing. The connection
(connection.py) only moves bytes: it hands what it reads to ``receive_data``,
calls ``process`` to deliver messages, and writes what ``data_to_send`` returns.
Nothing here reads a clock, touches a socket or raises for an ordinary event: a
close frame, the end of the stream and a protocol violation each move the state
and set ``failure``, the reason the connection ended. (websockets' protocol.py is
the model; the fast frame parser in frames.py stays the hot path.)
"""

from __future__ import annotations

import enum
from typing import Callable, Iterator, Optional, Union

from . import deflate, encoder, frames
from .errors import ConnectionClosed, ConnectionFailed, ProtocolError
from .frames import Item

__all__ = ["OnControl", "OnMessage", "Protocol", "ProtocolState"]

OnMessage = Callable[[Union[str, bytes]], object]
OnControl = Callable[[frames.Event], object]


class ProtocolState(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"  # our close frame is sent; the server's answer is awaited
    CLOSED = "closed"  # the close handshake is done, or the connection failed


class Protocol:
    """The protocol state of one open client connection (see the module docstring)."""

    def __init__(self, max_message_size: int, compression: Optional[deflate.Agreement] = None) -> None:
        self.compression = compression
        self._compressor: Optional[deflate.Compressor] = None
        inflater = None
        if compression is not None:  # permessage-deflate: messages compressed and inflated here
            self._compressor = deflate.Compressor(compression, deflate.Options())
            inflater = deflate.Decompressor(compression)
        self.parser = frames.FrameParser(max_message_size, inflater)
        self.state = ProtocolState.OPEN
        self.close_sent: Optional[tuple[int, str]] = None
        self.close_received: Optional[frames.Close] = None
        #: Why the connection ended (ConnectionClosed, or the ProtocolError we closed for); None while open.
        self.failure: Optional[ConnectionFailed] = None
        self.pongs_received = 0
        # After a violation, until our close frame is taken: replies the handlers already queued
        # may still go ahead of it (see fail()).
        self.replies_first = False
        self._keys = encoder.MaskKeys()
        self._outgoing: list[bytes] = []

    # -- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the socket; ``process`` parses them."""
        if self.state is not ProtocolState.CLOSED:
            self.parser.feed(data)

    def receive_eof(self, reason: str = "TCP connection ended without a close frame") -> None:
        """The byte stream ended (or failed): closed abnormally unless the handshake was done."""
        self._end(ConnectionClosed(frames.CLOSE_ABNORMAL, reason))

    def process(self, on_message: OnMessage, on_control: Optional[OnControl] = None,
                pause: Optional[Callable[[], object]] = None) -> None:
        """Deliver every complete message in the buffer to ``on_message``, in order; answer
        pings, complete the close handshake, and close with the right code on a violation.
        ``on_control`` (optional) sees every ping, pong and close frame after it is handled;
        ``pause`` is called between slices of inflating a large message."""
        if self.state is ProtocolState.CLOSED:
            return
        handle = self._on_control if on_control is None else self._observed(on_control)
        try:
            self.parser.parse(on_message, handle, pause)
        except ProtocolError as exc:
            self.fail(exc)

    def events_received(self) -> list[frames.Event]:
        """Process the buffer and return its events (for simple callers and tests)."""
        events: list[frames.Event] = []
        self.process(lambda data: events.append(frames.Message(data)), events.append)
        return events

    def _observed(self, on_control: OnControl) -> OnControl:
        def handle(event: frames.Event) -> None:
            self._on_control(event)
            on_control(event)

        return handle

    def _on_control(self, event: frames.Event) -> None:
        kind = type(event)
        if kind is frames.Ping:
            assert isinstance(event, frames.Ping)
            if self.close_sent is None:
                self._outgoing.append(encoder.encode_frame(frames.OP_PONG, event.payload))
        elif kind is frames.Pong:
            self.pongs_received += 1
        elif kind is frames.Close:
            assert isinstance(event, frames.Close)
            self.close_received = event
            if self.close_sent is None:  # the server started the handshake: echo its code
                self.send_close(frames.CLOSE_NORMAL if event.code == frames.CLOSE_NO_STATUS else event.code)
            self._end(ConnectionClosed(event.code, event.reason))

    # -- sending --------------------------------------------------------------------------

    def compress_with(self, options: deflate.Options) -> None:
        """Our compressor as ``options`` say (the defaults until then); before the first message."""
        if self.compression is not None:
            self._compressor = deflate.Compressor(self.compression, options)

    def send_close(self, code: int = frames.CLOSE_NORMAL, reason: str = "") -> bool:
        """Start (or answer) the close handshake; False when a close frame was already sent
        or the connection is closed. Data frames are refused from here on."""
        if self.close_sent is not None or self.state is ProtocolState.CLOSED:
            return False
        self.close_sent = (code, reason)
        self._outgoing.append(encoder.encode_frame(frames.OP_CLOSE, encoder.close_payload(code, reason)))
        self.state = ProtocolState.CLOSING
        return True

    def send_ping(self, payload: bytes = b"") -> bool:
        """Queue a ping; False when the connection is no longer open."""
        if self.state is not ProtocolState.OPEN:
            return False
        self._outgoing.append(encoder.encode_frame(frames.OP_PING, payload))
        return True

    def fail(self, error: ProtocolError) -> None:
        """The server broke the protocol: close with ``error.code`` and end the connection.
        Data frames are still accepted until the close frame is taken by ``data_to_send``: the
        replies to messages delivered before the violation go first (RFC 6455 7.1.7 fails the
        connection, it does not take back what the application already answered)."""
        self.send_close(error.code, error.reason)
        self._end(error)
        self.replies_first = True

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> list[bytes]:
        """Control frames queued since the last call (pongs, pings, close), in order."""
        out, self._outgoing = self._outgoing, []
        if out:
            self.replies_first = False  # the close frame goes now: nothing may follow it
        return out

    @property
    def can_send_data(self) -> bool:
        return self.state is ProtocolState.OPEN or self.replies_first

    def frame_messages(self, items: list[Item]) -> tuple[list[bytes], list[int]]:
        """Frames for ``items`` as chunks to write and each frame's size (the sender's hot path);
        with compression, each message is compressed for this connection as it is framed."""
        if self._compressor is not None:
            items = [self._compressed(item) for item in items]
        return encoder.frame_chunks(items, self._keys)

    def frame_message(self, item: Item) -> tuple[bytes, bytes]:
        """One message's frame as its header and its masked payload (send_now's hot path; it never
        writes with compression on, which frames each message for this connection: frame_messages)."""
        assert self._compressor is None
        return encoder.frame_one(item[0], item[1], self._keys)

    def frame_in_pieces(self, item: Item) -> Iterator[bytes]:
        """One large message's frame as a header then masked pieces (the writer yields between).
        With compression the message is first compressed a slice at a time: an empty piece marks
        each slice done (nothing to write; the writer may yield there too)."""
        compressor = self._compressor
        if compressor is not None:
            data = None
            for data in compressor.in_slices(item[1], deflate.SLICE):
                if data is None:
                    yield b""
            if data is not None:
                item = (item[0] | frames.RSV1, data)
        yield from encoder.encode_frame_pieces(item[0], item[1])

    def _compressed(self, item: Item) -> Item:
        """The message as this connection sends it: compressed with RSV1 set, or as it is."""
        assert self._compressor is not None
        data = self._compressor.compress(item[1])
        return item if data is None else (item[0] | frames.RSV1, data)

    def _end(self, failure: ConnectionFailed) -> None:
        if self.state is not ProtocolState.CLOSED:
            self.state = ProtocolState.CLOSED
            self.failure = failure
