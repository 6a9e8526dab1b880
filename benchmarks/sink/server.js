// The benchmark server, on 127.0.0.1. One process, paths choose the workload:
//   /sink?expect=N       count messages; after the N-th, reply "done <messages> <bytes> <busy> <wire bytes>
//                        <cpu us>" (<cpu us>: this process's CPU time, user + system, since the first message)
//   /sink?expect=N&ack=1 acknowledge: every message must be a JSON object with a string "id"; the server
//                        answers {"ack": [ids...]} in batches (every ACK_EVERY_MS or ACK_BATCH ids, whichever
//                        comes first; a resent id is acknowledged again) and counts each id once: after the
//                        N-th distinct id (its ack written first), "done <ids> <bytes> <busy> <duplicates>
//                        <invalid>" (<bytes> of first deliveries; <invalid>: messages without a string id)
//   /push?n=N&size=S     send N text messages of S bytes as fast as the socket takes them, then "" and
//                        "end <busy>"
// <busy> is the fraction of one core the server used meanwhile: near 1.0 would make it the bottleneck.
//   /echo                echo every message
//   /lag                 messages are JSON carrying "t", the sender's wall clock (time.time(), same
//                        machine) when it called send_message; record how long each took to get here.
//                        HTTP GET /lag answers {count, p50_ms, p99_ms, max_ms, unrecorded} for the
//                        messages since the previous GET /lag, and starts afresh.
// A second argument "deflate" agrees to permessage-deflate (ws' defaults: messages of 1 KiB and more are
// compressed); without it, compression is off.
// Prints "listening <port>" on stdout once ready. ws uses its native addons (bufferutil, utf-8-validate)
// for unmasking and UTF-8 checks, so the server is not what limits a fast client.
const http = require("http");
const { WebSocketServer } = require("ws");

const port = parseInt(process.argv[2] || "0", 10);
const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/lag") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(lag.report()));
  } else {
    res.writeHead(404);
    res.end();
  }
});
const wss = new WebSocketServer({ server, perMessageDeflate: process.argv[3] === "deflate",
                                  maxPayload: 64 * 1024 * 1024 });

wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/sink" && url.searchParams.get("ack")) {
    acking(ws, parseInt(url.searchParams.get("expect") || "0", 10));
  } else if (url.pathname === "/sink") {
    const expect = parseInt(url.searchParams.get("expect") || "0", 10);
    let count = 0, bytes = 0, cpu0 = null, t0 = null;
    ws.on("message", (data) => {
      if (count === 0) { cpu0 = process.cpuUsage(); t0 = process.hrtime.bigint(); }
      count += 1;
      bytes += data.length;
      // the last field: bytes read off the socket (frames as sent: compressed, with compression on)
      if (count === expect) {
        const cpu = process.cpuUsage(cpu0);
        ws.send(`done ${count} ${bytes} ${busy(cpu0, t0).toFixed(3)} ${req.socket.bytesRead} ${cpu.user + cpu.system}`);
      }
    });
  } else if (url.pathname === "/push") {
    const n = parseInt(url.searchParams.get("n"), 10);
    const payload = "x".repeat(parseInt(url.searchParams.get("size"), 10));
    let sent = 0, cpu0 = null, t0 = null;
    const pump = () => {
      while (sent < n) {
        ws.send(payload);
        sent += 1;
        if (ws.bufferedAmount > 4 * 1024 * 1024) return setImmediate(pump);
      }
      // "end" carries how busy this server was while it pushed (until the kernel took it all)
      ws.send("", () => ws.send(`end ${busy(cpu0, t0).toFixed(3)}`));
    };
    ws.on("message", () => {  // the client says "go" once its clock is running
      cpu0 = process.cpuUsage(); t0 = process.hrtime.bigint();
      pump();
    });
  } else if (url.pathname === "/lag") {
    ws.on("message", (data) => {
      const now = performance.timeOrigin + performance.now();  // wall clock in ms, sub-ms resolution
      lag.add(now - JSON.parse(data).t * 1000);
    });
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});

// The batches in which /sink?ack=1 acknowledges: whichever comes first.
const ACK_EVERY_MS = 10;
const ACK_BATCH = 100;

function acking(ws, expect) {
  const seen = new Set();
  let pending = [], timer = null, bytes = 0, duplicates = 0, invalid = 0, cpu0 = null, t0 = null, done = false;
  const flush = () => {
    if (timer !== null) { clearTimeout(timer); timer = null; }
    if (pending.length) { ws.send(JSON.stringify({ ack: pending })); pending = []; }
  };
  ws.on("message", (data, isBinary) => {
    if (cpu0 === null) { cpu0 = process.cpuUsage(); t0 = process.hrtime.bigint(); }
    let id;
    try { id = isBinary ? undefined : JSON.parse(data).id; } catch { id = undefined; }
    if (typeof id !== "string") { invalid += 1; return; }
    pending.push(id);
    if (seen.has(id)) duplicates += 1;
    else { seen.add(id); bytes += data.length; }
    if (pending.length >= ACK_BATCH) flush();
    else if (timer === null) timer = setTimeout(flush, ACK_EVERY_MS);
    if (!done && seen.size === expect) {
      done = true;
      flush();  // the last ids' ack goes out before "done"
      ws.send(`done ${seen.size} ${bytes} ${busy(cpu0, t0).toFixed(3)} ${duplicates} ${invalid}`);
    }
  });
  ws.on("close", () => { if (timer !== null) clearTimeout(timer); });
}

// Delivery lags in ms, in a fixed buffer: memory stays bounded however long the run.
const lag = {
  samples: new Float64Array(1 << 20),
  count: 0,
  unrecorded: 0,  // arrived after the buffer filled: counted, not in the percentiles
  add(ms) {
    if (this.count < this.samples.length) this.samples[this.count++] = ms;
    else this.unrecorded += 1;
  },
  report() {
    const sorted = this.samples.slice(0, this.count).sort();
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] : null);
    const out = { count: this.count, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1), unrecorded: this.unrecorded };
    this.count = 0;
    this.unrecorded = 0;
    return out;
  },
};

// Fraction of one core this process used since (cpu0, t0).
function busy(cpu0, t0) {
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - t0) / 1000;  // microseconds
  return (cpu.user + cpu.system) / wall;
}

server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
