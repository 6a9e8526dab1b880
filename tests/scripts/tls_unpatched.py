"""Run by test_tls.py in a process gevent has NOT patched: a client given a standard-library
SSLContext (which would make a blocking socket) connects, echoes small and large messages,
and reports which TLS socket it used. usage: tls_unpatched.py URL CAFILE"""

import json
import ssl
import sys

import gevent
import gevent.event

from hermes_gevent import WebSocketClient

url, cafile = sys.argv[1:3]
got = []
failures = []
settled = gevent.event.Event()  # connected, or gave up
echoed = gevent.event.Event()


def on_message(message):
    got.append(message)
    if len(got) == 2:
        echoed.set()


def on_give_up(exc):
    failures.append(type(exc).__name__)
    settled.set()


client = WebSocketClient(url=url, ssl_context=ssl.create_default_context(cafile=cafile), on_message=on_message,
                         on_open=settled.set, on_give_up=on_give_up, retry_delay=0.05, connect_timeout=5)
client.start()
settled.wait(10)
report = {"connected": client.connected, "gave_up": failures}
if report["connected"]:
    report["socket"] = type(client.run.session.conn.sock).__name__
    for message in ("over tls, unpatched", "x" * (1 << 20)):
        client.send_message(message)
    echoed.wait(10)
    report["echoes"] = [len(m) for m in got]
report["undelivered"] = client.stop(5)
print(json.dumps(report))
