# A local app for the WebSocket tests: on PORT, a WebSocket upgrade starts
# an echo that answers each message with PREFIX + message; any other GET
# gets PREFIX as its body. Prints "GOT <path>" per request and "WS <path>"
# per WebSocket. Hand-written (RFC 6455, unfragmented frames) so that it
# needs nothing beyond the standard library.
import base64
import hashlib
import struct
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, prefix = int(sys.argv[1]), sys.argv[2].encode()
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_frame(r):
    head = r.read(2)
    if len(head) < 2:
        return None, None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", r.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", r.read(8))[0]
    mask = r.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = bytearray(r.read(n))
    for i in range(len(data)):
        data[i] ^= mask[i % 4]
    return opcode, bytes(data)


def write_frame(w, opcode, data):
    n = len(data)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    w.write(head + data)
    w.flush()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        print("GOT", self.path, flush=True)
        if self.headers.get("Upgrade", "").lower() != "websocket":
            self.send_response(200)
            self.send_header("Content-Length", str(len(prefix)))
            self.end_headers()
            self.wfile.write(prefix)
            return
        key = self.headers["Sec-WebSocket-Key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        print("WS", self.path, flush=True)
        self.close_connection = True
        while True:
            opcode, data = read_frame(self.rfile)
            if opcode is None or opcode == 8:  # EOF or close
                if opcode == 8:
                    write_frame(self.wfile, 8, data[:2])
                return
            if opcode == 9:  # ping
                write_frame(self.wfile, 10, data)
            elif opcode in (1, 2):
                write_frame(self.wfile, opcode, prefix + data)

    def log_message(self, *a):
        pass


print("listening", flush=True)
ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever()
