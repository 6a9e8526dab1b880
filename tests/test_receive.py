"""Receiving: handlers, protocol errors and their close codes, liveness, the one writer.

Against the in-process peer (tests/peer.py) where a well-behaved server is all a test
needs; against the real server and the fault proxy for a half-open link and for a ping
flood over a slow link."""

import hashlib

import gevent
import gevent.event
import gevent.monkey
import gevent.socket

from hermes_gevent.connection import Connection
from hermes_gevent.errors import PingTimeout, ProtocolError

from .conftest import Recorder, ServerProcess, free_port, t, wait_until
from .frames_util import close_payload, frame, header_only

LOOPS = ("event_thread_alive", "send_thread_alive", "health_thread_alive", "supervisor_alive")


def peer_client(make_client, peer, **options):
    return make_client(connector=peer.connector, url=peer.url, **options)


def test_a_failing_handler_is_logged_counted_and_the_reader_goes_on(peer, make_client, caplog_hermes):
    got = Recorder()

    def handle(msg):
        if msg.endswith("3"):
            raise RuntimeError("handler bug")
        got(msg)

    client = peer_client(make_client, peer, on_message=handle)
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(10):
        peer.send_text(f"push-{i}")
    assert got.wait(9) == [f"push-{i}" for i in range(10) if i != 3]
    status = client.status()
    assert status["handler_errors"] == 1 and status["messages_received"] == 10 and status["connected"]
    errors = [r for r in caplog_hermes.records if "handle_message raised" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info and "handler bug" in str(errors[0].exc_info[1])
    assert len(peer.attempts) == 1 and peer.current.close_code is None  # no close, no reconnect


def check_protocol_error(peer, make_client, raw, code, **options):
    """Connect, take one good message, send ``raw``: the client closes with ``code``, reports one
    ProtocolError, delivers nothing of the bad frame, and reconnects with every loop alive."""
    errors, got = Recorder(), Recorder()
    client = peer_client(make_client, peer, on_error=errors, on_message=got, **options)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.send_text("before")
    assert got.wait(1) == ["before"]
    peer.send_raw(raw)
    assert peer.wait_closed() == code
    [exc] = errors.wait(1)
    assert isinstance(exc, ProtocolError) and exc.code == code
    peer.wait_connections(2)
    assert client.wait_until_connected(t(5))
    peer.send_text("after")
    assert got.wait(2) == ["before", "after"]  # nothing of the bad frame was delivered
    assert errors.calls == [exc] and peer.errors == []
    assert all(client.status()[k] for k in LOOPS)


def test_invalid_utf8_closes_with_1007_and_reconnects(peer, make_client):
    check_protocol_error(peer, make_client, frame(1, b"\xc3\x28bad"), 1007)


def test_reserved_opcode_closes_with_1002_and_reconnects(peer, make_client):
    check_protocol_error(peer, make_client, frame(3, b"x"), 1002)


def test_invalid_close_code_closes_with_1002(peer, make_client):
    check_protocol_error(peer, make_client, frame(8, close_payload(999)), 1002)


def test_message_over_max_size_closes_with_1009_without_buffering_it(peer, make_client):
    # Only the header of a 50 MB message is sent: refusing it must not wait for the payload.
    check_protocol_error(peer, make_client, header_only(2, 50 * 2**20), 1009, max_message_size=1000)


def test_server_pings_are_answered(peer, make_client):
    client = peer_client(make_client, peer)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.ping(b"are you there")
    peer.ping(b"")
    assert peer.wait_pongs(2) == [b"are you there", b""]  # each answered, payload echoed, in order


def test_a_ping_is_answered_before_the_handlers_of_what_follows_it_run(peer, make_client):
    release = gevent.event.Event()
    handled = Recorder()

    def slow(msg):
        release.wait(t(10))
        handled(msg)

    client = peer_client(make_client, peer, on_message=slow)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.send_raw(frame(0x9, b"now") + frame(0x1, b"slow"))  # one read: the ping, then a slow message
    try:
        assert peer.wait_pongs(1, t(2)) == [b"now"]  # while the handler still runs
    finally:
        release.set()
    assert handled.wait(1) == ["slow"]


def test_a_ping_sent_along_with_the_101_is_answered_at_once(peer, make_client):
    def connector(*args, **options):
        conn = peer.connector(*args, **options)
        conn.protocol.receive_data(frame(0x9, b"early"))  # as transport.connect hands over what followed the 101
        return conn

    client = make_client(connector=connector, url=peer.url, ping_interval=t(30))
    client.start()
    assert client.wait_until_connected(t(5))
    assert peer.wait_pongs(1, t(2)) == [b"early"]  # not at the next read, nor the next client ping


def test_unanswered_pings_are_a_ping_timeout_then_a_new_connection(peer, make_client):
    errors = Recorder()
    client = peer_client(make_client, peer, ping_interval=t(0.1), ping_timeout=t(0.2), on_error=errors)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.wait_pings(2)
    assert client.connected  # answered pings keep a quiet connection alive
    peer.withhold_pongs()  # the server is there, reads, but says nothing
    [exc] = errors.wait(1)
    assert isinstance(exc, PingTimeout)
    assert peer.wait_closed(index=0) is None  # a dead link gets no close frame, only the socket's end
    peer.withhold_pongs(False)
    peer.wait_connections(2)
    assert client.wait_until_connected(t(5))
    assert peer.connections[0].withheld_pongs >= 1


def test_a_half_open_connection_is_detected_by_the_ping_timeout(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    errors = []
    client = make_client(url=proxy.url, ping_interval=t(0.2), ping_timeout=t(0.3), on_error=errors.append)
    client.start()
    assert client.wait_until_connected(t(5))
    gevent.sleep(t(0.6))
    assert client.connected  # pongs flow: pings alone do not kill a healthy link
    proxy.blackhole = True  # from now on nothing crosses, and no FIN either
    wait_until(lambda: errors and isinstance(errors[0], PingTimeout), t(3), "the ping timeout")
    proxy.blackhole = False
    wait_until(lambda: client.connected and proxy.connections == 2, t(5), "a new connection")


def test_one_writer_large_messages_during_a_ping_flood_arrive_intact(make_client, proxy_to):
    # The server pings every 5 ms on its own, and we add floods: pongs and data must never
    # interleave. The proxy drains slowly, so every large write is cut by a full socket buffer.
    server = ServerProcess(free_port(), "--ping-interval", "0.005").start()
    try:
        proxy = proxy_to(server.port)
        proxy.chunk, proxy.latency = 8192, 0.002
        client = make_client(url=proxy.url)
        client.start()
        assert client.wait_until_connected(t(5))
        payloads = [bytes([i]) * (200_000 + i) for i in range(30)]
        flood = gevent.spawn(server.command, cmd="ping_flood", n=2000, timeout=30)
        for payload in payloads:
            assert client.send_message(payload)
        server.wait_for(lambda: len(server.of("msg")) == 30, t(30), "all large messages")
        flood.join(t(30))
        digests = [e["digest"] for e in server.of("msg")]
        assert digests == [hashlib.sha256(p).hexdigest() for p in payloads]
        assert not server.of("error") and not server.of("close")  # no protocol error on the server
        assert len(server.of("connect")) == 1
    finally:
        server.stop()


def test_a_slow_handler_is_not_mistaken_for_a_dead_connection(peer, make_client, log_watch):
    release = gevent.event.Event()
    got = Recorder()

    def slow(msg):
        assert release.wait(t(5)), "the test never released the handler"  # cooperative: pings still go out
        got(msg)

    errors = Recorder()
    client = peer_client(make_client, peer, on_message=slow, ping_interval=t(0.1), ping_timeout=t(0.2),
                         on_error=errors)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.send_text("push-0")
    peer.send_text("push-1")
    log_watch.wait("handle_message has been running")  # a ping went unanswered for PING_TIMEOUT: spared
    seen = len(peer.current.pings)
    peer.wait_pings(seen + 3)  # held well past another PING_TIMEOUT: still spared, warned once
    release.set()
    assert got.wait(2) == ["push-0", "push-1"]
    seen = len(peer.current.pings)
    peer.wait_pings(seen + 3)  # and the link is judged healthy again once reading resumes
    assert client.connected and errors.calls == [] and len(peer.connections) == 1
    assert sum("handle_message has been running" in r.getMessage() for r in log_watch.records) == 1


def test_a_reply_already_queued_goes_out_before_the_close_that_a_violation_causes(peer, make_client):
    # Autobahn 3.2: a good message and a bad frame in one read. The handler's answer to the good
    # one is queued before the parser reaches the bad frame; it is written, then the close.
    holder = {}
    client = peer_client(make_client, peer, on_message=lambda m: holder["client"].send_message(f"re: {m}"))
    holder["client"] = client
    client.start()
    assert client.wait_until_connected(t(5))
    peer.send_raw(frame(1, b"hello") + frame(1, b"bad", rsv=0x20) + frame(9, b"ping"))
    assert peer.wait_closed() == 1002
    assert peer.messages[:1] == ["re: hello"]  # the peer refuses data after a close frame
    assert peer.errors == []


_select = gevent.monkey.get_original("select", "select")  # with a timeout of 0: never waits


class EmptyReadsCounted(gevent.socket.socket):
    """A gevent socket that counts the reads made while nothing was there to read."""

    empty_reads = 0

    def recv(self, *args):
        if not _select([self.fileno()], [], [], 0)[0]:
            self.empty_reads += 1
        return super().recv(*args)


def test_in_a_request_response_exchange_the_reader_waits_for_each_answer_without_reading(peer, make_client):
    """Send, wait for the answer, repeat: after reading an answer the reader waits for the socket
    to become readable (the asker writes its next request meanwhile) instead of reading at once
    and finding nothing - a system call on the path of every round trip."""
    peer.echo = True
    socks = []

    def connector(url, headers, **options):
        sock = EmptyReadsCounted(fileno=peer.connector(url, headers, **options).sock.detach())
        socks.append(sock)
        return Connection(sock, options["max_message_size"])

    got = Recorder()
    client = make_client(connector=connector, url=peer.url, on_message=got)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.run.session.conn.sock is socks[0]
    for i in range(50):
        assert client.send_message(f"ask-{i}")
        assert got.wait(i + 1)[-1] == f"ask-{i}"
    assert socks[0].empty_reads <= 3  # the read before the first answer; 50 when each answer is read for at once
    assert peer.messages == [f"ask-{i}" for i in range(50)]
    # The socket closed under the reader while it waits for an answer: it wakes, and the client reconnects.
    client.run.session.conn.abort()
    assert wait_until(lambda: client.connected and len(socks) == 2, t(5))
    assert client.send_message("after") and got.wait(51)[-1] == "after"
