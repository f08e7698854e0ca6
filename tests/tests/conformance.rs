//! Differential conformance: the agent's spans against each server's own access log.
//!
//! A seeded generator (`periscope_e2e::traffic`) sends a few thousand exchanges of every
//! shape the pairing must survive (bodies up to 1 MiB, chunked uploads, 100-continue,
//! pipelining, header blocks over the capture, split and byte-by-byte writes, HTTP/1.0,
//! `Connection: close`, early error answers, hundreds of requests per connection,
//! parallel connections). Every request carries a unique id in its query, so each log
//! line names its request and is matched to the span(s) carrying the same id.
//!
//! Pass: no span is wrong (method, target, status, request and response body bytes as
//! the server logged them) and none is extra or doubled; a logged exchange without a span
//! must be accounted for by the agent's `periscope_exchanges_unpaired` counters. The table
//! printed per server says how many were right, missing (and counted), wrong.
//!
//! Servers: nginx (two configurations), apache2 (event, prefork), lighttpd, gunicorn
//! (sync, gthread), node http, python http.server, Go net/http (1.21 and 1.25 stripped, 1.27
//! plain behind a listener that wraps each connection in its own type); and TLS twins, the
//! generator speaking TLS 1.2 and 1.3 with resumed sessions (rustls): nginx's ssl module,
//! apache2 mod_ssl, gunicorn `--certfile`, all OpenSSL 3. Each logs what it can:
//! apache2 and lighttpd method, target, status, bytes read and response body; gunicorn
//! and node (its own lines) no request size; python http.server no sizes.
//!
//! Needs root, the servers, and the agent binary. Run the seed again with
//! `PERISCOPE_CONFORMANCE_SEED=<seed>`:
//!
//! ```text
//! cargo test -p periscope-e2e --test conformance -- --test-threads=1 --nocapture
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use periscope_e2e::harness::{self, Agent, Process, TempDir};
use periscope_e2e::traffic::{self, ALL_METHODS, Profile, Sent, TlsClient};

/// Exchanges per server configuration.
const EXCHANGES: usize = 1500;
/// Connections they are spread over.
const CONNECTIONS: usize = 150;
/// Connections open at once.
const PARALLEL: usize = 8;
/// How long spans may keep arriving after the traffic.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// `HTTP/1.1 100 Continue\r\n\r\n`.
const CONTINUE_LEN: u64 = 25;

