"""The PostgreSQL outbox (OUTBOX_URL) in a real deployment across hosts: two gunicorn masters
(-k gevent -w 2 each) standing for two hosts, on one database, with one identifier.

While requests stream to both masters and the WebSocket server is down, one whole master - the
master and its two workers, one SIGKILL to its process group - dies. Every message whose request
was answered accepted=true (HTTP 202), by either master, is delivered once the server is up: the
survivor's own, and the dead master's, which the survivor's workers take over from the table once
the dead workers' leases lapsed (lease.LEASE_TIMEOUT, judged at each claim: persistence.CLAIM_EVERY).

Both masters run flask_example through tests/scripts/pg_app.py, which shortens the lease (3 s,
claims every 0.3 s) so that the takeover takes seconds, not 25 + 5. The helpers (the recording
server, the streamers, the tally of what the server recorded) are test_outbox_deploy.py's.
"""

import collections
import functools
import itertools
import os
import re
import signal
import time

import gevent

from . import test_outbox_deploy as deploy
from .pgcluster import PASSWORD
from .support import free_port, t
from .test_outbox_deploy import GUNICORN, Streamer, Tally, all_closed, log_lines, worker_statuses

#: test_outbox_deploy.py's fixtures: the recording server (ServerProcess), started on a port and
#: stopped in teardown; gevent.spawn, its greenlets killed in teardown.
servers, spawn = deploy.servers, deploy.spawn

