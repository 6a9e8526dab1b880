"""The contract every outbox store keeps (hermes_gevent/store.py), run against each - memory
only, SQLite file, PostgreSQL table: the ``outbox`` fixture, tests/stores.py.

Every store, memory included: the interface (``Store`` is abstract, each store implements all
of it); claim at start; spill at stop and claim at the next start (the memory store keeps
nothing: its spill fails, so the client counts every undelivered message as dropped); append
(durable stores commit it; the memory store is never durable, and refuses); and, through a
client, that each message left at stop is kept or counted as dropped, never both, never neither.

The durable stores only: spill at stop and reload at start, in order; identifiers;
acknowledgements; the bound MAX_QUEUE_SIZE with the overflow strategies; durable sends
(OUTBOX_SYNC="always") from greenlets and OS threads, the hub kept free; a frozen owner fenced out
by its lease. Each of these is marked ``@kept_outside_memory(reason)``: skipped for the memory
store, with the reason.

Each test reads the store directly (sqlite3, psycopg): what is there is what a restart, or
another host, would find. What only one store does (a corrupt file, a full disk, PIDs; leases
across hosts, transactions) is tested in test_store.py and test_pg_store.py.
"""

import json
import os
import signal
import sys
import time

import gevent
import gevent.threadpool
import pytest

import hermes_gevent.lease as lease
import hermes_gevent.persistence as persistence
from hermes_gevent import QueueFull, WebSocketClient
from hermes_gevent.store import Store, seq_of

from .conftest import Recorder, t
from .stores import report_of
from .support import TESTS, ServerProcess, free_port, last_json_line, run_script, wait_until
from .test_hub import MAX_GAP_MS
from .test_store import down_client, numbered

SCRIPTS = TESTS / "scripts"


def kept_outside_memory(reason):
    """A test of what a store keeps outside the process: the ``outbox`` fixture (conftest.py)
    skips it for the memory store, reporting ``reason``."""

    def mark(test):
        test.memory_skip_reason = reason
        return test

    return mark


# -- every store, memory included: the interface ---------------------------------------------------------


def test_store_is_abstract_and_every_store_implements_all_of_it(outbox):
    with pytest.raises(TypeError, match="abstract"):
        Store()
    assert Store.__abstractmethods__ == {
        "available", "open", "claim", "check_lease", "release", "unstored", "take", "append",
        "append_from_thread", "restore", "forget", "spill", "close",
    }
    store = outbox.store("interface")
    try:
        assert isinstance(store, Store) and not type(store).__abstractmethods__
        assert (store.path is not None) == outbox.keeps  # None: memory only (the client forgets nothing)
        assert (store.durable, store.errors) == (False, 0)
        assert store.available is (True if outbox.keeps else None)  # status()["outbox_available"]
        for callback in (store.on_lease_lost, store.on_recovered, store.on_error):
            assert callable(callback)
    finally:
        store.spill([])
        store.close()


def test_a_store_that_kept_nothing_claims_nothing_takes_nothing_and_its_lease_holds(outbox):
    store = outbox.store("empty")
    try:
        assert store.claim(100) == []
        assert store.check_lease() is True
        assert store.unstored() == set()
        assert store.take([1, 2, 3]) == []
        store.forget([(1, b"never-stored", "")])  # no number: nothing to forget, never raises
        store.restore([(1, b"never-stored", "")])
        store.release([])
        assert store.unstored() == set() and store.claim(100) == []
    finally:
        store.spill([])
        store.close()


def test_what_spill_keeps_the_next_store_of_the_identifier_claims_oldest_first(outbox):
    """The durable stores keep every spilled message, held by nobody, for the next claim. The
    memory store keeps none: spill fails (the client counts them as dropped), nothing survives."""
    items = [(1, f"s-{i}".encode(), "") for i in range(3)]  # text frames held in memory only: no number
    first = outbox.store("spilled")
    try:
        spilled = first.spill(items)
    finally:
        first.close()
    if outbox.keeps:
        assert (spilled.kept, spilled.failed, spilled.refused, spilled.evicted) == (3, False, [], [])
    else:
        assert (spilled.kept, spilled.failed, spilled.refused, spilled.evicted, spilled.unstored) == \
            (0, True, [], [], set())
    assert outbox.rows("spilled") == ([(f"s-{i}", None) for i in range(3)] if outbox.keeps else [])

    second = outbox.store("spilled")
    third = None
    try:
        claimed = second.claim(100)
        assert [item[:3] for item in claimed] == (items if outbox.keeps else [])
        seqs = [seq_of(item) for item in claimed]
        assert None not in seqs and seqs == sorted(set(seqs))  # numbered, oldest first
        assert second.claim(100) == []  # held by this store now: not claimed twice
        third = outbox.store("spilled")
        assert third.claim(100) == []  # nor by another one while this one's lease lives
    finally:
        for store in (second, third):
            if store is not None:
                store.spill([])
                store.close()


