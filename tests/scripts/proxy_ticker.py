"""Run by test_proxy.py: a ticker greenlet keeps ticking while clients connect through
proxies (HTTP CONNECT and SOCKS5), over ws:// and wss:// (a standard-library SSLContext:
TLS in memory when unpatched), and echo a small and a large message.

usage: proxy_ticker.py patched|unpatched WS_URL WSS_URL CAFILE PROXY_URL...
Prints one JSON line: the largest gap between ticks and what each connection saw.
"""

import sys

if sys.argv[1] == "patched":
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import ssl  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

ws_url, wss_url, cafile = sys.argv[2:5]
proxies = sys.argv[5:]
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
runs = []
for proxy in proxies:
    for url in (ws_url, wss_url):
        got = []
        echoed = gevent.event.Event()

        def on_message(message, got=got, echoed=echoed):
            got.append(message)
            if len(got) == 2:
                echoed.set()

        context = ssl.create_default_context(cafile=cafile) if url.startswith("wss") else None
        client = WebSocketClient(url=url, proxy=proxy, ssl_context=context, on_message=on_message,
                                 retry_delay=0.05, connect_timeout=5)
        began = time.monotonic()
        client.start()
        connected = client.wait_until_connected(10)
        run = {"proxy": proxy.split(":")[0], "url": url.split(":")[0], "connected": connected,
               "connect_ms": round((time.monotonic() - began) * 1000, 1), "through": client.status()["proxy"]}
        if connected:
            run["socket"] = type(client.run.session.conn.sock).__name__
            client.send_message("through the proxy")
            client.send_message("x" * (1 << 20))
            echoed.wait(10)
            run["echoes"] = [len(m) for m in got]
        run["undelivered"] = client.stop(5)
        runs.append(run)
ticking.kill()
print(json.dumps({"runs": runs, "ticks": len(gaps), "max_gap_ms": round(max(gaps) * 1000, 2)}))
