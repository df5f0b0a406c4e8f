# Python twin of testdata/bulk (for the preload engine, which a static Go
# program does not load): sends BYTES to HOST:PORT, half-closes, waits for
# the sink to confirm it read everything, and prints the rate in MB/s.
import socket, sys, time

host, port, n = sys.argv[1].rsplit(":", 1)[0], int(sys.argv[1].rsplit(":", 1)[1]), int(sys.argv[2])
buf = b"\0" * (256 << 10)
t0 = time.perf_counter()
s = socket.create_connection((host, port))
sent = 0
while sent < n:
    chunk = buf if n - sent >= len(buf) else buf[: n - sent]
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
ack = b""
while True:
    d = s.recv(64)
    if not d:
        break
    ack += d
if ack.decode() != str(n):
    sys.exit("sink confirmed %r" % ack)
print("%.1f" % (n / (time.perf_counter() - t0) / 1e6))