def test_append_commits_each_message_to_a_durable_store_and_the_memory_store_refuses(outbox):
    items = [(1, f"a-{i}".encode(), "") for i in range(3)]
    store = outbox.store("appended", durable=True)
    try:
        if not outbox.keeps:
            assert store.durable is False  # so the client never appends (OUTBOX_SYNC="always" queues in memory)
            with pytest.raises(NotImplementedError):
                store.append(items)
            with pytest.raises(NotImplementedError):
                store.append_from_thread(items)
            return
        assert store.durable is True
        stored = store.append(items)
        assert [item[:3] for item in stored] == items  # each one stored, in order: none refused, none failed
        assert outbox.texts("appended") == ["a-0", "a-1", "a-2"]  # committed: another connection sees them
        (owner, _), = outbox.leases("appended").items()
        assert {o for _, o in outbox.rows("appended")} == {owner}  # held by this process
        store.forget(stored[:1])  # delivered: gone with the next write, never waiting for it
        wait_until(lambda: outbox.texts("appended") == ["a-1", "a-2"], t(5), "the forgotten row to go")
        pool = gevent.threadpool.ThreadPool(1)
        try:
            [late] = pool.apply(store.append_from_thread, ([(1, b"a-3", "")],))  # an app's OS thread
        finally:
            pool.kill()
        assert late[:3] == (1, b"a-3", "") and seq_of(late) > seq_of(stored[-1])
        store.spill([])
        assert outbox.rows("appended") == [("a-1", None), ("a-2", None), ("a-3", None)]  # released
    finally:
        store.close()


# -- every store, memory included: through a client ---------------------------------------------------


def test_stop_while_down_each_message_left_is_kept_or_counted_as_dropped(peer, make_client, outbox):
    """What stop() leaves undelivered is either kept (spilled: the next start sends it first) or
    counted as dropped ("stopped") - never both, never neither. The memory store keeps nothing:
    all of it is dropped, and the next start sends only what it is given."""
    drops = Recorder()
    first = down_client(make_client, peer, identifier="either", **outbox.options, on_drop=drops)
    old = [f"old-{i}" for i in range(5)]
    for text in old:
        assert first.send_message(text)
    status = first.status()
    assert (status["outbox_available"], status["outbox_errors"]) == (True if outbox.keeps else None, 0)
    undelivered = first.stop(timeout=t(0.5))
    status = first.status()
    if outbox.keeps:
        assert (undelivered, status["messages_spilled"], status["messages_dropped"]) == (0, 5, 0)
        assert status["drops_by_reason"] == {} and drops.calls == []
    else:
        assert (undelivered, status["messages_spilled"], status["messages_dropped"]) == (5, 0, 5)
        assert status["drops_by_reason"] == {"stopped": 5}
        assert drops.wait(5) == [(text, "stopped") for text in old]
    assert outbox.texts("either") == (old if outbox.keeps else [])

    peer.accept()
    second = make_client(connector=peer.connector, url=peer.url, identifier="either", **outbox.options)
    second.start()
    assert second.send_message("new-0")
    expected = (old if outbox.keeps else []) + ["new-0"]
    assert peer.wait_messages(len(expected)) == expected
    assert second.flush(t(5)) and second.status()["messages_reloaded"] == (5 if outbox.keeps else 0)
    assert second.send_message("end") and peer.wait_messages(len(expected) + 1) == [*expected, "end"]


