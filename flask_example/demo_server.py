"""An embedded demo message server on gevent-websocket, for ``python -m flask_example``.

It echoes every message back to its sender as a notification, pushes a "tick"
notification to every connected client every few seconds, and acknowledges every
message that is a JSON object with a string id (the client's acknowledgements,
``HERMES_ACK_TIMEOUT``): ``{"ack": [ids...]}``, in batches - every ACK_EVERY
seconds or ACK_BATCH ids, whichever comes first, as a real server would batch them.

``stop()`` and ``start()`` again (the example page's "Stop server" and "Start server"
buttons): a stop closes every client connection abruptly (the TCP connection is shut
down without a close frame, as when a server crashes: the client sees 1006), and a
start listens again on the same port.
"""

from __future__ import annotations

import json
import socket
import time

import gevent
import gevent.lock
from gevent import pywsgi
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler

PUSH_EVERY = 3.0
ACK_EVERY = 0.01
ACK_BATCH = 100


class DemoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, ack_id_key: str = "id") -> None:
        self.clients: set[_Peer] = set()
        self.ack_id_key = ack_id_key
        self.host, self.port = host, port
        self.server = self._new_server()
        self._pusher = None
        #: True between start() and stop().
        self.running = False

    def _new_server(self) -> pywsgi.WSGIServer:
        return pywsgi.WSGIServer((self.host, self.port), self._app, handler_class=WebSocketHandler, log=None)

    @property
    def url(self) -> str:
        host, port = self.server.address[:2]
        return f"ws://{host}:{port}/ws"

    def start(self) -> "DemoServer":
        """Listen (again, after a stop: on the same port - SO_REUSEADDR)."""
        if self.running:
            return self
        self.server.start()
        self.port = self.server.address[1]  # the port chosen for port 0, kept for a restart
        self._pusher = gevent.spawn(self._push_forever)
        self.running = True
        return self

    def stop(self) -> None:
        """Stop listening and drop every client connection abruptly (no close frame)."""
        if not self.running:
            return
        if self._pusher is not None:
            self._pusher.kill()
            self._pusher = None
        self.server.close()  # no new connections from here
        for peer in list(self.clients):
            peer.drop()
        self.server.stop(timeout=1)
        self.server = self._new_server()  # ready for start(), on the same port
        self.running = False

    def _app(self, environ, start_response):
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"WebSocket only\n"]
        peer = _Peer(ws, getattr(ws.handler, "socket", None))
        self.clients.add(peer)
        try:
            while True:
                message = ws.receive()
                if message is None:
                    break
                data = _json_object(message)
                text = data.get("message", message) if data is not None else _text(message)
                peer.send(json.dumps({"operation": "echo", "message": text, "at": time.strftime("%H:%M:%S")}))
                ack_id = data.get(self.ack_id_key) if data is not None else None
                if isinstance(ack_id, str):
                    peer.ack(ack_id)
        except WebSocketError:
            pass
        finally:
            peer.closed()
            self.clients.discard(peer)
        return []

    def _push_forever(self) -> None:
        tick = 0
        while True:
            gevent.sleep(PUSH_EVERY)
            tick += 1
            note = json.dumps({"operation": "notification", "message": f"tick {tick} from the demo server"})
            for peer in list(self.clients):
                try:
                    peer.send(note)
                except WebSocketError:
                    self.clients.discard(peer)


class _Peer:
    """One client connection: sends from the handler, the pusher and the ack timer take
    turns (one lock), and the acknowledgements it owes, batched."""

    def __init__(self, ws, sock=None) -> None:
        self.ws = ws
        self.sock = sock
        self._lock = gevent.lock.Semaphore()
        self._pending: list[str] = []
        self._timer = None

    def send(self, text: str) -> None:
        with self._lock:
            self.ws.send(text)

    def ack(self, ack_id: str) -> None:
        self._pending.append(ack_id)
        if len(self._pending) >= ACK_BATCH:
            self._flush()
        elif self._timer is None:
            self._timer = gevent.spawn_later(ACK_EVERY, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self._flush()
        except WebSocketError:
            pass  # the connection is gone: the client sends those messages again on its next one

    def _flush(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        ids, self._pending = self._pending, []
        if ids:
            self.send(json.dumps({"ack": ids}))

    def drop(self) -> None:
        """Shut the TCP connection down without a close frame, as a crashed server would."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def closed(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.kill(block=False)


def _json_object(message) -> dict | None:
    if not isinstance(message, str):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(message) -> str:
    if isinstance(message, (bytes, bytearray)):
        return f"<{len(message)} bytes>"
    return message
