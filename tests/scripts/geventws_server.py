"""gevent-websocket's server (which has no extensions, so no permessage-deflate), echoing.

    python tests/scripts/geventws_server.py

Prints "listening <port>" (127.0.0.1), then echoes every message on /ws, and prints
"extensions <header or ->" for each upgrade request it serves.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"websocket only"]
    print("extensions", environ.get("HTTP_SEC_WEBSOCKET_EXTENSIONS", "-"), flush=True)
    while True:
        message = ws.receive()
        if message is None:
            return []
        ws.send(message)


server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None, error_log=sys.stderr)
server.start()
print("listening", server.server_port, flush=True)
server.serve_forever()
