//! A raw HTTP/1.x test client on `std::net::TcpStream`.
//!
//! The end-to-end tests compare the spans the agent exports with what was
//! really sent, so the client must control the wire exactly: which requests
//! share a keep-alive connection, which get a fresh one, which local port each
//! used, the exact `User-Agent`. A general-purpose HTTP client hides all of
//! that (pools, retries), hence this small one. It never retries: a request
//! sent twice would be a second span.
//!
//! [`workload`] builds a deterministic mix of requests for a kind of target
//! server, each with the status that server is known to answer, and
//! [`Plan::run`] executes it (sequential keep-alive batches, fresh
//! connections, and concurrent batches on threads).

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

/// How long one read or write may block before the request fails.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// HTTP version of a request line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// The value of `network.protocol.version`: "1.0" or "1.1".
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP/{}", self.as_str())
    }
}

/// One request to send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target as written on the request line: path and query.
    pub target: String,
    pub version: Version,
    /// Sent right after `Host`, so it sits early in the request.
    pub user_agent: String,
    /// Extra headers, sent after `User-Agent` in this order.
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// The status the server is known to answer, when the caller knows it.
    pub expect_status: Option<u16>,
}

impl Request {
    pub fn new(method: &str, target: &str) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            version: Version::Http11,
            user_agent: "periscope-e2e-client/1.0".to_string(),
            headers: Vec::new(),
            body: None,
            expect_status: None,
        }
    }

    pub fn get(target: &str) -> Request {
        Request::new("GET", target)
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_user_agent(mut self, user_agent: &str) -> Request {
        self.user_agent = user_agent.to_string();
        self
    }

    pub fn with_version(mut self, version: Version) -> Request {
        self.version = version;
        self
    }

    pub fn expect(mut self, status: u16) -> Request {
        self.expect_status = Some(status);
        self
    }

    /// The path part of the target (what `url.path` should be).
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }

    fn encode(&self, host: &SocketAddr, close: bool) -> Vec<u8> {
        let mut head = format!(
            "{} {} {}\r\nHost: {}\r\nUser-Agent: {}\r\n",
            self.method, self.target, self.version, host, self.user_agent
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close && self.version == Version::Http11 {
            head.push_str("Connection: close\r\n");
        }
        if let Some(body) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if let Some(body) = &self.body {
            bytes.extend_from_slice(body);
        }
        bytes
    }
}

/// The part of a request target before `?`.
pub fn path_of(target: &str) -> &str {
    target.split_once('?').map_or(target, |(path, _)| path)
}

/// What happened to one request.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: String,
    pub target: String,
    pub version: Version,
    pub user_agent: String,
    pub expect_status: Option<u16>,
    pub status: u16,
    /// Version on the response's status line ("1.0"/"1.1").
    pub response_version: String,
    pub body_len: usize,
    /// Local (client) port of the connection that carried the request.
    pub local_port: u16,
    /// Process-unique id of that connection, to tell which requests shared one.
    pub connection: u64,
    /// Wall clock right before the request was written.
    pub started: SystemTime,
    /// Wall clock right after the response was read completely.
    pub finished: SystemTime,
}

impl Exchange {
    pub fn path(&self) -> &str {
        path_of(&self.target)
    }
}

/// Whether the requests of a batch share one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnMode {
    /// One connection for the whole batch; a new one only when the server
    /// closes it (HTTP/1.0, `Connection: close`, close-delimited body).
    KeepAlive,
    /// A new connection for each request, sent with `Connection: close`.
    Fresh,
}

/// Requests sent in order by one thread.
#[derive(Clone, Debug)]
pub struct Batch {
    pub mode: ConnMode,
    pub requests: Vec<Request>,
}

/// A whole workload: sequential batches first, then concurrent batches,
/// each on its own thread, all started together.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub sequential: Vec<Batch>,
    pub concurrent: Vec<Batch>,
}

