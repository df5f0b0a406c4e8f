# Prints the median time (µs) of N sequential TCP connects to HOST:PORT.
import socket, sys, time

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
addr = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
ts = []
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((addr, port), timeout=5)
    ts.append(time.perf_counter() - t0)
    s.close()
ts.sort()
print("%.1f" % (ts[len(ts) // 2] * 1e6))
