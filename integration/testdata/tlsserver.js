// A local app for the HTTPS tests: HTTPS on PORT with CERT and KEY (PEM
// files), HTTP/2 and HTTP/1.1 by ALPN, answering BODY to every request and
// printing "GOT <path> <httpVersion> <servername>" for each.
const http2 = require("http2");
const fs = require("fs");

const [port, body, cert, key] = [Number(process.argv[2]), process.argv[3], process.argv[4], process.argv[5]];
const server = http2.createSecureServer(
  { cert: fs.readFileSync(cert), key: fs.readFileSync(key), allowHTTP1: true },
  (req, res) => {
    console.log("GOT", req.url, req.httpVersion, req.socket.servername || "-");
    let n = 0;
    req.on("data", (d) => (n += d.length));
    req.on("end", () => {
      res.setHeader("x-request-bytes", String(n));
      res.end(body);
    });
  },
);
server.listen(port, "0.0.0.0", () => console.log("listening"));
