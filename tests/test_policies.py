"""The pure ground floor: backoff, retry classification, health alerts, settings. No clock, no I/O."""

import socket
import ssl

import pytest

from hermes_gevent import Backoff, ConfigError, WebSocketClient
from hermes_gevent.errors import ConnectionClosed, ConnectTimeout, HandshakeRejected, ProtocolError
from hermes_gevent.health import alert_changes, compute_alerts
from hermes_gevent.logs import RateLimitedCounter
from hermes_gevent.retry import should_retry
from hermes_gevent.settings import Settings


class FixedRandom:
    def __init__(self, value):
        self.value = value

    def random(self):
        return self.value


def test_backoff_doubles_up_to_the_cap_without_jitter():
    backoff = Backoff(initial=3, maximum=30, jitter=0)
    assert backoff.delays(6) == [3, 6, 12, 24, 30, 30]
    assert backoff.delay(10_000) == 30  # no overflow for huge attempt numbers


def test_backoff_jitter_shortens_by_at_most_the_jitter_fraction():
    backoff = Backoff(initial=4, maximum=100, jitter=0.5)
    assert backoff.delay(0, FixedRandom(0.0)) == 4
    assert backoff.delay(0, FixedRandom(1.0)) == 2
    assert backoff.delay(2, FixedRandom(0.5)) == 16 * 0.75
    # the first delay is jittered too: a fleet does not come back in lockstep
    assert len({backoff.delay(0, FixedRandom(r)) for r in (0.1, 0.4, 0.9)}) == 3


def test_backoff_is_an_immutable_value():
    backoff = Backoff(initial=1, maximum=8, jitter=0)
    with pytest.raises(Exception):
        backoff.initial = 5
    changed = backoff.with_(maximum=2)
    assert (backoff.maximum, changed.maximum) == (8, 2)
    assert changed == Backoff(initial=1, maximum=2, jitter=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)


