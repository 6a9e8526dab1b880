"""One run of a client (``start()`` to ``stop()``): what its loops share, and the loops themselves.

A ``Run`` is the one home of what a run's greenlets share - the live session, the inboxes
that hand it to the reader and the sender, the events ``stop()`` and ``reconnect()`` set, the
retry value, the acknowledgement window, the rate bucket, the queue and the store - and of
the greenlets themselves. The loops (supervisor.py, reader.py, sender.py, persistence.py's
claim loop, ``watch_health`` here) each receive the run and use its public attributes and
methods; they never see the client. What they ask of the application's client (its URL, its
handlers, its hooks) goes through ``App``, the part of ``BaseClient``'s public surface they use.

A run ends with ``retire()`` (``stop()``, or a fork): its loops see ``active`` False and
return, without touching the next run's state. ``Counters`` outlive runs (reset in a forked
child only), like ``status()``'s totals.
"""

from __future__ import annotations

import functools
import random
import ssl
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Protocol, Union, overload

import gevent
import gevent.event
import gevent.hub
import gevent.queue

from . import health
from .acks import AckWindow
from .base import iso_utc
from .errors import ConnectionClosed
from .frames import CLOSE_ABNORMAL, CLOSE_NORMAL, Item
from .lifecycle import Lifecycle
from .logs import ClientLog, Redactor
from .memory_store import MemoryStore
from .messages import Drops
from .metrics import ClientMetrics
from .outbox import Outbox
from .ratelimit import TokenBucket
from .retry import Retry, describe
from .session import Session, now
from .settings import Settings
from .store import Store
from .transport import Connector

if TYPE_CHECKING:
    Greenlet = gevent.Greenlet[..., Any]
else:
    Greenlet = gevent.Greenlet

__all__ = ["App", "call_hook", "CLOSE_WAIT", "Counted", "Counters", "Greenlet", "LOOP_RESTART_DELAY", "Loop", "Run", "watch_health"]

#: A loop that died is restarted after this many seconds (avoids a hot crash loop).
LOOP_RESTART_DELAY = 0.1
#: How long stop() waits for the server's answer to our close frame (within its budget).
CLOSE_WAIT = 2.0


class App(Protocol):
    """What a run's loops ask of the application's client: ``BaseClient``'s public surface."""

    name: str
    #: The proxy of the latest attempt (scheme://host:port), set by each attempt; None: direct.
    proxy_in_use: Optional[str]
    ssl_context: Optional[ssl.SSLContext]
    ca_file: Optional[str]

    def url(self) -> str: ...
    def identifier(self) -> Optional[str]: ...
    def headers(self) -> dict[str, str]: ...
    def origin(self) -> Optional[str]: ...
    def handle_message(self, msg: Union[str, bytes]) -> None: ...
    def acked_ids(self, message: Union[str, bytes]) -> Optional[Iterable[Any]]: ...
    def should_retry(self, exc: BaseException) -> bool: ...
    def handler_failed(self, what: str, then: str) -> None: ...
    def mark_connected(self) -> None: ...
    def on_open(self) -> None: ...
    def on_close(self, code: int, reason: str) -> None: ...
    def on_error(self, exc: BaseException) -> None: ...
    def on_give_up(self, exc: BaseException) -> None: ...


class Counters:
    """The totals ``status()`` reports; they outlive runs (a forked child starts from zero)."""

    def __init__(self) -> None:
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
        self.has_connected = False
        self.last_message_at: Optional[float] = None  # monotonic

    def snapshot(self) -> dict[str, Any]:
        """The totals as status() reports them."""
        last = self.last_message_at
        return {
            "last_message_at": iso_utc(
                None if last is None else datetime.now(timezone.utc) - timedelta(seconds=now() - last)),
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_acked": self.messages_acked,
            "messages_resent": self.messages_resent,
            "messages_spilled": self.messages_spilled,
            "messages_reloaded": self.messages_reloaded,
            "messages_handed_over": self.messages_handed_over,
            "reconnects": self.reconnects,
            "handler_errors": self.handler_errors,
            "outbox_errors": self.outbox_errors,
        }


