"""The sender greenlet: for each live connection, take batches from the outbox and write them.

A batch that fails part-way is settled by what reached the kernel whole; the rest
stays in flight and goes out first on the next connection (outbox.py), so a failed
write neither loses nor reorders messages. The sender shares the hub fairly
(fairness.py), working longer while the queue is close to overflowing.

With MAX_SEND_RATE, every data message written - first sends and resends alike -
takes a token of the run's bucket (ratelimit.py): a batch is at most the tokens
available, and with none the sender waits on a timer (or for the connection's end)
until one is due, while the queue absorbs what the application sends meanwhile.
Pings, pongs and close frames do not count.
"""

from __future__ import annotations

from typing import Any, Optional

import gevent

from .acks import AckWindow
from .connection import Connection, WriteFailed
from .fairness import Turns, loop_turn, take_turn, timer_floor
from .frames import Item
from .outbox import Outbox, on_thread_of
from .ratelimit import TokenBucket
from .run import Run
from .session import Session, now

__all__ = ["BACKLOG_URGENT", "MAX_BATCH_BYTES", "MAX_BATCH_ITEMS", "send_loop", "help_starved", "HELP_AFTER", "SLOW_WRITE", "WRITE_NOW_ALWAYS", "WRITING", "write_now"]

#: Largest batch the sender frames into one socket write.
MAX_BATCH_ITEMS = 256
MAX_BATCH_BYTES = 256 * 1024
#: Above this fraction of MAX_QUEUE_SIZE queued, the sender works for fairness.MAX_BUDGET
#: before it yields: the queue is close enough to overflow that waiting would lose messages.
BACKLOG_URGENT = 0.25
#: send_message writes a message at least this large at once whenever the sender has nothing to do
#: (sender.write_now), even while the sender writes a stream - but once until its caller yields: the
#: rest of a burst goes in the sender's batch (one vectored write), and a stream that yields between
#: messages saves the switch to the sender and back per message. Smaller messages go once per loop
#: turn, and not while the sender is writing batches.
WRITE_NOW_ALWAYS = 16 * 1024
#: send_message writes a batch itself (help_starved) when the queue is outbox.DEEP full and the sender
#: has not written for this long: the app's greenlets have kept the hub.
HELP_AFTER = 0.05
#: run.sender_wrote_at while the sender is inside a write (so never "HELP_AFTER ago")
WRITING = float("inf")
#: With acknowledgements on, a write that took longer than this restarts the ACK_TIMEOUT
#: clock of its messages when it ends (a slow reader must not get them twice at once).
SLOW_WRITE = 0.05


