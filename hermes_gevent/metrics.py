"""Prometheus metrics (``metrics=True``, the ``hermes_gevent[metrics]`` extra).

Everything that touches prometheus_client lives here, and it is imported only when a
client turns metrics on (``require()``, from validation) or a metrics endpoint is
served: a client without metrics never imports it. Each client holds ``_metrics``:
None when off (the hooks in client.py, sender.py, supervisor.py and reader.py are one
attribute check), else a ``ClientMetrics`` with the client's label bound once.

Under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client's
multiprocess mode writes every value to mmap files (no syscall, no blocking: the hub
never waits); gauges use ``livesum`` so a dead worker's gauges vanish, and
``hermes_gevent.gunicorn.child_exit`` marks the worker dead.

``hermes_queue_size`` is exact when scraped. In a single process the gauge reads the queue at
collection time (``set_function``): the sum of ``queue_size`` over this process's live clients of
that name (usually one), each held through a weak reference. In multiprocess mode nothing runs at
collection time (the aggregator reads the mmap files), so the value is pushed - within a second:
whenever a client's queue changes size class (0-1, 2-3, 4-7, 8-15...: a lone message is usually
the one being written) as seen by send_message or a written batch, and, from its first message
until it is empty again, every QUEUE_REFRESH seconds by a timer on the client's hub (``ref=False``:
it never keeps a process alive). The send path knows no length: it counts accepted
messages, and reads the queue's length only when that count reaches the next class boundary the
last exact length allows - one comparison per message otherwise, as before. Drops and writes
only make that check early; what enters the queue without a send_message (a requeue after a lost
connection, a reload from the store) is seen by the timer if it runs, else by the next send, the
next written batch or the health loop.

Queue wait is sampled: one message at a time carries a timestamp (its position in the
send order); its wait is observed when the written count passes it, and the next
message sent is stamped. The send path costs one attribute check and a comparison for
every message not sampled. A message dropped or resent ahead of the sampled one makes
its wait read a little long (never short).
"""

from __future__ import annotations

import importlib.util
import os
import time
import weakref
from typing import Any, Callable, Optional, Protocol

import gevent.hub

from .errors import ConfigError

__all__ = ["ClientMetrics", "EXTRA", "MULTIPROC_ENV", "QUEUE_REFRESH", "QueueGauge", "QueueOwner", "Sending", "available", "exposition",
           "multiproc_dir", "require"]

EXTRA = "hermes_gevent[metrics]"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Multiprocess mode: while a client's queue is not empty its gauge is set every QUEUE_REFRESH seconds
#: (so a scrape is never more than a second behind, timer delays included).
QUEUE_REFRESH = 0.5
_NEVER = 1 << 62  # an enqueued count never reached: no size check on the send path

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_families: Optional[dict[str, Any]] = None
_queue_gauges: dict[str, QueueGauge] = {}


class QueueOwner(Protocol):
    """What the queue gauge reads: the client (``queue_size``: queued or being written)."""

    @property
    def queue_size(self) -> int: ...


class Sending(Protocol):
    """The queue send_message put a message into (an Outbox)."""

    maxsize: int

    def __len__(self) -> int: ...


def multiproc_dir() -> Optional[str]:
    """The multiprocess directory prometheus_client uses, or None."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def available() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def require() -> None:
    """ConfigError naming the extra when prometheus_client is not installed."""
    if not available():
        raise ConfigError(f"METRICS needs prometheus_client: pip install '{EXTRA}'.")


def _create() -> dict[str, Any]:
    global _families
    if _families is None:
        from prometheus_client import Counter, Gauge, Histogram

        c = ("client",)
        _families = {
            "sent": Counter("hermes_messages_sent", "Messages written to the socket.", c),
            "received": Counter("hermes_messages_received", "Data messages received.", c),
            "dropped": Counter("hermes_messages_dropped", "Messages accepted and then lost, by reason.",
                               c + ("reason",)),
            "reconnects": Counter("hermes_reconnects", "Connections opened after the first.", c),
            "closes": Counter("hermes_connection_closes", "Connections lost, by close code (1006: none).",
                              c + ("code",)),
            "acked": Counter("hermes_messages_acked", "Messages the server acknowledged.", c),
            "resent": Counter("hermes_messages_resent", "Messages written again (not acknowledged in time).", c),
            "outbox_errors": Counter("hermes_outbox_errors", "Outbox reads and writes that failed (SQLite, PostgreSQL).", c),
            "connected": Gauge("hermes_connected", "1 while connected.", c, multiprocess_mode="livesum"),
            "queue": Gauge("hermes_queue_size", "Messages waiting to be written.", c, multiprocess_mode="livesum"),
            "connect": Histogram("hermes_connect_seconds", "TCP connect, TLS and upgrade.", c,
                                 buckets=_LATENCY_BUCKETS),
            "rtt": Histogram("hermes_ping_rtt_seconds", "Ping to pong.", c, buckets=_LATENCY_BUCKETS),
            "wait": Histogram("hermes_queue_wait_seconds", "send_message to written (sampled).", c,
                              buckets=_WAIT_BUCKETS),
        }
    return _families


def _pushed() -> bool:
    """True in prometheus_client's multiprocess mode (decided when it was imported): gauges are
    files the aggregator reads, no function of ours runs at scrape time."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


