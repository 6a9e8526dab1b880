"""An embedded demo message server on gevent-websocket, for ``python -m flask_example``.

It echoes every message back to its sender as a notification, and pushes a
"tick" notification to every connected client every few seconds.
"""

from __future__ import annotations

import json
import time

import gevent
from gevent import pywsgi
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler

PUSH_EVERY = 3.0


class DemoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.clients: set = set()
        self.server = pywsgi.WSGIServer((host, port), self._app, handler_class=WebSocketHandler, log=None)
        self._pusher = None

    @property
    def url(self) -> str:
        host, port = self.server.address[:2]
        return f"ws://{host}:{port}/ws"

    def start(self) -> "DemoServer":
        self.server.start()
        self._pusher = gevent.spawn(self._push_forever)
        return self

    def stop(self) -> None:
        if self._pusher is not None:
            self._pusher.kill()
        self.server.stop(timeout=1)

    def _app(self, environ, start_response):
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"WebSocket only\n"]
        self.clients.add(ws)
        try:
            while True:
                message = ws.receive()
                if message is None:
                    break
                ws.send(json.dumps({"operation": "echo", "message": _text(message), "at": time.strftime("%H:%M:%S")}))
        except WebSocketError:
            pass
        finally:
            self.clients.discard(ws)
        return []

    def _push_forever(self) -> None:
        tick = 0
        while True:
            gevent.sleep(PUSH_EVERY)
            tick += 1
            note = json.dumps({"operation": "notification", "message": f"tick {tick} from the demo server"})
            for ws in list(self.clients):
                try:
                    ws.send(note)
                except WebSocketError:
                    self.clients.discard(ws)


def _text(message) -> str:
    if isinstance(message, (bytes, bytearray)):
        return f"<{len(message)} bytes>"
    try:
        return json.loads(message).get("message", message)
    except (ValueError, AttributeError):
        return message
