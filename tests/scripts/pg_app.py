"""Run by test_pg_deploy.py under gunicorn: flask_example's app, with the outbox's lease shortened.

    gunicorn -c flask_example/gunicorn.conf.py tests.scripts.pg_app:app

HERMES_TEST_LEASE_TIMEOUT and HERMES_TEST_CLAIM_EVERY (seconds, each optional) set
hermes_gevent.lease.LEASE_TIMEOUT and hermes_gevent.persistence.CLAIM_EVERY in the worker before
the app, and so its client and the client's lease, is created (gunicorn imports this module in
each worker, after the gevent worker patched it). A worker then renews its lease every CLAIM_EVERY
and judges another's lapsed after LEASE_TIMEOUT, instead of 5 s and 25 s: a takeover within
seconds. Everything else is flask_example's, from the environment (HERMES_<SETTING>).
"""

import os

from hermes_gevent import lease, persistence

if os.environ.get("HERMES_TEST_LEASE_TIMEOUT"):
    lease.LEASE_TIMEOUT = float(os.environ["HERMES_TEST_LEASE_TIMEOUT"])
if os.environ.get("HERMES_TEST_CLAIM_EVERY"):
    persistence.CLAIM_EVERY = float(os.environ["HERMES_TEST_CLAIM_EVERY"])

from flask_example import create_app  # noqa: E402 (after the lease is set)

app = create_app()
