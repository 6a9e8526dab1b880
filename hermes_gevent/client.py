"""WebSocketClient: the supervisor, reader, sender and health greenlets.

This module is longer than the others on purpose: the four loops share one run's
state (the session, the outbox, the generation, the stop sequence), and keeping them
side by side keeps that state machine readable in one place. Everything that can live
without that state does: the policies, the transport, the outbox, and the Session.

    supervisor  connect -> publish a Session -> ping and watch it -> back off -> again
    reader      for each Session: read frames, answer pings, dispatch messages
    sender      for each Session: take a batch from the outbox, write it, ack it
    health      every HEALTH_CHECK_INTERVAL: compute alerts, log what changed

Policy (backoff, retry classification, alerts) lives in pure modules; this
module only obeys it. All waiting is on gevent events that ``stop()`` and
``reconnect()`` can set, so nothing waits out a delay blindly, and nothing
here blocks the hub: no threads, no time.sleep, only gevent sockets.
"""

from __future__ import annotations

import atexit
import enum
import functools
import json
import logging
import os
import random
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Optional, Union

import gevent
import gevent.event
import gevent.monkey
import gevent.queue
from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists

from . import frames, health, transport
from .backoff import Backoff
from .base import BaseClient
from .errors import ConnectionClosed, HandshakeRejected, PingTimeout, ProtocolError
from .fairness import loop_turn_counter, new_turns, pause, take_turn, timer_floor
from .headers import check_headers
from .logs import ClientLog, RateLimitedCounter, Redactor, enable_stderr_logging, env_flag, redact_url, secrets_in
from .outbox import DROP_STOPPED, Item, Outbox
from .policy import describe
from .session import Session, now as _now

Message = Union[str, bytes, bytearray, memoryview, dict, list]
#: connector(url, headers, *, timeout, max_message_size, ssl_context) -> transport.Connection
Connector = Callable[..., transport.Connection]


class State(enum.Enum):
    IDLE = "idle"  # never started, or reset after fork
    CONNECTING = "connecting"
    OPEN = "open"
    BACKING_OFF = "backing_off"
    GAVE_UP = "gave_up"
    STOPPING = "stopping"
    STOPPED = "stopped"


#: Largest batch the sender frames into one socket write.
MAX_BATCH_ITEMS = 256
MAX_BATCH_BYTES = 256 * 1024
#: Read coalescing: a read under COALESCE_BELOW bytes that found data already waiting (the
#: event loop did not turn during it; on loops that do not count turns, it returned within
#: COALESCE_IF_WAITED_UNDER seconds), with nothing written meanwhile, pauses
#: COALESCE_PAUSE seconds before the next read. Streams of small frames then arrive in large
#: reads; a lone message, or a request/response exchange, is never delayed.
COALESCE_BELOW = 16 * 1024
COALESCE_IF_WAITED_UNDER = 0.00002
COALESCE_PAUSE = 0.0005
#: Above this fraction of MAX_QUEUE_SIZE queued, the sender works for fairness.MAX_BUDGET
#: before it yields: the queue is close enough to overflow that waiting would lose messages.
BACKLOG_URGENT = 0.25
#: A loop that died is restarted after this many seconds (avoids a hot crash loop).
LOOP_RESTART_DELAY = 0.1
#: How long a drop summary line waits before repeating.
DROP_LOG_PERIOD = 10.0
#: How long to wait for the server's answer to our close frame (within stop's budget).
CLOSE_WAIT = 2.0

_all_clients: "weakref.WeakSet[WebSocketClient]" = weakref.WeakSet()
_warned_unpatched = False


