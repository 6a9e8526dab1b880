"""What only the SQLite outbox file (OUTBOX_PATH) does: its settings and paths, claims between
processes of a host (PIDs, leases), a corrupt file, a full disk, permissions, the hub, fork. The
contract both stores keep (spill and reload, the bound, durable sends) is test_store_contract.py.

The client's side runs against the in-process peer (tests/peer.py); where the contract is about
processes - one killed with SIGKILL, one hung, a full disk, a user the file system refuses, a
fork - other processes run tests/scripts/outbox_*.py. The test reads the file itself with the
sqlite3 module: what is in it is what a restart would find.
"""

import json
import os
import pwd
import re
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import gevent
import gevent.subprocess
import gevent.threadpool
import pytest

import hermes_gevent.lease as lease
import hermes_gevent.persistence as persistence
import hermes_gevent.sqlite_store as sqlite_store
import hermes_gevent.store as store
from hermes_gevent import ConfigError, WebSocketClient

from .conftest import Recorder, t
from .support import TESTS, free_port, last_json_line, run_script, wait_until

SCRIPTS = TESTS / "scripts"


# -- helpers ------------------------------------------------------------------------------------


def file_rows(path, identifier):
    """(text, owner) of ``identifier``'s messages in the file, oldest first (owner None: held by nobody)."""
    assert os.path.exists(path), path
    with closing(sqlite3.connect(path, timeout=t(10))) as conn:
        rows = conn.execute("SELECT payload, owner FROM messages WHERE identifier = ? ORDER BY seq", (identifier,))
        return [(bytes(payload).decode(), owner) for payload, owner in rows]


def texts(path, identifier):
    return [text for text, _ in file_rows(path, identifier)]


def leases(path, identifier):
    """owner -> (pid, renewed_at) of the running clients of ``identifier`` the file knows."""
    with closing(sqlite3.connect(path, timeout=t(10))) as conn:
        rows = conn.execute("SELECT owner, pid, renewed_at FROM owners WHERE identifier = ?", (identifier,))
        return {owner: (pid, renewed_at) for owner, pid, renewed_at in rows}


def numbered(messages):
    return [json.loads(m)["n"] for m in messages]


def down_client(make_client, peer, **options):
    """A started client whose server is down (the peer refuses) and that knows it already."""
    peer.refuse()
    errors = Recorder()
    client = make_client(connector=peer.connector, url=peer.url, on_error=errors, **options)
    client.start()
    errors.wait(1)
    return client


def refused_url():
    return f"ws://127.0.0.1:{free_port()}/ws"  # nothing listens there: a server that is down


def spill_into(path, identifier, messages):
    """A real outbox file at ``path`` holding ``messages``: a client whose server is down stops."""
    client = WebSocketClient(url=refused_url(), identifier=identifier, outbox_path=path, retry_delay=t(5))
    client.start()
    for message in messages:
        client.send_message(message)
    assert client.stop(timeout=0) == 0 and client.status()["messages_spilled"] == len(messages)


# -- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sync", ["sometimes", "STOP", "", None, 1])
def test_outbox_sync_other_than_stop_or_always_fails_at_construction(sync, tmp_path):
    for path in (None, str(tmp_path / "outbox.db")):
        with pytest.raises(ConfigError, match="OUTBOX_SYNC"):
            WebSocketClient(url="ws://127.0.0.1:9/ws", outbox_path=path, outbox_sync=sync)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("path", [42, b"/tmp/outbox.db", "/tmp/out\0box.db"])
def test_outbox_path_that_is_not_a_file_path_fails_at_construction(path):
    with pytest.raises(ConfigError, match="OUTBOX_PATH"):
        WebSocketClient(url="ws://127.0.0.1:9/ws", outbox_path=path)


def test_a_directory_as_outbox_path_fails_at_start_naming_it(tmp_path, make_client):
    client = make_client(url=refused_url(), outbox_path=str(tmp_path))  # construction does not touch the disk
    with pytest.raises(ConfigError, match=f"OUTBOX_PATH '{re.escape(str(tmp_path))}' is a directory"):
        client.start()
    assert not client.status()["started"] and os.listdir(tmp_path) == []


