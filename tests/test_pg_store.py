"""The PostgreSQL outbox (OUTBOX_URL=postgresql://...) against a real server (tests/pgcluster.py):
settings and secrets, durable sends, a process killed with SIGKILL, a frozen owner fenced out,
transactional sends (Connection, Session, Flask-SQLAlchemy), the database going away, the hub.

The client's side runs against the in-process peer (tests/peer.py); where the contract is about
processes, tests/scripts/outbox_process.py runs them. The test reads the table itself: what is in it is
what another host would find.
"""

import json
import signal
import sys
import time

import gevent
import pytest

import hermes_gevent.lease as lease
import hermes_gevent.persistence as persistence
from hermes_gevent import ConfigError, WebSocketClient

from .conftest import PASSWORD, t
from .stores import report_of
from .support import TESTS, free_port, last_json_line, run_script, wait_until
from .test_metrics import exposed, value

SCRIPTS = TESTS / "scripts"
sqlalchemy = pytest.importorskip("sqlalchemy")


def sa_url(url):
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def rows(postgres, url, identifier):
    """(payload text, owner) of ``identifier``'s rows, oldest first."""
    return [(bytes(p).decode(), o) for p, o in postgres.execute(
        "SELECT payload, owner FROM hermes_outbox WHERE identifier = %s ORDER BY seq", (identifier,), url=url)]


def refused_url():
    return f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there: a server that is down


# -- settings and secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("options, names", [
    (dict(outbox_url="mysql://u:p@db/app"), ["OUTBOX_URL"]),
    (dict(outbox_url="postgresql://u:p@db:port/app"), ["OUTBOX_URL"]),
    (dict(outbox_url="sqlite://relative.db"), ["OUTBOX_URL"]),
    (dict(outbox_url="sqlite:///:memory:"), ["OUTBOX_URL"]),
    (dict(outbox_url=42), ["OUTBOX_URL"]),
    (dict(outbox_url="postgresql://u:p@db/app", outbox_path="/tmp/x.db"), ["OUTBOX_URL", "OUTBOX_PATH"]),
    (dict(outbox_url="postgresql://u:p@db/app", outbox_table="drop table;"), ["OUTBOX_TABLE"]),
])
def test_a_bad_outbox_url_fails_at_construction_naming_the_setting(options, names):
    with pytest.raises(ConfigError) as raised:
        WebSocketClient(url="ws://127.0.0.1:1/ws", **options)
    for name in names:
        assert name in str(raised.value)
    assert ":p@" not in str(raised.value)


def test_postgresql_without_psycopg_is_a_config_error_naming_the_extra():
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from hermes_gevent import WebSocketClient, ConfigError\n"
            "try:\n"
            "    WebSocketClient(url='ws://127.0.0.1:1/ws', outbox_url='postgresql://u:pw@127.0.0.1/app')\n"
            "except ConfigError as exc:\n"
            "    print(exc)\n")
    out, _ = run_script([sys.executable, "-c", code], t(30))
    assert "OUTBOX_URL" in out and "hermes_gevent[postgres]" in out and "pw" not in out


def test_the_password_never_reaches_repr_status_logs_or_errors(pg_url, make_client, peer, log_watch):
    assert PASSWORD in pg_url
    client = make_client(connector=peer.connector, url=peer.url, identifier="secret", outbox_url=pg_url)
    client.start()
    assert client.send_message("one") and peer.wait_messages(1) == ["one"]
    status = client.status()
    host, port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")
    assert status["outbox_url"] == f"postgresql://{host}:{port}/{pg_url.rsplit('/', 1)[1]}"
    assert status["outbox_path"] is None and status["outbox_available"] is True
    wrong = pg_url.replace(PASSWORD, "wrong-" + PASSWORD)
    with pytest.raises(ConfigError) as raised:
        WebSocketClient(url=peer.url, identifier="secret", outbox_url=wrong).start()
    assert "OUTBOX_URL" in str(raised.value) and "password" in str(raised.value)
    client.stop()
    shown = [repr(client.settings), json.dumps(client.status()), str(raised.value)]
    shown += [record.getMessage() for record in log_watch.records]
    assert not [text for text in shown if PASSWORD in text]


