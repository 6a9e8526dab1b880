"""The in-process peer itself (tests/peer.py): a real server protocol, bounded waits, a clean teardown."""

import time

import gevent
import pytest

from .frames_util import close_payload, frame
from .peer import Peer
from .support import t


def open_raw(peer):
    """A connection straight from the connector, no client: the test writes the client's bytes."""
    return peer.connector(peer.url, {"X-Test": "1"}, timeout=1.0, max_message_size=1000)


def test_the_peer_is_a_real_server_it_refuses_an_unmasked_client_frame(peer):
    conn = open_raw(peer)
    conn.sock.sendall(frame(1, b"not masked"))  # a client must mask every frame
    data = b""
    while True:
        chunk = conn.sock.recv(100)
        if not chunk:
            break  # the peer ended the stream after its close frame, as a failing server does
        data += chunk
    assert data[0] == 0x88 and data[2:4] == close_payload(1002)  # failed as RFC 6455 says
    conn.abort()
    assert peer.wait_closed() is None  # no close frame from this "client"
    assert peer.messages == [] and len(peer.errors) == 1 and "mask" in peer.errors[0]


def test_messages_pings_and_headers_are_recorded_in_order(peer):
    conn = open_raw(peer)
    conn.send_frames([(1, "één".encode()), (2, b"\x00\xff")])
    conn.ping(b"p1")
    conn.send_close(1000)
    data = b""
    while chunk := conn.sock.recv(100):
        data += chunk
    assert data == frame(10, b"p1") + frame(8, close_payload(1000))  # pong, close echoed, end of stream
    conn.abort()
    assert peer.wait_closed() == 1000
    assert peer.messages == ["één", b"\x00\xff"] and peer.connections[0].pings == [b"p1"]
    assert peer.attempts[0]["headers"] == {"X-Test": "1"} and peer.connections[0].headers == {"X-Test": "1"}
    conn.abort()


def test_waits_fail_at_their_timeout():
    peer = Peer()
    try:
        began = time.monotonic()
        with pytest.raises(AssertionError, match="timed out after .* 1 message"):
            peer.wait_messages(1, timeout=t(0.05))
        assert time.monotonic() - began < t(1)
    finally:
        peer.stop()


def test_refusing_and_rejecting_raise_in_the_connector_until_accept(peer):
    peer.refuse()
    with pytest.raises(ConnectionRefusedError):
        open_raw(peer)
    peer.reject(401)
    with pytest.raises(Exception, match="HTTP 401"):
        open_raw(peer)
    peer.accept()
    open_raw(peer).abort()
    assert [a["outcome"] == "accepted" for a in peer.attempts] == [False, False, True]


def test_stop_ends_every_greenlet_and_socket():
    peer = Peer()
    conns = [open_raw(peer) for _ in range(3)]
    gevent.sleep(0)  # the serving greenlets start and block in recv
    peer.stop()
    assert all(g.dead for g in peer._greenlets) and len(peer._greenlets) == 3
    assert all(c.ended and c.sock.fileno() == -1 for c in peer.connections)
    assert all(c.sock.fileno() == -1 for c in conns)
    with pytest.raises(ConnectionRefusedError):
        open_raw(peer)  # a stopped peer accepts nothing more


def test_drop_records_what_was_buffered_but_no_cut_frame_and_sends_nothing(peer):
    conn = open_raw(peer)
    conn.send_frames([(1, b"a"), (1, b"b")])
    whole = frame(1, b"cut short", mask=b"abcd")
    conn.sock.sendall(whole[:-3])  # a frame without its last bytes: not a message
    peer.drop()  # without yielding first: the serving greenlet has not read any of it yet
    assert peer.wait_closed() is None and peer.messages == ["a", "b"]
    assert conn.sock.recv(100) == b""  # no close frame, just the end of the stream
    conn.abort()


def test_invalid_utf8_from_the_client_fails_the_connection_with_1007(peer):
    conn = open_raw(peer)
    conn.send_frames([(1, b"good"), (1, b"\xff bad"), (1, b"after")])  # one write: one read for the peer
    data = b""
    while chunk := conn.sock.recv(100):
        data += chunk
    assert data == frame(8, close_payload(1007, b"invalid UTF-8"))
    conn.abort()
    assert peer.wait_closed() is None and peer.messages == ["good"] and "UTF-8" in peer.errors[0]
