"""permessage-deflate without I/O (deflate.py): plain asserts on values and bytes, the bytes
checked against websockets' own implementation of RFC 7692 (its PerMessageDeflate)."""

from __future__ import annotations

import json
import os
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from hermes_gevent import ExtensionMismatch, ProtocolError
from hermes_gevent.deflate import INFLATE_SLICE, Agreement, Compressor, Decompressor, Options, accept, offer, parse_extensions

# What websockets' client compresses with by default: zlib's level 6, memLevel 5.
LEVEL, MEM_LEVEL = 6, 5


def json_messages(count: int) -> list[bytes]:
    return [json.dumps({"id": i, "operation": "notification", "receiver_id": f"user-{i % 7}",
                        "message": "order shipped " * (i % 5 + 1)}).encode() for i in range(count)]


def compressor(agreement: Agreement, *, window_bits: int = 15, threshold: int = 0) -> Compressor:
    return Compressor(agreement, Options(LEVEL, window_bits, MEM_LEVEL, threshold))


def theirs(*, remote_no_context_takeover=False, local_no_context_takeover=False, remote_max_window_bits=15,
           local_max_window_bits=15) -> PerMessageDeflate:
    return PerMessageDeflate(remote_no_context_takeover, local_no_context_takeover, remote_max_window_bits,
                             local_max_window_bits, {"level": LEVEL, "memLevel": MEM_LEVEL})


# -- the offer and the answer ---------------------------------------------------------------

def test_the_offer_leaves_the_servers_window_to_the_server() -> None:
    assert offer() == "permessage-deflate; client_max_window_bits"
    assert Options(no_context_takeover=True).offer() == (
        "permessage-deflate; client_no_context_takeover; client_max_window_bits")
    assert parse_extensions(offer()) == [("permessage-deflate", [("client_max_window_bits", None)])]


def test_no_answer_means_plain_frames() -> None:
    assert accept(None) is None
    assert accept("  ") is None


def test_an_answer_with_every_parameter_this_client_honours() -> None:
    agreement = accept('permessage-deflate; server_no_context_takeover; client_no_context_takeover; '
                       'server_max_window_bits=10; client_max_window_bits="11"')
    assert agreement is not None
    assert agreement.server_no_context_takeover and agreement.client_no_context_takeover
    assert (agreement.server_max_window_bits, agreement.client_max_window_bits) == (10, 11)
    plain = accept("Permessage-Deflate")
    assert plain is not None and plain.answer == "Permessage-Deflate"
    assert not plain.server_no_context_takeover and plain.client_max_window_bits is None


def test_a_server_window_of_8_bits_is_read_with_9() -> None:
    agreement = accept("permessage-deflate; server_max_window_bits=8")
    assert agreement is not None and agreement.server_max_window_bits == 8
    # What zlib writes when asked for an 8-bit window is read by our inflater.
    deflater = zlib.compressobj(6, zlib.DEFLATED, -9, 5)
    data = deflater.compress(b"abc" * 100) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert Decompressor(agreement).frame(data[:-4], True, 1000) == b"abc" * 100


@pytest.mark.parametrize("answer, why", [
    ("x-webkit-deflate-frame", "offered only permessage-deflate"),
    ("permessage-deflate, permessage-deflate", "offered only permessage-deflate"),
    ("permessage-deflate, x-other", "offered only permessage-deflate"),
    ("permessage-deflate; foo=1", "does not know: foo"),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", "repeats server_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover=1", "takes none"),
    ("permessage-deflate; client_max_window_bits=8", "cannot compress with a window under 9 bits"),
    ("permessage-deflate; client_max_window_bits", "it must be 8 to 15"),
    ("permessage-deflate; server_max_window_bits=16", "it must be 8 to 15"),
    ("permessage-deflate; server_max_window_bits=7", "it must be 8 to 15"),
    ("permessage-deflate; server_max_window_bits=ten", "it must be 8 to 15"),
    ("permessage-deflate; =1", "cannot be read"),
    (";client_max_window_bits=10", "cannot be read"),
])
def test_an_answer_this_client_did_not_offer_or_cannot_honour_is_refused_with_the_reason(answer: str, why: str) -> None:
    with pytest.raises(ExtensionMismatch, match=why):
        accept(answer)


# -- compressing: the bytes websockets' own encoder writes ---------------------------------------

@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_messages_compress_to_the_bytes_websockets_writes(no_context_takeover: bool) -> None:
    agreement = accept("permessage-deflate" + ("; client_no_context_takeover" if no_context_takeover else ""))
    assert agreement is not None
    ours = compressor(agreement)
    reference = theirs(local_no_context_takeover=no_context_takeover)
    for message in json_messages(50):
        assert ours.compress(message) == reference.encode(Frame(Opcode.TEXT, message)).data


def test_the_servers_limit_caps_our_window_and_its_decoder_reads_what_we_write() -> None:
    agreement = accept("permessage-deflate; client_max_window_bits=9")
    assert agreement is not None
    ours = compressor(agreement, window_bits=12)
    assert ours.window_bits == 9
    reference = theirs(remote_max_window_bits=9)  # the server's side: our window is its remote one
    big = json.dumps([{"n": i, "text": os.urandom(40).hex()} for i in range(200)]).encode()
    for message in json_messages(20) + [big]:
        frame = Frame(Opcode.TEXT, ours.compress(message), rsv1=True)
        assert reference.decode(frame).data == message


