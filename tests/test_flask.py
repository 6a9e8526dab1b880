"""The Flask extension with Flask's test client and CLI runner, against a real server."""

import json
import logging

import pytest
from flask import Flask, current_app

from hermes_gevent import ConfigError, WebSocketClient
from hermes_gevent.flask import Hermes, connected, disconnected, gave_up, message_dropped, message_received

from .conftest import FAST, free_port, t, wait_until


def config_for(url, **extra):
    config = {f"HERMES_{k.upper()}": v for k, v in FAST.items()}
    config["HERMES_DEFAULT_RETRY_DELAY"] = config.pop("HERMES_RETRY_DELAY")
    config.update(HERMES_WS_URL=url, **extra)
    return config


@pytest.fixture
def make_app():
    apps = []

    def make(url, hermes=None, **extra):
        app = Flask(f"app{len(apps)}")
        app.config.update(config_for(url, **extra))
        hermes = hermes or Hermes()
        hermes.init_app(app)
        apps.append(app)
        return app, hermes

    yield make
    for app in apps:
        app.hermes.stop(timeout=t(2))


def test_init_app_registers_one_client_per_app(server, make_app):
    app, hermes = make_app(server.url)
    assert app.extensions["hermes"].client is app.hermes
    assert isinstance(app.hermes, WebSocketClient)
    assert app.config["HERMES_MAX_QUEUE_SIZE"] == 10000 and app.config["HERMES_AUTOSTART"] is True
    with pytest.raises(RuntimeError, match="already initialized"):
        hermes.init_app(app)
    other, _ = make_app(server.url, hermes=hermes)  # the same extension on a second app (factory)
    assert other.hermes is not app.hermes
    assert app.hermes.wait_until_connected(t(5)) and other.hermes.wait_until_connected(t(5))
    server.wait_for(lambda: len(server.of("connect")) == 2, t(5), "one connection per app")


def test_settings_come_from_config(server, make_app):
    app, _ = make_app(server.url, HERMES_MAX_QUEUE_SIZE=7, HERMES_QUEUE_OVERFLOW_STRATEGY="drop_newest",
                      HERMES_WS_IDENTIFIER="billing")
    settings = app.hermes.settings
    assert (settings.MAX_QUEUE_SIZE, settings.QUEUE_OVERFLOW_STRATEGY) == (7, "drop_newest")
    server.wait_event(lambda e: e["ev"] == "connect", t(5))
    assert server.of("connect")[0]["headers"]["X-Hermes-Identifier"] == "billing"


@pytest.mark.parametrize(
    "extra, named",
    [
        (dict(HERMES_WS_URL=None), "HERMES_WS_URL"),
        (dict(HERMES_WS_URL="http://127.0.0.1:1/"), "ws://"),
        (dict(HERMES_QUEUE_OVERFLOW_STRATEGY="drop_all"), "QUEUE_OVERFLOW_STRATEGY"),
        (dict(HERMES_CONNECT_TIMEOUT=0), "CONNECT_TIMEOUT"),
    ],
)
def test_bad_configuration_fails_at_init_app(monkeypatch, extra, named):
    monkeypatch.delenv("HERMES_WS_URL", raising=False)
    app = Flask("bad")
    app.config.update(config_for("ws://127.0.0.1:1/ws"))
    app.config.update(extra)
    with pytest.raises(ConfigError, match=named):
        Hermes(app)
    assert "hermes" not in app.extensions


def test_sending_from_a_request_handler(server, make_app):
    app, _ = make_app(server.url)

    @app.post("/send")
    def send():
        return {"accepted": current_app.hermes.send_message({"n": 1})}

    assert app.hermes.wait_until_connected(t(5))
    assert app.test_client().post("/send").get_json() == {"accepted": True}
    server.wait_for(lambda: server.texts() == ['{"n":1}'], t(5), "the message")


def test_handlers_run_in_an_app_context_in_order_and_survive_errors(server, make_app, caplog):
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    hermes = Hermes()
    seen = []

    @hermes.on_message
    def first(message):
        seen.append(("first", message, current_app.name))
        if message == "push-1":
            raise ValueError("bad message")

    @hermes.on_message
    def second(message):
        seen.append(("second", message, current_app.name))

    app, _ = make_app(server.url, hermes=hermes)
    assert app.hermes.wait_until_connected(t(5))
    server.command(cmd="push", n=3)
    wait_until(lambda: len(seen) == 6, t(5), "both handlers for three messages")
    assert seen == [(h, f"push-{i}", app.name) for i in range(3) for h in ("first", "second")]
    assert app.hermes.status()["handler_errors"] == 1
    assert any("first" in r.getMessage() and r.exc_info for r in caplog.records)