def test_sqlalchemy_and_sqlite_urls_are_accepted(tmp_path, pg_url):
    sqlite = WebSocketClient(url="ws://127.0.0.1:1/ws", outbox_url=f"sqlite:///{tmp_path}/o.db")
    assert sqlite.settings.outbox_location().path == f"{tmp_path}/o.db"  # four slashes: absolute
    assert (sqlite.status()["outbox_url"], sqlite.status()["outbox_path"]) == (f"sqlite:///{tmp_path}/o.db",
                                                                             f"{tmp_path}/o.db")
    assert WebSocketClient(url="ws://127.0.0.1:1/ws", outbox_url="sqlite:///o.db").settings.outbox_location().path == "o.db"
    for scheme in ("postgres", "postgresql+psycopg"):
        client = WebSocketClient(url="ws://127.0.0.1:1/ws", outbox_url=pg_url.replace("postgresql", scheme, 1))
        assert client.status()["outbox_url"] == client.settings.outbox_location().shown


def test_transaction_without_a_postgresql_outbox_is_a_config_error(make_client, peer, tmp_path):
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/app.db")
    client = make_client(connector=peer.connector, url=peer.url, outbox_path=str(tmp_path / "o.db"))
    with engine.connect() as conn, pytest.raises(ConfigError, match="OUTBOX_URL"):
        client.send_message("x", transaction=conn)


# -- durable sends and processes -------------------------------------------------------------------------


def test_always_2000_messages_from_8_greenlets_survive_a_sigkill_after_the_last_send(pg_url, postgres, procs,
                                                                                     make_client, peer, monkeypatch):
    # The killed process's rows are held under its lease (renewed by its last commit): this
    # process judges it lapsed after a shortened LEASE_TIMEOUT (25 s in production).
    monkeypatch.setattr(lease, "LEASE_TIMEOUT", t(2))
    monkeypatch.setattr(persistence, "CLAIM_EVERY", t(0.3))
    proc = procs([sys.executable, str(SCRIPTS / "outbox_process.py"), "produce", pg_url, "killed", "8", "250",
                  refused_url()])
    proc.popen.wait(t(60))
    assert proc.popen.returncode == -signal.SIGKILL, proc.text()
    assert report_of(proc)["accepted"] == 2000
    assert len(rows(postgres, pg_url, "killed")) == 2000  # every accepted message was committed
    client = make_client(connector=peer.connector, url=peer.url, identifier="killed", outbox_url=pg_url)
    client.start()
    got = peer.wait_messages(2000, t(30))
    for g in range(8):  # once each, in order per producer
        assert [m for m in got if m.startswith(f"p{g}-")] == [f"p{g}-{i}" for i in range(250)]
    assert len(got) == len(set(got)) == 2000
    wait_until(lambda: rows(postgres, pg_url, "killed") == [], t(10), "the delivered rows to leave the table")


def test_a_dead_processs_committed_transaction_is_delivered_by_another(pg_url, postgres, procs, make_client, peer,
                                                                       monkeypatch):
    # The dying process may have taken its committed row already (then it is held under its lease,
    # judged lapsed here after a shortened LEASE_TIMEOUT), or not (then it is held by nobody).
    monkeypatch.setattr(lease, "LEASE_TIMEOUT", t(2))
    monkeypatch.setattr(persistence, "CLAIM_EVERY", t(0.3))
    client = make_client(connector=peer.connector, url=peer.url, identifier="txn", outbox_url=pg_url)
    client.start()
    proc = procs([sys.executable, str(SCRIPTS / "outbox_process.py"), "commit-and-die", pg_url, "txn", refused_url()])
    proc.popen.wait(t(60))
    assert proc.popen.returncode == -signal.SIGKILL and report_of(proc)["accepted"] is True, proc.text()
    assert postgres.execute("SELECT item FROM orders", url=pg_url) == [("book",)]
    assert peer.wait_messages(1, t(10)) == ['{"order":"book"}']
    wait_until(lambda: rows(postgres, pg_url, "txn") == [], t(10), "the delivered row to leave the table")