class QueueGauge:
    """hermes_queue_size{client=name}: the summed queue lengths of this process's live clients of
    that name. Read at scrape time in a single process; set (``push``) in multiprocess mode."""

    def __init__(self, child: Any, push: bool) -> None:
        self.child = child
        self.push = push
        # Weak references, each removed by its own callback when its client goes. A set: adding
        # and copying it are single steps under the GIL, so clients made in other OS threads
        # need no lock (the library takes none: no threading in the hub).
        self._owners: set[weakref.ref[QueueOwner]] = set()
        #: Multiprocess mode: publish, given the caller's own length (the sum's when it is the one owner).
        self.set: Callable[[int], None] = self._set_sum

    def add(self, owner: QueueOwner) -> None:
        self._owners.add(weakref.ref(owner, self._owners.discard))
        self.set = self.child.set if len(self._owners) == 1 else self._set_sum

    def read(self) -> int:
        total = 0
        for ref in list(self._owners):
            owner = ref()
            if owner is not None:
                total += owner.queue_size
        return total

    def _set_sum(self, own: int) -> None:
        self.child.set(self.read())


def _queue_gauge(name: str, family: Any) -> QueueGauge:
    gauge = _queue_gauges.get(name)
    if gauge is None:
        candidate = QueueGauge(family.labels(name), _pushed())
        gauge = _queue_gauges.setdefault(name, candidate)  # one step: the first of two threads wins
        if gauge is candidate and not gauge.push:
            gauge.child.set_function(gauge.read)  # safe from any thread or greenlet: reads lengths
    return gauge


