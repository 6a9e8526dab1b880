"""permessage-deflate against real peers: a websockets server with compression on and off, a
hostile server answering with parameters we cannot honour, a decompression bomb, a corrupt
stream, and a server killed while compressed messages are in flight."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import gevent
import gevent.event
import pytest

from hermes_gevent import ConfigError, ExtensionMismatch, WebSocketClient

from .support import TESTS, Proc, ServerProcess, free_port, t, wait_until


@pytest.fixture
def deflate_server():
    srv = ServerProcess(free_port(), "--compression").start()
    yield srv
    srv.stop()


def collecting(**options):
    received: list = []
    changed = gevent.event.Event()

    def on_message(message) -> None:
        received.append(message)
        changed.set()

    return received, changed, dict(on_message=on_message, **options)


def wait_for(condition, timeout: float, changed: gevent.event.Event, what: str) -> None:
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
        while not condition():
            changed.clear()
            changed.wait()


def notifications(count: int) -> list[dict]:
    return [{"n": i, "operation": "notification", "message": "order shipped " * (i % 4 + 1)} for i in range(count)]


def test_compression_must_be_deflate_or_none() -> None:
    with pytest.raises(ConfigError, match="COMPRESSION"):
        WebSocketClient(url="ws://127.0.0.1:9/", compression="gzip")


def test_compression_is_on_by_default() -> None:
    assert WebSocketClient(url="ws://127.0.0.1:9/").settings.COMPRESSION == "deflate"


@pytest.mark.parametrize("keyword, value, sentence", [
    ("compression_level", 0, "COMPRESSION_LEVEL must be an integer from 1 to 9, got 0."),
    ("compression_level", "6", "COMPRESSION_LEVEL must be an integer from 1 to 9, got '6'."),
    ("compression_window_bits", 8, "COMPRESSION_WINDOW_BITS must be an integer from 9 to 15, got 8."),
    ("compression_mem_level", 10, "COMPRESSION_MEM_LEVEL must be an integer from 1 to 9, got 10."),
    ("compression_threshold", -1, "COMPRESSION_THRESHOLD must be an integer, at least 0, got -1."),
    ("compression_no_context_takeover", "yes", "COMPRESSION_NO_CONTEXT_TAKEOVER must be True or False, got 'yes'."),
])
def test_a_bad_compression_setting_is_one_sentence_naming_it(keyword, value, sentence) -> None:
    with pytest.raises(ConfigError) as caught:
        WebSocketClient(url="ws://127.0.0.1:9/", **{keyword: value})
    assert str(caught.value) == sentence


def test_no_context_takeover_is_offered_and_the_server_agrees(deflate_server, make_client) -> None:
    received, changed, options = collecting()
    client = make_client(url=deflate_server.url, compression_no_context_takeover=True, compression_window_bits=10,
                         compression_level=1, **options)
    client.start()
    assert client.wait_until_connected(t(5))
    assert "client_no_context_takeover" in client.status()["compression"]
    sent = notifications(50)
    for message in sent:
        assert client.send_message(message)
    assert client.flush(t(10))
    deflate_server.wait_for(lambda: len(deflate_server.texts()) >= len(sent), t(10), "every message")
    assert [json.loads(text) for text in deflate_server.texts()] == sent


def test_with_a_server_that_agrees_messages_go_compressed_both_ways_in_order(deflate_server, make_client) -> None:
    deflate_server.command(cmd="mode", quiet=False)
    received, changed, options = collecting()
    client = make_client(url=deflate_server.url, compression="deflate", **options)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["compression"] == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    sent = notifications(300) + [{"n": 300, "big": "x" * (1 << 20)}, "short"]
    for message in sent:
        assert client.send_message(message)
    assert client.flush(t(10))
    deflate_server.wait_for(lambda: len(deflate_server.texts()) >= len(sent), t(10), "every message")
    texts = deflate_server.texts()
    assert [json.loads(text) for text in texts[:-1]] == sent[:-1] and texts[-1] == "short"
    deflate_server.command(cmd="push", n=200)
    wait_for(lambda: len(received) >= 200, t(10), changed, "200 compressed messages from the server")
    assert received[:200] == [f"push-{i}" for i in range(200)]


def test_with_a_server_that_declines_messages_go_plain(server, make_client) -> None:
    server.command(cmd="mode", quiet=False)
    client = make_client(url=server.url, compression="deflate")
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["compression"] is None
    assert client.send_message("plain") and client.flush(t(5))
    server.wait_for(lambda: "plain" in server.texts(), t(5), "the plain message")


def test_without_compression_nothing_is_offered_and_the_server_sends_plain(deflate_server, make_client) -> None:
    deflate_server.command(cmd="mode", quiet=False)
    client = make_client(url=deflate_server.url, compression=None)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["compression"] is None
    assert client.send_message("hello") and client.flush(t(5))
    deflate_server.wait_for(lambda: "hello" in deflate_server.texts(), t(5), "the message")


@pytest.mark.parametrize("answer, why", [
    ("permessage-deflate; client_max_window_bits=8", "cannot compress with a window under 9 bits"),
    ("permessage-deflate; mystery=1", "does not know: mystery"),
    ("x-webkit-deflate-frame", "offered only permessage-deflate"),
])
def test_an_answer_this_client_cannot_honour_fails_the_upgrade_and_is_not_retried(hostile, make_client, log_watch,
                                                                                  answer, why) -> None:
    gave_up = gevent.event.Event()
    errors: list = []
    client = make_client(url=hostile(f"extension={answer}"), compression="deflate",
                         on_error=errors.append, on_give_up=lambda exc: gave_up.set())
    client.start()
    assert gave_up.wait(t(5))
    assert len(errors) == 1 and isinstance(errors[0], ExtensionMismatch) and why in str(errors[0])
    assert "not retrying after ExtensionMismatch" in log_watch.wait("not retrying").getMessage()


@pytest.fixture
def geventws_server():
    """gevent-websocket's server (tests/scripts/geventws_server.py): no extensions at all."""
    proc = Proc([sys.executable, str(TESTS / "scripts" / "geventws_server.py")], dict(os.environ))
    try:
        wait_until(lambda: proc.output, t(10), "gevent-websocket to listen")
        yield proc, f"ws://127.0.0.1:{int(proc.output[0].split()[1])}/ws"
    finally:
        proc.stop()