#: flask_example's app with a short lease (tests/scripts/pg_app.py), under flask_example's gunicorn.conf.py.
assert GUNICORN[-1] == "flask_example.wsgi:app"
PG_GUNICORN = [*GUNICORN[:-1], "tests.scripts.pg_app:app"]


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_whole_master_killed_while_the_server_is_down(procs, servers, spawn, pg_url, postgres, monkeypatch):
    """Master A and master B, OUTBOX_SYNC="always", stream numbered messages (4 posters each) with
    the server up, then with it down; A's process group is killed with SIGKILL mid-stream; the
    server comes up while B streams on. Every accepted message (A's and B's) arrives, none twice:
    A's workers had no connection since their last commit (the server was down), so nothing they
    held had been written anywhere. The table ends empty, and so does the leases table once B stops."""
    lease_s, claim_every = t(3.0), t(0.3)

    def sql(text, *params):
        return postgres.execute(text, params or None, url=pg_url)

    server = servers(free_port())
    monkeypatch.setattr(deploy, "GUNICORN", PG_GUNICORN)  # start_gunicorn runs pg_app instead
    env = {"HERMES_OUTBOX_URL": pg_url, "HERMES_OUTBOX_SYNC": "always", "HERMES_MAX_RETRY_DELAY": "1",
           "HERMES_DEFAULT_RETRY_DELAY": "0.2", "HERMES_TEST_LEASE_TIMEOUT": str(lease_s),
           "HERMES_TEST_CLAIM_EVERY": str(claim_every)}
    began = time.monotonic()
    ports = {"a": free_port(), "b": free_port()}
    assert len(set(ports.values()) | {server.port}) == 3
    start = functools.partial(deploy.start_gunicorn, procs, ws_url=server.url, outbox="", **env)  # no OUTBOX_PATH
    starting = {name: spawn(start, port) for name, port in ports.items()}
    gevent.joinall(list(starting.values()), timeout=t(45), raise_error=True)
    masters = {name: greenlet.get(timeout=0) for name, greenlet in starting.items()}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    pids = {}
    for name, base in bases.items():
        statuses = worker_statuses(base, lambda found: all(s["connected"] for s in found.values()), timeout=20)
        assert all(s["outbox_sync"] == "always" and s["outbox_path"] is None and s["outbox_url"]
                   and PASSWORD not in s["outbox_url"] and s["outbox_available"] for s in statuses.values()), statuses
        pids[name] = set(statuses)
    assert all(os.getpgid(pid) == masters["a"].popen.pid for pid in pids["a"])  # one group: the killpg takes them
    started_at = time.monotonic()

    tally = Tally(server)
    poller = spawn(tally.poll)  # times the arrivals (for the figures only)
    numbers = itertools.count()
    streams = {name: Streamer(spawn, base, posters=4) for name, base in bases.items()}
    for stream in streams.values():
        stream.numbers = numbers  # one numbering over both masters

    def accepted() -> set:
        return streams["a"].accepted | streams["b"].accepted

    try:
        # The server up: all four workers accept and deliver.
        for stream in streams.values():
            stream.run()
        server.wait_for(lambda: {w for _, w, _, _ in tally.update().arrivals} == pids["a"] | pids["b"]
                        and all(len(s.accepted) >= 300 for s in streams.values()), t(30),
                        lambda: f"all four workers: {collections.Counter(w for _, w, _, _ in tally.arrivals)}")
        # The server goes down once everything accepted so far arrived (without acknowledgements,
        # what a server loses when it goes away with messages unread is lost, and not what this tests).
        for stream in streams.values():
            stream.stop()
        server.wait_for(lambda: accepted() <= set(tally.update().counts), t(15), "the accepted messages")
        server.stop()
        delivered_up = len(tally.counts)
        for stream in streams.values():
            stream.run()
        for stream in streams.values():
            stream.wait_accepted(len(stream.accepted) + 500, 30)
        leases = dict(sql("SELECT owner, pid FROM hermes_outbox_leases"))
        assert set(leases.values()) == pids["a"] | pids["b"], leases  # one lease per worker
        owners_a = [owner for owner, pid in leases.items() if pid in pids["a"]]

        # The kill, mid-stream, the server down: master A and its workers at once.
        accepted_at_kill = {name: len(s.accepted) for name, s in streams.items()}
        os.killpg(masters["a"].popen.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        streams["a"].stop()  # its requests in flight fail: no answer, not counted
        assert masters["a"].popen.wait(t(10)) == -signal.SIGKILL
        deadline = time.monotonic() + t(10)
        while not all(map(gone, pids["a"])):
            assert time.monotonic() < deadline, f"A's workers still run: {[p for p in pids['a'] if not gone(p)]}"
            gevent.sleep(0.01)
        held_a = sql("SELECT count(*) FROM hermes_outbox WHERE owner = ANY(%s)", owners_a)[0][0]
        rows_at_kill = sql("SELECT count(*) FROM hermes_outbox")[0][0]
        assert held_a > 100, held_a  # every message A accepted while the server was down

        def lapsed() -> float:
            """When A's leases leave the table: B's claim found them lapsed and freed A's rows."""
            while sql("SELECT count(*) FROM hermes_outbox_leases WHERE owner = ANY(%s)", owners_a)[0][0]:
                gevent.sleep(0.02)
            return time.monotonic()

        taker = spawn(lapsed)
        # The server comes up while B streams on; B takes A's messages over once A's leases lapsed.
        server.start()
        up_at = time.monotonic()
        taken_at = taker.get(timeout=lease_s + claim_every + t(10))
        streams["b"].wait_accepted(len(streams["b"].accepted) + 300, 30)
    finally:
        for stream in streams.values():
            stream.stop()
    posted, final = next(numbers), accepted()

    # Every accepted message arrives: B's, and A's (those since the server went down, by B's workers).
    server.wait_for(lambda: final <= set(tally.update().counts), t(30),
                    lambda: f"{len(final - set(tally.counts))} accepted messages")
    delivered_at = time.monotonic()
    assert not final - set(tally.counts)  # none lost
    deadline = time.monotonic() + t(15)
    while sql("SELECT count(*) FROM hermes_outbox")[0][0] and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert sql("SELECT count(*) FROM hermes_outbox")[0][0] == 0  # delivered: forgotten
    statuses_b = worker_statuses(bases["b"])
    reloaded = sorted(s["messages_reloaded"] for s in statuses_b.values())

    # B stops cleanly and leaves nothing behind: no row, no lease.
    masters["b"].popen.send_signal(signal.SIGTERM)
    assert masters["b"].popen.wait(t(30)) == 0, masters["b"].text()[-3000:]
    assert len(log_lines(masters["b"], "stopped; 0 message(s) left undelivered")) == 2, masters["b"].text()[-3000:]
    assert sql("SELECT count(*) FROM hermes_outbox")[0][0] == 0
    assert sql("SELECT count(*) FROM hermes_outbox_leases")[0][0] == 0
    server.wait_for(lambda: all_closed(server), t(10), "every connection closed")
    poller.kill()
    tally.update()
    assert set(tally.counts) <= set(range(posted))  # nothing but what was posted

    # A's messages that B delivered are exactly what A held at the kill, and what B took over.
    adopted = [(n, conn, at) for n, worker, conn, at in tally.arrivals if worker in pids["a"] and conn not in pids["a"]]
    took_over = sum(map(int, re.findall(r"took over (\d+) message\(s\) kept in", masters["b"].text())))
    assert len({n for n, _, _ in adopted}) == took_over == held_a == sum(reloaded), \
        (len(adopted), took_over, held_a, reloaded)
    assert {conn for _, conn, _ in adopted} <= pids["b"]
    takeover = taken_at - killed_at
    first_adopted = min(at for _, _, at in adopted) - killed_at
    assert lease_s * 0.8 <= takeover <= lease_s + claim_every + t(3), takeover  # not before the lease lapsed
    assert first_adopted >= lease_s * 0.8, first_adopted  # none sent while A's lease was live

    duplicates = tally.duplicates()
    extra = sum(duplicates.values()) - len(duplicates)
    failed = {name: len(s.failed) for name, s in streams.items()}
    print(f"\ntwo masters, A killed (SIGKILL to its process group) with the server down: {posted} posted, "
          f"{len(final)} accepted (A {len(streams['a'].accepted)}, B {len(streams['b'].accepted)}), without "
          f"accepted=true {failed}, {len(tally.counts)} delivered ({delivered_up} before the server went down); "
          f"at the kill A had {accepted_at_kill['a']} accepted and held {held_a} rows of {rows_at_kill}; "
          f"A's leases lapsed {takeover:.2f}s after the kill (lease {lease_s:g}s, claims every {claim_every:g}s), "
          f"B took over {took_over} (per worker {reloaded}), the first delivered {first_adopted:.2f}s and the last "
          f"{max(at for _, _, at in adopted) - killed_at:.2f}s after the kill (server up "
          f"{up_at - killed_at:.2f}s after it); all accepted delivered {delivered_at - killed_at:.2f}s after the "
          f"kill; DUPLICATES: {len(duplicates)} numbers ({extra} extra copies): {sorted(duplicates)[:40]}; "
          f"masters serving in {started_at - began:.1f}s, test {time.monotonic() - began:.1f}s")
    # The server was down from before A's last commit to after the kill: A had written none of what it held.
    assert not duplicates, sorted(duplicates)
