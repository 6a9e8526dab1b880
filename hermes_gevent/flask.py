"""The Flask extension: ``hermes.init_app(app)``, then ``current_app.hermes``.

One client per app (not the class singleton: several apps in one process
each get their own). Settings come from ``app.config`` with the ``HERMES_``
prefix. When the process is already gevent-patched (a gunicorn gevent worker
imports the app after patching) the client starts in ``init_app``. When it is
not (``gunicorn --preload`` imports the app in the master before forking;
``flask run``), nothing connects until the process actually serves: the
client starts on first use, on the first request, or from the gunicorn hooks
in ``hermes_gevent.gunicorn``.
"""

from __future__ import annotations

import os
import time
import weakref
from typing import Any, Callable, Optional

import click
import gevent
import gevent.monkey
import gevent.pool
from flask import Flask, Response, current_app, jsonify
from flask.cli import AppGroup
from blinker import Namespace

from . import metrics, pg_store, transport
from .base import BaseClient
from .client import WebSocketClient
from .connection import Connection
from .frames import CLOSE_NORMAL, Pong
from .logs import env_flag, redact_url
from .settings import Settings

__all__ = ["BENIGN_ALERTS", "Config", "EXTENSION_KEY", "Hermes", "connected", "disconnected", "gave_up", "get_client",
           "message_dropped", "message_received"]

_signals = Namespace()
#: Sent with the app as sender. Receivers get keyword arguments as named.
connected = _signals.signal("hermes-connected")
disconnected = _signals.signal("hermes-disconnected")  # code, reason
message_received = _signals.signal("hermes-message-received")  # message
message_dropped = _signals.signal("hermes-message-dropped")  # message, reason
gave_up = _signals.signal("hermes-gave-up")  # error

EXTENSION_KEY = "hermes"
#: Alerts that do not make the health endpoint answer 503: a quiet server is not a sick worker.
BENIGN_ALERTS = frozenset({"no_messages"})


class Config:
    """The app.config keys the extension reads (every client setting also has HERMES_<SETTING>)."""

    URL = BaseClient.URL_ENV  # the same names as the client's environment variables
    IDENTIFIER = BaseClient.IDENTIFIER_ENV
    LOG = BaseClient.LOG_ENV
    AUTOSTART = "HERMES_AUTOSTART"
    HANDLER_POOL_SIZE = "HERMES_HANDLER_POOL_SIZE"
    HEALTH_PATH = "HERMES_HEALTH_PATH"
    METRICS_PATH = "HERMES_METRICS_PATH"

    @staticmethod
    def setting_key(name: str) -> str:
        return f"HERMES_{name}"


class _AppState:
    """What the extension keeps per app, in app.extensions["hermes"]."""

    def __init__(self, app: Flask, client: WebSocketClient, autostart: bool) -> None:
        self.app_ref = weakref.ref(app)
        self.client = client
        self.autostart = autostart
        self.pool: Optional[gevent.pool.Pool] = None
        self.warned_cannot_start = False


class Hermes:
    """``Hermes(app=None, client_class=WebSocketClient)`` - see docs/flask.rst."""

    def __init__(self, app: Optional[Flask] = None, client_class: type[WebSocketClient] = WebSocketClient) -> None:
        self.client_class = client_class
        self._handlers: list[Callable[[Any], None]] = []
        if app is not None:
            self.init_app(app)

    def on_message(self, func: Callable[[Any], None]) -> Callable[[Any], None]:
        """Decorator: ``func(message)`` runs for every message, inside an app context."""
        self._handlers.append(func)
        return func

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("Hermes is already initialized on this app; call init_app() once per app.")
        config = app.config
        config.setdefault(Config.URL, os.environ.get(Config.URL))
        config.setdefault(Config.IDENTIFIER, os.environ.get(Config.IDENTIFIER))
        config.setdefault(Config.LOG, env_flag(os.environ.get(Config.LOG)))
        config.setdefault(Config.AUTOSTART, True)
        config.setdefault(Config.HANDLER_POOL_SIZE, 0)
        config.setdefault(Config.HEALTH_PATH, None)
        config.setdefault(Config.METRICS_PATH, None)
        for name in Settings.names():
            config.setdefault(Config.setting_key(name), getattr(self.client_class, name))

        state_box: dict[str, _AppState] = {}
        client = self.client_class(
            url=config[Config.URL] or None,
            identifier=config[Config.IDENTIFIER] or None,
            log=bool(config[Config.LOG]),
            name=f"{self.client_class.__name__}[{app.name}]",
            on_message=lambda msg: self._dispatch(state_box["state"], msg),
            on_open=lambda: connected.send(app),
            on_close=lambda code, reason: disconnected.send(app, code=code, reason=reason),
            on_drop=lambda msg, reason: message_dropped.send(app, message=msg, reason=reason),
            on_give_up=lambda exc: gave_up.send(app, error=exc),
            **{name.lower(): config[Config.setting_key(name)] for name in Settings.names()},
        )  # ConfigError here for a bad setting
        transport.parse_ws_url(client.url())  # and here for a missing or non-ws URL
        pool_size = int(config[Config.HANDLER_POOL_SIZE] or 0)

        state = _AppState(app, client, bool(config[Config.AUTOSTART]))
        if pool_size > 0:
            state.pool = gevent.pool.Pool(pool_size)
        state_box["state"] = state
        app.extensions[EXTENSION_KEY] = state
        setattr(app, EXTENSION_KEY, client)  # current_app.hermes

        app.cli.add_command(_cli)
        if config[Config.HEALTH_PATH]:
            app.add_url_rule(config[Config.HEALTH_PATH], "hermes_health", _health_view)
        if config[Config.METRICS_PATH]:
            metrics.require()  # ConfigError naming the extra
            app.add_url_rule(config[Config.METRICS_PATH], "hermes_metrics", _metrics_view)
        app.before_request(lambda: _start_if_serving(state))

        if state.autostart:
            if gevent.monkey.is_module_patched("socket"):
                client.start()
            else:
                client.start_on_first_use()

    # -- receiving ---------------------------------------------------------------------

    def _dispatch(self, state: _AppState, message: Any) -> None:
        if state.pool is not None:
            state.pool.spawn(self._run_handlers, state, message)  # waits while the pool is full
        else:
            self._run_handlers(state, message)

    def _run_handlers(self, state: _AppState, message: Any) -> None:
        app = state.app_ref()
        if app is None:
            return
        with app.app_context():
            message_received.send(app, message=message)
            for handler in self._handlers:
                try:
                    handler(message)
                except Exception:
                    state.client.handler_failed(
                        f"message handler {getattr(handler, '__name__', handler)!s}", "the next handlers still run"
                    )


