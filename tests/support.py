"""Test helpers shared by the fixtures and by scripts the tests run in subprocesses:
the scaled clock, free ports, and the real WebSocket server in a subprocess."""

import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
import gevent.event
import gevent.subprocess

TESTS = Path(__file__).parent
#: Every timing constant in the tests is multiplied by this (raise it on slow machines).
FACTOR = float(os.environ.get("HERMES_TEST_TIMEOUT_FACTOR", "1"))


def t(seconds: float) -> float:
    """A test duration scaled by FACTOR."""
    return seconds * FACTOR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, message: str = "condition"):
    """Poll ``predicate`` cooperatively until true or ``timeout``; for client state
    that has no event of its own. Fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
        gevent.sleep(0.01)


class Changes:
    """Something that changes, and greenlets that wait for a condition on it, bounded.

    Each notify() sets the event the waiters hold and starts a fresh one, so a waiter
    that checked its condition before a change is always woken by it."""

    def __init__(self) -> None:
        self._event = gevent.event.Event()

    def notify(self) -> None:
        event, self._event = self._event, gevent.event.Event()
        event.set()

    def wait_for(self, predicate, timeout: float, message: str = "condition"):
        """Return ``predicate()`` once it is true; fail the test after ``timeout``.
        ``message`` may be a callable, to describe the state at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            event = self._event
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                text = message() if callable(message) else message
                raise AssertionError(f"timed out after {timeout:.1f}s waiting for {text}")
            event.wait(remaining)


class Recorder:
    """A hook (on_error, on_drop, on_give_up, on_message...) that records every call and
    lets the test wait for the n-th one, bounded. One argument is recorded as itself,
    several as a tuple. For greenlets of the test's own thread."""

    def __init__(self) -> None:
        self.calls: list = []
        self._changes = Changes()

    def __call__(self, *args) -> None:
        self.calls.append(args[0] if len(args) == 1 else args)
        self._changes.notify()

    def wait(self, n: int = 1, timeout: float | None = None, what: str = "hook calls") -> list:
        """Every call so far, once there are at least ``n``."""
        timeout = t(5) if timeout is None else timeout
        self._changes.wait_for(lambda: len(self.calls) >= n, timeout, f"{n} {what} (got {len(self.calls)})")
        return list(self.calls)


class LogWatch(logging.Handler):
    """A log handler a test can wait on: ``wait("text")`` returns the first record whose
    message contains the text, or fails the test after the timeout."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changes = Changes()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changes.notify()

    def wait(self, text: str, timeout: float | None = None) -> logging.LogRecord:
        timeout = t(5) if timeout is None else timeout

        def find():
            return next((r for r in self.records if text in r.getMessage()), None)

        return self._changes.wait_for(find, timeout, f"a log line with {text!r}")


class ServerProcess:
    """tests/wsserver.py in a subprocess: killable, restartable on the same port."""

    def __init__(self, port: int, *extra_args: str, scheme: str = "ws") -> None:
        self.port = port
        self.extra_args = extra_args
        self.scheme = scheme
        self.events: list[dict] = []
        self._changed = gevent.event.Event()
        self.proc = None
        self._reader = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ws"

    def start(self) -> "ServerProcess":
        args = [sys.executable, str(TESTS / "wsserver.py"), str(self.port)]
        args.extend(self.extra_args)
        self.proc = gevent.subprocess.Popen(args, stdin=gevent.subprocess.PIPE, stdout=gevent.subprocess.PIPE)
        self._reader = gevent.spawn(self._read, self.proc)
        self.wait_event(lambda e: e["ev"] == "listening", t(10), since=len(self.events))
        return self

    def _read(self, proc) -> None:
        for line in proc.stdout:
            self.events.append(json.loads(line))
            self._changed.set()

    def wait_for(self, predicate, timeout: float, message: str = "server condition"):
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
            self._changed.wait(remaining)

    def wait_event(self, match, timeout: float, since: int = 0) -> dict:
        def find():
            for event in self.events[since:]:
                if match(event):
                    return event
            return None

        return self.wait_for(find, timeout, "a matching server event")

    def command(self, timeout: float = 10, **cmd) -> None:
        mark = len(self.events)
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        if cmd["cmd"] != "exit":
            self.wait_event(lambda e: e["ev"] == "done" and e["cmd"] == cmd["cmd"], t(timeout), since=mark)

    def tally(self, expected: int, timeout: float) -> dict:
        """Count mode's tally, once ``expected`` distinct numbers arrived or at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            mark = len(self.events)
            self.command(cmd="stats")
            stats = self.wait_event(lambda e: e["ev"] == "stats", t(10), since=mark)
            if stats["distinct"] >= expected or time.monotonic() > deadline:
                return {k: v for k, v in stats.items() if k != "ev"}
            gevent.sleep(0.1)

    # -- records -------------------------------------------------------------------

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["ev"] == kind]

    def texts(self) -> list[str]:
        return [e["text"] for e in self.of("msg") if "text" in e]

    def kill(self) -> None:
        """Stop the server at once (SIGKILL): connections die without a close frame."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(t(10))
        if self._reader is not None:
            self._reader.join(t(5))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.command(cmd="exit")
                self.proc.wait(t(5))
            except Exception:
                pass
        self.kill()




def run_script(args: list[str], timeout: float, env: dict | None = None) -> tuple[str, str]:
    """Run a helper process from the repository root, stopping it by its PID whatever happens;
    fail the test (with the end of its stderr) unless it exits 0. Returns (stdout, stderr)."""
    proc = gevent.subprocess.Popen(args, cwd=str(TESTS.parent), env=env, stdout=gevent.subprocess.PIPE,
                                   stderr=gevent.subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(t(5))
    assert proc.returncode == 0, f"{args[1:3]} exited {proc.returncode}:\n{err.decode()[-3000:]}"
    return out.decode(), err.decode()


def last_json_line(text: str):
    return json.loads(text.strip().splitlines()[-1])


def http(method, url, body=None, timeout=5.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_http(url, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http("GET", url)
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout:.0f}s")
            gevent.sleep(0.1)


class Proc:
    """A subprocess in its own process group, stopped by its PID (the group's id) in teardown,
    whatever happens: a gunicorn master's workers go with it."""

    def __init__(self, args, env):
        self.popen = gevent.subprocess.Popen(args, env=env, cwd=str(TESTS.parent), stdout=gevent.subprocess.PIPE,
                                             stderr=gevent.subprocess.STDOUT, start_new_session=True)
        self.output = []
        self._reader = gevent.spawn(self._read)

    def _read(self):
        for line in self.popen.stdout:
            self.output.append(line.decode(errors="replace"))

    def stop(self):
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # the process and any children it left
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(t(10))
        self._reader.join(t(5))

    def text(self):
        return "".join(self.output)
