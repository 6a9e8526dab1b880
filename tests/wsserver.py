"""A real WebSocket server for the tests, run as a subprocess (python tests/wsserver.py PORT).

It is the `websockets` library's asyncio server. It prints one JSON line per
event on stdout (listening, connect, msg, close) and obeys JSON commands read
from stdin, one per line, so a test can script it and keep a record of every
message it received:

    {"cmd": "push", "n": 100}                       numbered text messages to every client
    {"cmd": "stream", "rate": 5000, "seconds": 10, "size": 200}
                                                    "push-<n>-<time.time()>-..." at a steady rate, in the background;
                                                    emits "streamed" with the count when it ends
    {"cmd": "send", "text": "hi"} / {"cmd": "send", "hex": "00ff"}
    {"cmd": "close", "code": 1011, "reason": ""}    close every connection with a code
    {"cmd": "raw", "hex": "..."}                    write raw bytes (bad frames) to every client
    {"cmd": "ping_flood", "n": 500}                 many pings as fast as possible
    {"cmd": "ping_wait"}                            one ping; emits "pong" when answered
    {"cmd": "abort"}                                drop every TCP connection at once
    {"cmd": "mode", "reject": 503, "echo": true, "handshake_delay": 0.0, "close_on_open": null}
    {"cmd": "mode", "count": true}                  tally "n:<int>" messages (or JSON {"n": <int>, ...}) instead of printing them
    {"cmd": "mode", "ack": true, "ack_key": "id"}   acknowledge, see below (also --ack, which survives a restart)
    {"cmd": "mode", "ack_drop": true}               acknowledge nothing (the ids are forgotten) until set back to false
    {"cmd": "mode", "discard": true}                read messages and throw them away, unrecorded and unacknowledged
    {"cmd": "mode", "retry_after": "120"}           rejections (mode reject) carry this Retry-After
    {"cmd": "mode", "subprotocol": "first"}         answer with the first subprotocol offered; a name: that one,
                                                    offered or not; null (default): none
    {"cmd": "mode", "stamp": true}                  "msg" events carry "at", the server's time.monotonic()

"connect" events carry the request's headers (Origin among them) and the subprotocol chosen.
    {"cmd": "stats"}                                emits the tally
    {"cmd": "exit"}

Acknowledgements (ack mode): every received text message that is a JSON object carrying an
id under ``ack_key`` is acknowledged after it was recorded (its "msg" line written and flushed,
or tallied): that is what "processed" means. The ids go back on the connection that carried
them in batches, ``{"ack": [id, ...]}`` every ACK_EVERY seconds or at once at ACK_BATCH ids;
a batch of one id goes as ``{"ack": id}``, so both forms of the convention are exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.http11 import Response

MODE = {"reject": None, "echo": False, "handshake_delay": 0.0, "close_on_open": None, "quiet": False, "count": False,
        "ack": False, "ack_key": "id", "ack_drop": False, "discard": False, "retry_after": None, "subprotocol": None,
        "stamp": False}
#: out_of_order: an arrival below the last one on its connection (duplicates included).
STATS = {"received": 0, "distinct": 0, "dups": 0, "out_of_order": 0, "highest": -1}
#: In the "stats" event in ack mode only. first_out_of_order: a number arriving for the first
#: time below the highest first arrival so far; acked: ids acknowledged; ack_messages: how many
#: acknowledgement messages carried them.
ACK_STATS = {"first_out_of_order": 0, "acked": 0, "ack_messages": 0}
ACK_EVERY = 0.01  # seconds between acknowledgement batches
ACK_BATCH = 100  # ids that make a batch go at once
SEEN = bytearray()
LAST: dict[int, int] = {}  # the last number seen on each connection
CLIENTS: dict[int, object] = {}
STREAMS: list = []  # background stream tasks (kept referenced until they end)
STREAM_TICK = 0.005
_next_id = 0


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def process_request(connection, request):
    if MODE["handshake_delay"]:
        await asyncio.sleep(MODE["handshake_delay"])
    if MODE["reject"]:
        emit(ev="rejected", status=MODE["reject"], headers=dict(request.headers.raw_items()))
        status = MODE["reject"]
        headers = Headers([("Content-Length", "0")])
        if MODE["retry_after"] is not None:
            headers["Retry-After"] = MODE["retry_after"]
        return Response(status, "Rejected", headers, b"")
    return None


def select_subprotocol(connection, offered):
    choice = MODE["subprotocol"]
    if choice == "first":
        return offered[0] if offered else None
    return choice  # a name, offered or not (a server that breaks RFC 6455 4.2.2), or None


class Acker:
    """One connection's acknowledgements: ids of recorded messages, sent back in batches."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.pending: list = []
        self.task = asyncio.ensure_future(self._every())

    def note(self, message, parsed=None) -> None:
        """Called after ``message`` was recorded: remember its id, if it has one."""
        if not MODE["ack"] or not isinstance(message, str) or not message.startswith("{"):
            return
        if parsed is None:
            try:
                parsed = json.loads(message)
            except ValueError:
                return
        if isinstance(parsed, dict) and MODE["ack_key"] in parsed and not MODE["ack_drop"]:
            self.pending.append(parsed[MODE["ack_key"]])

    async def flush(self) -> None:
        if not self.pending:
            return
        ids, self.pending = self.pending, []
        if self.ws.protocol.state is not State.OPEN:
            # Closing: these go unacknowledged (the client sends them again). Never await a
            # send now: websockets would wait for the close to finish, and the handler, which
            # must read on to reach the client's close frame, would stall until close_timeout.
            return
        try:
            await self.ws.send(json.dumps({"ack": ids[0] if len(ids) == 1 else ids}, separators=(",", ":")))
        except ConnectionClosed:
            return  # closing: these go unacknowledged (the client sends them again); keep reading
        ACK_STATS["acked"] += len(ids)
        ACK_STATS["ack_messages"] += 1

    async def _every(self) -> None:
        try:
            while True:
                await asyncio.sleep(ACK_EVERY)
                await self.flush()
        except Exception as exc:  # never expected: report it
            emit(ev="error", error=f"acknowledging: {exc!r}")

    def close(self) -> None:
        self.task.cancel()


