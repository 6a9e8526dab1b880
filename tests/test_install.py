"""The documented install line, as a user runs it: docs/snippets/install-gunicorn.txt in a
clean virtual environment (no system site packages, no pytest, so nothing the test suite
brings along), then `gunicorn -k gevent` on a small Flask app with the extension.

gunicorn's gevent worker imports ``packaging``, which gunicorn 27 no longer installs by
itself (only with its ``gevent`` extra); an install line that leaves it out gives a gunicorn
whose master exits at boot, ``Error: class uri 'gevent' invalid or not found`` with
``ModuleNotFoundError: No module named 'packaging'`` - which this test reports.

The environment is built once per session (pip's cache makes later runs quicker). The
test is skipped only when pip cannot reach the package index; any other failure of the
install fails it.
"""

import json
import os
import re
import shlex
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
import gevent.subprocess
import pytest

from .support import FACTOR, Proc, free_port, http, t

ROOT = Path(__file__).parent.parent
SNIPPET = ROOT / "docs" / "snippets" / "install-gunicorn.txt"
#: How long the documented `pip install` may take (it downloads from the index when the cache is cold).
INSTALL_TIMEOUT = t(600)

#: pip's words when it could not reach the index (urllib3/requests connection errors, as it retries).
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution"
    r"|Name or service not known|ConnectTimeoutError|ReadTimeoutError|Max retries exceeded"
    r"|ProxyError|Network is unreachable|Connection refused|Could not fetch URL"
)

APP = '''\
import os

from flask import Flask, current_app, jsonify

import hermes_gevent
from hermes_gevent.flask import Hermes

app = Flask(__name__)
Hermes(app)


@app.get("/status")
def status():
    return jsonify(pid=os.getpid(), library=hermes_gevent.__file__, **current_app.hermes.status())


@app.post("/send")
def send():
    return jsonify(accepted=current_app.hermes.send_message({"message": "from the user's venv"}))
'''

# As flask_example/gunicorn.conf.py: the library's hooks, loaded by the master.
CONF = '''\
from hermes_gevent.gunicorn import child_exit, post_worker_init, worker_exit  # noqa: F401

graceful_timeout = 10
'''


def install_args(line: str, repo: Path) -> list[str]:
    """The documented line's pip arguments, with ``hermes_gevent`` replaced by the local tree."""
    words = shlex.split(line)
    assert words[:2] == ["pip", "install"], f"{SNIPPET} should be one `pip install ...` line, not {line!r}"
    args, ours = [], 0
    for word in words[2:]:
        match = re.fullmatch(r"hermes[_-]gevent(\[[^\]]*\])?", word, re.IGNORECASE)
        if match:
            word, ours = f"{repo}{match.group(1) or ''}", ours + 1
        args.append(word)
    assert ours == 1, f"{SNIPPET} should install hermes_gevent once: {line!r}"
    return args


