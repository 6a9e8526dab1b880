"""One benchmark run in its own process, so peers never share an event loop:

    python -m benchmarks.peer PEER WORKLOAD SIZE COUNT URL

PEER: raw (a websocket-client loop under gevent), websockets (asyncio), hermes
(hermes_gevent with its C speedups), hermes-pure (HERMES_GEVENT_PURE_PYTHON=1).
Prints one JSON line: {"seconds": ..., "cpu_seconds": ..., "dropped": ..., ...}. The clock
starts when the workload starts (connections are already open) and stops when the server
confirms delivery (one-way), the last message is handled (receive) or the last echo
returns (echo). "cpu_seconds" is the process's CPU time (user + system, every thread:
time.process_time) over the same span, read once before it and once after it, never in
the loop; the harness divides it by the messages (benchmarks/__main__.py). The enqueue
workload (the cost of one send_message against one ws.send) reports it too, from its first
call until the server has every message.

Two workloads are hermes's alone, to compare application-level acknowledgements
with none: both send dicts ({"data": "xx..."}, SIZE bytes of JSON without an id),
a fresh one per send_message as an app builds them. oneway-json: acknowledgements
off (the default). oneway-ack: ACK_TIMEOUT 5 s and every other setting a user gets
(MAX_UNACKED 1000, ACK_ID_KEY "id"), so the client adds an id to each; the server
acknowledges in batches and counts each id once, and the clock stops only when
the server has counted COUNT distinct ids and the client's flush() says every
message is acknowledged. A run that ends with messages unacknowledged has no time,
as one that dropped messages.

The compression workloads (benchmarks/compression.py) send JSON texts (json_corpus) to a
server that agrees to permessage-deflate: deflate (websockets and hermes, the settings a user
gets), deflate-off and deflate-all (hermes with compression off, and with every message
compressed), and deflate-memory(-off) (COUNT connections' memory, not a time). Their rows
carry the server's CPU time too ("sink_cpu_seconds").

hermes runs with the settings a user gets (MAX_QUEUE_SIZE 10000, drop_oldest) and
reports what it dropped; a run that dropped anything has no time ("seconds": null):
the harness reports it as a failure. raw and websockets block in send() and so
never drop.
"""

from __future__ import annotations

import json
import sys
import time

PEER, WORKLOAD, SIZE, COUNT, URL = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
KIND = WORKLOAD.removesuffix("-bin")  # the same workload with a bytes payload

if PEER != "websockets":
    from gevent import monkey

    monkey.patch_all()


