//! A seeded HTTP/1.x traffic generator for the differential conformance suite.
//!
//! It writes raw bytes so that it controls how requests meet the server's syscalls:
//! split over many writes, byte by byte, several pipelined in one write, header blocks
//! larger than the agent's capture, bodies up to 1 MiB with `Content-Length` or chunked,
//! `Expect: 100-continue`, HTTP/1.0, `Connection: close`, many requests per connection,
//! connections in parallel. Every request carries a unique id in its query (`?r<id>=1`:
//! the agent redacts query values but keeps keys) so that each server access log line
//! names the request it belongs to. The same seed gives the same traffic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::ServerName};

/// How long one read may block before the exchange fails.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for `100 Continue` before sending the body anyway (curl does 1 s).
const CONTINUE_WAIT: Duration = Duration::from_millis(300);

/// splitmix64: small, seedable, good enough to pick traffic shapes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(usize),
    /// Total payload bytes, sent in chunks of this size.
    Chunked(usize, usize),
}

/// How a connection's bytes are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writes {
    /// Each request in one write.
    Whole,
    /// Each request cut into this many writes.
    Split(usize),
    /// One byte per write (small requests only).
    ByteByByte,
    /// All requests of the connection in one write, responses read afterwards.
    Pipelined,
}

/// One generated request.
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub id: u64,
    pub method: String,
    /// Path and query, the query being `r<id>`.
    pub target: String,
    pub http10: bool,
    pub body: Body,
    pub expect_continue: bool,
    pub close: bool,
    /// Bytes of padding headers (to exceed the capture).
    pub pad_header: usize,
    /// The client gives up on this exchange (always the last of its connection).
    pub abort: Abort,
}

/// Where a client aborts an exchange: it resets the connection (SO_LINGER 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    No,
    /// After half the request (half the body, or half the header section).
    MidRequest,
    /// After the response's status line.
    MidResponse,
}

impl GenRequest {
    /// The header section and the body as they go on the wire.
    pub fn encode(&self, host: &str) -> (Vec<u8>, Vec<u8>) {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut h = format!(
            "{} {} HTTP/{version}\r\nHost: {host}\r\nUser-Agent: periscope-conformance\r\n",
            self.method, self.target
        );
        let mut left = self.pad_header;
        let mut i = 0;
        while left > 0 {
            let n = left.min(900);
            h.push_str(&format!("X-Pad-{i}: {}\r\n", "p".repeat(n)));
            left -= n;
            i += 1;
        }
        let mut body = Vec::new();
        match self.body {
            Body::None => {}
            Body::Length(n) => {
                h.push_str(&format!("Content-Length: {n}\r\n"));
                body = payload(n);
            }
            Body::Chunked(n, size) => {
                h.push_str("Transfer-Encoding: chunked\r\n");
                let data = payload(n);
                for c in data.chunks(size.max(1)) {
                    body.extend(format!("{:x}\r\n", c.len()).as_bytes());
                    body.extend(c);
                    body.extend(b"\r\n");
                }
                body.extend(b"0\r\n\r\n");
            }
        }
        if self.expect_continue {
            h.push_str("Expect: 100-continue\r\n");
        }
        if self.close {
            h.push_str("Connection: close\r\n");
        } else if self.http10 {
            h.push_str("Connection: keep-alive\r\n");
        }
        h.push_str("\r\n");
        (h.into_bytes(), body)
    }
}

fn payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
        .collect()
}

/// One connection's plan.
#[derive(Clone, Debug)]
pub struct ConnPlan {
    pub writes: Writes,
    pub requests: Vec<GenRequest>,
}

