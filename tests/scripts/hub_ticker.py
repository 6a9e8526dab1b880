"""Run by test_hub.py: a ticker greenlet must keep ticking while clients connect,
send, receive, wait on a slow handshake, time out on a hanging one and back off.

usage: hub_ticker.py patched|unpatched|libuv ECHO_URL SLOW_URL HANG_URL REFUSED_URL FLOOD_URL
Prints one JSON line: the largest gap between ticks and what each phase saw.
"""

import sys

if sys.argv[1] in ("patched", "libuv"):  # libuv: GEVENT_LOOP=libuv set by the test
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

echo_url, slow_url, hang_url, refused_url, flood_url = sys.argv[2:7]
TICK = 0.005
gaps = []


def ticker():
    last = time.perf_counter()
    while True:
        gevent.sleep(TICK)
        now = time.perf_counter()
        gaps.append(now - last - TICK)
        last = now


ticking = gevent.spawn(ticker)
gevent.sleep(0.05)
report = {}

# connect, send, receive (echoed), including one large message
got = []
echo = WebSocketClient(url=echo_url, on_message=got.append, retry_jitter=0)
echo.start()
report["connected"] = echo.wait_until_connected(10)
for i in range(2000):
    echo.send_message(f"m-{i}")
    if i % 100 == 99:
        gevent.sleep(0)  # this loop is the app's own code: it yields like a request handler would
echo.send_message(b"x" * 2_000_000)
deadline = time.monotonic() + 20
while len(got) < 2001 and time.monotonic() < deadline:
    gevent.sleep(0.01)
report["echoed"] = len(got)

# a slow handshake (the proxy delays every chunk)
slow = WebSocketClient(url=slow_url, connect_timeout=10)
began = time.monotonic()
slow.start()
report["slow_connected"] = slow.wait_until_connected(10)
report["slow_seconds"] = round(time.monotonic() - began, 3)

# a handshake that never comes: bounded by CONNECT_TIMEOUT
errors = []
hang = WebSocketClient(url=hang_url, connect_timeout=0.3, retry_delay=5, max_retry_delay=5, on_error=errors.append)
hang.start()
deadline = time.monotonic() + 5
while not errors and time.monotonic() < deadline:
    gevent.sleep(0.01)
report["hang_error"] = type(errors[0]).__name__ if errors else None

# backoff against a closed port
failures = []
down = WebSocketClient(url=refused_url, retry_delay=0.05, max_retry_delay=0.2, retry_jitter=0,
                       on_error=failures.append)
down.start()
deadline = time.monotonic() + 5
while len(failures) < 4 and time.monotonic() < deadline:
    gevent.sleep(0.01)
report["backoff_failures"] = len(failures)

# a server that floods an endless header line: bounded in size, fails fast, the hub keeps going


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


flood_errors = []
rss_before = rss_mb()
flood = WebSocketClient(url=flood_url, connect_timeout=3, retry_delay=0.05, max_retry_delay=0.05, retry_jitter=0,
                        on_error=flood_errors.append)
began = time.monotonic()
flood.start()
deadline = time.monotonic() + 5
while len(flood_errors) < 3 and time.monotonic() < deadline:
    gevent.sleep(0.01)
report["flood_errors"] = sorted({type(e).__name__ for e in flood_errors})
report["flood_attempts"] = len(flood_errors)
report["flood_seconds"] = round(time.monotonic() - began, 3)
report["flood_rss_growth_mb"] = round(rss_mb() - rss_before, 1)

for client in (echo, slow, hang, down, flood):
    client.stop(2)
ticking.kill()
report["ticks"] = len(gaps)
report["max_gap_ms"] = round(max(gaps) * 1000, 2)
print(json.dumps(report), flush=True)
