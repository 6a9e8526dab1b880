"""One open WebSocket connection: the bytes between a gevent socket and its Protocol.

The reader greenlet calls ``receive()`` (one large ``recv`` into the protocol) then
``protocol.process(...)``; any greenlet writes: data through ``send_frames`` (the
sender), control frames the protocol queued through ``send_pending``. Every write goes
behind one gevent lock, so frames never interleave, and is recorded in the kernel
ledger (ledger.py) so an abrupt failure can tell which messages to send again.
"""

from __future__ import annotations

import errno
import operator
import os
import socket
import time
import typing
from typing import Any, Callable, Iterator, Optional, Union

import gevent
import gevent.lock
import gevent.socket

from . import encoder, frames
from .errors import ConnectionClosed
from .fairness import new_turns, take_turn
from .ledger import TIOCOUTQ, KernelLedger, unacknowledged_bytes, whole_frames
from .frames import Item
from .deflate import Agreement
from .protocol import Protocol

__all__ = ["Connection", "IOV_MAX", "NOW_MAX", "READ_SIZE", "StreamSocket", "VECTOR_MIN", "WriteFailed"]

_Buffer = Union[bytes, bytearray, memoryview]
_payload = operator.itemgetter(1)

READ_SIZE = 256 * 1024
#: Parts at least this large are written as they are (vectored); smaller ones are joined.
VECTOR_MIN = 4096
IOV_MAX = 512
#: ``send_now`` writes messages up to this size (larger ones go through the sender, in pieces if need be).
NOW_MAX = 64 * 1024


