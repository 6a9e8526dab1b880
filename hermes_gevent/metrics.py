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
from typing import Any, Optional, Sized

from .errors import ConfigError

__all__ = ["ClientMetrics", "EXTRA", "MULTIPROC_ENV", "QUEUE_GAUGE_EVERY", "QUEUE_GAUGE_MASK", "available", "exposition", "multiproc_dir", "require"]

EXTRA = "hermes_gevent[metrics]"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The queue gauge is refreshed on every QUEUE_GAUGE_EVERY-th send_message (a power of two), at every
#: written batch, and by the health loop.
QUEUE_GAUGE_EVERY = 64
QUEUE_GAUGE_MASK = QUEUE_GAUGE_EVERY - 1

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)

_families: Optional[dict[str, Any]] = None


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
        self._queue = f["queue"].labels(client_name)
        self._connect = f["connect"].labels(client_name)
        self._rtt = f["rtt"].labels(client_name)
        self._wait = f["wait"].labels(client_name)
        self._written = 0  # written since this object was made (the sample's clock)
        self._enqueued = 0
        self._sample_at: Optional[float] = None
        self._sample_pos = 0
        self._rtt_seen: Optional[float] = None
        self._connected.set(0)
        self._queue.set(0)

    # -- the send path -------------------------------------------------------------

    def enqueued(self, queue: Sized) -> None:
        """send_message accepted a message into ``queue`` (its length read only when needed)."""
        self._enqueued = n = self._enqueued + 1
        if self._sample_at is None:
            self._sample_at = time.monotonic()
            queued = len(queue)
            self._sample_pos = self._written + queued
            self._queue.set(queued)
        elif not n & QUEUE_GAUGE_MASK:
            self._queue.set(len(queue))

    def written(self, count: int, queued: int) -> None:
        """The sender wrote ``count`` messages; ``queued`` remain."""
        if count <= 0:
            return
        self._sent.inc(count)
        self._written += count
        self._queue.set(queued)
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
        self._queue.set(queued)

    def stopped(self) -> None:
        self._connected.set(0)
        self._queue.set(0)


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
