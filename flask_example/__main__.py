"""``python -m flask_example``: the app on gevent's WSGI server, plus a demo
message server when HERMES_WS_URL is not set. Everything listens on 127.0.0.1.

The demo server acknowledges messages, so with it the app turns acknowledgements
on (HERMES_ACK_TIMEOUT, 5 s unless the environment or .env says otherwise). What a
stop cannot deliver is kept in an outbox file (HERMES_OUTBOX_PATH, in the system's
temporary directory unless set) and sent first at the next start."""

from gevent import monkey

monkey.patch_all()  # first, before anything imports socket or ssl

import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from dotenv import load_dotenv  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402


#: ACK_TIMEOUT with the demo server: seconds before an unacknowledged message is sent again.
DEMO_ACK_TIMEOUT = 5


def main() -> int:
    load_dotenv(Path.cwd() / ".env")
    demo = None
    if not os.environ.get("HERMES_WS_URL"):
        from flask_example.demo_server import DemoServer

        demo = DemoServer(port=int(os.environ.get("DEMO_WS_PORT", "0")),
                          ack_id_key=os.environ.get("HERMES_ACK_ID_KEY", "id")).start()
        os.environ["HERMES_WS_URL"] = demo.url
        os.environ.setdefault("HERMES_ACK_TIMEOUT", str(DEMO_ACK_TIMEOUT))  # it acknowledges
        print(f"demo message server: {demo.url} (it acknowledges messages)", flush=True)

    # The outbox file: what Ctrl-C cannot deliver waits there for the next start.
    os.environ.setdefault("HERMES_OUTBOX_PATH", str(Path(tempfile.gettempdir()) / "flask_example_outbox.db"))

    from flask_example import create_app

    app = create_app()
    app.extensions["example_demo"] = demo  # the page's "Stop server" / "Start server" buttons
    ack_timeout = app.hermes.settings.ACK_TIMEOUT
    print(f"acknowledgements: {'off' if ack_timeout is None else f'on (ACK_TIMEOUT {ack_timeout:g} s)'}", flush=True)
    settings = app.hermes.settings
    print(f"outbox: {settings.OUTBOX_PATH or 'memory only'}"
          + (f" (OUTBOX_SYNC={settings.OUTBOX_SYNC})" if settings.OUTBOX_PATH else ""), flush=True)
    http = WSGIServer(("127.0.0.1", int(os.environ.get("PORT", "5000"))), app, log=None)
    http.start()
    host, port = http.address[:2]
    print(f"flask_example running: open http://{host}:{port}/  (Ctrl-C to stop)", flush=True)

    stopping = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    stopping.wait()
    http.stop(timeout=2)
    undelivered = app.hermes.stop()
    if demo is not None:
        demo.stop()
    spilled = app.hermes.status()["messages_spilled"]
    print(f"stopped ({undelivered} message(s) undelivered, {spilled} kept in the outbox file)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
