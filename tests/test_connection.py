"""Connecting, reconnecting, giving up.

Against the in-process peer (tests/peer.py) where a well-behaved server is all a test
needs; against the real server and the fault proxy for the upgrade's HTTP answers, a
hanging upgrade, refused TCP connections and a killed server."""

import time

import gevent

import pytest

from hermes_gevent import WebSocketClient
from hermes_gevent.errors import ConnectionClosed, ConnectTimeout, HandshakeRejected

from .conftest import Recorder, t, wait_until
from .frames_util import close_payload, frame
from .peer import Connection, tcp_pair


def peer_client(make_client, peer, **options):
    return make_client(connector=peer.connector, url=peer.url, **options)


def test_connects_sends_receives_and_closes_with_1000(peer, make_client):
    peer.echo = True
    got = Recorder()
    client = peer_client(make_client, peer, on_message=got)
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(20):
        assert client.send_message(f"m-{i}")
    client.send_message(b"\x00\x01")
    client.send_message({"op": "ping", "n": 1})
    sent = [f"m-{i}" for i in range(20)] + [b"\x00\x01", '{"op":"ping","n":1}']
    assert peer.wait_messages(22) == sent  # text frames as str, the binary frame as bytes, in order
    assert got.wait(22) == sent
    status = client.status()
    assert status["messages_sent"] == 22 and status["messages_received"] == 22
    assert status["state"] == "open" and status["connected"]
    assert client.stop() == 0
    assert peer.wait_closed() == 1000
    assert peer.errors == [] and len(peer.attempts) == 1 and peer.attempts[0]["url"] == peer.url


def test_start_is_idempotent_and_returns_at_once(peer, make_client):
    got = Recorder()
    client = peer_client(make_client, peer, on_message=got)
    began = time.monotonic()
    client.start()
    client.start()
    assert time.monotonic() - began < t(0.5)
    assert client.wait_until_connected(t(5))
    peer.send_text("round trip")  # every greenlet a second start() could have spawned has run by now
    assert got.wait(1) == ["round trip"]
    assert len(peer.attempts) == 1


def test_connect_timeout_bounds_a_hanging_upgrade(server, proxy_to, make_client):
    proxy = proxy_to(server.port)
    proxy.hang_new = True  # TCP accepted, the upgrade never answered
    errors = []
    client = make_client(url=proxy.url, connect_timeout=t(0.3), retry_delay=t(5), max_retry_delay=t(5),
                         on_error=errors.append)
    began = time.monotonic()
    client.start()
    wait_until(lambda: errors, t(3), "the first attempt to time out")
    assert isinstance(errors[0], ConnectTimeout)
    assert time.monotonic() - began < t(1.5)
    assert client.status()["retry_count"] == 1 and not client.connected


def test_headers_are_called_anew_on_every_attempt(peer, make_client):
    tokens = iter(f"token-{i}" for i in range(100))

    class Rotating(WebSocketClient):
        def headers(self):
            return {**super().headers(), "Authorization": f"Bearer {next(tokens)}"}

    client = make_client(Rotating, connector=peer.connector, url=peer.url, identifier="worker-1")
    client.start()
    assert client.wait_until_connected(t(5))
    peer.close(1012)
    first, second = peer.wait_connections(2)[:2]
    assert first.headers["Authorization"] == "Bearer token-0" and second.headers["Authorization"] == "Bearer token-1"
    assert first.headers["X-Hermes-Identifier"] == second.headers["X-Hermes-Identifier"] == "worker-1"
    assert "X-Hermes-Last-Connected-At" not in first.headers
    assert second.headers["X-Hermes-Last-Connected-At"].endswith("Z")  # set after the first success
    assert first.close_code == 1012  # the client answered the server's close with its code


def test_reconnects_after_the_server_is_killed_and_restarted(server, make_client):
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    server.kill()
    wait_until(lambda: not client.connected, t(5), "the client to notice")
    for i in range(50):
        assert client.send_message(f"down-{i}")  # queued while the server is away
    server.start()
    server.wait_for(lambda: len(server.texts()) == 50, t(10), "queued messages after restart")
    assert server.texts() == [f"down-{i}" for i in range(50)]
    assert client.status()["reconnects"] == 1


def test_backoff_grows_and_gives_up_after_the_retry_limit(proxy_to, make_client):
    proxy = proxy_to(1)
    proxy.refuse()
    gave_up = []
    attempts = []
    client = make_client(url=proxy.url, retry_limit=4, retry_delay=t(0.05), max_retry_delay=t(0.4),
                         on_error=lambda exc: attempts.append(time.monotonic()), on_give_up=gave_up.append)
    client.start()
    wait_until(lambda: gave_up, t(5), "give up")
    status = client.status()
    assert status["max_retries_reached"] and status["retry_count"] == 4 and status["state"] == "gave_up"
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    assert len(gaps) == 3 and gaps[0] < gaps[1] < gaps[2]  # 0.05, 0.1, 0.2: exponential
    assert isinstance(gave_up[0], ConnectionRefusedError)


