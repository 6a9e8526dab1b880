# gunicorn -c flask_example/gunicorn.conf.py flask_example.wsgi:app
# Gevent workers, one WebSocket connection each; add --preload and nothing changes
# for the client: the hooks start it in each worker after the fork.
import os

# child_exit: with PROMETHEUS_MULTIPROC_DIR set, a dead worker's live gauges leave the metrics.
from hermes_gevent.gunicorn import child_exit, post_worker_init, worker_exit  # noqa: F401

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = "gevent"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "15"))
