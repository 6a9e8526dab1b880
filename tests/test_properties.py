"""Property-based tests (hypothesis): the frame parser and the upgrade-answer reader fed
arbitrary and mutated bytes raise only their documented exceptions, keep their memory
bounded, and give the same result whether the bytes arrive at once or split anywhere."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_gevent.errors import AnswerTooLarge, ProtocolError
from hermes_gevent.frames import FrameParser, Message
from hermes_gevent.upgrade import UpgradeAnswer

from .frames_util import frame

CASES = 1000
#: In CI the cases are the same on every run (a new counterexample must not fail an unrelated
#: change); locally each run explores new ones.
DERANDOMIZE = bool(os.environ.get("CI"))
MAX_SIZE = 512  # the parser's MAX_MESSAGE_SIZE here: small, so the limit is reached often
HEADER_MAX = 14  # the longest frame header (2 + 8 + 4)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def run_parser(chunks: list[bytes]):
    """Events and the error (type, close code) from feeding ``chunks`` one by one."""
    parser = FrameParser(MAX_SIZE)
    events = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            parser.parse(lambda data: events.append(Message(data)), events.append)
        except ProtocolError as exc:
            return events, ("ProtocolError", exc.code)
        assert parser.buffered <= HEADER_MAX + max(MAX_SIZE, 125)  # only a partial frame is left
        assert all(len(e.data) <= MAX_SIZE for e in events if isinstance(e, Message))  # MAX_MESSAGE_SIZE holds
    return events, None


@st.composite
def frame_streams(draw):
    """Valid frames (data, fragments, control), then a few mutations: flipped, cut or inserted bytes."""
    kinds = st.sampled_from([(1, True), (2, True), (1, False), (0, False), (0, True), (9, True), (10, True), (8, True)])
    parts = []
    for opcode, fin in draw(st.lists(kinds, max_size=8)):
        if opcode >= 8:
            payload = draw(st.binary(max_size=125))
        elif opcode == 1 and draw(st.booleans()):
            payload = draw(st.text(max_size=40)).encode()
        else:  # small, or right around MAX_SIZE
            payload = draw(st.one_of(st.binary(max_size=64), st.integers(MAX_SIZE - 8, MAX_SIZE + 8).map(b"x".__mul__)))
        parts.append(frame(opcode, payload, fin=fin))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[at]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


CUTS = st.lists(st.integers(min_value=0), max_size=12)


@settings(max_examples=CASES, deadline=None, derandomize=DERANDOMIZE)
@given(st.binary(max_size=2048), CUTS)
def test_the_parser_on_arbitrary_bytes(data, cuts):
    assert run_parser(split(data, cuts)) == run_parser([data])


@settings(max_examples=CASES, deadline=None, derandomize=DERANDOMIZE)
@given(frame_streams(), CUTS)
def test_the_parser_on_mutated_frames(data, cuts):
    assert run_parser(split(data, cuts)) == run_parser([data])


def run_answer(chunks: list[bytes], max_bytes: int, max_headers: int):
    """(head, everything after it) or the error, from feeding ``chunks`` until the head is complete."""
    answer = UpgradeAnswer(max_bytes, max_headers)
    for index, chunk in enumerate(chunks):
        try:
            done = answer.feed(chunk)
        except AnswerTooLarge:
            return "AnswerTooLarge"
        assert len(answer._buffer) < max_bytes + len(chunk)  # never more than the limit plus one read
        if done is not None:
            head, rest = done
            return head, rest + b"".join(chunks[index + 1:])
    return None


ANSWER_LINES = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from([b"HTTP/1.1 101 OK", b"Upgrade: websocket", b"", b" ", b"\r"])),
    max_size=12,
)


@settings(max_examples=CASES, deadline=None, derandomize=DERANDOMIZE)
@given(st.one_of(st.binary(max_size=600), ANSWER_LINES.map(b"\r\n".join)), CUTS,
       st.integers(16, 512), st.integers(0, 8))
def test_the_upgrade_answer_on_arbitrary_bytes(data, cuts, max_bytes, max_headers):
    whole = run_answer([data], max_bytes, max_headers)
    assert run_answer(split(data, cuts), max_bytes, max_headers) == whole
    if isinstance(whole, tuple):
        head, rest = whole
        assert head + rest == data and len(head) <= max_bytes and head.endswith(b"\n")
        last_line = head[:-1].split(b"\n")[-1]
        assert not last_line.decode("utf-8", "replace").strip()  # blank as websocket-client judges it
