"""Acknowledgements: the pure window, the wire convention, and the client against the in-process
peer acknowledging (or not) what it received."""

import json
import time

import gevent
import pytest

from hermes_gevent import ConfigError, WebSocketClient
from hermes_gevent.acks import AckWindow, IdSource, acked_ids_json, stamp_json

from .conftest import Recorder, t


def item(n):
    return (1, f"m{n}".encode(), f"id-{n}")


# -- the window, pure ------------------------------------------------------------------------


def test_the_window_holds_what_was_written_until_acknowledged_and_counts_each_once():
    window = AckWindow(max_unacked=3, ack_timeout=10.0)
    window.written([item(1), item(2)], now=0.0)
    assert (len(window), window.room) == (2, 1)
    assert len(window.acked(["id-1", "id-1", "nobody"])) == 1  # a repeat and an unknown id change nothing
    assert (len(window), window.acked_total) == (1, 1)
    window.written([item(3), item(4)], now=1.0)
    assert window.room == 0
    assert window.drain() == [item(2), item(3), item(4)] and len(window) == 0


def test_nothing_is_due_before_ack_timeout_then_the_overdue_in_first_write_order():
    window = AckWindow(max_unacked=10, ack_timeout=5.0)
    window.written([item(1), item(2)], now=0.0)
    window.written([item(3)], now=2.0)
    assert window.next_due() == 5.0
    assert window.due(4.99) == []  # never sooner
    assert window.due(5.0) == [item(1), item(2)]
    window.written([item(1), item(2)], now=5.0)  # resent: the clock starts again, the order stays
    assert window.due(6.9) == [] and window.next_due() == 7.0
    assert window.due(7.0) == [item(3)]
    window.written([item(3)], now=7.0)
    assert window.due(10.0) == [item(1), item(2)]


def test_after_a_lost_connection_everything_is_due_at_once_in_first_write_order():
    window = AckWindow(max_unacked=10, ack_timeout=60.0)
    window.written([item(1)], now=0.0)
    window.written([item(2), item(3)], now=1.0)
    window.written([item(1)], now=2.0)  # item 1 was resent later: it keeps its place
    window.connection_lost()
    assert window.due(2.5) == [item(1), item(2), item(3)]


def test_an_ack_that_comes_while_due_messages_are_rewritten_is_not_undone():
    window = AckWindow(max_unacked=1000, ack_timeout=1.0)
    window.written([item(n) for n in range(300)], now=0.0)
    due = window.due(1.0)
    assert window.rewritten(due[:256], now=1.0) == due[:256]
    window.acked(["id-280"])  # between two chunks of the resend
    assert window.rewritten(due[256:], now=1.0) == [item(n) for n in range(256, 300) if n != 280]
    assert len(window) == 299 and "id-280" not in [i[2] for i in window.drain()]


def test_an_ack_for_a_message_already_resent_settles_it_once():
    window = AckWindow(max_unacked=10, ack_timeout=1.0)
    window.written([item(1)], now=0.0)
    assert window.due(1.0) == [item(1)]
    window.written([item(1)], now=1.0)
    assert len(window.acked(["id-1"])) == 1 and window.acked(["id-1"]) == []  # the late ack of the first copy, then the second
    assert window.due(100.0) == [] and window.next_due() is None


# -- the wire convention ----------------------------------------------------------------------


def test_stamping_keeps_the_callers_id_adds_one_otherwise_and_never_changes_the_callers_dict():
    ids = IdSource()
    mine = {"id": "order-7", "total": 3}
    assert stamp_json(mine, "id", ids) == (mine, "order-7")
    numbered = {"id": 7}
    assert stamp_json(numbered, "id", ids) == ({"id": "7"}, "7") and numbered == {"id": 7}
    bare = {"total": 3}
    stamped, new_id = stamp_json(bare, "id", ids)
    assert stamped == {"total": 3, "id": new_id} and bare == {"total": 3}
    other = IdSource()  # another process, or a restart
    generated = {ids() for _ in range(1000)} | {other() for _ in range(1000)}
    assert len(generated) == 2000


@pytest.mark.parametrize("ack, ids", [
    ('{"ack": "a-1"}', ["a-1"]), ('{"ack": ["a-1", "a-2"]}', ["a-1", "a-2"]), ('{"ack": 5}', ["5"]),
    ('{"ack": null}', None), ('{"acks": "a"}', None), ('["ack"]', None), ('{"ack": "x"', None),
    ('hello', None), (b'{"ack": "a"}', None),
])
def test_what_counts_as_an_acknowledgement(ack, ids):
    assert acked_ids_json(ack) == ids


@pytest.mark.parametrize("bad", ["text", b"bytes", ["a", "list"]])
def test_with_acks_on_what_cannot_carry_an_id_raises_in_the_caller_and_nothing_is_queued(bad):
    client = WebSocketClient(url="ws://127.0.0.1:9/ws", ack_timeout=5)
    with pytest.raises(TypeError, match="ACK_TIMEOUT"):
        client.send_message(bad)
    assert client.queue_size == 0


