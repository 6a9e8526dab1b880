"""The sender greenlet: for each live connection, take batches from the outbox and write them.

A batch that fails part-way is settled by what reached the kernel whole; the rest
stays in flight and goes out first on the next connection (outbox.py), so a failed
write neither loses nor reorders messages. The sender shares the hub fairly
(fairness.py), working longer while the queue is close to overflowing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .connection import WriteFailed
from .fairness import take_turn
from .session import now

if TYPE_CHECKING:
    from .client import WebSocketClient

__all__ = ["BACKLOG_URGENT", "MAX_BATCH_BYTES", "MAX_BATCH_ITEMS", "send_loop"]

#: Largest batch the sender frames into one socket write.
MAX_BATCH_ITEMS = 256
MAX_BATCH_BYTES = 256 * 1024
#: Above this fraction of MAX_QUEUE_SIZE queued, the sender works for fairness.MAX_BUDGET
#: before it yields: the queue is close enough to overflow that waiting would lose messages.
BACKLOG_URGENT = 0.25


def send_loop(client: "WebSocketClient", generation: int) -> None:
    outbox = client._outbox_or_create()
    inbox = client._sender_inbox
    backlog_urgent = client.settings.MAX_QUEUE_SIZE * BACKLOG_URGENT
    while client._current(generation):
        session = inbox.get()
        conn = session.conn
        turns = conn.write_turns
        while session.alive and client._current(generation):
            waits = not len(outbox)
            batch = outbox.take(MAX_BATCH_ITEMS, MAX_BATCH_BYTES, timeout=None)
            if waits:
                turns.turned(now())  # take() waited for a message: the event loop turned
            if not session.alive:
                break  # the batch stays in flight and goes out first on the next session
            if not batch:
                continue  # woken without a message (a resend was queued, or the session ended)
            try:
                conn.send_frames(batch)
            except WriteFailed as exc:
                # What reached the kernel is the ledger's to judge (see Session.fail); where
                # acknowledgements cannot be tracked, the whole batch goes again.
                written = exc.handed if conn.tracks_acks else 0
                client.messages_sent += outbox.settle(batch, written)
                # When the protocol ended the connection (the server's close, a violation), that is
                # why it ended - not the write this refused (the server's code decides what follows).
                failure = conn.protocol.failure
                session.fail(failure if failure is not None else exc)
                break
            client.messages_sent += outbox.ack()
            # A full queue never blocks take(), nor a draining socket send(): let the
            # event loop turn once this loop has had the hub for its budget (fairness.py),
            # the whole cap while the queue is close enough to overflow to lose messages.
            take_turn(turns, urgent=len(outbox) > backlog_urgent)
