"""Real proxies for the proxy tests, on 127.0.0.1: tinyproxy (HTTP CONNECT, optionally with
Basic auth) and microsocks (SOCKS5, optionally with a user and password) from their Debian
packages, each in a subprocess started with its PID recorded and stopped by it; and a tiny
HTTP CONNECT proxy in the test process that answers a chosen status for a while (403, 407,
503...) before it tunnels, or never answers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import gevent
import gevent.server
import gevent.socket
import gevent.subprocess
import pytest

from .support import free_port, t


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install {binary}; .ci/run installs it)")
    return path


def wait_port(port: int, timeout: float, proc=None) -> None:
    """Until 127.0.0.1:port accepts a connection (bounded); fails early if ``proc`` exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with gevent.socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the proxy exited ({proc.returncode}) before listening on {port}")
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listened on 127.0.0.1:{port} within {timeout:.1f}s")
        gevent.sleep(0.02)


class ProxyProcess:
    """A proxy in a subprocess; ``output`` is what it printed (its log)."""

    scheme = "http"

    def __init__(self, port: int | None = None, user: str | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.user, self.password = user, password
        self.proc = None
        self.pid: int | None = None
        self.output: list[str] = []
        self._reader = None

    def args(self) -> list[str]:
        raise NotImplementedError

    def url(self, user: str | None = None, password: str | None = None, scheme: str | None = None) -> str:
        """The proxy's URL with its own credentials, or others given here."""
        user = self.user if user is None else user
        password = self.password if password is None else password
        auth = f"{user}:{password}@" if user is not None else ""
        return f"{scheme or self.scheme}://{auth}127.0.0.1:{self.port}"

    def start(self) -> "ProxyProcess":
        self.proc = gevent.subprocess.Popen(self.args(), stdout=gevent.subprocess.PIPE,
                                            stderr=gevent.subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self._reader = gevent.spawn(self._read, self.proc)
        wait_port(self.port, t(10), self.proc)
        return self

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.output.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.output)

    def signal(self, signum: int) -> None:
        if self.pid is not None and self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signum)

    def stop(self) -> None:
        """SIGKILL by its PID: its connections die at once."""
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(t(10))
            if self._reader is not None:
                self._reader.join(t(5))
        self.proc = None


class TinyProxy(ProxyProcess):
    """tinyproxy in the foreground (-d), its config in ``directory``; BasicAuth with a user."""

    def __init__(self, directory, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = directory / f"tinyproxy-{self.port}.conf"
        self.write_config()

    def write_config(self, password: str | None = None) -> None:
        """(Re)write the config; ``password`` replaces the BasicAuth password (then SIGHUP reloads it)."""
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 600", "MaxClients 200", "LogLevel Info"]
        if self.user is not None:
            lines.append(f"BasicAuth {self.user} {password or self.password}")
        self.config.write_text("\n".join(lines) + "\n")

    def args(self) -> list[str]:
        return [need("tinyproxy"), "-d", "-c", str(self.config)]


class MicroSocks(ProxyProcess):
    scheme = "socks5"

    def args(self) -> list[str]:
        auth = ["-u", self.user, "-P", self.password] if self.user is not None else []
        return [need("microsocks"), "-i", "127.0.0.1", "-p", str(self.port), *auth]


class FakeProxy:
    """An HTTP CONNECT proxy in this process: it answers ``status`` to the next ``refusals``
    CONNECTs (None: to every one), then tunnels; ``hang`` never answers at all."""

    def __init__(self) -> None:
        self.status = 503
        self.reason = "Service Unavailable"
        self.refusals: int | None = 0
        self.hang = False
        self.requests: list[bytes] = []  # every CONNECT request head, as received
        self.refused = 0
        self._server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self._pipes: list[socket.socket] = []

    @property
    def port(self) -> int:
        return self._server.server_port

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"

    def refuse(self, status: int, reason: str, count: int | None = None) -> None:
        self.status, self.reason, self.refusals = status, reason, count

    def start(self) -> "FakeProxy":
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=t(1))
        for sock in self._pipes:
            sock.close()

    def _handle(self, client, _address) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        self.requests.append(head)
        if self.hang:
            gevent.sleep(t(60))
            return
        if self.refusals is None or self.refusals > 0:
            if self.refusals is not None:
                self.refusals -= 1
            self.refused += 1
            body = b"refused by the test's proxy\n"
            client.sendall(f"HTTP/1.1 {self.status} {self.reason}\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n".encode() + body)
            client.close()
            return
        target = head.split(b" ", 2)[1].decode()
        host, port = target.rsplit(":", 1)
        try:
            upstream = gevent.socket.create_connection((host, int(port)))
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        self._pipes += [client, upstream]
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        other = gevent.spawn(_pipe, upstream, client)
        _pipe(client, upstream)
        other.join(t(5))


def _pipe(source, sink) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
