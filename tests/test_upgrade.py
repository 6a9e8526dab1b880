"""The server's upgrade answer is read by us, bounded: pure checks of UpgradeAnswer, then
hostile servers (raw sockets in a subprocess) that flood, drip, or send frames with the 101."""

import pytest

from hermes_gevent.errors import AnswerTooLarge, ConfigError, ConnectionFailed, ConnectTimeout, HandshakeRejected
from hermes_gevent.upgrade import MAX_ANSWER_BYTES, MAX_ANSWER_HEADERS, UpgradeAnswer

from .support import t, wait_until

ANSWER = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Accept: abc=\r\n\r\n")
FRAMES = b"\x81\x05first\x81\x06second"


def test_the_head_and_what_follows_it_are_told_apart():
    assert UpgradeAnswer().feed(ANSWER + FRAMES) == (ANSWER, FRAMES)


def test_the_same_result_wherever_the_bytes_are_split():
    data = ANSWER + FRAMES
    for cut in range(len(data) + 1):
        answer = UpgradeAnswer()
        first = answer.feed(data[:cut])
        if first is None:
            assert answer.feed(data[cut:]) == (ANSWER, FRAMES), cut
        else:  # complete already: what comes later goes to the frame parser, not here
            head, rest = first
            assert head == ANSWER and rest + data[cut:] == FRAMES, cut


def test_bare_newlines_and_whitespace_lines_end_the_head_as_websocket_client_reads_it():
    assert UpgradeAnswer().feed(b"HTTP/1.1 101 OK\nA: b\n\nrest") == (b"HTTP/1.1 101 OK\nA: b\n\n", b"rest")
    assert UpgradeAnswer().feed(b"HTTP/1.1 101 OK\r\n \r\nrest")[1] == b"rest"


def test_an_answer_past_the_byte_limit_without_its_end_is_refused():
    answer = UpgradeAnswer()
    answer.feed(b"HTTP/1.1 101 OK\r\nX: ")
    with pytest.raises(AnswerTooLarge, match="longer than 64 KiB"):
        for _ in range(MAX_ANSWER_BYTES // 4096 + 1):
            answer.feed(b"a" * 4096)


def test_a_head_of_exactly_the_limit_passes_and_one_byte_more_does_not():
    status = b"HTTP/1.1 101 OK\r\n"
    filler = b"X: " + b"a" * (MAX_ANSWER_BYTES - len(status) - 3 - 4) + b"\r\n"
    head = status + filler + b"\r\n"
    assert len(head) == MAX_ANSWER_BYTES
    assert UpgradeAnswer().feed(head) is not None
    with pytest.raises(AnswerTooLarge):
        UpgradeAnswer().feed(status + b"X: a" + filler[3:] + b"\r\n")


def test_more_than_the_header_limit_is_refused():
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_ANSWER_HEADERS))
    assert UpgradeAnswer().feed(b"HTTP/1.1 101 OK\r\n" + headers + b"\r\n") is not None
    with pytest.raises(AnswerTooLarge, match="more than 100 header lines"):
        UpgradeAnswer().feed(b"HTTP/1.1 101 OK\r\n" + headers + b"X-last: v\r\n\r\n")


@pytest.mark.parametrize("mode", ["endless-line", "endless-headers", "endless-status"])
def test_a_flooding_server_fails_the_attempt_quickly_and_it_is_retried(hostile, make_client, mode):
    errors = []
    client = make_client(url=hostile(mode), connect_timeout=t(3), on_error=errors.append)
    client.start()
    wait_until(lambda: len(errors) >= 2, t(3), "two failed attempts")  # well inside CONNECT_TIMEOUT
    assert all(isinstance(e, AnswerTooLarge) for e in errors[:2]), errors
    assert client.status()["retry_count"] >= 1 and not client.status()["max_retries_reached"]


def test_a_dripping_server_is_cut_off_by_the_connect_timeout(hostile, make_client):
    errors = []
    client = make_client(url=hostile("drip"), connect_timeout=t(0.5), on_error=errors.append)
    client.start()
    wait_until(lambda: errors, t(0.5) + t(2), "the connect timeout")
    assert isinstance(errors[0], ConnectTimeout), errors


def test_frames_sent_with_the_101_are_delivered(hostile, make_client):
    got = []
    client = make_client(url=hostile("frames-with-101"), on_message=got.append)
    client.start()
    wait_until(lambda: len(got) == 2, t(5), "both frames that came with the 101")
    assert got == ["first", "second"]


def test_a_rejection_with_a_body_keeps_its_status_and_gives_up(hostile, make_client):
    errors = []
    client = make_client(url=hostile("reject-with-body"), on_error=errors.append)
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "the client to give up on 401")
    assert len(errors) == 1 and isinstance(errors[0], HandshakeRejected) and errors[0].status == 401


def test_an_answer_without_a_status_line_is_a_failed_attempt(hostile, make_client):
    errors = []
    client = make_client(url=hostile("blank-first"), on_error=errors.append)
    client.start()
    wait_until(lambda: len(errors) >= 2, t(5), "two failed attempts")
    assert type(errors[0]) is ConnectionFailed and "status line" in str(errors[0])


def test_the_request_as_written_carries_no_line_we_did_not_ask_for():
    """What websocket-client adds itself (a Cookie from its jar, which servers fill) is checked
    where the request is written: an extra line is refused and nothing reaches the socket."""
    import gevent.socket

    from hermes_gevent.transport import _AnswerReadByUs

    ours, theirs = gevent.socket.socketpair()
    try:
        shim = _AnswerReadByUs(ours, ["X-Ours"])
        good = "GET /ws HTTP/1.1\r\nHost: h\r\nX-Ours: 1\r\nCookie: a=x\r\n\r\n"
        assert shim.send(good.encode()) == len(good)
        assert theirs.recv(4096) == good.encode()
        with pytest.raises(ConfigError, match="unexpected or invalid header line"):
            shim.send(good.replace("Cookie: a=x", "Cookie: a=x\r\nX-Injected: yes").encode())
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(4096)  # nothing was written
    finally:
        ours.close()
        theirs.close()