def test_reconnect_leaves_the_gave_up_state(peer, make_client):
    peer.reject(403)
    gave_up = Recorder()
    client = peer_client(make_client, peer, on_give_up=gave_up)
    client.start()
    [exc] = gave_up.wait(1)
    assert isinstance(exc, HandshakeRejected) and exc.status == 403
    assert len(peer.attempts) == 1 and client.status()["state"] == "gave_up"  # at once: no retries on 403
    peer.accept()
    client.reconnect()
    assert client.wait_until_connected(t(5))
    assert len(peer.attempts) == 2 and len(peer.connections) == 1
    assert not client.status()["max_retries_reached"] and client.status()["retry_count"] == 0


@pytest.mark.parametrize("status, retried", [(401, False), (403, False), (404, False), (503, True), (429, True)])
def test_handshake_statuses(server, make_client, status, retried):
    server.command(cmd="mode", reject=status)
    client = make_client(url=server.url, retry_limit=3)
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "give up")
    assert len(server.of("rejected")) == (3 if retried else 1)


@pytest.mark.parametrize("code, retried", [(1001, True), (1011, True), (1012, True), (4000, True), (1008, False)])
def test_close_codes(peer, make_client, code, retried):
    gave_up = Recorder()
    client = peer_client(make_client, peer, min_uptime=t(5), on_give_up=gave_up)
    client.start()
    assert client.wait_until_connected(t(5))
    peer.close(code)
    assert peer.wait_closed(index=0) == code  # the client answered with the server's code
    if retried:
        peer.wait_connections(2)
        assert client.wait_until_connected(t(5))
        assert gave_up.calls == []
    else:
        [exc] = gave_up.wait(1)
        assert isinstance(exc, ConnectionClosed) and exc.code == 1008
        # Giving up is a state that waits for reconnect(): no attempt after the first.
        assert client.status()["state"] == "gave_up" and len(peer.attempts) == 1


def test_retry_count_resets_only_after_min_uptime(peer, make_client):
    peer.close_on_open(1011)  # accepts, then closes at once
    gave_up = Recorder()
    # The first ping goes out PING_INTERVAL after the connection opened: once the peer has
    # it, the connection has been up longer than MIN_UPTIME, by the client's own clock.
    client = peer_client(make_client, peer, retry_limit=5, min_uptime=t(0.3), ping_interval=t(0.4),
                         on_give_up=gave_up)
    client.start()
    gave_up.wait(1)
    assert len(peer.connections) == 5  # connected each time, yet never reset the count
    assert [peer.wait_closed(index=i) for i in range(5)] == [1011] * 5  # each answered with the server's code

    peer.close_on_open(1011, times=2)
    client.reconnect()  # leaves the gave-up state with retry_count 0
    peer.wait_connections(8)  # two more short-lived connections, then one that stays
    assert client.wait_until_connected(t(5))
    assert client.status()["retry_count"] == 2 and peer.connections[7].open
    peer.wait_pings(1)  # up longer than MIN_UPTIME
    peer.close(1012)
    peer.wait_connections(9)
    assert client.wait_until_connected(t(5))
    assert client.status()["retry_count"] == 0  # reset by the long-lived connection, not 2


def test_stop_interrupts_a_backoff_wait_at_once(peer, make_client):
    peer.refuse()
    errors = Recorder()
    client = peer_client(make_client, peer, retry_delay=30, max_retry_delay=30, on_error=errors)
    client.start()
    [exc] = errors.wait(1)  # the hook runs just before the 30 s wait starts
    assert isinstance(exc, ConnectionRefusedError) and client.status()["state"] == "backing_off"
    began = time.monotonic()
    client.stop(timeout=5)
    assert time.monotonic() - began < t(0.5)
    assert client.status()["state"] == "stopped" and len(peer.attempts) == 1


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01])
def test_a_close_that_says_give_up_is_obeyed_while_large_messages_are_being_written(make_client, delay):
    """The server's code decides what follows, even when the sender finds the connection closing
    first (it held the write lock, writing 1 MiB messages, while the reader waited to echo the close).
    The server here drains what it gets without parsing it, so the sender never waits for it."""
    servers = []

    def drain(sock):
        try:
            while sock.recv(1 << 20):
                pass
        except OSError:
            pass

    def connector(url, headers, *, timeout, max_message_size, ssl_context=None):
        client_sock, server_sock = tcp_pair()
        servers.append((server_sock, gevent.spawn(drain, server_sock)))
        return Connection(client_sock, max_message_size)

    gave_up, closes = Recorder(), Recorder()
    client = make_client(connector=connector, url="ws://127.0.0.1:9/ws", on_give_up=gave_up,
                         on_close=lambda code, reason: closes((code, reason)))
    try:
        client.start()
        assert client.wait_until_connected(t(5))
        for _ in range(40):
            client.send_message(b"x" * (1 << 20))
        gevent.sleep(delay)  # where the close finds the sender: the point of the parameter, not a wait
        servers[0][0].sendall(frame(0x8, close_payload(1008, b"policy")))
        assert closes.wait(1, t(10)) == [(1008, "policy")]
        assert gave_up.wait(1, t(5)) and client.status()["state"] == "gave_up"
    finally:
        client.stop(t(1))
        for sock, greenlet in servers:
            greenlet.kill()
            sock.close()
