"""The documentation (docs/): it builds without a warning, its references match the code, and
its examples run.

- ``sphinx-build -W --keep-going -b html`` exits 0 (a setting without a ``#:`` description in
  ``hermes_gevent/settings.py`` is a warning, so it fails here);
- every setting ``Defaults`` declares is on the built settings page, with its keyword and
  Flask key;
- every key of a real client's ``status()`` is in the status reference, and every key the
  reference documents is in ``status()``;
- the examples under docs/examples/ (included in the pages with literalinclude) run, against
  a local server where they connect.
"""

from __future__ import annotations

import html
import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_gevent import WebSocketClient
from hermes_gevent.settings import Defaults, Settings

from .support import t

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The HTML site, built once for this module with warnings as errors."""
    out = tmp_path_factory.mktemp("docs-html")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True, text=True, timeout=t(300), cwd=ROOT,
    )
    assert proc.returncode == 0, (
        f"sphinx-build failed (exit {proc.returncode}):\n{proc.stderr}\n{proc.stdout[-4000:]}"
    )
    return out


def page_text(built: Path, name: str) -> str:
    """A built page's text, tags dropped and entities decoded (``<span class="pre">`` splits
    literals into pieces)."""
    raw = (built / f"{name}.html").read_text(encoding="utf-8")
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def test_docs_build_without_warnings(built):
    for page in ("index", "getting-started", "flask", "deployment", "guarantees", "networks", "operations",
                 "faults", "benchmarks", "settings", "status", "api"):
        assert (built / f"{page}.html").is_file(), page


def test_every_setting_is_on_the_settings_page(built):
    raw = (built / "settings.html").read_text(encoding="utf-8")
    text = page_text(built, "settings")
    keywords: dict[str, list[str]] = {}
    for keyword, name in Settings.keyword_map().items():
        keywords.setdefault(name, []).append(keyword)
    names = list(Defaults.__annotations__)
    assert names, "Defaults declares no setting?"
    for name in names:
        section = f'id="setting-{name.lower().replace("_", "-")}"'
        assert section in raw, f"{name}: no section {section} on the settings page"
        assert f"HERMES_{name}" in text, f"{name}: its Flask key is not on the settings page"
        assert repr(getattr(Defaults, name)) in text, f"{name}: its default is not on the settings page"
        for keyword in keywords[name]:
            assert f"{keyword}=" in text, f"{name}: keyword {keyword}= is not on the settings page"


def documented_status_keys() -> list[str]:
    """The first column of the table in docs/status.rst: one ``key`` per row."""
    source = (DOCS / "status.rst").read_text(encoding="utf-8")
    keys = re.findall(r"^   \* - ``([a-z_]+)``\s*$", source, flags=re.M)
    assert keys, "no key rows found in docs/status.rst"
    return keys


def test_every_status_key_is_documented(built):
    client = WebSocketClient(url="ws://127.0.0.1:9/")  # never started: nothing connects
    status = client.status()
    json.dumps(status)  # JSON-serializable, as documented
    documented = documented_status_keys()
    assert len(documented) == len(set(documented)), "a status key is documented twice"
    missing = sorted(set(status) - set(documented))
    stale = sorted(set(documented) - set(status))
    assert not missing, f"status() keys missing from docs/status.rst: {missing}"
    assert not stale, f"docs/status.rst documents keys status() does not return: {stale}"
    text = page_text(built, "status")
    for key in status:
        assert key in text, f"{key} is not on the built status page"


# -- the examples the pages include -------------------------------------------------------------


def run_example(name: str) -> dict:
    return runpy.run_path(str(EXAMPLES / name), run_name=f"docs_example_{name[:-3]}")


def test_every_example_is_included_in_a_page():
    sources = "".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.rst"))
    for example in EXAMPLES.glob("*.py"):
        assert f"examples/{example.name}" in sources, f"docs/examples/{example.name} is in no page"


def test_quickstart_example(server, monkeypatch, capsys):
    ns = run_example("quickstart.py")
    cls = ns["MyClient"]
    monkeypatch.setattr(cls, "url", lambda self: server.url)  # the example's server, here on 127.0.0.1
    undelivered = ns["main"]()
    assert undelivered == 0
    event = server.wait_event(lambda e: e["ev"] == "msg", t(10))
    assert json.loads(event["text"]) == {"receiver_id": "server", "data": {"operation": "ping"}}
    assert cls.instance().identifier() == "billing-service"
    cls.instance().handle_message(json.dumps({"operation": "notification", "message": "hello"}))
    assert "notification: hello" in capsys.readouterr().out


def test_keywords_and_status_examples():
    ns = run_example("keywords.py")
    client = ns["client"]
    assert client.settings.MAX_QUEUE_SIZE == 100 and client.settings.DEFAULT_RETRY_LIMIT is None
    assert not client.running
    run_example("status.py")  # its asserts are the check


def test_flask_example(server):
    ns = run_example("flask_app.py")
    app = ns["create_app"]({"HERMES_WS_URL": server.url})
    client = app.hermes
    try:
        assert client.wait_until_connected(t(10))
        response = app.test_client().post("/orders")
        assert response.status_code == 202
        event = server.wait_event(lambda e: e["ev"] == "msg", t(10))
        assert json.loads(event["text"]) == {"operation": "order_created", "id": 42}
        server.command(cmd="send", text="from the server")
        deadline = t(10)
        import gevent
        with gevent.Timeout(deadline):
            while "from the server" not in ns["events"]:
                gevent.sleep(0.01)
    finally:
        client.stop(timeout=t(5))


def test_outbox_headers_and_transaction_examples():
    ns = run_example("outbox.py")
    file_client = ns["FileOutboxClient"](url="ws://127.0.0.1:9/")
    assert file_client.settings.OUTBOX_PATH == "/var/lib/myapp/hermes-outbox.db"
    pytest.importorskip("psycopg")
    pg_client = ns["PostgresOutboxClient"](url="ws://127.0.0.1:9/")
    assert pg_client.settings.OUTBOX_SYNC == "always"
    assert "secret" not in json.dumps(pg_client.status())  # never the password
    ns = run_example("headers.py")
    headers = ns["MyClient"](url="ws://127.0.0.1:9/", identifier="worker").headers()
    assert headers["X-Worker-Pid"] == str(os.getpid())
    pytest.importorskip("flask_sqlalchemy")
    ns = run_example("transaction.py")
    assert "/orders" in [rule.rule for rule in ns["app"].url_map.iter_rules()]
