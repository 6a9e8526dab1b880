"""Run by test_pg_store.py and test_store_contract.py: a process with an outbox (OUTBOX_URL: a
postgresql:// or sqlite:/// URL), in one of three modes (commit-and-die: PostgreSQL only).

usage: outbox_process.py hold DB_URL IDENTIFIER COUNT WS_URL LEASE_TIMEOUT CLAIM_EVERY
       outbox_process.py produce DB_URL IDENTIFIER PRODUCERS PER_PRODUCER WS_URL
       outbox_process.py commit-and-die DB_URL IDENTIFIER WS_URL

hold: OUTBOX_SYNC="always"; accepts COUNT messages ("h-0", ...) while its server (WS_URL) is not
listening, prints one JSON line (pid, owner token, accepted) and waits - renewing its lease every
CLAIM_EVERY s - until the test stops it (SIGSTOP: a frozen process) or kills it. Once resumed it
connects when WS_URL listens, and sends what it still holds.
produce: OUTBOX_SYNC="always", its server down; PRODUCERS greenlets send PER_PRODUCER messages
each ("p<g>-<i>"); right after the last send_message returned it prints one JSON line and kills
itself with SIGKILL (no stop(), no atexit).
commit-and-die: its server down; sends "committed" with transaction= on a SQLAlchemy Connection,
commits, prints one JSON line and kills itself with SIGKILL before anything could be sent.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient, lease, persistence  # noqa: E402

FAST = dict(retry_delay=0.2, max_retry_delay=0.5, retry_jitter=0, retry_limit=None, connect_timeout=5)
mode, db_url, identifier = sys.argv[1], sys.argv[2], sys.argv[3]

if mode == "hold":
    count, ws_url = int(sys.argv[4]), sys.argv[5]
    lease.LEASE_TIMEOUT, persistence.CLAIM_EVERY = float(sys.argv[6]), float(sys.argv[7])
    client = WebSocketClient(url=ws_url, identifier=identifier, outbox_url=db_url, outbox_sync="always", **FAST)
    client.start()
    accepted = sum(bool(client.send_message(f"h-{i}")) for i in range(count))
    print(json.dumps({"pid": os.getpid(), "owner": client.run.store._db.owner, "accepted": accepted}), flush=True)
    gevent.event.Event().wait()
elif mode == "produce":
    producers, per, ws_url = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    client = WebSocketClient(url=ws_url, identifier=identifier, outbox_url=db_url, outbox_sync="always",
                             max_queue_size=producers * per, **FAST)
    client.start()

    def produce(g):
        return [client.send_message(f"p{g}-{i}") for i in range(per)]

    results = [g.get() for g in [gevent.spawn(produce, g) for g in range(producers)]]
    print(json.dumps({"pid": os.getpid(), "accepted": sum(map(sum, results))}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
elif mode == "commit-and-die":
    import sqlalchemy

    ws_url = sys.argv[4]
    client = WebSocketClient(url=ws_url, identifier=identifier, outbox_url=db_url, **FAST)
    client.start()
    engine = sqlalchemy.create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)"))
        conn.commit()
        conn.execute(sqlalchemy.text("INSERT INTO orders (item) VALUES ('book')"))
        accepted = client.send_message({"order": "book"}, transaction=conn)
        conn.commit()
    print(json.dumps({"pid": os.getpid(), "accepted": accepted}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
else:
    sys.exit(f"unknown mode {mode!r}")
