// A local app for the incoming-traffic benchmark and tests: HTTP/1.1 with
// keep-alive on PORT, answering "NAME <x-req-id>" to every request, so
// that the client can tell which app answered which request, with the
// length of the request's body in x-request-bytes. An idle connection is
// closed after IDLE_MS (default 60000). /big is answered with 8 MiB.
const http = require("http");

const port = Number(process.argv[2]);
const name = process.argv[3];
const big = Buffer.alloc(8 << 20, "b");
const server = http.createServer((req, res) => {
  const body = req.url === "/big" ? big : `${name} ${req.headers["x-req-id"] || ""}`;
  let n = 0;
  req.on("data", (d) => (n += d.length));
  req.on("end", () => {
    res.writeHead(200, {
      "content-type": "text/plain",
      "content-length": Buffer.byteLength(body),
      "x-request-bytes": String(n),
    });
    res.end(body);
  });
});
server.keepAliveTimeout = Number(process.argv[4] || 60000);
server.listen(port, "0.0.0.0", () => console.log("listening"));
