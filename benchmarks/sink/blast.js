// Measures the server's own capacity: a Node client sends N messages of S bytes to
// /sink and prints "<seconds>" once the server confirms it received them all.
const WebSocket = require("ws");
const [url, n, size] = [process.argv[2], parseInt(process.argv[3], 10), parseInt(process.argv[4], 10)];
const ws = new WebSocket(`${url}/sink?expect=${n}`, { perMessageDeflate: false });
const payload = Buffer.alloc(size, 120);
ws.on("open", () => {
  const start = process.hrtime.bigint();
  ws.on("message", () => {
    console.log(Number(process.hrtime.bigint() - start) / 1e9);
    ws.close();
  });
  let sent = 0;
  const pump = () => {
    while (sent < n) {
      ws.send(payload);
      sent += 1;
      if (ws.bufferedAmount > 4 * 1024 * 1024) return setImmediate(pump);
    }
  };
  pump();
});
