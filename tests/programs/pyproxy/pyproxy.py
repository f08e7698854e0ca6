"""A thread-per-request Python server that calls a backend while serving.

GET /call?n=N    makes N sequential GET requests to $BACKEND$BACKEND_PATH (default
                 path /hello.txt; each on a fresh
                 connection, from the thread serving the request) and answers 200
                 with the backend statuses; 502 if a call failed.
GET /            200 "ok"

Prints "listening on HOST:PORT" once it listens. Standard library only.
"""
import http.client
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND = os.environ.get("BACKEND", "127.0.0.1:1")
BACKEND_PATH = os.environ.get("BACKEND_PATH", "/hello.txt")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/call":
            n = int(urllib.parse.parse_qs(url.query).get("n", ["1"])[0])
            statuses = []
            try:
                for i in range(n):
                    host, port = BACKEND.rsplit(":", 1)
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                    conn.request("GET", f"{BACKEND_PATH}?call={i}")
                    resp = conn.getresponse()
                    resp.read()
                    statuses.append(str(resp.status))
                    conn.close()
            except OSError as e:
                self.reply(502, f"backend failed: {e}")
                return
            self.reply(200, ",".join(statuses))
        else:
            self.reply(200, "ok")


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