fn seed() -> u64 {
    std::env::var("PERISCOPE_CONFORMANCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// One exchange as the server logged it.
#[derive(Debug)]
struct Logged {
    id: u64,
    method: String,
    status: u16,
    /// Request bytes the server read (header section + body), when it logs them.
    request_bytes: Option<u64>,
    /// Bytes of the next request the server may have counted in `request_bytes` (apache's
    /// pipeline check peeks at them before it logs).
    read_ahead: u64,
    /// Response body bytes the server sent, when it logs them.
    response_body: Option<u64>,
    /// All bytes the server sent in answer, when it logs them (nginx `$bytes_sent`): 0
    /// means nothing reached the socket (the client had reset the connection), so there
    /// is no exchange on the wire to give a span.
    wire_bytes: Option<u64>,
}

/// One span the agent exported, reduced to what the log can check.
#[derive(Debug)]
struct SpanLine {
    method: String,
    status: u16,
    request_body: u64,
    /// `None` when the span claims no size (a body delimited by the close).
    response_body: Option<u64>,
    /// `url.scheme`: `https` for the TLS twins.
    scheme: String,
}

/// The id in a target's `?r<id>=1` query (the key: span queries keep keys, not values).
fn id_of(target: &str) -> Option<u64> {
    let q = target.split_once('?')?.1;
    let key = q.split(['=', '&']).next()?;
    key.strip_prefix('r')?.parse().ok()
}

fn spans_by_id(stdout: &str) -> (HashMap<u64, Vec<SpanLine>>, usize) {
    let mut by_id: HashMap<u64, Vec<SpanLine>> = HashMap::new();
    let mut without_id = 0;
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["kind"] != "SERVER" {
            continue;
        }
        let a = &v["attributes"];
        let query = a["url.query"].as_str().unwrap_or("");
        let Some(id) = id_of(&format!("?{query}")) else {
            without_id += 1;
            continue;
        };
        by_id.entry(id).or_default().push(SpanLine {
            method: a["http.request.method"].as_str().unwrap_or("").to_string(),
            status: a["http.response.status_code"].as_u64().unwrap_or(0) as u16,
            request_body: a["http.request.body.size"].as_u64().unwrap_or(0),
            response_body: a["http.response.body.size"].as_u64(),
            scheme: a["url.scheme"].as_str().unwrap_or("").to_string(),
        });
    }
    (by_id, without_id)
}

/// `key=value` from the agent's last status line on stderr.
fn status_field(stderr: &str, key: &str) -> u64 {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" spans="))
        .unwrap_or("");
    line.split_whitespace()
        .find_map(|f| f.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[derive(Default, Debug)]
struct Table {
    logged: usize,
    right: usize,
    missing: usize,
    wrong: Vec<String>,
    doubled: usize,
    extra: usize,
    unpaired_counted: u64,
    /// The agent's `desync_<cause>=N` fields: why connections lost pairing.
    desync_causes: String,
    not_logged: usize,
    /// Spans of exchanges the server did not log but the client saw answered, with the
    /// method and status the client sent and read (gunicorn's sync worker answers some
    /// HEADs without an access-log line).
    client_confirmed: usize,
    /// Logged, but the server sent nothing on the socket (the client reset first): no
    /// exchange on the wire, so no span; the agent counts the request as unanswered.
    unanswered: usize,
    /// The kernel's request framing: syscalls cut at a request, requests not framed.
    frame_splits: u64,
    frame_lost: u64,
    /// Ids of logged exchanges without a span, and what they were.
    missing_ids: Vec<u64>,
    missing_shapes: Vec<String>,
    /// Missing exchanges that were neither aborted by the client nor pipelined.
    missing_unexplained: usize,
}

impl Table {
    fn print(&self, server: &str, seed: u64) {
        let pct = |n: usize| 100.0 * n as f64 / self.logged.max(1) as f64;
        let mut s = String::new();
        let _ = writeln!(s, "conformance {server} (seed {seed})");
        let _ = writeln!(s, "  logged exchanges        {:>6}", self.logged);
        let _ = writeln!(
            s,
            "  right span              {:>6}  {:6.2}%",
            self.right,
            pct(self.right)
        );
        let _ = writeln!(
            s,
            "  no span (counted)       {:>6}  {:6.2}%  unpaired counters: {}",
            self.missing,
            pct(self.missing),
            self.unpaired_counted
        );
        let _ = writeln!(s, "    desync causes: {}", self.desync_causes);
        let _ = writeln!(
            s,
            "  logged, nothing sent     {:>6}  (the client reset first; no exchange on the wire, no span)",
            self.unanswered
        );
        let _ = writeln!(
            s,
            "  kernel request framing: {} cuts, {} streams lost",
            self.frame_splits, self.frame_lost
        );
        let _ = writeln!(s, "  wrong span              {:>6}", self.wrong.len());
        let _ = writeln!(s, "  doubled                 {:>6}", self.doubled);
        let _ = writeln!(s, "  span with no log line   {:>6}", self.extra);
        let _ = writeln!(
            s,
            "  client-confirmed span   {:>6}  (not logged; method and status as the client saw them)",
            self.client_confirmed
        );
        let _ = writeln!(
            s,
            "  sent, not logged        {:>6}  (client aborts and refused requests: the log cannot express them)",
            self.not_logged
        );
        for w in self.wrong.iter().take(20) {
            let _ = writeln!(s, "    wrong: {w}");
        }
        let _ = writeln!(
            s,
            "    of which neither aborted nor pipelined: {}",
            self.missing_unexplained
        );
        for m in self.missing_shapes.iter().take(20) {
            let _ = writeln!(s, "    missing: {m}");
        }
        eprint!("{s}");
    }

    fn assert_pass(&self, server: &str) {
        assert!(self.logged > 0, "{server}: nothing logged");
        assert!(
            self.wrong.is_empty() && self.doubled == 0 && self.extra == 0,
            "{server}: {} wrong, {} doubled, {} extra spans",
            self.wrong.len(),
            self.doubled,
            self.extra
        );
        assert!(
            self.missing as u64 <= self.unpaired_counted,
            "{server}: {} logged exchanges have no span but the agent counted only {} unpaired",
            self.missing,
            self.unpaired_counted
        );
        // The kernel frames every request stream it saw from the start: an exchange of
        // any other shape (any method, body, split, header size, HTTP/1.0, close) lacks
        // a span only by rare exception (lighttpd answers some chunked uploads early and
        // discards the rest unread: 3 of 410 with seed 42). Before the framing, 6 to 44 %
        // did.
        assert!(
            self.missing_unexplained * 50 <= self.logged,
            "{server}: {} logged exchanges without a span were neither aborted nor pipelined (over 2 %)",
            self.missing_unexplained
        );
    }
}

fn compare(logged: &[Logged], o: &Outcome) -> Table {
    let (sent, stdout, stderr) = (&o.sent, &o.exit.stdout, &o.exit.stderr);
    let scheme = if o.tls { "https" } else { "http" };
    let (mut spans, without_id) = spans_by_id(stdout);
    let sent: HashMap<u64, &Sent> = sent.iter().map(|s| (s.id, s)).collect();
    let mut t = Table {
        logged: logged.len(),
        extra: without_id,
        unpaired_counted: status_field(stderr, "unmatched")
            + status_field(stderr, "unpaired_desync"),
        desync_causes: [
            "header_gap",
            "chunk_gap",
            "boundary_gap",
            "malformed",
            "other",
        ]
        .iter()
        .map(|c| format!("{c}={}", status_field(stderr, &format!("desync_{c}"))))
        .collect::<Vec<_>>()
        .join(" "),
        frame_splits: status_field(stderr, "frame_splits"),
        frame_lost: status_field(stderr, "frame_lost"),
        ..Table::default()
    };
    let mut seen = std::collections::HashSet::new();
    for l in logged {
        seen.insert(l.id);
        let Some(found) = spans.remove(&l.id) else {
            if l.wire_bytes == Some(0) {
                t.unanswered += 1;
            } else {
                t.missing += 1;
                t.missing_ids.push(l.id);
            }
            continue;
        };
        if found.len() > 1 {
            t.doubled += 1;
        }
        let s = &found[0];
        let mut diffs = Vec::new();
        if s.method != l.method {
            diffs.push(format!("method {} vs logged {}", s.method, l.method));
        }
        if s.status != l.status {
            diffs.push(format!("status {} vs logged {}", s.status, l.status));
        }
        if s.scheme != scheme {
            diffs.push(format!("scheme {} on a {scheme} server", s.scheme));
        }
        // nginx counts a `100 Continue` it sent in $body_bytes_sent; the span counts
        // the final response's body only.
        let interim = match sent.get(&l.id) {
            Some(q) if q.expect_continue => CONTINUE_LEN,
            _ => 0,
        };
        if let (Some(b), Some(sb)) = (l.response_body, s.response_body)
            && b != sb
            && b != sb + interim
        {
            diffs.push(format!("response body {sb} vs logged {b}"));
        }
        if let (Some(read), Some(q)) = (l.request_bytes, sent.get(&l.id)) {
            let body = read.saturating_sub(q.header_bytes);
            // A server that discards a body (an error answer, a static file answered
            // from the header section) reads it without logging it: then what crossed
            // the socket is the body the client sent, or less when the server closed the
            // connection while discarding (lighttpd stops reading after a while).
            let discarded = body == 0 && s.request_body <= q.body_bytes;
            let peeked = body >= s.request_body && body - s.request_body <= l.read_ahead;
            if body != s.request_body && !discarded && !peeked {
                diffs.push(format!(
                    "request body {} vs logged {body} (read {read})",
                    s.request_body
                ));
            }
        }
        if diffs.is_empty() {
            t.right += 1;
        } else {
            t.wrong
                .push(format!("r{} {}: {}", l.id, l.method, diffs.join(", ")));
        }
    }
    // Exchanges the server did not log: the client's view is the truth left. A single
    // span with the method sent and the status the client read is right; any other is
    // extra.
    for (id, found) in &spans {
        let confirmed = found.len() == 1
            && sent
                .get(id)
                .is_some_and(|q| q.method == found[0].method && q.status == Some(found[0].status));
        if confirmed {
            t.client_confirmed += 1;
        } else {
            t.extra += found.len();
        }
    }
    t.not_logged = sent.keys().filter(|id| !seen.contains(id)).count();
    t
}

/// Waits until the agent's stdout stops growing (spans still draining) or the timeout.
fn settle(agent: &Agent) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = (0, Instant::now());
    loop {
        let n = agent.output().stdout().len();
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) || Instant::now() > deadline {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---- nginx ------------------------------------------------------------------------

struct Nginx {
    workers: u32,
    sendfile: bool,
    keepalive_requests: u32,
    /// Serve HTTPS (OpenSSL 3 through nginx's ssl module) with a test certificate.
    tls: bool,
    /// With `tls`: require a client certificate (mutual TLS).
    mtls: bool,
}

const STATIC_FILES: &[(&str, usize)] = &[
    ("empty.bin", 0),
    ("small.txt", 100),
    ("page.html", 3000),
    ("big.bin", 300 * 1024),
    ("huge.bin", 1024 * 1024),
];

fn nginx_profile() -> Profile {
    const FILE: &[&str] = &["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE"];
    Profile {
        targets: vec![
            ("/static/empty.bin", FILE),
            ("/static/small.txt", FILE),
            ("/static/page.html", FILE),
            ("/static/big.bin", &["GET", "HEAD", "POST"]),
            ("/static/huge.bin", &["GET", "HEAD"]),
            ("/static/missing", FILE),
            ("/", ALL_METHODS),
            ("/created", ALL_METHODS),
            ("/error", &["GET", "POST"]),
            ("/nocontent", &["GET", "POST"]),
        ],
        max_body: 1024 * 1024,
        chunked: true,
        expect: true,
        pipelining: true,
    }
}

fn nginx_bin() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nginx not installed (apt-get install nginx)")
}

fn parse_nginx_log(text: &str) -> Vec<Logged> {
    // log_format: method, URI, $status $request_length $body_bytes_sent $request_time
    // $bytes_sent
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let method = f.next()?.to_string();
            let uri = f.next()?;
            let status = f.next()?.parse().ok()?;
            let request_bytes = f.next()?.parse().ok();
            let response_body = f.next()?.parse().ok();
            let _time = f.next();
            let wire_bytes = f.next().and_then(|v| v.parse().ok());
            Some(Logged {
                id: id_of(uri)?,
                method,
                status,
                request_bytes,
                read_ahead: 0,
                response_body,
                wire_bytes,
            })
        })
        .collect()
}

