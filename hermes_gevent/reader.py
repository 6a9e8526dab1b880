"""The reader greenlet: for each live connection, read, let the protocol deliver, answer.

It reads with large ``recv`` calls, hands the bytes to the connection's Protocol,
which delivers every message to the client in order and queues pongs and close
frames; the reader writes those and, when the protocol says the connection ended,
fails the session with the protocol's reason. It shares the hub fairly
(fairness.py), and gathers streams of small frames into large reads.
"""

from __future__ import annotations

import logging

import gevent

from . import frames
from .connection import Connection
from .errors import ProtocolError
from .fairness import loop_turn_counter, new_turns, pause, take_turn, timer_floor
from .run import Run
from .session import Session, now

__all__ = ["CLOSE_WRITE_TIMEOUT", "REPLIES_WAIT", "COALESCE_BELOW", "COALESCE_IF_WAITED_UNDER", "COALESCE_PAUSE", "read_loop",
    "read_session"]

#: Read coalescing: a read under COALESCE_BELOW bytes that found data already waiting (the
#: event loop did not turn during it; on loops that do not count turns, it returned within
#: COALESCE_IF_WAITED_UNDER seconds), with nothing written meanwhile, pauses
#: COALESCE_PAUSE seconds before the next read. Streams of small frames then arrive in large
#: reads; a lone message, or a request/response exchange, is never delayed.
COALESCE_BELOW = 16 * 1024
COALESCE_IF_WAITED_UNDER = 0.00002
COALESCE_PAUSE = 0.0005
#: How long the reader may wait to write the close frame after a protocol error.
CLOSE_WRITE_TIMEOUT = 1.0
#: After a protocol error, how long the close frame waits for the replies already queued (the
#: handlers answered the messages delivered before the violation) to be written first.
REPLIES_WAIT = 0.5


def read_loop(run: Run) -> None:
    inbox = run.reader_inbox
    while run.active:
        session = inbox.get()
        if session.alive and run.active:
            read_session(run, session)


def read_session(run: Run, session: Session) -> None:
    conn = session.conn
    protocol = conn.protocol
    process = protocol.process
    on_message = run.on_data if run.window is None else run.on_data_with_acks
    counters = run.counters
    metrics = run.metrics

    def on_control(event: frames.Event) -> None:
        if metrics is not None and isinstance(event, frames.Pong):
            metrics.pong(session.ping_sent_at, now())
        # A pong (or our ping's answer) goes out as soon as the ping is parsed, not after the
        # handlers of everything else in the read have run.
        if protocol.has_data_to_send and protocol.failure is None:
            conn.send_pending()

    turns = new_turns()
    inflating = lambda: take_turn(turns)  # noqa: E731  # between slices of a large compressed message
    loop_turns = loop_turn_counter()
    coalesce_pause = timer_floor(COALESCE_PAUSE)
    if protocol.parser.buffered:  # frames the server sent along with its 101
        session.handler_since = now()
        process(on_message, on_control, inflating)
        session.handler_since = None
    writes, turned, reply_awaited = -1, 0, False
    while protocol.failure is None:
        asked_at = now()
        if loop_turns is not None:
            turned = loop_turns()
        read_at = session.last_frame_at = conn.receive(reply_awaited)
        # Did recv() wait for data (the event loop turned meanwhile), or find it waiting?
        if loop_turns is not None:
            waited = loop_turns() != turned
            found_waiting = not waited
        else:  # a loop that counts no turns (libuv): time the call; the budget alone decides yields
            waited = False
            found_waiting = read_at - asked_at < COALESCE_IF_WAITED_UNDER
        quiet, writes = conn.writes == writes, conn.writes  # nothing written since the last read
        # Request/response: this read waited for the answer to a write, so the next answer is not there
        # yet either. Waiting for the socket first (no read that finds nothing) also lets the greenlets
        # this read wakes - the one that asked - run and write before the reader reads again.
        reply_awaited = waited and not quiet
        run.debug_bodies = run.log.logger.isEnabledFor(logging.DEBUG)
        received = counters.messages_received
        session.handler_since = read_at  # the handlers run inside process()
        process(on_message, on_control, inflating)
        session.handler_since = None
        if counters.messages_received != received:
            counters.last_message_at = read_at
        if protocol.failure is not None:
            break
        if waited:
            turns.turned(read_at)  # the hub already ran while we waited: no extra turn
        elif quiet and found_waiting and conn.last_read_size < COALESCE_BELOW:
            # Small reads that never had to wait, while we are not writing: the server
            # streams frames faster than we ask. Reading each packet alone costs a syscall
            # and a loop turn per one or two messages; a short pause gathers them into one
            # large read. (A request/response exchange writes between reads: never paused.)
            pause(turns, coalesce_pause)  # a timer: a loop turn too
        else:
            # recv() does not yield while data is waiting: read on, within the budget (fairness.py).
            take_turn(turns)
    _ended(run, session, conn)


def _ended(run: Run, session: Session, conn: Connection) -> None:
    """The protocol says the connection ended: send what it owes (the echo of the server's
    close, or our close after a violation), log why, and fail the session with the reason."""
    protocol = conn.protocol
    failure = protocol.failure
    assert failure is not None
    if isinstance(failure, ProtocolError):
        run.log.warning(f"protocol error from the server: {failure}")
    elif protocol.close_received is not None:
        close = protocol.close_received
        run.log.info(f"server closed the connection with code {close.code} {close.reason}".rstrip())
    if isinstance(failure, ProtocolError):  # a peer that breaks the protocol must not hold us
        outbox = run.outbox
        if outbox is not None and len(outbox) and protocol.replies_first:
            outbox.wait_empty(REPLIES_WAIT)  # the sender writes them ahead of our close frame
        gevent.with_timeout(CLOSE_WRITE_TIMEOUT, conn.send_pending, timeout_value=False)
    elif protocol.has_data_to_send:  # the echo of the server's close, after any message being written
        conn.send_pending()
    session.fail(failure)
