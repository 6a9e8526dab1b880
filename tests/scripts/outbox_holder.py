"""Run by test_store.py: a process that holds messages in a shared outbox file.

usage: outbox_holder.py PATH IDENTIFIER COUNT CLAIM_EVERY REFUSED_URL

With OUTBOX_SYNC="always" and its server down (REFUSED_URL: nothing listens there), it accepts
COUNT messages ("h-0", "h-1", ...), prints one JSON line (its pid and the owner number of its
lease) and waits - renewing its lease every CLAIM_EVERY seconds - until the test kills it
(SIGKILL) or stops it (SIGSTOP: alive, but its lease is no longer renewed).
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient, persistence  # noqa: E402

path, identifier, count, claim_every, url = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
persistence.CLAIM_EVERY = claim_every
client = WebSocketClient(url=url, identifier=identifier, outbox_path=path, outbox_sync="always",
                         retry_delay=0.5, max_retry_delay=1, retry_limit=None)
client.start()
accepted = sum(bool(client.send_message(f"h-{i}")) for i in range(count))
print(json.dumps({"pid": os.getpid(), "owner": client.run.store._db.owner, "accepted": accepted}), flush=True)
gevent.event.Event().wait()