class StreamSocket(typing.Protocol):
    """What a connection needs of its socket: gevent's socket, an SSLSocket (gevent's or the
    standard library's), or transport's in-memory TLS. ``sendmsg`` is used when present."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def send(self, data: _Buffer, /) -> int: ...
    def sendall(self, data: _Buffer, /) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...
    def gettimeout(self) -> Optional[float]: ...
    def settimeout(self, timeout: Optional[float], /) -> None: ...


class WriteFailed(ConnectionClosed):
    """A write failed after the first ``handed`` items of the batch reached the kernel whole.

    ``code`` is 1006 when the socket failed, 1000 when the connection was already closing
    (a close handshake under way is not an abrupt failure)."""

    def __init__(self, handed: int, reason: str, code: int = frames.CLOSE_ABNORMAL) -> None:
        self.handed = handed
        super().__init__(code, reason)


class Connection:
    """An open WebSocket connection on ``sock`` (already upgraded). Reads from one greenlet;
    writes from any."""

    def __init__(self, sock: StreamSocket, max_message_size: int, subprotocol: Optional[str] = None,
                 compression: Optional[Agreement] = None) -> None:
        self.sock = sock
        self.subprotocol = subprotocol  # the one the server chose in its 101, None when none
        self.protocol = Protocol(max_message_size, compression)
        self._write_lock = gevent.lock.Semaphore()
        self._ledger = KernelLedger()
        # TLS records do not map byte for byte onto frames (gevent's SSLSocket, the stdlib's and
        # ours in transport.py all have cipher()); and TIOCOUTQ counts unacknowledged bytes on
        # TCP only (on a Unix socket it counts buffer memory): no ledger for either.
        plain = not hasattr(sock, "cipher")
        tcp = getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6)
        self.tracks_acks = plain and tcp and TIOCOUTQ is not None
        sendmsg: Optional[Callable[[list[Any]], int]] = getattr(sock, "sendmsg", None) if plain else None
        self._sendmsg = sendmsg  # vectored writes: plain TCP only
        # A plain gevent TCP socket (its descriptor non-blocking, as gevent keeps them): send_now() and
        # send_batch_now() write with os.writev on the descriptor; receive() waits on its own watcher.
        self._plain_gevent = (self.tracks_acks and isinstance(sock, gevent.socket.socket)
                              and not os.get_blocking(sock.fileno()))
        self._hub = gevent.get_hub()
        # Readability, for receive(reply_awaited=True) (libev wakes it if the socket closes; abort() does too)
        self._readable = self._hub.loop.io(sock.fileno(), 1) if self._plain_gevent else None
        self.aborted = False
        self.last_read_size = 0
        self.writes = 0  # write calls so far (the reader's coalescing looks at it)
        # What send_now() handed over but the socket did not take whole: the message and its frame's
        # unwritten end, written before anything else (see send_now).
        self._rest: Optional[tuple[Item, memoryview]] = None
        self.write_turns = new_turns()  # the data writer's share of the hub (the sender's greenlet)

    @property
    def compression(self) -> Optional[Agreement]:
        """The permessage-deflate the server agreed to, None when none (the protocol's)."""
        return self.protocol.compression

    # -- reading ------------------------------------------------------------------------

    def receive(self, reply_awaited: bool = False) -> float:
        """Wait for data and hand one large read to the protocol; return when it came. When the stream
        ends or fails, the protocol is told (its state becomes CLOSED). ``reply_awaited``: the reader
        expects nothing yet; after a read that took everything, wait for the socket, not a read that finds none."""
        try:
            readable = self._readable
            if reply_awaited and readable is not None and self.last_read_size < READ_SIZE:
                self._hub.wait(readable)  # as gevent's recv() waits after EAGAIN
            data = self.sock.recv(READ_SIZE)
        except OSError as exc:
            data = b""
            self.protocol.receive_eof(f"read failed: {exc}")
        else:
            if not data:
                self.protocol.receive_eof()
        self.last_read_size = len(data)
        if data:
            self.protocol.receive_data(data)
        return time.monotonic()

    def events(self) -> Iterator[frames.Event]:
        """Yield events as they arrive until the connection ends (for simple callers)."""
        protocol = self.protocol
        while protocol.failure is None:
            self.receive()
            events = protocol.events_received()
            self.send_pending()
            yield from events

    # -- writing ------------------------------------------------------------------------

    def send_pending(self) -> bool:
        """Write the control frames the protocol queued (pongs, pings, a close), whole and in
        order; False when they could not be written."""
        with self._write_lock:
            return self._write_pending()

    def _write_pending(self) -> bool:
        pending = self.protocol.data_to_send()
        if self.aborted or not (pending or self._rest is not None):
            return not pending
        try:
            if pending:
                data = b"".join(pending)
                self._send([None], [data], [len(data)])  # send_now()'s rest first, if any
            else:
                self._write_rest()
        except _Partial:
            return False
        return True

    def ping(self, payload: bytes = b"") -> bool:
        return self.protocol.send_ping(payload) and self.send_pending()

    def send_close(self, code: int, reason: str = "") -> bool:
        """Start the close handshake; False when a close frame was already sent or not written."""
        return self.protocol.send_close(code, reason) and self.send_pending()

    def send_frames(self, items: list[Item]) -> None:
        """Frame several messages and write them with as few socket calls as possible:
        small frames joined into one write, large ones masked and written in pieces,
        yielding to other greenlets between pieces. Raises WriteFailed(handed)."""
        with self._write_lock:
            if not self.protocol.can_send_data or self.aborted:
                # The close frame the protocol queued (our echo of the server's, or ours) goes
                # out before the caller fails the session and closes the socket.
                self._write_pending()
                raise WriteFailed(0, "connection is closing", frames.CLOSE_NORMAL)
            handed = 0
            try:
                if items and max(map(len, map(_payload, items))) <= encoder.MASK_PIECE:  # the common case
                    self._send_frames_whole(items)  # (no message to write in pieces: seen in one C pass)
                    return
                start = 0
                for index, item in enumerate(items):
                    if len(item[1]) <= encoder.MASK_PIECE:
                        continue
                    if index > start:
                        handed += self._send_frames_whole(items[start:index])
                    handed += self._send_frame_in_pieces(item)
                    start = index + 1
                if start < len(items):
                    handed += self._send_frames_whole(items[start:])
            except _Partial as partial:
                raise WriteFailed(handed + partial.handed, f"write failed: {partial.error}") from None

    def send_now(self, item: Item) -> bool:
        """send_batch_now([item]) for a message up to NOW_MAX, kept flat (it runs once per message):
        False: nothing was written (the caller queues it); True: handed over."""
        if len(item[1]) > NOW_MAX:
            return False
        if not self._plain_gevent:  # a socket that must be told not to wait: the general case
            return self.send_batch_now([item]) == 1
        lock = self._write_lock
        if not self._may_write_now() or not lock.acquire(blocking=False):
            return False
        try:  # held, though nothing here waits (see send_batch_now)
            head, masked = self.protocol.frame_message(item)
            try:  # fileno() is -1 once closed (EBADF here), never a descriptor reused by another file
                sent = os.writev(self.sock.fileno(), (head, masked))
            except OSError:  # the socket is full (or failed: the sender will see it): the caller keeps it
                return False
            self.writes += 1
            total = len(head) + len(masked)
            if sent == total:  # the common case: all of it
                self._ledger.record([item], [total])
                self._ledger.trim_from(self.sock)
                return True
            self._keep_rest([item], [head, masked], [total], sent)
        finally:
            lock.release()
        gevent.spawn(self.send_pending)  # writes the rest (any writer would, before its own bytes)
        return True

    def send_batch_now(self, items: list[Item]) -> int:
        """Write ``items`` from the caller's greenlet in one socket call if that needs no wait (see
        _may_write_now; plain TCP, where the ledger tracks what the server never acknowledged), the
        socket taking bytes at once. Returns how many were handed over, in order (0: none). A message
        whose frame the socket took in part counts as handed: the rest of its frame goes before any
        other write (a spawned greenlet writes it now; until then ``unacknowledged()`` names it)."""
        lock = self._write_lock
        if not self._may_write_now() or not lock.acquire(blocking=False):
            return 0
        try:  # held, though nothing here waits: a finalizer run by the collector here could switch greenlets
            chunks, lengths = self.protocol.frame_messages(items)  # two chunks per message: header, payload
            # header and payload as they are when large and the socket takes several buffers (no copy)
            vectored = self._sendmsg is not None and max(lengths) >= VECTOR_MIN
            try:
                sent = self._write_at_once(chunks if vectored else [b"".join(chunks)])
            except OSError:  # the socket is full (or failed: the sender will see it): the caller keeps them
                return 0
            self.writes += 1
            if sent == sum(lengths):  # the common case: all of it
                self._ledger.record(items[:], lengths)  # a copy: the caller's list may change (Outbox.settle)
                self._ledger.trim_from(self.sock)
                return len(items)
            handed = self._keep_rest(items, chunks, lengths, sent)
        finally:
            lock.release()
        gevent.spawn(self.send_pending)  # writes the rest (any writer would, before its own bytes)
        return handed

    def _may_write_now(self) -> bool:
        """send_now/send_batch_now may write: plain TCP, open, no compression, nothing else owed."""
        protocol = self.protocol
        return (self.tracks_acks and not self.aborted and self._rest is None and protocol.compression is None
                and protocol.can_send_data and not protocol.has_data_to_send)

    def _keep_rest(self, items: list[Item], chunks: list[bytes], lengths: list[int], sent: int) -> int:
        """The socket took ``sent`` bytes of the frames of ``items`` (two chunks each), not all: ledger
        it, keep the cut-off frame's rest to go first. Returns the messages handed, the cut-off one too."""
        whole, taken = self._ledger.record_written(items, lengths, sent)
        self._ledger.trim_from(self.sock)
        self._rest = (items[whole], encoder.frame_rest(chunks[2 * whole], chunks[2 * whole + 1], sent - taken))
        return whole + 1

    def _write_at_once(self, buffers: list[bytes]) -> int:
        """One write of ``buffers`` that never waits: BlockingIOError when the socket is full."""
        fileno = self.sock.fileno()  # -1 once closed: never a descriptor reused by another file
        if self._plain_gevent and fileno >= 0:
            return os.writev(fileno, buffers)
        sock = self.sock
        timeout = sock.gettimeout()
        sock.settimeout(0.0)  # a gevent socket raises BlockingIOError instead of waiting
        try:
            if len(buffers) > 1:
                assert self._sendmsg is not None  # several buffers only on plain TCP
                return self._sendmsg(buffers)
            return sock.send(buffers[0])
        finally:
            sock.settimeout(timeout)

    def _write_rest(self) -> None:
        """The rest of send_now()'s frame, before any other bytes (in the write lock)."""
        assert self._rest is not None
        item, view = self._rest
        self.writes += 1
        while view:
            try:
                sent = self.sock.send(view)
            except OSError as exc:
                raise _Partial(0, exc) from None
            view = view[sent:]
            if view:
                self._ledger.record([None], [sent])
                self._rest = (item, view)
            else:
                self._ledger.record([item], [sent])
                self._rest = None

    def _send_frames_whole(self, items: list[Item]) -> int:
        chunks, lengths = self.protocol.frame_messages(items)
        return self._send(items, chunks, lengths)

    def _send_frame_in_pieces(self, item: Item) -> int:
        """Masked lazily, one piece at a time, yielding in between; the ledger counts
        the message once its last byte is in the kernel."""
        pieces = self.protocol.frame_in_pieces(item)
        piece = next(pieces)
        for following in pieces:  # one piece behind: the last one completes the message
            if piece:  # empty: a slice of compression done, nothing to write
                self._send([None], [piece], [len(piece)])
            take_turn(self.write_turns)
            piece = following
        self._send([item], [piece], [len(piece)])
        take_turn(self.write_turns)
        return 1

    def _send(self, items: list[Any], chunks: list[bytes], lengths: list[int]) -> int:
        """Write ``chunks`` (the frames of ``items``, whose sizes are ``lengths``) in order,
        recording in the ledger what reached the kernel; return how many items were
        handed over whole (all, unless it raises _Partial).

        Small chunks are joined into one buffer; on plain TCP large ones go to the kernel
        as they are, in one vectored write (sendmsg), so a payload is never copied again.
        """
        if self._rest is not None:
            self._write_rest()
        sendmsg = self._sendmsg
        # (a frame of VECTOR_MIN bytes or more may hold a part worth writing as it is: look closer)
        vectored = sendmsg is not None and len(chunks) > 1 and max(lengths) >= VECTOR_MIN
        views = [memoryview(b) for b in encoder.write_buffers(chunks, VECTOR_MIN if vectored else None)]
        total, offset, first = sum(lengths), 0, 0
        track, ledger = self.tracks_acks, self._ledger
        recorded, recorded_bytes = 0, 0  # items in the ledger so far, and their bytes
        self.writes += 1
        try:
            while offset < total:
                if len(views) - first == 1:
                    sent = self.sock.send(views[first])
                else:
                    assert sendmsg is not None  # several views only when vectored
                    sent = sendmsg(views[first : first + IOV_MAX])
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
                    done, done_bytes = whole_frames(lengths[recorded:], offset - recorded_bytes)
                    if done:
                        ledger.record(items[recorded : recorded + done], lengths[recorded : recorded + done])
                        recorded, recorded_bytes = recorded + done, recorded_bytes + done_bytes
        except OSError as exc:
            raise _Partial(self._record_partial(items, lengths, offset, recorded, recorded_bytes), exc) from None
        if track:
            if recorded < len(items):
                ledger.record(items[recorded:], lengths[recorded:])
            self._ledger.trim_from(self.sock)
        return len(items)

    def _record_partial(self, items: list[Any], lengths: list[int], offset: int, recorded: int, whole: int) -> int:
        """After a failed write of ``offset`` bytes (``recorded`` items, ``whole`` bytes, already in
        the ledger): ledger the rest of what the kernel took. Returns how many items went whole."""
        if self.tracks_acks:
            return recorded + self._ledger.record_written(items[recorded:], lengths[recorded:], offset - whole)[0]
        return recorded + whole_frames(lengths[recorded:], offset - whole)[0]

    def unacknowledged(self) -> list[Any]:
        """After an abrupt failure, before abort(): the messages whose bytes TCP never
        acknowledged (Linux, plain TCP; empty elsewhere)."""
        if not self.tracks_acks or self.aborted:
            return []
        outq = unacknowledged_bytes(self.sock.fileno())
        found = self._ledger.unacknowledged(outq) if outq is not None else []
        # send_now()'s message whose frame never went whole: the newest of all (nothing went after it)
        return found + [self._rest[0]] if self._rest is not None else found

    def abort(self) -> None:
        """Close the socket now, without a close frame (idempotent)."""
        self.aborted = True
        if self._readable is not None:  # the reader waiting on it gets the error, then it is closed
            self._hub.cancel_wait(self._readable, OSError(errno.EBADF, "the connection was closed"), True)
            self._readable = None
        try:
            self.sock.close()
        except OSError:
            pass


class _Partial(Exception):
    def __init__(self, handed: int, error: OSError) -> None:
        self.handed = handed
        self.error = error
