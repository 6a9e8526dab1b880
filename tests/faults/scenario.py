"""A fault scenario's client, producer greenlet and accounting, shared by the matrix
and the network-namespace script."""

from __future__ import annotations

import json
import os
import time

import gevent
import gevent.event

from hermes_gevent import QueueFull

from ..support import t
from .accounting import RESULTS, Windows, account, number_of, numbers_in

#: A message every ~0.5 ms in bursts of 10: about 2,000 messages a second.
BURST, PAUSE = 10, 0.005
#: ACK_TIMEOUT for the rows with acknowledgements on (scaled by t()): longer than any
#: fault takes to be noticed here (the blackhole's ping timeout: 0.6 s), so what is resent
#: on a live connection is what a server really left unacknowledged.
ACK_TIMEOUT = 1.0
#: With acknowledgements on, every CALLER_ID_EVERY-th message carries the producer's own id
#: (kept by the client); the others get one from the client.
CALLER_ID_EVERY = 10


def body_of(n: int, size: int) -> str:
    """About ``size`` bytes of JSON-ish text that differs from one message to the next."""
    words = ("order", "shipped", "invoice", "customer", "payment", "refund", "warehouse", "express")
    parts, i = [], n
    while sum(map(len, parts)) < size:
        parts.append(f"{words[i % len(words)]}-{i * 7919 % 10007}")
        i += 1
    return " ".join(parts)


