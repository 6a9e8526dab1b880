"""flask_example: a small real app on hermes_gevent.

    python -m flask_example                                      everything, one process
    gunicorn -c flask_example/gunicorn.conf.py flask_example.wsgi:app   gevent workers

Routes: ``/`` (status and the last messages, refreshing itself),
``POST /notify`` (send a message from the request handler), ``GET /status``
(JSON), ``GET /messages`` (JSON), ``GET /history`` (JSON: per-second samples of
the last minutes, for the page's chart), and ``/healthz`` (the extension's health
endpoint). With the embedded demo server of ``python -m flask_example``,
``POST /demo/stop`` and ``POST /demo/start`` stop it and start it again on the
same port (404 without it).

Every client setting can be given in the environment as ``HERMES_<SETTING>``.
Prometheus metrics: ``HERMES_METRICS=1 HERMES_METRICS_PATH=/metrics`` (the
``hermes_gevent[metrics]`` extra; under gunicorn with ``PROMETHEUS_MULTIPROC_DIR``
set, the endpoint serves every worker's sum).

Acknowledgements: with ``HERMES_ACK_TIMEOUT`` set (in app.config, or in the
environment as seconds), every message carries an id and waits for the server's
``{"ack": [ids]}``; the page shows how many wait, were acknowledged and were sent
again. Only for a server that acknowledges: ``python -m flask_example`` turns them
on for its demo server, which does.

The outbox file: with ``HERMES_OUTBOX_PATH`` set, what a stop (a deploy, Ctrl-C)
cannot deliver is kept in that SQLite file and sent first at the next start;
``HERMES_OUTBOX_SYNC=always`` makes every accepted message durable before the
request returns. ``python -m flask_example`` keeps one in the system's temporary
directory.
"""

from __future__ import annotations

import collections
import json
import os
import time

from flask import Flask, current_app, jsonify, render_template, request

from hermes_gevent import WebSocketClient
from hermes_gevent.flask import Hermes
from hermes_gevent.settings import Defaults, Settings


class ExampleClient(WebSocketClient):
    """Every gunicorn worker connects with the same identifier; the pid tells them apart."""

    def headers(self):
        return {**super().headers(), "X-Worker-Pid": str(os.getpid())}


hermes = Hermes(client_class=ExampleClient)
INBOX_SIZE = 50
#: Seconds of history the page's chart shows (one sample a second at most).
HISTORY_SECONDS = 180


class History:
    """The last HISTORY_SECONDS per-second samples of this process's client, taken when the
    page asks (/status, /history: it polls every second): no greenlet of its own, so nothing
    runs before a gunicorn fork. Rates are the counters' differences between samples."""

    def __init__(self, size: int = HISTORY_SECONDS) -> None:
        self.samples: collections.deque = collections.deque(maxlen=size + 1)

    def sample(self, status: dict) -> None:
        now = time.time()
        if self.samples and int(self.samples[-1]["t"]) == int(now):
            return  # one a second
        self.samples.append({"t": now, "sent": status["messages_sent"], "received": status["messages_received"],
                             "queue_size": status["queue_size"], "connected": bool(status["connected"])})

    def rows(self) -> list:
        out, previous = [], None
        for s in self.samples:
            if previous is not None:
                gap = max(s["t"] - previous["t"], 1e-3)
                out.append({"t": round(s["t"], 3), "sent_per_s": max(s["sent"] - previous["sent"], 0) / gap,
                            "received_per_s": max(s["received"] - previous["received"], 0) / gap,
                            "queue_size": s["queue_size"], "connected": s["connected"]})
            previous = s
        return out


@hermes.on_message
def remember(message):
    """Runs inside an app context for every message the server sends."""
    inbox = current_app.extensions["example_inbox"]
    if isinstance(message, bytes):
        text = f"<{len(message)} bytes>"
    else:
        try:
            data = json.loads(message)
            text = f"{data.get('operation', '?')}: {data.get('message', message)}"
        except (ValueError, AttributeError):
            text = message
    inbox.appendleft({"at": time.strftime("%H:%M:%S"), "message": text})


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False}


def settings_from_environment() -> dict:
    """Every client setting given as HERMES_<SETTING> in the environment (HERMES_ACK_TIMEOUT=5,
    HERMES_OUTBOX_PATH=/var/lib/app/outbox.db, HERMES_OUTBOX_SYNC=always...): numbers as numbers,
    "", "none" and "off" as None."""
    found = {}
    for name in Settings.names():
        raw = os.environ.get(f"HERMES_{name}")
        if raw is None:
            continue
        text = raw.strip()
        value: object = text
        if text.lower() in ("", "none", "off"):
            value = None
        elif isinstance(getattr(Defaults, name), bool) and text.lower() in _FLAGS:
            value = _FLAGS[text.lower()]  # HERMES_METRICS=1
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    pass
        found[f"HERMES_{name}"] = value
    return found


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.setdefault("HERMES_HEALTH_PATH", "/healthz")
    app.config.setdefault("HERMES_METRICS_PATH", os.environ.get("HERMES_METRICS_PATH") or None)  # e.g. /metrics
    app.config.setdefault("HERMES_WS_IDENTIFIER", os.environ.get("HERMES_WS_IDENTIFIER", "flask-example"))
    for key, value in settings_from_environment().items():
        app.config.setdefault(key, value)
    if config:
        app.config.update(config)
    app.extensions["example_inbox"] = collections.deque(maxlen=INBOX_SIZE)
    app.extensions["example_history"] = History()
    app.extensions.setdefault("example_demo", None)  # python -m flask_example sets its DemoServer
    hermes.init_app(app)

    @app.get("/")
    def index():
        return render_template("index.html", demo=current_app.extensions["example_demo"] is not None)

    @app.post("/notify")
    def notify():
        payload = request.get_json(silent=True) or request.form
        text = (payload.get("message") or "").strip()
        if not text:
            return jsonify(error="give a non-empty 'message'"), 400
        accepted = current_app.hermes.send_message(
            {"operation": "notification", "message": text, "worker": os.getpid()}
        )
        return jsonify(accepted=accepted, queue_size=current_app.hermes.status()["queue_size"]), 202

    @app.get("/status")
    def status():
        client = current_app.hermes
        snapshot = client.status()
        current_app.extensions["example_history"].sample(snapshot)
        demo = current_app.extensions["example_demo"]
        return jsonify(pid=os.getpid(), ack_timeout=client.settings.ACK_TIMEOUT,
                       demo_running=None if demo is None else demo.running, **snapshot)

    @app.get("/history")
    def history():
        current_app.extensions["example_history"].sample(current_app.hermes.status())
        return jsonify(seconds=HISTORY_SECONDS, samples=current_app.extensions["example_history"].rows())

    @app.post("/demo/stop")
    def demo_stop():
        demo = current_app.extensions["example_demo"]
        if demo is None:
            return jsonify(error="no embedded demo server (HERMES_WS_URL is set)"), 404
        demo.stop()
        return jsonify(running=demo.running, url=demo.url)

    @app.post("/demo/start")
    def demo_start():
        demo = current_app.extensions["example_demo"]
        if demo is None:
            return jsonify(error="no embedded demo server (HERMES_WS_URL is set)"), 404
        demo.start()
        return jsonify(running=demo.running, url=demo.url)

    @app.get("/messages")
    def messages():
        return jsonify(list(current_app.extensions["example_inbox"]))

    return app
