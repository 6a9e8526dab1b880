"""Nothing but a valid header, and a clean request line, leaves the client: checked before
anything is sent, with errors that name the header or setting and never echo the value."""

import pytest

from hermes_gevent import WebSocketClient
from hermes_gevent.errors import ConfigError
from hermes_gevent.headers import check_header, check_headers, check_request, check_url

from .support import t, wait_until

INJECTION = "evil\r\nX-Injected: yes"
BAD_VALUES = [INJECTION, "a\nb", "a\rb", "a\x00b", "a\x07b", "caf\u00e9", "\u2603", "a\x7fb"]


@pytest.mark.parametrize("value", ["plain", "with space and\ttab", "!#$%&'*+-.^_`|~ \"quoted\", (x); y=z", ""])
def test_visible_ascii_values_pass(value):
    check_header("X-Good_Name.1", value)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_line_breaks_controls_and_non_ascii_are_refused_without_echoing_the_value(value):
    with pytest.raises(ConfigError) as info:
        check_header("X-Token", value)
    message = str(info.value)
    assert "X-Token" in message and value not in message and "\n" not in message


@pytest.mark.parametrize("name", ["Bad Name", "X-A:", "X\r\nY", "", "caf\u00e9", "X(A)"])
def test_names_must_be_tokens(name):
    with pytest.raises(ConfigError, match="not a valid HTTP token") as info:
        check_header(name, "v")
    assert "\n" not in str(info.value) and "\r" not in str(info.value)


@pytest.mark.parametrize("name", ["Host", "upgrade", "Connection", "Content-Length", "Transfer-Encoding",
                                  "Sec-WebSocket-Key", "sec-websocket-protocol"])
def test_the_handshakes_own_headers_cannot_be_set(name):
    with pytest.raises(ConfigError, match="written by the WebSocket handshake itself"):
        check_header(name, "v")


def test_a_request_line_by_line_only_carries_our_headers_and_the_handshakes():
    request = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nHost: h\r\nX-Ours: 1\r\nCookie: a=b\r\n\r\n"
    check_request(request, ["X-Ours"])
    for bad in ("Cookie: a=x\r\nX-Injected: yes", "X-Ours: 1", "Bad line", "X-Ours: caf\u00e9"):
        with pytest.raises(ConfigError, match="unexpected or invalid header line"):
            check_request(request.replace("Cookie: a=b", bad), ["X-Ours"])


def test_numbers_are_sent_as_text_other_types_are_refused():
    check_headers({"X-Version": 2, "X-Ratio": 0.5})
    for value in (None, b"bytes", ["x"], True):
        with pytest.raises(ConfigError, match="must have a str value"):
            check_header("X-A", value)
    with pytest.raises(ConfigError, match="mapping"):
        check_headers([("X-A", "b")])


@pytest.mark.parametrize("url", ["ws://host/a b", "ws://host/a\tb", "ws://host/\r\nX: y", "ws://host/\x00", " ws://host/",
                                 "ws://host/\x85", "ws://h\u00e9st/\u2028"])
def test_urls_with_whitespace_or_controls_are_refused(url):
    with pytest.raises(ConfigError, match="^url contains whitespace"):
        check_url(url)


def test_a_url_that_is_not_text_is_a_config_error():
    with pytest.raises(ConfigError, match="url must be a str"):
        check_url(None)


@pytest.mark.parametrize("options, header", [
    (dict(identifier=INJECTION), "X-Hermes-Identifier"),
    (dict(headers={"Authorization": "Bearer x\r\nX-Injected: yes"}), "Authorization"),
    (dict(headers={"Bad Name": "x"}), "Bad Name"),
])
def test_static_bad_values_fail_at_construction(options, header):
    with pytest.raises(ConfigError, match=header) as info:
        WebSocketClient(url="ws://127.0.0.1:1/ws", **options)
    assert "X-Injected" not in str(info.value)


def test_a_bad_header_name_in_a_class_constant_fails_at_construction():
    class Bad(WebSocketClient):
        IDENTIFIER_HEADER = "X Identifier"

    with pytest.raises(ConfigError, match="not a valid HTTP token"):
        Bad(url="ws://127.0.0.1:1/ws")


def test_a_url_with_a_space_fails_at_start_naming_the_setting():
    client = WebSocketClient(url="ws://127.0.0.1:1/a b")
    with pytest.raises(ConfigError, match="^url contains whitespace"):
        client.start()


class FromIdentifier(WebSocketClient):
    def identifier(self):
        return INJECTION  # e.g. read from a database


class FromLastConnectedAt(WebSocketClient):
    def last_connected_at(self):
        return "2026-01-01T00:00:00Z\r\nX-Injected: yes"


class FromHeaders(WebSocketClient):
    def headers(self):
        return {**super().headers(), "X-Tenant": "acme\nX-Injected: yes"}


class FromOrigin(WebSocketClient):
    def origin(self):
        return "https://tenant.example\r\nX-Injected: yes"


@pytest.mark.parametrize("cls, header", [
    (FromIdentifier, "X-Hermes-Identifier"),
    (FromLastConnectedAt, "X-Hermes-Last-Connected-At"),
    (FromHeaders, "X-Tenant"),
    (FromOrigin, "Origin"),
])
def test_a_bad_value_from_an_overridable_method_gives_up_and_sends_nothing(server, make_client, caplog_hermes, cls,
                                                                            header):
    errors = []
    client = make_client(cls, url=server.url, on_error=errors.append)
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "the client to give up")
    assert len(errors) == 1 and isinstance(errors[0], ConfigError) and header in str(errors[0])
    assert server.of("connect") == [] and server.of("rejected") == []  # no request reached the server
    give_up = [r.getMessage() for r in caplog_hermes.records if "not retrying" in r.getMessage()]
    assert len(give_up) == 1 and header in give_up[0]
    assert not any("X-Injected" in r.getMessage() for r in caplog_hermes.records)


def test_a_callable_headers_keyword_is_checked_on_each_attempt(server, make_client):
    client = make_client(url=server.url, headers=lambda: {"X-Tenant": "a\r\nX-Injected: yes"})
    client.start()
    wait_until(lambda: client.status()["max_retries_reached"], t(5), "the client to give up")
    assert server.of("connect") == []
