# Forks N children that each resolve and fetch a remote service through
# the preload (no exec: the child runs on the parent's copy of the layer),
# and, with "exec", a fork-exec chain like gunicorn/uvicorn --reload
# workers: the child re-executes Python on a client script.
import os, socket, sys, time

host, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def fetch():
    addr = socket.getaddrinfo(host, 8080, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
    s = socket.create_connection((addr, 8080), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()

ok = 0
for i in range(n):
    pid = os.fork()
    if pid == 0:
        if mode == "exec":
            os.execv(sys.executable, [sys.executable, os.path.join(os.path.dirname(__file__), "pyclient.py"), host])
        try:
            os._exit(0 if fetch() else 1)
        except Exception:
            os._exit(2)
    deadline = time.time() + 20
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.time() > deadline:
            print("child", i, "hung")
            sys.exit(1)
        time.sleep(0.005)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        ok += 1
print("parent", fetch())
print("children ok", ok, "of", n)