def send_loop(run: Run) -> None:
    outbox = run.outbox_or_create()
    inbox = run.sender_inbox
    window = run.window
    backlog_urgent = run.settings.MAX_QUEUE_SIZE * BACKLOG_URGENT
    bucket = run.send_bucket
    metrics = run.metrics  # None: metrics off
    counters = run.counters
    run.store_ready.wait()  # messages kept from an earlier run go out before newer ones
    while run.active:
        session = inbox.get()
        conn = session.conn
        turns = conn.write_turns
        while session.alive and run.active:
            limit, timeout = MAX_BATCH_ITEMS, None
            if window is not None:
                # Acknowledgements on: what the server has not confirmed goes first (all of it
                # on a new connection, the overdue on a live one), and at most MAX_UNACKED wait.
                if not _resend_due(run, session, window, bucket):
                    break
                if not window.room:
                    _wait_for_acks(run, session, window)
                    turns.turned(now())
                    continue
                limit = min(limit, window.room)
                due_at = window.next_due()
                timeout = None if due_at is None else max(0.0, due_at - now())
            if bucket is not None:
                tokens = _tokens(session, bucket, turns)
                if not tokens:
                    break  # the connection ended while we waited: what is queued waits for the next
                limit = min(limit, tokens)
            waits = not len(outbox)
            batch = outbox.take(limit, MAX_BATCH_BYTES, timeout=timeout)
            if waits:
                turns.turned(now())  # take() waited for a message: the event loop turned
            if not session.alive:
                break  # the batch stays in flight and goes out first on the next session
            if not batch:
                continue  # woken without a message (a resend is due, or the session ended)
            if not run.store.check_lease():
                continue  # taken over while this process was frozen: what it lost left the batch
            if window is not None:
                # A batch left in flight by a failed write may be larger than the window's room
                # (and than the tokens available).
                writing = batch[: min(window.room, limit)]  # a copy: settle() below shortens the batch itself
                if bucket is not None:
                    bucket.take(len(writing), now())
                # The window owns them from before the first byte goes: an acknowledgement may come
                # back while a large batch is still being written, and whatever ends this write
                # (a failure, a kill at a yield inside it), the window resends them in order.
                began = now()
                window.written(writing, began)
                counters.messages_sent += outbox.settle(batch, len(writing))
                if metrics is not None:
                    metrics.written(len(writing), len(outbox))
                if not _write_owned(session, window, writing, began):
                    break
                if run.store.path is not None:
                    run.delivered([item for item in writing if not item[2]])  # type: ignore[misc]  # kept without an id
            else:
                # A batch left in flight by a failed write may be larger than the tokens available.
                sending = batch if len(batch) <= limit else batch[:limit]
                if bucket is not None:
                    bucket.take(len(sending), now())
                run.sender_wrote_at = WRITING  # waiting on a full socket is not starving: no help
                try:
                    conn.send_frames(sending)
                except WriteFailed as exc:
                    run.sender_wrote_at = now()
                    # What reached the kernel is the ledger's to judge (see Session.fail); where
                    # acknowledgements cannot be tracked, the whole batch goes again.
                    _written(run, outbox, batch, exc.handed if conn.tracks_acks else 0)
                    _fail(session, conn, exc)
                    break
                run.sender_wrote_turn = loop_turn(run.hub.loop)  # write_now() holds back
                run.sender_wrote_at = now()  # help_starved() helps a sender that did not write for long
                _written(run, outbox, batch, len(sending))
            # A full queue never blocks take(), nor a draining socket send(): let the
            # event loop turn once this loop has had the hub for its budget (fairness.py),
            # the whole cap while the queue is close enough to overflow to lose messages.
            take_turn(turns, urgent=len(outbox) > backlog_urgent)


def write_now(run: Run, outbox: Outbox, item: Item) -> bool:
    """send_message's short cut while the sender has nothing to do: with nothing queued or in flight
    (so the message is the next one written anyway), called in the hub's thread, acknowledgements,
    MAX_SEND_RATE and the outbox store off, the message is written from the caller's greenlet if
    the socket takes it at once (Connection.send_now: never a wait). Under WRITE_NOW_ALWAYS at most once
    per event-loop turn (the messages a producer sends in a burst queue up behind the first, and the
    sender writes them in batches) and not while the sender writes batches (it did in this turn or the
    one before: a stream stays in batches); larger ones once until the caller yields. On libuv, which
    counts no turns, never. True: written (counted as the sender counts); False: queue it."""
    turn = loop_turn(run.hub.loop)  # libuv counts no turns (-1): always queued
    batched = len(item[1]) < WRITE_NOW_ALWAYS  # small messages gain from batches; large ones less
    if turn < 0 or (turn == run.wrote_now_turn or turn - run.sender_wrote_turn < 2 if batched else run.wrote_large_now):
        return False
    session = _plain_session(run)
    if session is None or not outbox.idle_here() or not session.conn.send_now(item):
        return False
    if batched:
        run.wrote_now_turn = turn
    else:
        run.wrote_large_now = True
        run.hub.loop.run_callback(run.caller_yielded)
    run.counters.messages_sent += 1
    if run.metrics is not None:
        run.metrics.enqueued(outbox)
        run.metrics.written(1, len(outbox))
    return True


def help_starved(run: Run, outbox: Outbox) -> None:
    """After a put that found the queue DEEP full (outbox.deep): if the sender has not written for
    HELP_AFTER seconds, write the next batch from the caller's greenlet, as the sender would, if that
    needs no wait. The sender runs only when the hub does: a request greenlet that serves request
    after request without yielding (its next request already in the socket) keeps the hub, and the
    queue would fill."""
    session = _plain_session(run)  # first: with acknowledgements or MAX_SEND_RATE the queue is often deep
    if session is not None and now() - run.sender_wrote_at >= HELP_AFTER:
        _help(run, outbox, session)


