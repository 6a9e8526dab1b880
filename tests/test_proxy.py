"""Proxies (PROXY): ws:// and wss:// through real proxies started here on 127.0.0.1 -
tinyproxy (HTTP CONNECT, with and without Basic auth) and microsocks (SOCKS5, with and
without a user) - patched and unpatched; the environment variables and no_proxy; proxy
credentials kept out of logs, status() and exceptions; proxy refusals classified (407 and
403 given up, 502/503/504 retried) with a tiny CONNECT proxy of our own that refuses."""

import base64
import json
import logging
import ssl
import sys

import pytest

from hermes_gevent import ConfigError, ConnectTimeout, ProxyRejected, SocksError, WebSocketClient
from hermes_gevent.proxy import is_bypassed, parse_proxy
from hermes_gevent.retry import describe, should_retry

from .conftest import ServerProcess, free_port, t, wait_until
from .proxies import FakeProxy, MicroSocks, TinyProxy
from .support import TESTS, Recorder, last_json_line, run_script
from .test_hub import MAX_GAP_MS
from .test_tls import tls_server  # noqa: F401  (the fixture)

HTTP_USER, HTTP_PASSWORD = "alice", "pr0xy-s3cret-7781"
SOCKS_USER, SOCKS_PASSWORD = "bob", "s0cks-s3cret-4419"
KINDS = ["http", "http-auth", "socks5", "socks5h-auth"]
PROXY_VARIABLES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy variable from the machine running the tests leaks into them."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def proxies(tmp_path):
    started = []

    def make(kind: str):
        """A started proxy: "http" / "http-auth" (tinyproxy), "socks5" / "socks5h-auth" (microsocks)."""
        if kind.startswith("http"):
            proxy = TinyProxy(tmp_path, **({"user": HTTP_USER, "password": HTTP_PASSWORD} if "auth" in kind else {}))
        else:
            proxy = MicroSocks(**({"user": SOCKS_USER, "password": SOCKS_PASSWORD} if "auth" in kind else {}))
            proxy.scheme = kind.split("-")[0]
        started.append(proxy)
        return proxy.start()

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def fake_proxy():
    proxy = FakeProxy().start()
    yield proxy
    proxy.stop()


def echo_server(request, scheme):
    """(server, CA file): the plain server fixture, or a TLS one whose certificate names 127.0.0.1."""
    if scheme == "ws":
        return request.getfixturevalue("server"), None
    return request.getfixturevalue("tls_server")("127.0.0.1")


def carried_by(proxy, client, losses) -> None:
    """The connection really goes through ``proxy``: killing the proxy ends it."""
    before = len(losses.calls)
    proxy.stop()
    losses.wait(before + 1, what="the connection to end with the proxy")
    wait_until(lambda: not client.connected, t(5), "the client to notice")


@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("kind", KINDS)
def test_ws_and_wss_through_each_proxy(request, proxies, make_client, kind, scheme):
    server, cafile = echo_server(request, scheme)
    server.command(cmd="mode", echo=True)
    proxy = proxies(kind)
    got, losses = Recorder(), Recorder()
    client = make_client(url=server.url, proxy=proxy.url(), ca_file=cafile, on_message=got, on_close=losses)
    client.start()
    assert client.wait_until_connected(t(5))
    client.send_message(f"through {kind}")
    client.send_message("x" * 300_000)
    assert got.wait(2)[:1] == [f"through {kind}"] and len(got.calls[1]) == 300_000
    assert client.status()["proxy"] == f"{proxy.scheme}://127.0.0.1:{proxy.port}"
    carried_by(proxy, client, losses)


def test_tls_inside_the_tunnel_is_verified_against_the_server_name(tls_server, proxies, make_client):  # noqa: F811
    """A certificate for another name, through the proxy: rejected and not retried."""
    server, cafile = tls_server("other.example")
    proxy = proxies("http")
    gave_up = Recorder()
    client = make_client(url=server.url, proxy=proxy.url(), ca_file=cafile, on_give_up=gave_up)
    client.start()
    assert isinstance(gave_up.wait(1)[0], ssl.SSLCertVerificationError)
    assert client.status()["retry_count"] == 0 and not server.of("connect")