#: The hermes producer yields with gevent.sleep(0) after every 100 send_message calls, as
#: a gevent app does (a request handler returns to the hub after its sends), or sooner,
#: after every 64 KiB of messages, as often as a loop writing to a socket would block.
#: The other peers block in every send; send_message never does.
YIELD_EVERY = max(1, min(100, 64 * 1024 // max(SIZE, 1)))

#: The hermes producer waits for the queue to drain above this many bytes of messages.
HIGH_WATER_BYTES = 4 * 2**20

#: ACK_TIMEOUT of the acknowledged workload: seconds before an unacknowledged message is
#: sent again (the server acknowledges within ~10 ms, so never on a healthy loopback).
ACK_TIMEOUT = 5.0

#: What a peer that blocks in send() drops: nothing.
NO_DROPS = {"dropped": 0, "drops_by_reason": {}}


#: The compression workloads' hermes settings: "deflate" is what a user gets (compression on),
#: "deflate-off" the same with compression off, "deflate-all" with every message compressed
#: (no threshold); "deflate-memory(-off)" measure memory per connection (run_hermes_memory).
DEFLATE_OPTIONS: dict = {"deflate": {}, "deflate-off": {"compression": None},
                         "deflate-all": {"compression_threshold": 0},
                         "deflate-memory": {}, "deflate-memory-off": {"compression": None}}

#: What each connection of the memory workloads sends, and gets back, before it is measured.
MEMORY_MESSAGES = 4


def json_corpus(size: int, variants: int = 64) -> list[str]:
    """``variants`` JSON texts of about ``size`` bytes each, different from one another as an
    app's events are (ids, names, amounts, words), for the compression workload ("deflate").
    Under 200 bytes, short events (id, type, customer, qty, amount) padded to ``size``."""
    import random

    rng = random.Random(7)
    words = ["order", "created", "shipped", "invoice", "customer", "payment", "refund", "pending", "warehouse",
             "express", "standard", "address", "street", "city", "total", "discount", "coupon", "item"]
    if size < 200:
        short = [json.dumps({"id": f"evt_{rng.getrandbits(48):012x}",
                             "type": rng.choice(words) + "." + rng.choice(words), "customer": rng.randrange(10**6),
                             "qty": rng.randrange(1, 9), "amount": round(rng.uniform(1, 500), 2)})
                 for _ in range(variants)]
        return [text + " " * max(0, size - len(text)) for text in short]
    texts = []
    for i in range(variants):
        event = {"id": f"evt_{rng.getrandbits(48):012x}", "type": rng.choice(words) + "." + rng.choice(words),
                 "customer": {"id": rng.randrange(10**6), "name": f"user-{rng.randrange(10**4)}"}, "items": []}
        while len(json.dumps(event)) < size - 60:
            event["items"].append({"sku": f"{rng.choice(words)}-{rng.randrange(1000)}", "qty": rng.randrange(1, 9),
                                   "price": round(rng.uniform(1, 500), 2), "note": " ".join(rng.sample(words, 3))})
        text = json.dumps(event)
        texts.append(text + " " * max(0, size - len(text)))  # the same size for every peer
    return texts


def payload_text(size: int):
    """The message: text, or bytes for the binary workloads ("oneway-bin")."""
    return b"x" * size if WORKLOAD.endswith("-bin") else "x" * size


def run_raw() -> dict:
    import websocket

    text = payload_text(SIZE)
    if KIND == "oneway":
        ws = websocket.create_connection(f"{URL}/sink?expect={COUNT}", enable_multithread=False)
        send = ws.send_binary if isinstance(text, bytes) else ws.send
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(COUNT):
            send(text)
        reply = ws.recv()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert reply.startswith(f"done {COUNT} "), reply
        sink_busy = float(reply.split()[3])
    elif KIND == "receive":
        ws = websocket.create_connection(f"{URL}/push?n={COUNT}&size={SIZE}")
        received = 0
        start, cpu = time.perf_counter(), time.process_time()
        ws.send("go")
        while not (message := ws.recv()).startswith("end"):
            received += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        assert received == COUNT + 1  # and the empty marker
        sink_busy = float(message.split()[1])
    elif KIND == "echo":
        ws = websocket.create_connection(f"{URL}/echo")
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(COUNT):
            ws.send(text)
            ws.recv()
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        sink_busy = None
    elif KIND == "enqueue":
        ws = websocket.create_connection(f"{URL}/sink?expect={COUNT}")
        costs = []
        cpu = time.process_time()
        for _ in range(COUNT):
            began = time.perf_counter_ns()
            ws.send(text)
            costs.append(time.perf_counter_ns() - began)
        ws.recv()
        return {"costs_ns": _percentiles(costs), "cpu_seconds": time.process_time() - cpu, **NO_DROPS}
    ws.close()
    return {"seconds": seconds, "cpu_seconds": cpu, "sink_busy": sink_busy, **NO_DROPS}


def run_websockets() -> dict:
    import asyncio

    from websockets.asyncio.client import connect

    text = payload_text(SIZE)

    async def main() -> dict:
        if KIND == "oneway":
            async with connect(f"{URL}/sink?expect={COUNT}", compression=None, max_size=None) as ws:
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(COUNT):
                    await ws.send(text)
                reply = await ws.recv()
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert reply.startswith(f"done {COUNT} "), reply
                sink_busy = float(reply.split()[3])
        elif KIND == "receive":
            async with connect(f"{URL}/push?n={COUNT}&size={SIZE}", compression=None, max_size=None,
                               max_queue=None) as ws:
                received = 0
                start, cpu = time.perf_counter(), time.process_time()
                await ws.send("go")
                while not (message := await ws.recv()).startswith("end"):
                    received += 1
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert received == COUNT + 1
                sink_busy = float(message.split()[1])
        elif KIND == "deflate":  # the defaults a user gets: compression="deflate", max_size 1 MiB
            messages = json_corpus(SIZE)
            async with connect(f"{URL}/sink?expect={COUNT}") as ws:
                start, cpu = time.perf_counter(), time.process_time()
                for i in range(COUNT):
                    await ws.send(messages[i % len(messages)])
                reply = await ws.recv()
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                assert reply.startswith(f"done {COUNT} "), reply
                (extension,) = ws.protocol.extensions  # the window websockets compresses with
                return {"seconds": seconds, "cpu_seconds": cpu, **sink_figures(reply),
                        "extension": ws.response.headers.get("Sec-WebSocket-Extensions"),
                        "window_bits": extension.local_max_window_bits, **NO_DROPS}
        elif KIND.startswith("deflate-memory"):
            return await websockets_memory()
        elif KIND == "echo":
            async with connect(f"{URL}/echo", compression=None, max_size=None) as ws:
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(COUNT):
                    await ws.send(text)
                    await ws.recv()
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
                sink_busy = None
        return {"seconds": seconds, "cpu_seconds": cpu, "sink_busy": sink_busy, **NO_DROPS}

    async def websockets_memory() -> dict:
        """run_hermes_memory(), for websockets: its defaults, or compression=None."""
        messages = json_corpus(SIZE)
        options = {"compression": None} if KIND.endswith("-off") else {}

        async def one(n: int):
            ws = await connect(f"{URL}/echo", **options)
            for i in range(MEMORY_MESSAGES):
                await ws.send(messages[(n + i) % len(messages)])
            for _ in range(MEMORY_MESSAGES):
                await ws.recv()
            return ws

        connections = [await one(0)]
        before = traced_start()
        for n in range(1, COUNT + 1):
            connections.append(await one(n))
        per_connection = traced_since(before)
        extension = connections[-1].response.headers.get("Sec-WebSocket-Extensions")
        for ws in connections:
            await ws.close()
        return {"bytes_per_connection": per_connection, "messages_each": MEMORY_MESSAGES, "extension": extension,
                **NO_DROPS}

    return asyncio.run(main())


def run_hermes() -> dict:
    import gevent
    import gevent.event

    from hermes_gevent import WebSocketClient

    text = payload_text(SIZE)
    done = gevent.event.Event()
    state = {"received": 0, "reply": None, "other": 0}

    def on_message(msg):
        if KIND in ("oneway-json", "oneway-ack"):
            # only the server's "done" may reach the handler: acknowledgements are the client's
            if isinstance(msg, str) and msg.startswith("done"):
                state["reply"] = msg
                done.set()
            else:
                state["other"] += 1
        elif KIND == "receive":
            if msg.startswith("end"):
                state["reply"] = msg
                done.set()
            else:
                state["received"] += 1
        else:
            state["reply"] = msg
            done.set()

    if KIND.startswith("deflate-memory"):
        return run_hermes_memory()
    if KIND.startswith("deflate"):
        return run_hermes_deflate(done, state)
    path = {"oneway": f"/sink?expect={COUNT}", "receive": f"/push?n={COUNT}&size={SIZE}", "echo": "/echo",
            "enqueue": f"/sink?expect={COUNT}", "oneway-json": f"/sink?expect={COUNT}",
            "oneway-ack": f"/sink?expect={COUNT}&ack=1"}[KIND]
    options = {"ack_timeout": ACK_TIMEOUT} if KIND == "oneway-ack" else {}
    client = WebSocketClient(url=URL + path, on_message=on_message, **options)  # the defaults a user gets
    client.start()
    assert client.wait_until_connected(10)
    result = {"seconds": None, "cpu_seconds": None, "sink_busy": None}
    if KIND in ("oneway-json", "oneway-ack"):
        return run_hermes_dicts(client, done, state)
    if KIND == "oneway":
        start, cpu = time.perf_counter(), time.process_time()
        produce(client, text)
        if not client.messages_dropped:  # with drops the server never counts to COUNT: nothing to wait for
            done.wait(120)
            result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
            assert state["reply"].startswith(f"done {COUNT} "), state
            result["sink_busy"] = float(state["reply"].split()[3])
    elif KIND == "receive":
        start, cpu = time.perf_counter(), time.process_time()
        client.send_message("go")
        done.wait(120)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
        assert state["received"] == COUNT + 1, state
        result["sink_busy"] = float(state["reply"].split()[1])
    elif KIND == "echo":
        start, cpu = time.perf_counter(), time.process_time()
        # One bound for the whole run, as the other peers wait for each reply without a timer: a timer per
        # round trip (done.wait(10)) would be the harness's cost, about 7 us of each round trip here.
        with gevent.Timeout(120):
            for _ in range(COUNT):
                done.clear()
                client.send_message(text)
                done.wait()
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
    elif KIND == "enqueue":
        cpu = time.process_time()
        costs = produce_timed(client, text)
        if not client.messages_dropped:
            done.wait(60)
        result = {"costs_ns": _percentiles(costs), "cpu_seconds": time.process_time() - cpu}
    status = client.status()  # before stop(): stop() counts what it discards as drops of its own
    client.stop(5)
    return {**result, "dropped": status["messages_dropped"], "drops_by_reason": status["drops_by_reason"]}


def run_hermes_dicts(client, done, state) -> dict:
    """oneway-json / oneway-ack: COUNT dicts; done when the server counted them all and,
    with acknowledgements, when the client has every acknowledgement (flush() True)."""
    data = "x" * max(0, SIZE - len('{"data":""}'))  # SIZE bytes of compact JSON before the client adds an id
    result: dict = {"seconds": None, "cpu_seconds": None, "sink_busy": None, "bytes_per_message": None,
                    "all_acked": None}
    start, cpu = time.perf_counter(), time.process_time()
    produce_dicts(client, data)
    if not client.messages_dropped:  # with drops the server never counts to COUNT: nothing to wait for
        done.wait(120)
        counted = time.perf_counter() - start
        if KIND == "oneway-ack":  # complete when the client says so, both ways
            result["all_acked"] = client.flush(60) and client.status()["unacked"] == 0
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        reply = state["reply"]
        assert reply is not None and reply.startswith(f"done {COUNT} "), state
        fields = reply.split()
        result.update(sink_busy=float(fields[3]), bytes_per_message=int(fields[2]) / COUNT,
                      counted_after=counted)
        if KIND == "oneway-ack":
            result.update(sink_duplicates=int(fields[4]), sink_invalid=int(fields[5]))
            assert result["sink_invalid"] == 0, f"the server got {fields[5]} messages without a string id"
        if result["all_acked"] is not False:
            result["seconds"], result["cpu_seconds"] = seconds, cpu
    status = client.status()  # before stop(): stop() counts what it discards as drops of its own
    undelivered = client.stop(5)
    result.update(dropped=status["messages_dropped"], drops_by_reason=status["drops_by_reason"],
                  handler_saw_other=state["other"], undelivered_at_stop=undelivered,
                  ack_timeout=getattr(client.settings, "ACK_TIMEOUT", None),
                  **{key: status.get(key) for key in ("unacked", "messages_acked", "messages_resent",
                                                      "messages_sent", "reconnects")})
    return result


def run_hermes_deflate(done, state) -> dict:
    """The compression workloads (see DEFLATE_OPTIONS): COUNT JSON texts of SIZE bytes
    (json_corpus) and every other setting a user gets, against a server that agrees to
    permessage-deflate. Reports the process's CPU time over the run beside the sink's figures."""
    from hermes_gevent import WebSocketClient

    def on_message(msg):
        state["reply"] = msg
        done.set()

    messages = json_corpus(SIZE)
    client = WebSocketClient(url=f"{URL}/sink?expect={COUNT}", on_message=on_message, **DEFLATE_OPTIONS[KIND])
    client.start()
    assert client.wait_until_connected(10)
    result: dict = {"seconds": None, "cpu_seconds": None, "sink_busy": None, "wire_bytes": None,
                    "extension": client.status()["compression"], "window_bits": window_bits(client)}
    start, cpu = time.perf_counter(), time.process_time()
    pause = pauser(client)
    for i in range(COUNT):
        client.send_message(messages[i % len(messages)])
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            pause()
    if not client.messages_dropped:
        done.wait(120)
        result["seconds"], result["cpu_seconds"] = time.perf_counter() - start, time.process_time() - cpu
        assert state["reply"].startswith(f"done {COUNT} "), state
        result.update(sink_figures(state["reply"]))
    status = client.status()
    client.stop(5)
    return {**result, "dropped": status["messages_dropped"], "drops_by_reason": status["drops_by_reason"]}


def window_bits(client):
    """The window the client compresses with: its setting, capped by what the server answered."""
    from hermes_gevent import deflate

    agreement = deflate.accept(client.status()["compression"])
    if agreement is None:
        return None
    ours, limit = client.settings.COMPRESSION_WINDOW_BITS, agreement.client_max_window_bits
    return ours if limit is None else min(ours, limit)


def run_hermes_memory() -> dict:
    """deflate-memory(-off): the bytes COUNT more connections hold (tracemalloc), each having sent
    MEMORY_MESSAGES texts of SIZE bytes to /echo and received them back (compressed both ways
    when compression is on). A first connection, not counted, imports and caches what every
    connection shares."""
    import gevent.event

    from hermes_gevent import WebSocketClient

    messages = json_corpus(SIZE)

    def connect(n: int):
        echoed, got = gevent.event.Event(), [0]

        def on_message(msg):
            got[0] += 1
            if got[0] == MEMORY_MESSAGES:
                echoed.set()

        client = WebSocketClient(url=f"{URL}/echo", on_message=on_message, **DEFLATE_OPTIONS[KIND])
        client.start()
        assert client.wait_until_connected(10)
        for i in range(MEMORY_MESSAGES):
            client.send_message(messages[(n + i) % len(messages)])
        assert echoed.wait(10), got
        return client

    clients = [connect(0)]
    before = traced_start()
    clients += [connect(n) for n in range(1, COUNT + 1)]
    per_connection = traced_since(before)
    extension = clients[-1].status()["compression"]
    for client in clients:
        client.stop(5)
    return {"bytes_per_connection": per_connection, "messages_each": MEMORY_MESSAGES, "extension": extension,
            **NO_DROPS}


def traced_start() -> int:
    """Start tracemalloc, garbage collected first: every block Python and zlib allocate from
    here on is counted (zlib's state comes from PyMem_RawMalloc, which tracemalloc traces)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


def traced_since(before: int) -> float:
    """The bytes still allocated since traced_start(), per connection (COUNT of them)."""
    import gc
    import tracemalloc

    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / COUNT


def sink_figures(reply: str) -> dict:
    """The sink's "done <messages> <bytes> <busy> <wire bytes> <cpu us>" reply, as a result's fields."""
    fields = reply.split()
    return {"sink_busy": float(fields[3]), "wire_bytes": int(fields[4]), "sink_cpu_seconds": int(fields[5]) / 1e6}


def produce_dicts(client, data: str) -> None:
    """produce(), with a fresh dict per message, as an app builds them."""
    pause = pauser(client)
    for i in range(COUNT):
        client.send_message({"data": data})
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            pause()


def produce(client, text) -> None:
    """COUNT send_message calls, yielding the way a gevent app does, and waiting when
    the server falls behind (see pauser())."""
    pause = pauser(client)
    for i in range(COUNT):
        client.send_message(text)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            pause()


def pauser(client):
    """The producers' pause(): back to the hub now and then, as a request handler does between
    requests. A producer faster than the server must wait or lose messages (send_message never
    waits; the queue is bounded): above the high-water mark, wait for the queue to drain. The
    mark and the functions are looked up once, as an app would (the harness's own cost per
    message is no part of the client's)."""
    import gevent

    limit, sleep, flush = high_water(client), gevent.sleep, client.flush

    def pause() -> None:
        if client.queue_size > limit:
            flush(60)
        else:
            sleep(0)

    return pause


def high_water(client) -> int:
    """Half the queue, or 4 MiB of messages, whichever is less (a socket's send buffer holds
    about as much)."""
    return min(client.settings.MAX_QUEUE_SIZE // 2, max(1, HIGH_WATER_BYTES // max(SIZE, 1)))


def produce_timed(client, text) -> list[int]:
    """produce(), with the cost of each send_message call in ns."""
    costs = []
    pause = pauser(client)
    for i in range(COUNT):
        began = time.perf_counter_ns()
        client.send_message(text)
        costs.append(time.perf_counter_ns() - began)
        if i % YIELD_EVERY == YIELD_EVERY - 1:
            pause()
    return costs


def _percentiles(values: list[int]) -> dict:
    values = sorted(values)
    return {"median": values[len(values) // 2], "p99": values[int(len(values) * 0.99)]}


if __name__ == "__main__":
    runner = {"raw": run_raw, "websockets": run_websockets, "hermes": run_hermes, "hermes-pure": run_hermes}[PEER]
    print(json.dumps(runner()), flush=True)