def test_with_acknowledgements_the_unacknowledged_left_at_stop_are_kept_or_counted_as_unacked(peer, make_client,
                                                                                             outbox):
    drops = Recorder()
    client = make_client(connector=peer.connector, url=peer.url, identifier="unacked", **outbox.options,
                         ack_timeout=t(30), max_unacked=5, on_drop=drops)
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(8):
        assert client.send_message({"n": n})
    peer.wait_messages(5)  # never acknowledged; the other three wait for room in the window
    undelivered = client.stop(timeout=t(0.3))
    status = client.status()
    if outbox.keeps:
        assert (undelivered, status["messages_spilled"], status["messages_dropped"]) == (0, 8, 0)
        assert numbered(outbox.texts("unacked")) == list(range(8)) and drops.calls == []
    else:
        assert (undelivered, status["messages_spilled"], status["messages_dropped"]) == (8, 0, 8)
        assert status["drops_by_reason"] == {"unacked": 5, "stopped": 3}
        dropped = drops.wait(8)
        assert [reason for _, reason in dropped] == ["unacked"] * 5 + ["stopped"] * 3
        assert numbered(text for text, _ in dropped) == list(range(8))


def test_always_returns_once_the_message_is_kept_and_without_a_store_queues_in_memory(peer, make_client, outbox):
    drops = Recorder()
    client = down_client(make_client, peer, identifier="sync", **outbox.options, outbox_sync="always",
                         on_drop=drops)
    sent = []
    for i in range(3):
        assert client.send_message(f"m-{i}")
        sent.append(f"m-{i}")
        assert outbox.texts("sync") == (sent if outbox.keeps else [])
    assert client.queue_size == 3
    assert client.status()["outbox_sync"] == ("always" if outbox.keeps else None)
    undelivered = client.stop(timeout=0)
    assert (undelivered, client.status()["messages_spilled"]) == ((0, 3) if outbox.keeps else (3, 0))
    if not outbox.keeps:
        assert drops.wait(3) == [(text, "stopped") for text in sent]


# -- "stop": spill at stop, reload at start ----------------------------------------------------------


@kept_outside_memory(
    "nothing is spilled at stop (see test_stop_while_down_each_message_left_is_kept_or_counted_as_dropped)")
def test_stop_while_down_spills_and_the_next_start_sends_them_first_in_order(peer, make_client, outbox):
    drops = Recorder()
    first = down_client(make_client, peer, identifier="orders", **outbox.options, on_drop=drops)
    for i in range(5):
        assert first.send_message(f"old-{i}")
    assert first.stop(timeout=t(0.5)) == 0  # kept, not lost: not counted as undelivered
    status = first.status()
    assert (status["messages_spilled"], status["messages_dropped"], status["drops_by_reason"]) == (5, 0, {})
    assert drops.calls == []
    assert outbox.rows("orders") == [(f"old-{i}", None) for i in range(5)]  # held by nobody, in order
    assert outbox.leases("orders") == {}  # the stopped client gave up its lease

    # A client with another identifier on the same file does not take them.
    peer.accept()
    other = make_client(connector=peer.connector, url=peer.url, identifier="billing", **outbox.options)
    other.start()
    assert other.send_message("billing-0")
    assert peer.wait_messages(1) == ["billing-0"]  # its first claim is done: the sender waited for it
    assert other.flush(t(5)) and other.status()["messages_reloaded"] == 0
    assert outbox.texts("orders") == [f"old-{i}" for i in range(5)]

    # The same identifier takes them over at start and sends them before what it is given after.
    second = down_client(make_client, peer, identifier="orders", **outbox.options)
    for i in range(3):
        assert second.send_message(f"new-{i}")
    peer.accept()
    expected = [f"old-{i}" for i in range(5)] + [f"new-{i}" for i in range(3)]
    assert peer.wait_messages(9)[1:] == expected
    assert second.flush(t(5))
    status = second.status()
    assert (status["messages_reloaded"], status["messages_sent"], status["messages_dropped"]) == (5, 8, 0)
    wait_until(lambda: outbox.texts("orders") == [], t(5), "the delivered messages to leave the store")
    assert second.send_message("end") and peer.wait_messages(10)[1:] == [*expected, "end"]  # nothing more