def test_gevent_websocket_which_has_no_extensions_gets_plain_frames_both_ways(geventws_server, make_client) -> None:
    proc, url = geventws_server
    received, changed, options = collecting()
    client = make_client(url=url, **options)  # compression on: the default
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["compression"] is None
    sent = [json.dumps(n) for n in notifications(100)] + ["x" * 100_000]
    for message in sent:
        assert client.send_message(message)
    wait_for(lambda: len(received) >= len(sent), t(10), changed, "every echo")
    assert received == sent
    assert "extensions permessage-deflate; client_max_window_bits" in [line.strip() for line in proc.output]


def test_an_extension_this_client_never_offered_fails_the_upgrade(hostile, make_client) -> None:
    gave_up = gevent.event.Event()
    errors: list = []
    client = make_client(url=hostile("extension=permessage-deflate"), compression=None,
                         on_error=errors.append, on_give_up=lambda exc: gave_up.set())
    client.start()
    assert gave_up.wait(t(5))
    assert isinstance(errors[0], ExtensionMismatch) and "offered none" in str(errors[0])


@pytest.mark.parametrize("mode, code", [("bomb", 1009), ("corrupt", 1002)])
def test_a_bomb_and_a_corrupt_stream_are_refused_with_their_close_codes(hostile, make_client, mode, code) -> None:
    url, output = hostile(mode, with_output=True)
    client = make_client(url=url, compression="deflate", max_message_size=1 << 20)
    client.start()
    with gevent.Timeout(t(10), AssertionError(f"the {mode} server saw no close frame")):
        while not any(line.startswith("close") for line in output):
            gevent.sleep(0.01)
    assert f"close {code}" in [line.strip() for line in output]
    assert client.status()["messages_received"] == 0