# -- transactions ----------------------------------------------------------------------------------------


def orders_engine(pg_url):
    engine = sqlalchemy.create_engine(sa_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)"))
    return engine


@pytest.mark.parametrize("kind", ["connection", "session"])
def test_a_transactional_send_goes_out_after_commit_and_never_after_rollback(kind, pg_url, postgres, make_client, peer):
    from sqlalchemy.orm import Session

    engine = orders_engine(pg_url)
    client = make_client(connector=peer.connector, url=peer.url, identifier="orders", outbox_url=pg_url)
    client.start()
    assert client.send_message("before") and peer.wait_messages(1) == ["before"]

    def transaction(item, commit):
        opened = engine.connect() if kind == "connection" else Session(engine)
        with opened as txn:
            txn.execute(sqlalchemy.text("INSERT INTO orders (item) VALUES (:item)"), {"item": item})
            assert client.send_message({"order": item}, transaction=txn) is True
            gevent.sleep(t(0.2))  # the row is written, uncommitted: nothing goes out meanwhile
            assert peer.messages == ["before"] + sent
            (txn.commit if commit else txn.rollback)()
            return time.monotonic()

    sent = []
    transaction("rolled-back", commit=False)
    committed_at = transaction("committed", commit=True)
    sent.append('{"order":"committed"}')
    peer.wait_messages(2, t(5))
    assert time.monotonic() - committed_at < t(0.5)  # a hook, not the claim loop's period
    assert client.send_message("after") and peer.wait_messages(3) == ["before", '{"order":"committed"}', "after"]
    assert postgres.execute("SELECT item FROM orders ORDER BY id", url=pg_url) == [("committed",)]
    wait_until(lambda: rows(postgres, pg_url, "orders") == [], t(10), "the delivered row to leave the table")
    assert client.status()["messages_sent"] == 3


