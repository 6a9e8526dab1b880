"""Run by test_fork.py: fork a process whose client is connected and has messages queued.

Prints one JSON line per process: what the child's client held right after the
fork, and whether each side delivered its own messages.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402


class Worker(WebSocketClient):
    pass


url = sys.argv[1]
client = Worker.instance(url=url)
assert Worker.instance() is client and WebSocketClient.instance() is not client
client.start()
if not client.wait_until_connected(10):
    sys.exit("parent not connected")
for i in range(5):
    client.send_message(f"parent-before-{i}")  # still queued: no yield before the fork

pid = os.fork()
if pid == 0:
    status = client.status()
    held = {
        "same_instance": Worker.instance() is client,
        "connected": status["connected"],
        "started": status["started"],
        "queue_size": status["queue_size"],
        "state": status["state"],
        "messages_sent": status["messages_sent"],
    }
    client.send_message("child-0")  # first use in the child starts it afresh
    ok = client.wait_until_connected(10) and client.flush(10)
    undelivered = client.stop(5)
    print(json.dumps({"who": "child", "held": held, "ok": bool(ok), "undelivered": undelivered}), flush=True)
    os._exit(0)

_, code = os.waitpid(pid, 0)
client.send_message("parent-after")
ok = client.flush(10)
undelivered = client.stop(5)
print(json.dumps({"who": "parent", "child_exit": code, "ok": bool(ok), "undelivered": undelivered}), flush=True)