class WebSocketClient(BaseClient):
    """A resilient WebSocket client made of greenlets. See the README for the API."""

    def __init__(self, *, connector: Optional[Connector] = None, **options: Any) -> None:
        super().__init__(**options)
        # Every connection is opened through this one callable (transport.connect unless given):
        # the seam where tests put an in-process peer.
        self._connector: Connector = connector or transport.connect
        s = self.settings
        self.backoff = Backoff(s.DEFAULT_RETRY_DELAY, s.MAX_RETRY_DELAY, 2.0, s.RETRY_JITTER)
        self._redactor = Redactor()
        self.log = ClientLog(self.name, self._redactor)
        self._random = random.Random()
        self._generation = 0
        self._home_hub = gevent.get_hub()  # the loops run here; other threads hand off to it
        self._orphans: list[gevent.Greenlet] = []
        self._outbox: Optional[Outbox] = None
        self._reset_run()
        self._reset_counters()
        self.state = State.IDLE
        self._started = False
        self._autostart_pending = False
        self._outbox_or_create()  # now, in the home thread: other threads may send before start()
        _all_clients.add(self)

    def _reset_run(self) -> None:
        """What belongs to one run (start to stop). Loops of an older run see a
        different generation and exit without touching the new run's state."""
        self._generation += 1
        self._stopping = False
        self._loops: dict[str, gevent.Greenlet] = {}
        self._session: Optional[Session] = None
        self._reader_inbox: gevent.queue.Queue = gevent.queue.Queue()
        self._sender_inbox: gevent.queue.Queue = gevent.queue.Queue()
        self._wake = gevent.event.Event()
        self._connected_event = gevent.event.Event()
        self._stopped_event = gevent.event.Event()
        self._reconnect_now = False
        self._gave_up = False
        self.retry_count = 0
        self._alerts: dict[str, str] = {}
        self._stop_result: Optional[int] = None

    def _reset_counters(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.messages_dropped = 0
        self.reconnects = 0
        self.handler_errors = 0
        self.drops_by_reason: dict[str, int] = {}
        self._has_connected = False
        self._last_message_at: Optional[float] = None  # monotonic
        self._debug_bodies = False
        self._drop_log = RateLimitedCounter(DROP_LOG_PERIOD)

    # -- public API ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between start() and the end of stop()."""
        return self._started and not self._stopping

    @property
    def autostart_pending(self) -> bool:
        """True when the client waits for its first use to start (see start_on_first_use)."""
        return self._autostart_pending

    @property
    def queue_size(self) -> int:
        """Messages queued or being written (status()["queue_size"], without building the dict):
        cheap enough for a producer to check as it goes, and wait (flush) when it is high."""
        outbox = self._outbox
        return len(outbox) if outbox is not None else 0

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.alive and self.state is State.OPEN

    def start(self) -> "WebSocketClient":
        """Spawn the loops and return at once; calling it again does nothing."""
        if self._started and not self._stopping:
            return self
        if self._stopping and not self._stopped_event.is_set():
            raise RuntimeError("start() called while stop() is still running")
        transport.parse_ws_url(self.url())  # ConfigError now, not inside a loop
        if self._log_enabled or (self._log_enabled is None and env_flag(os.environ.get(self.LOG_ENV))):
            enable_stderr_logging()
        self._warn_if_unpatched()
        if self._orphans:
            gevent.killall(self._orphans, block=False)  # a forked parent's loops, stale here
            self._orphans = []
        self._reset_run()
        self._outbox_or_create()
        self._autostart_pending = False
        self._started = True
        self._stopped_event.clear()
        self.state = State.CONNECTING
        for name in ("supervisor", "reader", "sender", "health"):
            self._spawn_loop(name)
        self.log.info(f"client started for {redact_url(self._safe_url())}")
        return self

    def start_on_first_use(self) -> None:
        """Do not connect now; start on the first send_message() from this process's
        gevent thread (or from the gunicorn hooks). For apps imported before the
        process serves (gunicorn --preload's master, a CLI)."""
        if not self._started:
            self._autostart_pending = True

    def can_start_here(self) -> bool:
        """True when called from the OS thread whose gevent hub runs this client."""
        return get_hub_if_exists() is self._home_hub

    def send_message(self, msg: Message) -> bool:
        """Queue ``msg`` for sending; True if accepted, False if dropped.

        str -> text frame, bytes -> binary frame, dict/list -> JSON text frame.
        Raises TypeError/ValueError here for a message that cannot be sent, and
        QueueFull under the "raise" strategy. Safe from any greenlet or thread.
        """
        item = self._encode(msg)
        if self._autostart_pending and self.can_start_here():
            self.start()
        if self._stopping or self.state is State.STOPPED:
            self._count_drop(item, DROP_STOPPED)
            return False
        return self._outbox_or_create().put(item)

    def status(self) -> dict[str, Any]:
        """A snapshot of the client's state, safe to serialize as JSON."""
        loops = self._loops
        alive = lambda name: bool(loops.get(name)) and not loops[name].dead  # noqa: E731
        return {
            "connected": self.connected,
            "started": self._started,
            "stopping": self._stopping,
            "retry_count": self.retry_count,
            "max_retries_reached": self._gave_up,
            "queue_size": self.queue_size,
            "event_thread_alive": alive("reader"),
            "send_thread_alive": alive("sender"),
            "health_thread_alive": alive("health"),
            "supervisor_alive": alive("supervisor"),
            "state": self.state.value,
            "last_message_at": _iso(None if self._last_message_at is None else time.time() - (_now() - self._last_message_at)),
            "last_connected_at": self.last_connected_at(),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_dropped": self.messages_dropped,
            "drops_by_reason": dict(self.drops_by_reason),
            "reconnects": self.reconnects,
            "handler_errors": self.handler_errors,
            "alerts": [{"name": k, "message": v} for k, v in self._alerts.items()],
        }

    def wait_until_connected(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until connected (True) or ``timeout`` passes (False)."""
        return bool(self._connected_event.wait(timeout)) and self.connected

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until the queue is empty and written, or ``timeout``."""
        outbox = self._outbox
        return outbox is None or outbox.wait_empty(timeout)

    def reconnect(self) -> None:
        """Drop the current connection (if any) and try again now; leaves the gave-up state."""
        if self._stopping or not self._started:
            return
        self._reconnect_now = True
        if self._gave_up:
            self.log.info("reconnect() called: leaving the gave-up state")
            self._gave_up = False
            self.retry_count = 0
        session = self._session
        if session is not None and session.alive:
            session.conn.send_close(1000, "reconnecting")
            session.fail(ConnectionClosed(1000, "reconnect() called"))
        self._wake.set()

    def stop(self, timeout: Optional[float] = None) -> int:
        """Stop gracefully: flush within ``timeout``, close with 1000, end the loops.

        Returns how many messages were left undelivered (each counted as a drop
        with reason "stopped" and passed to on_drop). Idempotent.

        Called from the hub (a signal handler in an unpatched process) or from
        one of the client's own greenlets (a message handler), stop() cannot
        wait for the loops it runs in: it schedules the shutdown in a new
        greenlet and returns the number of messages queued at that moment.
        """
        current = getcurrent()
        if current is get_hub_if_exists() or any(current is g for g in self._loops.values()):
            gevent.spawn(self.stop, timeout)
            return len(self._outbox) if self._outbox is not None else 0
        if self._stopping:
            if self._stopped_event.is_set():
                return 0  # already stopped: nothing more was left behind
            self._stopped_event.wait(timeout if timeout is not None else self.settings.MAX_THREAD_WAIT_TIME)
            return self._stop_result or 0
        if not self._started:
            self.state = State.STOPPED
            return self._discard_unsent()
        budget = self.settings.MAX_THREAD_WAIT_TIME if timeout is None else timeout
        deadline = _now() + budget
        self._stopping = True
        self.state = State.STOPPING
        self.log.info(f"stopping (flushing for up to {budget:g}s)")
        session = self._session
        if session is not None and session.alive and self._outbox is not None:
            flusher = gevent.spawn(self._outbox.wait_empty, max(0.0, deadline - _now()))
            gevent.wait([flusher, session.lost], count=1, timeout=max(0.0, deadline - _now()))
            flusher.kill()
        if session is not None and session.alive:
            with gevent.Timeout(max(0.0, min(1.0, deadline - _now())), False):
                session.conn.send_close(1000, "client stopping")
            session.lost.wait(max(0.0, min(CLOSE_WAIT, deadline - _now())))
            session.fail(ConnectionClosed(1000, "client stopped"))
        self._wake.set()
        self._generation += 1  # the loops of this run are stale from here on
        self._kill_loops(max(0.0, deadline - _now()))
        undelivered = self._discard_unsent()
        self._started = False
        self.state = State.STOPPED
        self._connected_event.clear()
        self._stop_result = undelivered
        self._stopped_event.set()
        level = logging.WARNING if undelivered else logging.INFO
        self.log.log(level, f"stopped; {undelivered} message(s) left undelivered")
        return undelivered

    # -- loops -----------------------------------------------------------------

    def _spawn_loop(self, name: str) -> None:
        greenlet = gevent.Greenlet(getattr(self, f"_{name}_loop"), self._generation)
        greenlet.name = f"hermes:{self.name}:{name}"
        greenlet.link_exception(lambda g, name=name: self._loop_died(name, g))
        self._loops[name] = greenlet
        greenlet.start()

    def _loop_died(self, name: str, greenlet: gevent.Greenlet) -> None:
        if self._stopping or self._loops.get(name) is not greenlet:
            return
        self.log.error(f"the {name} loop died ({describe(greenlet.exception)}); restarting it")
        session = self._session
        if session is not None:
            # The loops share a session; restarting one mid-session would desynchronize them.
            session.fail(ConnectionClosed(1006, f"{name} loop restarted"))
        gevent.spawn_later(LOOP_RESTART_DELAY, self._restart_loop, name, greenlet, self._generation)

    def _restart_loop(self, name: str, dead: gevent.Greenlet, generation: int) -> None:
        if self._current(generation) and self._loops.get(name) is dead:
            self._spawn_loop(name)

    def _current(self, generation: int) -> bool:
        """True while a loop of run ``generation`` should go on (through stop()'s flush)."""
        return generation == self._generation

    def _supervisor_loop(self, gen: int) -> None:
        while self._current(gen) and not self._stopping:
            self._wake.clear()
            self._reconnect_now = False
            if self._gave_up:
                self.state = State.GAVE_UP
                self._wake.wait()
                continue
            self.state = State.CONNECTING
            try:
                session = self._connect_once()
            except Exception as exc:  # every failure is classified; none kills the loop
                if not self._current(gen) or self._stopping:
                    return
                self._after_failure(exc, failed_attempt=True)
                continue
            if not self._current(gen) or self._stopping:
                session.conn.abort()
                return
            self._run_session(session, gen)
            if not self._current(gen) or self._stopping:
                return
            uptime = _now() - session.opened_at
            error = session.error or ConnectionClosed(1006, "connection lost")
            if uptime >= self.settings.MIN_UPTIME:
                self.retry_count = 0
            self._after_failure(error, failed_attempt=uptime < self.settings.MIN_UPTIME)

    def _connect_once(self) -> Session:
        url = self.url()
        headers = self.headers()
        check_headers(headers)  # a value from a database cannot inject a header (ConfigError: give up)
        self._redactor.learn(secrets_in(url, headers))
        self.log.info(f"connecting to {redact_url(url)}")
        self.log.debug(f"upgrade headers: {sorted(headers)}")
        ssl_context = self.ssl_context
        if ssl_context is None and self.ca_file is not None:
            ssl_context = transport.default_ssl_context(self.ca_file)
        conn = self._connector(
            url,
            headers,
            timeout=self.settings.CONNECT_TIMEOUT,
            max_message_size=self.settings.MAX_MESSAGE_SIZE,
            ssl_context=ssl_context,
        )
        return Session(conn, self._requeue_unacknowledged)

    def _run_session(self, session: Session, gen: int) -> None:
        """Publish a live session, watch it until it is lost, then unpublish it."""
        if self._has_connected:
            self.reconnects += 1
        self._has_connected = True
        self._mark_connected_now()
        self._session = session
        self.state = State.OPEN
        self._connected_event.set()
        self.log.info(f"connected to {redact_url(self._safe_url())}")
        self._safe_hook(self.on_open)
        self._reader_inbox.put(session)
        self._sender_inbox.put(session)
        try:
            self._watch(session)
        finally:
            session.fail(session.error or ConnectionClosed(1006, "connection lost"))
            if self._outbox is not None:
                self._outbox.wake()  # the sender may be waiting for a message on the dead session
            if gen == self._generation:
                self._connected_event.clear()
        if gen != self._generation:
            return
        error = session.error
        code = getattr(error, "code", 1006)
        reason = getattr(error, "reason", "") or str(error)
        if not self._stopping:
            self.log.warning(f"connection lost: {describe(error)}")
        self._safe_hook(self.on_close, code, reason)

    def _watch(self, session: Session) -> None:
        """Ping every PING_INTERVAL; declare the connection dead after PING_TIMEOUT of silence."""
        interval, ping_timeout = self.settings.PING_INTERVAL, self.settings.PING_TIMEOUT
        next_ping = session.opened_at + interval
        while session.alive and not self._stopping:
            now = _now()
            sent = session.ping_sent_at
            if sent is not None and session.last_frame_at < sent and now - sent >= ping_timeout:
                busy_since = session.handler_since
                if busy_since is None:
                    session.fail(PingTimeout(f"no frame for {ping_timeout:g}s after a ping"))
                    return
                # The reader is inside handle_message: the pong may be waiting unread. Judge the
                # link again PING_TIMEOUT from now instead of killing a healthy connection.
                if session.slow_handler_warned != busy_since:
                    session.slow_handler_warned = busy_since
                    self.log.warning(
                        f"handle_message has been running for {now - busy_since:.1f}s: reading and pong "
                        "replies are paused (hand long work to a greenlet or HERMES_HANDLER_POOL_SIZE)"
                    )
                session.ping_sent_at = sent = now
            if now >= next_ping:
                if sent is None or session.last_frame_at >= sent:
                    session.ping_sent_at = now  # the oldest unanswered ping starts the clock
                next_ping = now + interval
                # Spawned: a write stuck on a dead peer must not stop the liveness clock.
                gevent.spawn(self._send_ping, session)
                continue
            wake_at = next_ping
            if sent is not None and session.last_frame_at < sent:
                wake_at = min(wake_at, sent + ping_timeout)
            session.lost.wait(max(0.0, wake_at - now))

    def _requeue_unacknowledged(self, items: list) -> None:
        outbox = self._outbox
        if items and outbox is not None:
            outbox.requeue_front(items)
            self.messages_sent -= len(items)
            self.log.info(f"{len(items)} message(s) the server's TCP never acknowledged will be sent again")

    def _send_ping(self, session: Session) -> None:
        try:
            session.conn.ping()
        except Exception as exc:
            session.fail(exc if isinstance(exc, ConnectionClosed) else ConnectionClosed(1006, f"ping failed: {exc}"))

    def _after_failure(self, exc: BaseException, *, failed_attempt: bool) -> None:
        """Decide what follows a failed attempt or a lost connection, and wait for it."""
        self._safe_hook(self.on_error, exc)
        if self._reconnect_now or self._stopping:
            return
        if not self.should_retry(exc):
            self._give_up(exc, f"not retrying after {describe(exc)}")
            return
        attempt = self.retry_count
        if failed_attempt:
            self.retry_count += 1
            limit = self.settings.DEFAULT_RETRY_LIMIT
            if limit is not None and self.retry_count >= limit:
                self._give_up(exc, f"giving up after {self.retry_count} consecutive failed attempts ({describe(exc)})")
                return
        delay = self.backoff.delay(attempt, self._random)
        limit_text = self.settings.DEFAULT_RETRY_LIMIT or "unlimited"
        if failed_attempt and not isinstance(exc, ConnectionClosed):
            self.log.warning(f"connection attempt failed: {describe(exc)}")
        self.log.warning(f"reconnecting in {delay:.1f}s (attempt {self.retry_count + 1}/{limit_text})")
        self.state = State.BACKING_OFF
        self._wake.wait(delay)

    def _give_up(self, exc: BaseException, message: str) -> None:
        self._gave_up = True
        self.state = State.GAVE_UP
        hint = ""
        if isinstance(exc, HandshakeRejected) and exc.status in (401, 403):
            hint = " - check the credentials this client sends"
        self.log.error(f"{message}{hint}; call reconnect() to try again")
        self._safe_hook(self.on_give_up, exc)

    def _reader_loop(self, gen: int) -> None:
        inbox = self._reader_inbox
        while self._current(gen):
            session = inbox.get()
            if session.alive and self._current(gen):
                self._read_session(session)

    def _read_session(self, session: Session) -> None:
        conn = session.conn
        parse = conn.parser.parse
        on_message = self._on_data
        on_control = functools.partial(self._on_control, session)
        turns = new_turns()
        loop_turns = loop_turn_counter()
        coalesce_pause = timer_floor(COALESCE_PAUSE)
        try:
            if conn.parser.buffered:  # frames the server sent along with its 101
                session.handler_since = _now()
                parse(on_message, on_control)
                session.handler_since = None
            writes, turned = -1, 0
            while True:
                asked_at = _now()
                if loop_turns is not None:
                    turned = loop_turns()
                read_at = session.last_frame_at = conn.receive()
                # Did recv() wait for data (the event loop turned meanwhile), or find it waiting?
                if loop_turns is not None:
                    waited = loop_turns() != turned
                    found_waiting = not waited
                else:  # a loop that counts no turns (libuv): time the call; the budget alone decides yields
                    waited = False
                    found_waiting = read_at - asked_at < COALESCE_IF_WAITED_UNDER
                quiet, writes = conn.writes == writes, conn.writes  # nothing written since the last read
                self._debug_bodies = self.log.logger.isEnabledFor(logging.DEBUG)
                received = self.messages_received
                session.handler_since = read_at  # the handlers run inside parse()
                parse(on_message, on_control)
                session.handler_since = None
                if self.messages_received != received:
                    self._last_message_at = read_at
                if waited:
                    turns.turned(read_at)  # the hub already ran while we waited: no extra turn
                elif quiet and found_waiting and conn.last_read_size < COALESCE_BELOW:
                    # Small reads that never had to wait, while we are not writing: the server
                    # streams frames faster than we ask. Reading each packet alone costs a syscall
                    # and a loop turn per one or two messages; a short pause gathers them into one
                    # large read. (A request/response exchange writes between reads: never paused.)
                    pause(turns, coalesce_pause)  # a timer: a loop turn too
                else:
                    # recv() does not yield while data is waiting: read on, within the budget (fairness.py).
                    take_turn(turns)
        except _ServerClosed as closed:
            event = closed.event
            self.log.info(f"server closed the connection with code {event.code} {event.reason}".rstrip())
            if not conn.close_sent:
                conn.send_close(event.code if event.code != frames.CLOSE_NO_STATUS else 1000)
            session.fail(ConnectionClosed(event.code, event.reason))
        except ProtocolError as exc:
            self.log.warning(f"protocol error from the server: {exc}")
            with gevent.Timeout(1.0, False):
                conn.send_close(exc.code, exc.reason[:100])
            session.fail(exc)
        except ConnectionClosed as exc:
            session.fail(exc)
        except OSError as exc:
            session.fail(ConnectionClosed(1006, f"read failed: {exc}"))

    def _on_data(self, data: Union[str, bytes]) -> None:
        """Every data message, in order, from the reader greenlet."""
        self.messages_received += 1
        if self._debug_bodies:
            self.log.body("received", data)
        try:
            self.handle_message(data)
        except Exception:
            self.handler_errors += 1
            self.log.error(f"handle_message raised (error #{self.handler_errors}); the reader goes on", exc_info=True)

    def _on_control(self, session: Session, event: frames.Event) -> None:
        kind = type(event)
        if kind is frames.Ping:
            session.conn.pong(event.payload)
        elif kind is frames.Close:
            raise _ServerClosed(event)

    def _sender_loop(self, gen: int) -> None:
        outbox = self._outbox_or_create()
        inbox = self._sender_inbox
        backlog_urgent = self.settings.MAX_QUEUE_SIZE * BACKLOG_URGENT
        while self._current(gen):
            session = inbox.get()
            turns = session.conn.write_turns
            while session.alive and self._current(gen):
                waits = not len(outbox)
                batch = outbox.take(MAX_BATCH_ITEMS, MAX_BATCH_BYTES, timeout=None)
                if waits:
                    turns.turned(_now())  # take() waited for a message: the event loop turned
                if not session.alive:
                    break  # the batch stays in flight and goes out first on the next session
                if not batch:
                    continue  # woken without a message (a resend was queued, or the session ended)
                try:
                    session.conn.send_frames(batch)
                except transport.WriteFailed as exc:
                    # What reached the kernel is the ledger's to judge (see Session.fail); where
                    # acknowledgements cannot be tracked, the whole batch goes again.
                    written = exc.handed if session.conn.tracks_acks else 0
                    self.messages_sent += outbox.settle(batch, written)
                    session.fail(exc)
                    break
                self.messages_sent += outbox.ack()
                # A full queue never blocks take(), nor a draining socket send(): let the
                # event loop turn once this loop has had the hub for its budget (fairness.py),
                # the whole cap while the queue is close enough to overflow to lose messages.
                take_turn(turns, urgent=len(outbox) > backlog_urgent)

    def _health_loop(self, gen: int) -> None:
        while True:
            gevent.sleep(self.settings.HEALTH_CHECK_INTERVAL)
            if not self._current(gen):
                return
            self.check_health()

    def check_health(self) -> dict[str, str]:
        """Recompute alerts now (the health loop calls this); log what changed."""
        snapshot = self.status()
        session = self._session
        snapshot["_last_activity"] = None
        if session is not None and session.alive:
            snapshot["_last_activity"] = max(self._last_message_at or 0.0, session.opened_at)
        alerts = health.compute_alerts(snapshot, self.settings, _now())
        appeared, cleared = health.alert_changes(self._alerts, alerts)
        for name in appeared:
            self.log.warning(f"ALERT {name}: {alerts[name]}")
        for name in cleared:
            self.log.info(f"alert cleared: {name}")
        self._alerts = alerts
        pending = self._drop_log.flush()
        if pending:
            self.log.warning(f"{pending} more message(s) dropped ({self._drops_text()})")
        return alerts

    # -- helpers -------------------------------------------------------------------

    def _encode(self, msg: Message) -> Item:
        if isinstance(msg, str):
            try:
                payload = msg.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"message is not valid Unicode text: {exc}") from None
            opcode = frames.OP_TEXT
        elif isinstance(msg, (bytes, bytearray, memoryview)):
            payload, opcode = bytes(msg), frames.OP_BINARY
        elif isinstance(msg, (dict, list)):
            payload, opcode = json.dumps(msg, separators=(",", ":")).encode("utf-8"), frames.OP_TEXT
        else:
            raise TypeError(
                f"send_message() takes str, bytes, dict or list, not {type(msg).__name__}"
            )
        if len(payload) > self.settings.MAX_MESSAGE_SIZE:
            raise ValueError(
                f"message of {len(payload)} bytes exceeds MAX_MESSAGE_SIZE={self.settings.MAX_MESSAGE_SIZE}"
            )
        return opcode, payload

    def _outbox_or_create(self) -> Outbox:
        if self._outbox is None:
            s = self.settings
            self._outbox = Outbox(s.MAX_QUEUE_SIZE, s.QUEUE_OVERFLOW_STRATEGY, self._count_drop, self._home_hub)
        return self._outbox

    def _count_drop(self, item: Item, reason: str, *, log: bool = True) -> None:
        self.messages_dropped += 1
        self.drops_by_reason[reason] = self.drops_by_reason.get(reason, 0) + 1
        count = self._drop_log.add(_now()) if log else 0
        if count:
            self.log.warning(f"dropped {count} message(s) ({self._drops_text()}); see status()['messages_dropped']")
        opcode, payload = item
        msg: Union[str, bytes] = payload.decode("utf-8") if opcode == frames.OP_TEXT else payload
        if getcurrent() is get_hub_if_exists():
            gevent.spawn(self._safe_hook, self.on_drop, msg, reason)  # user code never runs in the hub
        else:
            self._safe_hook(self.on_drop, msg, reason)

    def _drops_text(self) -> str:
        return ", ".join(f"{reason}: {n}" for reason, n in sorted(self.drops_by_reason.items()))

    def _discard_unsent(self) -> int:
        outbox = self._outbox
        if outbox is None:
            return 0
        remaining = outbox.close()
        self._outbox = None
        for item in remaining:
            self._count_drop(item, DROP_STOPPED, log=False)  # stop() logs the total once
        return len(remaining)

    def _kill_loops(self, timeout: float) -> None:
        current = getcurrent()
        loops = [g for g in self._loops.values() if g is not current]
        gevent.killall(loops, block=True, timeout=max(timeout, 0.1))

    def _safe_hook(self, hook: Any, *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            self.log.error(f"{getattr(hook, '__name__', 'hook')} raised; ignored", exc_info=True)

    def _safe_url(self) -> str:
        try:
            return self.url()
        except Exception:
            return "(no url)"

    def _warn_if_unpatched(self) -> None:
        global _warned_unpatched
        if not _warned_unpatched and not gevent.monkey.is_module_patched("socket"):
            _warned_unpatched = True
            self.log.warning(
                "gevent has not monkey-patched this process: the client stays cooperative, "
                "but other blocking libraries in the app will stall it (call gevent.monkey.patch_all() first)"
            )

    def _after_fork_in_child(self) -> None:
        """In a forked child: hold nothing of the parent's, and start fresh when used."""
        was_running = self._started and not self._stopping
        session = self._session
        if session is not None:
            session.conn.aborted = True  # never write on the parent's connection
            try:
                session.conn.sock.close()  # our copy of the descriptor only; the parent keeps its own
            except OSError:
                pass
        # The parent's greenlets were copied too: orphan them (they see a stale session
        # and an empty outbox); they are killed lazily if they ever run.
        self._orphans = list(self._loops.values())
        self._outbox = None  # queued messages are the parent's to send
        self._reset_run()
        self._reset_counters()
        self.state = State.IDLE
        self._started = False
        self._autostart_pending = was_running or self._autostart_pending


class _ServerClosed(Exception):
    """Raised out of the parser when the server's close frame arrives."""

    def __init__(self, event: frames.Close) -> None:
        self.event = event


def _iso(timestamp: Optional[float]) -> Optional[str]:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def all_clients() -> list["WebSocketClient"]:
    """Every client alive in this process (for server hooks)."""
    return list(_all_clients)


def _reset_after_fork() -> None:
    for client in list(_all_clients):
        client._after_fork_in_child()


def _stop_all_at_exit() -> None:
    for client in list(_all_clients):
        if client._started:  # also waits for a stop() already under way
            try:
                client.stop()
            except Exception:  # interpreter exit: never raise from here
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_stop_all_at_exit)
