"""Polite clients (issue 13, without proxies): Retry-After and close code 1013 against the
real server, MAX_SEND_RATE measured at the server, subprotocol negotiation, Origin. The
pure parts (the token bucket, the settings) are checked without a clock or a socket; the
delays' arithmetic is in test_retry.py."""

import json
import math
import random
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import gevent
import pytest
from flask import Flask

from hermes_gevent import ConfigError, Settings, WebSocketClient
from hermes_gevent.errors import SubprotocolMismatch
from hermes_gevent.flask import Hermes
from hermes_gevent.headers import handshake_headers, offered_subprotocols
from hermes_gevent.ratelimit import TokenBucket
from hermes_gevent.upgrade import chosen_subprotocol, headers_of

from .support import Recorder, t, wait_until


# -- the token bucket: pure ---------------------------------------------------------------

def test_the_bucket_starts_full_with_one_seconds_worth_and_refills_at_the_rate():
    bucket = TokenBucket(500, now=10.0)
    assert bucket.burst == 500 and bucket.available(10.0) == 500
    bucket.take(500, 10.0)
    assert bucket.available(10.0) == 0 and bucket.wait(10.0) == pytest.approx(1 / 500)
    assert bucket.available(10.0 + 1 / 500) == 1
    assert bucket.available(10.1) == 50
    assert bucket.available(1000.0) == 500  # however long it was idle: one second's worth
    assert bucket.wait(1000.0) == 0.0


def test_a_rate_below_one_a_second_still_lets_one_message_go():
    bucket = TokenBucket(0.5, now=0.0)
    assert bucket.burst == 1 and bucket.available(0.0) == 1
    bucket.take(1, 0.0)
    assert bucket.wait(0.0) == pytest.approx(2.0) and bucket.available(1.999) == 0 and bucket.available(2.0) == 1


def test_taking_more_than_is_available_is_a_bug_not_a_debt():
    bucket = TokenBucket(10, now=0.0)
    with pytest.raises(ValueError):
        bucket.take(11, 0.0)
    with pytest.raises(ValueError):
        bucket.wait(0.0, count=11)
    assert bucket.available(0.0) == 10  # unchanged


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan"), "10", True, None])
def test_a_bucket_needs_a_positive_finite_rate(rate):
    with pytest.raises(ConfigError):
        TokenBucket(rate, now=0.0)


@pytest.mark.parametrize("rate", [0.5, 7, 500, 12345.6])
def test_a_greedy_sender_never_exceeds_rate_times_t_plus_the_burst_and_keeps_up_with_the_rate(rate):
    rng = random.Random(rate)
    bucket = TokenBucket(rate, now=0.0)
    clock, sent = 0.0, 0
    while clock < 20.0:
        clock += rng.choice([0.0, 1e-4, 0.003, 0.05, bucket.wait(clock)])  # writes and waits of any length
        n = bucket.available(clock)
        if n:
            n = rng.randint(1, n)  # a batch of any size up to what is available
            bucket.take(n, clock)
            sent += n
        assert sent <= rate * clock + bucket.burst + 1e-6
    assert sent >= rate * clock - bucket.burst  # waiting exactly bucket.wait() loses nothing


# -- settings and the request: pure ----------------------------------------------------------

@pytest.mark.parametrize("rate", [0, -5, float("inf"), "fast", True])
def test_max_send_rate_is_validated(rate):
    with pytest.raises(ConfigError, match="MAX_SEND_RATE must be a positive number of messages per second"):
        WebSocketClient(url="ws://127.0.0.1:9/ws", max_send_rate=rate)


@pytest.mark.parametrize("value, text", [
    ("chat.v2", "must be a list of names"),
    (["chat v2"], "not a valid token"),
    (["chat\r\nX-Evil: 1"], "not a valid token"),
    ([""], "not a valid token"),
    ([2], "not a valid token"),
    (["a", "a"], "twice"),
])
def test_subprotocols_are_validated(value, text):
    with pytest.raises(ConfigError, match=f"SUBPROTOCOLS .*{text}") as info:
        WebSocketClient(url="ws://127.0.0.1:9/ws", subprotocols=value)
    assert "\n" not in str(info.value)


