"""WebSocketClient: the public API. Each start() builds a Run (run.py) and starts its five loops:

    supervisor  connect -> publish a Session -> ping and watch it -> back off -> again
    reader      for each Session: read, let the protocol deliver messages and answer
    sender      for each Session: take a batch from the outbox, write it, settle it
    health      every HEALTH_CHECK_INTERVAL: compute alerts, log what changed
    outbox      with OUTBOX_URL/OUTBOX_PATH: take over messages kept in the store, renew the lease

Each loop (supervisor.py, reader.py, sender.py, persistence.py, run.py) receives the run and
nothing else; what outlives runs (the lifecycle, the counters, the metrics) is this client's.
Nothing here blocks the hub (docs/architecture.rst draws the rest of the house).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Optional

import gevent
import gevent.event

from . import health, messages, persistence, process, transport
from .base import BaseClient
from .connection import Connection
from .errors import ConnectionClosed
from .frames import CLOSE_NORMAL, Item
from .lifecycle import OPEN, Lifecycle, State
from .logs import ClientLog, Redactor, enable_stderr_logging, env_flag, redact_url
from .memory_store import MemoryStore
from .messages import Drops, Message
from .metrics import ClientMetrics
from .outbox import DROP_STOPPED, in_hub, on_thread_of
from .proxy import proxy_for
from .reader import read_loop
from .run import CLOSE_WAIT, LOOP_RESTART_DELAY, Counted, Counters, Greenlet, Loop, Run, call_hook, watch_health
from .sender import help_starved, send_loop, write_now
from .session import now
from .store import Store
from .supervisor import open_connection, supervise
from .transport import Connector

__all__ = ["all_clients", "CLOSE_WAIT", "Connector", "LOOP_RESTART_DELAY", "State", "WebSocketClient"]


def all_clients() -> list["WebSocketClient"]:
    """Every client alive in this process (for server hooks)."""
    return [client for client in process.all_clients() if isinstance(client, WebSocketClient)]


class WebSocketClient(BaseClient):
    """A resilient WebSocket client made of greenlets. See docs/getting-started.rst for the API."""

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
        self._metrics: Optional[ClientMetrics] = ClientMetrics(self.name) if self.settings.METRICS else None
        self._random = random.Random()
        self._home_hub = gevent.get_hub()  # the loops run here; other threads hand off to it
        self._orphans: list[Greenlet] = []
        self._orphan_stores: list[Store] = []  # a forked parent's store, never closed here
        self._starting: Optional[gevent.event.Event] = None  # set while start() opens the outbox file
        self._reset_counters()
        self._run = self._new_run()
        self._run.outbox_or_create()  # now, in the home thread: other threads may send before start()
        if self._metrics is not None:
            self._metrics.watch(self, self._home_hub)  # hermes_queue_size reads this client's queue
        process.register(self)

    # The totals of status(), each on its own (read-only; they live in self.counters).
    messages_sent, messages_received, messages_acked, messages_resent = Counted(), Counted(), Counted(), Counted()
    messages_spilled, messages_reloaded, messages_handed_over = Counted(), Counted(), Counted()
    reconnects, handler_errors, outbox_errors = Counted(), Counted(), Counted()

    def _new_run(self) -> Run:
        return Run(app=self, settings=self.settings, log=self.log, redactor=self._redactor, lifecycle=self.lifecycle,
                   counters=self.counters, drops=self.drops, metrics=self._metrics, hub=self._home_hub,
                   connector=self._connector, rng=self._random)

    def _reset_counters(self) -> None:
        self.counters = Counters()
        self.drops = Drops(self.log, lambda msg, reason: call_hook(self.log, self.on_drop, msg, reason),
                           None if self._metrics is None else self._metrics.dropped)
        # Rows of the app's transactions that committed, taken into whichever run is current then.
        self._commits = persistence.Commits(lambda: self._run)

    def _loops(self) -> dict[str, Loop]:
        return {"supervisor": supervise, "reader": read_loop, "sender": send_loop,
                "health": lambda run: watch_health(run, self.check_health), "outbox": persistence.claim_loop}

    # -- public API ------------------------------------------------------------------

    @property
    def run(self) -> Run:
        """The current run (start to stop; before the first start, the one that will queue what is
        sent meanwhile): its session, queue, store and loops, for diagnostics and tests."""
        return self._run

    @property
    def state(self) -> State:
        """Where the client stands (``hermes_gevent.State``); every status flag derives from it."""
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
        return self._run.retry.failures

    @property
    def messages_dropped(self) -> int:
        """Messages accepted and then lost, every reason together (status()["messages_dropped"])."""
        return self.drops.total

    @property
    def queue_size(self) -> int:
        """Messages queued or being written (status()["queue_size"], without building the dict):
        cheap enough for a producer to check as it goes, and wait (flush) when it is high."""
        outbox = self._run.outbox
        return len(outbox) if outbox is not None else 0

    @property
    def subprotocol(self) -> Optional[str]:
        """The subprotocol the server chose for the live connection (status()["subprotocol"]);
        None when none was negotiated, or while not connected."""
        session = self._run.session
        return session.conn.subprotocol if session is not None and session.alive else None

    @property
    def connected(self) -> bool:
        """True while a connection is open and the client is not stopping."""
        session = self._run.session
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
        durable = self.settings.outbox_location() is not None
        if durable and in_hub():  # a signal handler, a loop callback: opening the store waits on the disk or database
            gevent.spawn(self.start)
            return self
        run = self._new_run()
        if durable:
            self._starting = gevent.event.Event()  # one start at a time; stop() waits for it
            try:
                store = persistence.open_store(run)  # ConfigError here for an OUTBOX_URL/OUTBOX_PATH it cannot use
            finally:
                self._starting.set()
                self._starting = None
        else:
            store = MemoryStore()
        previous = self._run
        previous.retire()
        # The queue of now (not of before the store opened: a stop() may have closed it meanwhile,
        # another thread may have made one): what was sent before this start goes out in it.
        run.adopt(previous.outbox)
        self._run = run
        run.outbox_or_create()
        run.store = store
        if store.path is None:
            run.store_ready.set()
        life.move(State.CONNECTING, "start()")
        run.start_loops(self._loops())
        self.log.info(f"client started for {redact_url(run.safe_url())}")
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

        str -> text frame, bytes -> binary frame, dict/list -> JSON text frame. TypeError/ValueError here
        for a message that cannot be sent; QueueFull under the "raise" strategy. Safe from any greenlet or thread.

        ``transaction``: a SQLAlchemy Connection or Session on the PostgreSQL database of OUTBOX_URL.
        The message is inserted in that transaction (True once inserted) and sent only once it commits."""
        if self.settings.ACK_TIMEOUT is None:
            item: Item = messages.encode(msg, self.settings.MAX_MESSAGE_SIZE)
        else:
            stamped, ack_id = self.stamp(msg)  # TypeError here for what the convention cannot carry
            opcode, payload = messages.encode(stamped, self.settings.MAX_MESSAGE_SIZE)
            item = (opcode, payload, str(ack_id))
        is_open = (life := self.lifecycle).state is OPEN  # the common case: not pending, not ended
        if not is_open and life.pending and self.can_start_here():
            self.start()
        run = self._run
        if transaction is not None:
            return persistence.send_in_transaction(run, self._commits, item, transaction)
        if not is_open and life.ended:
            self.drops.count(item, DROP_STOPPED)
            return False
        if run.store.durable:
            accepted = persistence.send_durably(run, item)
            if self._metrics is not None and accepted and run.outbox is not None:
                self._metrics.enqueued(run.outbox)
            return accepted
        outbox = run.outbox if run.outbox is not None else run.outbox_or_create()
        if outbox.drained and write_now(run, outbox, item):  # nothing queued or in flight: written at once
            return True
        accepted = outbox.put(item)
        if outbox.deep:  # a quarter full: is the sender starved?
            help_starved(run, outbox)
        if self._metrics is not None and accepted:
            self._metrics.enqueued(outbox)
        return accepted

    def status(self) -> dict[str, Any]:
        """A snapshot of the client's state, safe to serialize as JSON."""
        run = self._run
        life = self.lifecycle
        snapshot: dict[str, Any] = {
            "connected": self.connected,
            "started": life.started,
            "stopping": life.stopping,
            "retry_count": self.retry_count,
            "max_retries_reached": life.gave_up,
            "queue_size": self.queue_size,
            "subprotocol": self.subprotocol,
        }
        snapshot.update(run.snapshot())
        snapshot["state"] = life.state.value
        snapshot["last_connected_at"] = self.last_connected_at()
        snapshot.update(self.counters.snapshot())
        snapshot["messages_dropped"] = self.drops.total
        snapshot["drops_by_reason"] = dict(self.drops.by_reason)
        snapshot.update(persistence.store_status(self.settings))
        snapshot["outbox_errors"] += run.store.errors  # the open store counts its own
        snapshot["proxy"] = self.proxy_in_use  # scheme://host:port, never its credentials
        return snapshot

    def wait_until_connected(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until connected (True) or ``timeout`` passes (False)."""
        return bool(self._run.connected.wait(timeout)) and self.connected

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Block this greenlet until the queue is empty and written - and, with acknowledgements
        on, everything acknowledged - or ``timeout``."""
        deadline = None if timeout is None else now() + timeout
        run = self._run
        outbox = run.outbox
        if outbox is not None and not outbox.wait_empty(timeout):
            return False
        window = run.window
        while window is not None and len(window):
            remaining = None if deadline is None else deadline - now()
            if remaining is not None and remaining <= 0:
                return False
            run.acks_changed.clear()
            run.acks_changed.wait(remaining)
            if not run.active:
                return False  # stop() counted what was left as undelivered
        return True

    def reconnect(self) -> None:
        """Drop the current connection (if any) and try again now; leaves the gave-up state."""
        life = self.lifecycle
        if not life.running:
            return
        run = self._run
        if life.gave_up:
            self.log.info("reconnect() called: leaving the gave-up state")
            run.retry = run.retry.reset()
            life.move(State.CONNECTING, "reconnect()")
        run.wake.set()
        session = run.session
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
        run = self._run
        if in_hub() or run.in_loop():
            gevent.spawn(self.stop, timeout)
            return self.queue_size + (len(run.window) if run.window is not None else 0)
        life = self.lifecycle
        starting = self._starting
        if starting is not None:  # a start() is opening the outbox file: stop what it starts
            starting.wait(timeout if timeout is not None else self.settings.MAX_THREAD_WAIT_TIME)
        run = self._run  # after the wait: a start() under way may have built a new run
        if life.stopping:
            run.stopped.wait(timeout if timeout is not None else self.settings.MAX_THREAD_WAIT_TIME)
            return run.stop_result or 0
        if life.state is State.STOPPED:
            return 0  # already stopped: nothing more was left behind
        if not life.started:
            life.move(State.STOPPED, "stop() before start()")
            return persistence.leave_unsent(run)
        budget = self.settings.MAX_THREAD_WAIT_TIME if timeout is None else timeout
        deadline = now() + budget
        life.move(State.STOPPING, "stop()")
        self.log.info(f"stopping (flushing for up to {budget:g}s)")
        run.close(deadline, self.flush)
        undelivered = persistence.leave_unsent(run)
        if self._metrics is not None:
            self._metrics.stopped()
        life.move(State.STOPPED)
        run.connected.clear()
        run.stop_result = undelivered
        run.stopped.set()
        level = logging.WARNING if undelivered else logging.INFO
        self.log.log(level, f"stopped; {undelivered} message(s) left undelivered")
        return undelivered

    def check_health(self) -> dict[str, str]:
        """Recompute alerts now (the health loop calls this); log what changed."""
        run = self._run
        snapshot = self.status()
        session = run.session
        snapshot["_last_activity"] = None
        if session is not None and session.alive:
            snapshot["_last_activity"] = max(self.counters.last_message_at or 0.0, session.opened_at)
        alerts = health.compute_alerts(snapshot, self.settings, now())
        appeared, cleared = health.alert_changes(run.alerts, alerts)
        for name in appeared:
            self.log.warning(f"ALERT {name}: {alerts[name]}")
        for name in cleared:
            self.log.info(f"alert cleared: {name}")
        run.alerts = alerts
        self.drops.report_pending()
        return alerts

    def handler_failed(self, what: str, then: str) -> None:
        """Count and log an exception raised by application code that handled a message
        (call it from an ``except`` block: the traceback is logged)."""
        self.counters.handler_errors += 1
        self.log.error(f"{what} raised (error #{self.counters.handler_errors}); {then}", exc_info=True)

    def open_connection(self, timeout: Optional[float] = None) -> Connection:
        """One handshake outside any run, as the client's attempts make it (``flask hermes check``);
        the caller owns the connection and closes it."""
        return open_connection(self, self.settings, self._connector, self._redactor, self.log, timeout)

    def reset_in_child(self) -> None:
        """In a forked child (the library calls it after ``os.fork``): hold nothing of the parent's,
        and start fresh when used."""
        was_waiting = self.lifecycle.running or self.lifecycle.pending
        run = self._run
        self._orphans = list(run.loops.values())  # killed lazily if they ever run
        # The parent's store (its thread, its SQLite connection) is never touched here, nor closed.
        self._orphan_stores.append(run.forked())
        self._commits.abandon()  # the parent's transactions, the parent's to take
        self._new_id.reseed()  # the parent's id sequence is the parent's
        self._reset_counters()
        self._run = self._new_run()
        self.lifecycle.reset(State.PENDING if was_waiting else State.IDLE)

