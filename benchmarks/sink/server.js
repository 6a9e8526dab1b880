// The benchmark server, on 127.0.0.1. One process, paths choose the workload:
//   /sink?expect=N       count messages; after the N-th, reply "done <messages> <bytes>"
//   /push?n=N&size=S     send N text messages of S bytes as fast as the socket takes them, then "end"
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
    let count = 0, bytes = 0;
    ws.on("message", (data) => {
      count += 1;
      bytes += data.length;
      if (count === expect) ws.send(`done ${count} ${bytes}`);
    });
  } else if (url.pathname === "/push") {
    const n = parseInt(url.searchParams.get("n"), 10);
    const payload = "x".repeat(parseInt(url.searchParams.get("size"), 10));
    let sent = 0;
    const pump = () => {
      while (sent < n) {
        ws.send(payload);
        sent += 1;
        if (ws.bufferedAmount > 4 * 1024 * 1024) return setImmediate(pump);
      }
      ws.send("end");
    };
    ws.on("message", () => pump());  // the client says "go" once its clock is running
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});

server.listen(port, "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