@pytest.mark.parametrize(
    "exc, retry",
    [
        (ConnectionRefusedError(), True),
        (ConnectionResetError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (ConnectTimeout("slow"), True),
        (TimeoutError(), True),
        (HandshakeRejected(500), True),
        (HandshakeRejected(503), True),
        (HandshakeRejected(408), True),
        (HandshakeRejected(429), True),
        (HandshakeRejected(401), False),
        (HandshakeRejected(403), False),
        (HandshakeRejected(404), False),
        (HandshakeRejected(301), False),
        (ConnectionClosed(1001), True),
        (ConnectionClosed(1006), True),
        (ConnectionClosed(1011), True),
        (ConnectionClosed(1012), True),
        (ConnectionClosed(1013), True),
        (ConnectionClosed(1014), True),
        (ConnectionClosed(1008), False),
        (ProtocolError(1002, "bad frame"), True),
        (ssl.SSLCertVerificationError("certificate verify failed"), False),
        (ConfigError("no url"), False),
    ],
)
def test_should_retry_classifies(exc, retry):
    assert should_retry(exc) is retry


def test_should_retry_is_overridable_per_client():
    class Stubborn(WebSocketClient):
        def should_retry(self, exc):
            return True

    assert Stubborn(url="ws://127.0.0.1:1/").should_retry(HandshakeRejected(401)) is True


SETTINGS = Settings(MAX_QUEUE_SIZE=100, DEFAULT_RETRY_LIMIT=10, HEALTH_CHECK_INTERVAL=60)
ACKING = Settings(MAX_QUEUE_SIZE=100, DEFAULT_RETRY_LIMIT=10, HEALTH_CHECK_INTERVAL=60, ACK_TIMEOUT=5, MAX_UNACKED=100)
HEALTHY = dict(connected=True, started=True, stopping=False, queue_size=0, retry_count=0,
               event_thread_alive=True, send_thread_alive=True, health_thread_alive=True, _last_activity=1000.0)


def test_no_alerts_when_healthy():
    assert compute_alerts(HEALTHY, SETTINGS, now=1030.0) == {}


def test_alert_on_silence_queue_retries_and_dead_loops():
    assert set(compute_alerts(HEALTHY, SETTINGS, now=1061.0)) == {"no_messages"}
    assert set(compute_alerts({**HEALTHY, "queue_size": 91}, SETTINGS, now=1000.0)) == {"queue_high"}
    assert compute_alerts({**HEALTHY, "queue_size": 90}, SETTINGS, now=1000.0) == {}
    assert set(compute_alerts({**HEALTHY, "retry_count": 9}, SETTINGS, now=1000.0)) == {"retries_high"}
    assert compute_alerts({**HEALTHY, "retry_count": 8}, SETTINGS, now=1000.0) == {}
    dead = compute_alerts({**HEALTHY, "send_thread_alive": False}, SETTINGS, now=1000.0)
    assert "send_thread_alive" in dead["loop_dead"]
    # silence while disconnected is not "no messages": the connection alerts say it
    assert compute_alerts({**HEALTHY, "connected": False}, SETTINGS, now=5000.0) == {}


def test_alert_changes_reports_only_what_changed():
    assert alert_changes({}, {"a": "x"}) == (["a"], [])
    assert alert_changes({"a": "x"}, {"a": "y"}) == ([], [])
    assert alert_changes({"a": "x"}, {}) == ([], ["a"])


def test_rate_limited_counter_reports_at_most_once_per_period():
    counter = RateLimitedCounter(period=10)
    reports = [counter.add(now) for now in (0, 1, 2, 3, 11, 12)]
    assert reports == [1, 0, 0, 0, 4, 0]
    assert counter.flush() == 1


def test_settings_keywords_map_to_constants():
    mapping = Settings.keyword_map()
    assert mapping["retry_limit"] == mapping["default_retry_limit"] == "DEFAULT_RETRY_LIMIT"
    assert mapping["max_queue_size"] == "MAX_QUEUE_SIZE"
    client = WebSocketClient(url="ws://127.0.0.1:1/", retry_limit=3, max_queue_size=7, queue_overflow_strategy="raise")
    assert (client.settings.DEFAULT_RETRY_LIMIT, client.settings.MAX_QUEUE_SIZE) == (3, 7)


def test_class_constants_are_settings():
    class Mine(WebSocketClient):
        MAX_QUEUE_SIZE = 5
        PING_INTERVAL = 2

    client = Mine(url="ws://127.0.0.1:1/")
    assert (client.settings.MAX_QUEUE_SIZE, client.settings.PING_INTERVAL) == (5, 2)
    assert Mine(url="ws://127.0.0.1:1/", ping_interval=9).settings.PING_INTERVAL == 9


@pytest.mark.parametrize(
    "options, named",
    [
        (dict(queue_overflow_strategy="drop_random"), "QUEUE_OVERFLOW_STRATEGY"),
        (dict(connect_timeout=0), "CONNECT_TIMEOUT"),
        (dict(ping_timeout=-1), "PING_TIMEOUT"),
        (dict(max_thread_wait_time="10"), "MAX_THREAD_WAIT_TIME"),
        (dict(max_queue_size=0), "MAX_QUEUE_SIZE"),
        (dict(retry_limit=0), "DEFAULT_RETRY_LIMIT"),
        (dict(max_retry_delay=1, retry_delay=5), "MAX_RETRY_DELAY"),
        (dict(pingg_interval=5), "pingg_interval"),
    ],
)
def test_bad_settings_fail_at_construction_naming_the_setting(options, named):
    with pytest.raises(ConfigError) as info:
        WebSocketClient(url="ws://127.0.0.1:1/", **options)
    message = str(info.value)
    assert named in message and "\n" not in message


def test_missing_url_fails_at_start_naming_the_variable(monkeypatch):
    monkeypatch.delenv("HERMES_WS_URL", raising=False)
    client = WebSocketClient()
    with pytest.raises(ConfigError, match="HERMES_WS_URL"):
        client.start()
    assert not client.running


@pytest.mark.parametrize("url", ["http://127.0.0.1/ws", "127.0.0.1:80", "ftp://x/"])
def test_bad_scheme_fails_at_start(url):
    with pytest.raises(ConfigError, match="ws:// or wss://"):
        WebSocketClient(url=url).start()


def test_url_and_identifier_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HERMES_WS_URL", "ws://127.0.0.1:9/env")
    monkeypatch.setenv("HERMES_WS_IDENTIFIER", "worker-a")
    client = WebSocketClient()
    assert client.url() == "ws://127.0.0.1:9/env"
    assert client.headers() == {"X-Hermes-Identifier": "worker-a"}


def test_unacked_high_when_the_window_is_nearly_full_and_only_with_acknowledgements_on():
    healthy = dict(connected=True, started=True, stopping=False, queue_size=0, retry_count=0, _last_activity=1000.0)
    assert set(compute_alerts({**healthy, "unacked": 90}, ACKING, now=1000.0)) == {"unacked_high"}
    assert compute_alerts({**healthy, "unacked": 89}, ACKING, now=1000.0) == {}
    assert compute_alerts({**healthy, "unacked": 90}, SETTINGS, now=1000.0) == {}