class Run:
    """One scenario: a client, a producer greenlet, and the records to account from.

    ``fault()`` marks a fault as it is injected; its window ends when the client next sees
    the connection go (on_close or on_error), or at ``fault_over()`` for a fault the client
    cannot see (acknowledgements withheld, messages discarded on a live connection)."""

    def __init__(self, make_client, url, *, acks: bool = False, body: int = 0, **options) -> None:
        """``make_client(**options)`` builds the client (a fixture, or the class itself).
        ``acks``: acknowledgements on (ACK_TIMEOUT, unless given) and dicts for messages.
        ``body``: messages carry about this many bytes of text derived from their number (large
        enough to be compressed), and finish() checks every one arrived exactly as sent."""
        self.acks = acks
        self.body = body
        self.accepted: list[int] = []
        self.accepted_at: list[float] = []
        self.drops: list[tuple[int, str]] = []
        self.refused = 0
        self.losses: list[float] = []  # when the client saw a connection go
        self.faults: list[list] = []  # [injected at, over at or None]
        self._stop = gevent.event.Event()
        self._next = 0
        self._user_on_error = options.pop("on_error", None)
        self._user_on_close = options.pop("on_close", None)
        if acks:
            options.setdefault("ack_timeout", t(ACK_TIMEOUT))
            if os.environ.get("HERMES_FAULTS_ACKS_DISABLED"):
                # Only to show the acknowledged rows can fail: the same rows, the same dicts,
                # no acknowledgements. Every abrupt row should then report lost > 0.
                options["ack_timeout"] = None
        self.client = make_client(url=url, on_drop=self._on_drop, on_error=self._on_error, on_close=self._on_close,
                                  **options)
        self.client.start()
        self.producer = None

    def _on_drop(self, message, reason) -> None:
        self.drops.append((number_of(message), reason))

    def _on_error(self, exc) -> None:
        self.losses.append(time.monotonic())
        if self._user_on_error is not None:
            self._user_on_error(exc)

    def _on_close(self, code, reason) -> None:
        self.losses.append(time.monotonic())
        if self._user_on_close is not None:
            self._user_on_close(code, reason)

    def message(self, n: int):
        if self.body:
            message = {"n": n, "body": body_of(n, self.body)}
            if self.acks and n % CALLER_ID_EVERY == 0:
                message["id"] = f"caller-{n}"
            return message
        if not self.acks:
            return f"n:{n}"
        if n % CALLER_ID_EVERY == 0:
            return {"n": n, "id": f"caller-{n}"}
        return {"n": n}

    def send(self, count: int) -> None:
        for _ in range(count):
            n, self._next = self._next, self._next + 1
            try:
                if self.client.send_message(self.message(n)):
                    self.accepted.append(n)
                    self.accepted_at.append(time.monotonic())
            except QueueFull:
                self.refused += 1

    def start_producer(self, pause: float = PAUSE) -> "Run":
        """Send BURST messages every ``pause`` seconds until finish()."""
        def produce():
            while not self._stop.is_set():
                self.send(BURST)
                gevent.sleep(pause)

        self.producer = gevent.spawn(produce)
        return self

    def produce_for(self, seconds: float) -> None:
        gevent.sleep(t(seconds))

    def fault(self) -> None:
        """A fault is being injected now."""
        self.faults.append([time.monotonic(), None])

    def fault_over(self) -> None:
        """The last fault ends now (for faults that do not end the connection)."""
        self.faults[-1][1] = time.monotonic()

    def windows(self, until: float) -> Windows:
        spans = []
        for start, over in self.faults:
            if over is None:
                over = next((at for at in self.losses if at >= start), until)
            spans.append((start, over))
        return Windows(spans, self.accepted, self.accepted_at)

    def finish_by_successor(self, server, scenario: str, successor, *, note: str = ""):
        """Stop this client (it keeps what it could not deliver in its outbox file), then let
        ``successor()`` - a started client with the same identifier and file - deliver it."""
        self._stop.set()
        if self.producer is not None:
            self.producer.join(t(5))
        # Unacknowledged when it stops (the server is down: no acknowledgement comes meanwhile):
        # the successor sends them again, so they count as resent.
        unacked = self.client.status()["unacked"]
        undelivered = self.client.stop(t(5))
        first = self.client.status()
        spilled, reconnects = first["messages_spilled"], first["reconnects"]
        ended = time.monotonic()
        assert undelivered == 0, f"{scenario}: stop() left {undelivered} undelivered beside the file"
        follower = successor()
        assert follower.wait_until_connected(t(15)), f"{scenario}: the successor never connected"
        wait_until = time.monotonic() + t(15)
        while follower.status()["messages_reloaded"] < spilled and time.monotonic() < wait_until:
            gevent.sleep(0.05)
        assert follower.flush(t(15)), f"{scenario}: the successor did not deliver everything"
        if self.accepted:  # written is not yet read: wait for the server to record the last one
            server.wait_for(lambda: self.accepted[-1] in set(numbers_in(server.texts())), t(10), "the last message")
        record = numbers_in(server.texts())
        resent = first["messages_resent"] + follower.status()["messages_resent"] + unacked
        result = account(scenario, self._next, self.accepted, record, self.drops, self.refused, reconnects, note,
                         acks=self.acks, resent=resent,
                         windows=self.windows(ended), spilled=spilled)
        RESULTS.append(result)
        return result

    def finish(self, server, scenario: str, *, delivered_expected: bool = True, note: str = ""):
        self._stop.set()
        if self.producer is not None:
            self.producer.join(t(5))
        if delivered_expected:
            assert self.client.wait_until_connected(t(15)), f"{scenario}: never reconnected"
            self.client.flush(t(15))  # with acknowledgements: until every message is acknowledged
            tail = [n for n in self.accepted[-50:] if n not in {d for d, _ in self.drops}]
            if tail:
                server.wait_for(lambda: tail[-1] in set(numbers_in(server.texts())), t(10), "the last message")
        status = self.client.status()
        ended = time.monotonic()
        self.client.stop(t(5))
        texts = server.texts() if server is not None else []
        if self.body:  # nothing corrupted: every numbered text is the message as it was sent
            corrupt = [text for text in texts if number_of(text) is not None and json.loads(text).get("body")
                       != body_of(number_of(text), self.body)]
            assert not corrupt, f"{scenario}: {len(corrupt)} message(s) arrived altered, e.g. {corrupt[0][:120]!r}"
        record = numbers_in(texts)
        result = account(scenario, self._next, self.accepted, record, self.drops, self.refused,
                         status["reconnects"], note, acks=self.acks, resent=status.get("messages_resent", 0),
                         windows=self.windows(ended))
        RESULTS.append(result)
        return result
