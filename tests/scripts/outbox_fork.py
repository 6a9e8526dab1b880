"""Run by test_store.py: fork a process whose client holds messages in an outbox file.

usage: outbox_fork.py PATH IDENTIFIER REFUSED_URL

The parent (OUTBOX_SYNC="always", server down) accepts five messages, then forks. The child
reports what its client holds, sends one message of its own (its first use starts it afresh),
stops (its message is spilled) and exits normally - atexit and the garbage collector run, with
the parent's SQLite connection copied into it. Then the parent, which never stopped using its
store, accepts one more message and stops. One JSON line per process.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import sys  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

path, identifier, url = sys.argv[1:4]


def file_state():
    """The leases (owner -> pid) and the messages (text -> owner) in the file, and its check."""
    conn = sqlite3.connect(path)
    try:
        return {
            "leases": {str(owner): pid for owner, pid in conn.execute("SELECT owner, pid FROM owners")},
            "messages": {bytes(payload).decode(): owner for payload, owner in
                         conn.execute("SELECT payload, owner FROM messages ORDER BY seq")},
            "check": conn.execute("PRAGMA integrity_check").fetchone()[0],
        }
    finally:
        conn.close()


client = WebSocketClient(url=url, identifier=identifier, outbox_path=path, outbox_sync="always",
                         retry_delay=0.5, max_retry_delay=1)
client.start()
accepted = [client.send_message(f"parent-before-{i}") for i in range(5)]
parent_store = client.run.store
parent_owner = parent_store._db.owner

pid = os.fork()
if pid == 0:
    held = {"store_is_parents": client.run.store is parent_store, "store_path": client.run.store.path,
            "state": client.status()["state"], "queue_size": client.queue_size}
    child_accepted = client.send_message("child-0")  # first use: starts afresh, with a store of its own
    store = client.run.store
    report = {
        "who": "child", "pid": os.getpid(), "held": held, "accepted": child_accepted,
        "own_store": store is not parent_store and store.path == path and store.durable,
        "owner": store._db.owner, "parent_owner": parent_owner, "file": file_state(),
    }
    report["undelivered"] = client.stop(1)
    report["spilled"] = client.status()["messages_spilled"]
    print(json.dumps(report), flush=True)
    sys.exit(0)  # a normal exit: atexit, then the garbage collector

_, code = os.waitpid(pid, 0)
report = {"who": "parent", "pid": os.getpid(), "child_exit": code, "accepted": accepted, "owner": parent_owner,
          "file_after_child": file_state()}
report["accepted_after"] = client.send_message("parent-after")
report["same_store"] = client.run.store is parent_store and not parent_store.failed
report["undelivered"] = client.stop(1)
report["spilled"] = client.status()["messages_spilled"]
report["outbox_errors"] = client.status()["outbox_errors"]
report["file_at_end"] = file_state()
print(json.dumps(report), flush=True)
