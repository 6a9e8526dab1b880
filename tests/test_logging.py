"""Logging: silent by default, the original format when switched on, secrets never shown."""

import logging
import subprocess
import sys

import pytest

from hermes_gevent import HandshakeRejected
from hermes_gevent.logs import HermesFormatter, redact_url

from .conftest import t, wait_until

SECRET = "s3cr3t-T0KEN-value"
PASSWORD = "hunter2-password"


def test_only_a_null_handler_by_default():
    code = (
        "import logging, hermes_gevent\n"
        "h = logging.getLogger('hermes_gevent').handlers\n"
        "assert [type(x).__name__ for x in h] == ['NullHandler'], h\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=t(30))


def test_hermes_ws_log_switches_on_stderr_in_the_original_format(server):
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import sys\n"
        "from hermes_gevent import WebSocketClient\n"
        "class MyClient(WebSocketClient): pass\n"
        f"c = MyClient(url={server.url!r}); c.start(); assert c.wait_until_connected(10); c.stop(5)\n"
    )
    env = {"HERMES_WS_LOG": "true", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=t(30))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    connected = [line for line in lines if "connected to" in line]
    assert connected, lines
    # {INFO}: [MyClient][14:30:15]: connected to ws://...
    import re

    assert re.fullmatch(r"\{INFO\}: \[MyClient\]\[\d\d:\d\d:\d\d\]: connected to ws://127\.0\.0\.1:\d+/ws", connected[0])


def test_formatter_maps_warning_to_warn():
    record = logging.LogRecord("hermes_gevent.client", logging.WARNING, "x", 1, "careful", None, None)
    record.client = "Mine"
    assert HermesFormatter().format(record).startswith("{WARN}: [Mine][")


@pytest.mark.parametrize(
    "url, hidden",
    [
        ("wss://user:pw-123456@host/path", "pw-123456"),
        ("ws://host/path?token=abcdef123&room=1", "abcdef123"),
        ("ws://host/path?api_key=zzzz9999", "zzzz9999"),
        ("ws://host/path?access_token=qqqq1111&x=2", "qqqq1111"),
    ],
)
def test_redact_url(url, hidden):
    redacted = redact_url(url)
    assert hidden not in redacted and "***" in redacted


def test_secrets_never_reach_logs_status_or_exceptions(server, make_client, caplog_hermes):
    """DEBUG logging on, a token in a header and in the URL query, a password in the URL,
    and a rejected handshake: no line, status value or exception text shows them."""
    url = server.url.replace("ws://", f"ws://admin:{PASSWORD}@") + f"?token={SECRET}&room=7"
    errors = []
    client = make_client(url=url, headers={"Authorization": f"Bearer {SECRET}", "Cookie": f"sid={SECRET}"},
                         on_error=errors.append, on_message=lambda m: None)
    client.start()
    assert client.wait_until_connected(t(5))
    client.send_message("hello")
    server.command(cmd="push", n=1)
    wait_until(lambda: client.status()["messages_received"] == 1, t(5), "a message")
    seen = server.of("connect")[0]
    assert seen["headers"]["Authorization"] == f"Bearer {SECRET}"  # it was really sent
    server.command(cmd="mode", reject=401)
    server.command(cmd="close", code=1012)
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "give up on 401")
    assert any(isinstance(e, HandshakeRejected) for e in errors)

    texts = [r.getMessage() for r in caplog_hermes.records]
    texts += [caplog_hermes.text, repr(client.status()), *map(str, errors), *map(repr, errors)]
    assert any("connected to" in text for text in texts)  # the log did talk
    assert any(r.levelno == logging.DEBUG for r in caplog_hermes.records)
    for text in texts:
        assert SECRET not in text and PASSWORD not in text, text


def test_message_bodies_only_at_debug_and_truncated(server, make_client, caplog):
    caplog.set_level(logging.INFO, logger="hermes_gevent")
    client = make_client(url=server.url, on_message=lambda m: None)
    client.start()
    assert client.wait_until_connected(t(5))
    server.command(cmd="send", text="B" * 5000)
    wait_until(lambda: client.status()["messages_received"] == 1, t(5), "a message")
    assert not any("BBBB" in r.getMessage() for r in caplog.records)
    caplog.set_level(logging.DEBUG, logger="hermes_gevent")
    server.command(cmd="send", text="C" * 5000)
    wait_until(lambda: client.status()["messages_received"] == 2, t(5), "a message")
    bodies = [r.getMessage() for r in caplog.records if "CCCC" in r.getMessage()]
    assert len(bodies) == 1 and len(bodies[0]) < 400 and "+4800 more" in bodies[0]
