"""The frame parser, fed bytes by hand: every protocol rule as a plain assert."""

import pytest

from hermes_gevent.errors import ProtocolError
from hermes_gevent.encoder import encode_frame
from hermes_gevent.frames import Close, FrameParser, Message, Ping, Pong

from .frames_util import close_payload, frame


def parse(data, max_size=1 << 20):
    parser = FrameParser(max_size)
    parser.feed(data)
    return list(parser.events())


def test_many_frames_from_one_read_and_partial_frames_wait():
    data = frame(1, b"one") + frame(2, b"\x00\x01") + frame(9, b"p") + frame(10, b"q")
    assert parse(data) == [Message("one"), Message(b"\x00\x01"), Ping(b"p"), Pong(b"q")]
    parser = FrameParser(1 << 20)
    whole = frame(1, b"x" * 300)
    parser.feed(whole[:100])
    assert list(parser.events()) == []
    parser.feed(whole[100:])
    assert list(parser.events()) == [Message("x" * 300)]


def test_fragmented_message_with_a_ping_in_between():
    data = frame(1, "héllo ".encode()[:2], fin=False) + frame(9, b"") + frame(0, "héllo ".encode()[2:], fin=False) + frame(0, b"!")
    assert parse(data) == [Ping(b""), Message("héllo !")]


@pytest.mark.parametrize(
    "data, code",
    [
        (frame(1, b"\xff\xfe"), 1007),
        (frame(3, b"x"), 1002),  # reserved data opcode
        (frame(11, b"x"), 1002),  # reserved control opcode
        (frame(1, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (frame(1, b"x", mask=b"abcd"), 1002),  # servers must not mask
        (frame(9, b"x" * 126), 1002),  # control frame too long
        (frame(9, b"x", fin=False), 1002),  # fragmented control frame
        (frame(0, b"x"), 1002),  # continuation of nothing
        (frame(1, b"a", fin=False) + frame(1, b"b"), 1002),  # new message inside a fragmented one
        (frame(8, b"\x03"), 1002),  # one-byte close payload
        (frame(8, close_payload(999)), 1002),  # invalid close code
        (frame(8, close_payload(1005)), 1002),  # reserved close code on the wire
        (frame(8, close_payload(1000, b"\xff")), 1007),
    ],
)
def test_protocol_violations_raise_with_the_close_code(data, code):
    with pytest.raises(ProtocolError) as info:
        parse(data)
    assert info.value.code == code


def test_too_big_is_refused_from_the_header_before_the_payload_arrives():
    parser = FrameParser(max_size=1000)
    parser.feed(frame(2, b"x" * 5000)[:4])  # only the header: nothing buffered beyond it
    with pytest.raises(ProtocolError) as info:
        list(parser.events())
    assert info.value.code == 1009


def test_too_big_counts_all_fragments():
    data = frame(2, b"x" * 600, fin=False) + frame(0, b"x" * 600)
    with pytest.raises(ProtocolError) as info:
        parse(data, max_size=1000)
    assert info.value.code == 1009
    assert parse(data, max_size=1200) == [Message(b"x" * 1200)]


def test_close_frames():
    assert parse(frame(8, b"")) == [Close(1005, "")]
    assert parse(frame(8, close_payload(1001, b"bye"))) == [Close(1001, "bye")]
    assert parse(frame(8, close_payload(4000))) == [Close(4000, "")]


def test_encoded_client_frames_are_masked_and_round_trip():
    data = encode_frame(1, "ünïcode".encode())
    assert data[1] & 0x80  # mask bit set
    length = data[1] & 0x7F
    mask, masked = data[2:6], data[6:6 + length]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked)).decode() == "ünïcode"


def test_events_before_a_violation_are_delivered_first():
    parser = FrameParser(1 << 20)
    parser.feed(frame(1, b"good") + frame(3, b"bad"))
    seen = []
    with pytest.raises(ProtocolError):
        for event in parser.events():
            seen.append(event)
    assert seen == [Message("good")]


def test_parse_calls_back_in_order():
    parser = FrameParser(1 << 20)
    parser.feed(frame(1, b"a") + frame(9, b"p") + frame(2, b"b") + frame(8, close_payload(1000)))
    calls = []
    parser.parse(lambda data: calls.append(("message", data)), lambda event: calls.append(("control", event)))
    assert calls == [("message", "a"), ("control", Ping(b"p")), ("message", b"b"), ("control", Close(1000, ""))]