/// Starts nginx with the suite's configuration and log format; waits for its workers.
fn start_nginx(n: &Nginx) -> (TempDir, Process, SocketAddr) {
    let dir = TempDir::new("conformance-nginx");
    let root = dir.path();
    fs::create_dir_all(root.join("html/static")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    for (name, size) in STATIC_FILES {
        fs::write(root.join("html/static").join(name), vec![b'x'; *size]).unwrap();
    }
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(root)
        .status();
    if n.tls {
        harness::self_signed_cert(&dir);
    }
    if n.mtls {
        harness::self_signed_client_cert(&dir);
    }
    let port = harness::free_port();
    let d = root.display();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
user nobody nogroup;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 512; }}
http {{
    log_format conformance '$request_method\t$request_uri\t$status\t$request_length\t$body_bytes_sent\t$request_time\t$bytes_sent\t$ssl_client_verify';
    access_log {d}/access.log conformance;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    sendfile {sendfile};
    keepalive_requests {keepalive_requests};
    client_max_body_size 512k;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port}{ssl};
        root {d}/html;
        location = / {{ return 200 "hello\n"; }}
        location = /created {{ return 201 "created\n"; }}
        location = /error {{ return 500; }}
        location = /nocontent {{ return 204; }}
        location /static/ {{ }}
    }}
}}
"#,
        workers = n.workers,
        ssl = if n.tls {
            format!(
                " ssl;\n        ssl_certificate {d}/cert.pem;\n        ssl_certificate_key {d}/key.pem;\n        \
                 ssl_protocols TLSv1.2 TLSv1.3;\n        ssl_session_cache shared:conformance:1m{}",
                if n.mtls {
                    format!(
                        ";\n        ssl_client_certificate {d}/client-cert.pem;\n        ssl_verify_client on"
                    )
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        },
        sendfile = if n.sendfile { "on" } else { "off" },
        keepalive_requests = n.keepalive_requests,
    );
    fs::write(root.join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(nginx_bin());
    cmd.arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"));
    let mut nginx = Process::spawn("nginx", cmd);
    nginx.set_stop_signal(libc::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    nginx.wait_for_port(addr, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness::children(nginx.pid()).len() < n.workers as usize {
        assert!(Instant::now() < deadline, "nginx workers did not start");
        thread::sleep(Duration::from_millis(20));
    }

    (dir, nginx, addr)
}

fn start_agent(pid: u32) -> Agent {
    Agent::start([
        "--pid".to_string(),
        pid.to_string(),
        "--console".into(),
        "json".into(),
        "--status-interval".into(),
        "0".into(),
    ])
}

fn run_nginx(label: &str, n: Nginx) {
    harness::require_root();
    let _serial = harness::serial();
    let seed = seed();
    let (dir, nginx, addr) = start_nginx(&n);
    let root = dir.path();
    let agent = start_agent(nginx.pid());
    let plans = traffic::plan(seed, CONNECTIONS, EXCHANGES, &nginx_profile());
    let path = |f: &str| root.join(f).display().to_string();
    let tls = match (n.tls, n.mtls) {
        (false, _) => None,
        (true, false) => Some(TlsClient::trusting(&path("cert.pem"))),
        (true, true) => Some(TlsClient::with_identity(
            &path("cert.pem"),
            (&path("client-cert.pem"), &path("client-key.pem")),
        )),
    };
    let started = Instant::now();
    let sent = traffic::run_over(addr, &plans, PARALLEL, tls.as_ref());
    let traffic_time = started.elapsed();
    settle(&agent);
    let exit = agent.stop();
    drop(nginx);
    let log = fs::read_to_string(root.join("access.log")).unwrap_or_default();
    if n.mtls {
        // The client really authenticated: nginx verified its certificate every time.
        let unverified = log.lines().filter(|l| !l.ends_with("\tSUCCESS")).count();
        assert_eq!(
            unverified, 0,
            "{label}: exchanges without a verified client certificate"
        );
    }
    let o = Outcome {
        seed,
        plans,
        sent,
        exit,
        traffic_time,
        tls: n.tls,
    };
    judge(label, &o, &log, &parse_nginx_log(&log));
}

#[test]
fn nginx_one_worker_sendfile() {
    run_nginx(
        "nginx 1 worker, sendfile on",
        Nginx {
            workers: 1,
            sendfile: true,
            keepalive_requests: 1000,
            tls: false,
            mtls: false,
        },
    );
}

/// Mutual TLS: nginx requires and verifies the client's certificate.
#[test]
fn nginx_mutual_tls() {
    run_nginx(
        "nginx mutual TLS, 1 worker",
        Nginx {
            workers: 1,
            sendfile: true,
            keepalive_requests: 1000,
            tls: true,
            mtls: true,
        },
    );
}

/// The TLS twin: nginx's ssl module (OpenSSL 3), its plaintext read by the libssl probes;
/// TLS 1.2 and 1.3, resumed sessions, the same traffic shapes.
#[test]
fn nginx_tls_two_workers() {
    run_nginx(
        "nginx TLS, 2 workers",
        Nginx {
            workers: 2,
            sendfile: false,
            keepalive_requests: 1000,
            tls: true,
            mtls: false,
        },
    );
}

#[test]
fn nginx_four_workers_no_sendfile_small_keepalive_requests() {
    run_nginx(
        "nginx 4 workers, sendfile off, keepalive_requests 7",
        Nginx {
            workers: 4,
            sendfile: false,
            keepalive_requests: 7,
            tls: false,
            mtls: false,
        },
    );
}

// ---- python http.server ------------------------------------------------------------

/// `"METHOD TARGET HTTP/1.x" STATUS` from http.server's log lines on stderr (it logs no
/// sizes; bodies are checked against the other servers).
fn parse_python_log(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|l| {
            let start = l.find('"')?;
            let rest = &l[start + 1..];
            let (request, after) = rest.split_once('"')?;
            let mut r = request.split(' ');
            let method = r.next()?.to_string();
            let target = r.next()?;
            let status = after.split_whitespace().next()?.parse().ok()?;
            Some(Logged {
                id: id_of(target)?,
                method,
                status,
                request_bytes: None,
                read_ahead: 0,
                response_body: None,
                wire_bytes: None,
            })
        })
        .collect()
}

#[test]
fn python_http_server() {
    harness::require_root();
    let _serial = harness::serial();
    let seed = seed();
    let server = harness::start_python_http_server();
    let agent = start_agent(server.pid());
    const ANY: &[&str] = &["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];
    let profile = Profile {
        targets: vec![
            ("/index.html", ANY),
            ("/hello.txt", ANY),
            ("/data.bin", &["GET", "HEAD"]),
            ("/missing", ANY),
            ("/sub/", &["GET", "HEAD"]),
        ],
        max_body: 64 * 1024,
        chunked: true,
        expect: true,
        pipelining: true,
    };
    let plans = traffic::plan(seed, CONNECTIONS / 2, EXCHANGES / 3, &profile);
    let started = Instant::now();
    let sent = traffic::run(server.addr, &plans, PARALLEL);
    let traffic_time = started.elapsed();
    settle(&agent);
    let exit = agent.stop();
    let log = server.process.output().stderr();
    let o = Outcome {
        seed,
        plans,
        sent,
        exit,
        traffic_time,
        tls: false,
    };
    judge("python http.server", &o, &log, &parse_python_log(&log));
}

// ---- Go net/http ----------------------------------------------------------------------

/// golog's stderr: method, request URI, status, response body bytes (or `-`).
fn parse_tab_log(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let method = f.next()?.to_string();
            let uri = f.next()?;
            let status = f.next()?.parse().ok()?;
            let response_body = f.next()?.parse().ok();
            Some(Logged {
                id: id_of(uri)?,
                method,
                status,
                request_bytes: None,
                read_ahead: 0,
                response_body,
                wire_bytes: None,
            })
        })
        .collect()
}

/// `wrap`: the listener hands net/http its own connection type (embedding the accepted
/// net.Conn), as connection-tracking and PROXY-protocol libraries do.
fn run_go(version: &str, flavor: harness::GoFlavor, wrap: bool) {
    harness::require_root();
    let tc = harness::go_toolchain(version);
    let bin = harness::build_go_program("golog", &tc, flavor);
    let _serial = harness::serial();
    let seed = seed();
    let mut cmd = Command::new(&bin);
    cmd.args(["-addr", "127.0.0.1:0"]);
    if wrap {
        cmd.arg("-wrap");
    }
    let mut server = Process::spawn("golog", cmd);
    let line =
        server.wait_for_stdout_line(Duration::from_secs(10), |l| l.starts_with("listening on "));
    let addr: SocketAddr = line["listening on ".len()..].trim().parse().unwrap();
    let agent = start_agent(server.pid());
    const ANY: &[&str] = ALL_METHODS;
    let profile = Profile {
        targets: vec![
            ("/", ANY),
            ("/empty", ANY),
            ("/missing", ANY),
            ("/error", ANY),
            ("/big", &["GET", "HEAD", "POST"]),
            ("/stream", &["GET", "POST"]),
        ],
        max_body: 1024 * 1024,
        chunked: true,
        expect: true,
        pipelining: true,
    };
    let plans = traffic::plan(seed, CONNECTIONS, EXCHANGES, &profile);
    let started = Instant::now();
    let sent = traffic::run(addr, &plans, PARALLEL);
    let traffic_time = started.elapsed();
    settle(&agent);
    let exit = agent.stop();
    let log = server.output().stderr();
    let o = Outcome {
        seed,
        plans,
        sent,
        exit,
        traffic_time,
        tls: false,
    };
    let label = format!(
        "Go {} net/http, {}{}",
        tc.exact_version(),
        flavor.name(),
        if wrap { ", wrapped listener" } else { "" }
    );
    judge(&label, &o, &log, &parse_tab_log(&log));
}

#[test]
fn go_1_21_stripped() {
    run_go("1.21", harness::GoFlavor::Stripped, false);
}

#[test]
fn go_1_25_stripped() {
    run_go("1.25", harness::GoFlavor::Stripped, false);
}

#[test]
fn go_1_27_plain_wrapped_listener() {
    run_go("1.27", harness::GoFlavor::Plain, true);
}

// ---- the findings of issue 11, against real nginx --------------------------------

const POST_HEAD: &[u8] = b"POST /static/small.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n";

/// Reads one response with a `Content-Length` body; returns its status.
fn read_status(r: &mut std::io::BufReader<std::net::TcpStream>) -> u16 {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut len = 0u64;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    std::io::copy(&mut r.by_ref().take(len), &mut std::io::sink()).expect("body");
    status
}

/// A POST whose body is sent only after nginx answered 405 (nginx answers from the
/// header section and discards the body afterwards).
fn post_body_after_answer(
    w: &mut std::net::TcpStream,
    r: &mut std::io::BufReader<std::net::TcpStream>,
) -> u16 {
    use std::io::Write;
    w.write_all(POST_HEAD).unwrap();
    let status = read_status(r);
    w.write_all(b"x=1").unwrap();
    status
}

/// (method, path, status) of the SERVER spans, sorted by start.
fn span_lines(stdout: &str) -> Vec<(String, String, u64)> {
    let mut v: Vec<(u64, String, String, u64)> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "SERVER")
        .map(|v| {
            let a = &v["attributes"];
            (
                v["start_unix_ns"].as_u64().unwrap_or(0),
                a["http.request.method"].as_str().unwrap_or("").to_string(),
                a["url.path"].as_str().unwrap_or("").to_string(),
                a["http.response.status_code"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, m, p, s)| (m, p, s)).collect()
}

fn wait_spans(agent: &Agent, n: usize) {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while span_lines(&agent.output().stdout()).len() < n && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    // Anything more would be a duplicate.
    thread::sleep(Duration::from_millis(500));
}

fn one_worker() -> Nginx {
    Nginx {
        workers: 1,
        sendfile: true,
        keepalive_requests: 1000,
        tls: false,
        mtls: false,
    }
}

/// Finding: on a keep-alive connection, two POSTs answered 405 and then a GET: the
/// second POST's span carried 200 and the GET's the next response's status.
#[test]
fn nginx_405_keepalive_status_shift() {
    harness::require_root();
    let _serial = harness::serial();
    let (_dir, nginx, addr) = start_nginx(&one_worker());
    let agent = start_agent(nginx.pid());
    let s = std::net::TcpStream::connect(addr).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut statuses = vec![
        post_body_after_answer(&mut w, &mut r),
        post_body_after_answer(&mut w, &mut r),
    ];
    for _ in 0..2 {
        use std::io::Write;
        w.write_all(b"GET /static/small.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        statuses.push(read_status(&mut r));
    }
    drop((w, r));
    assert_eq!(statuses, [405, 405, 200, 200], "nginx answers");
    wait_spans(&agent, 4);
    let exit = agent.stop();
    let want: Vec<_> = ["POST", "POST", "GET", "GET"]
        .iter()
        .zip(statuses)
        .map(|(m, s)| (m.to_string(), "/static/small.txt".to_string(), u64::from(s)))
        .collect();
    assert_eq!(span_lines(&exit.stdout), want, "stderr: {}", exit.stderr);
}

/// Finding: on fresh connections, every POST answered before its body was read gave
/// no span.
#[test]
fn nginx_post_fresh_connection_no_span() {
    harness::require_root();
    let _serial = harness::serial();
    let (_dir, nginx, addr) = start_nginx(&one_worker());
    let agent = start_agent(nginx.pid());
    for _ in 0..3 {
        let s = std::net::TcpStream::connect(addr).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = std::io::BufReader::new(s);
        assert_eq!(post_body_after_answer(&mut w, &mut r), 405);
    }
    wait_spans(&agent, 3);
    let exit = agent.stop();
    let want = vec![("POST".to_string(), "/static/small.txt".to_string(), 405); 3];
    assert_eq!(span_lines(&exit.stdout), want, "stderr: {}", exit.stderr);
}

// ---- more servers: apache2, lighttpd, gunicorn, node ---------------------------------

/// Exchanges per configuration for the servers below (fewer than nginx's to keep CI
/// lean; every traffic shape still occurs at this size).
const SMALL_EXCHANGES: usize = 600;
const SMALL_CONNECTIONS: usize = 60;

/// One traffic run against a traced server.
struct Outcome {
    seed: u64,
    plans: Vec<traffic::ConnPlan>,
    sent: Vec<Sent>,
    exit: harness::AgentExit,
    traffic_time: Duration,
    /// The traffic went over TLS: every span must say `https`.
    tls: bool,
}

/// Traces `pid` (and its children) while the seeded traffic runs against `addr`, over
/// TLS when `tls` is given.
fn exercise(pid: u32, addr: SocketAddr, profile: &Profile, tls: Option<&TlsClient>) -> Outcome {
    let seed = seed();
    let agent = start_agent(pid);
    let plans = traffic::plan(seed, SMALL_CONNECTIONS, SMALL_EXCHANGES, profile);
    let started = Instant::now();
    let sent = traffic::run_over(addr, &plans, PARALLEL, tls);
    let traffic_time = started.elapsed();
    settle(&agent);
    let exit = agent.stop();
    Outcome {
        seed,
        plans,
        sent,
        exit,
        traffic_time,
        tls: tls.is_some(),
    }
}

/// Compares, prints the table, and fails on any wrong, doubled, extra or uncounted span.
fn judge(label: &str, o: &Outcome, log: &str, logged: &[Logged]) {
    if let Some(keep) = std::env::var_os("PERISCOPE_CONFORMANCE_KEEP") {
        let keep = PathBuf::from(keep).join(label.replace(' ', "-"));
        let _ = fs::create_dir_all(&keep);
        let _ = fs::write(keep.join("access.log"), log);
        let _ = fs::write(keep.join("spans.json"), &o.exit.stdout);
        let _ = fs::write(keep.join("agent.err"), &o.exit.stderr);
        let _ = fs::write(keep.join("sent.txt"), format!("{:#?}", o.sent));
    }
    let mut table = compare(logged, o);
    // What each missing exchange was, to tell a pattern from chance. Two shapes have
    // known reasons: a client abort (the server may log an answer that never reached the
    // wire) and a pipelined burst (servers may answer it with responses coalesced into
    // writes larger than the capture, and the kernel frames requests only).
    for id in &table.missing_ids {
        let found = o.plans.iter().find_map(|p| {
            let i = p.requests.iter().position(|r| r.id == *id)?;
            Some((p, i))
        });
        let Some((p, i)) = found else {
            table
                .missing_shapes
                .push(format!("r{id}: not in the generated traffic"));
            table.missing_unexplained += 1;
            continue;
        };
        let r = &p.requests[i];
        let explained = r.abort != traffic::Abort::No || p.writes == traffic::Writes::Pipelined;
        table.missing_unexplained += usize::from(!explained);
        table.missing_shapes.push(format!(
            "r{id}: {:?} request {}/{} {} body {:?}{}{}{}{}{}",
            p.writes,
            i + 1,
            p.requests.len(),
            r.method,
            r.body,
            if r.expect_continue { " expect-100" } else { "" },
            if r.http10 { " http/1.0" } else { "" },
            if r.close { " close" } else { "" },
            if r.pad_header > 0 {
                format!(" pad {}", r.pad_header)
            } else {
                String::new()
            },
            if r.abort != traffic::Abort::No {
                format!(" {:?}", r.abort)
            } else {
                String::new()
            },
        ));
    }
    table.print(
        &format!(
            "{label} ({} requests sent in {:.1?})",
            o.sent.len(),
            o.traffic_time
        ),
        o.seed,
    );
    table.assert_pass(label);
}

/// Writes the static files the file servers serve under `root/static`.
fn static_root(root: &std::path::Path) {
    fs::create_dir_all(root.join("html/static")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    for (name, size) in STATIC_FILES {
        fs::write(root.join("html/static").join(name), vec![b'x'; *size]).unwrap();
    }
    let _ = Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(root)
        .status();
}

fn file_server_profile() -> Profile {
    const FILE: &[&str] = &["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE"];
    Profile {
        targets: vec![
            ("/static/empty.bin", FILE),
            ("/static/small.txt", FILE),
            ("/static/page.html", FILE),
            ("/static/big.bin", &["GET", "HEAD", "POST"]),
            ("/static/huge.bin", &["GET", "HEAD"]),
            ("/static/missing", ALL_METHODS),
        ],
        max_body: 1024 * 1024,
        chunked: true,
        expect: true,
        pipelining: true,
    }
}

/// Fields separated by `|`: method, target, status, then optional numbers; `-` is 0.
fn parse_bar_log(
    text: &str,
    request_bytes: Option<usize>,
    read_ahead: u64,
    body: Option<usize>,
) -> Vec<Logged> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let num = |i: Option<usize>| {
                i.and_then(|i| f.get(i))
                    .and_then(|v| if *v == "-" { Some(0) } else { v.parse().ok() })
            };
            Some(Logged {
                method: f.first()?.to_string(),
                id: id_of(f.get(1)?)?,
                status: f.get(2)?.parse().ok()?,
                request_bytes: num(request_bytes),
                read_ahead,
                response_body: num(body),
                wire_bytes: None,
            })
        })
        .collect()
}

// apache2 ---------------------------------------------------------------------------

/// `tls`: mod_ssl (OpenSSL 3) with a test certificate and a session cache.
fn run_apache(mpm: &str, tls: bool) {
    harness::require_root();
    let _serial = harness::serial();
    let dir = TempDir::new("conformance-apache");
    let root = dir.path();
    static_root(root);
    let ssl = if tls {
        harness::self_signed_cert(&dir);
        let d = root.display();
        format!(
            "LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so\n\
             LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so\n\
             SSLSessionCache shmcb:{d}/tmp/ssl_scache(512000)\n\
             SSLEngine on\nSSLProtocol -all +TLSv1.2 +TLSv1.3\n\
             SSLCertificateFile {d}/cert.pem\nSSLCertificateKeyFile {d}/key.pem\n"
        )
    } else {
        String::new()
    };
    let port = harness::free_port();
    let d = root.display();
    let modules = "/usr/lib/apache2/modules";
    // %I (bytes read, header section included) and %O need mod_logio (compiled in on
    // Debian); %B is the response body without headers or a `100 Continue`.
    let conf = format!(
        r#"ServerRoot "{d}"
ServerName localhost
Listen 127.0.0.1:{port}
PidFile {d}/apache2.pid
DefaultRuntimeDir {d}/tmp
Mutex file:{d}/tmp default
ErrorLog {d}/error.log
LogLevel warn
LoadModule mpm_{mpm}_module {modules}/mod_mpm_{mpm}.so
LoadModule authz_core_module {modules}/mod_authz_core.so
User nobody
Group nogroup
KeepAlive On
MaxKeepAliveRequests 100
KeepAliveTimeout 5
StartServers 2
DocumentRoot "{d}/html"
<Directory "{d}/html">
    Require all granted
</Directory>
LogFormat "%m|%U%q|%s|%I|%B|%O|%D|%k" conformance
CustomLog {d}/access.log conformance
{ssl}"#
    );
    fs::write(root.join("apache2.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/apache2");
    cmd.arg("-f")
        .arg(root.join("apache2.conf"))
        .arg("-DFOREGROUND");
    // prefork stops its children by signalling its whole process group: give it its own.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut apache = Process::spawn("apache2", cmd);
    // SIGTERM: the parent stops its children, which have written their log lines.
    apache.set_stop_signal(libc::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    apache.wait_for_port(addr, Duration::from_secs(10));
    let tls = tls.then(|| TlsClient::trusting(&root.join("cert.pem").display().to_string()));
    let o = exercise(apache.pid(), addr, &file_server_profile(), tls.as_ref());
    drop(apache);
    let log = fs::read_to_string(root.join("access.log")).unwrap_or_default();
    let mut logged = apache_logged(&log);
    if o.tls {
        // mod_logio's %I counts what crossed the socket: TLS records, not the request.
        for l in &mut logged {
            l.request_bytes = None;
        }
    }
    judge(
        &format!("apache2 {mpm} MPM{}", if o.tls { ", mod_ssl" } else { "" }),
        &o,
        &log,
        &logged,
    );
}

/// apache2's lines; %I only where mod_logio attributed the reads to this request.
fn apache_logged(log: &str) -> Vec<Logged> {
    log.lines()
        .filter_map(|line| {
            // mod_logio counts in %I what ap_check_pipeline peeked of the next request
            // (a speculative read for a leading CRLF, up to 2 bytes) before it logs.
            let mut l = parse_bar_log(line, Some(3), 2, Some(4)).pop()?;
            // With pipelined requests one read can cover two of them: mod_logio then
            // logs all its bytes (in and out) with one request and %I or %O 0 with the
            // other, so neither line's %I says what that request read. %B stays right.
            let f: Vec<&str> = line.split('|').collect();
            if f.get(3) == Some(&"0") || f.get(5) == Some(&"0") {
                l.request_bytes = None;
            }
            Some(l)
        })
        .collect()
}

#[test]
fn apache2_event() {
    run_apache("event", false);
}

#[test]
fn apache2_prefork() {
    run_apache("prefork", false);
}

#[test]
fn apache2_event_mod_ssl() {
    run_apache("event", true);
}

// lighttpd ---------------------------------------------------------------------------

#[test]
fn lighttpd() {
    harness::require_root();
    let _serial = harness::serial();
    let dir = TempDir::new("conformance-lighttpd");
    let root = dir.path();
    static_root(root);
    let port = harness::free_port();
    let d = root.display();
    // %r is the request line (the target is its second field); %I bytes read, %b the
    // response body.
    let conf = format!(
        r#"server.document-root = "{d}/html"
server.bind = "127.0.0.1"
server.port = {port}
server.username = "nobody"
server.groupname = "nogroup"
server.errorlog = "{d}/error.log"
server.upload-dirs = ( "{d}/tmp" )
server.modules = ( "mod_accesslog" )
accesslog.filename = "{d}/access.log"
accesslog.format = "%m|%r|%s|%I|%b"
"#
    );
    fs::write(root.join("lighttpd.conf"), conf).unwrap();
    let mut cmd = Command::new("/usr/sbin/lighttpd");
    cmd.arg("-D").arg("-f").arg(root.join("lighttpd.conf"));
    let mut server = Process::spawn("lighttpd", cmd);
    // SIGTERM: lighttpd flushes its buffered access log on a clean exit.
    server.set_stop_signal(libc::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.wait_for_port(addr, Duration::from_secs(10));
    let o = exercise(server.pid(), addr, &file_server_profile(), None);
    drop(server);
    let log = fs::read_to_string(root.join("access.log")).unwrap_or_default();
    // The request line's target is the second word of field 1.
    let log: String = log
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let target = f
                .get(1)
                .and_then(|r| r.split(' ').nth(1))
                .unwrap_or_default();
            format!(
                "{}|{target}|{}\n",
                f.first().unwrap_or(&""),
                f.get(2..).map(|r| r.join("|")).unwrap_or_default()
            )
        })
        .collect();
    judge(
        "lighttpd",
        &o,
        &log,
        &parse_bar_log(&log, Some(3), 0, Some(4)),
    );
}

// gunicorn ---------------------------------------------------------------------------

/// A WSGI app that reads every body and answers by path.
const WSGI_APP: &str = r#"
def app(environ, start_response):
    environ["wsgi.input"].read()
    path = environ["PATH_INFO"]
    status, body = {
        "/": ("200 OK", b"hello\n"),
        "/created": ("201 Created", b"created\n"),
        "/big": ("200 OK", b"x" * (300 * 1024)),
        "/nocontent": ("204 No Content", b""),
        "/error": ("500 Internal Server Error", b"error\n"),
    }.get(path, ("404 Not Found", b"missing\n"))
    headers = [] if status.startswith("204") else [("Content-Length", str(len(body)))]
    start_response(status, headers)
    return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
"#;

fn app_profile() -> Profile {
    Profile {
        targets: vec![
            ("/", ALL_METHODS),
            ("/created", ALL_METHODS),
            ("/big", &["GET", "HEAD", "POST"]),
            ("/nocontent", &["GET", "POST"]),
            ("/error", &["GET", "POST"]),
            ("/missing", ALL_METHODS),
        ],
        max_body: 1024 * 1024,
        chunked: true,
        expect: true,
        pipelining: true,
    }
}

/// `tls`: `--certfile`/`--keyfile` (Python's ssl module over the system's libssl).
fn run_gunicorn(worker: &str, tls: bool) {
    harness::require_root();
    let _serial = harness::serial();
    let dir = TempDir::new("conformance-gunicorn");
    let root = dir.path();
    fs::write(root.join("confapp.py"), WSGI_APP).unwrap();
    let port = harness::free_port();
    let mut cmd = Command::new("/usr/bin/gunicorn");
    cmd.current_dir(root)
        .args(["--workers", "2", "--worker-class", worker]);
    if tls {
        let (cert, key) = harness::self_signed_cert(&dir);
        cmd.args(["--certfile", &cert, "--keyfile", &key]);
    }
    if worker == "gthread" {
        // With threads > 1 gunicorn silently turns a sync worker into gthread.
        cmd.args(["--threads", "4"]);
    }
    cmd.arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--access-logfile")
        .arg(root.join("access.log"))
        .args(["--access-logformat", "%(m)s|%(U)s?%(q)s|%(s)s|%(B)s"])
        .arg("confapp:app");
    let mut server = Process::spawn("gunicorn", cmd);
    server.set_stop_signal(libc::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.wait_for_port(addr, Duration::from_secs(20));
    let tls = tls.then(|| TlsClient::trusting(&root.join("cert.pem").display().to_string()));
    let o = exercise(server.pid(), addr, &app_profile(), tls.as_ref());
    drop(server);
    let log = fs::read_to_string(root.join("access.log")).unwrap_or_default();
    // gunicorn logs no request size: method, target, status and response body are checked.
    // A request gunicorn refuses itself (400: a bad chunk, chunked HTTP/1.0) is logged by
    // its error path with path `None` and 0 bytes sent whatever error page it wrote:
    // there the log says nothing about the response body.
    let logged: Vec<Logged> = log
        .lines()
        .filter_map(|line| {
            let mut l = parse_bar_log(line, None, 0, Some(3)).pop()?;
            if line
                .split('|')
                .nth(1)
                .is_some_and(|t| t.starts_with("None?"))
            {
                l.response_body = None;
            }
            Some(l)
        })
        .collect();
    let label = format!("gunicorn {worker}{}", if o.tls { ", TLS" } else { "" });
    judge(&label, &o, &log, &logged);
}

#[test]
fn gunicorn_sync() {
    run_gunicorn("sync", false);
}

#[test]
fn gunicorn_gthread() {
    run_gunicorn("gthread", false);
}

#[test]
fn gunicorn_gthread_tls() {
    run_gunicorn("gthread", true);
}

// node http --------------------------------------------------------------------------

/// A node `http` server that reads every body, answers by path and logs each finished
/// response on stderr (synchronous for pipes).
const NODE_APP: &str = r#"
const http = require("http");
const routes = {
  "/": [200, "hello\n"],
  "/created": [201, "created\n"],
  "/big": [200, "x".repeat(300 * 1024)],
  "/nocontent": [204, ""],
  "/error": [500, "error\n"],
};
const server = http.createServer((req, res) => {
  req.on("data", () => {});
  req.on("end", () => {
    const path = req.url.split("?")[0];
    const [status, body] = routes[path] || [404, "missing\n"];
    const sent = req.method === "HEAD" || status === 204 ? 0 : body.length;
    res.on("finish", () => {
      process.stderr.write(`${req.method}|${req.url}|${status}|${sent}\n`);
    });
    if (status !== 204) res.setHeader("Content-Length", body.length);
    res.writeHead(status);
    res.end(status === 204 ? undefined : body);
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
"#;

#[test]
fn node_http() {
    harness::require_root();
    let _serial = harness::serial();
    let dir = TempDir::new("conformance-node");
    let script = dir.path().join("server.js");
    fs::write(&script, NODE_APP).unwrap();
    let mut cmd = Command::new("node");
    cmd.arg(&script);
    let mut server = Process::spawn("node", cmd);
    let line =
        server.wait_for_stdout_line(Duration::from_secs(10), |l| l.starts_with("listening on "));
    let addr: SocketAddr = line["listening on ".len()..].trim().parse().unwrap();
    let o = exercise(server.pid(), addr, &app_profile(), None);
    let log = server.output().stderr();
    judge(
        "node http",
        &o,
        &log,
        &parse_bar_log(&log, None, 0, Some(3)),
    );
}
