"""A fault-injection TCP proxy for the tests, on gevent, listening on 127.0.0.1.

Between the client and a real server it can: refuse connections (the port is
closed), reset every connection (RST), blackhole them (keep the TCP connection
open but forward nothing, like a peer that vanished without a FIN), hang new
connections before the handshake, add latency, and slice data into tiny chunks.
"""

from __future__ import annotations

import socket
import struct

import gevent
import gevent.socket


class FaultProxy:
    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.hang_new = False  # accept, but never connect upstream
        self.blackhole = False  # forward nothing, in either direction
        self.latency = 0.0  # seconds added before each forwarded chunk
        self.chunk = 0  # forward at most this many bytes per write (0: no slicing)
        self.connections = 0
        self._listener = None
        self._acceptor = None
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "FaultProxy":
        listener = gevent.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = gevent.spawn(self._accept, listener)
        return self

    def refuse(self) -> None:
        """Close the listening port: new connections are refused (RST on SYN)."""
        if self._acceptor is not None:
            self._acceptor.kill()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def reopen(self) -> None:
        if self._listener is None:
            self.start()

    def reset_all(self) -> None:
        """Abort every proxied connection with a TCP RST."""
        for downstream, upstream in self._pairs:
            for sock in (downstream, upstream):
                if sock is None:
                    continue
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
                except OSError:
                    pass
        self._pairs.clear()

    def stop(self) -> None:
        self.refuse()
        self.reset_all()
        gevent.killall(self._greenlets, timeout=5)

    def _accept(self, listener) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.hang_new:
                self._pairs.append((downstream, None))
                continue
            try:
                upstream = gevent.socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                downstream.close()
                continue
            self._pairs.append((downstream, upstream))
            self._greenlets.append(gevent.spawn(self._pipe, downstream, upstream))
            self._greenlets.append(gevent.spawn(self._pipe, upstream, downstream))
            self._greenlets = [g for g in self._greenlets if not g.dead]

    def _pipe(self, source, sink) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.blackhole:
                    continue
                if self.latency:
                    gevent.sleep(self.latency)
                step = self.chunk or len(data)
                for i in range(0, len(data), step):
                    sink.sendall(data[i : i + step])
                    if self.chunk and self.latency:
                        gevent.sleep(self.latency / 10)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
