"""The app for the "in a real app" benchmark: the same endpoint with and without a send.

    gunicorn -k gevent -w 1 benchmarks.flask_app:app     (HERMES_WS_URL set by the harness)
"""

from flask import Flask, current_app

from hermes_gevent.flask import Hermes

app = Flask(__name__)
app.config["HERMES_MAX_QUEUE_SIZE"] = 1_000_000
Hermes(app)


@app.get("/plain")
def plain():
    return {"ok": True}


@app.get("/send")
def send():
    current_app.hermes.send_message({"event": "page_view", "path": "/send"})
    return {"ok": True}