def test_another_convention_through_the_two_hooks(peer, make_client):
    class Tagged(WebSocketClient):
        def stamp(self, message):
            tag = f"t{message}"
            return f"{tag}:{message}", tag

        def acked_ids(self, message):
            return message[4:].split(",") if message.startswith("ACK ") else None

    got = Recorder()
    client = make_client(Tagged, connector=peer.connector, url=peer.url, ack_timeout=t(5), on_message=got)
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(3):
        client.send_message(str(n))
    assert peer.wait_messages(3) == ["t0:0", "t1:1", "t2:2"]
    peer.send_text("ACK t0,t1,t2,t9")
    peer.send_text("not an ack")
    assert client.flush(t(5)) and got.wait(1) == ["not an ack"]
    assert client.status()["messages_acked"] == 3


@pytest.mark.parametrize("options, named", [
    (dict(ack_timeout=0), "ACK_TIMEOUT"), (dict(max_unacked=0), "MAX_UNACKED"), (dict(ack_id_key=""), "ACK_ID_KEY"),
])
def test_bad_ack_settings_fail_at_construction(options, named):
    with pytest.raises(ConfigError, match=named):
        WebSocketClient(url="ws://127.0.0.1:9/ws", **options)


# -- the client against the peer ------------------------------------------------------------


def numbered(messages):
    return [json.loads(m)["n"] for m in messages]


def acking_client(make_client, peer, **options):
    return make_client(connector=peer.connector, url=peer.url, **{"ack_timeout": t(5), **options})


def test_flush_is_true_once_everything_is_acknowledged_and_acks_never_reach_the_handler(peer, make_client):
    got = Recorder()
    client = acking_client(make_client, peer, on_message=got)
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(500):
        client.send_message({"n": n})
    assert not client.flush(0.0)  # nothing is acknowledged yet
    peer.acking = True
    peer.wait_messages(500)
    assert client.flush(t(5))
    status = client.status()
    assert (status["unacked"], status["messages_acked"], status["messages_resent"]) == (0, 500, 0)
    assert numbered(peer.messages) == list(range(500))
    peer.send_text("a message for the app")
    assert got.wait(1) == ["a message for the app"]  # the acknowledgements never did


def test_an_unacknowledged_message_is_resent_on_the_live_connection_after_ack_timeout_never_sooner(peer, make_client):
    timeout = t(0.3)
    client = acking_client(make_client, peer, ack_timeout=timeout)
    client.start()
    assert client.wait_until_connected(t(5))
    began = time.monotonic()
    client.send_message({"n": 1, "id": "mine"})
    first, again = peer.wait_messages(2, t(5))
    assert time.monotonic() - began >= timeout  # the resend waited ACK_TIMEOUT
    assert first == again and json.loads(again)["id"] == "mine"  # the same message, the same id
    assert len(peer.connections) == 1 and client.status()["messages_resent"] >= 1
    peer.current.send(json.dumps({"ack": "mine"}))
    assert client.flush(t(5)) and client.status()["unacked"] == 0


def test_after_a_reconnect_the_unacknowledged_go_first_in_order_then_the_newer(peer, make_client):
    client = acking_client(make_client, peer, ack_timeout=t(30))
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(100):
        client.send_message({"n": n})
    peer.wait_messages(100)
    peer.current.send(json.dumps({"ack": [json.loads(m)["id"] for m in peer.messages[:40]]}))
    assert client.flush(0.0) is False
    _wait_unacked(client, 60)
    peer.drop()  # no close: the server never processed 40..99 as far as the client knows
    for n in range(100, 150):
        client.send_message({"n": n})
    peer.acking = True
    first, second = peer.wait_connections(2)
    assert client.flush(t(10))
    assert numbered(second.messages) == list(range(40, 150))  # the unacknowledged first, in order, then the newer
    # 60, plus the newer ones the sender wrote on the dropped connection before it noticed.
    assert 60 <= client.status()["messages_resent"] <= 110


def test_at_most_max_unacked_are_in_flight_the_rest_stays_queued(peer, make_client):
    client = acking_client(make_client, peer, max_unacked=10)
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(50):
        client.send_message({"n": n})
    peer.wait_messages(10)
    status = client.status()
    assert (status["unacked"], status["queue_size"]) == (10, 40) and len(peer.messages) == 10
    peer.acking = True
    peer.current.send(json.dumps({"ack": [json.loads(m)["id"] for m in peer.messages]}))
    assert client.flush(t(5)) and numbered(peer.messages) == list(range(50))


def test_stop_waits_for_acknowledgements_then_counts_the_unacknowledged_as_undelivered(peer, make_client):
    drops = Recorder()
    client = acking_client(make_client, peer, on_drop=lambda msg, reason: drops((json.loads(msg)["n"], reason)))
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(5):
        client.send_message({"n": n})
    peer.wait_messages(5)
    assert client.stop(timeout=t(0.3)) == 5  # written, never acknowledged
    assert drops.wait(5) == [(n, "unacked") for n in range(5)]
    assert client.status()["drops_by_reason"] == {"unacked": 5}


def _wait_unacked(client, n):
    from .support import wait_until

    wait_until(lambda: client.status()["unacked"] == n, t(5), f"{n} unacknowledged")


def test_a_flush_waiting_for_acknowledgements_returns_false_when_stop_gives_up_on_them(peer, make_client):
    client = acking_client(make_client, peer)
    client.start()
    assert client.wait_until_connected(t(5))
    for n in range(3):
        client.send_message({"n": n})
    peer.wait_messages(3)
    waiting = gevent.spawn(client.flush, t(5))
    gevent.sleep(0)  # it is waiting now
    assert client.stop(timeout=t(0.2)) == 3
    assert waiting.get(timeout=t(1)) is False  # not True for messages stop() just counted as undelivered
