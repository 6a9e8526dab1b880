"""The supervisor greenlet: connect, publish the session, watch it, decide what follows.

    connect (through the client's connector) -> publish a Session to the reader and
    the sender -> ping and watch it -> ask the Retry value what follows -> wait -> again

Every wait is on an event that ``stop()`` and ``reconnect()`` set, so nothing waits
out a delay blindly. The decisions are the Retry value's (retry.py); the lifecycle
moves are the Lifecycle's (lifecycle.py); this module only obeys them.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

import gevent

from .connection import Connection
from .errors import ConnectionClosed, PingTimeout
from .frames import CLOSE_ABNORMAL
from .headers import check_headers, handshake_headers
from .lifecycle import State
from .logs import ClientLog, Redactor, redact_url, secrets_in
from .proxy import basic_credentials, proxy_for
from .retry import describe
from .run import App, Run
from .session import Session, now
from .settings import Settings
from .transport import Connector, parse_ws_url, ssl_context_for

__all__ = ["open_connection", "supervise"]


def supervise(run: Run) -> None:
    life = run.lifecycle
    while run.active and not life.ended:
        run.wake.clear()  # set by stop() and reconnect(): act now
        if life.gave_up:
            run.wake.wait()
            continue
        life.move(State.CONNECTING)
        try:
            session = _connect_once(run)
        except Exception as exc:  # every failure is classified; none kills the loop
            if not run.active or life.ended:
                return
            _after_failure(run, exc, uptime=None)
            continue
        if not run.active or life.ended:
            session.conn.abort()
            return
        _run_session(run, session)
        if not run.active or life.ended:
            return
        error = session.error or ConnectionClosed(CLOSE_ABNORMAL, "connection lost")
        _after_failure(run, error, uptime=now() - session.opened_at)


def open_connection(app: App, settings: Settings, connector: Connector, redactor: Redactor, log: ClientLog,
                    timeout: Optional[float] = None) -> Connection:
    """One attempt, through ``connector``, with the URL and headers read anew from ``app``
    (the supervisor's attempts, and ``flask hermes check``)."""
    url = app.url()
    headers = app.headers()
    check_headers(headers)  # a value from a database cannot inject a header (ConfigError: give up)
    redactor.learn(secrets_in(url, headers))
    options = settings.compression_options()
    offer = options.offer() if options is not None else None
    headers = handshake_headers(headers, app.origin(), settings.SUBPROTOCOLS, offer)
    host, port, secure = parse_ws_url(url)
    proxy = proxy_for(settings.PROXY, host, port, secure)  # the environment read anew, too
    if proxy is None:
        app.proxy_in_use = None
        log.info(f"connecting to {redact_url(url)}")
    else:
        credentials = basic_credentials(proxy)
        if credentials is not None and proxy.password:
            # the password as given and as it would appear in a URL or a header
            redactor.learn(s for s in {proxy.password, quote(proxy.password, safe=""), credentials,
                                       credentials.split()[-1]} if len(s) >= 4)
        app.proxy_in_use = proxy.display
        log.info(f"connecting to {redact_url(url)} through proxy {proxy.display}")
    log.debug(f"upgrade headers: {sorted(headers)}")
    timeout = settings.CONNECT_TIMEOUT if timeout is None else timeout
    ssl_context = ssl_context_for(app.ssl_context, app.ca_file)
    size = settings.MAX_MESSAGE_SIZE
    if proxy is None:  # a connector that knows nothing of proxies (a test's in-process one) still works
        conn = connector(url, headers, timeout=timeout, max_message_size=size, ssl_context=ssl_context)
    else:
        conn = connector(url, headers, timeout=timeout, max_message_size=size, ssl_context=ssl_context,
                         proxy=proxy.url)
    if options is not None:
        conn.protocol.compress_with(options)
    return conn


def _connect_once(run: Run) -> Session:
    # With acknowledgements the window resends what the server never confirmed: no need to ask
    # the kernel which writes it left unacknowledged.
    requeue = run.requeue_unacknowledged if run.window is None else None
    began = now()
    conn = open_connection(run.app, run.settings, run.connector, run.redactor, run.log)
    if run.metrics is not None:
        run.metrics.connect_took(now() - began)
    return Session(conn, requeue)


def _run_session(run: Run, session: Session) -> None:
    """Publish a live session, watch it until it is lost, then unpublish it."""
    counters = run.counters
    if run.metrics is not None:
        run.metrics.opened(counters.has_connected)
    if counters.has_connected:
        counters.reconnects += 1
    counters.has_connected = True
    run.app.mark_connected()
    run.session = session
    run.lifecycle.move(State.OPEN)
    run.connected.set()
    run.log.info(f"connected to {redact_url(run.safe_url())}")
    run.call_hook(run.app.on_open)
    run.reader_inbox.put(session)
    run.sender_inbox.put(session)
    try:
        _watch(run, session)
    finally:
        session.fail(session.error or ConnectionClosed(CLOSE_ABNORMAL, "connection lost"))
        if run.window is not None and run.active:
            run.window.connection_lost()  # what it carried goes again first, on the next one
        if run.outbox is not None:
            run.outbox.wake()  # the sender may be waiting for a message on the dead session
        if run.active:
            run.connected.clear()
    error = session.error
    code = getattr(error, "code", CLOSE_ABNORMAL)
    if run.metrics is not None:
        run.metrics.lost(code if isinstance(code, int) else CLOSE_ABNORMAL)  # once per connection
    if not run.active:
        return
    reason = getattr(error, "reason", "") or str(error)
    if not run.lifecycle.ended:
        run.log.warning(f"connection lost: {describe(error) if error else 'unknown'}")
    run.call_hook(run.app.on_close, code, reason)


def _watch(run: Run, session: Session) -> None:
    """Ping every PING_INTERVAL; declare the connection dead after PING_TIMEOUT of silence."""
    interval, ping_timeout = run.settings.PING_INTERVAL, run.settings.PING_TIMEOUT
    next_ping = session.opened_at + interval
    # Through stop() too: its flush may take seconds (MAX_SEND_RATE, acknowledgements), and the
    # link is still watched meanwhile; stop() itself ends the session.
    while session.alive and run.lifecycle.state is not State.STOPPED:
        current = now()
        sent = session.ping_sent_at
        if sent is not None and session.last_frame_at < sent and current - sent >= ping_timeout:
            busy_since = session.handler_since
            if busy_since is None:
                session.fail(PingTimeout(f"no frame for {ping_timeout:g}s after a ping"))
                return
            # The reader is inside handle_message: the pong may be waiting unread. Judge the
            # link again PING_TIMEOUT from now instead of killing a healthy connection.
            if session.slow_handler_warned != busy_since:
                session.slow_handler_warned = busy_since
                run.log.warning(
                    f"handle_message has been running for {current - busy_since:.1f}s: reading and pong "
                    "replies are paused (hand long work to a greenlet or HERMES_HANDLER_POOL_SIZE)"
                )
            session.ping_sent_at = sent = current
        if current >= next_ping:
            if sent is None or session.last_frame_at >= sent:
                session.ping_sent_at = current  # the oldest unanswered ping starts the clock
            next_ping = current + interval
            # Spawned: a write stuck on a dead peer must not stop the liveness clock.
            gevent.spawn(_send_ping, session)
            continue
        wake_at = next_ping
        if sent is not None and session.last_frame_at < sent:
            wake_at = min(wake_at, sent + ping_timeout)
        session.lost.wait(max(0.0, wake_at - current))


def _send_ping(session: Session) -> None:
    conn = session.conn
    if not conn.ping() and conn.protocol.can_send_data and session.alive:  # open, yet not written
        session.fail(ConnectionClosed(CLOSE_ABNORMAL, "ping could not be written"))


def _after_failure(run: Run, exc: BaseException, *, uptime: Optional[float]) -> None:
    """What follows a failed attempt (``uptime`` None) or a lost connection: the Retry
    value decides; wait for the delay unless stop() or reconnect() asks to act now."""
    if uptime is not None:
        run.retry = run.retry.after_connection(uptime)  # a success resets the count, act-now or not
    run.call_hook(run.app.on_error, exc)
    life = run.lifecycle
    if run.wake.is_set() or life.ended:
        return
    retryable = run.app.should_retry(exc)  # the application's code: it may yield
    if run.wake.is_set() or life.ended:
        return
    decision = run.retry.next(exc, retryable=retryable, uptime=uptime, rng=run.random)
    run.retry = decision.retry
    if decision.give_up is not None:
        life.move(State.GAVE_UP)
        run.log.error(f"{decision.give_up}; call reconnect() to try again")
        run.call_hook(run.app.on_give_up, exc)
        return
    delay = decision.delay or 0.0
    if not run.retry.lived(uptime) and not isinstance(exc, ConnectionClosed):
        run.log.warning(f"connection attempt failed: {describe(exc)}")
    limit_text = run.settings.DEFAULT_RETRY_LIMIT or "unlimited"
    why = f"; {decision.note}" if decision.note else ""  # the server's own ask, logged once, here
    run.log.warning(f"reconnecting in {delay:.1f}s (attempt {run.retry.failures + 1}/{limit_text}{why})")
    life.move(State.BACKING_OFF)
    run.wake.wait(delay)
