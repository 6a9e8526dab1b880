"""The fault matrix's rows for proxies (PROXY): the client connects through a proxy on
127.0.0.1 the whole time; same producer, server and accounting as test_matrix.py.

- a real proxy (tinyproxy for HTTP CONNECT, microsocks for SOCKS5) killed with SIGKILL
  mid-stream and restarted on its port: every tunnel dies abruptly, judged like a server kill;
- a proxy that starts answering CONNECT with 407 (the proxy credentials no longer valid):
  the client gives up with a line about the proxy credentials and loses nothing it queued;
- a proxy that answers CONNECT with 503 three times, then tunnels again: retried, graceful.
The refusing proxy is tests/proxies.py's FakeProxy (tinyproxy answers bad credentials with
401, and has no way to answer 503 on demand)."""

from __future__ import annotations

import logging

import pytest

from ..proxies import FakeProxy, MicroSocks, TinyProxy
from ..support import t, wait_until
from .scenario import Run
from .test_matrix import FAST_FAULTS, check_order, judge
from .test_matrix import acks, server  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.faults


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def fake_proxy():
    proxy = FakeProxy().start()
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("kind", ["tinyproxy", "microsocks"])
def test_proxy_restarted_mid_stream(server, make_client, acks, tmp_path, kind):  # noqa: F811
    proxy = TinyProxy(tmp_path) if kind == "tinyproxy" else MicroSocks()
    proxy.start()
    try:
        run = Run(make_client, server.url, acks=acks, proxy=proxy.url(), **FAST_FAULTS).start_producer()
        for _ in range(2):
            run.produce_for(0.4)
            run.fault()
            proxy.stop()  # SIGKILL by its PID: every tunnel dies with it
            run.produce_for(0.3)
            proxy.start()  # the same port
        run.produce_for(0.4)
        name = "HTTP CONNECT (tinyproxy)" if kind == "tinyproxy" else "SOCKS5 (microsocks)"
        judge(run.finish(server, f"{name} proxy killed (SIGKILL) mid-stream and restarted x2"), acks, 2,
              graceful=False)
    finally:
        proxy.stop()


def test_proxy_answering_407_gives_up(server, make_client, acks, fake_proxy, caplog):  # noqa: F811
    caplog.set_level(logging.ERROR, logger="hermes_gevent")
    run = Run(make_client, server.url, acks=acks, proxy=fake_proxy.url("alice:pr0xy-s3cret-7781@"),
              **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    fake_proxy.refuse(407, "Proxy Authentication Required")  # every CONNECT from now on
    run.fault()
    server.command(cmd="close", code=1012)
    wait_until(lambda: run.client.status()["max_retries_reached"], t(5), "give up")
    run.produce_for(0.2)
    result = run.finish(server, "proxy answers CONNECT with 407 (give up)", delivered_expected=False)
    check_order(result)
    assert result.queued > 0 and result.lost == 0 and result.duplicated == 0, result
    assert fake_proxy.refused == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("HTTP 407" in line and "proxy refused its credentials" in line for line in lines), lines
    assert not any("pr0xy-s3cret-7781" in line for line in lines)


def test_proxy_answering_503_then_recovering(server, make_client, acks, fake_proxy):  # noqa: F811
    run = Run(make_client, server.url, acks=acks, proxy=fake_proxy.url(), **FAST_FAULTS).start_producer()
    run.produce_for(0.3)
    fake_proxy.refuse(503, "Service Unavailable", count=3)
    run.fault()
    server.command(cmd="close", code=1012)
    wait_until(lambda: fake_proxy.refused >= 3, t(5), "three 503s from the proxy")
    run.produce_for(0.5)
    judge(run.finish(server, "proxy answers CONNECT with 503 x3, then tunnels"), acks, 1, graceful=True)