class ClientMetrics:
    """One client's metrics, its label bound once (the hooks call these)."""

    def __init__(self, client_name: str) -> None:
        f = _create()
        self.name = client_name
        self._sent = f["sent"].labels(client_name)
        self._received = f["received"].labels(client_name)
        self._dropped = f["dropped"]
        self._reconnects = f["reconnects"].labels(client_name)
        self._closes = f["closes"]
        self._acked = f["acked"].labels(client_name)
        self._resent = f["resent"].labels(client_name)
        self._outbox_errors = f["outbox_errors"].labels(client_name)
        self._connected = f["connected"].labels(client_name)
        self._queue = _queue_gauge(client_name, f["queue"])
        self._owner: Callable[[], Optional[QueueOwner]] = lambda: None
        self._hub: Optional[gevent.hub.Hub] = None
        self._timer: Any = None  # multiprocess mode: the refresh while the queue is not empty
        self._timing = False  # the timer runs, or its start is scheduled in the hub
        self._maxsize = _NEVER
        self._class = 0  # the size class of the length last published (see _publish)
        self._connect = f["connect"].labels(client_name)
        self._rtt = f["rtt"].labels(client_name)
        self._wait = f["wait"].labels(client_name)
        self._written = 0  # written since this object was made (the sample's clock)
        self._enqueued = 0
        self._sample_at: Optional[float] = None
        self._sample_pos = 0
        self._rtt_seen: Optional[float] = None
        self._connected.set(0)
        # Multiprocess mode: the enqueued count at which the queue may have changed size class (set
        # by watch()); never in a single process (the scrape reads the queue).
        self._check_at = _NEVER
        _all.add(self)

    def watch(self, owner: QueueOwner, hub: gevent.hub.Hub) -> None:
        """The gauge counts ``owner.queue_size`` from now on (``owner`` held weakly: a client gone
        counts nothing); ``hub``: the client's, where the multiprocess refresh runs."""
        self._owner = weakref.ref(owner)
        self._hub = hub
        self._queue.add(owner)
        if self._queue.push:
            self._seen(owner.queue_size, publish=True)

    # -- the send path -------------------------------------------------------------

    def enqueued(self, queue: Sending) -> None:
        """send_message accepted a message into ``queue`` (its length read only when needed)."""
        self._enqueued = n = self._enqueued + 1
        if self._sample_at is None:
            self._sample_at = time.monotonic()
            queued = len(queue)
            self._sample_pos = self._written + queued
            if n >= self._check_at:
                self._maxsize = queue.maxsize
                self._seen(queued)
        elif n >= self._check_at:
            self._maxsize = queue.maxsize
            self._seen(len(queue))

    def written(self, count: int, queued: int) -> None:
        """The sender wrote ``count`` messages; ``queued`` remain."""
        if count <= 0:
            return
        self._sent.inc(count)
        self._written += count
        if self._queue.push:
            self._seen(queued)
        at = self._sample_at
        if at is not None and self._written >= self._sample_pos:
            self._wait.observe(time.monotonic() - at)
            self._sample_at = None

    # -- the rest ------------------------------------------------------------------

    def received(self) -> None:
        self._received.inc()

    def dropped(self, reason: str) -> None:
        self._dropped.labels(self.name, reason).inc()

    def acked(self, count: int) -> None:
        if count:
            self._acked.inc(count)

    def resent(self, count: int) -> None:
        self._resent.inc(count)

    def outbox_error(self) -> None:
        self._outbox_errors.inc()

    def connect_took(self, seconds: float) -> None:
        self._connect.observe(seconds)

    def opened(self, reconnect: bool) -> None:
        if reconnect:
            self._reconnects.inc()
        self._connected.set(1)

    def lost(self, code: int) -> None:
        """A connection ended (once per connection)."""
        self._closes.labels(self.name, str(code)).inc()
        self._connected.set(0)

    def pong(self, ping_sent_at: Optional[float], at: float) -> None:
        """A pong came; ``ping_sent_at`` the oldest unanswered ping (each observed once)."""
        if ping_sent_at is not None and ping_sent_at != self._rtt_seen:
            self._rtt_seen = ping_sent_at
            self._rtt.observe(max(0.0, at - ping_sent_at))

    def queue_size(self, queued: int) -> None:
        """The health loop's look at the queue (multiprocess mode: a growth no send saw, a requeue)."""
        if self._queue.push:
            self._seen(queued, publish=True)

    def stopped(self) -> None:
        self._connected.set(0)
        if self._queue.push:
            self._seen(0, publish=True)

    # -- multiprocess mode: the queue gauge pushed --------------------------------------

    def _seen(self, queued: int, publish: bool = False) -> None:
        """This client's queue holds ``queued`` now (exact): publish it if its size class changed
        (or ``publish``); check again where it may change next (at the next power of two: 1, 2, 4,
        8...); while it is not empty, the timer runs. From any thread."""
        self._check_at = self._enqueued + ((1 << queued.bit_length()) - queued if queued < self._maxsize else _NEVER)
        if publish or (queued >> 1).bit_length() != self._class:
            self._publish(queued)
        if queued and not self._timing and self._hub is not None:
            self._timing = True
            self._hub.loop.run_callback_threadsafe(self._start_timer, self._hub)

    def _publish(self, queued: int) -> None:
        self._class = (queued >> 1).bit_length()  # 0-1, 2-3, 4-7...: a lone message is the one being written
        self._queue.set(queued)

    def _start_timer(self, hub: gevent.hub.Hub) -> None:
        if self._timer is None:
            self._timer = hub.loop.timer(QUEUE_REFRESH, QUEUE_REFRESH, ref=False)
        if not self._timer.active:
            self._timer.start(self._refresh)

    def _refresh(self) -> None:
        """The timer's tick, in the hub (nothing here blocks): the exact length, and stop at zero."""
        owner = self._owner()
        queued = owner.queue_size if owner is not None else 0
        self._publish(queued)
        if not queued:
            self._timer.stop()
            self._timing = False

    def forked(self) -> None:
        """In a forked child: the queue is another (the parent's count says nothing of it)."""
        if self._queue.push:
            self._check_at = 0
            self._timing = self._timer is not None and self._timer.active


_all: weakref.WeakSet[ClientMetrics] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client_metrics in list(_all):
        client_metrics.forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def exposition() -> tuple[bytes, str]:
    """The exposition text and its content type: the multiprocess aggregate (a fresh
    registry with a MultiProcessCollector) when PROMETHEUS_MULTIPROC_DIR is set, the
    default registry otherwise."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    if multiproc_dir() is not None:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