impl Plan {
    /// Number of requests in the plan.
    pub fn len(&self) -> usize {
        self.sequential
            .iter()
            .chain(&self.concurrent)
            .map(|b| b.requests.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends every request; panics (naming the request) on any I/O or
    /// protocol error.
    pub fn run(&self, addr: SocketAddr) -> Vec<Exchange> {
        let mut out = Vec::with_capacity(self.len());
        for batch in &self.sequential {
            out.extend(run_batch(addr, batch));
        }
        out.extend(run_concurrent(addr, self.concurrent.clone()));
        out
    }
}

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

struct Conn {
    reader: BufReader<TcpStream>,
    local_port: u16,
    id: u64,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let local_port = stream.local_addr()?.port();
        Ok(Conn {
            reader: BufReader::new(stream),
            local_port,
            id: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// Sends the batch's requests in order and reads each response completely.
pub fn run_batch(addr: SocketAddr, batch: &Batch) -> Vec<Exchange> {
    let mut out = Vec::with_capacity(batch.requests.len());
    let mut conn: Option<Conn> = None;
    for (i, req) in batch.requests.iter().enumerate() {
        let fresh = batch.mode == ConnMode::Fresh;
        let (ex, reusable) = send_one(addr, &mut conn, req, fresh).unwrap_or_else(|e| {
            panic!(
                "request {i} of a {:?} batch to {addr} failed: {} {} {} (user agent {:?}): {e}",
                batch.mode, req.method, req.target, req.version, req.user_agent
            )
        });
        out.push(ex);
        if let Some(c) = conn.take_if(|_| fresh || !reusable) {
            let _ = c.reader.get_ref().shutdown(Shutdown::Both);
        }
    }
    out
}

/// Runs each batch on its own thread (all at once) and gathers the results.
pub fn run_concurrent(addr: SocketAddr, batches: Vec<Batch>) -> Vec<Exchange> {
    let handles: Vec<_> = batches
        .into_iter()
        .map(|batch| thread::spawn(move || run_batch(addr, &batch)))
        .collect();
    let mut out = Vec::new();
    for h in handles {
        match h.join() {
            Ok(v) => out.extend(v),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
    out
}

/// Sends one request with the default settings on a fresh connection.
pub fn send(addr: SocketAddr, req: &Request) -> Exchange {
    let batch = Batch {
        mode: ConnMode::Fresh,
        requests: vec![req.clone()],
    };
    run_batch(addr, &batch).remove(0)
}

/// Sends `req` on a fresh connection (`Connection: close`) and returns the
/// status and the whole (de-chunked) body: for reading small documents such
/// as a Prometheus `/metrics` page. Panics on any I/O or protocol error.
pub fn fetch(addr: SocketAddr, req: &Request) -> (u16, Vec<u8>) {
    let attempt = || -> io::Result<(u16, Vec<u8>)> {
        let mut conn = Conn::open(addr)?;
        conn.reader.get_mut().write_all(&req.encode(&addr, true))?;
        let mut body = Vec::new();
        let resp = read_response_into(&mut conn.reader, req.method == "HEAD", &mut body)?;
        Ok((resp.status, body))
    };
    attempt().unwrap_or_else(|e| panic!("{} {} to {addr} failed: {e}", req.method, req.target))
}

/// Deals `requests` round-robin over `connections` batches (request `i` to
/// batch `i % connections`); batch `c` uses `mode(c)`. Empty batches are left
/// out.
pub fn spread(
    requests: Vec<Request>,
    connections: usize,
    mode: impl Fn(usize) -> ConnMode,
) -> Vec<Batch> {
    assert!(connections > 0, "spread over no connection");
    let mut batches: Vec<Batch> = (0..connections)
        .map(|c| Batch {
            mode: mode(c),
            requests: Vec::new(),
        })
        .collect();
    for (i, req) in requests.into_iter().enumerate() {
        batches[i % connections].requests.push(req);
    }
    batches.retain(|b| !b.requests.is_empty());
    batches
}

fn send_one(
    addr: SocketAddr,
    conn: &mut Option<Conn>,
    req: &Request,
    close: bool,
) -> io::Result<(Exchange, bool)> {
    if conn.is_none() {
        *conn = Some(Conn::open(addr)?);
    }
    let c = conn.as_mut().expect("connection just opened");
    let started = SystemTime::now();
    c.reader.get_mut().write_all(&req.encode(&addr, close))?;
    let resp = read_response(&mut c.reader, req.method == "HEAD")?;
    let finished = SystemTime::now();
    // HTTP/1.0 requests without an explicit keep-alive are not persistent,
    // whatever the server says.
    let reusable = resp.keep_alive && req.version == Version::Http11;
    Ok((
        Exchange {
            method: req.method.clone(),
            target: req.target.clone(),
            version: req.version,
            user_agent: req.user_agent.clone(),
            expect_status: req.expect_status,
            status: resp.status,
            response_version: resp.version,
            body_len: resp.body_len,
            local_port: c.local_port,
            connection: c.id,
            started,
            finished,
        },
        reusable,
    ))
}

/// A response as far as the client needs it.
#[derive(Debug)]
struct Response {
    status: u16,
    version: String,
    body_len: usize,
    keep_alive: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|e| invalid(format!("non-UTF-8 header line: {e}")))
}

/// Reads a response: status line, headers, and the body framed by
/// `Transfer-Encoding: chunked`, `Content-Length` or the connection's end.
fn read_response(r: &mut impl BufRead, head_request: bool) -> io::Result<Response> {
    read_response_into(r, head_request, &mut io::sink())
}

/// [`read_response`], writing the (de-chunked) body to `body`.
fn read_response_into(
    r: &mut impl BufRead,
    head_request: bool,
    body: &mut impl Write,
) -> io::Result<Response> {
    loop {
        let status_line = read_line(r)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts
            .next()
            .and_then(|v| v.strip_prefix("HTTP/"))
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?
            .to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;

        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut connection = String::new();
        loop {
            let line = read_line(r)?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = Some(
                        value
                            .parse()
                            .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                    )
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => connection = value.to_ascii_lowercase(),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue; // interim response (100 Continue): the real one follows
        }

        let mut keep_alive = if version == "1.0" {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };
        let body_len = if head_request || status == 204 || status == 304 {
            0
        } else if chunked {
            read_chunked(r, body)?
        } else if let Some(len) = content_length {
            io::copy(&mut r.by_ref().take(len as u64), body).and_then(|n| {
                if n as usize == len {
                    Ok(len)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("body ended after {n} of {len} bytes"),
                    ))
                }
            })?
        } else {
            keep_alive = false;
            io::copy(r, body)? as usize
        };
        return Ok(Response {
            status,
            version,
            body_len,
            keep_alive,
        });
    }
}

fn read_chunked(r: &mut impl BufRead, body: &mut impl Write) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(total);
        }
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk)?;
        body.write_all(&chunk)?;
        total += size;
        if !read_line(r)?.is_empty() {
            return Err(invalid("chunk not followed by CRLF".to_string()));
        }
    }
}