def test_with_context_takeover_a_repeated_message_costs_less_and_without_it_costs_the_same() -> None:
    message = json_messages(1)[0] * 3
    kept = compressor(accept("permessage-deflate"))
    fresh = compressor(accept("permessage-deflate; client_no_context_takeover"))
    first, second = kept.compress(message), kept.compress(message)
    assert len(second) < len(first) / 3
    assert fresh.compress(message) == fresh.compress(message) == first


def test_messages_under_the_threshold_go_uncompressed_and_leave_the_compressor_untouched() -> None:
    ours = compressor(accept("permessage-deflate"), threshold=64)
    reference = theirs()
    assert ours.compress(b"x" * 63) is None
    message = b"y" * 64
    assert ours.compress(message) == reference.encode(Frame(Opcode.BINARY, message)).data


# -- inflating: what websockets' server writes, bounded ------------------------------------------

@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_what_websockets_compresses_inflates_to_the_message(no_context_takeover: bool) -> None:
    agreement = accept("permessage-deflate" + ("; server_no_context_takeover" if no_context_takeover else ""))
    ours = Decompressor(agreement)
    server = theirs(local_no_context_takeover=no_context_takeover)
    for message in json_messages(50):
        data = server.encode(Frame(Opcode.TEXT, message)).data
        assert ours.frame(data, True, 1 << 20) == message


def test_a_fragmented_compressed_message_inflates_frame_by_frame() -> None:
    message = b"".join(json_messages(40))
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15, 8)
    data = deflater.compress(message) + deflater.flush(zlib.Z_SYNC_FLUSH)
    data = data[:-4]
    ours = Decompressor(accept("permessage-deflate"))
    pieces, room = [], len(message)
    chunks = [data[i:i + 97] for i in range(0, len(data), 97)]
    for i, chunk in enumerate(chunks):
        piece = ours.frame(chunk, i == len(chunks) - 1, room)
        room -= len(piece)
        pieces.append(piece)
    assert b"".join(pieces) == message and room == 0


def test_a_large_frame_is_inflated_a_slice_at_a_time_pausing_in_between() -> None:
    message = b"".join(json_messages(20000))
    assert len(message) > 4 * INFLATE_SLICE
    data = theirs().encode(Frame(Opcode.TEXT, message)).data
    pauses: list[int] = []
    ours = Decompressor(accept("permessage-deflate"))
    assert ours.frame(data, True, len(message), lambda: pauses.append(1)) == message
    assert len(pauses) >= len(message) // INFLATE_SLICE - 1
    with pytest.raises(ProtocolError) as refused:  # the bound still holds across slices
        Decompressor(accept("permessage-deflate")).frame(data, True, len(message) - 1, lambda: None)
    assert refused.value.code == 1009


def test_a_message_one_byte_over_the_bound_is_refused_with_1009() -> None:
    message = b"a" * 1000
    data = theirs().encode(Frame(Opcode.BINARY, message)).data
    assert Decompressor(accept("permessage-deflate")).frame(data, True, 1000) == message
    with pytest.raises(ProtocolError) as refused:
        Decompressor(accept("permessage-deflate")).frame(data, True, 999)
    assert refused.value.code == 1009


def test_a_decompression_bomb_is_refused_having_inflated_no_more_than_the_bound() -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    chunk = b"\0" * (1 << 20)
    data = b"".join(deflater.compress(chunk) for _ in range(256)) + deflater.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 300 * 1024  # 256 MiB of zeros in a few hundred KiB
    bound = 1 << 20
    ours = Decompressor(accept("permessage-deflate"))
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as refused:
            ours.frame(data[:-4], True, bound)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.code == 1009
    assert peak < 3 * bound  # the output is cut at the bound (plus one byte), not at 256 MiB


def test_a_corrupt_stream_is_a_protocol_error_1002() -> None:
    with pytest.raises(ProtocolError) as refused:
        Decompressor(accept("permessage-deflate")).frame(b"\xff\xff\xff\xff not deflate", True, 1000)
    assert refused.value.code == 1002


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=20), st.booleans(), st.integers(9, 15))
def test_any_messages_round_trip_through_websockets(messages: list[bytes], no_context_takeover: bool,
                                                    window: int) -> None:
    answer = f"permessage-deflate; client_max_window_bits={window}"
    if no_context_takeover:
        answer += "; client_no_context_takeover; server_no_context_takeover"
    agreement = accept(answer)
    ours_out, ours_in = compressor(agreement, window_bits=12), Decompressor(agreement)
    server = theirs(remote_no_context_takeover=no_context_takeover, local_no_context_takeover=no_context_takeover,
                    remote_max_window_bits=window)
    for message in messages:
        assert server.decode(Frame(Opcode.BINARY, ours_out.compress(message), rsv1=True)).data == message
        assert ours_in.frame(server.encode(Frame(Opcode.BINARY, message)).data, True, len(message)) == message


def test_no_context_takeover_asked_by_us_compresses_each_message_alone():
    message = json_messages(1)[0] * 3
    agreed = accept("permessage-deflate")  # the server did not echo the hint: we keep our word anyway
    alone = Compressor(agreed, Options(threshold=0, no_context_takeover=True))
    assert alone.compress(message) == alone.compress(message)
    taking_over = Compressor(agreed, Options(threshold=0))
    first = taking_over.compress(message)
    assert len(taking_over.compress(message)) < len(first)  # the second refers back to the first
