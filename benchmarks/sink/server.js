// The benchmark server, on 127.0.0.1. One process, paths choose the workload:
//   /sink?expect=N       count messages; after the N-th, reply "done <messages> <bytes> <busy>"
//   /push?n=N&size=S     send N text messages of S bytes as fast as the socket takes them, then "" and
//                        "end <busy>"
// <busy> is the fraction of one core the server used meanwhile: near 1.0 would make it the bottleneck.
//   /echo                echo every message
// Prints "listening <port>" on stdout once ready.
const http = require("http");
const { WebSocketServer } = require("ws");

const port = parseInt(process.argv[2] || "0", 10);
const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });

wss.on("connection", (ws, req) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/sink") {
    const expect = parseInt(url.searchParams.get("expect") || "0", 10);
    let count = 0, bytes = 0, cpu0 = null, t0 = null;
    ws.on("message", (data) => {
      if (count === 0) { cpu0 = process.cpuUsage(); t0 = process.hrtime.bigint(); }
      count += 1;
      bytes += data.length;
      if (count === expect) ws.send(`done ${count} ${bytes} ${busy(cpu0, t0).toFixed(3)}`);
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
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});

// Fraction of one core this process used since (cpu0, t0).
function busy(cpu0, t0) {
  const cpu = process.cpuUsage(cpu0);
  const wall = Number(process.hrtime.bigint() - t0) / 1000;  // microseconds
  return (cpu.user + cpu.system) / wall;
}

server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
