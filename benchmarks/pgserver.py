"""A private PostgreSQL cluster for the benchmarks, in a process of its own:

    python -m benchmarks.pgserver

starts tests/pgcluster.py's PostgresCluster (its own temporary data directory on the disk the
system keeps temporary files on, a free port on 127.0.0.1, password authentication, fsync and
synchronous_commit on: the figures are real commits), prints one JSON line - {"url", "port",
"version", "initdb_seconds", "start_seconds", "data"} - and keeps it until it is told to go:
SIGTERM, SIGINT, or its standard input closing (the harness died). Then it stops the server and
removes the directory, and exits. PostgreSQL not installed (or psycopg missing): one JSON line
{"unavailable": reason}, exit status 0.

Why a process of its own: PostgresCluster runs its server under gevent.subprocess, whose child
watcher reaps every child of the process it runs in - the harness, a plain script that runs its
probes with the standard library's subprocess, must not have one.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.os  # noqa: E402

from tests.pgcluster import PostgresCluster, PostgresUnavailable  # noqa: E402


def main() -> int:
    try:
        cluster = PostgresCluster()
    except PostgresUnavailable as exc:
        print(json.dumps({"unavailable": str(exc)}), flush=True)
        return 0
    leave = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, leave.set)

    def watch_stdin() -> None:
        fd = sys.stdin.fileno()
        try:
            gevent.os.make_nonblocking(fd)
            while gevent.os.nb_read(fd, 1024):  # waits in the hub, not in the OS
                pass
        except OSError:
            pass
        leave.set()  # the harness is gone (or closed the pipe): so are we

    try:
        cluster.start()
        version = cluster.execute("SHOW server_version")[0][0]
        print(json.dumps({"url": cluster.url, "port": cluster.port, "version": version, "data": str(cluster.data),
                          "initdb_seconds": cluster.timings.get("initdb"),
                          "start_seconds": cluster.timings.get("start")}), flush=True)
        gevent.spawn(watch_stdin)
        leave.wait()
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
