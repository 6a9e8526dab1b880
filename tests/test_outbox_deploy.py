"""The outbox file (OUTBOX_PATH) in real deployments: gunicorn gevent workers (-w 2) running
flask_example, against the recording server (tests/wsserver.py).

- a deploy while the server is down ("stop"): what the old workers could not deliver is spilled
  into the file at worker exit and sent, exactly once, by the new gunicorn once the server is up;
- a worker killed with SIGKILL while requests stream ("always"): every message whose request
  was answered with accepted=true is delivered, by the respawned worker or the other one.

Every message is numbered: /notify is posted {"message": "n:<number>"}, and the server, in its
recording mode, prints each message it receives; the test counts them (losses, duplicates,
order) from that record.
"""

import collections
import itertools
import json
import os
import re
import signal
import sqlite3
import sys
import time
import urllib.error
from http.client import HTTPException

import gevent
import gevent.event
import pytest
from gunicorn import __version__ as gunicorn_version

from .support import ServerProcess, free_port, http, t

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "flask_example/gunicorn.conf.py", "flask_example.wsgi:app"]
if tuple(int(part) for part in gunicorn_version.split(".")[:2]) >= (25, 1):
    # gunicorn 25.1+ binds a control socket at $HOME/.gunicorn/gunicorn.ctl: one path that every
    # gunicorn of the user (other test runs in parallel) unlinks and takes from the others.
    GUNICORN.insert(-1, "--no-control-socket")
IDENTIFIER = "flask-example"
#: Without acknowledgements, what a worker killed with SIGKILL had written to the socket and not yet
#: deleted from the file (the deletion rides on the next commit) is sent again by the one that takes
#: its messages over. Bound, for a worker with no backlog (the server keeps up): what it writes
#: during one commit, stated as one batch of the sender (sender.MAX_BATCH_ITEMS). A worker that had
#: a backlog to write (after a reconnection) could write more than that in one commit interval.
DUPLICATES_BOUND = 256


@pytest.fixture
def servers():
    """Start tests/wsserver.py (ServerProcess) on a given port; every one is stopped in teardown."""
    started = []

    def start(port: int, *args: str) -> ServerProcess:
        server = ServerProcess(port, *args)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def spawn():
    """gevent.spawn, the greenlets killed in teardown."""
    greenlets = []

    def start(*args):
        greenlet = gevent.spawn(*args)
        greenlets.append(greenlet)
        return greenlet

    yield start
    gevent.killall(greenlets, timeout=t(5))


def start_gunicorn(procs, port: int, ws_url: str, outbox: str, **env):
    """gunicorn -k gevent -w 2 on flask_example, logging the client; returns the Proc once it serves."""
    proc = procs(GUNICORN, HERMES_WS_URL=ws_url, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2",
                 GUNICORN_GRACEFUL_TIMEOUT="10", HERMES_WS_LOG="true", HERMES_WS_IDENTIFIER=IDENTIFIER,
                 HERMES_OUTBOX_PATH=outbox, HERMES_RETRY_JITTER="0", **env)
    deadline = time.monotonic() + t(30)
    while True:
        try:
            http("GET", f"http://127.0.0.1:{port}/status")
            return proc
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline or proc.popen.poll() is not None:
                raise AssertionError(f"gunicorn did not serve within {t(30):.0f}s:\n{proc.text()[-3000:]}")
            gevent.sleep(0.1)