def test_a_path_in_a_missing_directory_fails_at_start_naming_it(tmp_path, make_client):
    path = str(tmp_path / "missing" / "outbox.db")
    client = make_client(url=refused_url(), outbox_path=path)
    with pytest.raises(ConfigError, match=f"OUTBOX_PATH '{re.escape(path)}' cannot be opened: No such file"):
        client.start()
    assert not client.status()["started"] and os.listdir(tmp_path) == []  # nothing created on the way


def _paths_refused_by_modes(base):
    """Outbox paths under ``base`` that modes refuse to a user who cannot pass them: in a directory
    it cannot write; a real outbox file it cannot write (beside a lock file it can); one it cannot
    read. Returns {case: path} and the bytes each file holds."""
    locked, shared = base / "locked", base / "shared"
    locked.mkdir()
    shared.mkdir()
    shared.chmod(0o777)
    paths = {"directory not writable": str(locked / "outbox.db")}
    contents = {}
    for case, mode in (("file read-only", 0o444), ("file unreadable", 0o000)):
        path = str(shared / f"{case.split()[1]}.db")
        spill_into(path, "perm", ["kept-0", "kept-1"])
        with open(path, "rb") as f:
            contents[path] = f.read()
        os.chmod(path + ".lock", 0o666)
        os.chmod(path, mode)
        paths[case] = path
    locked.chmod(0o555)
    return paths, contents


def _check_refused(paths, contents, results):
    for case, path in paths.items():
        result = results[path]
        assert result is not None, f"{case}: start() succeeded"
        assert result["type"] == "ConfigError", f"{case}: {result}"
        assert f"OUTBOX_PATH {path!r} cannot be" in result["text"], f"{case}: {result}"
        # Never mistaken for a corrupt file: nothing moved aside, nothing rewritten.
        directory = os.path.dirname(path)
        assert not [name for name in os.listdir(directory) if ".corrupt-" in name], (case, os.listdir(directory))
        if path in contents:
            mode = os.stat(path).st_mode
            os.chmod(path, 0o400)  # to read it back, as its owner
            with open(path, "rb") as f:
                assert f.read() == contents[path], case
            os.chmod(path, mode)
        else:
            assert os.listdir(directory) == [], case