def test_subprotocols_are_kept_as_an_immutable_tuple_from_a_keyword_or_a_class_constant():
    class Chat(WebSocketClient):
        SUBPROTOCOLS = ["chat.v2", "chat.v1"]

    assert Chat(url="ws://127.0.0.1:9/ws").settings.SUBPROTOCOLS == ("chat.v2", "chat.v1")
    settings = WebSocketClient(url="ws://127.0.0.1:9/ws", subprotocols=["a"], max_send_rate=2.5).settings
    assert (settings.SUBPROTOCOLS, settings.MAX_SEND_RATE) == (("a",), 2.5)
    hash(settings)
    assert (Settings().SUBPROTOCOLS, Settings().MAX_SEND_RATE) == ((), None)
    assert WebSocketClient(url="ws://127.0.0.1:9/ws", subprotocols=None).settings.SUBPROTOCOLS == ()


@pytest.mark.parametrize("origin", ["https://app.example\r\nX-Evil: 1", "https://caf\u00e9.example", 5, b"x"])
def test_origin_is_checked_like_any_header_value_without_echoing_it(origin):
    with pytest.raises(ConfigError, match="origin|Origin") as info:
        WebSocketClient(url="ws://127.0.0.1:9/ws", origin=origin)
    assert "X-Evil" not in str(info.value) and "\n" not in str(info.value)


def test_the_request_carries_origin_and_the_offer_in_order_of_preference():
    headers = handshake_headers({"X-A": "1", "origin": "https://old"}, "https://new", ("chat.v2", "chat.v1"))
    assert headers == {"X-A": "1", "Origin": "https://new", "Sec-WebSocket-Protocol": "chat.v2, chat.v1"}
    assert offered_subprotocols(headers) == ["chat.v2", "chat.v1"]
    assert handshake_headers({"Origin": "https://kept"}, None, ()) == {"Origin": "https://kept"}


def test_the_servers_choice_must_be_one_we_offered_exactly():
    answer = headers_of(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"sec-websocket-protocol:  chat.v1 \r\nRetry-After: 1\r\nRetry-After: 2\r\n\r\n")
    assert answer["retry-after"] == "1, 2" and answer["upgrade"] == "websocket"
    assert chosen_subprotocol(answer, ["chat.v2", "chat.v1"]) == "chat.v1"
    assert chosen_subprotocol({}, ["chat.v2"]) is None  # none chosen: allowed, status() says None
    for offered in (["Chat.V1"], [], ["chat.v2"]):
        with pytest.raises(SubprotocolMismatch):
            chosen_subprotocol(answer, offered)


# -- Retry-After and 1013 against the real server ---------------------------------------------

def _rejections(server):
    return len(server.of("rejected"))


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_from_a_real_server_sets_the_next_delay_and_is_logged_once(server, make_client, log_watch, form):
    wait = max(2, math.ceil(t(2)))  # whole seconds: the header's resolution
    if form == "seconds":
        value, least = str(wait), wait
    else:
        # A date has whole seconds: one second further, so at least ``wait`` remains when it comes.
        value, least = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=wait + 1), usegmt=True), wait
    server.command(cmd="mode", reject=503, retry_after=value)
    client = make_client(url=server.url, retry_delay=t(0.05), max_retry_delay=wait)  # backoff alone: 0.05 s
    client.start()
    server.wait_for(lambda: _rejections(server) >= 1, t(5), "the first rejection")
    first = time.monotonic()
    server.wait_for(lambda: _rejections(server) >= 2, wait + 1 + t(5), "the second attempt")
    gap = time.monotonic() - first
    assert least - 0.05 <= gap <= wait + 1 + t(1), gap
    lines = [r.getMessage() for r in log_watch.records]
    asked = [line for line in lines if "Retry-After" in line]
    # Said once, in the line that announces the wait; a later decision says it again only if the ask
    # still lengthens the wait (the date form's second answer names a moment already past).
    assert asked and all(line.startswith("reconnecting in") for line in asked), asked
    first = next(line for line in lines if line.startswith("reconnecting in"))
    assert "the server asked to wait" in first and "(Retry-After)" in first, first
    assert client.status()["retry_count"] >= 1 and not client.connected


