# A local Python server for the loopback tests (integration and e2e), like loopserver
# (Go): listens on ADDR port 0, prints "listening HOST:PORT" and answers
# /env?k=K (a variable), /get?url=U (the body of a GET of U), / (a greeting).
import http.server, os, socket, sys, urllib.parse, urllib.request

class S(http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        try:
            if u.path == "/env":
                b = os.environ.get(q["k"][0], "").encode()
            elif u.path == "/get":
                b = urllib.request.urlopen(q["url"][0], timeout=10).read()
            else:
                b = b"hello from loopserver"
            self.send_response(200)
        except Exception as e:
            b = str(e).encode()
            self.send_response(502)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def log_message(self, *a):
        pass

s = S((sys.argv[1], 0), H)
host, port = s.server_address[0], s.server_address[1]
print("listening", ("[%s]" % host if ":" in host else host) + ":%d" % port, flush=True)
s.serve_forever()
