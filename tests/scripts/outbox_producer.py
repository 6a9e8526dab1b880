"""Run by the fault matrix: a producer process with OUTBOX_SYNC="always", killed by the test.

    python outbox_producer.py URL PATH IDENTIFIER ACK_TIMEOUT|none

Sends numbered messages (the matrix's format: "n:<int>", or {"n": <int>} with
acknowledgements on) in bursts of 10 every 5 ms, and prints "accepted <n>" for each one
send_message() accepted - after it returned, so a message accepted just before the
kill may be delivered without having been printed (at most one: one producer).
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

url, path, identifier, ack = sys.argv[1:5]
acks = ack != "none"
client = WebSocketClient(url=url, identifier=identifier, outbox_path=path, outbox_sync="always",
                         ack_timeout=float(ack) if acks else None, retry_delay=0.05, max_retry_delay=0.2,
                         max_queue_size=100_000)
client.start()
if not client.wait_until_connected(10):
    sys.exit("never connected")
print("connected", flush=True)
n = 0
while True:
    for _ in range(10):
        message = {"n": n} if acks else f"n:{n}"
        if client.send_message(message):
            sys.stdout.write(f"accepted {n}\n")
        n += 1
    sys.stdout.flush()
    gevent.sleep(0.005)
