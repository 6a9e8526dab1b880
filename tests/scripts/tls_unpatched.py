"""Run by test_tls.py in a process gevent has NOT patched: a client given a standard-library
SSLContext (which would make a blocking socket) connects, echoes small and large messages,
and reports which TLS socket it used. usage: tls_unpatched.py URL CAFILE"""

import json
import ssl
import sys

from hermes_gevent import WebSocketClient

url, cafile = sys.argv[1:3]
got = []
failures = []
client = WebSocketClient(url=url, ssl_context=ssl.create_default_context(cafile=cafile), on_message=got.append,
                         on_give_up=lambda exc: failures.append(type(exc).__name__), retry_delay=0.05,
                         connect_timeout=5)
client.start()
report = {"connected": client.wait_until_connected(10)}
if report["connected"]:
    report["socket"] = type(client._session.conn.sock).__name__
    big = "x" * (1 << 20)
    for message in ("over tls, unpatched", big):
        client.send_message(message)
    import gevent

    with gevent.Timeout(10, False):
        while len(got) < 2:
            gevent.sleep(0.01)
    report["echoes"] = [len(m) for m in got]
else:
    import gevent

    gevent.sleep(0.5)
report["gave_up"] = failures
report["undelivered"] = client.stop(5)
print(json.dumps(report))
