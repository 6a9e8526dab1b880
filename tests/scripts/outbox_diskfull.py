"""Run by test_store.py: the outbox file's disk fills up while OUTBOX_SYNC="always" sends.

usage: outbox_diskfull.py rlimit|tmpfs DIR greenlet|thread

rlimit: a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes past it fail (EFBIG);
tmpfs: DIR is a small tmpfs (mounted by the test in a mount namespace of this process's own),
filled by a filler file but for a few pages (ENOSPC). While the server (an in-process peer) is
down, a greenlet (or an OS thread) sends: a few commits succeed, then one fails. Then the server comes up; then the disk is freed
(the limit raised, the filler removed) and the client stops; then a second client starts on
the same file. Prints one JSON line with what each step saw.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests package, for the peer

from gevent import monkey  # noqa: E402

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402

import gevent.threadpool  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402
from tests.peer import Peer  # noqa: E402
from tests.support import wait_until  # noqa: E402

mode, directory, sender = sys.argv[1], sys.argv[2], sys.argv[3]
path = os.path.join(directory, "outbox.db")
COUNT = 60


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


records = Records()
logging.getLogger("hermes_gevent").addHandler(records)
logging.getLogger("hermes_gevent").setLevel(logging.DEBUG)


def rows():
    with sqlite3.connect(path) as conn:
        count = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    conn.close()
    return count


def client_for(peer):
    return WebSocketClient(connector=peer.connector, url=peer.url, identifier="disk", outbox_path=path,
                           outbox_sync="always", retry_delay=0.05, max_retry_delay=0.1, retry_jitter=0)


report = {}
peer = Peer()
peer.refuse()
client = client_for(peer)
client.start()
client.run.store_ready.wait(10)  # the first claim (it renews the lease: a write) is done
filler = os.path.join(directory, "filler")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
if mode == "rlimit":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path + "-wal") + 32 * 1024, hard))
else:
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:  # fill the file system...
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, os.path.getsize(filler) - 32 * 1024))  # ...but for 32 KiB


def send_all():
    return [client.send_message(f"d-{i}-" + "x" * 1000) for i in range(COUNT)]


if sender == "thread":  # an OS thread (an unpatched app's thread pool): it commits with a connection of its own
    pool = gevent.threadpool.ThreadPool(1)
    report["accepted"] = pool.apply(send_all)
    pool.kill()
else:
    report["accepted"] = send_all()
status = client.status()
report["outbox_errors_while_full"] = status["outbox_errors"]
report["rows_while_full"] = rows()
report["queue_size_while_full"] = status["queue_size"]

peer.accept()
report["delivered"] = peer.wait_messages(COUNT, 10)
report["flushed"] = client.flush(10)

if mode == "rlimit":  # the disk has room again
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
else:
    os.unlink(filler)
report["undelivered_at_stop"] = client.stop(5)
status = client.status()
report["dropped"] = status["messages_dropped"]
report["outbox_errors"] = status["outbox_errors"]
report["rows_after_stop"] = rows()
report["error_lines"] = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]

again = client_for(peer)
again.start()
again.send_message("after")
wait_until(lambda: "after" in peer.messages, 10, "the second client's message")
report["after_restart"] = peer.messages[COUNT:]
report["reloaded"] = again.status()["messages_reloaded"]
again.stop(5)
peer.stop()
print(json.dumps(report), flush=True)