/// What a server accepts: which targets exist and which methods carry bodies there.
pub struct Profile {
    /// Targets (paths) to pick from, each with the methods that may be sent to it.
    pub targets: Vec<(&'static str, &'static [&'static str])>,
    /// Largest request body.
    pub max_body: usize,
    /// Whether chunked request bodies are sent (some servers refuse them).
    pub chunked: bool,
    /// Whether `Expect: 100-continue` is sent.
    pub expect: bool,
    /// Whether several requests are written at once.
    pub pipelining: bool,
}

/// Every method the generator sends somewhere.
pub const ALL_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

/// Builds `conns` connections carrying about `total` requests in all.
pub fn plan(seed: u64, conns: usize, total: usize, profile: &Profile) -> Vec<ConnPlan> {
    let mut rng = Rng::new(seed);
    let mut next_id = 1u64;
    let mut plans = Vec::with_capacity(conns);
    let per = (total / conns.max(1)).max(1);
    for c in 0..conns {
        // A few connections carry hundreds of requests; most carry a handful.
        let n = match c % 10 {
            0 => per * 4,
            1..=3 => 1,
            _ => 1 + rng.below((per as u64).max(1) * 2) as usize,
        };
        let writes = match rng.below(10) {
            0 | 1 => Writes::Split(2 + rng.below(6) as usize),
            2 => Writes::ByteByByte,
            3 if profile.pipelining => Writes::Pipelined,
            _ => Writes::Whole,
        };
        let mut requests = Vec::with_capacity(n);
        for i in 0..n {
            let (path, methods) = rng.pick(&profile.targets);
            let method = rng.pick(methods).to_string();
            let bodied = !matches!(method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
            let small = writes == Writes::ByteByByte;
            let body = if !bodied {
                Body::None
            } else {
                let size = match rng.below(10) {
                    _ if small => rng.below(40) as usize,
                    0..=3 => rng.below(64) as usize,
                    4..=6 => rng.below(4096) as usize,
                    7 | 8 => rng.below(200 * 1024) as usize,
                    _ => rng.below(profile.max_body as u64 + 1) as usize,
                }
                .min(profile.max_body);
                if profile.chunked && rng.chance(25) {
                    // A third densely chunked: a server's 64 KiB read then holds
                    // thousands of chunk-size lines (the kernel's framing elides them).
                    let most = if rng.chance(33) { 64 } else { 9000 };
                    Body::Chunked(size, 1 + rng.below(most) as usize)
                } else {
                    Body::Length(size)
                }
            };
            let last = i + 1 == n;
            let http10 = rng.chance(5);
            requests.push(GenRequest {
                id: next_id,
                target: format!("{path}?r{next_id}=1"),
                method,
                http10,
                body,
                expect_continue: profile.expect
                    && writes != Writes::Pipelined
                    && !http10
                    && body != Body::None
                    && rng.chance(15),
                // HTTP/1.0 without keep-alive ends the connection too.
                close: last && rng.chance(50),
                pad_header: if !small && rng.chance(5) {
                    2048 + rng.below(4096) as usize
                } else {
                    0
                },
                abort: Abort::No,
            });
            next_id += 1;
            if requests.last().is_some_and(|r| r.http10) {
                // Keep HTTP/1.0 the last request of its connection: servers differ in
                // whether they honour keep-alive for it.
                requests.last_mut().expect("just pushed").close = true;
                break;
            }
        }
        // Some connections end with the client giving up: the server may log the exchange
        // (then its span must be right) or not (then there must be no span).
        if writes != Writes::Pipelined
            && rng.chance(8)
            && let Some(last) = requests.last_mut()
            && !last.expect_continue
        {
            last.abort = if rng.chance(50) {
                Abort::MidRequest
            } else {
                Abort::MidResponse
            };
        }
        plans.push(ConnPlan { writes, requests });
    }
    plans
}

/// What the client saw of one exchange.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: u64,
    pub method: String,
    pub target: String,
    /// Bytes of the header section sent.
    pub header_bytes: u64,
    /// Bytes of the body sent, framing included (what the agent counts).
    pub body_bytes: u64,
    /// Final status read, or `None` when the exchange failed (server closed).
    pub status: Option<u16>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

/// HTTPS for the generator (rustls, trusting the server's test certificate for
/// `localhost`): each connection negotiates TLS 1.2 or 1.3 (by its first request's id,
/// so a seed gives the same mix), and later connections resume earlier sessions (each
/// configuration keeps rustls' in-memory session cache).
#[derive(Clone)]
pub struct TlsClient {
    /// Either version, TLS 1.2 only, TLS 1.3 only.
    configs: [Arc<rustls::ClientConfig>; 3],
}

impl TlsClient {
    /// Trusts the PEM certificate at `cert` (a self-signed one made for the test).
    pub fn trusting(cert: &str) -> TlsClient {
        TlsClient::new(cert, None)
    }

    /// [`TlsClient::trusting`], authenticating with the client certificate and key at
    /// `identity` (mutual TLS).
    pub fn with_identity(cert: &str, identity: (&str, &str)) -> TlsClient {
        TlsClient::new(cert, Some(identity))
    }

    fn new(cert: &str, identity: Option<(&str, &str)>) -> TlsClient {
        use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(cert).expect("read the test certificate") {
            roots
                .add(c.expect("a PEM certificate"))
                .expect("a usable certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let identity = identity.map(|(cert, key)| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .expect("read the client certificate")
                .map(|c| c.expect("a PEM certificate"))
                .collect();
            (
                chain,
                PrivateKeyDer::from_pem_file(key).expect("the client key"),
            )
        });
        let config = |versions: &[&'static rustls::SupportedProtocolVersion]| {
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions)
                .expect("TLS versions")
                .with_root_certificates(roots.clone());
            Arc::new(match &identity {
                Some((chain, key)) => builder
                    .with_client_auth_cert(chain.clone(), key.clone_key())
                    .expect("a usable client certificate"),
                None => builder.with_no_client_auth(),
            })
        };
        TlsClient {
            configs: [
                config(&[&rustls::version::TLS13, &rustls::version::TLS12]),
                config(&[&rustls::version::TLS12]),
                config(&[&rustls::version::TLS13]),
            ],
        }
    }
}

/// The client's end of a connection: TCP, or TLS over it.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn open(addr: SocketAddr, tls: Option<&TlsClient>, pick: u64) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let Some(tls) = tls else {
            return Ok(Conn::Plain(stream));
        };
        let config = tls.configs[(pick % 3) as usize].clone();
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(conn, stream))))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// Runs every plan, `parallel` connections at a time.
pub fn run(addr: SocketAddr, plans: &[ConnPlan], parallel: usize) -> Vec<Sent> {
    run_over(addr, plans, parallel, None)
}

