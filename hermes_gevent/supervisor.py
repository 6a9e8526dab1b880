"""The supervisor greenlet: connect, publish the session, watch it, decide what follows.

    connect (through the client's connector) -> publish a Session to the reader and
    the sender -> ping and watch it -> ask the Retry value what follows -> wait -> again

Every wait is on an event that ``stop()`` and ``reconnect()`` set, so nothing waits
out a delay blindly. The decisions are the Retry value's (retry.py); the lifecycle
moves are the Lifecycle's (lifecycle.py); this module only obeys them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional
from urllib.parse import quote

import gevent

from .connection import Connection
from .errors import ConnectionClosed, PingTimeout
from .frames import CLOSE_ABNORMAL
from .headers import check_headers, handshake_headers
from .lifecycle import State
from .logs import redact_url, secrets_in
from .proxy import basic_credentials, proxy_for
from .retry import describe
from .session import Session, now
from .transport import parse_ws_url, ssl_context_for

if TYPE_CHECKING:
    from .client import WebSocketClient

__all__ = ["open_connection", "supervise"]


def supervise(client: "WebSocketClient", generation: int) -> None:
    life = client.lifecycle
    while client._current(generation) and not life.ended:
        client._wake.clear()  # set by stop() and reconnect(): act now
        if life.gave_up:
            client._wake.wait()
            continue
        life.move(State.CONNECTING)
        try:
            session = _connect_once(client)
        except Exception as exc:  # every failure is classified; none kills the loop
            if not client._current(generation) or life.ended:
                return
            _after_failure(client, exc, uptime=None)
            continue
        if not client._current(generation) or life.ended:
            session.conn.abort()
            return
        _run_session(client, session, generation)
        if not client._current(generation) or life.ended:
            return
        error = session.error or ConnectionClosed(CLOSE_ABNORMAL, "connection lost")
        _after_failure(client, error, uptime=now() - session.opened_at)


def open_connection(client: "WebSocketClient", timeout: Optional[float] = None) -> Connection:
    """One attempt, through the client's connector, with the URL and headers read anew
    (the supervisor's attempts, and ``flask hermes check``)."""
    url = client.url()
    headers = client.headers()
    check_headers(headers)  # a value from a database cannot inject a header (ConfigError: give up)
    client._redactor.learn(secrets_in(url, headers))
    headers = handshake_headers(headers, client.origin(), client.settings.SUBPROTOCOLS)
    host, port, secure = parse_ws_url(url)
    proxy = proxy_for(client.settings.PROXY, host, port, secure)  # the environment read anew, too
    if proxy is None:
        client.proxy_in_use = None
        client.log.info(f"connecting to {redact_url(url)}")
    else:
        credentials = basic_credentials(proxy)
        if credentials is not None and proxy.password:
            # the password as given and as it would appear in a URL or a header
            client._redactor.learn(s for s in {proxy.password, quote(proxy.password, safe=""), credentials,
                                               credentials.split()[-1]} if len(s) >= 4)
        client.proxy_in_use = proxy.display
        client.log.info(f"connecting to {redact_url(url)} through proxy {proxy.display}")
    client.log.debug(f"upgrade headers: {sorted(headers)}")
    timeout = client.settings.CONNECT_TIMEOUT if timeout is None else timeout
    ssl_context = ssl_context_for(client.ssl_context, client.ca_file)
    size = client.settings.MAX_MESSAGE_SIZE
    if proxy is None:  # a connector that knows nothing of proxies (a test's in-process one) still works
        return client._connector(url, headers, timeout=timeout, max_message_size=size, ssl_context=ssl_context)
    return client._connector(url, headers, timeout=timeout, max_message_size=size, ssl_context=ssl_context,
                             proxy=proxy.url)


def _connect_once(client: "WebSocketClient") -> Session:
    # With acknowledgements the window resends what the server never confirmed: no need to ask
    # the kernel which writes it left unacknowledged.
    requeue = client._requeue_unacknowledged if client._window is None else None
    if client._metrics is None:
        return Session(open_connection(client), requeue)
    began = now()
    conn = open_connection(client)
    client._metrics.connect_took(now() - began)
    return Session(conn, requeue)


def _run_session(client: "WebSocketClient", session: Session, generation: int) -> None:
    """Publish a live session, watch it until it is lost, then unpublish it."""
    if client._metrics is not None:
        client._metrics.opened(client._has_connected)
    if client._has_connected:
        client.reconnects += 1
    client._has_connected = True
    client._mark_connected_now()
    client._session = session
    client.lifecycle.move(State.OPEN)
    client._connected_event.set()
    client.log.info(f"connected to {redact_url(client._safe_url())}")
    client._safe_hook(client.on_open)
    client._reader_inbox.put(session)
    client._sender_inbox.put(session)
    try:
        _watch(client, session)
    finally:
        session.fail(session.error or ConnectionClosed(CLOSE_ABNORMAL, "connection lost"))
        if client._window is not None and generation == client._generation:
            client._window.connection_lost()  # what it carried goes again first, on the next one
        if client._outbox is not None:
            client._outbox.wake()  # the sender may be waiting for a message on the dead session
        if generation == client._generation:
            client._connected_event.clear()
    error = session.error
    code = getattr(error, "code", CLOSE_ABNORMAL)
    if client._metrics is not None:
        client._metrics.lost(code if isinstance(code, int) else CLOSE_ABNORMAL)  # once per connection
    if generation != client._generation:
        return
    reason = getattr(error, "reason", "") or str(error)
    if not client.lifecycle.ended:
        client.log.warning(f"connection lost: {describe(error) if error else 'unknown'}")
    client._safe_hook(client.on_close, code, reason)


def _watch(client: "WebSocketClient", session: Session) -> None:
    """Ping every PING_INTERVAL; declare the connection dead after PING_TIMEOUT of silence."""
    interval, ping_timeout = client.settings.PING_INTERVAL, client.settings.PING_TIMEOUT
    next_ping = session.opened_at + interval
    # Through stop() too: its flush may take seconds (MAX_SEND_RATE, acknowledgements), and the
    # link is still watched meanwhile; stop() itself ends the session.
    while session.alive and client.lifecycle.state is not State.STOPPED:
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
                client.log.warning(
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


def _after_failure(client: "WebSocketClient", exc: BaseException, *, uptime: Optional[float]) -> None:
    """What follows a failed attempt (``uptime`` None) or a lost connection: the Retry
    value decides; wait for the delay unless stop() or reconnect() asks to act now."""
    if uptime is not None:
        client._retry = client._retry.after_connection(uptime)  # a success resets the count, act-now or not
    client._safe_hook(client.on_error, exc)
    life = client.lifecycle
    if client._wake.is_set() or life.ended:
        return
    retryable = client.should_retry(exc)  # the application's code: it may yield
    if client._wake.is_set() or life.ended:
        return
    decision = client._retry.next(exc, retryable=retryable, uptime=uptime, rng=client._random)
    client._retry = decision.retry
    if decision.give_up is not None:
        life.move(State.GAVE_UP)
        client.log.error(f"{decision.give_up}; call reconnect() to try again")
        client._safe_hook(client.on_give_up, exc)
        return
    delay = decision.delay or 0.0
    if not client._retry.lived(uptime) and not isinstance(exc, ConnectionClosed):
        client.log.warning(f"connection attempt failed: {describe(exc)}")
    limit_text = client.settings.DEFAULT_RETRY_LIMIT or "unlimited"
    why = f"; {decision.note}" if decision.note else ""  # the server's own ask, logged once, here
    client.log.warning(f"reconnecting in {delay:.1f}s (attempt {client._retry.failures + 1}/{limit_text}{why})")
    life.move(State.BACKING_OFF)
    client._wake.wait(delay)