async def handler(ws):
    global _next_id
    _next_id += 1
    cid = _next_id
    CLIENTS[cid] = ws
    emit(ev="connect", id=cid, path=ws.request.path, headers=dict(ws.request.headers.raw_items()),
         subprotocol=ws.subprotocol)
    acker = Acker(ws)
    try:
        if MODE["close_on_open"]:
            await ws.close(MODE["close_on_open"], "closing at once")
        async for message in ws:
            if MODE["discard"]:
                continue
            if MODE["count"]:
                acker.note(message, count(message, cid))
                if len(acker.pending) >= ACK_BATCH:
                    await acker.flush()
                continue
            if isinstance(message, str):
                if MODE["stamp"]:
                    emit(ev="msg", id=cid, text=message, at=time.monotonic())
                elif not MODE["quiet"]:
                    emit(ev="msg", id=cid, text=message)
                else:
                    emit(ev="msg", id=cid, n=len(message))
            else:
                emit(ev="msg", id=cid, bin=message.hex() if len(message) <= 64 else None, size=len(message),
                     digest=hashlib.sha256(message).hexdigest())
            acker.note(message)  # recorded above (written and flushed): now it may be acknowledged
            if len(acker.pending) >= ACK_BATCH:
                await acker.flush()
            if MODE["echo"]:
                await ws.send(message)
    except Exception as exc:  # report, never crash the server
        emit(ev="error", id=cid, error=repr(exc))
    finally:
        acker.close()
        CLIENTS.pop(cid, None)
        rcvd, sent = ws.protocol.close_rcvd, ws.protocol.close_sent
        emit(ev="close", id=cid, code=rcvd.code if rcvd else None, reason=rcvd.reason if rcvd else None,
             sent=sent.code if sent else None)


