"""WebSocketClient: the public API, and one run of its five greenlets.

    supervisor  connect -> publish a Session -> ping and watch it -> back off -> again
    reader      for each Session: read, let the protocol deliver messages and answer
    sender      for each Session: take a batch from the outbox, write it, settle it
    health      every HEALTH_CHECK_INTERVAL: compute alerts, log what changed
    outbox      with OUTBOX_PATH: take over messages kept in the file, renew the lease

The supervisor, reader, sender and outbox loops live in supervisor.py, reader.py,
sender.py and persistence.py, the health loop here (it only reads status()); the
decisions in pure modules (retry.py, health.py, lifecycle.py, protocol.py). This module
holds what they share for one run (start to stop) and the lifecycle's one state - some
500 lines, most of them the public methods' contracts. Nothing here blocks the hub: no
threads, no time.sleep, only gevent sockets and events (the outbox file's SQLite runs in
its own thread, see sqlite_store.py).
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import random
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import gevent
import gevent.event
import gevent.queue

from . import health, messages, persistence, process, transport
from .transport import Connector
from .acks import AckWindow
from .base import BaseClient, iso_utc
from .errors import ConnectionClosed
from .frames import CLOSE_ABNORMAL, CLOSE_NORMAL
from .lifecycle import Lifecycle, State
from .logs import ClientLog, Redactor, enable_stderr_logging, env_flag, redact_url
from .messages import Drops, Message
from .metrics import ClientMetrics
from .frames import Item
from .proxy import proxy_for
from .outbox import DROP_STOPPED, Outbox, in_hub, on_thread_of
from .ratelimit import TokenBucket
from .reader import read_loop
from .retry import Retry, describe
from .sender import send_loop
from .session import Session, now
from .memory_store import MemoryStore
from .store import Store
from .supervisor import supervise

__all__ = ["all_clients", "CLOSE_WAIT", "Connector", "LOOP_RESTART_DELAY", "State", "WebSocketClient"]

if TYPE_CHECKING:
    Greenlet = gevent.Greenlet[..., Any]
else:
    Greenlet = gevent.Greenlet
#: A loop that died is restarted after this many seconds (avoids a hot crash loop).
LOOP_RESTART_DELAY = 0.1
#: How long to wait for the server's answer to our close frame (within stop's budget).
CLOSE_WAIT = 2.0

def _health_loop(client: "WebSocketClient", generation: int) -> None:
    client._health_loop(generation)


_LOOPS: dict[str, Callable[["WebSocketClient", int], None]] = {
    "supervisor": supervise,
    "reader": read_loop,
    "sender": send_loop,
    "health": _health_loop,
    "outbox": persistence.claim_loop,
}
all_clients = process.all_clients


class WebSocketClient(BaseClient):
    """A resilient WebSocket client made of greenlets. See the README for the API."""

    def __init__(self, *, connector: Optional[Connector] = None, **options: Any) -> None:
        super().__init__(**options)
        # Every connection is opened through this one callable (transport.connect unless given):
        # the seam where tests put an in-process peer.
        self._connector: Connector = connector or transport.connect
        self._redactor = Redactor()
        #: The proxy of the latest attempt, as scheme://host:port (status()["proxy"]); None: direct.
        self.proxy_in_use: Optional[str] = None
        self.log = ClientLog(self.name, self._redactor)
        self.lifecycle = Lifecycle(self.log.log)
        #: Prometheus metrics (METRICS): None when off - every hook is one check of this attribute.
        self._metrics: Optional[ClientMetrics] = ClientMetrics(self.name) if self.settings.METRICS else None
        self._random = random.Random()
        self._generation = 0
        self._home_hub = gevent.get_hub()  # the loops run here; other threads hand off to it
        self._orphans: list[Greenlet] = []
        self._orphan_stores: list[Store] = []  # a forked parent's store, never closed here
        self._starting: Optional[gevent.event.Event] = None  # set while start() opens the outbox file
        self._outbox: Optional[Outbox] = None
        # Where messages outlive the process (OUTBOX_PATH): opened by start(), closed by stop().
        self._store: Store = MemoryStore()
        # Rows of the app's transactions that committed, to take and queue in commit order (persistence.py).
        self._commits: collections.deque[tuple[list[int], bool]] = collections.deque()
        self._commit_taker: Optional[Greenlet] = None
        self._reset_run()
        self._reset_counters()
        self._outbox_or_create()  # now, in the home thread: other threads may send before start()
        process.register(self)

    def _reset_run(self) -> None:
        """What belongs to one run (start to stop). Loops of an older run see a
        different generation and exit without touching the new run's state."""
        self._generation += 1
        self._loops: dict[str, Greenlet] = {}
        self._session: Optional[Session] = None
        self._reader_inbox: gevent.queue.Queue[Session] = gevent.queue.Queue()
        self._sender_inbox: gevent.queue.Queue[Session] = gevent.queue.Queue()
        self._wake = gevent.event.Event()  # stop() or reconnect(): the supervisor acts now
        self._connected_event = gevent.event.Event()
        self._stopped_event = gevent.event.Event()
        s = self.settings
        self._retry = Retry(s.backoff(), s.DEFAULT_RETRY_LIMIT, s.MIN_UPTIME)
        # MAX_SEND_RATE: one bucket per run, across its connections (a reconnect is no new allowance).
        self._send_bucket = None if s.MAX_SEND_RATE is None else TokenBucket(s.MAX_SEND_RATE, now())
        # Acknowledgements (ACK_TIMEOUT set): what was written and not confirmed. The window
        # outlives connections, not runs: stop() counts what is left in it.
        self._window: Optional[AckWindow] = None
        if s.ACK_TIMEOUT is not None:
            self._window = AckWindow(s.MAX_UNACKED, s.ACK_TIMEOUT)
        self._acks_changed = gevent.event.Event()  # an ack came: the sender may have room again
        self._alerts: dict[str, str] = {}
        self._stop_result: Optional[int] = None
        self._store_ready = gevent.event.Event()  # the first claim is done: the sender may begin

    def _reset_counters(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.reconnects = 0
        self.handler_errors = 0
        self.messages_acked = 0
        self.messages_resent = 0
        self.messages_spilled = 0
        self.messages_reloaded = 0
        self.messages_handed_over = 0  # held when this process's lease was taken over: another sends them
        self.outbox_errors = 0  # of stores closed already (the open one counts its own)
        self.drops = Drops(self.log, lambda msg, reason: self._safe_hook(self.on_drop, msg, reason),
                           None if self._metrics is None else self._metrics.dropped)
        self._has_connected = False
        self._last_message_at: Optional[float] = None  # monotonic
        self._debug_bodies = False

    # -- public API ------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def running(self) -> bool:
        """True between start() and the beginning of stop()."""
        return self.lifecycle.running

    @property
    def autostart_pending(self) -> bool:
        """True when the client waits for its first use to start (see start_on_first_use)."""
        return self.lifecycle.pending

    @property
    def retry_count(self) -> int:
        """Consecutive failed attempts (status()["retry_count"])."""
        return self._retry.failures

    @property
    def messages_dropped(self) -> int:
        return self.drops.total

    @property
    def queue_size(self) -> int:
        """Messages queued or being written (status()["queue_size"], without building the dict):
        cheap enough for a producer to check as it goes, and wait (flush) when it is high."""
        outbox = self._outbox
        return len(outbox) if outbox is not None else 0

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the server chose for the live connection (status()["subprotocol"]);
        None when none was negotiated, or while not connected."""
        session = self._session
        return session.conn.subprotocol if session is not None and session.alive else None

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.alive and self.lifecycle.state is State.OPEN

    def start(self) -> "WebSocketClient":
        """Spawn the loops and return at once; calling it again does nothing."""
        life = self.lifecycle
        if life.running:
            return self
        if life.stopping:
            raise RuntimeError("start() called while stop() is still running")
        starting = self._starting
        if starting is not None:  # another greenlet's start() is opening the outbox file
            if not in_hub():
                starting.wait()
            return self
        host, port, secure = transport.parse_ws_url(self.url())  # ConfigError now, not inside a loop
        # Likewise for the proxy: a bad *_proxy variable, a SOCKS proxy without python-socks.
        proxy_for(self.settings.PROXY, host, port, secure)
        if self._log_enabled or (self._log_enabled is None and env_flag(os.environ.get(self.LOG_ENV))):
            enable_stderr_logging()
        process.warn_if_unpatched(self.log)
        if self._orphans:
            gevent.killall(self._orphans, block=False)  # a forked parent's loops, stale here
            self._orphans = []
        if self.settings.outbox_location() is not None:
            if in_hub():  # a signal handler, a loop callback: opening the store waits on the disk or database
                gevent.spawn(self.start)
                return self
            self._starting = gevent.event.Event()  # one start at a time; stop() waits for it
            try:
                store = persistence.open_store(self)  # ConfigError here for an OUTBOX_URL/OUTBOX_PATH it cannot use
            finally:
                self._starting.set()
                self._starting = None
        else:
            store = MemoryStore()
        self._reset_run()
        self._outbox_or_create()
        self._store = store
        if store.path is None:
            self._store_ready.set()
        life.move(State.CONNECTING, "start()")
        for name in _LOOPS:
            self._spawn_loop(name)
        self.log.info(f"client started for {redact_url(self._safe_url())}")
        return self

    def start_on_first_use(self) -> None:
        """Do not connect now; start on the first send_message() from this process's
        gevent thread (or from the gunicorn hooks). For apps imported before the
        process serves (gunicorn --preload's master, a CLI)."""
        if self.lifecycle.state in (State.IDLE, State.STOPPED):
            self.lifecycle.move(State.PENDING, "start_on_first_use()")

    def can_start_here(self) -> bool:
        """True when called from the OS thread whose gevent hub runs this client."""
        return on_thread_of(self._home_hub)

    def send_message(self, msg: Message, transaction: Any = None) -> bool:
        """Queue ``msg`` for sending; True if accepted, False if dropped.

        str -> text frame, bytes -> binary frame, dict/list -> JSON text frame.
        Raises TypeError/ValueError here for a message that cannot be sent, and
        QueueFull under the "raise" strategy. Safe from any greenlet or thread.

        ``transaction``: a SQLAlchemy Connection or Session on the PostgreSQL database of
        OUTBOX_URL. The message is inserted in that transaction (True once inserted) and sent
        only once it commits; a rollback sends nothing (see transactional.py).
        """
        if self.settings.ACK_TIMEOUT is None:
            item: Item = messages.encode(msg, self.settings.MAX_MESSAGE_SIZE)
        else:
            stamped, ack_id = self.stamp(msg)  # TypeError here for what the convention cannot carry
            opcode, payload = messages.encode(stamped, self.settings.MAX_MESSAGE_SIZE)
            item = (opcode, payload, str(ack_id))
        life = self.lifecycle
        if life.pending and self.can_start_here():
            self.start()
        if transaction is not None:
            return persistence.send_in_transaction(self, item, transaction)
        if life.ended:
            self.drops.count(item, DROP_STOPPED)
            return False
        if self._store.durable:
            accepted = persistence.send_durably(self, item)
            if self._metrics is not None and accepted and self._outbox is not None:
                self._metrics.enqueued(self._outbox)
            return accepted
        outbox = self._outbox if self._outbox is not None else self._outbox_or_create()
        accepted = outbox.put(item)
        if self._metrics is not None and accepted:
            self._metrics.enqueued(outbox)
        return accepted

    def status(self) -> dict[str, Any]:
        """A snapshot of the client's state, safe to serialize as JSON."""
        loops = self._loops
        life = self.lifecycle
        last_message = self._last_message_at
        snapshot: dict[str, Any] = {
            "connected": self.connected,
            "started": life.started,
            "stopping": life.stopping,
            "retry_count": self.retry_count,
            "max_retries_reached": life.gave_up,
            "queue_size": self.queue_size,
            "unacked": len(self._window) if self._window is not None else 0,
            "subprotocol": self.subprotocol,
        }
        for loop, key in health.LOOP_STATUS_KEYS.items():
            greenlet = loops.get(loop)
            snapshot[key] = greenlet is not None and not greenlet.dead
        snapshot.update({
            "state": life.state.value,
            "last_message_at": iso_utc(
                None if last_message is None else datetime.now(timezone.utc) - timedelta(seconds=now() - last_message)
            ),
            "last_connected_at": self.last_connected_at(),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_acked": self.messages_acked,
            "messages_resent": self.messages_resent,
            "messages_spilled": self.messages_spilled,
            "messages_reloaded": self.messages_reloaded,
            "messages_dropped": self.drops.total,
            "drops_by_reason": dict(self.drops.by_reason),
            "reconnects": self.reconnects,
            "handler_errors": self.handler_errors,
            "alerts": [{"name": k, "message": v} for k, v in self._alerts.items()],
        })
        location = self.settings.outbox_location()
        sqlite = location is not None and location.kind == "sqlite"
        snapshot["outbox_path"] = location.path if location is not None and sqlite else None
        # scheme://host:port/database: never the password
        snapshot["outbox_url"] = location.shown if location is not None and (self.settings.OUTBOX_URL or not sqlite) else None
        snapshot["outbox_sync"] = self.settings.OUTBOX_SYNC if location is not None else None
        snapshot["outbox_available"] = self._store.available
        snapshot["outbox_errors"] = self.outbox_errors + self._store.errors
        snapshot["messages_handed_over"] = self.messages_handed_over
        snapshot["proxy"] = self.proxy_in_use  # scheme://host:port, never its credentials
        return snapshot

    def wait_until_connected(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until connected (True) or ``timeout`` passes (False)."""
        return bool(self._connected_event.wait(timeout)) and self.connected

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until the queue is empty and written - and, with acknowledgements
        on, everything acknowledged - or ``timeout``."""
        deadline = None if timeout is None else now() + timeout
        generation = self._generation
        outbox = self._outbox
        if outbox is not None and not outbox.wait_empty(timeout):
            return False
        window = self._window
        while window is not None and len(window):
            remaining = None if deadline is None else deadline - now()
            if remaining is not None and remaining <= 0:
                return False
            self._acks_changed.clear()
            self._acks_changed.wait(remaining)
            if self._generation != generation:
                return False  # stop() counted what was left as undelivered
        return True

    def reconnect(self) -> None:
        """Drop the current connection (if any) and try again now; leaves the gave-up state."""
        life = self.lifecycle
        if not life.running:
            return
        if life.gave_up:
            self.log.info("reconnect() called: leaving the gave-up state")
            self._retry = self._retry.reset()
            life.move(State.CONNECTING, "reconnect()")
        self._wake.set()
        session = self._session
        if session is not None and session.alive:
            session.conn.send_close(CLOSE_NORMAL, "reconnecting")
            session.fail(ConnectionClosed(CLOSE_NORMAL, "reconnect() called"))

    def stop(self, timeout: Optional[float] = None) -> int:
        """Stop gracefully: flush within ``timeout``, close with 1000, end the loops.

        Returns how many messages were left undelivered (each counted as a drop
        with reason "stopped" and passed to on_drop). Idempotent.

        Called from the hub (a signal handler in an unpatched process) or from
        one of the client's own greenlets (a message handler), stop() cannot
        wait for the loops it runs in: it schedules the shutdown in a new
        greenlet and returns the number of messages queued at that moment.
        """
        current = gevent.getcurrent()
        if in_hub() or any(current is g for g in self._loops.values()):
            gevent.spawn(self.stop, timeout)
            return self.queue_size + (len(self._window) if self._window is not None else 0)
        life = self.lifecycle
        starting = self._starting
        if starting is not None:  # a start() is opening the outbox file: stop what it starts
            starting.wait(timeout if timeout is not None else self.settings.MAX_THREAD_WAIT_TIME)
        if life.stopping:
            self._stopped_event.wait(timeout if timeout is not None else self.settings.MAX_THREAD_WAIT_TIME)
            return self._stop_result or 0
        if life.state is State.STOPPED:
            return 0  # already stopped: nothing more was left behind
        if not life.started:
            life.move(State.STOPPED, "stop() before start()")
            return self._discard_unsent()
        budget = self.settings.MAX_THREAD_WAIT_TIME if timeout is None else timeout
        deadline = now() + budget
        life.move(State.STOPPING, "stop()")
        self.log.info(f"stopping (flushing for up to {budget:g}s)")
        session = self._session
        if session is not None and session.alive and self._outbox is not None:
            flusher = gevent.spawn(self.flush, max(0.0, deadline - now()))
            flushed_or_lost: list[Any] = [flusher, session.lost]
            gevent.wait(flushed_or_lost, count=1, timeout=max(0.0, deadline - now()))
            flusher.kill()
        if session is not None and session.alive:
            budget = max(0.0, min(1.0, deadline - now()))
            gevent.with_timeout(budget, session.conn.send_close, CLOSE_NORMAL, "client stopping", timeout_value=False)
            session.lost.wait(max(0.0, min(CLOSE_WAIT, deadline - now())))
            session.fail(ConnectionClosed(CLOSE_NORMAL, "client stopped"))
        self._wake.set()
        self._generation += 1  # the loops of this run are stale from here on
        self._kill_loops(max(0.0, deadline - now()))
        undelivered = self._discard_unsent()
        if self._metrics is not None:
            self._metrics.stopped()
        life.move(State.STOPPED)
        self._connected_event.clear()
        self._stop_result = undelivered
        self._stopped_event.set()
        level = logging.WARNING if undelivered else logging.INFO
        self.log.log(level, f"stopped; {undelivered} message(s) left undelivered")
        return undelivered

    def check_health(self) -> dict[str, str]:
        """Recompute alerts now (the health loop calls this); log what changed."""
        snapshot = self.status()
        session = self._session
        snapshot["_last_activity"] = None
        if session is not None and session.alive:
            snapshot["_last_activity"] = max(self._last_message_at or 0.0, session.opened_at)
        alerts = health.compute_alerts(snapshot, self.settings, now())
        appeared, cleared = health.alert_changes(self._alerts, alerts)
        for name in appeared:
            self.log.warning(f"ALERT {name}: {alerts[name]}")
        for name in cleared:
            self.log.info(f"alert cleared: {name}")
        self._alerts = alerts
        self.drops.report_pending()
        return alerts

    def handler_failed(self, what: str, then: str) -> None:
        """Count and log an exception raised by application code that handled a message
        (call it from an ``except`` block: the traceback is logged)."""
        self.handler_errors += 1
        self.log.error(f"{what} raised (error #{self.handler_errors}); {then}", exc_info=True)

    # -- the loops ---------------------------------------------------------------------

    def _spawn_loop(self, name: str) -> None:
        greenlet = gevent.Greenlet(_LOOPS[name], self, self._generation)
        greenlet.name = f"hermes:{self.name}:{name}"
        greenlet.link_exception(functools.partial(self._loop_died, name))
        self._loops[name] = greenlet
        greenlet.start()

    def _loop_died(self, name: str, greenlet: Greenlet) -> None:
        if self.lifecycle.ended or self._loops.get(name) is not greenlet:
            return
        self.log.error(f"the {name} loop died ({describe(greenlet.exception or RuntimeError('killed'))}); restarting it")
        session = self._session
        if session is not None and name != "outbox":
            # The loops share a session; restarting one mid-session would desynchronize them.
            session.fail(ConnectionClosed(CLOSE_ABNORMAL, f"{name} loop restarted"))
        gevent.spawn_later(LOOP_RESTART_DELAY, self._restart_loop, name, greenlet, self._generation)

    def _restart_loop(self, name: str, dead: Greenlet, generation: int) -> None:
        if self._current(generation) and self._loops.get(name) is dead:
            self._spawn_loop(name)

    def _current(self, generation: int) -> bool:
        """True while a loop of run ``generation`` should go on (through stop()'s flush)."""
        return generation == self._generation

    def _health_loop(self, generation: int) -> None:
        while True:
            gevent.sleep(self.settings.HEALTH_CHECK_INTERVAL)
            if not self._current(generation):
                return
            self.check_health()
            if self._metrics is not None:
                self._metrics.queue_size(self.queue_size)  # between the send path's samples

    def _on_data(self, data: Union[str, bytes]) -> None:
        """Every data message, in order, from the reader greenlet."""
        self.messages_received += 1
        if self._metrics is not None:
            self._metrics.received()
        if self._debug_bodies:
            self.log.body("received", data)
        try:
            self.handle_message(data)
        except Exception:
            self.handler_failed("handle_message", "the reader goes on")

    def _on_data_with_acks(self, data: Union[str, bytes]) -> None:
        """_on_data when acknowledgements are on: an acknowledgement is consumed here."""
        try:
            found = self.acked_ids(data)
            ids = None if found is None else list(found)  # read whole before anything changes
        except Exception:
            ids = None
            self.handler_failed("acked_ids", "the message goes to handle_message")
        if ids is None:
            self._on_data(data)
            return
        window = self._window
        if window is not None:
            acked = window.acked(ids)
            self.messages_acked += len(acked)
            if self._metrics is not None:
                self._metrics.acked(len(acked))
            self._acks_changed.set()
            if acked and self._store.path is not None:
                self._store.forget(acked)

    def _requeue_unacknowledged(self, items: list[Item]) -> None:
        outbox = self._outbox
        if items and outbox is not None:
            outbox.requeue_front(items)
            if self._store.path is not None:
                self._store.restore(items)  # forgotten when written: a crash must not lose them now
            self.messages_sent -= len(items)
            self.log.info(f"{len(items)} message(s) the server's TCP never acknowledged will be sent again")

    # -- helpers -------------------------------------------------------------------

    def _outbox_or_create(self) -> Outbox:
        if self._outbox is None:
            s = self.settings
            self._outbox = Outbox(s.MAX_QUEUE_SIZE, s.QUEUE_OVERFLOW_STRATEGY, self._dropped, self._home_hub)
        return self._outbox

    def _dropped(self, item: Item, reason: str) -> None:
        self.drops.count(item, reason)
        if self._store.path is not None:
            self._store.forget([item])

    def _delivered(self, items: list[Item]) -> None:
        """The sender wrote these (acknowledgements off, or messages without an id): the store
        forgets them."""
        if self._store.path is not None:
            self._store.forget(items)

    def _discard_unsent(self) -> int:
        """What stop() leaves undelivered - unacknowledged messages (oldest), then the queue - is
        kept in the store, or counted as dropped; returns how many were neither delivered nor kept."""
        unacked = self._window.drain() if self._window is not None else []
        self._acks_changed.set()  # a flush() waiting on them returns (False: they were not acknowledged)
        outbox = self._outbox
        remaining = outbox.close() if outbox is not None else []
        self._outbox = None
        return persistence.spill_at_stop(self, unacked, remaining)

    def _kill_loops(self, timeout: float) -> None:
        current = gevent.getcurrent()
        loops = [g for g in self._loops.values() if g is not current]
        gevent.killall(loops, block=True, timeout=max(timeout, 0.1))

    def _safe_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            self.log.error(f"{getattr(hook, '__name__', 'hook')} raised; ignored", exc_info=True)

    def _safe_url(self) -> str:
        try:
            return self.url()
        except Exception:
            return "(no url)"