@pytest.mark.parametrize("sync", ["stop", "always"])
@kept_outside_memory("nothing is kept from one run to the next")
def test_restarts_while_the_server_stays_down_keep_each_message_once_in_order(sync, peer, make_client, outbox):
    """Deploy after deploy with the server down: each run takes over the kept messages, is given
    new ones, and stops; the store holds each message once, oldest first."""
    expected = []
    for run in range(3):
        client = down_client(make_client, peer, identifier="deploys", **outbox.options, outbox_sync=sync)
        for i in range(4):
            assert client.send_message(f"run-{run}-{i}")
            expected.append(f"run-{run}-{i}")
        wait_until(lambda: client.status()["messages_reloaded"] == 4 * run, t(5), "the kept messages to be taken")
        assert client.stop(timeout=0) == 0 and client.status()["messages_spilled"] == len(expected)
        assert outbox.rows("deploys") == [(text, None) for text in expected]
    peer.accept()
    last = make_client(connector=peer.connector, url=peer.url, identifier="deploys", **outbox.options)
    last.start()
    assert last.send_message("end")
    assert peer.wait_messages(len(expected) + 1) == [*expected, "end"]
    assert last.flush(t(5)) and peer.messages == [*expected, "end"]


@kept_outside_memory("the identifier names what a store keeps for a later start; nothing is kept")
def test_without_an_identifier_the_class_name_is_the_identifier(peer, make_client, outbox, monkeypatch):
    monkeypatch.delenv("HERMES_WS_IDENTIFIER", raising=False)

    class Orders(WebSocketClient):
        pass

    class Billing(WebSocketClient):
        pass

    first = down_client(make_client, peer, cls=Orders, **outbox.options)
    first.send_message("order-0")
    assert first.stop(timeout=t(0.2)) == 0
    assert outbox.texts("Orders") == ["order-0"]
    peer.accept()
    billing = make_client(Billing, connector=peer.connector, url=peer.url, **outbox.options)
    billing.start()
    billing.send_message("bill-0")
    assert peer.wait_messages(1) == ["bill-0"] and billing.status()["messages_reloaded"] == 0
    orders = make_client(Orders, connector=peer.connector, url=peer.url, **outbox.options)
    orders.start()
    orders.send_message("order-1")
    assert peer.wait_messages(3)[1:] == ["order-0", "order-1"]


@kept_outside_memory(
    "nothing is spilled: the unacknowledged are counted as dropped (see test_with_acknowledgements_"
    "the_unacknowledged_left_at_stop_are_kept_or_counted_as_unacked)")
def test_with_acknowledgements_the_unacknowledged_are_spilled_too_and_resent_first(peer, make_client, outbox):
    first = make_client(connector=peer.connector, url=peer.url, identifier="acks", **outbox.options,
                        ack_timeout=t(30), max_unacked=5)
    first.start()
    assert first.wait_until_connected(t(5))
    for n in range(8):
        assert first.send_message({"n": n})
    written = peer.wait_messages(5)  # never acknowledged; the other three wait for room in the window
    status = first.status()
    assert (status["unacked"], status["queue_size"]) == (5, 3)
    assert first.stop(timeout=t(0.3)) == 0
    status = first.status()
    assert (status["messages_spilled"], status["messages_dropped"]) == (8, 0)
    assert numbered(outbox.texts("acks")) == list(range(8))  # the unacknowledged first, then the queued

    peer.acking = True
    second = make_client(connector=peer.connector, url=peer.url, identifier="acks", **outbox.options,
                         ack_timeout=t(30))
    second.start()
    assert second.send_message({"n": 8})
    assert second.flush(t(5))  # everything acknowledged
    resent = peer.connections[-1].messages
    assert numbered(resent) == list(range(9))
    assert resent[:5] == written  # the same messages, with the same ids: a server can tell repeats
    status = second.status()
    assert (status["messages_reloaded"], status["messages_acked"], status["unacked"]) == (8, 9, 0)
    wait_until(lambda: outbox.texts("acks") == [], t(5), "the acknowledged messages to leave the store")


