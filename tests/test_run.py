"""One run per start-to-stop (run.py): what a start() adopts from before it, what a fork leaves.

The store's open is held on a gate (persistence.open_store wrapped) so that what happens
while a start() opens its store happens at a known moment, not by luck.
"""

from __future__ import annotations

import gevent
import gevent.event
import gevent.threadpool

from hermes_gevent import WebSocketClient, persistence
from hermes_gevent.run import Run

from .support import t


def gated_open(monkeypatch) -> tuple[gevent.event.Event, gevent.event.Event]:
    """(opening, gate): ``opening`` is set when a start() begins to open its store; it opens
    once ``gate`` is set."""
    opening, gate = gevent.event.Event(), gevent.event.Event()
    real = persistence.open_store

    def held(run: Run):
        opening.set()
        gate.wait(t(10))
        return real(run)

    monkeypatch.setattr(persistence, "open_store", held)
    return opening, gate


def from_a_thread(client: WebSocketClient, message: str) -> bool:
    pool = gevent.threadpool.ThreadPool(1)
    try:
        return pool.spawn(client.send_message, message).get(timeout=t(10))
    finally:
        pool.kill()


def test_a_stop_while_the_first_start_opens_the_store_leaves_the_next_run_a_working_queue(
        server, make_client, tmp_path, monkeypatch):
    server.command(cmd="mode", quiet=False)
    opening, gate = gated_open(monkeypatch)
    client = make_client(url=server.url, outbox_path=str(tmp_path / "outbox.db"))
    starting = gevent.spawn(client.start)
    assert opening.wait(t(5))
    assert client.stop(timeout=0.01) == 0  # gives up waiting for the start: "stop() before start()"
    gate.set()
    starting.get(timeout=t(10))
    assert client.running and client.wait_until_connected(t(5))
    # The queue closed by that stop() must not be the new run's: sends from another OS thread
    # go through its hand-off, which a closed queue never drains.
    assert from_a_thread(client, "after the race")
    server.wait_for(lambda: "after the race" in server.texts(), t(5), "the message sent from a thread")
    assert client.flush(t(5))


def test_a_message_sent_while_a_start_opens_the_store_goes_out_in_the_run_it_starts(
        server, make_client, tmp_path, monkeypatch):
    server.command(cmd="mode", quiet=False)
    client = make_client(url=server.url, outbox_path=str(tmp_path / "outbox.db"))
    client.start()
    assert client.wait_until_connected(t(5))
    client.stop(t(5))  # the run's queue is closed: the next one makes its own
    client.start_on_first_use()
    opening, gate = gated_open(monkeypatch)
    starting = gevent.spawn(client.start)
    assert opening.wait(t(5))
    assert from_a_thread(client, "while the store opens")  # accepted: it must be sent, or counted
    gate.set()
    starting.get(timeout=t(10))
    server.wait_for(lambda: "while the store opens" in server.texts(), t(5), "the message sent meanwhile")
    assert client.status()["messages_dropped"] == 0


class Counting(WebSocketClient):
    """Overrides handler_failed, as the API allows: the reader must go through it."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.failures: list[str] = []
        self.failed = gevent.event.Event()

    def handle_message(self, msg) -> None:
        raise ValueError(f"cannot handle {msg!r}")

    def handler_failed(self, what: str, then: str) -> None:
        self.failures.append(what)
        super().handler_failed(what, then)
        self.failed.set()


def test_a_failing_handler_goes_through_the_clients_handler_failed_and_the_totals_read_as_attributes(
        server, make_client):
    client = make_client(Counting, url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="send", text="hello")
    assert client.failed.wait(t(5))
    assert client.failures == ["handle_message"]
    status = client.status()
    assert client.handler_errors == status["handler_errors"] == 1
    assert client.messages_received == status["messages_received"] == 1
    assert client.reconnects == status["reconnects"] == 0
    assert client.send_message("out") and client.flush(t(5))
    assert client.messages_sent == client.status()["messages_sent"] == 1