def test_c_and_pure_python_masking_agree():
    from websocket import ABNF

    from hermes_gevent import encoder

    for size in (0, 1, 3, 4, 5, 100, 4099, 70_000):
        payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        key = b"\x9a\x01\xfe\x33"
        assert encoder.mask(key, payload) == ABNF.mask(key, payload)


# -- UTF-8 checked as text arrives (RFC 6455 8.1; Autobahn 6.4.*) ----------------------------


def feed_and_parse(parser, data):
    parser.feed(data)
    return list(parser.events())


def test_an_invalid_fragment_fails_before_the_message_ends():
    parser = FrameParser(1 << 20)
    assert feed_and_parse(parser, frame(1, "κόσμε".encode(), fin=False)) == []
    with pytest.raises(ProtocolError) as caught:
        feed_and_parse(parser, frame(0, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", fin=False))
    assert caught.value.code == 1007


def test_an_invalid_start_of_a_frame_fails_before_the_frame_is_whole():
    whole = frame(1, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited" * 100)
    parser = FrameParser(1 << 20)
    assert feed_and_parse(parser, whole[:8]) == []  # header and valid text: nothing to say yet
    with pytest.raises(ProtocolError) as caught:
        feed_and_parse(parser, whole[8:20])  # the invalid bytes, the frame far from complete
    assert caught.value.code == 1007


def test_a_character_cut_between_reads_or_fragments_is_not_an_error():
    text = "añb€c😀d" * 50
    encoded = text.encode()
    data = frame(1, encoded[:7], fin=False) + frame(0, encoded[7:], fin=True)
    parser = FrameParser(1 << 20)
    events = []
    for i in range(len(data)):  # one byte per read: every character is cut somewhere
        events += feed_and_parse(parser, data[i : i + 1])
    assert events == [Message(text)]


def test_a_continuation_is_checked_against_the_fragment_before_it():
    # The first fragment ends inside a character; the next fragment's start must finish it.
    parser = FrameParser(1 << 20)
    assert feed_and_parse(parser, frame(1, b"ab\xc3", fin=False)) == []
    following = frame(0, b"A" + b"x" * 200)  # "A" cannot follow 0xC3
    with pytest.raises(ProtocolError) as caught:
        feed_and_parse(parser, following[:6])
    assert caught.value.code == 1007
    parser = FrameParser(1 << 20)
    assert feed_and_parse(parser, frame(1, b"ab\xc3", fin=False)) == []
    following = frame(0, b"\xa9" + b"x" * 200)
    assert feed_and_parse(parser, following[:6]) == []
    assert feed_and_parse(parser, following[6:]) == [Message("abé" + "x" * 200)]


def test_binary_frames_arriving_in_pieces_are_not_checked_as_text():
    data = frame(2, b"\xff\xfe" * 200)
    parser = FrameParser(1 << 20)
    assert feed_and_parse(parser, data[:10]) == []
    assert feed_and_parse(parser, data[10:]) == [Message(b"\xff\xfe" * 200)]


def test_a_write_joins_small_chunks_and_passes_large_ones_as_they_are():
    from hermes_gevent.encoder import write_buffers

    large, other = b"L" * 5000, b"M" * 4096
    chunks = [b"h1", b"k1", large, b"h2", b"p2", b"h3", other, b"end"]
    buffers = write_buffers(chunks, 4096)
    assert buffers == [b"h1k1", large, b"h2p2h3", other, b"end"]
    assert buffers[1] is large and buffers[3] is other  # never copied
    assert write_buffers(chunks, None) == [b"".join(chunks)]
    assert write_buffers([large], None)[0] is large


def test_the_rest_of_a_frame_cut_in_its_payload_is_a_view_of_it_not_a_copy():
    from hermes_gevent.encoder import frame_rest

    head, payload = b"HEADKEY", b"P" * 5000 + b"END"
    frame_bytes = head + payload
    for cut in (0, 3, len(head), len(head) + 1, len(frame_bytes) - 1):
        assert bytes(frame_rest(head, payload, cut)) == frame_bytes[cut:]
    assert frame_rest(head, payload, len(head) + 10).obj is payload  # the payload itself, not a copy of it
    assert frame_rest(head, payload, 3).obj is not payload  # a cut in the header: header rest and payload joined
