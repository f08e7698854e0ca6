"""HTTPS client: a seeded mix of GET/HEAD/POST (404s included) over keep-alive and fresh
connections, TLS 1.2 and 1.3. Prints one line per exchange: "METHOD PATH STATUS".

usage: client.py PORT SEED N [GO_FILE]

With GO_FILE, the client prints "ready" once its libssl is loaded and starts only when
that file exists (so that an agent can attach to it first).
"""
import http.client
import os
import random
import ssl
import sys
import time

port, seed, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
if len(sys.argv) > 4:
    print("ready", flush=True)
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.02)


def context(version):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


done = 0
while done < n:
    version = rng.choice([ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context(version), timeout=10)
    for _ in range(min(n - done, rng.choice([1, 1, 3, 8]))):
        kind = rng.random()
        path = "/tls/%d" % done
        if kind < 0.15:
            method, path, body = "GET", "/missing/%d" % done, None
        elif kind < 0.3:
            method, body = "HEAD", None
        elif kind < 0.55:
            method, body = "POST", b"p" * rng.choice([1, 100, 5000, 70000])
        else:
            method, body = "GET", None
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        resp.read()
        print(method, path, resp.status, flush=True)
        done += 1
    conn.close()