def test_a_server_killed_while_compressed_messages_are_in_flight_loses_and_corrupts_nothing(make_client) -> None:
    port = free_port()
    # Acknowledgements on: what the killed server's TCP took but it never processed is resent too
    # (without them, at-least-once stops at what the kernel acknowledged: see the fault matrix).
    first = ServerProcess(port, "--compression", "--ack").start()
    first.command(cmd="mode", quiet=False)
    client = make_client(url=first.url, compression="deflate", ack_timeout=t(1))
    client.start()
    assert client.wait_until_connected(t(5))
    count = 3000
    producer_done = gevent.event.Event()

    def produce() -> None:
        for i in range(count):
            client.send_message({"n": i, "text": "compressible " * 8})
            if i % 20 == 19:
                gevent.sleep(0.001)
        producer_done.set()

    producer = gevent.spawn(produce)
    first.wait_for(lambda: len(first.texts()) >= 300, t(10), "the first messages")
    first.kill()  # SIGKILL: compressed messages in flight, the compressor's context lost with it
    second = ServerProcess(port, "--compression", "--ack").start()
    try:
        second.command(cmd="mode", quiet=False)
        assert producer_done.wait(t(20))
        producer.join(t(5))
        assert client.flush(t(20))

        def seen() -> set:
            return {json.loads(text)["n"] for text in first.texts() + second.texts()}

        second.wait_for(lambda: seen() == set(range(count)), t(10), "every message at one server or the other")
        # Nothing corrupted: the new server inflated every resend (a stream compressed for the old
        # connection would have made it close with 1002/1007), and it saw each message's own text.
        assert all(json.loads(text)["text"] == "compressible " * 8 for text in second.texts())
        assert client.status()["compression"] is not None and client.reconnects == 1
        assert client.status()["messages_acked"] == count
    finally:
        second.stop()


def varied_json(size: int) -> str:
    """About ``size`` bytes of JSON that is not one repeated string (it compresses like real data)."""
    rows, total, i = [], 0, 0
    while total < size:
        row = json.dumps({"id": i, "user": f"user-{i * 7919 % 10007}", "amount": i * 31 % 9973 / 100,
                          "tags": [f"t{i % 13}", f"k{i * 3 % 17}"], "note": os.urandom(6).hex()})
        rows.append(row)
        total += len(row) + 1
        i += 1
    return "[" + ",".join(rows) + "]"


def test_an_8_mib_message_each_way_keeps_the_hub_turning(deflate_server, make_client) -> None:
    """Sent: compressed a slice at a time, the writer yielding between slices. Received: inflated a
    slice at a time, the reader yielding between slices (one call per frame held the hub 24-47 ms)."""
    deflate_server.command(cmd="mode", echo=True, quiet=True)
    received, changed, options = collecting()
    client = make_client(url=deflate_server.url, compression="deflate", max_message_size=32 << 20, **options)
    client.start()
    assert client.wait_until_connected(t(5))
    message = varied_json(8 << 20)
    gaps: list[tuple[float, float]] = []  # (when, how long the 1 ms timer waited)
    done = gevent.event.Event()

    def ticker() -> None:  # another greenlet that yields promptly: a 1 ms timer
        last = time.perf_counter()
        while not done.is_set():
            gevent.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now, now - last))
            last = now

    ticking = gevent.spawn(ticker)
    gevent.sleep(0.01)
    assert client.send_message(message)
    assert client.flush(t(20))
    written = time.perf_counter()
    wait_for(lambda: received, t(20), changed, "the 8 MiB echo")
    done.set()
    ticking.join(t(5))
    assert received[0] == message
    sending = max(gap for when, gap in gaps if when <= written)
    receiving = max(gap for when, gap in gaps if when > written)
    assert sending <= t(0.05), f"sending held the hub for {sending * 1000:.1f} ms"
    assert receiving <= t(0.05), f"receiving held the hub for {receiving * 1000:.1f} ms"


@pytest.fixture
def node_deflate_server():
    """The benchmarks' Node ws server (benchmarks/sink) with perMessageDeflate on."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed")
    from benchmarks.harness import ensure_node_deps, start_sink, stop

    ensure_node_deps()
    proc, port = start_sink(deflate=True)
    yield f"ws://127.0.0.1:{port}"
    stop(proc)


def test_node_ws_with_per_message_deflate_echoes_compressed_and_plain_messages(node_deflate_server, make_client) -> None:
    received, changed, options = collecting()
    client = make_client(url=f"{node_deflate_server}/echo", compression="deflate", **options)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["compression"].startswith("permessage-deflate")
    # ws compresses what it sends from 1 KiB on: the echoes come back both ways
    sent = [json.dumps({"n": i, "pad": "z" * (i * 37 % 3000)}) for i in range(200)]
    for message in sent:
        assert client.send_message(message)
    wait_for(lambda: len(received) >= len(sent), t(10), changed, "every echo from ws")
    assert received == sent