@pytest.mark.parametrize("mode", ["patched", "unpatched"])
def test_the_hub_keeps_ticking_through_proxied_connects(server, tls_server, proxies, mode):  # noqa: F811
    """Each proxy, ws:// and wss://, in a process patched or not: the ticker bound of test_hub.py holds."""
    server.command(cmd="mode", echo=True, quiet=True)
    secure, cafile = tls_server("127.0.0.1")
    secure.command(cmd="mode", echo=True, quiet=True)
    urls = [proxies("http-auth").url(), proxies("socks5h-auth").url()]
    out, _ = run_script([sys.executable, str(TESTS / "scripts" / "proxy_ticker.py"), mode, server.url, secure.url,
                         cafile, *urls], t(60))
    report = last_json_line(out)
    runs = report["runs"]
    assert [(r["proxy"], r["url"]) for r in runs] == [("http", "ws"), ("http", "wss"), ("socks5h", "ws"),
                                                        ("socks5h", "wss")]
    for run in runs:
        assert run["connected"] and run["echoes"] == [len("through the proxy"), 1 << 20], run
        assert run["through"].startswith(run["proxy"] + "://127.0.0.1:") and run["undelivered"] == 0, run
    if mode == "unpatched":
        assert [r["socket"] for r in runs if r["url"] == "wss"] == ["_MemoryTLS", "_MemoryTLS"]
    assert report["ticks"] > 20
    assert report["max_gap_ms"] < MAX_GAP_MS * max(1.0, t(1)), report
    print(mode, report)


# -- the environment -------------------------------------------------------------------


@pytest.mark.parametrize("variable, scheme, kind", [
    ("http_proxy", "ws", "http"), ("HTTP_PROXY", "ws", "http"), ("https_proxy", "wss", "http"),
    ("HTTPS_PROXY", "wss", "http"), ("all_proxy", "ws", "socks5"), ("ALL_PROXY", "wss", "socks5"),
])
def test_the_proxy_comes_from_the_environment(request, proxies, make_client, monkeypatch, variable, scheme, kind):
    server, cafile = echo_server(request, scheme)
    proxy = proxies(kind)
    monkeypatch.setenv(variable, proxy.url())
    # the variable of the other scheme is not used: it points at nothing
    monkeypatch.setenv("https_proxy" if scheme == "ws" else "http_proxy", f"http://127.0.0.1:{free_port()}")
    losses = Recorder()
    client = make_client(url=server.url, ca_file=cafile, on_close=losses)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["proxy"] == f"{proxy.scheme}://127.0.0.1:{proxy.port}"
    carried_by(proxy, client, losses)


def test_lower_case_wins_and_the_scheme_variable_before_all_proxy(proxies, server, make_client, monkeypatch):
    proxy = proxies("http")
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("http_proxy", proxy.url())
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("all_proxy", dead)
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["proxy"] == f"http://127.0.0.1:{proxy.port}"


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "*", "example.com, 127.0.0.1", "[::1],127.0.0.1:{port}"])
def test_no_proxy_connects_directly(server, make_client, monkeypatch, no_proxy):
    """A proxy that does not exist: only a direct connection can succeed."""
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=server.port))
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["proxy"] is None


@pytest.mark.parametrize("no_proxy", ["10.0.0.0/8", "127.0.0.2", "127.0.0.1:1", ".example.com"])
def test_no_proxy_that_does_not_cover_the_server(proxies, server, make_client, monkeypatch, no_proxy):
    proxy = proxies("http")
    monkeypatch.setenv("http_proxy", proxy.url())
    monkeypatch.setenv("no_proxy", no_proxy)
    client = make_client(url=server.url)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["proxy"] == f"http://127.0.0.1:{proxy.port}"


@pytest.mark.parametrize("setting", [None, False, "false", "None", ""])
def test_none_or_false_never_uses_a_proxy(server, make_client, monkeypatch, setting):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("all_proxy", f"http://127.0.0.1:{free_port()}")
    client = make_client(url=server.url, proxy=setting)
    client.start()
    assert client.wait_until_connected(t(5))
    assert client.status()["proxy"] is None


