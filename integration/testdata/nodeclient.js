// The same checks as goclient, from Node.js (libuv: getaddrinfo in a
// thread pool, non-blocking connect, UDP through sendmsg/recvmsg).
const dgram = require("dgram");
const dns = require("dns");
const net = require("net");

const host = process.argv[2];
dns.lookup(host, { family: 4 }, (err, addr) => {
  if (err) throw err;
  console.log("dns", addr);
  const s = net.connect(8080, addr, () => s.write(`GET / HTTP/1.0\r\nHost: ${host}\r\n\r\n`));
  let data = "";
  s.on("data", (d) => (data += d));
  s.on("end", () => {
    console.log("tcp", data.split("\r\n\r\n")[1]);
    const u = dgram.createSocket("udp4");
    const timer = setTimeout(() => { console.log("udp timeout"); process.exit(1); }, 5000);
    u.on("message", (m) => {
      clearTimeout(timer);
      console.log("udp", m.toString());
      console.log("env", process.env.SECRET_TOKEN || "");
      u.close();
    });
    u.send("ping", 9000, addr);
  });
});
