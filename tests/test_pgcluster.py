"""The PostgreSQL harness itself (tests/pgcluster.py): password auth over TCP, data kept across a
clean restart and across an abrupt kill (crash recovery)."""

import os

import pytest

from .pgcluster import PASSWORD

psycopg = pytest.importorskip("psycopg")


def test_the_hermes_role_logs_in_with_its_password_over_tcp_and_a_wrong_one_is_refused(postgres, pg_url):
    user, address, fsync = postgres.execute(
        "SELECT current_user, inet_server_addr()::text, current_setting('fsync')", url=pg_url)[0]
    assert (user, address, fsync) == ("hermes", "127.0.0.1/32", "on")
    postgres.execute("CREATE TABLE owned (id int)", url=pg_url)  # hermes owns the database
    assert postgres.execute("SELECT count(*) FROM owned", url=pg_url) == [(0,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_url.replace(PASSWORD, "wrong-" + PASSWORD), connect_timeout=5).close()


def test_a_clean_stop_and_start_keeps_committed_rows_on_the_same_port(postgres, pg_url):
    postgres.execute("CREATE TABLE kept (id int)", url=pg_url)
    postgres.execute("INSERT INTO kept VALUES (%s)", (1,), url=pg_url)
    port = postgres.port
    postgres.stop()
    assert not postgres.running and postgres.pid is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url, connect_timeout=2).close()
    postgres.start()
    assert postgres.port == port
    assert postgres.execute("SELECT id FROM kept", url=pg_url) == [(1,)]


def test_a_killed_postmaster_recovers_the_committed_rows(postgres, pg_url):
    postgres.execute("CREATE TABLE survived (id int)", url=pg_url)
    postgres.execute("INSERT INTO survived VALUES (1), (2)", url=pg_url)
    pid = postgres.pid
    postgres.kill()
    assert not postgres.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    postgres.start()
    assert postgres.pid != pid
    assert "not properly shut down" in postgres.log_tail(20000), postgres.log_tail()
    assert postgres.execute("SELECT id FROM survived ORDER BY id", url=pg_url) == [(1,), (2,)]