def count(message, cid: int):
    """Count mode: numbered messages "n:<int>" or JSON objects {"n": <int>, ...} are tallied,
    not printed (for soaks).

    Order is checked per connection (out_of_order): after a reconnect the old connection's
    handler may still be draining its buffer while the new one already counts, so arrival
    order across connections says nothing about the order the client sent in. With
    acknowledgements every reconnection resends from the oldest unacknowledged message, so
    first arrivals must be in order across connections too (first_out_of_order)."""
    global SEEN
    STATS["received"] += 1
    parsed = json.loads(message) if message[0] == "{" else None
    number = parsed["n"] if parsed is not None else int(message[2:])
    if number >= len(SEEN) * 8:
        SEEN += bytes(max(number // 8 + 1 - len(SEEN), len(SEEN)))
    byte, bit = divmod(number, 8)
    if SEEN[byte] >> bit & 1:
        STATS["dups"] += 1
    else:
        SEEN[byte] |= 1 << bit
        STATS["distinct"] += 1
        if number < STATS["highest"]:
            ACK_STATS["first_out_of_order"] += 1
    if number < LAST.get(cid, -1):
        STATS["out_of_order"] += 1
    LAST[cid] = number
    STATS["highest"] = max(STATS["highest"], number)
    return parsed


async def run_command(cmd: dict) -> None:
    name = cmd["cmd"]
    clients = list(CLIENTS.values())
    if name == "push":
        start = cmd.get("start", 0)
        for ws in clients:
            for i in range(start, start + cmd["n"]):
                await ws.send(f"push-{i}")
    elif name == "stream":
        STREAMS.append(asyncio.ensure_future(stream(clients, cmd["rate"], cmd["seconds"], cmd.get("size", 0))))
    elif name == "send":
        data = cmd["text"] if "text" in cmd else bytes.fromhex(cmd["hex"])
        for ws in clients:
            await ws.send(data)
    elif name == "close":
        for ws in clients:
            await ws.close(cmd.get("code", 1000), cmd.get("reason", ""))
    elif name == "raw":
        for ws in clients:
            ws.transport.write(bytes.fromhex(cmd["hex"]))
    elif name == "ping_flood":
        for ws in clients:
            for i in range(cmd.get("n", 500)):
                await ws.ping(str(i))
                if i % 10 == 0:
                    await asyncio.sleep(0)
    elif name == "ping_wait":
        for ws in clients:
            try:
                waiter = await ws.ping()
                latency = await asyncio.wait_for(waiter, cmd.get("timeout", 5))
                emit(ev="pong", id=next(k for k, v in CLIENTS.items() if v is ws), latency=latency)
            except asyncio.TimeoutError:
                emit(ev="pong_timeout")
    elif name == "abort":
        for ws in clients:
            ws.transport.abort()
    elif name == "mode":
        MODE.update({k: v for k, v in cmd.items() if k != "cmd"})
    elif name == "stats":
        emit(ev="stats", **STATS, **(ACK_STATS if MODE["ack"] else {}))
    elif name == "exit":
        raise SystemExit(0)
    emit(ev="done", cmd=name)


async def stream(clients: list, rate: float, seconds: float, size: int) -> None:
    """Numbered messages at ``rate`` per second for ``seconds``, paced every STREAM_TICK."""
    loop = asyncio.get_running_loop()
    sent, start = 0, loop.time()
    try:
        while (now := loop.time()) < start + seconds:
            due = int((now - start) * rate)
            while sent < due:
                message = f"push-{sent}-{time.time():.6f}-".ljust(size, "x")  # numbered, timestamped
                for ws in clients:
                    await ws.send(message)
                sent += 1
            await asyncio.sleep(STREAM_TICK)
        emit(ev="streamed", sent=sent)
    except Exception as exc:
        emit(ev="streamed", sent=sent, error=repr(exc))


async def read_commands() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            raise SystemExit(0)  # the test went away: so do we
        if line.strip():
            await run_command(json.loads(line))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--ping-interval", type=float, default=None)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--ack", action="store_true", help="acknowledge JSON messages with an id (ack mode)")
    parser.add_argument("--compression", action="store_true", help="agree to permessage-deflate (websockets' defaults)")
    args = parser.parse_args()
    MODE["ack"] = args.ack
    tls = None
    if args.certfile:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.certfile, args.keyfile)
    async with serve(handler, "127.0.0.1", args.port, process_request=process_request,
                     compression="deflate" if args.compression else None,
                     select_subprotocol=select_subprotocol,
                     ping_interval=args.ping_interval, ping_timeout=None, max_size=64 * 2**20, ssl=tls) as server:
        emit(ev="listening", port=server.sockets[0].getsockname()[1])
        try:
            await read_commands()
        except SystemExit:
            pass


if __name__ == "__main__":
    asyncio.run(main())