@pytest.mark.parametrize("host, port, no_proxy, bypassed", [
    ("api.example.com", 443, "example.com", True),
    ("api.example.com", 443, ".example.com", True),
    ("example.com", 443, ".example.com", True),
    ("api.example.com", 443, "*.example.com", True),
    ("notexample.com", 443, "example.com", False),
    ("example.com.evil", 443, "example.com", False),
    ("API.Example.COM", 443, "api.example.com", True),
    ("api.example.com", 443, "api.example.com:443", True),
    ("api.example.com", 80, "api.example.com:443", False),
    ("10.1.2.3", 80, "10.0.0.0/8", True),
    ("11.1.2.3", 80, "10.0.0.0/8", False),
    ("::1", 80, "::/64", True),
    ("::1", 80, "[::1]:80", True),
    ("example.com", 80, "10.0.0.0/8", False),
    ("anything", 1, "*", True),
    ("anything", 1, "", False),
    ("host", 1, "other host", True),
])
def test_no_proxy_matching(host, port, no_proxy, bypassed):
    assert is_bypassed(host, port, no_proxy) is bypassed


# -- credentials are secrets --------------------------------------------------------------


def test_proxy_credentials_are_never_shown(proxies, server, make_client, caplog_hermes):
    proxy = proxies("http-auth")
    wrong = "wr0ng-pass-5521"
    good = make_client(url=server.url, proxy=proxy.url(), name="good")
    good.start()
    assert good.wait_until_connected(t(5))
    errors, gave_up = Recorder(), Recorder()
    bad = make_client(url=server.url, proxy=proxy.url(password=wrong), name="bad", on_error=errors, on_give_up=gave_up)
    bad.start()
    exc = gave_up.wait(1)[0]
    with pytest.raises(ConfigError) as invalid:
        make_client(url=server.url, proxy=f"http://{HTTP_USER}:{HTTP_PASSWORD}@127.0.0.1:port")
    secrets = [HTTP_PASSWORD, wrong]
    secrets += [base64.b64encode(f"{HTTP_USER}:{p}".encode()).decode() for p in (HTTP_PASSWORD, wrong)]
    shown = [caplog_hermes.text, json.dumps(good.status()), json.dumps(bad.status()), str(exc), repr(exc),
             describe(exc), str(invalid.value), repr(parse_proxy(proxy.url()))]
    shown += [str(e) for e in errors.calls]
    for text in shown:
        for secret in secrets:
            assert secret not in text, (secret, text)
    assert "through proxy http://127.0.0.1:" in caplog_hermes.text  # the proxy itself is named


def test_wrong_or_no_credentials_give_up_with_a_line_about_the_proxy_credentials(proxies, server, make_client, caplog_hermes):
    proxy = proxies("http-auth")
    for url in (proxy.url(password="not-the-password"), f"http://127.0.0.1:{proxy.port}"):  # wrong, none
        gave_up = Recorder()
        client = make_client(url=server.url, proxy=url, on_give_up=gave_up)
        client.start()
        exc = gave_up.wait(1)[0]
        # tinyproxy 1.11 answers a CONNECT with wrong or no credentials with 401, not 407:
        # both mean the proxy's credentials (407 itself: test_a_proxy_answering_407 below)
        assert isinstance(exc, ProxyRejected) and exc.status in (401, 407), exc
        assert client.status()["retry_count"] == 0 and client.status()["max_retries_reached"]
        client.stop(t(2))
    lines = [r.getMessage() for r in caplog_hermes.records if r.levelno >= logging.ERROR]
    assert any("proxy refused its credentials" in line for line in lines), lines
    assert not server.of("connect")


@pytest.mark.parametrize("credentials", ["wrong", "none"])
def test_socks_credentials_refused_give_up(proxies, server, make_client, caplog_hermes, credentials):
    proxy = proxies("socks5h-auth")
    url = proxy.url(password="not-the-password") if credentials == "wrong" else f"socks5h://127.0.0.1:{proxy.port}"
    gave_up = Recorder()
    client = make_client(url=server.url, proxy=url, on_give_up=gave_up)
    client.start()
    exc = gave_up.wait(1)[0]
    assert isinstance(exc, SocksError) and exc.kind == "auth", exc
    assert client.status()["retry_count"] == 0
    assert any("SOCKS proxy refused its credentials" in r.getMessage() for r in caplog_hermes.records)


def test_socks_proxy_that_cannot_reach_the_server_is_retried(proxies, make_client):
    """microsocks answers "connection refused" for a closed port: the server may come back."""
    proxy = proxies("socks5")
    port = free_port()
    errors = Recorder()
    client = make_client(url=f"ws://127.0.0.1:{port}/ws", proxy=proxy.url(), on_error=errors)
    client.start()
    first = errors.wait(2)[0]
    assert isinstance(first, SocksError) and first.kind == "unreachable" and should_retry(first), first
    server = ServerProcess(port).start()
    try:
        assert client.wait_until_connected(t(5))
    finally:
        server.stop()


