"""Run by test_shutdown.py: a process that stops its client at exit or on SIGTERM.

usage: shutdown_child.py URL atexit|signal patched|unpatched COUNT
"""

import sys

if sys.argv[3] == "patched":
    from gevent import monkey

    monkey.patch_all()

import signal  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

url, mode, _, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = WebSocketClient(url=url, max_thread_wait_time=10)
client.start()
if not client.wait_until_connected(10):
    sys.exit("not connected")
for i in range(count):
    client.send_message(f"c-{i}")

if mode == "signal":
    done = gevent.event.Event()

    def on_term(signum, frame):
        print("undelivered", client.stop(), flush=True)
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    done.wait(30)
else:
    print("ready", flush=True)
# atexit mode: leave without calling stop(); the library's atexit hook must close cleanly.
