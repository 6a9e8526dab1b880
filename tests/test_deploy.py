"""Real servers: gunicorn gevent workers (with and without --preload), flask run,
and `python -m flask_example`, each against a real WebSocket server that records
connections, close codes and messages."""

import json
import os
import signal
import sys
import time
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

from .support import free_port, http, t, wait_http

ROOT = Path(__file__).parent.parent


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_gunicorn_gevent_workers(server, procs, preload):
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "-c", "flask_example/gunicorn.conf.py", "flask_example.wsgi:app"]
    if preload:
        args.insert(-1, "--preload")
    gunicorn = procs(args, HERMES_WS_URL=server.url, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2",
                     GUNICORN_GRACEFUL_TIMEOUT="10", HERMES_WS_LOG="true")
    master = gunicorn.popen.pid
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/status", t(30))
    server.wait_for(lambda: len(server.of("connect")) >= 2, t(15), "two worker connections")

    # POST until both workers have answered (bounded), counting what was accepted.
    workers, accepted = set(), []
    for i in range(400):
        reply = http("POST", f"{base}/notify", {"message": f"post-{i}"})
        assert reply["accepted"] is True
        accepted.append(f"post-{i}")
        workers.add(http("GET", f"{base}/status")["pid"])
        if len(workers) == 2 and i >= 20:
            break
    assert len(workers) == 2, "requests never reached the second worker"

    # SIGTERM right after the last POSTs: queued messages must still be flushed.
    gunicorn.popen.send_signal(signal.SIGTERM)
    assert gunicorn.popen.wait(t(30)) == 0, gunicorn.text()[-3000:]
    server.wait_for(lambda: len(server.of("close")) == 2, t(10), "both connections closed")

    connects = server.of("connect")
    pids = {int(e["headers"]["X-Worker-Pid"]) for e in connects}
    assert len(connects) == 2 and pids == workers and master not in pids  # one per worker, none from the master
    assert [e["code"] for e in server.of("close")] == [1000, 1000]
    received = [json.loads(text)["message"] for text in server.texts()]
    assert sorted(received) == sorted(accepted)  # nothing lost, nothing twice


def test_flask_run(server, procs, tmp_path):
    """`flask run` (werkzeug's threaded dev server, unpatched): the client still starts in the
    serving process on the first request... when the app patches gevent first, as documented."""
    port = free_port()
    app_file = tmp_path / "devapp.py"
    app_file.write_text(
        "from gevent import monkey; monkey.patch_all()\n"
        "from flask_example import create_app\n"
        "app = create_app()\n"
    )
    procs([sys.executable, "-m", "flask", "--app", "devapp", "run", "--port", str(port), "--no-reload"],
                HERMES_WS_URL=server.url, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/status", t(30))
    reply = http("POST", f"{base}/notify", {"message": "from flask run"})
    assert reply["accepted"] is True
    server.wait_for(lambda: server.texts(), t(10), "the message")
    assert json.loads(server.texts()[0])["message"] == "from flask run"
    assert len(server.of("connect")) == 1


def test_python_m_flask_example_runs_the_demo(procs, tmp_path):
    port = free_port()
    outbox = tmp_path / "outbox.db"
    demo = procs([sys.executable, "-m", "flask_example"], PORT=str(port), HERMES_WS_URL="", HERMES_OUTBOX_PATH=str(outbox))
    base = f"http://127.0.0.1:{port}"
    status = wait_http(f"{base}/status", t(30))
    deadline = time.monotonic() + t(10)
    while not status["connected"] and time.monotonic() < deadline:
        gevent.sleep(0.1)
        status = http("GET", f"{base}/status")
    assert status["connected"], demo.text()
    assert f"open http://127.0.0.1:{port}/" in demo.text()
    assert http("POST", f"{base}/notify", {"message": "round trip"})["accepted"] is True
    deadline = time.monotonic() + t(10)
    messages = []
    while time.monotonic() < deadline:  # the demo server echoes it and pushes ticks every 3 s
        messages = [m["message"] for m in http("GET", f"{base}/messages")]
        if "echo: round trip" in messages and any(m.startswith("notification: tick") for m in messages):
            break
        gevent.sleep(0.2)
    assert "echo: round trip" in messages and any(m.startswith("notification: tick") for m in messages), messages
    # the demo server acknowledges, and with it the app turns acknowledgements on
    assert "acknowledgements: on (ACK_TIMEOUT 5 s)" in demo.text()
    deadline = time.monotonic() + t(10)
    status = http("GET", f"{base}/status")
    while status["unacked"] and time.monotonic() < deadline:
        gevent.sleep(0.1)
        status = http("GET", f"{base}/status")
    assert status["ack_timeout"] == 5 and status["messages_acked"] >= 1 and status["unacked"] == 0, status
    assert status["messages_resent"] == 0, status
    demo.popen.send_signal(signal.SIGTERM)
    assert demo.popen.wait(t(10)) == 0
    assert f"outbox: {outbox} (OUTBOX_SYNC=stop)" in demo.text() and outbox.exists()
    assert "stopped (0 message(s) undelivered, 0 kept in the outbox file)" in demo.text()
