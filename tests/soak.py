"""A bounded soak: many messages through many reconnects, watching for leaks.

    python -m tests.soak                                  # by hand: 1,000,000 messages
    python -m tests.soak --acks --count 1000000           # by hand, acknowledgements on, abrupt faults too
    python -m tests.soak --messages 300000 --reconnects 200 --fault-every 0.2        # CI (test_soak.py)
    python -m tests.soak --acks --count 60000 --reconnects 20 --fault-every 0.1      # CI, acknowledgements on

Phase 1 forces RECONNECTS reconnects (server closes with 1012) and compares live
greenlets and open file descriptors before and after. Phase 2 pushes MESSAGES
numbered messages as fast as the queue takes them while the server faults the
connection every FAULT_EVERY seconds, then checks the server's tally: every
message once, in order on each connection. RSS is sampled as the messages go and
reported at the start and the end. Prints JSON.

With ``--acks`` the client runs with ACK_TIMEOUT set and sends dicts ``{"n": <int>}``,
the server acknowledges what it tallied (tests/wsserver.py --ack), and the faults
alternate between a close with 1012 and an abort (the server drops the TCP connection
with whatever it had received and not yet read: an abrupt fault). Every message must
arrive (lost 0); duplicates are counted and reported, and first arrivals must be in
order across connections.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import greenlet  # noqa: E402

from hermes_gevent import QueueFull, WebSocketClient  # noqa: E402

from .support import ServerProcess, free_port, wait_until  # noqa: E402

#: RSS is sampled this many times over phase 2.
RSS_SAMPLES = 10


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
    parser.add_argument("--messages", "--count", dest="messages", type=int, default=1_000_000)
    parser.add_argument("--reconnects", type=int, default=200)
    parser.add_argument("--fault-every", type=float, default=3.0)
    parser.add_argument("--acks", action="store_true", help="acknowledgements on (ACK_TIMEOUT), abrupt faults too")
    parser.add_argument("--ack-timeout", type=float, default=2.0)
    parser.add_argument("--faults", default=None,
                        help="comma-separated fault kinds taken in turn: close (1012), abort (RST from the server); "
                             "default close, or close,abort with --acks")
    args = parser.parse_args()
    kinds = (args.faults or ("close,abort" if args.acks else "close")).split(",")
    assert set(kinds) <= {"close", "abort"}, kinds

    server = ServerProcess(free_port(), *(["--ack"] if args.acks else [])).start()
    server.command(cmd="mode", count=True)
    drops: dict = {}
    options = dict(ack_timeout=args.ack_timeout) if args.acks else {}
    client = WebSocketClient(url=server.url, retry_delay=0.01, max_retry_delay=0.05, retry_jitter=0, min_uptime=0,
                             max_queue_size=20_000, queue_overflow_strategy="raise", retry_limit=None,
                             on_drop=lambda msg, reason: drops.__setitem__(reason, drops.get(reason, 0) + 1),
                             **options)
    report: dict = {"acks": args.acks, "rss_start_mb": round(rss_mb(), 1)}
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

        fault_count = {kind: 0 for kind in kinds}
        stop_faults = gevent.event.Event()
        faults = gevent.spawn(fault_loop, server, args.fault_every, fault_count, kinds, stop_faults)
        began = time.monotonic()
        sent = 0
        every = max(1, args.messages // RSS_SAMPLES)
        next_sample, samples = every, []
        while sent < args.messages:
            try:
                client.send_message({"n": sent} if args.acks else f"n:{sent}")
                sent += 1
            except QueueFull:
                gevent.sleep(0.001)  # back-pressure: let the sender drain
            if sent % 100 == 0:
                gevent.sleep(0)  # the way a gevent app's producer yields
            if sent == next_sample:
                samples.append(round(rss_mb(), 1))
                next_sample += every
        assert client.flush(120), "the queue did not drain" + (" (or was not acknowledged)" if args.acks else "")
        report["send_seconds"] = round(time.monotonic() - began, 2)
        stop_faults.set()  # a fault under way (its command sent) finishes and is counted
        faults.join(30)
        faults.kill()
        report["faults"] = sum(fault_count.values())
        report["faults_by_kind"] = fault_count
        stats = server.tally(args.messages, 30)
        status = client.status()
        report.update(messages=args.messages, delivered=stats["distinct"], lost=args.messages - stats["distinct"],
                      duplicates=stats["dups"], out_of_order=stats["out_of_order"],
                      first_out_of_order=stats.get("first_out_of_order"), total_reconnects=status["reconnects"],
                      resent=status["messages_resent"], acked=status["messages_acked"], unacked=status["unacked"],
                      server_acked=stats.get("acked"), client_drops=dict(drops),
                      send_phase_reconnects=status["reconnects"] - report["reconnects"])
        report["rss_samples_mb"] = samples
        report["rss_end_mb"] = round(rss_mb(), 1)
        report["msgs_per_second"] = round(args.messages / report["send_seconds"])
    finally:
        client.stop(5)
        server.stop()
    print(json.dumps(report), flush=True)
    return report


def fault_loop(server: ServerProcess, every: float, count: dict, kinds: list, stop) -> None:
    """Every ``every`` seconds the next fault of ``kinds``, in turn: a close with 1012, or an
    abort (the server drops the TCP connection, losing what it had not read); until ``stop``."""
    i = 0
    while not stop.wait(every):
        kind = kinds[i % len(kinds)]
        i += 1
        if kind == "close":
            server.command(cmd="close", code=1012)
        else:
            server.command(cmd="abort")
        count[kind] += 1


if __name__ == "__main__":
    main()