/// [`run`], over TLS when `tls` is given.
pub fn run_over(
    addr: SocketAddr,
    plans: &[ConnPlan],
    parallel: usize,
    tls: Option<&TlsClient>,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for group in plans.chunks(parallel.max(1)) {
        let handles: Vec<_> = group
            .iter()
            .cloned()
            .map(|p| {
                let tls = tls.cloned();
                thread::spawn(move || run_conn(addr, &p, tls.as_ref()))
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("client thread"));
        }
    }
    out
}

fn run_conn(addr: SocketAddr, plan: &ConnPlan, tls: Option<&TlsClient>) -> Vec<Sent> {
    let host = addr.to_string();
    let mut sent: Vec<Sent> = plan
        .requests
        .iter()
        .map(|r| {
            let (h, b) = r.encode(&host);
            Sent {
                id: r.id,
                method: r.method.clone(),
                target: r.target.clone(),
                header_bytes: h.len() as u64,
                body_bytes: b.len() as u64,
                status: None,
                expect_continue: r.expect_continue,
            }
        })
        .collect();
    let pick = plan.requests.first().map_or(0, |r| r.id);
    let Ok(conn) = Conn::open(addr, tls, pick) else {
        return sent;
    };
    // Writes go to the connection under the reader (`r.get_mut()`): a TLS connection is
    // one object for both directions.
    let mut r = BufReader::new(conn);
    let mut reopen = false;
    if plan.writes == Writes::Pipelined {
        let mut all = Vec::new();
        for q in &plan.requests {
            let (h, b) = q.encode(&host);
            all.extend(h);
            all.extend(b);
        }
        if r.get_mut().write_all(&all).is_err() {
            return sent;
        }
        for (i, q) in plan.requests.iter().enumerate() {
            match read_response(&mut r, q.method == "HEAD") {
                Ok((status, close)) => {
                    sent[i].status = Some(status);
                    if close {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        return sent;
    }
    for (i, q) in plan.requests.iter().enumerate() {
        if i > 0 && sent[i - 1].status.is_none() {
            break;
        }
        if reopen {
            // The server ended the connection (an error answer, its request limit):
            // the rest of the plan goes on a new one.
            let Ok(conn) = Conn::open(addr, tls, q.id) else {
                break;
            };
            r = BufReader::new(conn);
        }
        let (h, b) = q.encode(&host);
        match q.abort {
            Abort::No => {}
            Abort::MidRequest => {
                let half = if b.len() >= 2 {
                    let mut v = h.clone();
                    v.extend(&b[..b.len() / 2]);
                    v
                } else {
                    h[..h.len() / 2].to_vec()
                };
                let _ = write_with(r.get_mut(), &half, plan.writes);
                reset(r.get_ref().tcp());
                break;
            }
            Abort::MidResponse => {
                let mut all = h.clone();
                all.extend(&b);
                if write_with(r.get_mut(), &all, plan.writes).is_ok() {
                    let mut line = String::new();
                    if r.read_line(&mut line).is_ok() {
                        sent[i].status =
                            line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
                    }
                }
                reset(r.get_ref().tcp());
                break;
            }
        }
        let result = (|| -> io::Result<(u16, bool)> {
            if q.expect_continue {
                write_with(r.get_mut(), &h, plan.writes)?;
                r.get_ref().tcp().set_read_timeout(Some(CONTINUE_WAIT))?;
                let waiting = response_waiting(&mut r)?;
                r.get_ref().tcp().set_read_timeout(Some(IO_TIMEOUT))?;
                let early = match waiting {
                    true => match read_response(&mut r, q.method == "HEAD")? {
                        (100, _) => None,
                        final_ => Some(final_),
                    },
                    false => None,
                };
                if let Some((status, _)) = early {
                    // Answered without asking for the body: close rather than send it.
                    return Ok((status, true));
                }
                write_with(r.get_mut(), &b, plan.writes)?;
            } else {
                let mut all = h.clone();
                all.extend(&b);
                write_with(r.get_mut(), &all, plan.writes)?;
            }
            read_response(&mut r, q.method == "HEAD")
        })();
        match result {
            Ok((status, close)) => {
                sent[i].status = Some(status);
                reopen = close;
            }
            Err(e) => {
                if std::env::var_os("PERISCOPE_TRAFFIC_DEBUG").is_some() {
                    eprintln!("exchange r{} failed: {e}", q.id);
                }
                break;
            }
        }
    }
    sent
}

/// Closes with a reset rather than a FIN, as a client that gives up or dies does.
fn reset(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a valid linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    // The reset goes out when the caller drops the last handle on the socket.
}

fn write_with(w: &mut Conn, bytes: &[u8], how: Writes) -> io::Result<()> {
    match how {
        Writes::Whole | Writes::Pipelined => w.write_all(bytes),
        Writes::Split(n) => {
            let step = bytes.len().div_ceil(n).max(1);
            for c in bytes.chunks(step) {
                w.write_all(c)?;
                thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
        Writes::ByteByByte => {
            for b in bytes {
                w.write_all(std::slice::from_ref(b))?;
                thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        }
    }
}

/// Whether a response starts within the read timeout (without consuming it).
fn response_waiting(r: &mut BufReader<Conn>) -> io::Result<bool> {
    match r.fill_buf() {
        Ok([]) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed")),
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Reads one response (an interim one counts as one); returns its status and whether
/// the connection ends after it.
fn read_response(r: &mut BufReader<Conn>, head: bool) -> io::Result<(u16, bool)> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(bad("closed before a response"));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("closed in headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.parse::<u64>().ok(),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().ends_with("chunked"),
            "connection" => {
                let v = v.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    if (100..200).contains(&status) {
        return Ok((status, false));
    }
    if head || status == 204 || status == 304 {
        return Ok((status, close));
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            io::copy(&mut r.by_ref().take(size + 2), &mut io::sink())?;
        }
    } else if let Some(n) = length {
        let got = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
        if got < n {
            return Err(bad("short body"));
        }
    } else {
        io::copy(r, &mut io::sink())?;
        close = true;
    }
    Ok((status, close))
}
