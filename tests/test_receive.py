"""Receiving: handlers, protocol errors and their close codes, liveness, the one writer."""

import hashlib
import struct

import gevent

from hermes_gevent.errors import PingTimeout, ProtocolError

from .conftest import ServerProcess, free_port, t, wait_until


def raw_frame(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return (head + payload).hex()


def test_a_failing_handler_is_logged_counted_and_the_reader_goes_on(server, make_client, caplog_hermes):
    got = []

    def handle(msg):
        if msg.endswith("3"):
            raise RuntimeError("handler bug")
        got.append(msg)

    client = make_client(url=server.url, on_message=handle)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="push", n=10)
    wait_until(lambda: len(got) == 9, t(5), "the other nine messages")
    status = client.status()
    assert status["handler_errors"] == 1 and status["messages_received"] == 10 and status["connected"]
    errors = [r for r in caplog_hermes.records if "handle_message raised" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info and "handler bug" in str(errors[0].exc_info[1])
    assert len(server.of("connect")) == 1  # no reconnect for a handler error


def check_protocol_error(server, client, errors, hex_bytes, code):
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="raw", hex=hex_bytes)
    close = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert close["code"] == code
    wait_until(lambda: errors and isinstance(errors[-1], ProtocolError), t(5), "the protocol error")
    assert errors[-1].code == code
    server.wait_for(lambda: len(server.of("connect")) == 2, t(5), "the reconnection")
    assert client.wait_until_connected(t(5))
    assert all(client.status()[k] for k in ("event_thread_alive", "send_thread_alive", "health_thread_alive"))


def test_invalid_utf8_closes_with_1007_and_reconnects(server, make_client):
    errors = []
    client = make_client(url=server.url, on_error=errors.append)
    check_protocol_error(server, client, errors, raw_frame(1, b"\xc3\x28bad"), 1007)


def test_reserved_opcode_closes_with_1002_and_reconnects(server, make_client):
    errors = []
    client = make_client(url=server.url, on_error=errors.append)
    check_protocol_error(server, client, errors, raw_frame(3, b"x"), 1002)


def test_invalid_close_code_closes_with_1002(server, make_client):
    errors = []
    client = make_client(url=server.url, on_error=errors.append)
    check_protocol_error(server, client, errors, raw_frame(8, struct.pack("!H", 999)), 1002)


def test_message_over_max_size_closes_with_1009_without_buffering_it(server, make_client):
    errors = []
    client = make_client(url=server.url, on_error=errors.append, max_message_size=1000)
    # Only the header of a 50 MB message is sent: refusing it must not wait for the payload.
    header = bytes([0x82, 127]) + struct.pack("!Q", 50 * 2**20)
    check_protocol_error(server, client, errors, header.hex(), 1009)


def test_server_pings_are_answered(server, make_client):
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="ping_wait", timeout=t(2))
    assert server.of("pong") and not server.of("pong_timeout")


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


def test_a_slow_handler_is_not_mistaken_for_a_dead_connection(server, make_client, caplog_hermes):
    got = []

    def slow(msg):
        gevent.sleep(t(1.0))  # far longer than PING_TIMEOUT; cooperative, so pings still go out
        got.append(msg)

    errors = []
    client = make_client(url=server.url, on_message=slow, ping_interval=t(0.1), ping_timeout=t(0.2),
                         on_error=errors.append)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="push", n=2)
    wait_until(lambda: len(got) == 2, t(5), "both slow messages")
    gevent.sleep(t(0.5))  # and the link is judged healthy again once reading resumes
    assert client.connected and not errors and len(server.of("connect")) == 1
    assert any("handle_message has been running" in r.getMessage() for r in caplog_hermes.records)