/// Kinds of target servers the workload generator knows the answers of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// `python3 -m http.server` over the directory made by the harness.
    PythonHttpServer,
    /// nginx with the harness's config (tests/programs/nginx/nginx.conf.in).
    Nginx,
    /// tests/programs/goserver.
    GoServer,
}

/// A small deterministic PRNG (xorshift64*), so workloads are reproducible
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
}

fn body(rng: &mut Rng) -> Vec<u8> {
    // Mostly small, sometimes larger than one captured payload prefix.
    let len = if rng.below(4) == 0 {
        rng.range(1500, 4000)
    } else {
        rng.range(1, 64)
    };
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// One request of the catalog of `kind`, with its known status.
fn pick(kind: TargetKind, rng: &mut Rng) -> Request {
    let k = rng.range(1, 999);
    match kind {
        TargetKind::PythonHttpServer => match rng.below(13) {
            0 | 1 => Request::get("/").expect(200),
            2 => Request::get("/hello.txt").expect(200),
            3 => Request::get(&format!("/hello.txt?v={k}")).expect(200),
            4 => Request::get("/data.bin").expect(200),
            5 => Request::get("/sub/").expect(200),
            6 => Request::get("/sub").expect(301),
            7 | 8 => Request::get(&format!("/missing-{k}.txt")).expect(404),
            9 => Request::new("HEAD", "/hello.txt").expect(200),
            10 => Request::new("HEAD", &format!("/nope-{k}")).expect(404),
            11 => Request::new("POST", "/upload")
                .with_body(body(rng))
                .expect(501),
            _ => match rng.below(3) {
                0 => Request::new("PUT", "/hello.txt")
                    .with_body(body(rng))
                    .expect(501),
                1 => Request::new("DELETE", "/hello.txt").expect(501),
                _ => Request::new("OPTIONS", "/").expect(501),
            },
        },
        TargetKind::Nginx => match rng.below(16) {
            0 | 1 => Request::get("/").expect(200),
            2 => Request::get("/ok").expect(200),
            3 => Request::new("POST", "/ok").with_body(body(rng)).expect(200),
            4 => Request::new("PUT", "/ok").with_body(body(rng)).expect(200),
            5 => Request::get("/created").expect(201),
            6 => Request::get("/redirect").expect(302),
            7 => Request::get("/error").expect(500),
            8 => Request::get("/unavailable").expect(503),
            9 => Request::get("/missing").expect(404),
            10 => Request::get(&format!("/nope-{k}")).expect(404),
            11 => Request::get("/static/page.html").expect(200),
            12 => Request::get(&format!("/static/page.html?v={k}")).expect(200),
            13 => Request::new("HEAD", "/static/page.html").expect(200),
            14 => Request::get("/static/small.txt").expect(200),
            _ => Request::new("POST", "/static/small.txt")
                .with_body(body(rng))
                .expect(405),
        },
        TargetKind::GoServer => match rng.below(18) {
            0 | 1 => Request::get("/").expect(200),
            2 => Request::new("HEAD", "/").expect(200),
            3 | 4 => Request::get(&format!("/users/{k}")).expect(200),
            5 => Request::new("HEAD", &format!("/users/{k}")).expect(200),
            6 => Request::new("DELETE", &format!("/users/{k}")).expect(404),
            7 => Request::get(&format!("/nope-{k}")).expect(404),
            8 => Request::get("/error").expect(500),
            9 => {
                let code = [201, 204, 302, 400, 503][rng.below(5)];
                Request::get(&format!("/status?code={code}")).expect(code)
            }
            10 | 11 => Request::new("POST", "/echo")
                .with_body(body(rng))
                .expect(200),
            12 => Request::new("PUT", "/echo")
                .with_body(body(rng))
                .expect(200),
            13 => Request::get("/echo").expect(405),
            14 => Request::new("PATCH", "/echo").expect(405),
            15 => Request::get("/stream").expect(200),
            16 => Request::get("/slow?ms=15").expect(200),
            _ => Request::get(&format!("/users/{k}?expand=1")).expect(200),
        },
    }
}

/// A deterministic mixed workload of exactly `n` requests for `kind`.
///
/// About a third go over sequential keep-alive connections (3–8 requests
/// each), a quarter over fresh sequential connections, the rest over four
/// concurrent threads (alternately keep-alive and fresh). Every request gets
/// a unique `User-Agent` (`{ua_prefix}/1.0 (r{i})`) so a span can be
/// matched to the exact request that caused it, and some carry extra
/// headers, one of them long enough to push the request past 1 KiB.
/// HTTP/1.0 requests are mixed in for Python (all on fresh connections, as
/// that server closes after each response anyway) and for Go; nginx answers
/// HTTP/1.0 requests with an HTTP/1.1 status line, so it only gets HTTP/1.1.
pub fn workload(kind: TargetKind, n: usize, seed: u64, ua_prefix: &str) -> Plan {
    let mut rng = Rng::new(seed ^ kind as u64);
    let mut requests: Vec<Request> = (0..n)
        .map(|i| {
            let mut req = pick(kind, &mut rng);
            req.user_agent = format!("{ua_prefix}/1.0 (r{i})");
            let http10 = match kind {
                TargetKind::PythonHttpServer => rng.below(2) == 0,
                TargetKind::GoServer => rng.below(8) == 0,
                TargetKind::Nginx => false,
            };
            if http10 {
                req.version = Version::Http10;
            }
            match rng.below(10) {
                0 => req = req.with_header("Accept", "*/*"),
                1 => req = req.with_header("X-Request-Id", &format!("{seed:x}-{i}")),
                2 => req = req.with_header("Cookie", &"c".repeat(1200)),
                _ => {}
            }
            req
        })
        .collect();

    let n_keepalive = n / 3;
    let n_fresh = n / 4;
    let mut rest = requests.split_off(n_keepalive);
    let concurrent_part = rest.split_off(n_fresh.min(rest.len()));
    let fresh_part = rest;

    let mut plan = Plan::default();
    let mut keepalive_part = requests.into_iter().peekable();
    while keepalive_part.peek().is_some() {
        let size = rng.range(3, 8);
        plan.sequential.push(Batch {
            mode: ConnMode::KeepAlive,
            requests: keepalive_part.by_ref().take(size).collect(),
        });
    }
    plan.sequential.push(Batch {
        mode: ConnMode::Fresh,
        requests: fresh_part,
    });
    let threads = 4;
    let mut concurrent: Vec<Batch> = (0..threads)
        .map(|t| Batch {
            mode: if t % 2 == 0 {
                ConnMode::KeepAlive
            } else {
                ConnMode::Fresh
            },
            requests: Vec::new(),
        })
        .collect();
    for (i, req) in concurrent_part.into_iter().enumerate() {
        concurrent[i % threads].requests.push(req);
    }
    plan.concurrent = concurrent
        .into_iter()
        .filter(|b| !b.requests.is_empty())
        .collect();
    plan.sequential.retain(|b| !b.requests.is_empty());
    assert_eq!(plan.len(), n);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn parse(raw: &str, head: bool) -> io::Result<Response> {
        read_response(&mut Cursor::new(raw.as_bytes().to_vec()), head)
    }

    #[test]
    fn reads_content_length_chunked_and_close_delimited_bodies() {
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false).unwrap();
        assert_eq!((r.status, r.body_len, r.keep_alive), (200, 5, true));

        let r = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((r.body_len, r.keep_alive), (8, true));

        let r = parse("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", false).unwrap();
        assert_eq!(
            (r.version.as_str(), r.body_len, r.keep_alive),
            ("1.0", 13, false)
        );

        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true).unwrap();
        assert_eq!((r.body_len, r.keep_alive), (0, true));

        let r = parse(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!((r.status, r.keep_alive), (500, false));

        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", false).is_err());
        assert!(parse("garbage\r\n\r\n", false).is_err());
    }

    #[test]
    fn collects_bodies_whatever_the_framing() {
        let body = |raw: &str| {
            let mut out = Vec::new();
            read_response_into(&mut Cursor::new(raw.as_bytes().to_vec()), false, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            body(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            ),
            "abcde"
        );
        assert_eq!(
            body("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyzNEXT"),
            "xyz"
        );
        assert_eq!(body("HTTP/1.0 200 OK\r\n\r\nto the end"), "to the end");
    }

    #[test]
    fn spreads_requests_round_robin() {
        let reqs: Vec<Request> = (0..5).map(|i| Request::get(&format!("/{i}"))).collect();
        let b = spread(reqs, 3, |c| {
            if c == 0 {
                ConnMode::KeepAlive
            } else {
                ConnMode::Fresh
            }
        });
        let targets: Vec<Vec<&str>> = b
            .iter()
            .map(|b| b.requests.iter().map(|r| r.target.as_str()).collect())
            .collect();
        assert_eq!(targets, [vec!["/0", "/3"], vec!["/1", "/4"], vec!["/2"]]);
        assert_eq!(
            b.iter().map(|b| b.mode).collect::<Vec<_>>(),
            [ConnMode::KeepAlive, ConnMode::Fresh, ConnMode::Fresh]
        );
        assert_eq!(
            spread(vec![Request::get("/")], 4, |_| ConnMode::Fresh).len(),
            1
        );
    }

    #[test]
    fn encodes_requests() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let req = Request::new("POST", "/echo?x=1")
            .with_user_agent("ua/1")
            .with_header("X-A", "b")
            .with_body("hi");
        assert_eq!(
            String::from_utf8(req.encode(&addr, true)).unwrap(),
            "POST /echo?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ua/1\r\nX-A: b\r\n\
             Connection: close\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert_eq!(req.path(), "/echo");
        let req = Request::get("/").with_version(Version::Http10);
        assert_eq!(
            String::from_utf8(req.encode(&addr, true)).unwrap(),
            "GET / HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: periscope-e2e-client/1.0\r\n\r\n"
        );
    }

    #[test]
    fn workload_is_deterministic_and_exact() {
        for kind in [
            TargetKind::PythonHttpServer,
            TargetKind::Nginx,
            TargetKind::GoServer,
        ] {
            for n in [1, 7, 60, 100] {
                let a = workload(kind, n, 42, "t");
                let b = workload(kind, n, 42, "t");
                assert_eq!(a.len(), n);
                assert_eq!(format!("{a:?}"), format!("{b:?}"));
                let all: Vec<&Request> = a
                    .sequential
                    .iter()
                    .chain(&a.concurrent)
                    .flat_map(|b| &b.requests)
                    .collect();
                let mut uas: Vec<&str> = all.iter().map(|r| r.user_agent.as_str()).collect();
                uas.sort();
                uas.dedup();
                assert_eq!(uas.len(), n, "user agents are unique");
                assert!(all.iter().all(|r| r.expect_status.is_some()));
            }
        }
        let p = workload(TargetKind::GoServer, 80, 1, "t");
        assert!(p.concurrent.len() == 4);
        assert!(
            p.sequential
                .iter()
                .any(|b| b.mode == ConnMode::KeepAlive && b.requests.len() > 1)
        );
    }
}