# -- the bound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy, kept, dropped", [
    ("drop_oldest", [f"b-{i}" for i in range(5)], ["a-0", "a-1", "a-2"]),
    ("drop_newest", ["a-0", "a-1", "a-2", "b-0", "b-1"], ["b-2", "b-3", "b-4"]),
    ("raise", ["a-0", "a-1", "a-2", "b-0", "b-1"], ["b-2", "b-3", "b-4"]),
])
@kept_outside_memory("no store to bound: MAX_QUEUE_SIZE bounds the queue alone (test_queue.py)")
def test_at_spill_the_file_holds_at_most_max_queue_size_per_identifier(strategy, kept, dropped, peer, make_client,
                                                                       outbox):
    bounded = dict(outbox.options, max_queue_size=5, queue_overflow_strategy=strategy)
    other = down_client(make_client, peer, identifier="other", **bounded)
    for i in range(5):
        other.send_message(f"o-{i}")
    assert other.stop(timeout=0) == 0  # another identifier's five do not count against this one's bound
    first = down_client(make_client, peer, identifier="bounded", **bounded)
    for i in range(3):
        first.send_message(f"a-{i}")
    assert first.stop(timeout=0) == 0
    assert outbox.texts("bounded") == ["a-0", "a-1", "a-2"]

    drops = Recorder()
    second = make_client(connector=peer.connector, url=peer.url, identifier="bounded", on_drop=drops, **bounded)
    for i in range(5):
        assert second.send_message(f"b-{i}")  # before start(): a full queue, so the first claim takes nothing
    second.start()
    # At most 5 in the store: drop_oldest makes room by dropping the oldest kept ones, the others
    # refuse the newest (and "raise" raises nothing at stop: there is nobody to raise to).
    undelivered = second.stop(timeout=0)
    assert outbox.texts("bounded") == kept
    assert drops.wait(3) == [(text, "overflow") for text in dropped]
    status = second.status()
    assert status["drops_by_reason"] == {"overflow": 3}
    assert status["messages_spilled"] == len([text for text in kept if text.startswith("b-")])
    assert undelivered == len([text for text in dropped if text.startswith("b-")])  # its own it did not keep
    assert outbox.texts("other") == [f"o-{i}" for i in range(5)]

    peer.accept()
    third = make_client(connector=peer.connector, url=peer.url, identifier="bounded", **bounded)
    third.start()
    assert peer.wait_messages(5) == kept and third.status()["messages_reloaded"] == 5


# -- "always": durable sends ---------------------------------------------------------------------------


@kept_outside_memory(
    'OUTBOX_SYNC="always" needs a store to commit to (see test_always_returns_once_the_message_'
    'is_kept_and_without_a_store_queues_in_memory)')
def test_always_send_returns_true_once_the_message_is_in_the_file(peer, make_client, outbox):
    client = down_client(make_client, peer, identifier="durable", **outbox.options, outbox_sync="always")
    for i in range(20):
        assert client.send_message(f"m-{i}")
        assert outbox.texts("durable") == [f"m-{j}" for j in range(i + 1)]  # committed: another connection sees it

    def send_and_look(i):  # concurrent senders share commits; each returns once its own is in
        accepted = client.send_message(f"g-{i}")
        return accepted and f"g-{i}" in outbox.texts("durable")

    senders = [gevent.spawn(send_and_look, i) for i in range(50)]
    gevent.joinall(senders, timeout=t(10), raise_error=True)
    assert [g.value for g in senders] == [True] * 50
    (owner, pid), = outbox.leases("durable").items()
    assert pid == os.getpid() and {o for _, o in outbox.rows("durable")} == {owner}  # held by this run

    # Stopped while the server is down, the messages stay, held by nobody, for the next start.
    assert client.stop(timeout=0) == 0 and client.status()["messages_spilled"] == 70
    expected = [f"m-{i}" for i in range(20)] + [f"g-{i}" for i in range(50)]
    assert outbox.rows("durable") == [(text, None) for text in expected]
    peer.accept()
    again = make_client(connector=peer.connector, url=peer.url, identifier="durable", **outbox.options,
                        outbox_sync="always")
    again.start()
    assert peer.wait_messages(70) == expected
    # Written, they leave the store (acknowledgements off): the forgets go with the next commit.
    assert again.send_message("last") and peer.wait_messages(71)[-1] == "last"
    wait_until(lambda: outbox.texts("durable") == [], t(5), "the written messages to leave the store")


