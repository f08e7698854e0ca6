// node_h2.js: node's http2 module in cleartext (prior knowledge), a tracing target for
// the HTTP/2 end-to-end test.
//
//   node node_h2.js server LOG   listens on 127.0.0.1:0, prints "listening on ADDR",
//                                appends one line per finished stream to LOG:
//                                "METHOD PATH PROTO STATUS REQUEST_BODY_BYTES RESPONSE_BODY_BYTES"
//                                /X/CODE/SIZE (X any letter) answers CODE with SIZE
//                                body bytes (after reading the whole request body)
//   node node_h2.js client ADDR SEED N GO MAX X  waits for the file GO to exist, then
//                                sends N seeded requests on one session, up to 4 at a
//                                time, bodies of at most MAX bytes each way, paths
//                                under /X/; prints the same line per response, then
//                                "done", and stays up until killed
'use strict';
const http2 = require('http2');
const fs = require('fs');

const [mode, ...args] = process.argv.slice(2);

function server(logPath) {
  const log = fs.openSync(logPath, 'a');
  const srv = http2.createServer();
  srv.on('stream', (stream, headers) => {
    const method = headers[':method'];
    const path = headers[':path'];
    let got = 0;
    stream.on('data', (d) => { got += d.length; });
    stream.on('end', () => {
      const m = /^\/[a-z]\/(\d+)\/(\d+)$/.exec(path);
      let code = 404;
      let size = 0;
      if (m) {
        const c = Number(m[1]);
        if (c >= 200 && c < 600) code = c;
        size = Number(m[2]);
      }
      if (method === 'HEAD' || code === 204 || code === 304) size = 0;
      stream.respond({ ':status': code, 'content-type': 'text/plain' }, { endStream: size === 0 });
      if (size > 0) stream.end(Buffer.alloc(size, 'x'));
      stream.on('close', () => {
        fs.writeSync(log, `${method} ${path} HTTP/2.0 ${code} ${got} ${size}\n`);
      });
    });
  });
  srv.listen(0, '127.0.0.1', () => {
    const a = srv.address();
    process.stdout.write(`listening on ${a.address}:${a.port}\n`);
  });
}

// splitmix-like seeded generator (deterministic per seed).
function rng(seed) {
  let s = BigInt.asUintN(64, BigInt(seed));
  return (n) => {
    s = BigInt.asUintN(64, s + 0x9e3779b97f4a7c15n);
    let z = s;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    z = z ^ (z >> 31n);
    return Number(z % BigInt(n));
  };
}

function client(addr, seed, n, goFile, max, prefix) {
  const wait = () => {
    if (!fs.existsSync(goFile)) return setTimeout(wait, 20);
    run();
  };
  const below = rng(seed);
  let session;
  const codes = [200, 200, 201, 404, 500];
  let sent = 0;
  let done = 0;
  const lines = [];
  const one = () => {
    if (sent >= n) return;
    sent++;
    const code = codes[below(codes.length)];
    const size = below(3) * below(max);
    const post = below(3) === 0;
    const body = post ? Buffer.alloc(below(max), 'y') : null;
    const path = `/${prefix}/${code}/${size}`;
    const req = session.request({ ':method': post ? 'POST' : 'GET', ':path': path }, { endStream: !post });
    let got = 0;
    let status = 0;
    req.on('response', (h) => { status = h[':status']; });
    req.on('data', (d) => { got += d.length; });
    req.on('end', () => {
      lines.push(`${post ? 'POST' : 'GET'} ${path} HTTP/2.0 ${status} ${post ? body.length : 0} ${got}`);
      done++;
      if (done === n) {
        process.stdout.write(lines.join('\n') + '\ndone\n');
        session.close();
        setInterval(() => {}, 1 << 30);
        return;
      }
      one();
    });
    if (post) req.end(body);
  };
  const run = () => {
    // Connected once traced: a connection older than the agent is not followed.
    session = http2.connect(`http://${addr}`);
    session.on('error', (e) => { console.error(e); process.exit(1); });
    for (let i = 0; i < 4; i++) one();
  };
  wait();
}

if (mode === 'server') server(args[0]);
else if (mode === 'client') client(args[0], args[1], Number(args[2]), args[3], Number(args[4]), args[5]);
else { console.error('usage: node_h2.js server LOG | client ADDR SEED N GOFILE MAX X'); process.exit(2); }
