"""The app the load tests serve with ``gunicorn -k gevent -w 1`` (see test_load.py).

``GET /send`` sends one numbered message ("n:<number>") per request through
``current_app.hermes``, with the settings a user gets by default. Messages the
server pushes ("push-<number>-<time sent>-...") are checked for order and lag in the handler. A sampler
greenlet records the queue's depth every 10 ms. ``GET /report`` returns all of it.
Extra settings come from the environment as LOAD_HERMES_<SETTING>=<number>.
"""

import itertools
import os
import time

import gevent
from flask import Flask, current_app

from hermes_gevent.flask import Hermes

SAMPLE_EVERY = 0.01

app = Flask(__name__)
for key, value in os.environ.items():
    if key.startswith("LOAD_HERMES_"):
        app.config[key.removeprefix("LOAD_")] = float(value)
hermes = Hermes()
lags = []
numbers = itertools.count()
seen = {"sent": 0, "max_queue": 0, "queue_samples": 0, "received": 0, "out_of_order": 0, "last": -1, "max_gap": 0.0,
        "last_at": None, "max_lag": 0.0, "max_read": 0}


@hermes.on_message
def record(message):
    now = time.monotonic()
    _, number, sent_at, _ = message.split("-", 3)
    number = int(number)
    lag = time.time() - float(sent_at)  # from the server's send to here
    seen["max_lag"] = max(seen["max_lag"], lag)
    lags.append(lag)
    seen["received"] += 1
    if number != seen["last"] + 1:
        seen["out_of_order"] += 1
    seen["last"] = number
    if seen["last_at"] is not None:  # the server streams without pause: a gap is the reader's stall
        seen["max_gap"] = max(seen["max_gap"], now - seen["last_at"])
    seen["last_at"] = now
    session = current_app.hermes.run.session  # test-only peek: did reads find more than 16 KiB waiting?
    if session is not None:
        seen["max_read"] = max(seen["max_read"], session.conn.last_read_size)


hermes.init_app(app)


def sample_queue():
    client = app.extensions["hermes"].client
    while True:
        seen["max_queue"] = max(seen["max_queue"], client.queue_size)
        seen["queue_samples"] += 1
        gevent.sleep(SAMPLE_EVERY)


gevent.spawn(sample_queue)


@app.get("/send")
def send():
    number = next(numbers)
    seen["sent"] = number + 1
    current_app.hermes.send_message(f"n:{number}")
    return "ok"


@app.get("/report")
def report():
    ordered = sorted(lags) or [0.0]
    percentiles = {f"lag_p{p}": ordered[min(len(ordered) - 1, len(ordered) * p // 100)] for p in (50, 99)}
    return {**{k: v for k, v in seen.items() if k != "last_at"}, **percentiles, "status": current_app.hermes.status(),
            "loop_turns": gevent.get_hub().loop.iteration}  # libev counts its turns (-1 on libuv)
