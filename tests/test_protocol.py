"""The sans-I/O protocol core: bytes in, events and bytes out, every rule a plain assert."""

import struct

import pytest

from hermes_gevent.errors import ConnectionClosed, ProtocolError
from hermes_gevent.frames import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Close, Message, Ping, Pong
from hermes_gevent.protocol import Protocol, ProtocolState

from .frames_util import client_frames, close_payload as close_body, frame


def opened(data=b"", max_size=1 << 20):
    protocol = Protocol(max_size)
    delivered = []
    protocol.receive_data(data)
    protocol.process(delivered.append)
    return protocol, delivered


def test_messages_are_delivered_in_order_and_nothing_is_sent():
    protocol, delivered = opened(frame(OP_TEXT, b"one") + frame(OP_BINARY, b"\x00two") + frame(OP_TEXT, b"th"))
    assert delivered == ["one", b"\x00two", "th"]
    assert protocol.state is ProtocolState.OPEN and protocol.failure is None
    assert protocol.data_to_send() == []


def test_a_ping_is_answered_with_a_pong_carrying_its_payload():
    protocol, _ = opened(frame(OP_PING, b"are you there"))
    assert client_frames(protocol.data_to_send()) == [(OP_PONG, b"are you there")]
    assert protocol.data_to_send() == []  # taken once


def test_pongs_are_counted():
    protocol, _ = opened(frame(OP_PONG, b"1") + frame(OP_PONG, b"2"))
    assert protocol.pongs_received == 2 and protocol.data_to_send() == []


def test_a_server_close_is_echoed_and_ends_the_connection():
    protocol, delivered = opened(frame(OP_TEXT, b"last") + frame(OP_CLOSE, close_body(1001, b"restart"))
                                 + frame(OP_TEXT, b"after the close"))
    assert delivered == ["last"]  # nothing after a close frame belongs to the connection
    assert client_frames(protocol.data_to_send()) == [(OP_CLOSE, close_body(1001))]
    assert protocol.state is ProtocolState.CLOSED
    assert isinstance(protocol.failure, ConnectionClosed)
    assert (protocol.failure.code, protocol.failure.reason) == (1001, "restart")
    protocol.receive_eof()  # the server then closes TCP: the reason stays the handshake's
    assert protocol.failure.code == 1001


def test_a_close_without_a_code_is_answered_with_1000():
    protocol, _ = opened(frame(OP_CLOSE))
    assert client_frames(protocol.data_to_send()) == [(OP_CLOSE, close_body(1000))]
    assert protocol.failure.code == 1005


def test_our_close_then_the_servers_answer():
    protocol, _ = opened()
    assert protocol.send_close(1000, "client stopping")
    assert protocol.state is ProtocolState.CLOSING and not protocol.can_send_data
    assert not protocol.send_close(1000)  # once
    assert not protocol.send_ping()
    assert client_frames(protocol.data_to_send()) == [(OP_CLOSE, close_body(1000, b"client stopping"))]
    protocol.receive_data(frame(OP_PING, b"late") + frame(OP_TEXT, b"still delivered") + frame(OP_CLOSE, close_body(1000)))
    delivered = []
    protocol.process(delivered.append)
    assert delivered == ["still delivered"]
    assert protocol.data_to_send() == []  # no pong after our close, no second close
    assert protocol.state is ProtocolState.CLOSED and protocol.failure.code == 1000