def test_a_flask_sqlalchemy_request_sends_on_commit_and_a_failed_request_sends_nothing(pg_url, postgres, make_client,
                                                                                        peer):
    flask = pytest.importorskip("flask")
    flask_sqlalchemy = pytest.importorskip("flask_sqlalchemy")
    app = flask.Flask("orders")
    app.config["SQLALCHEMY_DATABASE_URI"] = sa_url(pg_url)
    db = flask_sqlalchemy.SQLAlchemy(app)

    class Order(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        item = db.Column(db.String(50))

    with app.app_context():
        db.create_all()
    client = make_client(connector=peer.connector, url=peer.url, identifier="flask", outbox_url=sa_url(pg_url))
    client.start()

    @app.post("/orders/<item>")
    def order(item):
        db.session.add(Order(item=item))
        client.send_message({"order": item}, transaction=db.session)
        if item == "fails":
            raise RuntimeError("the request fails after sending")
        db.session.commit()
        return {"ok": True}

    web = app.test_client()
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert web.post("/orders/fails").status_code == 500
    assert web.post("/orders/book").status_code == 200
    assert peer.wait_messages(1, t(5)) == ['{"order":"book"}']
    assert client.send_message("after") and peer.wait_messages(2) == ['{"order":"book"}', "after"]
    with app.app_context():
        assert [o.item for o in Order.query.all()] == ["book"]
    assert rows(postgres, pg_url, "flask") == [] or wait_until(lambda: rows(postgres, pg_url, "flask") == [], t(10))


# -- the database goes away -------------------------------------------------------------------------------


def test_the_database_stopped_under_a_steady_producer_loses_nothing_and_is_durable_again(pg_url, postgres, make_client,
                                                                                         peer, monkeypatch, log_watch):
    monkeypatch.setattr(persistence, "CLAIM_EVERY", t(0.5))
    client = make_client(connector=peer.connector, url=peer.url, identifier="outage", outbox_url=pg_url,
                         outbox_sync="always", connect_timeout=t(2), metrics=True)
    client.start()
    slowest = [0.0]
    sent = []

    def produce(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.monotonic()
            text = f"n-{len(sent)}"
            assert client.send_message(text)
            slowest[0] = max(slowest[0], time.monotonic() - began)
            sent.append(text)
            gevent.sleep(0.005)

    producer = gevent.spawn(produce, t(6))
    gevent.sleep(t(1))
    postgres.stop()
    wait_until(lambda: client.status()["outbox_available"] is False, t(5), "the outage to be noticed")
    assert "outbox_unavailable" in client.check_health()
    gevent.sleep(t(1))
    postgres.start()
    producer.get(timeout=t(20))
    wait_until(lambda: client.status()["outbox_available"], t(10), "the outbox to answer again")
    assert peer.wait_messages(len(sent), t(20)) == sent  # every accepted message, once, in order
    assert slowest[0] < t(2) + 1.0  # never longer than CONNECT_TIMEOUT (and a turn of a busy hub)
    assert client.status()["outbox_errors"] >= 1 and "outbox_unavailable" not in client.check_health()
    assert value(exposed(), "hermes_outbox_errors_total", client=client.name) == client.status()["outbox_errors"]
    assert len([r for r in log_watch.records if "kept in memory only" in r.getMessage()]) == 1
    assert any("answers again" in r.getMessage() for r in log_watch.records)
    # Durable again: a message accepted now is in the table when send_message returns.
    peer.refuse()
    peer.drop()
    assert client.send_message("durable again")
    assert ("durable again", client.run.store._db.owner) in rows(postgres, pg_url, "outage")


# -- migrations -------------------------------------------------------------------------------------------


def test_flask_hermes_outbox_sql_prints_ddl_that_creates_the_tables_the_client_uses(pg_url, postgres, peer):
    flask = pytest.importorskip("flask")
    from hermes_gevent.flask import Hermes

    app = flask.Flask("migrations")
    app.config.update(HERMES_WS_URL="ws://127.0.0.1:1/ws", HERMES_OUTBOX_URL=pg_url, HERMES_OUTBOX_TABLE="app_outbox",
                      HERMES_AUTOSTART=False)
    Hermes().init_app(app)
    result = app.test_cli_runner().invoke(args=["hermes", "outbox-sql"])
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output and 'CREATE TABLE IF NOT EXISTS "app_outbox"' in result.output
    sql = "\n".join(line for line in result.output.splitlines() if not line.startswith("--"))
    for statement in filter(str.strip, sql.split(";")):
        postgres.execute(statement, url=pg_url)  # as a migration would, before the app starts
    tables = {name for (name,) in postgres.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", url=pg_url)}
    assert {"app_outbox", "app_outbox_leases"} <= tables
    client = WebSocketClient(connector=peer.connector, url=peer.url, identifier="migrated", outbox_url=pg_url,
                             outbox_table="app_outbox", outbox_sync="always")
    client.start()
    try:
        assert client.send_message("in the migrated table") and peer.wait_messages(1, t(5)) == ["in the migrated table"]
        assert client.status()["outbox_available"] is True
    finally:
        client.stop(t(2))


# -- found in review: a put-back across an outage, a migration's lock -------------------------------------


def store_for(url, **options):
    from hermes_gevent.logs import ClientLog, Redactor
    from hermes_gevent.pg_store import PostgresStore
    from hermes_gevent.store_url import locate

    settings = dict(durable=True, max_size=100, strategy="drop_oldest", timeout=t(2))
    settings.update(options)
    store = PostgresStore(locate(url, None), "store", log=ClientLog("store", Redactor()), **settings)
    store.open()
    return store


def test_a_message_to_put_back_while_the_database_is_down_is_put_back_once_it_answers(pg_url, postgres):
    """Written, its row deleted; then the server's TCP is found never to have acknowledged it: its
    row must come back. The database is down at that moment: memory holds the only copy until it
    answers, and a stop after that keeps it."""
    store = store_for(pg_url)
    try:
        [item] = store.append([(1, b"order-42", "")])
        store.forget([item])
        wait_until(lambda: rows(postgres, pg_url, "store") == [], t(5), "the written row to be deleted")
        postgres.kill()
        store.restore([item])
        wait_until(lambda: store.failed, t(10), "the commit carrying the put-back to fail")
        postgres.start()
        store.claim(100)  # the claim loop's reconnection
        assert not store.failed
        wait_until(lambda: rows(postgres, pg_url, "store") == [("order-42", store._db.owner)], t(5), "the put-back")
        spilled = store.spill([item])
        assert (spilled.kept, spilled.failed) == (1, False)
        assert rows(postgres, pg_url, "store") == [("order-42", None)]
    finally:
        store.close()


def test_a_migration_holding_the_outbox_locked_never_holds_a_send_longer_than_connect_timeout(pg_url, postgres,
                                                                                             make_client, peer,
                                                                                             monkeypatch):
    import psycopg

    monkeypatch.setattr(persistence, "CLAIM_EVERY", t(0.3))
    client = make_client(connector=peer.connector, url=peer.url, identifier="locked", outbox_url=pg_url,
                         outbox_sync="always", connect_timeout=t(1))
    client.start()
    assert client.send_message("before") and peer.wait_messages(1) == ["before"]
    with psycopg.connect(pg_url) as migration:
        migration.execute("LOCK TABLE hermes_outbox_leases IN ACCESS EXCLUSIVE MODE")
        began = time.monotonic()
        assert client.send_message("during")  # kept in memory: the commit gave up on the lock
        assert time.monotonic() - began < t(1) + 1.0
        assert client.status()["outbox_available"] is False
        assert peer.wait_messages(2) == ["before", "during"]  # the WebSocket side goes on
    wait_until(lambda: client.status()["outbox_available"], t(10), "the outbox to answer again")
    peer.refuse()
    peer.drop()
    assert client.send_message("after")
    assert ("after", client.run.store._db.owner) in rows(postgres, pg_url, "locked")  # durable again


def test_a_client_never_started_creates_the_table_for_a_transactional_send_and_sends_it_at_start(pg_url, postgres,
                                                                                                 make_client, peer):
    engine = orders_engine(pg_url)
    client = make_client(connector=peer.connector, url=peer.url, identifier="later", outbox_url=pg_url)
    with engine.connect() as conn:  # a fresh database: no outbox table yet, and the client never started
        conn.execute(sqlalchemy.text("INSERT INTO orders (item) VALUES ('early')"))
        assert client.send_message({"order": "early"}, transaction=conn)
        conn.commit()
    assert rows(postgres, pg_url, "later") == [('{"order":"early"}', None)]  # held by nobody
    client.start()
    assert peer.wait_messages(1, t(5)) == ['{"order":"early"}']


def test_psycopg_is_first_imported_in_the_stores_thread_never_in_the_hub(pg_url, postgres):
    # Its import is ~110 ms of CPU: in the hub, start() from a request kept every timer waiting that long
    # (the benchmark's 1 ms ticker saw it at every reload). A fresh interpreter, where nothing imported it yet.
    out, _ = run_script([sys.executable, str(SCRIPTS / "pg_import_thread.py"), pg_url, refused_url(), str(t(30))],
                        t(60))
    report = last_json_line(out)
    assert report == {"imported": True, "in_hub": False, "started": True}
