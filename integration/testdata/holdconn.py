# Holds one TCP connection to HOST PORT open and says what ends it:
# "held" once connected, then "ended: reset" (ECONNRESET), "ended: eof" or
# "ended: <error>".
import socket, sys

s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.settimeout(None)
print("held", flush=True)
try:
    data = s.recv(1)
    print("ended: eof" if not data else "ended: data", flush=True)
except ConnectionResetError:
    print("ended: reset", flush=True)
except OSError as e:
    print("ended: %s" % e, flush=True)