def worker_statuses(base: str, until=lambda statuses: True, timeout: float = 10, exclude=()) -> dict:
    """The latest /status of each of the 2 workers (requests land on either), keyed by pid, once
    both answered and ``until(statuses)`` holds; bounded. Workers in ``exclude`` are ignored."""
    found: dict = {}
    deadline = time.monotonic() + t(timeout)
    while True:
        try:
            status = http("GET", f"{base}/status")
        except (urllib.error.URLError, ConnectionError, OSError):
            status = None
        if status is not None and status["pid"] not in exclude:
            found[status["pid"]] = status
        if len(found) == 2 and until(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {t(timeout):.0f}s polling /status: {found}")
        gevent.sleep(0.01)


class Tally:
    """The messages the server recorded, counted incrementally (each event read once): how many
    times each number arrived, who accepted it (the "worker" field /notify adds) and on which
    worker's connection it came."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen = 0
        self.counts: collections.Counter = collections.Counter()
        # (number, accepting worker, delivering worker, when update() saw it: monotonic)
        self.arrivals: list[tuple[int, int, int, float]] = []
        self.conn_pid: dict[int, int] = {}

    def update(self) -> "Tally":
        events = self.server.events
        while self.seen < len(events):
            event = events[self.seen]
            self.seen += 1
            if event["ev"] == "connect":
                self.conn_pid[event["id"]] = int(event["headers"]["X-Worker-Pid"])
            elif event["ev"] == "msg":
                message = json.loads(event["text"])
                number = int(message["message"][2:])
                self.counts[number] += 1
                self.arrivals.append((number, message["worker"], self.conn_pid[event["id"]], time.monotonic()))
        return self

    def poll(self) -> None:
        while True:
            self.update()
            gevent.sleep(0.02)

    def duplicates(self) -> dict[int, int]:
        return {n: c for n, c in self.counts.items() if c > 1}


def outbox_rows(path: str) -> int:
    conn = sqlite3.connect(path, timeout=t(10))
    try:
        return conn.execute("SELECT count(*) FROM messages WHERE identifier = ?", (IDENTIFIER,)).fetchone()[0]
    finally:
        conn.close()


def all_closed(server: ServerProcess) -> bool:
    """Every connection to the server's current process has ended (its messages all recorded)."""
    since = max(i for i, e in enumerate(server.events) if e["ev"] == "listening")
    events = server.events[since:]
    return {e["id"] for e in events if e["ev"] == "connect"} == {e["id"] for e in events if e["ev"] == "close"}


def log_lines(proc, text: str) -> list[str]:
    return [line for line in proc.output if text in line]


def test_deploy_while_the_server_is_down(procs, servers, spawn, tmp_path):
    """OUTBOX_SYNC="stop": 2,000 messages queued while the server is down are spilled by the old
    workers at SIGTERM, taken over by a new gunicorn on the same file, and delivered exactly once,
    in acceptance order, once the server is up - without acknowledgements."""
    total, posters = 2000, 4
    ws_port, http_port = free_port(), free_port()
    ws_url = f"ws://127.0.0.1:{ws_port}/ws"  # nothing listens there yet
    outbox = str(tmp_path / "outbox.db")
    env = dict(HERMES_MAX_RETRY_DELAY="1", HERMES_DEFAULT_RETRY_DELAY="0.2", HERMES_CONNECT_TIMEOUT="2")
    began = time.monotonic()
    old = start_gunicorn(procs, http_port, ws_url, outbox, **env)
    base = f"http://127.0.0.1:{http_port}"

    # Posters: poster g posts g, g + posters, g + 2 * posters... one after another, so within one
    # poster and one worker the acceptance order is the order of the numbers.
    def post(g: int) -> None:
        for n in range(g, total, posters):
            reply = http("POST", f"{base}/notify", {"message": f"n:{n}"}, timeout=t(10))
            assert reply["accepted"] is True, reply

    greenlets = [spawn(post, g) for g in range(posters)]
    gevent.joinall(greenlets, timeout=t(60), raise_error=True)
    assert all(g.dead for g in greenlets)
    statuses = worker_statuses(base)
    old_pids = set(statuses)
    assert all(not s["connected"] and s["outbox_path"] == outbox and s["outbox_sync"] == "stop"
               for s in statuses.values()), statuses
    queued = {pid: s["queue_size"] for pid, s in statuses.items()}
    assert sum(queued.values()) == total and all(queued.values()), queued  # spread over both workers
    posted_at = time.monotonic()

    # The deploy: SIGTERM the master; each worker's worker_exit hook stops its client, which cannot
    # deliver (no server) and spills its queue into the file instead of dropping it.
    old.popen.send_signal(signal.SIGTERM)
    assert old.popen.wait(t(30)) == 0, old.text()[-3000:]
    kept = re.findall(rf"(\d+) undelivered message\(s\) kept in {re.escape(outbox)} for the next start", old.text())
    assert sorted(map(int, kept)) == sorted(queued.values()), old.text()[-3000:]
    assert len(log_lines(old, "stopped; 0 message(s) left undelivered")) == 2, old.text()[-3000:]
    assert outbox_rows(outbox) == total

    # The new gunicorn on the same file; one of its workers takes the 2,000 over at start.
    new = start_gunicorn(procs, http_port, ws_url, outbox, **env)
    statuses = worker_statuses(base, lambda found: sum(s["messages_reloaded"] for s in found.values()) == total,
                               exclude=old_pids)
    reloaded = sorted(s["messages_reloaded"] for s in statuses.values())

    # Now the server comes up on the same port: the new workers reconnect within MAX_RETRY_DELAY.
    server = servers(ws_port)
    up_at = time.monotonic()
    tally = Tally(server)
    server.wait_for(lambda: len(tally.update().arrivals) >= total, t(30), "2,000 messages")
    delivered_at = time.monotonic()
    assert sorted(tally.counts) == list(range(total)) and not tally.duplicates()  # every one, exactly once
    assert {worker for _, worker, _, _ in tally.arrivals} == old_pids  # accepted by both old workers
    assert {conn for _, _, conn, _ in tally.arrivals} <= set(statuses)  # sent by the new ones
    for worker in old_pids:  # in acceptance order (poster g posted the numbers n with n % posters == g)
        for g in range(posters):
            mine = [n for n, w, _, _ in tally.arrivals if w == worker and n % posters == g]
            assert mine == sorted(mine), (worker, g)

    # Nothing is left in the file, and the new workers stop cleanly: nothing is sent twice later.
    deadline = time.monotonic() + t(15)
    while outbox_rows(outbox) and time.monotonic() < deadline:
        gevent.sleep(0.05)
    assert outbox_rows(outbox) == 0
    new.popen.send_signal(signal.SIGTERM)
    assert new.popen.wait(t(30)) == 0, new.text()[-3000:]
    assert len(log_lines(new, "stopped; 0 message(s) left undelivered")) == 2, new.text()[-3000:]
    assert not log_lines(new, "for the next start")
    server.wait_for(lambda: all_closed(server), t(10), "both connections closed")
    assert len(tally.update().arrivals) == total
    print(f"\ndeploy while down: {total} posted in {posted_at - began:.1f}s (from the first gunicorn's start); "
          f"spilled {sorted(queued.values())}, reloaded {reloaded}; delivered {delivered_at - up_at:.2f}s after the "
          f"server came up; 0 duplicates; test {time.monotonic() - began:.1f}s")


class Streamer:
    """Greenlets that POST numbered messages to /notify one after another, recording which
    requests were answered accepted=true; run() starts them, stop() ends them (bounded)."""

    def __init__(self, spawn, base: str, posters: int = 8) -> None:
        self.spawn = spawn
        self.base = base
        self.posters = posters
        self.numbers = itertools.count()
        self.accepted: set[int] = set()
        self.failed: list[tuple[int, str]] = []  # no answer (the worker died under it), or not accepted
        self._greenlets: list = []
        self._stop = gevent.event.Event()

    def run(self) -> "Streamer":
        self._stop.clear()
        self._greenlets = [self.spawn(self._post) for _ in range(self.posters)]
        return self

    def stop(self) -> None:
        self._stop.set()
        gevent.joinall(self._greenlets, timeout=t(15))
        assert all(g.dead for g in self._greenlets)

    def wait_accepted(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + t(timeout)
        while len(self.accepted) < n:
            assert time.monotonic() < deadline, f"only {len(self.accepted)} of {n} messages accepted"
            gevent.sleep(0.02)

    @property
    def posted(self) -> int:
        return next(self.numbers)  # (skips one number: harmless)

    def _post(self) -> None:
        while not self._stop.is_set():
            n = next(self.numbers)
            try:
                reply = http("POST", f"{self.base}/notify", {"message": f"n:{n}"}, timeout=t(10))
            except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
                # the worker died under the request (reset, a reply cut short)
                self.failed.append((n, repr(exc)))
                continue
            if reply.get("accepted") is True:
                self.accepted.add(n)
            else:
                self.failed.append((n, json.dumps(reply)))


@pytest.mark.parametrize("server_down", [False, True], ids=["server-up", "server-down"])
@pytest.mark.parametrize("acks", [False, True], ids=["acks-off", "acks-on"])
def test_worker_sigkill_with_outbox_sync_always(procs, servers, spawn, tmp_path, acks, server_down):
    """OUTBOX_SYNC="always": while requests stream, one worker is killed with SIGKILL; gunicorn
    respawns it. Every message whose request was answered accepted=true is delivered: the dead
    worker's messages are in the file, and the respawned worker (at start) or the other one (at its
    next claim) takes them over.

    server-up: the issue's scenario. The dead worker holds few messages in its file (those
    committed and not yet written, and with acknowledgements those not yet acknowledged), often
    none. server-down: the same kill, but while the server is down, so that the dead worker holds
    every message it accepted since (hundreds) and the takeover is always exercised; the server
    is stopped only once everything accepted before was delivered (without acknowledgements, what
    a server loses when it goes away with messages unread is lost, and not what this tests).

    Without acknowledgements, a message written to the socket whose deletion from the file had not
    been committed yet is sent again by the adopter: duplicates are possible, at most what one
    worker writes between two commits (DUPLICATES_BOUND); none in server-down, where the dead
    worker had no connection. With acknowledgements, those written and not yet acknowledged are
    sent again (by the adopter, or after a reconnection: in server-down, those the server recorded
    and went away without acknowledging): duplicates are allowed, and counted."""
    server = servers(free_port(), *(["--ack"] if acks else []))
    http_port = free_port()
    outbox = str(tmp_path / "outbox.db")
    env = dict(HERMES_OUTBOX_SYNC="always", HERMES_MAX_RETRY_DELAY="1", HERMES_DEFAULT_RETRY_DELAY="0.2")
    if acks:
        env["HERMES_ACK_TIMEOUT"] = "5"
    began = time.monotonic()
    gunicorn = start_gunicorn(procs, http_port, server.url, outbox, **env)
    base = f"http://127.0.0.1:{http_port}"
    statuses = worker_statuses(base, lambda found: all(s["connected"] for s in found.values()), timeout=15)
    assert all(s["outbox_sync"] == "always" and s["ack_timeout"] == (5 if acks else None) for s in statuses.values())
    old_pids = set(statuses)
    victim = min(old_pids)
    tally = Tally(server)
    poller = spawn(tally.poll)  # times the arrivals (for the figures only)
    stream = Streamer(spawn, base).run()
    try:
        # Both workers accept and deliver.
        server.wait_for(lambda: len({w for _, w, _, _ in tally.update().arrivals}) == 2
                        and len(stream.accepted) >= 1500, t(30), "messages from both workers")
        if server_down:
            stream.stop()
            server.wait_for(lambda: stream.accepted <= set(tally.update().counts), t(15), "the accepted messages")
            server.stop()  # both workers lose their connection; what they accept now waits in the file
            stream.run()
            stream.wait_accepted(len(stream.accepted) + 1000, 30)
            victim_held = outbox_rows(outbox)
        # The kill, mid-stream.
        accepted_at_kill = len(stream.accepted)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        # gunicorn respawns it; stream on until the new worker has answered, and 1,000 more.
        respawned = worker_statuses(base, exclude={victim}, timeout=30,
                                    until=lambda found: len(set(found) - old_pids) == 1)
        respawned_at = time.monotonic()
        new_pid = (set(respawned) - old_pids).pop()
        if server_down:
            server.start()
            server_up_at = time.monotonic()
        stream.wait_accepted(accepted_at_kill + 1000, 30)
    finally:
        stream.stop()
    posted, accepted = stream.posted, stream.accepted

    # Every accepted message arrives (the dead worker's within the 30 s adoption bound).
    server.wait_for(lambda: accepted <= set(tally.update().counts), t(40),
                    lambda: f"{len(accepted - set(tally.counts))} accepted messages")
    delivered_at = time.monotonic()
    assert not accepted - set(tally.counts)  # none lost

    # The survivors stop cleanly and leave nothing in the file to be sent again.
    gunicorn.popen.send_signal(signal.SIGTERM)
    assert gunicorn.popen.wait(t(30)) == 0, gunicorn.text()[-3000:]
    assert len(log_lines(gunicorn, "stopped; 0 message(s) left undelivered")) == 2, gunicorn.text()[-3000:]
    assert outbox_rows(outbox) == 0
    server.wait_for(lambda: all_closed(server), t(10), "every connection closed")
    poller.kill()
    tally.update()
    assert set(tally.counts) <= set(range(posted))  # nothing but what was posted
    adopted = [(n, conn, at) for n, worker, conn, at in tally.arrivals if worker == victim and conn != victim]
    by_whom = dict(collections.Counter("respawned" if conn == new_pid else "the other" for _, conn, _ in adopted))
    took_over = sum(map(int, re.findall(r"took over (\d+) message\(s\) kept in", gunicorn.text())))
    # What was taken over from the file is exactly what of the dead worker's another one delivered.
    assert len({n for n, _, _ in adopted}) == took_over, (took_over, len(adopted))
    if server_down:
        assert took_over > 100  # it held every message it accepted while the server was down

    duplicates = tally.duplicates()
    extra = sum(duplicates.values()) - len(duplicates)
    adopted_last = max((at for _, _, at in adopted), default=None)
    since = server_up_at if server_down else killed_at
    print(f"\nworker SIGKILL, always, acks {'on' if acks else 'off'}, server {'down' if server_down else 'up'} at "
          f"the kill: {posted} posted, {len(accepted)} accepted, {len(stream.failed)} without accepted=true, "
          f"{len(tally.counts)} delivered; killed {victim} after {accepted_at_kill} accepted"
          f"{f' (the file held {victim_held} of both)' if server_down else ''}, respawned as {new_pid} in "
          f"{respawned_at - killed_at:.2f}s; {len(adopted)} of its messages delivered by another worker "
          f"({by_whom}; took over: {took_over}), the last "
          f"{'-' if adopted_last is None else f'{adopted_last - since:.2f}s'} after the "
          f"{'server came up' if server_down else 'kill'}; all accepted delivered {delivered_at - since:.2f}s "
          f"after it; "
          f"DUPLICATES: {len(duplicates)} numbers ({extra} extra copies): {sorted(duplicates)[:40]}; "
          f"test {time.monotonic() - began:.1f}s")
    if not acks:
        # server-down: the dead worker had written nothing since its last commit (no connection).
        assert len(duplicates) <= (0 if server_down else DUPLICATES_BOUND), sorted(duplicates)