def test_an_http_proxy_that_cannot_reach_the_server_is_retried(proxies, make_client):
    proxy = proxies("http")
    port = free_port()
    errors = Recorder()
    client = make_client(url=f"ws://127.0.0.1:{port}/ws", proxy=proxy.url(), on_error=errors)
    client.start()
    first = errors.wait(2)[0]
    assert isinstance(first, ProxyRejected) and first.status >= 500 and should_retry(first), first
    server = ServerProcess(port).start()
    try:
        assert client.wait_until_connected(t(5))
    finally:
        server.stop()


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("status, reason", [(502, "Bad Gateway"), (503, "Service Unavailable"), (504, "Gateway Timeout")])
def test_a_proxy_that_refuses_for_a_while_is_retried(fake_proxy, server, make_client, status, reason):
    fake_proxy.refuse(status, reason, count=2)
    errors = Recorder()
    client = make_client(url=server.url, proxy=fake_proxy.url(), on_error=errors)
    client.start()
    assert client.wait_until_connected(t(5))
    assert [(type(e), e.status) for e in errors.calls] == [(ProxyRejected, status)] * 2
    assert fake_proxy.refused == 2
    server.wait_for(lambda: server.of("connect"), t(5), "the connection through the proxy")


def test_a_proxy_answering_407_gives_up_with_a_line_about_the_proxy_credentials(fake_proxy, server, make_client,
                                                                                 caplog_hermes):
    fake_proxy.refuse(407, "Proxy Authentication Required")
    gave_up = Recorder()
    client = make_client(url=server.url, proxy=fake_proxy.url(f"{HTTP_USER}:{HTTP_PASSWORD}@"), on_give_up=gave_up)
    client.start()
    exc = gave_up.wait(1)[0]
    assert isinstance(exc, ProxyRejected) and exc.status == 407 and not should_retry(exc)
    assert fake_proxy.refused == 1 and client.status()["retry_count"] == 0
    line = next(r.getMessage() for r in caplog_hermes.records if r.levelno >= logging.ERROR)
    assert "HTTP 407" in line and "proxy refused its credentials" in line and HTTP_PASSWORD not in line, line


def test_a_proxy_that_forbids_the_destination_gives_up(fake_proxy, server, make_client, caplog_hermes):
    fake_proxy.refuse(403, "Forbidden")
    gave_up = Recorder()
    client = make_client(url=server.url, proxy=fake_proxy.url(), on_give_up=gave_up)
    client.start()
    exc = gave_up.wait(1)[0]
    assert isinstance(exc, ProxyRejected) and exc.status == 403
    assert fake_proxy.refused == 1 and client.status()["retry_count"] == 0
    assert any("does not allow this destination" in r.getMessage() for r in caplog_hermes.records)


def test_the_connect_request_and_basic_auth(fake_proxy, server, make_client):
    client = make_client(url=server.url, proxy=fake_proxy.url("us%40er:p%3Ass-word@"))
    client.start()
    assert client.wait_until_connected(t(5))
    head = fake_proxy.requests[0].decode()
    assert head.startswith(f"CONNECT 127.0.0.1:{server.port} HTTP/1.1\r\n"), head
    assert f"Host: 127.0.0.1:{server.port}\r\n" in head
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'us@er:p:ss-word').decode()}\r\n" in head


def test_a_proxy_that_never_answers_is_bounded_by_connect_timeout(fake_proxy, server, make_client):
    fake_proxy.hang = True
    errors = Recorder()
    client = make_client(url=server.url, proxy=fake_proxy.url(), connect_timeout=t(0.3), on_error=errors)
    client.start()
    exc = errors.wait(1)[0]
    assert isinstance(exc, ConnectTimeout) and f"through proxy http://127.0.0.1:{fake_proxy.port}" in str(exc)


def test_a_proxy_that_is_down_is_retried(make_client):
    errors = Recorder()
    client = make_client(url="ws://127.0.0.1:9/ws", proxy=f"http://127.0.0.1:{free_port()}", on_error=errors)
    client.start()
    assert isinstance(errors.wait(2)[1], ConnectionRefusedError)


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ftp://host:21", "http://", "http://host:99999", "http://host:80/path", 42])
def test_invalid_proxy_settings_are_config_errors(value):
    from hermes_gevent import WebSocketClient
    with pytest.raises(ConfigError, match="PROXY"):
        WebSocketClient(url="ws://127.0.0.1:9/ws", proxy=value)


