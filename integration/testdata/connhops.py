# Prints the median time (µs) of N sequential connects to HOST:PORT made
# the way the preload library makes them through mirrord (the socket goes
# with a request to the proxy's unix socket SOCK), against connhops: what
# testdata/connlat.py measures under mirrord, with nothing but its hops.
import socket, sys, time

sock, host, port, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if sock.startswith("@"):
    sock = "\0" + sock[1:]
ts = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)  # as socket.create_connection: non-blocking, then poll
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.connect(sock)
    socket.send_fds(u, [("C\ttcp\t%s\t%s\n" % (host, port)).encode()], [s.fileno()])
    reply = u.recv(64)
    u.close()
    if reply != b"Y\n":
        sys.exit("connhops answered %r" % reply)
    ts.append(time.perf_counter() - t0)
    s.close()
ts.sort()
print("%.1f" % (ts[len(ts) // 2] * 1e6))