def test_a_huge_retry_after_is_capped_at_ten_times_max_retry_delay(server, make_client):
    server.command(cmd="mode", reject=429, retry_after="86400")
    cap = 10 * t(0.1)
    client = make_client(url=server.url, retry_delay=t(0.05), max_retry_delay=t(0.1))
    client.start()
    server.wait_for(lambda: _rejections(server) >= 1, t(5), "the first rejection")
    first = time.monotonic()
    server.wait_for(lambda: _rejections(server) >= 2, cap + t(5), "the second attempt, at the cap")
    assert cap - 0.05 <= time.monotonic() - first <= cap + t(1)
    server.command(cmd="mode", reject=None)
    assert client.wait_until_connected(cap + t(5))  # and then it connects like any client


def test_close_code_1013_waits_at_least_max_retry_delay(server, make_client, log_watch):
    longest = t(1)
    client = make_client(url=server.url, retry_delay=t(0.05), max_retry_delay=longest, min_uptime=t(0.1))
    assert client.start().wait_until_connected(t(5))
    gevent.sleep(t(0.2))  # past MIN_UPTIME: a success; the backoff alone would wait 0.05 s
    closing = time.monotonic()
    server.command(cmd="close", code=1013, reason="overloaded")
    server.wait_for(lambda: len(server.of("connect")) >= 2, longest + t(5), "the next connection")
    gap = time.monotonic() - closing
    assert longest <= gap <= longest + t(1), gap
    assert server.of("close")[0]["sent"] == 1013
    log_watch.wait("close code 1013")


# -- MAX_SEND_RATE, measured at the server -------------------------------------------------------

#: How much later than the client wrote it the server may have read (and stamped) the first
#: message: every later arrival is measured from that stamp.
FIRST_READ_SLACK = 0.1


def assert_within_rate(events, rate):
    """Never more than one second's worth (the burst) plus ``rate`` a second since the first
    message arrived: checked at every arrival the server stamped. Returns the arrival times."""
    at = [e["at"] - events[0]["at"] for e in events]
    slack = t(FIRST_READ_SLACK)
    for i, moment in enumerate(at):
        assert i + 1 <= rate + rate * (moment + slack), f"{i + 1} messages {moment:.3f}s after the first"
    return at

@pytest.mark.parametrize("acks", [False, True])
def test_max_send_rate_holds_at_the_server_over_seconds_without_holding_the_hub(server, make_client, acks, frozen_heap):
    rate, steady = 500, 3  # 3 s at the rate after the first second's burst
    total = rate * (steady + 1)
    server.command(cmd="mode", stamp=True, ack=acks)
    options = {"ack_timeout": t(30)} if acks else {}
    client = make_client(url=server.url, max_send_rate=rate, **options)
    assert client.start().wait_until_connected(t(5))
    gaps, ticking = [], [True]

    def ticker():
        last = time.monotonic()
        while ticking[0]:
            gevent.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    tick = gevent.spawn(ticker)
    for i in range(total):  # far faster than the rate: the queue absorbs them
        assert client.send_message({"n": i} if acks else f"n:{i}")
    assert client.queue_size > total - 2 * rate
    try:
        server.wait_for(lambda: len(server.of("msg")) >= total, t(steady + 1) + t(10), "every message")
    finally:
        ticking[0] = False
        tick.join(t(1))
    events = server.of("msg")
    texts = [e["text"] for e in events[:total]]
    numbers = [json.loads(text)["n"] if acks else int(text[2:]) for text in texts]
    assert numbers == list(range(total))  # in order, once
    at = assert_within_rate(events, rate)
    measured = (total - 1 - rate) / (at[-1] - at[rate])  # after the burst: the steady rate
    print(f"MAX_SEND_RATE={rate}: measured {measured:.1f}/s over {at[-1] - at[rate]:.2f}s, "
          f"burst of {sum(1 for a in at if a < 0.1)} in the first 0.1s, longest hub gap {max(gaps) * 1000:.1f} ms")
    assert rate * 0.9 <= measured <= rate * 1.1
    assert max(gaps) < t(0.1)  # the waits for tokens are timers: a 10 ms ticker stays on time


