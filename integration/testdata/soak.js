// The program of the soak test (TestSoak), run under mirrord exec:
//
//   node soak.js PORT FILE HOST
//
// It serves HTTP/1.1 on PORT, answering "local <x-req-id>" (the local app
// of a filtered steal), and every 100 ms resolves HOST, GETs
// http://HOST:8080/ on a new connection (the answer must be "hello from
// svc") and reads FILE (it must hold "pod: config\n"), counting what
// worked and what did not. Every 10 s, and on SIGTERM, it prints
// "soak {counts as JSON}".
const http = require("http");
const dns = require("dns");
const fs = require("fs");

const [port, file, host] = process.argv.slice(2);
const counts = { dns_ok: 0, dns_fail: 0, http_ok: 0, http_fail: 0, file_ok: 0, file_fail: 0, served: 0 };

http
  .createServer((req, res) => {
    counts.served++;
    const body = `local ${req.headers["x-req-id"] || ""}`;
    res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) });
    res.end(body);
  })
  .listen(Number(port), "0.0.0.0", () => console.log("listening"));

function tick() {
  dns.lookup(host, (err) => (err ? counts.dns_fail++ : counts.dns_ok++));
  http
    .get({ host, port: 8080, path: "/", agent: false, timeout: 10000 }, (res) => {
      let b = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (b += d));
      res.on("end", () => (b === "hello from svc" ? counts.http_ok++ : counts.http_fail++));
    })
    .on("error", () => counts.http_fail++);
  try {
    fs.readFileSync(file, "utf8") === "pod: config\n" ? counts.file_ok++ : counts.file_fail++;
  } catch (e) {
    counts.file_fail++;
  }
}

setInterval(tick, 100);
const report = () => console.log("soak " + JSON.stringify(counts));
setInterval(report, 10000);
process.on("SIGTERM", () => {
  report();
  process.exit(0);
});