@pytest.mark.parametrize(
    "data, code",
    [
        (frame(OP_TEXT, b"\xff\xfe"), 1007),
        (frame(0x3, b"x"), 1002),
        (frame(OP_TEXT, b"x", rsv=0x40), 1002),
        (frame(OP_TEXT, b"x", mask=b"abcd"), 1002),
        (frame(OP_PING, b"x" * 126), 1002),
        (frame(OP_CLOSE, close_body(999)), 1002),
        (frame(OP_CLOSE, close_body(1000, b"\xff")), 1007),
        (frame(OP_BINARY, b"x" * 101), 1009),
    ],
)
def test_a_violation_closes_with_its_code_after_delivering_what_came_before(data, code):
    protocol, delivered = opened(frame(OP_TEXT, b"before") + data + frame(OP_TEXT, b"after"), max_size=100)
    assert delivered == ["before"]
    assert isinstance(protocol.failure, ProtocolError) and protocol.failure.code == code
    assert protocol.state is ProtocolState.CLOSED
    [(opcode, body)] = client_frames(protocol.data_to_send())
    assert opcode == OP_CLOSE and struct.unpack("!H", body[:2])[0] == code
    protocol.receive_data(frame(OP_TEXT, b"ignored"))
    protocol.process(delivered.append)
    assert delivered == ["before"]


def test_an_oversized_message_is_refused_from_its_header_alone():
    protocol = Protocol(1000)
    header_only = frame(OP_BINARY, b"x" * 70000)[:10]  # the payload never arrives
    protocol.receive_data(header_only)
    protocol.process(lambda data: None)
    assert isinstance(protocol.failure, ProtocolError) and protocol.failure.code == 1009
    assert protocol.parser.buffered <= len(header_only)  # nothing waits for the 70,000 bytes


def test_the_end_of_the_stream_while_open_is_abnormal():
    protocol, _ = opened(frame(OP_TEXT, b"partial")[:4])
    protocol.receive_eof()
    assert protocol.state is ProtocolState.CLOSED
    assert isinstance(protocol.failure, ConnectionClosed) and protocol.failure.code == 1006
    assert protocol.data_to_send() == []


def test_a_close_reason_is_cut_at_a_character_boundary():
    protocol = Protocol(100)
    protocol.send_close(1000, "é" * 100)  # 200 bytes of UTF-8
    [(opcode, body)] = client_frames(protocol.data_to_send())
    assert len(body) <= 125 and body[2:].decode("utf-8") == "é" * 61


def test_frames_and_pieces_carry_the_payloads_masked():
    protocol = Protocol(100)
    chunks, lengths = protocol.frame_messages([(OP_TEXT, b"a" * 10), (OP_BINARY, b"b" * 300)])
    assert client_frames(chunks) == [(OP_TEXT, b"a" * 10), (OP_BINARY, b"b" * 300)]
    assert sum(lengths) == sum(map(len, chunks))
    big = bytes(range(256)) * 2049  # over one MASK_PIECE
    assert client_frames(list(protocol.frame_in_pieces((OP_BINARY, big)))) == [(OP_BINARY, big)]


def test_events_received_reports_controls_after_handling_them():
    protocol, _ = opened()
    protocol.receive_data(frame(OP_TEXT, b"hi") + frame(OP_PING, b"p") + frame(OP_PONG, b"q")
                          + frame(OP_CLOSE, close_body(1000)))
    assert protocol.events_received() == [Message("hi"), Ping(b"p"), Pong(b"q"), Close(1000, "")]
    assert [op for op, _ in client_frames(protocol.data_to_send())] == [OP_PONG, OP_CLOSE]


def test_after_a_violation_data_may_go_until_the_close_frame_is_taken():
    protocol, delivered = opened(frame(OP_TEXT, b"question") + frame(3, b"x"))
    assert delivered == ["question"] and isinstance(protocol.failure, ProtocolError)
    assert protocol.state is ProtocolState.CLOSED
    assert protocol.can_send_data  # the answer to "question" may still go ahead of the close
    chunks, _ = protocol.frame_messages([(OP_TEXT, b"answer")])
    assert client_frames(chunks) == [(OP_TEXT, b"answer")]
    assert client_frames(protocol.data_to_send()) == [(OP_CLOSE, close_body(1002, b"reserved opcode 0x3"))]
    assert not protocol.can_send_data  # nothing after the close frame