def test_a_throttled_queue_overflows_by_its_strategy(server, make_client):
    """The rate holds messages back; the queue absorbs them up to MAX_QUEUE_SIZE, and past it
    the overflow strategy decides, as when the server is away."""
    rate, size = 20, 50
    drops = Recorder()
    client = make_client(url=server.url, max_send_rate=rate, max_queue_size=size,
                         queue_overflow_strategy="drop_newest", on_drop=drops)
    assert client.start().wait_until_connected(t(5))
    accepted = []
    for i in range(300):  # some 500 a second, 25 times the rate: unthrottled, the sender keeps up
        if client.send_message(f"n:{i}"):
            accepted.append(i)
        gevent.sleep(0.002)
    dropped = 300 - len(accepted)
    assert dropped > 0 and client.status()["drops_by_reason"] == {"overflow": dropped} and len(drops.calls) == dropped
    assert client.flush(t(5) + size / rate)
    server.wait_for(lambda: len(server.texts()) >= len(accepted), t(5), "the accepted messages")
    assert server.texts() == [f"n:{i}" for i in accepted]


def test_resends_count_toward_max_send_rate(server, make_client):
    """With acknowledgements on, what ACK_TIMEOUT sends again takes tokens like a first send:
    the server that throttles us sees the rate, whatever we send it."""
    rate, count = 200, 300
    server.command(cmd="mode", stamp=True, ack=True, ack_drop=True)  # record, acknowledge nothing
    client = make_client(url=server.url, max_send_rate=rate, ack_timeout=t(0.3))
    assert client.start().wait_until_connected(t(5))
    for i in range(count):
        client.send_message({"n": i})
    server.wait_for(lambda: len(server.of("msg")) >= 2 * count, t(10), "every message, and each one again")
    server.command(cmd="mode", ack_drop=False)
    assert client.flush(t(10))
    events = server.of("msg")
    assert_within_rate(events, rate)
    assert client.status()["messages_resent"] >= count
    assert sorted({json.loads(e["text"])["n"] for e in events}) == list(range(count))


def test_max_send_rate_and_subprotocols_from_flask_config_and_the_check_command(server):
    server.command(cmd="mode", subprotocol="first")
    app = Flask("polite")
    app.config.update(HERMES_WS_URL=server.url, HERMES_AUTOSTART=False, HERMES_MAX_SEND_RATE=50,
                      HERMES_SUBPROTOCOLS=["chat.v2"])
    Hermes(app)
    try:
        assert (app.hermes.settings.MAX_SEND_RATE, app.hermes.settings.SUBPROTOCOLS) == (50, ("chat.v2",))
        result = app.test_cli_runner().invoke(args=["hermes", "check"])
        assert result.exit_code == 0 and "ms, subprotocol chat.v2)" in result.output, result.output
    finally:
        app.hermes.stop(timeout=t(2))


# -- subprotocols and Origin against the real server ---------------------------------------------

@pytest.mark.parametrize("mode, chosen", [("first", "chat.v2"), ("chat.v1", "chat.v1"), (None, None)])
def test_the_offered_subprotocols_and_the_one_the_server_chose(server, make_client, mode, chosen):
    server.command(cmd="mode", subprotocol=mode)
    client = make_client(url=server.url, subprotocols=["chat.v2", "chat.v1"])
    assert client.status()["subprotocol"] is None
    assert client.start().wait_until_connected(t(5))
    connect = server.wait_event(lambda e: e["ev"] == "connect", t(5))
    assert connect["headers"]["Sec-WebSocket-Protocol"] == "chat.v2, chat.v1" and connect["subprotocol"] == chosen
    assert client.status()["subprotocol"] == chosen and client.subprotocol == chosen
    client.stop(timeout=t(2))
    assert client.status()["subprotocol"] is None


