// A local app for the HTTP/2 tests: cleartext HTTP/2 (h2c, prior
// knowledge) on PORT, answering BODY to every request and printing
// "GOT <path> <httpVersion>" for each.
const http2 = require("http2");

const port = Number(process.argv[2]);
const body = process.argv[3];
const server = http2.createServer((req, res) => {
  console.log("GOT", req.url, req.httpVersion);
  let n = 0;
  req.on("data", (d) => (n += d.length));
  req.on("end", () => {
    res.setHeader("x-request-bytes", String(n));
    res.end(body);
  });
});
server.listen(port, "0.0.0.0", () => console.log("listening"));
