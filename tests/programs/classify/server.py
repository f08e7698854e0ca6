"""One traced process speaking four protocols on four ports (argv: http tls resp random
certfile keyfile): HTTP/1 (http.server), TLS (an ssl echo), Redis RESP (PING -> PONG)
and random bytes (echoes as many random bytes as it read). Prints "ready" when listening."""
import http.server, os, socket, ssl, sys, threading

http_port, tls_port, resp_port, rnd_port = (int(a) for a in sys.argv[1:5])
cert, key = sys.argv[5], sys.argv[6]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def listener(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def serve(sock, handle):
    def loop():
        while True:
            c, _ = sock.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)


def tls(c):
    try:
        with ctx.wrap_socket(c, server_side=True) as t:
            while data := t.recv(65536):
                t.sendall(data)
    except (OSError, ssl.SSLError):
        pass


def resp(c):
    with c:
        while data := c.recv(65536):
            c.sendall(b"+PONG\r\n" * data.count(b"PING"))


def rnd(c):
    with c:
        while data := c.recv(65536):
            c.sendall(os.urandom(len(data)))


serve(listener(tls_port), tls)
serve(listener(resp_port), resp)
serve(listener(rnd_port), rnd)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
print("ready", flush=True)
srv.serve_forever()
