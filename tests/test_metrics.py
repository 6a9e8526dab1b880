"""Prometheus metrics (metrics=True, the hermes_gevent[metrics] extra): the values a client
records, the exposition (checked by promtool), the multiprocess aggregate under gunicorn
gevent workers (a killed worker's live gauges go, counters keep their totals), and a real
Prometheus server scraping the app."""

import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import weakref
from pathlib import Path

import gevent
import pytest

from hermes_gevent import metrics
from hermes_gevent.errors import ConfigError
from hermes_gevent.settings import Settings

from .support import free_port, http, t, wait_http, wait_until

ROOT = Path(__file__).parent.parent
prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

NAMES = ["hermes_messages_sent_total", "hermes_messages_received_total", "hermes_messages_dropped_total",
         "hermes_reconnects_total", "hermes_connection_closes_total", "hermes_connected", "hermes_queue_size",
         "hermes_connect_seconds", "hermes_ping_rtt_seconds", "hermes_queue_wait_seconds",
         "hermes_messages_acked_total", "hermes_messages_resent_total", "hermes_outbox_errors_total"]


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(s.value for s in samples(text) if s.name == name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def exposed() -> str:
    return metrics.exposition()[0].decode()


# -- the switch ----------------------------------------------------------------------------

def test_a_client_without_metrics_does_not_import_prometheus_client():
    code = textwrap.dedent("""
        import gevent.monkey; gevent.monkey.patch_all()
        import sys
        import hermes_gevent, hermes_gevent.flask, hermes_gevent.gunicorn
        from hermes_gevent import WebSocketClient
        c = WebSocketClient(url="ws://127.0.0.1:9/x")
        c.send_message("x")
        hermes_gevent.gunicorn.child_exit(None, None)  # no multiprocess directory: nothing imported
        print("prometheus_client" in sys.modules)
    """)
    env = {k: v for k, v in os.environ.items() if k.upper() != metrics.MULTIPROC_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=t(60))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_metrics_without_the_extra_is_a_config_error_naming_it(monkeypatch):
    monkeypatch.setattr(metrics, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"hermes_gevent\[metrics\]"):
        Settings(METRICS=True).validate()
    Settings(METRICS=False).validate()


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_metrics_must_be_a_bool(bad):
    with pytest.raises(ConfigError, match="METRICS"):
        Settings(METRICS=bad).validate()


# -- values --------------------------------------------------------------------------------

def test_a_client_records_every_metric(make_client, server):
    client = make_client(url=server.url, metrics=True, name="recorded", ping_interval=t(0.2))
    client.start()
    assert client.wait_until_connected(t(10))
    for i in range(20):
        assert client.send_message(f"m{i}")
    assert client.flush(t(10))
    server.wait_for(lambda: len(server.texts()) >= 20, t(10), "20 messages")
    wait_until(lambda: value(exposed(), "hermes_ping_rtt_seconds_count", client="recorded") >= 1, t(10),
               "a ping round trip")
    client.reconnect()
    wait_until(lambda: value(exposed(), "hermes_reconnects_total", client="recorded") == 1, t(10), "a reconnect")
    assert client.wait_until_connected(t(10))
    text = exposed()
    assert value(text, "hermes_messages_sent_total", client="recorded") == 20
    assert value(text, "hermes_connected", client="recorded") == 1
    assert value(text, "hermes_queue_size", client="recorded") == 0
    assert value(text, "hermes_connect_seconds_count", client="recorded") == 2
    assert value(text, "hermes_connection_closes_total", client="recorded", code="1000") == 1
    assert value(text, "hermes_queue_wait_seconds_count", client="recorded") >= 1
    client.stop(t(5))
    assert value(exposed(), "hermes_connected", client="recorded") == 0


def test_drops_are_counted_by_reason(make_client):
    client = make_client(url="ws://127.0.0.1:9/nowhere", metrics=True, name="dropping", max_queue_size=2,
                         queue_overflow_strategy="drop_newest")
    for i in range(5):
        client.send_message(f"m{i}")
    assert value(exposed(), "hermes_messages_dropped_total", client="dropping") == 3
    assert value(exposed(), "hermes_queue_size", client="dropping") == 2  # read when scraped


# -- hermes_queue_size: the queue's length when scraped ---------------------------------------

def nowhere() -> str:
    return f"ws://127.0.0.1:{free_port()}/down"  # nothing listens there: every attempt is refused


def queue_gauge(name: str) -> float:
    return value(exposed(), "hermes_queue_size", client=name)


def test_the_queue_gauge_says_what_waits_during_an_outage(make_client):
    client = make_client(url=nowhere(), metrics=True, name="outage")
    client.start()
    for i in range(10):
        assert client.send_message(f"m{i}")
    wait_until(lambda: queue_gauge("outage") == 10, t(1), "the scrape to say 10")
    assert not client.connected and client.queue_size == 10
    client.send_message("one more")
    assert queue_gauge("outage") == 11  # every scrape, not a sample


def test_the_queue_gauge_says_what_the_bound_kept(make_client):
    client = make_client(url=nowhere(), metrics=True, name="bounded", max_queue_size=5,
                         queue_overflow_strategy="drop_newest")
    client.start()
    accepted = [client.send_message(f"m{i}") for i in range(12)]
    assert accepted.count(False) == 7
    wait_until(lambda: queue_gauge("bounded") == 5, t(1), "the scrape to say 5")
    assert value(exposed(), "hermes_messages_dropped_total", client="bounded", reason="overflow") == 7


def test_the_queue_gauge_follows_runs_and_sums_the_clients_of_a_name(make_client):
    client = make_client(url=nowhere(), metrics=True, name="runs")
    for i in range(3):
        client.send_message(f"early-{i}")  # before start(): the queue the first run adopts
    assert queue_gauge("runs") == 3
    client.start()
    assert queue_gauge("runs") == 3
    assert client.stop(t(1)) == 3
    assert queue_gauge("runs") == 0  # the run's queue is closed
    client.start()
    client.send_message("a")
    client.send_message("b")
    assert queue_gauge("runs") == 2  # the new run's queue
    other = make_client(url=nowhere(), metrics=True, name="runs")
    for i in range(4):
        other.send_message(f"other-{i}")
    assert queue_gauge("runs") == 6  # one series per name: the sum
    other.stop(t(1))
    make_client.clients.remove(other)
    gone = weakref.ref(other)
    del other
    gc.collect()
    assert gone() is None, "the gauge keeps a stopped client alive"
    assert queue_gauge("runs") == 2


def test_the_exposition_passes_promtool(make_client, server, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    client = make_client(url=server.url, metrics=True, name="linted")
    client.start()
    assert client.wait_until_connected(t(10))
    client.send_message("x")
    assert client.flush(t(10))
    text = exposed()
    for name in NAMES:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                         timeout=t(30))
    assert out.returncode == 0, out.stdout + out.stderr


# -- gunicorn, multiprocess ----------------------------------------------------------------

def start_gunicorn(procs, server, tmp_path, workers=2, preload=False, **env):
    """gunicorn serving flask_example in multiprocess mode; ``server`` None: HERMES_WS_URL in ``env``,
    and no connection awaited."""
    port = free_port()
    directory = tmp_path / "prometheus-multiproc"
    directory.mkdir()
    args = [sys.executable, "-m", "gunicorn", "-c", "flask_example/gunicorn.conf.py", "flask_example.wsgi:app"]
    if preload:
        args.insert(-1, "--preload")  # the client (and its metrics) made in the master, before the fork
    if server is not None:
        env["HERMES_WS_URL"] = server.url
    gunicorn = procs(args, GUNICORN_BIND=f"127.0.0.1:{port}",
                     GUNICORN_WORKERS=str(workers), GUNICORN_GRACEFUL_TIMEOUT="10", HERMES_METRICS="1",
                     HERMES_METRICS_PATH="/metrics", PROMETHEUS_MULTIPROC_DIR=str(directory), **env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/status", t(30))
    if server is not None:
        server.wait_for(lambda: len(server.of("connect")) >= workers, t(15), "every worker's connection")
    return gunicorn, base, port, directory


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=t(5)) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def post_until_both_workers(base: str) -> tuple[int, set]:
    workers, posted = set(), 0
    for i in range(400):
        assert http("POST", f"{base}/notify", {"message": f"post-{i}"})["accepted"] is True
        posted += 1
        workers.add(http("GET", f"{base}/status")["pid"])
        if len(workers) == 2 and i >= 10:
            break
    assert len(workers) == 2, "requests never reached the second worker"
    return posted, workers


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_gunicorn_workers_aggregate_and_a_dead_worker_leaves_its_gauges(procs, server, tmp_path, preload):
    gunicorn, base, _, directory = start_gunicorn(procs, server, tmp_path, preload=preload)
    posted, workers = post_until_both_workers(base)
    server.wait_for(lambda: len(server.texts()) >= posted, t(15), "every message")
    wait_until(lambda: value(scrape(base), "hermes_messages_sent_total") == posted, t(10),
               "the sum over both workers")
    text = scrape(base)
    assert value(text, "hermes_connected") == 2  # livesum: one per live worker
    sent_by_pid = {s.labels.get("pid") for s in samples(text) if s.name == "hermes_messages_sent_total"}
    assert sent_by_pid == {None}  # one aggregated series, not one per worker

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    server.wait_for(lambda: len(server.of("connect")) >= 3, t(30), "the respawned worker's connection")
    wait_until(lambda: value(scrape(base), "hermes_connected") == 2, t(15),
               "two connected workers (the dead one's gauge gone)")
    assert not list(directory.glob(f"gauge_live*_{victim}.db")), "the dead worker's gauge files linger"
    text = scrape(base)
    assert value(text, "hermes_messages_sent_total") == posted  # its counters still count
    assert gunicorn.popen.poll() is None, gunicorn.text()[-3000:]


@pytest.mark.parametrize("max_queue, strategy, posted, kept", [(10000, "drop_oldest", 10, 10), (5, "drop_newest", 12, 5)],
                         ids=["outage", "bounded"])
def test_gunicorn_the_queue_gauge_is_right_within_a_second(procs, tmp_path, max_queue, strategy, posted, kept):
    # Multiprocess mode: no function runs at scrape time; the worker sets the gauge on size-class
    # changes and every QUEUE_REFRESH seconds while its queue is not empty.
    _, base, _, _ = start_gunicorn(procs, None, tmp_path, workers=1, HERMES_WS_URL=nowhere(),
                                   HERMES_MAX_QUEUE_SIZE=str(max_queue), HERMES_QUEUE_OVERFLOW_STRATEGY=strategy)
    accepted = [http("POST", f"{base}/notify", {"message": f"m{i}"})["accepted"] for i in range(posted)]
    assert accepted.count(False) == posted - kept
    wait_until(lambda: value(scrape(base), "hermes_queue_size") == kept, t(1), f"the scrape to say {kept}")
    text = scrape(base)
    assert value(text, "hermes_messages_dropped_total", reason="overflow") == posted - kept
    assert value(text, "hermes_connected") == 0


def test_a_real_prometheus_server_scrapes_the_app(procs, server, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the Prometheus server is not installed (Debian: apt-get install prometheus)")
    _, base, port, _ = start_gunicorn(procs, server, tmp_path)
    posted, _ = post_until_both_workers(base)
    server.wait_for(lambda: len(server.texts()) >= posted, t(15), "every message")

    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(textwrap.dedent(f"""
        global:
          scrape_interval: 1s
          evaluation_interval: 1s
        scrape_configs:
          - job_name: hermes
            metrics_path: /metrics
            static_configs:
              - targets: ["127.0.0.1:{port}"]
    """))
    procs([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{prom_port}"])
    query = urllib.parse.urlencode({"query": "sum(hermes_messages_sent_total)"})
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?{query}"

    def answer():
        try:
            result = http("GET", url)["data"]["result"]
        except OSError:
            return None
        return result and float(result[0]["value"][1]) == posted

    wait_until(answer, t(60), f"Prometheus to report {posted} messages sent")
