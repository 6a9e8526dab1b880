"""The send queue: bound, overflow strategies, FIFO across reconnects, encoding, threads.

Against the in-process peer (tests/peer.py), refusing while the "server" is down;
the 100k messages from OS threads go through the real server."""


import json

import gevent
import gevent.monkey
import gevent.threadpool
import pytest

from hermes_gevent import QueueFull, messages
from hermes_gevent.frames import OP_TEXT

from .conftest import Recorder, t


def down_client(make_client, peer, **options):
    """A started client whose server is unreachable for now (the peer refuses)."""
    peer.refuse()
    errors = Recorder()
    client = make_client(connector=peer.connector, url=peer.url, retry_delay=t(0.05), max_retry_delay=t(0.1),
                         on_error=errors, **options)
    client.start()
    errors.wait(1)  # the first attempt was refused: the client is backing off
    return client


def delivered_exactly(client, peer, expected):
    """The peer got ``expected`` and nothing more: a last message sent after them arrives right after."""
    assert peer.wait_messages(len(expected), t(10))[:len(expected)] == expected
    assert client.send_message("end")
    assert peer.wait_messages(len(expected) + 1, t(10)) == [*expected, "end"]


def test_drop_oldest_keeps_the_newest_and_reports_every_drop(peer, make_client, caplog_hermes):
    drops = Recorder()
    client = down_client(make_client, peer, max_queue_size=10, on_drop=drops)
    results = [client.send_message(f"m-{i}") for i in range(500)]
    assert all(results)  # the new message is always accepted under drop_oldest
    assert drops.wait(490) == [(f"m-{i}", "overflow") for i in range(490)]
    assert client.status()["messages_dropped"] == 490 and client.status()["queue_size"] == 10 == client.queue_size
    drop_lines = [r for r in caplog_hermes.records if "dropped" in r.getMessage()]
    assert 1 <= len(drop_lines) <= 2  # rate-limited: not one line per message
    peer.accept()
    delivered_exactly(client, peer, [f"m-{i}" for i in range(490, 500)])


def test_drop_newest_keeps_the_oldest(peer, make_client):
    client = down_client(make_client, peer, max_queue_size=10, queue_overflow_strategy="drop_newest")
    results = [client.send_message(f"m-{i}") for i in range(30)]
    assert results == [True] * 10 + [False] * 20
    peer.accept()
    delivered_exactly(client, peer, [f"m-{i}" for i in range(10)])
    assert client.status()["drops_by_reason"] == {"overflow": 20}


def test_raise_strategy_raises_queue_full_in_the_caller(peer, make_client):
    client = down_client(make_client, peer, max_queue_size=3, queue_overflow_strategy="raise")
    for i in range(3):
        assert client.send_message(f"m-{i}")
    with pytest.raises(QueueFull, match="MAX_QUEUE_SIZE=3"):
        client.send_message("m-3")
    assert client.status()["messages_dropped"] == 0  # refused, not accepted: nothing to count
    peer.accept()
    delivered_exactly(client, peer, ["m-0", "m-1", "m-2"])


@pytest.mark.parametrize("bad", [42, 3.5, None, object(), {1, 2}, ("a",)])
def test_unsupported_types_raise_type_error_in_the_caller(peer, make_client, bad):
    client = make_client(connector=peer.connector, url=peer.url)
    with pytest.raises(TypeError):
        client.send_message(bad)
    assert client.status()["queue_size"] == 0


def test_unencodable_messages_raise_value_error_in_the_caller(peer, make_client):
    client = make_client(connector=peer.connector, url=peer.url, max_message_size=100)
    with pytest.raises(ValueError):
        client.send_message("\ud800")  # lone surrogate: not UTF-8
    with pytest.raises(ValueError, match="MAX_MESSAGE_SIZE"):
        client.send_message(b"x" * 101)
    with pytest.raises(TypeError):
        client.send_message({"when": object()})  # not JSON
    assert client.status()["queue_size"] == 0