Loop = Callable[["Run"], None]


class Counted:
    """A client's read-only attribute that is one of its ``counters`` (``client.messages_sent``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, client: None, owner: Optional[type] = None) -> "Counted": ...
    @overload
    def __get__(self, client: object, owner: Optional[type] = None) -> int: ...

    def __get__(self, client: Any, owner: Optional[type] = None) -> Any:
        return self if client is None else getattr(client.counters, self.name)


def call_hook(log: ClientLog, hook: Callable[..., Any], *args: Any) -> None:
    """Call the application's hook; what it raises is logged, never propagated into a loop."""
    try:
        hook(*args)
    except Exception:
        log.error(f"{getattr(hook, '__name__', 'hook')} raised; ignored", exc_info=True)


class Run:
    """What one run (start to stop) shares; its loops read and change it through this surface."""

    def __init__(self, *, app: App, settings: Settings, log: ClientLog, redactor: Redactor, lifecycle: Lifecycle,
                 counters: Counters, drops: Drops, metrics: Optional[ClientMetrics], hub: gevent.hub.Hub,
                 connector: Connector, rng: random.Random) -> None:
        self.app = app
        self.settings = s = settings
        self.log = log
        self.redactor = redactor
        self.lifecycle = lifecycle
        self.counters = counters
        self.drops = drops
        #: Prometheus metrics (METRICS): None when off - every hook is one check of this attribute.
        self.metrics = metrics
        self.hub = hub  # the loops run here; other threads hand off to it
        self.connector = connector
        self.random = rng
        #: False once stop() (or a fork) retired this run: its loops return.
        self.active = True
        self.loops: dict[str, Greenlet] = {}
        #: The live connection, published by the supervisor; None between connections.
        self.session: Optional[Session] = None
        self.reader_inbox: gevent.queue.Queue[Session] = gevent.queue.Queue()
        self.sender_inbox: gevent.queue.Queue[Session] = gevent.queue.Queue()
        self.wake = gevent.event.Event()  # stop() or reconnect(): the supervisor acts now
        self.connected = gevent.event.Event()
        self.stopped = gevent.event.Event()
        self.stop_result: Optional[int] = None
        self.retry = Retry(s.backoff(), s.DEFAULT_RETRY_LIMIT, s.MIN_UPTIME)
        # MAX_SEND_RATE: one bucket per run, across its connections (a reconnect is no new allowance).
        self.send_bucket = None if s.MAX_SEND_RATE is None else TokenBucket(s.MAX_SEND_RATE, now())
        #: Acknowledgements (ACK_TIMEOUT set): what was written and not confirmed. The window
        #: outlives connections, not runs: stop() counts what is left in it.
        self.window = None if s.ACK_TIMEOUT is None else AckWindow(s.MAX_UNACKED, s.ACK_TIMEOUT)
        self.acks_changed = gevent.event.Event()  # an ack came: the sender may have room again
        self.alerts: dict[str, str] = {}
        #: Where messages outlive the process (OUTBOX_URL/OUTBOX_PATH): opened by start(), closed by stop().
        self.store: Store = MemoryStore()
        self.store_ready = gevent.event.Event()  # the first claim is done: the sender may begin
        self.debug_bodies = False  # the reader's view of the log level, for each read
        self.wrote_now_turn = -1  # the event-loop turn of send_message's last direct write (sender.write_now)
        self.sender_wrote_turn = -2  # the event-loop turn of the sender's last batch (acknowledgements off)
        # send_message wrote a large message itself and its caller has not yielded to the hub since
        self.wrote_large_now = False
        self.sender_wrote_at = 0.0  # when the sender's last batch was written (session.now())
        #: The queue; None once stop() closed it. Messages sent before start() are adopted.
        self.outbox: Optional[Outbox] = None

    def snapshot(self) -> dict[str, Any]:
        """This run's part of status(): what waits, which loops live, the alerts, the store."""
        session = self.session
        agreed = session.conn.compression if session is not None and session.alive else None
        snapshot: dict[str, Any] = {
            "compression": agreed.answer if agreed is not None else None,  # as the server wrote it
            "unacked": len(self.window) if self.window is not None else 0,
        }
        for loop, key in health.LOOP_STATUS_KEYS.items():
            snapshot[key] = self.loop_alive(loop)
        snapshot["alerts"] = [{"name": k, "message": v} for k, v in self.alerts.items()]
        snapshot["outbox_available"] = self.store.available
        return snapshot

    def close(self, deadline: float, flush: Callable[[float], bool]) -> None:
        """stop()'s sequence for this run: ``flush`` within ``deadline``, close with 1000 and wait
        for the server's answer, then retire the run and end its loops."""
        session = self.session
        if session is not None and session.alive and self.outbox is not None:
            flusher = gevent.spawn(flush, max(0.0, deadline - now()))
            flushed_or_lost: list[Any] = [flusher, session.lost]
            gevent.wait(flushed_or_lost, count=1, timeout=max(0.0, deadline - now()))
            flusher.kill()
        if session is not None and session.alive:
            budget = max(0.0, min(1.0, deadline - now()))
            gevent.with_timeout(budget, session.conn.send_close, CLOSE_NORMAL, "client stopping", timeout_value=False)
            session.lost.wait(max(0.0, min(CLOSE_WAIT, deadline - now())))
            session.fail(ConnectionClosed(CLOSE_NORMAL, "client stopped"))
        self.wake.set()
        self.retire()  # the loops of this run are stale from here on
        self.kill_loops(max(0.0, deadline - now()))

    def adopt(self, outbox: Optional[Outbox]) -> None:
        """Send what an earlier run queued (before the first start: what was sent meanwhile)."""
        if outbox is not None:
            outbox.on_drop = self.dropped
            self.outbox = outbox

    def forked(self) -> Store:
        """In a forked child: this run is the parent's. Never write on its connection; its loops
        (copied too) return if they ever run, and find neither its queue nor its store, which are
        the parent's (returned, never to be closed here)."""
        session = self.session
        if session is not None:
            session.conn.aborted = True
            try:
                session.conn.sock.close()  # our copy of the descriptor only; the parent keeps its own
            except OSError:
                pass
        self.retire()
        parents, self.store, self.outbox = self.store, MemoryStore(), None
        return parents

    def retire(self) -> None:
        """From here on the loops of this run return at their next check."""
        self.active = False

    def outbox_or_create(self) -> Outbox:
        if self.outbox is None:
            s = self.settings
            self.outbox = Outbox(s.MAX_QUEUE_SIZE, s.QUEUE_OVERFLOW_STRATEGY, self.dropped, self.hub)
        return self.outbox

    # -- what the loops report ---------------------------------------------------

    def dropped(self, item: Item, reason: str) -> None:
        """The queue dropped ``item`` (its overflow strategy): counted, and the store forgets it."""
        self.drops.count(item, reason)
        if self.store.path is not None:
            self.store.forget([item])

    def caller_yielded(self) -> None:
        """A loop callback after a large direct write: it runs once the writer's greenlet yielded."""
        self.wrote_large_now = False

    def delivered(self, items: list[Item]) -> None:
        """The sender wrote these (acknowledgements off, or messages without an id): the store
        forgets them."""
        if self.store.path is not None:
            self.store.forget(items)

    def on_data(self, data: Union[str, bytes]) -> None:
        """Every data message, in order, from the reader greenlet."""
        self.counters.messages_received += 1
        if self.metrics is not None:
            self.metrics.received()
        if self.debug_bodies:
            self.log.body("received", data)
        try:
            self.app.handle_message(data)
        except Exception:
            self.app.handler_failed("handle_message", "the reader goes on")

    def on_data_with_acks(self, data: Union[str, bytes]) -> None:
        """on_data when acknowledgements are on: an acknowledgement is consumed here."""
        try:
            found = self.app.acked_ids(data)
            ids = None if found is None else list(found)  # read whole before anything changes
        except Exception:
            ids = None
            self.app.handler_failed("acked_ids", "the message goes to handle_message")
        if ids is None:
            self.on_data(data)
            return
        window = self.window
        if window is not None:
            acked = window.acked(ids)
            self.counters.messages_acked += len(acked)
            if self.metrics is not None:
                self.metrics.acked(len(acked))
            self.acks_changed.set()
            if acked and self.store.path is not None:
                self.store.forget(acked)

    def requeue_unacknowledged(self, items: list[Item]) -> None:
        """The kernel's ledger: these were written but the server's TCP never acknowledged them."""
        outbox = self.outbox
        if items and outbox is not None:
            outbox.requeue_front(items)
            if self.store.path is not None:
                self.store.restore(items)  # forgotten when written: a crash must not lose them now
            self.counters.messages_sent -= len(items)
            self.log.info(f"{len(items)} message(s) the server's TCP never acknowledged will be sent again")

    def call_hook(self, hook: Callable[..., Any], *args: Any) -> None:
        call_hook(self.log, hook, *args)

    def safe_url(self) -> str:
        try:
            return self.app.url()
        except Exception:
            return "(no url)"

    # -- the loops -----------------------------------------------------------------

    def start_loops(self, loops: Mapping[str, Loop]) -> None:
        for name, loop in loops.items():
            self._spawn(name, loop)

    def loop_alive(self, name: str) -> bool:
        greenlet = self.loops.get(name)
        return greenlet is not None and not greenlet.dead

    def in_loop(self) -> bool:
        """True when called from one of this run's own greenlets."""
        current = gevent.getcurrent()
        return any(current is g for g in self.loops.values())

    def kill_loops(self, timeout: float) -> None:
        current = gevent.getcurrent()
        loops = [g for g in self.loops.values() if g is not current]
        gevent.killall(loops, block=True, timeout=max(timeout, 0.1))

    def _spawn(self, name: str, loop: Loop) -> None:
        greenlet = gevent.Greenlet(loop, self)
        greenlet.name = f"hermes:{self.app.name}:{name}"
        greenlet.link_exception(functools.partial(self._loop_died, name, loop))
        self.loops[name] = greenlet
        greenlet.start()

    def _loop_died(self, name: str, loop: Loop, greenlet: Greenlet) -> None:
        if not self.active or self.lifecycle.ended or self.loops.get(name) is not greenlet:
            return
        self.log.error(f"the {name} loop died ({describe(greenlet.exception or RuntimeError('killed'))}); restarting it")
        session = self.session
        if session is not None and name != "outbox":
            # The loops share a session; restarting one mid-session would desynchronize them.
            session.fail(ConnectionClosed(CLOSE_ABNORMAL, f"{name} loop restarted"))
        gevent.spawn_later(LOOP_RESTART_DELAY, self._restart, name, loop, greenlet)

    def _restart(self, name: str, loop: Loop, dead: Greenlet) -> None:
        if self.active and self.loops.get(name) is dead:
            self._spawn(name, loop)


def watch_health(run: Run, check: Callable[[], object]) -> None:
    """The health loop: every HEALTH_CHECK_INTERVAL, ``check`` (the client's check_health)."""
    while True:
        gevent.sleep(run.settings.HEALTH_CHECK_INTERVAL)
        if not run.active:
            return
        check()
        outbox = run.outbox
        if run.metrics is not None:
            run.metrics.queue_size(len(outbox) if outbox is not None else 0)  # multiprocess: a growth no send saw
