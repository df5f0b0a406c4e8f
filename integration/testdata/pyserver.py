# A local app for the incoming-traffic tests: serves BODY on PORT and
# prints each request's user agent ("UA ...") and path ("GOT ...", and
# "body N" for a POST's body length).
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, body = int(sys.argv[1]), sys.argv[2].encode()

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        print("UA", self.headers.get("User-Agent", "-"), flush=True)
        print("GOT", self.path, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        got = self.rfile.read(n)
        print("GOT", self.path, "body", len(got), flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

print("listening", flush=True)
HTTPServer(("0.0.0.0", port), H).serve_forever()