JSON_CASES = [{}, [], {"a": 1, "b": [1.5, -0.0, 1e300, None, True]}, {"t": 1733412345.123456},
              {"é": "ünïcode ✓", "esc": "q\"\\\n\t\u0001"}, [{"n": [[[]]]}], {1: "int key", 2.5: "float key",
              None: "null key", False: "bool key"}, {"nan": float("nan"), "inf": float("-inf")}, list(range(50))]


@pytest.mark.parametrize("msg", JSON_CASES)
def test_dicts_and_lists_are_written_as_json_dumps_writes_them(msg):
    assert messages.encode(msg, 2**20) == (OP_TEXT, json.dumps(msg, separators=(",", ":")).encode())


def test_json_that_cannot_be_written_raises_in_the_caller_and_the_next_message_is_fine():
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="refers to itself"):
        messages.encode({"loop": cycle}, 2**20)
    with pytest.raises(TypeError):
        messages.encode({"a": [1, {"b": object()}]}, 2**20)  # fails half-way through
    shared = [1]
    assert messages.encode({"x": shared, "y": shared}, 2**20)[1] == b'{"x":[1],"y":[1]}'  # no stale markers


def test_after_stop_send_returns_false_and_counts_the_drop(peer, make_client):
    drops = Recorder()
    client = make_client(connector=peer.connector, url=peer.url, on_drop=drops)
    client.start()
    assert client.wait_until_connected(t(5))
    client.stop()
    assert client.send_message("late") is False
    assert drops.wait(1) == [("late", "stopped")] and client.status()["messages_dropped"] == 1
    assert peer.wait_closed() == 1000 and peer.messages == []


@pytest.mark.parametrize("cut", ["close 1001", "drop"])
def test_a_failed_write_goes_back_to_the_head_of_the_queue(peer, make_client, cut):
    """Cut the connection under a steady stream, gracefully or not: every message arrives,
    in order, once. The producer's bursts (250 messages of 2 KB) are larger than the socket
    pair buffers, so the cut finds the sender with a batch half written."""
    client = make_client(connector=peer.connector, url=peer.url)
    client.start()
    assert client.wait_until_connected(t(5))
    total = 3000
    sent = [f"n-{i}-".ljust(2000, "x") for i in range(total)]

    def produce():
        for i, message in enumerate(sent):
            client.send_message(message)
            if i % 250 == 249:
                gevent.sleep(0.005)

    producer = gevent.spawn(produce)
    try:
        peer.wait_messages(601, t(10))
        if cut == "drop":
            peer.drop()  # no close frame: the client finds out from a failed read or write
            assert peer.wait_closed(index=0) is None
        else:
            peer.close(1001)  # graceful: nothing the server accepted is lost
            assert peer.wait_closed(index=0) == 1001
        producer.join(t(20))
        assert producer.dead
    finally:
        producer.kill()
    delivered_exactly(client, peer, sent)
    first, second = peer.wait_connections(2)
    assert 600 < len(first.messages) < total and first.messages + second.messages == peer.messages
    assert client.status()["reconnects"] == 1


def test_os_threads_send_100k_numbered_messages_exactly_once(server, make_client):
    server.command(cmd="mode", quiet=False)
    client = make_client(url=server.url, max_queue_size=200_000)
    client.start()
    assert client.wait_until_connected(t(5))
    threads, per_thread = 4, 25_000
    pool = gevent.threadpool.ThreadPool(threads)

    real_ident = gevent.monkey.get_original("_thread", "get_ident")
    idents = set()

    def produce(tid):
        idents.add(real_ident())
        ok = 0
        for i in range(per_thread):
            ok += client.send_message(f"{tid}:{i}")
        return ok

    results = [pool.spawn(produce, tid) for tid in range(threads)]
    accepted = [r.get(timeout=t(60)) for r in results]
    pool.kill()
    assert accepted == [per_thread] * threads
    assert real_ident() not in idents  # really other OS threads, not greenlets
    server.wait_for(lambda: len(server.of("msg")) >= threads * per_thread, t(60), "100k messages")
    texts = server.texts()
    assert len(texts) == len(set(texts)) == threads * per_thread
    for tid in range(threads):  # each producer's own order is kept
        mine = [int(x.split(":")[1]) for x in texts if x.startswith(f"{tid}:")]
        assert mine == list(range(per_thread))
