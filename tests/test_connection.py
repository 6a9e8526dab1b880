"""Connecting, reconnecting, giving up: against a real server and the fault proxy."""

import time

import gevent
import pytest

from hermes_gevent import WebSocketClient
from hermes_gevent.errors import ConnectTimeout, HandshakeRejected

from .conftest import t, wait_until


def test_connects_sends_receives_and_closes_with_1000(server, make_client):
    server.command(cmd="mode", echo=True)
    got = []
    client = make_client(url=server.url, on_message=got.append)
    client.start()
    assert client.wait_until_connected(t(5))
    for i in range(20):
        assert client.send_message(f"m-{i}")
    client.send_message(b"\x00\x01")
    client.send_message({"op": "ping", "n": 1})
    wait_until(lambda: len(got) == 22, t(5), "echoes")
    assert got[:20] == [f"m-{i}" for i in range(20)]
    assert got[20] == b"\x00\x01" and got[21] == '{"op":"ping","n":1}'
    status = client.status()
    assert status["messages_sent"] == 22 and status["messages_received"] == 22
    assert status["state"] == "open" and status["connected"]
    assert client.stop() == 0
    close = server.wait_event(lambda e: e["ev"] == "close", t(5))
    assert close["code"] == 1000


def test_start_is_idempotent_and_returns_at_once(server, make_client):
    client = make_client(url=server.url)
    began = time.monotonic()
    client.start()
    client.start()
    assert time.monotonic() - began < t(0.5)
    assert client.wait_until_connected(t(5))
    gevent.sleep(t(0.2))
    assert len(server.of("connect")) == 1


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


def test_headers_are_called_anew_on_every_attempt(server, make_client):
    tokens = iter(f"token-{i}" for i in range(100))

    class Rotating(WebSocketClient):
        def headers(self):
            return {**super().headers(), "Authorization": f"Bearer {next(tokens)}"}

    client = make_client(Rotating, url=server.url, identifier="worker-1")
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="close", code=1012)
    server.wait_for(lambda: len(server.of("connect")) >= 2, t(5), "a second connection")
    seen = [e["headers"] for e in server.of("connect")]
    assert [h["Authorization"] for h in seen[:2]] == ["Bearer token-0", "Bearer token-1"]
    assert seen[0]["X-Hermes-Identifier"] == "worker-1"
    assert "X-Hermes-Last-Connected-At" not in seen[0]
    assert seen[1]["X-Hermes-Last-Connected-At"].endswith("Z")  # set after the first success


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


def test_reconnect_leaves_the_gave_up_state(server, make_client):
    server.command(cmd="mode", reject=403)
    gave_up = []
    client = make_client(url=server.url, on_give_up=gave_up.append)
    client.start()
    wait_until(lambda: gave_up, t(5), "give up on 403")
    assert isinstance(gave_up[0], HandshakeRejected) and gave_up[0].status == 403
    assert len(server.of("rejected")) == 1  # at once: no retries on 403
    server.command(cmd="mode", reject=None)
    client.reconnect()
    assert client.wait_until_connected(t(5))
    assert not client.status()["max_retries_reached"] and client.status()["retry_count"] == 0


@pytest.mark.parametrize("status, retried", [(401, False), (403, False), (404, False), (503, True), (429, True)])
def test_handshake_statuses(server, make_client, status, retried):
    server.command(cmd="mode", reject=status)
    client = make_client(url=server.url, retry_limit=3)
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "give up")
    assert len(server.of("rejected")) == (3 if retried else 1)


@pytest.mark.parametrize("code, retried", [(1001, True), (1011, True), (1012, True), (1008, False)])
def test_close_codes(server, make_client, code, retried):
    client = make_client(url=server.url, min_uptime=t(5))
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="close", code=code)
    if retried:
        server.wait_for(lambda: len(server.of("connect")) == 2, t(5), "reconnection")
        assert client.wait_until_connected(t(5))
    else:
        wait_until(lambda: client.status()["max_retries_reached"], t(5), "give up on 1008")
        gevent.sleep(t(0.3))
        assert len(server.of("connect")) == 1


def test_retry_count_resets_only_after_min_uptime(server, make_client):
    server.command(cmd="mode", close_on_open=1011)  # accepts, then closes at once
    client = make_client(url=server.url, retry_limit=5, min_uptime=t(1))
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "give up on a flapping server")
    assert len(server.of("connect")) == 5  # connected each time, yet never reset the count

    server.command(cmd="mode", close_on_open=None)
    client.reconnect()
    assert client.wait_until_connected(t(5))
    gevent.sleep(t(1.2))  # stays up longer than MIN_UPTIME
    server.command(cmd="close", code=1012)
    server.wait_for(lambda: len(server.of("connect")) == 7, t(5), "reconnection")
    assert client.wait_until_connected(t(5))
    assert client.status()["retry_count"] == 0


def test_stop_interrupts_a_backoff_wait_at_once(proxy_to, make_client):
    proxy = proxy_to(1)
    proxy.refuse()
    client = make_client(url=proxy.url, retry_delay=30, max_retry_delay=30)
    client.start()
    wait_until(lambda: client.status()["state"] == "backing_off", t(5), "backoff")
    began = time.monotonic()
    client.stop(timeout=5)
    assert time.monotonic() - began < t(0.5)
    assert client.status()["state"] == "stopped"