def test_no_subprotocols_offered_sends_no_offer(server, make_client):
    client = make_client(url=server.url)
    assert client.start().wait_until_connected(t(5))
    connect = server.wait_event(lambda e: e["ev"] == "connect", t(5))
    assert "Sec-WebSocket-Protocol" not in connect["headers"] and client.status()["subprotocol"] is None


@pytest.mark.parametrize("offered", [["chat.v2", "chat.v1"], []])
def test_a_subprotocol_we_did_not_offer_fails_the_handshake_and_is_not_retried(server, make_client, log_watch, offered):
    server.command(cmd="mode", subprotocol="chat.v9")
    gave_up = Recorder()
    client = make_client(url=server.url, subprotocols=offered, on_give_up=gave_up)
    client.start()
    [exc] = gave_up.wait(1)
    assert isinstance(exc, SubprotocolMismatch) and exc.chosen == "chat.v9" and exc.offered == tuple(offered)
    line = log_watch.wait("not retrying after SubprotocolMismatch").getMessage()
    assert "the server chose subprotocol 'chat.v9', which this client did not offer" in line
    assert client.state.value == "gave_up" and not client.connected and client.status()["subprotocol"] is None
    server.wait_for(lambda: server.of("close"), t(5), "the server to see the connection end")
    assert len(server.of("connect")) == 1  # one attempt, no retry
    server.command(cmd="mode", subprotocol="first")
    client.reconnect()  # after the server's fix, reconnect() tries again
    assert client.wait_until_connected(t(5))
    assert client.status()["subprotocol"] == ("chat.v2" if offered else None)


@pytest.mark.parametrize("options, expected", [
    ({"origin": "https://app.example.com"}, "https://app.example.com"),
    ({"headers": {"Origin": "https://from-headers.example"}}, "https://from-headers.example"),
    ({"origin": "https://wins.example", "headers": {"origin": "https://loses.example"}}, "https://wins.example"),
    ({}, "http://127.0.0.1:{port}"),  # websocket-client's default, as before
])
def test_origin_is_sent_once(server, make_client, options, expected):
    client = make_client(url=server.url, **options)
    assert client.start().wait_until_connected(t(5))  # two Origin lines would have been refused before sending
    connect = server.wait_event(lambda e: e["ev"] == "connect", t(5))
    origins = [value for name, value in connect["headers"].items() if name.lower() == "origin"]
    assert origins == [expected.format(port=server.port)]


def test_origin_can_come_from_an_overridable_method_read_on_every_attempt(server, make_client):
    class Tenant(WebSocketClient):
        calls = 0

        def origin(self):
            Tenant.calls += 1
            return f"https://tenant{Tenant.calls}.example"

    client = make_client(Tenant, url=server.url)
    assert client.start().wait_until_connected(t(5))
    client.reconnect()
    server.wait_for(lambda: len(server.of("connect")) >= 2, t(5), "a second connection")
    assert [e["headers"]["Origin"] for e in server.of("connect")[:2]] == ["https://tenant1.example",
                                                                         "https://tenant2.example"]
    wait_until(lambda: client.connected, t(5), "the client to connect again")


def test_stop_flushes_at_the_rate_through_its_whole_budget_with_pings_going_on(peer, make_client):
    """stop()'s flush under MAX_SEND_RATE takes seconds: the link is still watched meanwhile
    (pings go on), and the connection is not declared lost at the next ping tick."""
    client = make_client(connector=peer.connector, url=peer.url, max_send_rate=20, ping_interval=t(0.2))
    client.start()
    assert client.wait_until_connected(t(5))
    peer.wait_messages(0)
    for i in range(60):
        client.send_message(f"m-{i}")  # 20 go at once (the burst), then 20 a second
    budget = t(1.5)
    left = client.stop(timeout=budget)
    sent = len(peer.messages)
    assert sent >= 20 + 20 * 1.0, f"the flush ended early: {sent} sent in a {budget:g} s budget"
    assert left == 60 - sent
    assert peer.wait_closed(t(5)) == 1000  # closed by stop(), not lost
