"""Ready-made gunicorn server hooks. In ``gunicorn.conf.py``::

    from hermes_gevent.gunicorn import post_worker_init, worker_exit

``post_worker_init`` starts, in each worker after the fork and after the
gevent worker has patched the process, every client that was waiting to
start (``start_on_first_use()``: the Flask extension under ``--preload``).
``worker_exit`` stops every running client within gunicorn's
``graceful_timeout``: flush, close 1000. The master never starts a client.
``child_exit`` (in the master) marks a dead worker's Prometheus files dead when
metrics run in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set and the
``hermes_gevent[metrics]`` extra installed); otherwise it does nothing and imports
nothing.
"""

from __future__ import annotations

from typing import Any

from . import metrics
from .client import all_clients

__all__ = ["EXIT_MARGIN", "child_exit", "post_worker_init", "worker_exit"]

#: Seconds kept back from graceful_timeout for the worker's own exit.
EXIT_MARGIN = 1.0


def post_worker_init(worker: Any) -> None:
    for client in all_clients():
        if client.autostart_pending:
            client.start()


def worker_exit(server: Any, worker: Any) -> None:
    graceful = float(getattr(getattr(worker, "cfg", None), "graceful_timeout", 30))
    budget = max(1.0, graceful - EXIT_MARGIN)
    for client in all_clients():
        if client.running:
            client.stop(timeout=min(client.settings.MAX_THREAD_WAIT_TIME, budget))


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges (hermes_connected, hermes_queue_size) leave the aggregate."""
    if metrics.multiproc_dir() is None or not metrics.available():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
