"""The middle tier of the end-to-end chain: a thread-per-connection Python server
that calls a Go backend (tests/programs/goserver) while serving.

GET /chain/{id}   GET http://$BACKEND/users/{id} from the thread serving the
                  request; 200 with the backend's body, 502 if the call failed
                  or did not answer 200.
GET /error/{id}   GET http://$BACKEND/error (goserver answers 500); 500 with
                  the backend's body, 502 if the call failed. A failing call on
                  both hops, for the service graph's failure counts.
GET /leaf/{x}     200 "leaf {x}", no backend call.
anything else     404

Environment:
  BACKEND=host:port  the Go backend.
  KEEPALIVE=1        each serving thread keeps one persistent backend
                     connection (http.client.HTTPConnection) for all the
                     requests it serves; otherwise every call has its own
                     connection, closed after the response.

It answers HTTP/1.1 with keep-alive. On stdout it prints "listening on HOST:PORT"
once it listens, then "accepted" for each incoming connection and "backend
connection" for each connection it opens to the backend, so tests can tell that
connections really were reused. Standard library only.
"""
import http.client
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BACKEND = os.environ.get("BACKEND", "127.0.0.1:1")
KEEPALIVE = os.environ.get("KEEPALIVE") == "1"

_local = threading.local()
_stdout_lock = threading.Lock()


def note(line):
    with _stdout_lock:
        print(line, flush=True)


class BackendConnection(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        note("backend connection")


def backend_get(path):
    """GET path from the backend: (status, body). Raises OSError or
    http.client.HTTPException when the call fails; never retries (a retry would
    be a second client span)."""
    if KEEPALIVE:
        conn = getattr(_local, "conn", None)
        if conn is None:
            host, port = BACKEND.rsplit(":", 1)
            conn = _local.conn = BackendConnection(host, int(port), timeout=10)
    else:
        host, port = BACKEND.rsplit(":", 1)
        conn = BackendConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
    except BaseException:
        conn.close()
        _local.conn = None
        raise
    if not KEEPALIVE or resp.will_close:
        conn.close()
        _local.conn = None
    return resp.status, body


def one_segment(path, prefix):
    """The rest of path after prefix, if it is one non-empty segment."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix):]
    return rest if rest and "/" not in rest else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        note("accepted")

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def call(self, path, ok_status, answer_status):
        try:
            status, body = backend_get(path)
        except (OSError, http.client.HTTPException) as e:
            self.reply(502, f"backend failed: {e!r}\n")
            return
        if status != ok_status:
            self.reply(502, f"backend answered {status}\n")
            return
        self.reply(answer_status, body)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        chain = one_segment(path, "/chain/")
        error = one_segment(path, "/error/")
        leaf = one_segment(path, "/leaf/")
        if chain is not None:
            self.call(f"/users/{chain}", 200, 200)
        elif error is not None:
            self.call("/error", 500, 500)
        elif leaf is not None:
            self.reply(200, f"leaf {leaf}\n")
        else:
            self.reply(404, "not found\n")


class Server(ThreadingHTTPServer):
    # The default backlog (5) drops SYNs under a burst of new connections, and a
    # dropped SYN costs a 1 s retransmission.
    request_queue_size = 128
    daemon_threads = True


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = Server(("127.0.0.1", port), Handler)
    note(f"listening on 127.0.0.1:{srv.server_address[1]}")
    srv.serve_forever()


if __name__ == "__main__":
    main()
