"""A threaded HTTPS server (Python's ssl over the system's libssl) that writes its own
access log: one line per request, "METHOD PATH STATUS BODY_BYTES", flushed at once.

usage: server.py PORT CERT KEY LOG
"""
import http.server
import ssl
import sys

port, cert, key, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
log = open(log_path, "a", buffering=1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log.write("%s %s %d %d\n" % (self.command, self.path, status, len(body)))

    def do_GET(self):
        if self.path.startswith("/missing"):
            self.answer(404, b"no such thing\n")
        else:
            self.answer(200, b"x" * (len(self.path) * 37))

    do_HEAD = do_GET

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        self.answer(201, b"got %d\n" % len(data))

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
