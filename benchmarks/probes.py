"""Benchmarks that measure hermes_gevent alone, each in its own process:

    python -m benchmarks.probes memory COUNT          bytes per queued message; O(1) queue ops
    python -m benchmarks.probes recovery URL DELAY    server back -> first message delivered
    python -m benchmarks.probes metrics COUNT         send_message with metrics on vs off (ns per call)
    (the recovery probe starts and kills its own sink server)

Prints one JSON line.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402

from hermes_gevent import WebSocketClient  # noqa: E402

SINK = Path(__file__).parent / "sink" / "server.js"


def memory(count: int) -> dict:
    """A client that is not connected holds ``count`` 100-byte messages.

    The one place with a queue above the default 10000: this probes the queue itself
    (bytes per queued message, cost of an operation 100,000 deep), not a throughput
    that a user's default queue would have to sustain."""
    client = WebSocketClient(url="ws://127.0.0.1:9/never", max_queue_size=max(count * 2, 200_000))
    messages = [("x" * 96) + f"{i:04d}"[-4:] for i in range(count)]  # built before measuring
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for message in messages:
        client.send_message(message)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_message = (after - before) / count

    outbox = client.run.outbox_or_create()
    timings = {}
    for depth in (1_000, 100_000):
        while len(outbox) > depth:
            outbox.take(256, 1 << 30, timeout=0)
            outbox.ack()
        while len(outbox) < depth:
            outbox.put((1, b"x" * 100))
        trials = []
        for _ in range(5):  # the fastest of 5 trials: noise only ever adds time
            began = time.perf_counter()
            for _ in range(10_000):
                outbox.put((1, b"x" * 100))
                outbox.take(1, 1 << 30, timeout=0)
                outbox.ack()
            trials.append((time.perf_counter() - began) / 10_000 * 1e9)
        timings[depth] = min(trials)
    client.stop(0.1)
    return {"bytes_per_message": round(per_message, 1), "op_ns_at_1k": round(timings[1_000]),
            "op_ns_at_100k": round(timings[100_000])}


def recovery(port: int, delay: float) -> dict:
    """Time from the server listening again to the first message it confirms."""
    def start_sink():
        proc = subprocess.Popen(["node", str(SINK), str(port)], stdout=subprocess.PIPE, text=True)
        if not proc.stdout.readline().startswith("listening"):
            proc.kill()
            proc.wait()
            raise RuntimeError("the Node sink server did not start")
        return proc

    done = gevent.event.Event()
    sinks = [start_sink()]
    client = WebSocketClient(url=f"ws://127.0.0.1:{port}/sink?expect=1", retry_delay=delay, max_retry_delay=delay,
                             retry_jitter=0, min_uptime=0, on_message=lambda msg: done.set())
    try:
        client.start()
        assert client.wait_until_connected(10)
        sinks[0].kill()
        sinks[0].wait()
        gevent.sleep(delay * 2.5)  # a few failed attempts: the client is in its backoff cycle
        client.send_message("first after the restart")
        sinks.append(start_sink())
        back = time.perf_counter()
        assert done.wait(30)
        seconds = time.perf_counter() - back
    finally:
        client.stop(1)
        for sink in sinks:  # every server this probe started ends with it, whatever happened
            if sink.poll() is None:
                sink.kill()
                sink.wait()
    return {"seconds": round(seconds, 4), "retry_delay": delay}


def metrics_cost(count: int) -> dict:
    """What metrics=True adds to the send path: send_message on a client that is not connected
    (the queue takes every message), metrics off and on alternately, in chunks of 1000 calls;
    and the sender's per-batch hook (written(), once per batch of up to 256 messages) per message.
    Medians over the chunks, in ns per call."""
    import statistics

    rounds = max(5, count // 1000)
    clients = {flag: WebSocketClient(url="ws://127.0.0.1:9/x", max_queue_size=rounds * 1000 + 10,
                                     metrics=flag, name=f"bench-{flag}") for flag in (False, True)}
    chunks: dict[bool, list[float]] = {False: [], True: []}
    message = "x" * 100
    for _ in range(rounds):
        for flag, client in clients.items():
            send = client.send_message
            began = time.perf_counter_ns()
            for _ in range(1000):
                send(message)
            chunks[flag].append((time.perf_counter_ns() - began) / 1000)
    hook = clients[True]._metrics
    assert hook is not None
    batches = []
    for _ in range(rounds):
        began = time.perf_counter_ns()
        for _ in range(100):
            hook.written(256, 1000)
        batches.append((time.perf_counter_ns() - began) / (100 * 256))
    off, on = statistics.median(chunks[False]), statistics.median(chunks[True])
    return {"off_ns": round(off), "on_ns": round(on), "added_ns": round(on - off),
            "written_hook_ns_per_message": round(statistics.median(batches), 1), "calls": rounds * 1000}


if __name__ == "__main__":
    if sys.argv[1] == "memory":
        result = memory(int(sys.argv[2]))
    elif sys.argv[1] == "metrics":
        result = metrics_cost(int(sys.argv[2]))
    else:
        result = recovery(int(sys.argv[2]), float(sys.argv[3]))
    print(json.dumps(result), flush=True)