def clean_env(**extra) -> dict:
    """The test process's environment without what would leak this checkout or this venv into the child."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONNOUSERSITE")}
    env["PYTHONNOUSERSITE"] = "1"  # nothing from ~/.local either
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(args: list[str], timeout: float, cwd: Path) -> tuple[int, str]:
    """Run to the end (killed at ``timeout``); the exit code and the combined output."""
    proc = gevent.subprocess.Popen(args, cwd=str(cwd), env=clean_env(), stdout=gevent.subprocess.PIPE,
                                   stderr=gevent.subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except gevent.subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"{args[:4]} did not finish within {timeout:.0f}s:\n{out.decode(errors='replace')[-3000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(t(5))
    return proc.returncode, out.decode(errors="replace")


def index_unreachable(python: Path, cwd: Path) -> str | None:
    """After a failed install: why pip cannot reach its index at all, or None when it can (then the
    failure is the install's own). Asks the index, with the same configuration, for the versions of
    gevent, which the install cannot do without and which PyPI and any mirror of it list."""
    code, out = run([str(python), "-m", "pip", "index", "versions", "gevent", "--no-cache-dir", "--retries", "1",
                     "--timeout", str(int(t(15)))], t(120), cwd)
    if code == 0:
        return None
    reason = UNREACHABLE.search(out)
    return reason.group(0) if reason else out.strip().splitlines()[-1] if out.strip() else f"pip exited {code}"


@pytest.fixture(scope="session")
def user_venv(tmp_path_factory):
    """A fresh venv with the documented line installed in it (from a copy of this tree, not editable)."""
    line = SNIPPET.read_text().strip()
    assert line and "\n" not in line, f"{SNIPPET} should hold exactly one line"
    base = tmp_path_factory.mktemp("install")
    # A copy of the working tree, so building the wheel writes nothing (build/, egg-info) into the checkout.
    repo = base / "hermes_gevent-src"
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "node_modules", ".autobahn"))
    venv = base / "venv"
    code, out = run([sys.executable, "-m", "venv", str(venv)], t(120), base)
    assert code == 0, f"python -m venv failed:\n{out[-3000:]}"
    python = venv / "bin" / "python"
    code, out = run([str(python), "-m", "pip", "install", *install_args(line, repo)], INSTALL_TIMEOUT, base)
    if code != 0:
        unreachable = index_unreachable(python, base)
        if unreachable:
            pytest.skip(f"the package index is unreachable, cannot run {line!r}: {unreachable}")
    assert code == 0, f"{line!r} failed (exit {code}):\n{out[-4000:]}"
    code, out = run([str(python), "-c", "import pytest"], t(30), base)
    assert code != 0, "pytest is importable in the user's venv: it would bring packaging along"
    return venv


class UserProc(Proc):
    """support.Proc (own process group, output collected) started in ``cwd``, not in this checkout:
    gunicorn puts its working directory on sys.path, and the library must come from the venv."""

    def __init__(self, args, env, cwd: Path):  # noqa: super().__init__ would start it in the checkout
        self.popen = gevent.subprocess.Popen(args, env=env, cwd=str(cwd), stdout=gevent.subprocess.PIPE,
                                             stderr=gevent.subprocess.STDOUT, start_new_session=True)
        self.output = []
        self._reader = gevent.spawn(self._read)


@pytest.fixture
def gunicorn_in(tmp_path):
    """Start ``<venv>/bin/gunicorn ARGS`` in tmp_path; in teardown SIGTERM it, SIGKILL after a bounded wait."""
    started = []

    def start(venv: Path, args: list[str], **env) -> Proc:
        proc = UserProc([str(venv / "bin" / "gunicorn"), *args], clean_env(**env), cwd=tmp_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(t(15))
            except gevent.subprocess.TimeoutExpired:
                pass
        proc.stop()  # SIGKILL to its process group: a worker it left goes too


def wait_http_ok(url: str, proc: Proc, timeout: float) -> dict:
    """GET url until it answers 200 (short timeouts, bounded by ``timeout``); fail at once if gunicorn exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=t(2)) as response:
                assert response.status == 200
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if proc.popen.poll() is not None:
            gevent.sleep(0.2)  # the rest of its output
            raise AssertionError(f"gunicorn exited ({proc.popen.returncode}) before answering:\n{proc.text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout:.0f}s:\n{proc.text()[-4000:]}")
        gevent.sleep(0.1)


@pytest.mark.timeout(int(INSTALL_TIMEOUT + 120 * FACTOR))
def test_documented_install_line_runs_gunicorn_gevent_workers(user_venv, gunicorn_in, server, tmp_path):
    (tmp_path / "userapp.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(CONF)
    port = free_port()
    proc = gunicorn_in(user_venv, ["-c", str(tmp_path / "gunicorn.conf.py"), "-k", "gevent", "-w", "1",
                                   "-b", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "userapp:app"],
                       HERMES_WS_URL=server.url)
    base = f"http://127.0.0.1:{port}"
    status = wait_http_ok(f"{base}/status", proc, t(30))

    log = proc.text()
    assert "ModuleNotFoundError" not in log and "ImportError" not in log, log[-4000:]
    booted = re.findall(r"Booting worker with pid: (\d+)", log)
    assert booted and status["pid"] == int(booted[-1]), log[-4000:]
    assert Path(status["library"]).is_relative_to(user_venv), status["library"]  # the installed copy, not ROOT

    # The installed client works in the worker: it connects and delivers.
    server.wait_for(lambda: server.of("connect"), t(15), "the worker's connection")
    assert http("POST", f"{base}/send", {})["accepted"] is True
    server.wait_for(lambda: server.texts(), t(10), "the message")
    assert "from the user's venv" in server.texts()[0]

    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(t(20)) == 0, proc.text()[-4000:]
    server.wait_for(lambda: server.of("close"), t(10), "the close")
    assert [e["code"] for e in server.of("close")] == [1000]
