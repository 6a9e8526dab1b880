"""Shared fixtures: a real WebSocket server in a subprocess, the fault proxy, clients.

The test process is monkey-patched here, as a gevent app would be; the
unpatched cases run in subprocesses (see test_hub.py).
"""

from gevent import monkey

monkey.patch_all()

import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

# Clients use the environment's proxy by default (PROXY=True): a machine whose environment sets
# one must not route the tests' 127.0.0.1 connections through it. The proxy tests set their own.
for _name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)
    os.environ.pop(_name.upper(), None)

from hermes_gevent import WebSocketClient  # noqa: E402

from .faultproxy import FaultProxy  # noqa: E402
from .peer import Peer  # noqa: E402
from .support import FACTOR, TESTS, LogWatch, Proc, Recorder, ServerProcess, free_port, t, wait_until  # noqa: E402,F401


@pytest.fixture
def frozen_heap():
    """For a test that bounds how long the hub waits: the suite's own objects (hundreds of tests'
    leftovers by then) are moved out of the collector's reach, so a full collection of them - a
    pause of 100 ms and more in a long session, nothing of the library's - cannot land in the
    measured span. What the test itself allocates is collected as usual."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def server():
    srv = ServerProcess(free_port()).start()
    yield srv
    srv.stop()


@pytest.fixture
def proxy_to():
    proxies = []

    def make(target_port: int) -> FaultProxy:
        proxy = FaultProxy(target_port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


FAST = dict(
    retry_delay=0.05,
    max_retry_delay=0.2,
    retry_jitter=0,
    connect_timeout=2,
    ping_interval=5,
    ping_timeout=5,
    min_uptime=0.5,
    max_thread_wait_time=5,
    health_check_interval=60,
)


@pytest.fixture
def make_client():
    """Build clients with fast test settings; every one is stopped in teardown."""
    clients = []

    def make(cls=WebSocketClient, **options):
        settings = dict(FAST)
        for key in ("retry_delay", "max_retry_delay", "connect_timeout", "ping_interval", "ping_timeout",
                    "min_uptime", "max_thread_wait_time"):
            settings[key] = t(settings[key])
        settings.update(options)
        client = cls(**settings)
        clients.append(client)
        return client

    make.clients = clients
    yield make
    for client in clients:
        client.stop(timeout=t(2))


@pytest.fixture
def peer(make_client):
    """An in-process WebSocket server (tests/peer.py): pass ``connector=peer.connector,
    url=peer.url`` to make_client. After the test the clients are stopped first (their
    close handshake still has a server), then the peer's greenlets and sockets."""
    p = Peer()
    yield p
    for client in make_client.clients:
        client.stop(timeout=t(2))
    p.stop()


@pytest.fixture
def log_watch():
    """A handler on the hermes_gevent logger (DEBUG) that a test can wait on."""
    watch = LogWatch()
    logger = logging.getLogger("hermes_gevent")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(level)


@pytest.fixture
def procs():
    started = []

    def start(args, **env):
        proc = Proc(args, {**os.environ, **env})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def hostile():
    """tests/scripts/hostile_server.py in MODE, in a subprocess stopped by its PID; returns its URL."""
    started = []

    def start(mode: str, with_output: bool = False):
        """The server's URL; with ``with_output``, also its output lines as they come."""
        proc = Proc([sys.executable, str(TESTS / "scripts" / "hostile_server.py"), mode], dict(os.environ))
        started.append(proc)
        wait_until(lambda: proc.output, t(10), "the hostile server to listen")
        url = f"ws://127.0.0.1:{int(proc.output[0].split()[1])}/ws"
        return (url, proc.output) if with_output else url

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def caplog_hermes(caplog):
    caplog.set_level(logging.DEBUG, logger="hermes_gevent")
    return caplog


def pytest_terminal_summary(terminalreporter):
    """Print the fault matrix's message accounting as one table at the end of the run."""
    from .faults.accounting import RESULTS, format_table

    if RESULTS:
        terminalreporter.write_sep("=", "message accounting (fault matrix)")
        terminalreporter.write_line(format_table(RESULTS))
        path = os.environ.get("HERMES_FAULTS_JSON")
        if path:
            with open(path, "w") as out:
                json.dump([r.row() for r in RESULTS], out, indent=2)


# -- PostgreSQL (tests/pgcluster.py) ------------------------------------------------------

from .pgcluster import PASSWORD, PostgresCluster, PostgresUnavailable  # noqa: E402,F401


@pytest.fixture(scope="session")
def postgres():
    """One real PostgreSQL cluster for the session (tests/pgcluster.py): started once, destroyed
    (stopped by its PID, directory removed) in teardown. Skipped, with the reason, when PostgreSQL
    or psycopg is not installed. A test may stop() or kill() it: pg_url starts it again."""
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(postgres):
    """A fresh database of the session's cluster, owned by the hermes role (password auth over
    TCP on 127.0.0.1): its URL. The cluster is started first if a test left it stopped or
    killed; the database is dropped afterwards (if the cluster is still running)."""
    if not postgres.running:
        postgres.start()
    url = postgres.create_database()
    yield url
    if postgres.running:
        postgres.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def outbox(request, tmp_path):
    """Each outbox store in turn (tests/stores.py): memory only, an SQLite file, a fresh PostgreSQL
    database. A test of what a store keeps outside the process is skipped for the memory store,
    with its reason: ``@kept_outside_memory("why")`` (test_store_contract.py)."""
    from .stores import MemoryOutbox, PostgresOutbox, SQLiteOutbox

    if request.param == "memory":
        reason = getattr(request.function, "memory_skip_reason", None)
        if reason is not None:
            pytest.skip(f"memory store: {reason}")
        return MemoryOutbox()
    if request.param == "sqlite":
        return SQLiteOutbox(str(tmp_path / "outbox.db"))
    return PostgresOutbox(request.getfixturevalue("postgres"), request.getfixturevalue("pg_url"))