@kept_outside_memory("no store for an acknowledged message to leave")
def test_always_with_acknowledgements_a_message_leaves_the_file_once_acknowledged(peer, make_client, outbox):
    client = make_client(connector=peer.connector, url=peer.url, identifier="acked", **outbox.options,
                         outbox_sync="always", ack_timeout=t(30))
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(10):
        assert client.send_message({"n": n})
    written = peer.wait_messages(10)
    # A commit carries the forgets queued before it: had writing forgotten them, they would be gone now.
    assert client.send_message({"n": 10})
    assert numbered(outbox.texts("acked")) == list(range(11))  # written is not enough
    peer.current.send(json.dumps({"ack": [json.loads(m)["id"] for m in written[:4]]}))
    wait_until(lambda: numbered(outbox.texts("acked")) == list(range(4, 11)), t(5), "the acknowledged to leave")
    peer.acking = True
    peer.current.send(json.dumps({"ack": [json.loads(m)["id"] for m in peer.wait_messages(11)[4:]]}))
    assert client.flush(t(5))
    wait_until(lambda: outbox.texts("acked") == [], t(5), "every acknowledged message to leave the store")


@pytest.mark.parametrize("strategy", ["drop_newest", "raise"])
@kept_outside_memory("no store, shared by the identifier's processes, to be full")
def test_always_refuses_the_newest_when_the_file_holds_max_queue_size_for_the_identifier(strategy, peer,
                                                                                         make_client, outbox):
    bounded = dict(outbox.options, identifier="full", outbox_sync="always", max_queue_size=3,
                   queue_overflow_strategy=strategy)
    holder = down_client(make_client, peer, **bounded)
    for i in range(3):
        assert holder.send_message(f"h-{i}")
    # Another client of the identifier, as another worker of the host: its own queue is empty,
    # but the store holds MAX_QUEUE_SIZE (held by a live lease: not its to take).
    drops = Recorder()
    other = make_client(connector=peer.connector, url=peer.url, on_drop=drops, **bounded)
    other.start()
    if strategy == "raise":
        with pytest.raises(QueueFull, match="outbox is full"):
            other.send_message("o-0")
        assert other.status()["messages_dropped"] == 0  # refused to the caller, not accepted and dropped
    else:
        assert other.send_message("o-0") is False
        assert drops.wait(1) == [("o-0", "overflow")] and other.status()["drops_by_reason"] == {"overflow": 1}
    assert outbox.texts("full") == ["h-0", "h-1", "h-2"] and other.queue_size == 0
    peer.accept()
    assert peer.wait_messages(3) == ["h-0", "h-1", "h-2"]
    wait_until(lambda: outbox.texts("full") == [], t(5), "the holder's messages to leave the store")
    assert other.send_message("o-1")  # room again
    assert peer.wait_messages(4)[-1] == "o-1"


@kept_outside_memory("no store to keep the newest in")
def test_always_with_drop_oldest_the_file_keeps_the_newest(peer, make_client, outbox):
    drops = Recorder()
    client = down_client(make_client, peer, identifier="newest", **outbox.options, outbox_sync="always",
                         max_queue_size=3, on_drop=drops)
    assert all(client.send_message(f"m-{i}") for i in range(5))
    assert drops.wait(2) == [("m-0", "overflow"), ("m-1", "overflow")]
    wait_until(lambda: outbox.texts("newest") == ["m-2", "m-3", "m-4"], t(5), "the dropped to leave the store")
    peer.accept()
    assert peer.wait_messages(3) == ["m-2", "m-3", "m-4"]


@kept_outside_memory("no store to commit to")
def test_always_from_an_os_thread_commits_before_returning(peer, make_client, outbox):
    client = down_client(make_client, peer, identifier="threads", **outbox.options, outbox_sync="always")
    pool = gevent.threadpool.ThreadPool(1)

    def send_and_look(i):  # in a real OS thread: it reads the store there too
        return client.send_message(f"t-{i}") and f"t-{i}" in outbox.texts("threads")

    try:
        looked = [pool.apply(send_and_look, (i,)) for i in range(5)]
    finally:
        pool.kill()
    assert looked == [True] * 5
    peer.accept()
    assert peer.wait_messages(5) == [f"t-{i}" for i in range(5)]
    wait_until(lambda: outbox.texts("threads") == [], t(5), "the written messages to leave the store")