def test_a_socks_proxy_without_python_socks_is_a_config_error_naming_the_extra(monkeypatch, make_client):
    monkeypatch.setitem(sys.modules, "python_socks._connectors.factory_sync", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"hermes_gevent\[socks\]"):
        make_client(url="ws://127.0.0.1:9/ws", proxy="socks5://127.0.0.1:1080")
    monkeypatch.setenv("all_proxy", "socks5h://127.0.0.1:1080")
    client = make_client(url="ws://127.0.0.1:9/ws")  # the environment is read at start()
    with pytest.raises(ConfigError, match=r"hermes_gevent\[socks\]"):
        client.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    client.start()  # not for this URL: no SOCKS needed


def test_hermes_proxy_in_a_flask_config(proxies, server, monkeypatch):
    """HERMES_PROXY comes with the extension's settings; "true" from a config file is the environment."""
    flask = pytest.importorskip("flask")
    from hermes_gevent.flask import Hermes
    proxy = proxies("http")
    apps = []
    try:
        for value in (proxy.url(), "true"):
            monkeypatch.setenv("http_proxy", proxy.url() if value == "true" else f"http://127.0.0.1:{free_port()}")
            app = flask.Flask(f"proxied{len(apps)}")
            app.config.update(HERMES_WS_URL=server.url, HERMES_PROXY=value, HERMES_DEFAULT_RETRY_DELAY=0.05)
            Hermes(app)
            apps.append(app)
            assert app.hermes.wait_until_connected(t(5))
            assert app.hermes.status()["proxy"] == f"http://127.0.0.1:{proxy.port}"
    finally:
        for app in apps:
            app.hermes.stop(timeout=t(2))


def test_socks5_resolves_the_server_name_here(proxies, server, make_client):
    """socks5:// (not socks5h://): the name is resolved by gevent's resolver, IPv4 first, and
    the proxy gets the address (the server listens on 127.0.0.1 only)."""
    proxy = proxies("socks5")
    losses = Recorder()
    client = make_client(url=f"ws://localhost:{server.port}/ws", proxy=proxy.url(), on_close=losses)
    client.start()
    assert client.wait_until_connected(t(5))
    carried_by(proxy, client, losses)


@pytest.mark.parametrize("password", ["s3cr/et", "s3cr?et", "s3cr#et", "p@ss:w/rd"])
def test_a_password_that_breaks_the_url_is_never_shown_in_the_error(password):
    """The very error that asks to percent-encode the password must not print it."""
    from hermes_gevent.proxy import parse_proxy

    for url in (f"http://alice:{password}@proxy.corp:3128", f"socks5://alice:{password}@proxy.corp:1080"):
        try:
            parse_proxy(url)
        except ConfigError as exc:
            assert password not in str(exc) and "s3cr" not in str(exc) and "alice" not in str(exc), exc
        with pytest.raises(ConfigError) as caught:
            WebSocketClient(url="ws://127.0.0.1:9/ws", proxy=url + "/path")
        assert "s3cr" not in str(caught.value) and "w/rd" not in str(caught.value), caught.value


def test_settings_repr_never_shows_proxy_credentials():
    client = WebSocketClient(url="ws://127.0.0.1:9/ws", proxy="http://alice:hunter22@proxy.corp:3128")
    assert "hunter22" not in repr(client.settings) and "proxy.corp:3128" in repr(client.settings)


def test_an_empty_lower_case_variable_counts_as_unset_and_httpoxy_is_ignored():
    from hermes_gevent.proxy import environment_proxy

    env = {"http_proxy": "", "HTTP_PROXY": "http://upper.corp:3128"}
    assert environment_proxy("example.com", 80, False, env) == ("HTTP_PROXY", "http://upper.corp:3128")
    # In a CGI request HTTP_PROXY may come from the request's "Proxy:" header (httpoxy): ignored.
    assert environment_proxy("example.com", 80, False, {**env, "REQUEST_METHOD": "GET"}) is None
    assert environment_proxy("example.com", 80, False, {"http_proxy": "http://lower.corp:3128",
                                                        "REQUEST_METHOD": "GET"}) == ("http_proxy", "http://lower.corp:3128")
