# A local app for the reconnection tests: on PORT, GET /out answers what
# URL (default http://svc.cluster.test:8080/) answers (DNS and an outgoing
# connection through the session); any other path answers BODY.
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer

port, body = int(sys.argv[1]), sys.argv[2].encode()
url = sys.argv[3] if len(sys.argv) > 3 else "http://svc.cluster.test:8080/"

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        out = body
        if self.path == "/out":
            try:
                out = urllib.request.urlopen(url, timeout=5).read()
            except Exception as e:
                out = ("error: %s" % e).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass

print("listening", flush=True)
HTTPServer(("0.0.0.0", port), H).serve_forever()
