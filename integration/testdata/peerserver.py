# A local app for the client-address tests: blocking accept loops on
# 0.0.0.0:PORT4 (an IPv4 socket, on the main thread) and [::]:PORT6 (a
# dual-stack IPv6 socket, on a thread). For each connection it prints
# "PEER <py4|py6> <address accept gave> <getpeername>", reads the request
# and answers "local". SIGUSR1 (whose handler raises) ends the main
# thread's accept: it prints "interrupted" and exits. It also exits when
# its parent does.
import os, signal, socket, sys, threading, time

port4, port6 = int(sys.argv[1]), int(sys.argv[2])

def fmt(a):
    return "[%s]:%d" % (a[0], a[1]) if len(a) == 4 else "%s:%d" % a

def serve(s, name):
    while True:
        c, addr = s.accept()
        print("PEER", name, fmt(addr), fmt(c.getpeername()), flush=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nlocal")
        c.close()

s4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s4.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s4.bind(("0.0.0.0", port4))
s4.listen(16)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s6.bind(("::", port6))
s6.listen(16)
threading.Thread(target=serve, args=(s6, "py6"), daemon=True).start()

def orphaned(ppid=os.getppid()):
    while os.getppid() == ppid:
        time.sleep(0.2)
    os._exit(0)

threading.Thread(target=orphaned, daemon=True).start()

class Interrupted(Exception):
    pass

def interrupt(*_):
    raise Interrupted()

signal.signal(signal.SIGUSR1, interrupt)
print("pid", os.getpid(), flush=True)
try:
    serve(s4, "py4")
except Interrupted:
    print("interrupted", flush=True)
