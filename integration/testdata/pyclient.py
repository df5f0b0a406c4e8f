# The same checks as goclient, from Python (a dynamic binary using libc).
import os, socket, sys

host = sys.argv[1]
infos = socket.getaddrinfo(host, 8080, socket.AF_INET, socket.SOCK_STREAM)
addr = infos[0][4][0]
print("dns", addr)
s = socket.create_connection((addr, 8080), timeout=5)
s.sendall(("GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host).encode())
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print("tcp", data.split(b"\r\n\r\n", 1)[1].decode())
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping", (addr, 9000))
print("udp", u.recvfrom(100)[0].decode())
print("env", os.environ.get("SECRET_TOKEN", ""))