def test_handlers_in_a_bounded_pool(server, make_app):
    import gevent

    hermes = Hermes()
    running, peak, done = [0], [0], []

    @hermes.on_message
    def slow(message):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        gevent.sleep(t(0.05))
        running[0] -= 1
        done.append(message)

    app, _ = make_app(server.url, hermes=hermes, HERMES_HANDLER_POOL_SIZE=3)
    assert app.hermes.wait_until_connected(t(5))
    server.command(cmd="push", n=12)
    wait_until(lambda: len(done) == 12, t(5), "all handlers")
    assert peak[0] == 3


def test_signals(server, make_app):
    events = []
    receivers = {
        connected: lambda sender: events.append(("connected", sender.name)),
        disconnected: lambda sender, code, reason: events.append(("disconnected", code)),
        message_received: lambda sender, message: events.append(("message", message)),
        message_dropped: lambda sender, message, reason: events.append(("dropped", message, reason)),
        gave_up: lambda sender, error: events.append(("gave_up", type(error).__name__)),
    }
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    try:
        app, _ = make_app(server.url, HERMES_MAX_QUEUE_SIZE=1, HERMES_QUEUE_OVERFLOW_STRATEGY="drop_newest")
        assert app.hermes.wait_until_connected(t(5))
        server.command(cmd="push", n=1)
        wait_until(lambda: ("message", "push-0") in events, t(5), "message_received")
        server.command(cmd="close", code=1008)
        wait_until(lambda: ("gave_up", "ConnectionClosed") in events, t(5), "gave_up")
        app.hermes.send_message("a")
        app.hermes.send_message("b")
        wait_until(lambda: ("dropped", "b", "overflow") in events, t(5), "message_dropped")
        assert events[0] == ("connected", app.name) and ("disconnected", 1008) in events
    finally:
        for signal, receiver in receivers.items():
            signal.disconnect(receiver)


def test_cli_check_reports_the_round_trip(server, make_app):
    app, _ = make_app(server.url, HERMES_AUTOSTART=False)
    result = app.test_cli_runner().invoke(args=["hermes", "check"])
    assert result.exit_code == 0, result.output
    assert "OK: connected to" in result.output and "ping round trip" in result.output


def test_cli_check_fails_with_a_clear_message(make_app):
    app, _ = make_app(f"ws://127.0.0.1:{free_port()}/ws", HERMES_AUTOSTART=False)
    result = app.test_cli_runner().invoke(args=["hermes", "check", "--timeout", "2"])
    assert result.exit_code != 0
    assert "handshake with ws://127.0.0.1" in result.output and "failed" in result.output


def test_cli_send(server, make_app):
    app, _ = make_app(server.url, HERMES_AUTOSTART=False)
    result = app.test_cli_runner().invoke(args=["hermes", "send", "hello from the cli"])
    assert result.exit_code == 0, result.output
    server.wait_for(lambda: server.texts() == ["hello from the cli"], t(5), "the message")


def test_health_endpoint(server, make_app):
    secret = "tok-9f8e7d6c5b4a"
    app, _ = make_app(server.url + f"?token={secret}", HERMES_HEALTH_PATH="/healthz")
    assert app.hermes.wait_until_connected(t(5))
    http = app.test_client()
    response = http.get("/healthz")
    assert response.status_code == 200 and response.get_json()["healthy"] is True
    server.kill()
    wait_until(lambda: not app.hermes.connected, t(5), "disconnection")
    response = http.get("/healthz")
    assert response.status_code == 503 and response.get_json()["connected"] is False
    assert secret not in response.get_data(as_text=True)
    server.start()


def test_no_health_endpoint_by_default(server, make_app):
    app, _ = make_app(server.url)
    assert app.test_client().get("/healthz").status_code == 404


def test_example_app_routes(server):
    from flask_example import create_app

    app = create_app(config_for(server.url))
    try:
        assert app.hermes.wait_until_connected(t(5))
        http = app.test_client()
        assert http.post("/notify", json={"message": "hi"}).get_json()["accepted"] is True
        server.wait_for(lambda: server.texts(), t(5), "the notification")
        assert json.loads(server.texts()[0])["message"] == "hi"
        server.command(cmd="send", text=json.dumps({"operation": "notification", "message": "hello"}))
        wait_until(lambda: http.get("/messages").get_json(), t(5), "the inbox")
        assert http.get("/messages").get_json()[0]["message"] == "notification: hello"
        assert http.get("/status").get_json()["connected"] is True
        assert http.post("/notify", json={}).status_code == 400
        assert b"hermes_gevent example" in http.get("/").data
    finally:
        app.hermes.stop(t(2))