def _run_json(args, timeout, **popen):
    """Run a helper as given (stopped by its PID whatever happens); its returncode, last JSON line, stderr."""
    proc = gevent.subprocess.Popen(args, cwd=str(TESTS.parent), stdout=gevent.subprocess.PIPE,
                                   stderr=gevent.subprocess.PIPE, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(t(5))
    report = last_json_line(out.decode()) if out.strip() else None
    return proc.returncode, report, err.decode()


@pytest.mark.parametrize("who", ["this user, chmod", "root without CAP_DAC_OVERRIDE", "user nobody"])
def test_a_path_the_user_may_not_open_fails_at_start_naming_outbox_path(who, tmp_path):
    """Root passes file modes: as root (CI) the case runs as root without the capabilities that
    let it (a subprocess that drops them), and as user nobody; as another user, with chmod here."""
    root = os.geteuid() == 0
    if who == "this user, chmod":
        if root:
            pytest.skip("root passes file modes: the other two variants cover it")
        paths, contents = _paths_refused_by_modes(tmp_path)
        try:
            results = {}
            for path in paths.values():
                client = WebSocketClient(url=refused_url(), outbox_path=path)
                with pytest.raises(ConfigError) as raised:
                    client.start()
                results[path] = {"type": type(raised.value).__name__, "text": str(raised.value)}
            _check_refused(paths, contents, results)
        finally:
            (tmp_path / "locked").chmod(0o755)
        return
    if not root:
        pytest.skip(f"{who} needs root to set up; the chmod variant covers this user")
    if who == "root without CAP_DAC_OVERRIDE":
        paths, contents = _paths_refused_by_modes(tmp_path)
        try:
            code, report, err = _run_json([sys.executable, str(SCRIPTS / "outbox_open.py"), "--drop-dac",
                                           refused_url(), *paths.values()], t(30))
        finally:
            (tmp_path / "locked").chmod(0o755)
        assert code == 0, err[-3000:]
        if "skip" in report:
            pytest.skip(report["skip"])
        assert report["euid"] == 0 and int(report["cap_eff"], 16) & 0b110 == 0, report  # root, without both
        _check_refused(paths, contents, report["results"])
        return
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user nobody")
    try:
        code, _, err = _run_json([sys.executable, "-c", "import gevent, hermes_gevent"], t(30), user="nobody")
    except OSError as exc:  # the interpreter itself (e.g. under /root) is out of its reach
        code, err = None, str(exc)
    if code != 0:
        pytest.skip(f"user nobody cannot run this interpreter and package: {err.strip()[-300:]}")
    base = tempfile.mkdtemp(prefix="hermes-outbox-perm-")  # under /tmp: tmp_path's parents are root's only
    try:
        os.chmod(base, 0o755)
        paths, contents = _paths_refused_by_modes(Path(base))
        code, report, err = _run_json([sys.executable, str(SCRIPTS / "outbox_open.py"), refused_url(),
                                       *paths.values()], t(30), user="nobody")
        assert code == 0, err[-3000:]
        assert report["euid"] == pwd.getpwnam("nobody").pw_uid
        _check_refused(paths, contents, report["results"])
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("path, sync", [(None, "stop"), ("", "stop"), ("", "always"), (None, "always")])
def test_no_outbox_path_means_memory_only(path, sync, peer, make_client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a file made from "" would land here
    drops = Recorder()
    client = down_client(make_client, peer, outbox_path=path, outbox_sync=sync, on_drop=drops)
    for i in range(3):
        assert client.send_message(f"m-{i}")
    assert client.stop(timeout=t(0.2)) == 3  # today's behaviour: counted as dropped
    assert drops.wait(3) == [(f"m-{i}", "stopped") for i in range(3)]
    status = client.status()
    assert (status["outbox_path"], status["outbox_sync"], status["messages_spilled"], status["outbox_errors"]) == (
        None, None, 0, 0)
    assert os.listdir(tmp_path) == []


def test_always_a_message_requeued_after_being_forgotten_is_put_back_in_the_file_under_its_number(tmp_path):
    """Acknowledgements off, "always": a message leaves the file once written; if the server's
    TCP then never acknowledged it (an abrupt failure), the client sends it again - and it must
    be in the file again meanwhile, in its old place, or a crash now would lose it."""
    db = sqlite_store._Database(str(tmp_path / "outbox.db"), "requeue", owner=1, max_size=100, strategy="drop_oldest")
    db.open()
    try:
        first, second, third = db.commit([(1, b"a"), (1, b"b"), (1, b"c")], [])
        db.commit([], [store.seq_of(first), store.seq_of(second)])  # written: forgotten
        assert texts(db.path, "requeue") == ["c"]
        db.commit([], [], [first, second])  # requeued: put back
        assert texts(db.path, "requeue") == ["a", "b", "c"]  # in their old place, before "c"
        db.commit([], [], [first])  # twice changes nothing
        assert texts(db.path, "requeue") == ["a", "b", "c"]
    finally:
        db.close()


def test_a_durable_send_waiting_for_a_commit_when_stop_begins_is_kept_or_refused_never_lost(peer, make_client,
                                                                                           tmp_path):
    """Two senders wait for commits when stop() begins: one in the commit under way, one in the
    next. Whatever send_message() answers, the message is then in the file (for the next start)
    or counted as dropped - not queued in memory where nothing will send it."""
    path = str(tmp_path / "outbox.db")
    drops = Recorder()
    client = down_client(make_client, peer, identifier="racing", outbox_path=path, outbox_sync="always",
                         on_drop=drops)
    committer = client.run.store
    with closing(sqlite3.connect(path, timeout=t(10), isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")  # the store's next commit waits for this lock, in its thread
        try:
            idle = committer._next
            first = gevent.spawn(client.send_message, "in-the-commit")
            wait_until(lambda: committer._next is not idle, t(5), "the committer to take the first message")
            second = gevent.spawn(client.send_message, "in-the-next")
            wait_until(lambda: committer._next.items, t(5), "the second message to wait for the next commit")
            stopping = gevent.spawn(client.stop, t(5))
            wait_until(lambda: committer._closing, t(5), "stop() to wait for the commit under way")
        finally:
            blocker.execute("ROLLBACK")
    assert stopping.get(timeout=t(10)) == 0
    answers = {"in-the-commit": first.get(timeout=t(5)), "in-the-next": second.get(timeout=t(5))}
    kept, dropped = texts(path, "racing"), [message for message, _ in drops.calls]
    for message, accepted in answers.items():
        assert (message in kept, message in dropped) == ((True, False) if accepted else (False, True)), (
            message, accepted, kept, dropped)
    assert client.queue_size == 0  # nothing left in a queue that no run will send

    # Started again, the same client sends what the file kept, once: not from the file and from memory.
    peer.accept()
    client.start()
    assert client.send_message("end")
    assert peer.wait_messages(len(kept) + 1) == [*kept, "end"]
    assert client.flush(t(5)) and peer.messages == [*kept, "end"]


# -- claims and adoption between processes ----------------------------------------------------------------


def start_holder(procs, path, count, claim_every):
    holder = procs([sys.executable, str(SCRIPTS / "outbox_holder.py"), path, "shared", str(count), str(claim_every),
                    refused_url()])
    line = wait_until(lambda: next((x for x in holder.output if x.startswith("{")), None), t(20), "the holder's report")
    report = json.loads(line)
    assert report["accepted"] == count, holder.text()
    assert file_rows(path, "shared") == [(f"h-{i}", report["owner"]) for i in range(count)]
    return holder, report


def test_the_production_figures_adopt_a_dead_processs_messages_within_30_seconds():
    # A dead PID is seen at the next claim (every CLAIM_EVERY); a hung process's lease expires
    # LEASE_TIMEOUT after its last renewal, and the next claim takes its messages.
    assert store.CLAIM_EVERY + lease.LEASE_TIMEOUT <= 30
    assert persistence.CLAIM_EVERY == store.CLAIM_EVERY  # the claim loop's period is that one
    assert lease.LEASE_TIMEOUT >= 2 * store.CLAIM_EVERY  # a live process late for one renewal keeps them


def test_a_process_killed_with_sigkill_loses_nothing_another_takes_its_messages_at_start(peer, make_client, procs,
                                                                                         tmp_path, log_watch):
    path = str(tmp_path / "outbox.db")
    holder, report = start_holder(procs, path, 200, claim_every=5)
    os.kill(report["pid"], signal.SIGKILL)  # no stop(), no atexit: only what the file holds
    holder.popen.wait(t(10))  # reaped: its PID is gone (a zombie's PID still answers kill(pid, 0))
    client = make_client(connector=peer.connector, url=peer.url, identifier="shared", outbox_path=path,
                         outbox_sync="always")
    client.start()
    assert client.send_message("mine")
    # Taken at start (LEASE_TIMEOUT, 25 s, has not passed: the PID check found it dead), and first.
    assert peer.wait_messages(201) == [f"h-{i}" for i in range(200)] + ["mine"]
    assert client.status()["messages_reloaded"] == 200
    assert "1 process(es) with this identifier are gone" in log_watch.wait("are gone").getMessage()
    assert list(leases(path, "shared")) == [client.run.store._db.owner]
    wait_until(lambda: texts(path, "shared") == [], t(5), "the delivered messages to leave the file")


def test_a_live_process_keeps_its_messages_a_hung_one_loses_them_after_lease_timeout(peer, make_client, procs, tmp_path,
                                                                                     monkeypatch, log_watch):
    lease_s = t(1.0)
    monkeypatch.setattr(lease, "LEASE_TIMEOUT", lease_s)  # as this process judges others' leases
    monkeypatch.setattr(persistence, "CLAIM_EVERY", 0.05)
    path = str(tmp_path / "outbox.db")
    holder, report = start_holder(procs, path, 50, claim_every=lease_s / 10)  # renews ten times per lease
    client = make_client(connector=peer.connector, url=peer.url, identifier="shared", outbox_path=path)
    client.start()
    mine = client.run.store._db.owner
    assert client.send_message("mine") and peer.wait_messages(1) == ["mine"]

    # Alive and renewing: claims go on past the time its lease would have expired unrenewed, and
    # take none of its messages.
    began = time.time()
    wait_until(lambda: leases(path, "shared")[mine][1] > began + 1.5 * lease_s, t(10), "claims past a lease period")
    assert leases(path, "shared")[report["owner"]][1] > began + lease_s  # it renewed meanwhile
    assert peer.messages == ["mine"] and client.status()["messages_reloaded"] == 0
    assert {owner for _, owner in file_rows(path, "shared")} == {report["owner"]}

    # Hung (SIGSTOP: its PID stays): once its lease is LEASE_TIMEOUT old, the next claim takes them.
    # The signal is sent while this test holds the write lock, so it never lands inside one of the
    # holder's transactions (a process stopped there would block every writer).
    with closing(sqlite3.connect(path, timeout=t(10), isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        os.kill(report["pid"], signal.SIGSTOP)
        conn.execute("ROLLBACK")
    last_renewal = leases(path, "shared")[report["owner"]][1]
    peer.wait_messages(51, t(10))
    taken_after = time.time() - last_renewal
    assert peer.messages == ["mine"] + [f"h-{i}" for i in range(50)]
    assert lease_s <= taken_after < lease_s + t(2), taken_after  # not before the lease expired; soon after
    assert client.status()["messages_reloaded"] == 50
    log_watch.wait("are gone")
    wait_until(lambda: texts(path, "shared") == [], t(5), "the delivered messages to leave the file")
    assert list(leases(path, "shared")) == [mine]


# -- a corrupt file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "truncated database"])
def test_a_corrupt_file_is_moved_aside_with_a_warning_and_a_fresh_one_is_used(kind, peer, make_client, tmp_path,
                                                                            log_watch):
    path = str(tmp_path / "outbox.db")
    if kind == "garbage":
        data = b"this is not an SQLite database\n" * 2000
    else:
        spill_into(path, "corrupt", [f"lost-{i}-".ljust(1000, "x") for i in range(200)])
        assert not os.path.exists(path + "-wal")  # checkpointed: the file holds every page
        with open(path, "rb") as f:
            whole = f.read()
        data = whole[: len(whole) // 2]
    with open(path, "wb") as f:
        f.write(data)
    client = down_client(make_client, peer, identifier="corrupt", outbox_path=path, outbox_sync="always")
    record = log_watch.wait("was corrupt")
    assert record.levelname == "WARNING"
    moved = re.search(r"moved it to (\S+) and started a fresh one", record.getMessage()).group(1)
    assert os.path.dirname(moved) == str(tmp_path) and moved != path
    with open(moved, "rb") as f:
        assert f.read() == data  # kept whole where the warning says, never emptied
    assert client.send_message("fresh-0") and texts(path, "corrupt") == ["fresh-0"]  # the fresh file works
    peer.accept()
    assert peer.wait_messages(1) == ["fresh-0"]
    assert client.status()["outbox_errors"] == 0


# -- a full disk -----------------------------------------------------------------------------------------


def _tmpfs_available(directory):
    if not shutil.which("unshare"):
        return "no unshare command"
    probe = gevent.subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o",
                                   "size=256k", "tmpfs", directory], capture_output=True, text=True, timeout=t(10))
    return None if probe.returncode == 0 else f"cannot mount a tmpfs here: {probe.stderr.strip()}"


@pytest.mark.parametrize("how, sender", [("RLIMIT_FSIZE", "greenlet"), ("tiny tmpfs", "greenlet"),
                                         ("RLIMIT_FSIZE", "thread")])
def test_a_full_disk_is_logged_once_counted_and_the_client_goes_on_in_memory(how, sender, tmp_path):
    script = str(SCRIPTS / "outbox_diskfull.py")
    if how == "RLIMIT_FSIZE":
        args = [sys.executable, script, "rlimit", str(tmp_path), sender]
    else:
        reason = _tmpfs_available(str(tmp_path))
        if reason:
            pytest.skip(reason)
        # In a mount namespace of its own: the tmpfs goes when the process does.
        args = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" "$3" tmpfs "$1" "$4"',
                "sh", str(tmp_path), sys.executable, script, sender]
    out, err = run_script(args, t(60))
    report = last_json_line(out)
    expected = [f"d-{i}-" + "x" * 1000 for i in range(60)]
    assert report["accepted"] == [True] * 60  # in the file while it could be written, in memory after
    assert 0 < report["rows_while_full"] < 60  # some commits made it before the disk was full
    assert report["outbox_errors_while_full"] == 1 and report["queue_size_while_full"] == 60
    assert report["delivered"] == expected and report["flushed"]
    (line,) = report["error_lines"]  # logged once
    assert "could not write" in line and "kept in memory only" in line
    assert (report["undelivered_at_stop"], report["dropped"], report["outbox_errors"]) == (0, 0, 1)
    # What was committed before the failure and delivered since is not left in the file to be sent
    # again by the next start.
    assert report["rows_after_stop"] == 0
    assert (report["after_restart"], report["reloaded"]) == (["after"], 0)


# -- fork ------------------------------------------------------------------------------------------------------


def test_a_forked_child_opens_a_store_of_its_own_and_leaves_the_parents_alone(peer, make_client, tmp_path):
    path = str(tmp_path / "outbox.db")
    out, _ = run_script([sys.executable, str(SCRIPTS / "outbox_fork.py"), path, "forked", refused_url()], t(40))
    reports = {r["who"]: r for r in map(json.loads, out.splitlines())}
    child, parent = reports["child"], reports["parent"]
    p_owner, c_owner = parent["owner"], child["owner"]
    before = {f"parent-before-{i}": p_owner for i in range(5)}

    assert child["held"] == {"store_is_parents": False, "store_path": None, "state": "pending", "queue_size": 0}
    assert child["accepted"] and child["own_store"] and c_owner != p_owner == child["parent_owner"]
    assert child["file"] == {"leases": {str(c_owner): child["pid"], str(p_owner): parent["pid"]},
                             "messages": {**before, "child-0": c_owner}, "check": "ok"}
    assert (child["undelivered"], child["spilled"]) == (0, 1)

    # The child exited normally (atexit, garbage collection) with a copy of the parent's connection:
    # the parent's store goes on, its messages and lease untouched.
    assert parent["child_exit"] == 0 and parent["accepted"] == [True] * 5
    assert parent["file_after_child"] == {"leases": {str(p_owner): parent["pid"]},
                                          "messages": {**before, "child-0": None}, "check": "ok"}
    assert parent["accepted_after"] and parent["same_store"]
    assert (parent["undelivered"], parent["spilled"], parent["outbox_errors"]) == (0, 6, 0)
    assert parent["file_at_end"]["check"] == "ok" and parent["file_at_end"]["leases"] == {}

    # Each message once, to the next client of the identifier: nothing lost or doubled by the fork.
    client = make_client(connector=peer.connector, url=peer.url, identifier="forked", outbox_path=path)
    client.start()
    got = peer.wait_messages(7)
    assert sorted(got) == sorted([*before, "child-0", "parent-after"])
    assert [m for m in got if m.startswith("parent")] == [*before, "parent-after"]  # each process's own order
    assert client.send_message("end") and peer.wait_messages(8) == [*got, "end"]


# -- found in review: starting, claiming, spilling ---------------------------------------------


def test_two_greenlets_starting_a_client_on_first_use_start_it_once(peer, make_client, tmp_path):
    """Opening the file waits on the store's thread: a second first use meanwhile (two requests
    at once in a fresh worker) must wait for that start, not start a second run."""
    path = str(tmp_path / "outbox.db")
    client = make_client(connector=peer.connector, url=peer.url, identifier="twice", outbox_path=path)
    client.start_on_first_use()
    results = gevent.joinall([gevent.spawn(client.send_message, f"m-{i}") for i in range(4)], timeout=t(10))
    assert [g.value for g in results] == [True] * 4
    assert peer.wait_messages(4) == [f"m-{i}" for i in range(4)]
    assert len(leases(path, "twice")) == 1  # one run, one store
    assert len(peer.attempts) == 1 and len(peer.connections) == 1  # one supervisor


def test_a_first_use_from_the_hub_starts_the_client_without_blocking_the_hub(peer, make_client, tmp_path):
    """A signal handler or loop callback runs in the hub, which must never wait on the disk:
    the start goes to a greenlet and the message to the queue."""
    client = make_client(connector=peer.connector, url=peer.url, identifier="hub", outbox_path=str(tmp_path / "o.db"))
    client.start_on_first_use()
    outcome = []

    def in_the_hub():
        try:
            outcome.append(client.send_message("from the hub"))
        except BaseException as exc:  # BlockingSwitchOutError before the fix
            outcome.append(exc)

    gevent.get_hub().loop.run_callback(in_the_hub)
    wait_until(lambda: outcome, t(5), "the callback")
    assert outcome == [True]
    assert peer.wait_messages(1) == ["from the hub"]


def test_the_first_claim_takes_a_full_file_before_anything_sent_since_start(peer, make_client, tmp_path):
    """A deploy while the server was down with a full queue leaves MAX_QUEUE_SIZE messages in the
    file; the new client's first claim takes them all, though a message is queued already."""
    path = str(tmp_path / "outbox.db")
    spill_into_with(path, "full", [f"spilled-{i}" for i in range(10)], max_queue_size=10)
    client = make_client(connector=peer.connector, url=peer.url, identifier="full", outbox_path=path, max_queue_size=10)
    client.start_on_first_use()
    assert client.send_message("new-0")  # the first use: starts, then queues
    assert peer.wait_messages(11) == [f"spilled-{i}" for i in range(10)] + ["new-0"]
    assert client.status()["messages_reloaded"] == 10


def spill_into_with(path, identifier, messages, **options):
    client = WebSocketClient(url=refused_url(), identifier=identifier, outbox_path=path, retry_delay=t(5), **options)
    client.start()
    for message in messages:
        client.send_message(message)
    assert client.stop(timeout=0) == 0 and client.status()["messages_spilled"] == len(messages)


def test_a_spill_keeps_messages_already_in_the_file_in_their_place(tmp_path):
    """Spilled again (a second deploy while the server is still down), messages keep their
    numbers: older ones stay ahead of what other processes kept since."""
    path = str(tmp_path / "outbox.db")
    a = sqlite_store._Database(path, "order", owner=1, max_size=100, strategy="drop_oldest")
    b = sqlite_store._Database(path, "order", owner=2, max_size=100, strategy="drop_oldest")
    a.open()
    b.open()
    try:
        a.spill([(1, b"a0"), (1, b"a1")], [], [])  # the first deploy's worker keeps two
        taken, _ = b.claim(10, [])  # the second deploy's worker takes them over ...
        assert [item[1] for item in taken] == [b"a0", b"a1"]
        c = sqlite_store._Database(path, "order", owner=3, max_size=100, strategy="drop_oldest")
        c.open()
        c.spill([(1, b"c0")], [], [])  # ... while another worker of that deploy keeps a newer one
        c.close()
        b.spill(taken, [], [])  # the server is still down: it keeps them again
        assert texts(path, "order") == ["a0", "a1", "c0"]
    finally:
        a.close()
        b.close()


def test_a_process_that_lost_its_lease_does_not_keep_messages_another_took_over(tmp_path):
    """A process whose hub was blocked past LEASE_TIMEOUT finds its messages taken over when it
    stops: they are the other process's to send now, not to be kept twice."""
    path = str(tmp_path / "outbox.db")
    hung = sqlite_store._Database(path, "fence", owner=1, max_size=100, strategy="drop_oldest")
    live = sqlite_store._Database(path, "fence", owner=2, max_size=100, strategy="drop_oldest")
    hung.open()
    live.open()
    try:
        held = hung.commit([(1, b"h0"), (1, b"h1")], [])
        with closing(sqlite3.connect(path)) as conn, conn:  # its lease, not renewed for too long
            conn.execute("UPDATE owners SET renewed_at = renewed_at - ? WHERE owner = 1", (lease.LEASE_TIMEOUT + 1,))
        taken, dead = live.claim(10, [])
        assert dead == 1 and [item[1] for item in taken] == [b"h0", b"h1"]
        kept, refused, evicted, gone = hung.spill(held + [(1, b"h2")], [], [])  # it resumes, and stops
        assert (kept, refused, evicted, gone) == (1, [], [], 2)
        assert file_rows(path, "fence") == [("h0", 2), ("h1", 2), ("h2", None)]  # once each
    finally:
        hung.close()
        live.close()
