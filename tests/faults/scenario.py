"""A fault scenario's client, producer greenlet and accounting, shared by the matrix
and the network-namespace script."""

from __future__ import annotations

import gevent
import gevent.event

from hermes_gevent import QueueFull

from ..support import t
from .accounting import RESULTS, account, numbers_in

#: A message every ~0.5 ms in bursts of 10: about 2,000 messages a second.
BURST, PAUSE = 10, 0.005


class Run:
    """One scenario: a client, a producer greenlet, and the records to account from."""

    def __init__(self, make_client, url, **options) -> None:
        """``make_client(**options)`` builds the client (a fixture, or the class itself)."""
        self.accepted: list[int] = []
        self.drops: list[tuple[int, str]] = []
        self.refused = 0
        self._stop = gevent.event.Event()
        self._next = 0
        self.client = make_client(url=url, on_drop=self._on_drop, **options)
        self.client.start()
        self.producer = None

    def _on_drop(self, message, reason) -> None:
        self.drops.append((int(message.split(":")[1]), reason))

    def send(self, count: int) -> None:
        for _ in range(count):
            n, self._next = self._next, self._next + 1
            try:
                if self.client.send_message(f"n:{n}"):
                    self.accepted.append(n)
            except QueueFull:
                self.refused += 1

    def start_producer(self) -> "Run":
        def produce():
            while not self._stop.is_set():
                self.send(BURST)
                gevent.sleep(PAUSE)

        self.producer = gevent.spawn(produce)
        return self

    def produce_for(self, seconds: float) -> None:
        gevent.sleep(t(seconds))

    def finish(self, server, scenario: str, *, delivered_expected: bool = True, note: str = ""):
        self._stop.set()
        if self.producer is not None:
            self.producer.join(t(5))
        if delivered_expected:
            assert self.client.wait_until_connected(t(15)), f"{scenario}: never reconnected"
            self.client.flush(t(15))
            tail = [n for n in self.accepted[-50:] if n not in {d for d, _ in self.drops}]
            if tail:
                server.wait_for(lambda: tail[-1] in set(numbers_in(server.texts())), t(10), "the last message")
        reconnects = self.client.status()["reconnects"]
        self.client.stop(t(5))
        record = numbers_in(server.texts()) if server is not None else []
        result = account(scenario, self._next, self.accepted, record, self.drops,
                         self.refused, reconnects, note)
        RESULTS.append(result)
        return result