# -- the hub ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "unpatched"])
@kept_outside_memory("no durable sends: nothing is committed, nothing for the hub to wait on")
def test_the_hub_keeps_ticking_while_64_greenlets_send_durably(patched, outbox, server):
    """64 greenlets send in "always" mode to the real server (count mode), each send waiting for
    its commit, the rows deleted once written: a ticker greenlet that sleeps 1 ms never waits
    longer than test_hub.py's bound between two ticks - the store works in its own thread, so
    the hub never waits on SQLite or PostgreSQL, patched or not. In a process of its own, as
    test_hub.py measures (this one's heap, pytest's, makes the garbage collector pause for tens of ms)."""
    server.command(cmd="mode", count=True)
    producers, per = 64, 200
    args = [sys.executable, str(SCRIPTS / "outbox_ticker.py"), server.url, outbox.location, str(producers), str(per)]
    out, _ = run_script(args + ([] if patched else ["unpatched"]), t(90))
    report = last_json_line(out)
    total = producers * per
    print(f"\n{outbox.kind}, {'patched' if patched else 'unpatched'}: {total} durable sends from {producers} greenlets "
          f"in {report['send_seconds']}s ({total / report['send_seconds']:,.0f} msg/s), delivered and deleted after "
          f"{report['seconds']}s; {report['ticks']} ticks, largest gap {report['max_gap_ms']} ms (bound {MAX_GAP_MS} ms; "
          f"largest garbage collection {report['max_gc_ms']} ms)")
    assert report["connected"] and report["accepted"] == total and report["flushed"]
    assert report["rows_left"] == 0 and report["undelivered"] == 0
    assert report["ticks"] > 100
    assert report["max_gap_ms"] < MAX_GAP_MS * max(1.0, t(1)), report
    stats = server.tally(total, t(30))
    assert (stats["distinct"], stats["dups"]) == (total, 0)


# -- leases: a frozen owner -------------------------------------------------------------------------


@kept_outside_memory("no lease: nothing is held for another process to take over")
def test_a_frozen_owner_is_taken_over_and_once_woken_sends_nothing_it_lost(outbox, procs, make_client, peer,
                                                                           monkeypatch):
    lease_s, claim_every = t(3.0), t(0.3)
    monkeypatch.setattr(lease, "LEASE_TIMEOUT", lease_s)  # as this process judges the holder's lease
    monkeypatch.setattr(persistence, "CLAIM_EVERY", claim_every)
    holder_port = free_port()  # where the holder's server will listen once the holder is woken
    holder = procs([sys.executable, str(SCRIPTS / "outbox_process.py"), "hold", outbox.url, "frozen", "1000",
                    # Its claim loop renews once, at start: woken, its sender (not its claim loop,
                    # whose timer is far off) is the first to meet the lapsed lease.
                    f"ws://127.0.0.1:{holder_port}/ws", str(lease_s), "3600"], HERMES_WS_LOG="1")
    report = report_of(holder, 60)
    assert report["accepted"] == 1000
    assert {owner for _, owner in outbox.rows("frozen")} == {report["owner"]}
    client = make_client(connector=peer.connector, url=peer.url, identifier="frozen", **outbox.options)
    client.start()
    assert client.send_message("mine") and peer.wait_messages(1) == ["mine"]  # alive: takes none of its rows
    os.kill(report["pid"], signal.SIGSTOP)
    frozen_at = time.monotonic()
    got = peer.wait_messages(1001, t(30))
    taken_after = time.monotonic() - frozen_at
    assert got == ["mine"] + [f"h-{i}" for i in range(1000)]
    assert lease_s * 0.9 <= taken_after < lease_s + t(5), taken_after  # not before its lease lapsed
    wait_until(lambda: outbox.rows("frozen") == [], t(10), "the delivered rows to leave the table")

    server = ServerProcess(holder_port).start()
    try:
        os.kill(report["pid"], signal.SIGCONT)  # woken: its server listens, its queue holds 1,000
        server.wait_for(lambda: server.of("connect"), t(20), "the woken holder to connect")
        assert client.send_message("after") and peer.wait_messages(1002) == got + ["after"]
        wait_until(lambda: "another process took them over" in holder.text(), t(10), "the holder to drop them")
        assert [m for m in server.texts() if m.startswith("h-")] == []  # none of what it lost
        assert outbox.rows("frozen") == []  # and it put nothing back
        assert len(peer.messages) == 1002
    finally:
        server.stop()
