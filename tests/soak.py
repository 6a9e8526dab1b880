"""A bounded soak: many messages through many reconnects, watching for leaks.

    python -m tests.soak                                  # by hand: 1,000,000 messages
    python -m tests.soak --messages 30000 --reconnects 200 --fault-every 0.5   # CI (test_soak.py)

Phase 1 forces RECONNECTS reconnects (server closes with 1012) and compares live
greenlets and open file descriptors before and after. Phase 2 pushes MESSAGES
numbered messages as fast as the queue takes them while the server closes the
connection every FAULT_EVERY seconds, then checks the server's tally: every
message once, in order on each connection. RSS is reported at the start and the end. Prints JSON.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import greenlet  # noqa: E402

from hermes_gevent import QueueFull, WebSocketClient  # noqa: E402

from .support import ServerProcess, free_port, wait_until  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_greenlets() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and not o.dead)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--reconnects", type=int, default=200)
    parser.add_argument("--fault-every", type=float, default=3.0)
    args = parser.parse_args()

    server = ServerProcess(free_port()).start()
    server.command(cmd="mode", count=True)
    client = WebSocketClient(url=server.url, retry_delay=0.01, max_retry_delay=0.05, retry_jitter=0, min_uptime=0,
                             max_queue_size=20_000, queue_overflow_strategy="raise", retry_limit=None)
    report: dict = {"rss_start_mb": round(rss_mb(), 1)}
    try:
        client.start()
        assert client.wait_until_connected(10)
        gevent.sleep(0.2)
        report["greenlets_before"], report["fds_before"] = live_greenlets(), open_fds()
        began = time.monotonic()
        for i in range(args.reconnects):
            connects = len(server.of("connect"))
            server.command(cmd="close", code=1012)
            server.wait_for(lambda: len(server.of("connect")) > connects, 10, "a reconnection")
            wait_until(lambda: client.connected, 10, "connected")
        report["reconnect_seconds"] = round(time.monotonic() - began, 2)
        gevent.sleep(0.2)
        report["greenlets_after_reconnects"], report["fds_after_reconnects"] = live_greenlets(), open_fds()
        report["reconnects"] = client.status()["reconnects"]

        fault_count = [0]
        faults = gevent.spawn(fault_loop, server, args.fault_every, fault_count)
        began = time.monotonic()
        sent = 0
        while sent < args.messages:
            try:
                client.send_message(f"n:{sent}")
                sent += 1
            except QueueFull:
                gevent.sleep(0.001)  # back-pressure: let the sender drain
            if sent % 100 == 0:
                gevent.sleep(0)  # the way a gevent app's producer yields
        assert client.flush(120), "the queue did not drain"
        report["send_seconds"] = round(time.monotonic() - began, 2)
        faults.kill()
        report["faults"] = fault_count[0]
        stats = server.tally(args.messages, 30)
        report.update(messages=args.messages, delivered=stats["distinct"], duplicates=stats["dups"],
                      out_of_order=stats["out_of_order"], total_reconnects=client.status()["reconnects"])
        report["rss_end_mb"] = round(rss_mb(), 1)
        report["msgs_per_second"] = round(args.messages / report["send_seconds"])
    finally:
        client.stop(5)
        server.stop()
    print(json.dumps(report), flush=True)
    return report


def fault_loop(server: ServerProcess, every: float, count: list) -> None:
    while True:
        gevent.sleep(every)
        count[0] += 1
        server.command(cmd="close", code=1012)


if __name__ == "__main__":
    main()