def get_client(app: Optional[Flask] = None) -> WebSocketClient:
    """The client of ``app`` (default: the current app)."""
    state: _AppState = (app or current_app).extensions[EXTENSION_KEY]
    return state.client


def _start_if_serving(state: _AppState) -> None:
    """before_request: the first request shows this process is the one serving."""
    client = state.client
    if not state.autostart or client.running or client.lifecycle.ended:  # stopped, or stopping (worker exit)
        return
    if client.can_start_here():
        client.start()
    elif not state.warned_cannot_start:
        state.warned_cannot_start = True
        client.log.error(
            "cannot start here: this process is not gevent-patched and requests run in OS threads, "
            "where no gevent hub runs; call gevent.monkey.patch_all() before importing the app, "
            "or serve it with gevent (gunicorn -k gevent, gevent.pywsgi)"
        )


def _metrics_view() -> Response:
    """The exposition format: the workers' aggregate under PROMETHEUS_MULTIPROC_DIR, else this process's."""
    body, content_type = metrics.exposition()
    return Response(body, 200, {"Content-Type": content_type})


def _health_view() -> tuple[Response, int]:
    client = get_client()
    status = client.status()
    alerts = {a["name"] for a in status["alerts"]}
    healthy = status["connected"] and not (alerts - BENIGN_ALERTS)
    status["healthy"] = bool(healthy)
    return jsonify(status), 200 if healthy else 503


# -- CLI: flask hermes check | send | outbox-sql ------------------------------------------------------

# AppGroup runs each command inside the app's context.
_cli = AppGroup("hermes", help="Check or use the app's WebSocket connection.")


@_cli.command("check", help="Connect with the app's configuration and measure a ping round trip.")
@click.option("--timeout", default=None, type=float, help="Seconds (default: HERMES_CONNECT_TIMEOUT).")
def _check(timeout: Optional[float]) -> None:
    client = get_client()
    url = client.url()
    timeout = timeout or client.settings.CONNECT_TIMEOUT
    shown = redact_url(url)
    began = time.monotonic()
    try:
        conn = client.open_connection(timeout)
    except Exception as exc:
        raise click.ClickException(f"handshake with {shown} failed: {client.log.redact(str(exc)) or type(exc).__name__}")
    handshake_ms = (time.monotonic() - began) * 1000
    try:
        sent = time.monotonic()
        conn.ping(b"hermes-check")
        if gevent.with_timeout(timeout, _first_pong, conn, timeout_value=False):
            rtt_ms = (time.monotonic() - sent) * 1000
            chosen = f", subprotocol {conn.subprotocol}" if conn.subprotocol else ""
            click.echo(f"OK: connected to {shown} (handshake {handshake_ms:.1f} ms, ping round trip {rtt_ms:.1f} ms"
                       f"{chosen})")
            return
        raise click.ClickException(f"connected to {shown}, but no pong within {timeout:g}s")
    finally:
        conn.send_close(CLOSE_NORMAL, "check done")
        conn.abort()


def _first_pong(conn: Connection) -> bool:
    """True once a pong arrives; False if the connection ends first."""
    return any(isinstance(event, Pong) for event in conn.events())


@_cli.command("send", help="Send one message and wait until it is written.")
@click.argument("message")
@click.option("--timeout", default=10.0, type=float, show_default=True)
def _send(message: str, timeout: float) -> None:
    client = get_client()
    if not client.running:
        client.start()
    if not client.wait_until_connected(timeout):
        client.stop(1)
        raise click.ClickException(f"not connected to {redact_url(client.url())} within {timeout:g}s")
    client.send_message(message)
    written = client.flush(timeout)
    client.stop(timeout)
    if not written:
        raise click.ClickException(f"message not written within {timeout:g}s")
    click.echo(f"sent {len(message)} characters to {redact_url(client.url())}")


@_cli.command("outbox-sql", help="Print the SQL that creates the PostgreSQL outbox's tables (for a migration).")
def _outbox_sql() -> None:
    settings = get_client().settings
    location = settings.outbox_location()
    if location is None or location.kind != "postgres":
        raise click.ClickException("HERMES_OUTBOX_URL does not name a PostgreSQL database (postgresql://...); "
                                   "the SQLite outbox creates its own file.")
    click.echo(f"-- hermes_gevent outbox tables for OUTBOX_TABLE={location.table!r} (created at start if missing)")
    click.echo(pg_store.schema_sql(location.table), nl=False)
