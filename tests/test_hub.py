"""The gevent hub is never blocked, patched or not; the library uses no threads and no time.sleep."""

import ast
import os
import sys
from pathlib import Path

import pytest

import hermes_gevent

from .support import TESTS, free_port, last_json_line, run_script, t

#: The issue's bound: no gap between ticks over ~50 ms (scaled on slow machines).
MAX_GAP_MS = 50


@pytest.mark.parametrize("mode", ["patched", "unpatched", "libuv"])
def test_a_ticker_keeps_ticking_through_every_phase(server, proxy_to, hostile, mode):
    """On gevent's default loop (libev), patched and not, and on libuv (patched), whose
    loop counts no turns: there the reader times its reads instead."""
    server.command(cmd="mode", echo=True, quiet=True)
    slow = proxy_to(server.port)
    slow.latency = 0.1  # each chunk waits: the upgrade answer takes a while
    hang = proxy_to(server.port)
    hang.hang_new = True
    refused = f"ws://127.0.0.1:{free_port()}/ws"
    flood = hostile("endless-line")
    out, err = run_script(
        [sys.executable, str(TESTS / "scripts" / "hub_ticker.py"), mode, server.url, slow.url, hang.url, refused, flood],
        t(60), env={**os.environ, "HERMES_WS_LOG": "true", **({"GEVENT_LOOP": "libuv"} if mode == "libuv" else {})},
    )
    report = last_json_line(out)
    assert report["connected"] and report["echoed"] == 2001
    assert report["slow_connected"] and report["slow_seconds"] >= 0.1
    assert report["hang_error"] == "ConnectTimeout"
    assert report["backoff_failures"] >= 4
    # An endless header line: three attempts fail on the size limit, well inside CONNECT_TIMEOUT (3 s),
    # and buffer next to nothing (websocket-client alone kept the hub 32 s and grew by 611 MB).
    assert report["flood_errors"] == ["AnswerTooLarge"] and report["flood_attempts"] >= 3
    assert report["flood_seconds"] < 3 and report["flood_rss_growth_mb"] < 5
    assert report["ticks"] > 100
    assert report["max_gap_ms"] < MAX_GAP_MS * max(1.0, t(1)), report
    warnings = err.count("has not monkey-patched")
    assert warnings == (1 if mode == "unpatched" else 0)  # once per process, not per client
    print(mode, report)


def _sources():
    return sorted(Path(hermes_gevent.__file__).parent.glob("*.py"))


def test_the_library_imports_no_threading_never_calls_time_sleep_nor_waits_for_an_idle_loop():
    for path in _sources():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            assert not any(n.split(".")[0] in ("threading", "_thread") for n in names), path
            if isinstance(node, ast.Attribute) and node.attr == "idle":  # a busy worker never is idle
                assert not (isinstance(node.value, ast.Name) and node.value.id == "gevent"), f"{path}: gevent.idle()"
            if isinstance(node, ast.Attribute) and node.attr == "sleep":
                assert isinstance(node.value, ast.Name) and node.value.id == "gevent", f"{path}: {ast.unparse(node)}"
