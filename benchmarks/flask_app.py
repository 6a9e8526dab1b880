"""The app for the "in a real app" benchmark: the same endpoint with and without a send.

    gunicorn -k gevent -w 1 benchmarks.flask_app:app     (HERMES_WS_URL set by the harness)

The client keeps every default a user gets (MAX_QUEUE_SIZE 10000, drop_oldest): a
figure measured with a queue nobody configures would hide drops. /send carries its
send time so the sink's /lag path can measure delivery lag; /hermes-status lets the
harness read drops, the deepest queue seen and the worker's PID (for its CPU time).
"""

import os
import time

import gevent
from flask import Flask, current_app

from hermes_gevent.flask import Hermes

app = Flask(__name__)
Hermes(app)

#: The queue depth is sampled this often; an hour of samples at most (a benchmark needs a minute).
SAMPLE_EVERY = 0.01
SAMPLES = 360_000
depth = {"max": 0, "sampler": None}


@app.before_request
def start_sampler():
    # Started by the first request, not at import: the worker that serves is the one to watch.
    if depth["sampler"] is None:
        depth["sampler"] = gevent.spawn(sample_queue_depth, current_app.hermes)


def sample_queue_depth(client) -> None:
    for _ in range(SAMPLES):
        depth["max"] = max(depth["max"], client.queue_size)
        gevent.sleep(SAMPLE_EVERY)


@app.get("/plain")
def plain():
    return {"ok": True}


@app.get("/send")
def send():
    current_app.hermes.send_message({"event": "page_view", "path": "/send", "t": time.time()})
    return {"ok": True}


@app.get("/hermes-status")
def hermes_status():
    # the worker's PID: the harness reads its CPU time from /proc/<pid>/stat around each wrk run
    return {**current_app.hermes.status(), "queue_size_max": depth["max"], "pid": os.getpid()}
