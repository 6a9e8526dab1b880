"""Bad input in both directions: a hostile server, and callers passing what cannot be sent.

For every bad frame the client closes with the right code, reconnects, keeps its
counters right, and no loop dies."""

import hashlib

import pytest

from hermes_gevent.errors import ProtocolError

from ..frames_util import close_payload, frame, header_only
from ..support import t, wait_until

pytestmark = pytest.mark.faults

LOOPS = ("event_thread_alive", "send_thread_alive", "health_thread_alive", "supervisor_alive")


HOSTILE = [
    ("invalid UTF-8 in a text message", frame(1, b"ok \xed\xa0\x80"), 1007),
    ("reserved data opcode 0x3", frame(3, b"x"), 1002),
    ("reserved control opcode 0xB", frame(11), 1002),
    ("RSV1 set without an extension", frame(1, b"x", rsv=0x40), 1002),
    ("masked frame from the server", frame(1, b"hello", mask=b"\x01\x02\x03\x04"), 1002),
    ("fragmented ping", frame(9, b"p", fin=False), 1002),
    ("ping longer than 125 bytes", frame(9, b"p" * 200), 1002),
    ("continuation without a start", frame(0, b"x"), 1002),
    ("close frame with a 1-byte payload", frame(8, b"\x03"), 1002),
    ("close frame with invalid code 1005", frame(8, close_payload(1005)), 1002),
    ("close frame with invalid code 2999", frame(8, close_payload(2999)), 1002),
    ("message over MAX_MESSAGE_SIZE (header only)", header_only(2, 2**40), 1009),
]


@pytest.mark.parametrize("name, raw, code", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_server_gets_the_right_close_code(server, make_client, name, raw, code):
    errors, got = [], []
    client = make_client(url=server.url, on_error=errors.append, on_message=got.append, max_message_size=2**20)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="send", text="before")
    wait_until(lambda: got == ["before"], t(5), "a good message first")
    server.command(cmd="raw", hex=raw.hex())
    close = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert close["code"] == code, close
    assert isinstance(errors[0], ProtocolError) and errors[0].code == code
    server.wait_for(lambda: len(server.of("connect")) == 2, t(5), "the reconnection")
    assert client.wait_until_connected(t(5))
    server.command(cmd="send", text="after")
    wait_until(lambda: got == ["before", "after"], t(5), "a good message after")
    status = client.status()
    assert status["messages_received"] == 2 and status["handler_errors"] == 0 and status["reconnects"] == 1
    assert all(status[k] for k in LOOPS), status


def test_a_ping_flood_is_answered_and_does_not_disturb_sending(server, make_client):
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(500):
        client.send_message(f"n:{i}")
    server.command(cmd="ping_flood", n=5000, timeout=30)
    server.command(cmd="ping_wait", timeout=t(5))  # the flood was answered: one more round trip works
    assert server.of("pong") and not server.of("pong_timeout")
    server.wait_for(lambda: len(server.texts()) == 500, t(10), "every message during the flood")
    assert server.texts() == [f"n:{i}" for i in range(500)]
    assert client.connected and len(server.of("connect")) == 1 and not server.of("error")


def test_huge_outgoing_messages_arrive_intact(server, make_client):
    client = make_client(url=server.url, max_message_size=32 * 2**20)
    client.start()
    assert client.wait_until_connected(t(5))
    payloads = [bytes([i]) * (8 * 2**20 + i) for i in range(3)]  # 8 MiB each, masked in pieces
    for payload in payloads:
        assert client.send_message(payload)
    assert client.send_message("x" * (4 * 2**20))
    server.wait_for(lambda: len(server.of("msg")) == 4, t(30), "the huge messages")
    digests = [e["digest"] for e in server.of("msg")[:3]]
    assert digests == [hashlib.sha256(p).hexdigest() for p in payloads]
    assert server.texts() == ["x" * (4 * 2**20)]


@pytest.mark.parametrize("bad", [42, 1.5, None, True, object(), {1, 2}, (1, 2), b"ok".decode, Exception("x")])
def test_every_unsupported_argument_raises_type_error_in_the_caller(server, make_client, bad):
    client = make_client(url=server.url)
    client.start()
    with pytest.raises(TypeError):
        client.send_message(bad)
    status = client.status()
    assert status["queue_size"] == 0 and status["messages_dropped"] == 0