def _help(run: Run, outbox: Outbox, session: Session) -> None:
    if not on_thread_of(run.hub):
        return
    batch = outbox.take_now(MAX_BATCH_ITEMS, MAX_BATCH_BYTES)
    if not batch or len(batch[0][1]) > MAX_BATCH_BYTES:
        return  # nothing to take, or a message the sender writes in pieces (it stays first in line)
    handed = session.conn.send_batch_now(batch)
    run.sender_wrote_turn = loop_turn(run.hub.loop)  # write_now() holds back, as after the sender's batch
    _written(run, outbox, batch, handed)  # what was not written stays in flight, first in line


def _plain_session(run: Run) -> Optional[Session]:
    """The live session, when send_message may write itself (write_now, help_starved): with
    acknowledgements, MAX_SEND_RATE and the outbox store off - their bookkeeping is the sender's."""
    session = run.session
    if (session is None or not session.alive or not run.active or run.window is not None
            or run.send_bucket is not None or run.store.path is not None):
        return None
    return session


def _written(run: Run, outbox: Outbox, batch: list[Item], count: int) -> None:
    """The first ``count`` messages of ``batch`` (take()'s list; acknowledgements off) reached the
    kernel: the store forgets them, the outbox settles them, the counters and metrics count them."""
    run.delivered(batch[:count])  # a copy: settle() empties the batch
    written = outbox.settle(batch, count)
    run.counters.messages_sent += written
    if run.metrics is not None:
        run.metrics.written(written, len(outbox))


def _tokens(session: Session, bucket: TokenBucket, turns: Turns) -> int:
    """The messages MAX_SEND_RATE lets go now, waiting until at least one may; 0 when the
    connection ended meanwhile. The wait is a timer (the event loop turns, other greenlets'
    timers and I/O run), cut short by the connection's end."""
    while session.alive:
        current = now()
        available = bucket.available(current)
        if available:
            return available
        session.lost.wait(timer_floor(bucket.wait(current)))
        turns.turned(now())  # a timer wait is a loop turn: the budget starts again
    return 0


def _resend_due(run: Run, session: Session, window: AckWindow,
                bucket: Optional[TokenBucket] = None) -> bool:
    """Write again, oldest first, what is due in the window (within MAX_SEND_RATE); False when
    the connection failed."""
    run.store.check_lease()  # taken over meanwhile: what it lost leaves the window first
    due = window.due(now())
    start = 0
    while start < len(due):
        if not session.alive:
            break
        size = MAX_BATCH_ITEMS
        if bucket is not None:
            size = min(size, _tokens(session, bucket, session.conn.write_turns))
            if not size:
                break
        # Only what is still unacknowledged (an ack may have come while the previous chunk went
        # out), timed before writing (one may come back while this one goes out).
        began = now()
        chunk = window.rewritten(due[start : start + size], began)
        start += size
        if not chunk:
            continue
        if bucket is not None:
            bucket.take(len(chunk), began)
        if not _write_owned(session, window, chunk, began):
            return False  # the window has them all: due again on the next connection
        run.counters.messages_resent += len(chunk)
        if run.metrics is not None:
            run.metrics.resent(len(chunk))
        take_turn(session.conn.write_turns)
    return session.alive


def _write_owned(session: Session, window: AckWindow, items: list[Item], began: float) -> bool:
    """Write messages the window already holds, timed at ``began``; False when the connection
    failed. ACK_TIMEOUT counts from the end of a slow write (a slow reader must not get them
    twice at once)."""
    conn = session.conn
    try:
        conn.send_frames(items)
    except WriteFailed as exc:
        _fail(session, conn, exc)
        return False
    if now() - began > SLOW_WRITE:
        window.rewritten(items, now())
    return True


def _wait_for_acks(run: Run, session: Session, window: AckWindow) -> None:
    """MAX_UNACKED messages wait for acknowledgements: wait for one, for the next resend, or
    for the connection to end - messages stay queued meanwhile."""
    run.acks_changed.clear()
    if window.room:
        return
    due_at = window.next_due()
    timeout = None if due_at is None else max(0.0, due_at - now())
    waitables: list[Any] = [run.acks_changed, session.lost]
    gevent.wait(waitables, count=1, timeout=timeout)


def _fail(session: Session, conn: Connection, exc: WriteFailed) -> None:
    # When the protocol ended the connection (the server's close, a violation), that is
    # why it ended - not the write this refused (the server's code decides what follows).
    failure = conn.protocol.failure
    session.fail(failure if failure is not None else exc)
