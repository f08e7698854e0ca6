//! HTTP/2 and gRPC spans from real, uninstrumented programs, checked against each
//! program's own record of what it served:
//! - nginx serving h2c (prior knowledge) under `h2load` and `curl --http2-prior-knowledge`,
//!   and h2 over TLS (ALPN) under `h2load` and `curl --http2`: one SERVER span per
//!   access-log line, with its method, path, status and body bytes;
//! - grpc-go (Debian's golang-google-grpc-dev, built with two Go releases, plain and
//!   stripped) server and client, both traced: unary and cancelled server-streaming
//!   health calls, per side and status code as each program logged them, every server
//!   span the child of its client span, the RPC metrics counting the same calls; and
//!   a Go HTTP/1.1 server whose handlers call grpc-go downstream: each call the child
//!   of the request that made it, or (two calls of one method at once) of none;
//! - a Python grpcio server (the standard health service) called by a traced grpcio
//!   client: Health/Check answered OK and NOT_FOUND, as SERVER and CLIENT spans with the
//!   rpc.* attributes and the status each side must have, counts as the server logged.
//!
//! Needs root, the agent binary (`PERISCOPE_BIN`), nginx, nghttp2-client (h2load), curl,
//! and a venv with grpcio and grpcio-health-checking (`PERISCOPE_GRPC_PYTHON`, default
//! `.tools/grpc/bin/python`); `cargo xtask test h2` installs them all.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use periscope_e2e::harness::{self, Agent, Process};
use periscope_e2e::receiver::{Protocol, Receiver};

/// How long the spans may take to arrive.
const SPAN_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra wait after the expected count arrived, to catch duplicates.
const SETTLE: Duration = Duration::from_millis(1500);

fn grpc_python() -> PathBuf {
    std::env::var_os("PERISCOPE_GRPC_PYTHON").map_or_else(
        || harness::workspace_root().join(".tools/grpc/bin/python"),
        PathBuf::from,
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A plain HTTP/1.1 GET of the agent's /metrics.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sum of a counter's samples whose line starts with `prefix`.
fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Calls `rpc_{kind}_duration_seconds_count` counts with this status code, summed.
fn rpc_calls(text: &str, kind: &str, code: &str) -> f64 {
    let name = format!("rpc_{kind}_duration_seconds_count{{");
    let label = format!("rpc_grpc_status_code=\"{code}\"");
    text.lines()
        .filter(|l| l.starts_with(&name) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One access-log line / one span, as compared.
type Row = (String, String, u16, u64);

#[test]
fn nginx_h2c_spans_match_access_log() {
    nginx_h2_spans_match_access_log(false);
}

/// The same over TLS (ALPN h2): the plaintext comes from nginx's SSL_read/SSL_write.
#[test]
fn nginx_h2_over_tls_spans_match_access_log() {
    nginx_h2_spans_match_access_log(true);
}

fn nginx_h2_spans_match_access_log(tls: bool) {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let receiver = Receiver::start();
    let template = if tls {
        "tests/programs/h2/nginx-h2-tls.conf.in"
    } else {
        "tests/programs/h2/nginx-h2.conf.in"
    };
    let server = harness::start_nginx_from(&harness::workspace_root().join(template));
    let dir = server.dir().expect("nginx dir").to_path_buf();
    // A static page larger than one DATA frame (sent with sendfile) and a small one.
    let page: String = (0..300).map(|i| format!("line {i} of a page\n")).collect();
    std::fs::write(dir.join("html/static/page.txt"), &page).unwrap();
    std::fs::write(dir.join("html/static/small.txt"), "small\n").unwrap();
    // For many streams at once: nginx then writes a dozen streams' HEADERS and DATA
    // frames with one SSL_write / writev, far past the captured head (mid), and DATA
    // frames of 16 KB (big).
    let mid: String = (0..70)
        .map(|i| format!("line {i} of a mid page\n"))
        .collect();
    std::fs::write(dir.join("html/static/mid.txt"), &mid).unwrap();
    let big: String = (0..900)
        .map(|i| format!("line {i} of a big page\n"))
        .collect();
    std::fs::write(dir.join("html/static/big.txt"), &big).unwrap();
    for f in ["page.txt", "small.txt", "mid.txt", "big.txt"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("html/static").join(f),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let metrics_port = harness::free_port();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".to_string(),
        receiver.endpoint(Protocol::Grpc),
        "--otlp-protocol".to_string(),
        "grpc".to_string(),
        "--prometheus".to_string(),
        metrics_addr.to_string(),
    ]);
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{}", server.port());
    // h2c by prior knowledge; over TLS, h2 by ALPN (the certificate is self-signed).
    let curl_h2 = if tls {
        ["--http2", "-k"].as_slice()
    } else {
        ["--http2-prior-knowledge"].as_slice()
    };
    // curl: one connection per URL (curl 7.88 fails several URLs over one h2c prior-
    // knowledge connection to nginx 1.22 with exit 16, untraced too).
    let mut curl_conns = 0;
    for p in [
        "/",
        "/ok",
        "/missing",
        "/static/small.txt",
        "/created?x=1",
        "/error",
        "/static/page.txt",
    ] {
        let out = run_ok(
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_version}"])
                .args(curl_h2)
                .arg(format!("{base}{p}")),
        );
        assert_eq!(out, "2", "curl spoke HTTP/{out} to {p}");
        curl_conns += 1;
    }
    // h2load: 4 connections, 10 streams in flight on each, the URIs in turn.
    let h2load_conns = 4;
    let out = run_ok(Command::new("h2load").args([
        "-n",
        "200",
        "-c",
        &h2load_conns.to_string(),
        "-m",
        "10",
        &format!("{base}/ok"),
        &format!("{base}/created"),
        &format!("{base}/missing"),
        &format!("{base}/static/small.txt"),
    ]));
    assert!(
        // h2load counts the 404s of /missing as failed, not errored.
        out.contains("200 done") && out.contains(" 0 errored"),
        "h2load did not complete:\n{out}"
    );
    // 20 streams in flight on each of 2 connections: responses coalesced into writes of
    // many frames (over TLS, before the kernel followed frames in the plaintext, this
    // gave 2 spans of 400 requests, the rest counted unplaced).
    let coalesced_conns = 2;
    let out = run_ok(Command::new("h2load").args([
        "-n",
        "200",
        "-c",
        &coalesced_conns.to_string(),
        "-m",
        "20",
        &format!("{base}/static/mid.txt"),
        &format!("{base}/static/big.txt"),
        &format!("{base}/ok"),
    ]));
    assert!(
        out.contains("200 done") && out.contains("200 succeeded"),
        "h2load (20 streams per connection) did not complete:\n{out}"
    );
    let h2load_conns = h2load_conns + coalesced_conns;

    let log_path = dir.join("access.log");
    let deadline = Instant::now() + SPAN_TIMEOUT;
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.lines().count() >= 407 || Instant::now() > deadline {
            break log;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut truth: Vec<Row> = log
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 5, "access log line {l:?}");
            assert_eq!(f[4], "HTTP/2.0", "{l}");
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(truth.len(), 407, "nginx logged every request");
    receiver.wait_for_spans(truth.len(), SPAN_TIMEOUT);
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();
    let mut problems = Vec::new();
    let mut got: Vec<Row> = Vec::new();
    for s in &spans {
        if s.kind() != SpanKind::Server {
            problems.push(format!("not SERVER: {:?}", s.span));
        }
        if s.attr("network.protocol.version").as_deref() != Some("2") {
            problems.push(format!("network.protocol.version: {:?}", s.span));
        }
        if s.attr("url.scheme").as_deref() != Some(scheme) {
            problems.push(format!("url.scheme: {:?}", s.span));
        }
        let path = s.attr("url.path").unwrap_or_default();
        let target = match s.attr("url.query") {
            Some(q) => format!("{path}?{}", q.replace("REDACTED", "1")),
            None => path,
        };
        got.push((
            s.attr("http.request.method").unwrap_or_default(),
            target,
            s.attr("http.response.status_code")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            s.attr("http.response.body.size")
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX),
        ));
    }
    truth.sort();
    got.sort();
    if got != truth {
        let count = |rows: &[Row]| {
            let mut m: BTreeMap<Row, i64> = BTreeMap::new();
            for r in rows {
                *m.entry(r.clone()).or_default() += 1;
            }
            m
        };
        let (t, g) = (count(&truth), count(&got));
        for k in t.keys().chain(g.keys()) {
            let (a, b) = (
                t.get(k).copied().unwrap_or(0),
                g.get(k).copied().unwrap_or(0),
            );
            if a != b {
                problems.push(format!("{k:?}: access log {a}, spans {b}"));
            }
        }
        problems.dedup();
    }
    let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total");
    if unplaced != 0.0 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("periscope_h2_streams_unplaced_total"))
            .collect();
        problems.push(format!("unplaced streams: {lines:?}"));
    }
    let conns = metric_sum(&text, "periscope_h2_connections_total");
    if conns != f64::from(curl_conns + h2load_conns) {
        problems.push(format!(
            "periscope_h2_connections_total = {conns}, want {}",
            curl_conns + h2load_conns
        ));
    }
    let http = metric_sum(&text, "http_server_request_duration_seconds_count");
    if http != truth.len() as f64 {
        problems.push(format!(
            "http_server_request_duration_seconds_count = {http}, want {}",
            truth.len()
        ));
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s), {} spans for {} log lines:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        truth.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}

/// Exact counts: every call a SERVER and a CLIENT span, each server span the child of
/// its client span. grpcio (C-core) sends each batch of frames with one sendmsg of up
/// to ~30 iovecs: the capture walks them all (up to `MAX_IOV_LOOP`, with `bpf_loop`).
#[test]
fn grpcio_health_check_server_and_client_spans() {
    grpcio_health_check(true);
}

/// Without `bpf_loop` (kernels before 5.17, here forced with
/// `PERISCOPE_KERNEL_FRAMING=0`) the walk stops at `MAX_IOV` (8) iovecs: the rest of a
/// grpcio write is a gap that hides frame boundaries, the sessions go blind, and the
/// streams without a span are counted as lost to a gap; no span is wrong.
#[test]
fn grpcio_without_bpf_loop_streams_lost_to_the_iovec_cap_are_counted() {
    grpcio_health_check(false);
}

fn grpcio_health_check(exact: bool) {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let python = grpc_python();
    assert!(
        python.exists(),
        "{} missing: `cargo xtask test` makes the grpcio venv",
        python.display()
    );
    let dir = harness::TempDir::new("grpc");
    let go_file = dir.path().join("go");
    let receiver = Receiver::start();
    let mut cmd = Command::new(&python);
    cmd.arg("-u")
        .arg(harness::program_dir("h2").join("grpc_server.py"));
    let mut server = harness::start_announced("grpc_server", cmd);
    // Seeded mix of OK and NOT_FOUND calls on one channel.
    let (ok, not_found) = (13u32, 7u32);
    let mut cmd = Command::new(&python);
    cmd.arg("-u")
        .arg(harness::program_dir("h2").join("grpc_client.py"))
        .arg(server.addr.to_string())
        .arg(ok.to_string())
        .arg(not_found.to_string())
        .arg("14")
        .arg(&go_file);
    let mut client = Process::spawn("grpc_client", cmd);
    client.wait_for_stdout_line(Duration::from_secs(20), |l| l == "ready");
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let framing = if exact { "1" } else { "0" };
    let agent = Agent::start_on_pids(
        &[server.pid(), client.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[("PERISCOPE_KERNEL_FRAMING", framing)],
    );
    std::fs::write(&go_file, b"").unwrap();
    let done = client.wait_for_stdout_line(Duration::from_secs(30), |l| l.starts_with("done "));
    assert_eq!(done, format!("done {ok} {not_found}"), "the client saw");
    let n = (ok + not_found) as usize;
    if exact {
        receiver.wait_for_spans(2 * n, SPAN_TIMEOUT);
    }
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();
    // The server's own log: one line per Check it answered, with the code.
    let server_log = server.process.output().stdout();
    let logged = |code: u32| {
        server_log
            .lines()
            .filter(|l| l.starts_with("check ") && l.ends_with(&format!(" {code}")))
            .count()
    };
    assert_eq!((logged(0), logged(5)), (ok as usize, not_found as usize));

    let mut problems = Vec::new();
    let mut counts: BTreeMap<(String, String, bool), u32> = BTreeMap::new();
    for s in &spans {
        let kind = match s.kind() {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            k => {
                problems.push(format!("kind {k:?}: {:?}", s.span));
                continue;
            }
        };
        let want = [
            ("rpc.system", "grpc"),
            ("rpc.service", "grpc.health.v1.Health"),
            ("rpc.method", "Check"),
            ("network.protocol.version", "2"),
            ("http.request.method", "POST"),
        ];
        for (k, v) in want {
            if s.attr(k).as_deref() != Some(v) {
                problems.push(format!("{kind} span {k}={:?}, want {v}", s.attr(k)));
            }
        }
        if s.name() != "grpc.health.v1.Health/Check" {
            problems.push(format!("span name {:?}", s.name()));
        }
        let code = s.attr("rpc.grpc.status_code").unwrap_or_default();
        // NOT_FOUND is the caller's error, not the server's (OTel gRPC conventions).
        let want_error = kind == "client" && code == "5";
        if s.is_error() != want_error {
            problems.push(format!(
                "{kind} span with status code {code}: error={}, want {want_error}",
                s.is_error()
            ));
        }
        *counts
            .entry((kind.to_string(), code, s.is_error()))
            .or_default() += 1;
    }
    let want: BTreeMap<(String, String, bool), u32> = [
        (("client".to_string(), "0".to_string(), false), ok),
        (("client".to_string(), "5".to_string(), true), not_found),
        (("server".to_string(), "0".to_string(), false), ok),
        (("server".to_string(), "5".to_string(), false), not_found),
    ]
    .into_iter()
    .collect();
    let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total");
    let gap = metric_sum(&text, "periscope_h2_streams_unplaced_total{reason=\"gap\"}");
    if exact {
        if counts != want {
            problems.push(format!("span counts {counts:?}, want {want:?}"));
        }
        let clients: std::collections::HashMap<String, _> = spans
            .iter()
            .filter(|s| s.kind() == SpanKind::Client)
            .map(|s| (s.span_id_hex(), s))
            .collect();
        let unjoined = spans
            .iter()
            .filter(|s| s.kind() == SpanKind::Server)
            .filter(|s| {
                clients
                    .get(&s.parent_span_id_hex())
                    .is_none_or(|c| c.trace_id_hex() != s.trace_id_hex())
            })
            .count();
        if unjoined > 0 {
            problems.push(format!(
                "{unjoined} server spans not children of a client span"
            ));
        }
        if unplaced != 0.0 {
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("periscope_h2_streams_unplaced_total"))
                .collect();
            problems.push(format!("unplaced streams: {lines:?}"));
        }
    } else {
        // Never more spans of a kind than calls of it; what is missing was counted
        // (a stream wholly inside a gap is seen by no one, hence <=).
        for (k, n) in &counts {
            if want.get(k).is_none_or(|w| n > w) {
                problems.push(format!("{n} span(s) {k:?}, want at most {:?}", want.get(k)));
            }
        }
        if gap < 1.0 {
            problems.push(format!(
                "no stream lost to a gap without bpf_loop: is the capture still capped at MAX_IOV? ({} spans)",
                spans.len()
            ));
        }
        if spans.len() as f64 + unplaced > (2 * n) as f64 {
            problems.push(format!(
                "{} spans + {unplaced} unplaced streams > {} calls' streams",
                spans.len(),
                2 * n
            ));
        }
    }
    // RPC metrics (Prometheus) against the spans (OTLP): with always_on sampling every
    // call recorded is exported, so per side and status code the counts agree; and gRPC
    // calls are in no HTTP family.
    for ((kind, code, _), n) in &counts {
        let metric = rpc_calls(&text, kind, code);
        if metric != f64::from(*n) {
            problems.push(format!(
                "rpc_{kind}_duration_seconds_count with status {code} = {metric}, {n} spans"
            ));
        }
    }
    let rpc_total = metric_sum(&text, "rpc_server_duration_seconds_count")
        + metric_sum(&text, "rpc_client_duration_seconds_count");
    if rpc_total != spans.len() as f64 {
        problems.push(format!(
            "{rpc_total} calls in the RPC metrics, {} spans",
            spans.len()
        ));
    }
    for fam in [
        "http_server_request_duration_seconds_count",
        "http_client_request_duration_seconds_count",
    ] {
        if metric_sum(&text, fam) != 0.0 {
            problems.push(format!("gRPC calls counted in {fam}"));
        }
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s), {} spans for {n} calls:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
    drop(client);
    server.process.assert_running();
}

/// One grpc-go build: Go release and flavor.
type GoBuild<'a> = (&'a str, harness::GoFlavor);

/// grpc-go (Debian's golang-google-grpc-dev, 1.33) server and client, both traced: a
/// seeded mix of unary Health/Check (OK, NOT_FOUND) and server-streaming Health/Watch
/// (cancelled by the client after its first message), concurrent streams on one
/// connection and calls on fresh ones. Per side, the spans' (method, code) counts equal
/// what each program logged; every server span is the child of the client span of its
/// stream; the RPC metrics count what the spans say.
fn grpc_go(server: GoBuild, client: GoBuild, tls: bool) {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let seed = harness::seed_from_env("PERISCOPE_GRPC_SEED");
    let n = 80;
    let server_bin =
        harness::build_go_program("gogrpc", &harness::go_toolchain(server.0), server.1);
    let client_bin =
        harness::build_go_program("gogrpc", &harness::go_toolchain(client.0), client.1);
    let dir = harness::TempDir::new("gogrpc");
    let log_path = dir.path().join("server.log");
    let go_file = dir.path().join("go");
    let tls_env = if tls { "1" } else { "0" };
    let mut cmd = Command::new(&server_bin);
    cmd.arg("server").arg(&log_path).env("GOGRPC_TLS", tls_env);
    let srv = harness::start_announced("gogrpc-server", cmd);
    let mut cmd = Command::new(&client_bin);
    cmd.env("GOGRPC_TLS", tls_env)
        .arg("client")
        .arg(srv.addr.to_string())
        .arg(seed.to_string())
        .arg(n.to_string())
        .arg(&go_file);
    let mut cli = Process::spawn("gogrpc-client", cmd);
    let receiver = Receiver::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let agent = Agent::start_on_pids(
        &[srv.pid(), cli.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[],
    );
    std::fs::write(&go_file, b"").unwrap();
    cli.wait_for_stdout_line(Duration::from_secs(60), |l| l == "done");
    // (method, code) -> calls, as each program logged them.
    let count_lines = |text: &str| {
        let mut m: BTreeMap<(String, String), u32> = BTreeMap::new();
        for l in text.lines().filter(|l| *l != "done") {
            let (method, code) = l.rsplit_once(' ').expect("METHOD CODE");
            *m.entry((method.to_string(), code.to_string())).or_default() += 1;
        }
        m
    };
    let client_calls = count_lines(&cli.output().stdout());
    assert_eq!(client_calls.values().sum::<u32>(), n, "the client's lines");
    // The server logs a call when its handler returns (a cancelled Watch a moment after
    // the client saw it end).
    let deadline = Instant::now() + SPAN_TIMEOUT;
    let server_calls = loop {
        let m = count_lines(&std::fs::read_to_string(&log_path).unwrap_or_default());
        if m.values().sum::<u32>() >= n || Instant::now() > deadline {
            break m;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(server_calls.values().sum::<u32>(), n, "the server's lines");
    receiver.wait_for_spans(2 * n as usize, SPAN_TIMEOUT);
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();

    let mut problems = Vec::new();
    let mut got: [BTreeMap<(String, String), u32>; 2] = Default::default();
    let mut clients = std::collections::HashMap::new();
    for s in &spans {
        if s.kind() == SpanKind::Client {
            clients.insert(s.span_id_hex(), s);
        }
    }
    for s in &spans {
        let (side, kind) = match s.kind() {
            SpanKind::Server => (0, "server"),
            SpanKind::Client => (1, "client"),
            k => {
                problems.push(format!("kind {k:?}: {:?}", s.span));
                continue;
            }
        };
        for (k, v) in [
            ("rpc.system", "grpc"),
            ("rpc.service", "grpc.health.v1.Health"),
            ("network.protocol.version", "2"),
        ] {
            if s.attr(k).as_deref() != Some(v) {
                problems.push(format!("{kind} span {k}={:?}, want {v}", s.attr(k)));
            }
        }
        let scheme = if tls { "https" } else { "http" };
        if side == 0 && s.attr("url.scheme").as_deref() != Some(scheme) {
            problems.push(format!(
                "server span url.scheme={:?}, want {scheme}",
                s.attr("url.scheme")
            ));
        }
        let method = format!(
            "/grpc.health.v1.Health/{}",
            s.attr("rpc.method").unwrap_or_default()
        );
        let code = s.attr("rpc.grpc.status_code").unwrap_or_default();
        // Servers: CANCELLED and NOT_FOUND are the caller's doing; clients: any non-OK
        // code is an error (OTel gRPC conventions).
        let want_error = kind == "client" && code != "0";
        if s.is_error() != want_error {
            problems.push(format!(
                "{kind} span {method} {code}: error={}, want {want_error}",
                s.is_error()
            ));
        }
        if side == 0 {
            match clients.get(&s.parent_span_id_hex()) {
                Some(c)
                    if c.trace_id_hex() == s.trace_id_hex()
                        && c.attr("rpc.method") == s.attr("rpc.method") => {}
                _ => problems.push(format!("server span {method} {code} not joined")),
            }
        }
        *got[side].entry((method, code)).or_default() += 1;
    }
    if got[0] != server_calls {
        problems.push(format!(
            "server spans {:?}, the server logged {server_calls:?}",
            got[0]
        ));
    }
    if got[1] != client_calls {
        problems.push(format!(
            "client spans {:?}, the client logged {client_calls:?}",
            got[1]
        ));
    }
    for (side, kind) in [(0, "server"), (1, "client")] {
        let mut by_code: BTreeMap<&str, u32> = BTreeMap::new();
        for ((_, code), c) in &got[side] {
            *by_code.entry(code).or_default() += c;
        }
        for (code, c) in by_code {
            let metric = rpc_calls(&text, kind, code);
            if metric != f64::from(c) {
                problems.push(format!(
                    "rpc_{kind}_duration_seconds_count with status {code} = {metric}, {c} spans"
                ));
            }
        }
    }
    let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total");
    if unplaced != 0.0 {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("periscope_h2_streams_unplaced_total"))
            .collect();
        problems.push(format!("{unplaced} unplaced streams: {lines:?}"));
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s), {} spans for {n} calls:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}

#[test]
fn grpc_go121_plain_server_go127_stripped_client() {
    grpc_go(
        ("1.21", harness::GoFlavor::Plain),
        ("1.27", harness::GoFlavor::Stripped),
        false,
    );
}

/// The same over TLS (Go crypto/tls plaintext from its uprobes, ALPN h2). grpc-go's
/// writer puts a burst's frames into one TLS write: behind a 3 KB request, the next
/// streams' frames lie past the captured head, and the kernel follows the frames in the
/// plaintext as it does in h2c syscalls (without: 68 spans of 400 in a trial run).
#[test]
fn grpc_go125_server_go123_stripped_client_over_tls() {
    grpc_go(
        ("1.25", harness::GoFlavor::Plain),
        ("1.23", harness::GoFlavor::Stripped),
        true,
    );
}

/// A Go HTTP/1.1 server whose handlers call gRPC downstream (gogrpc `front`, stripped
/// Go 1.23) in front of a grpc-go server (Go 1.27), both traced: grpc-go writes a call's
/// stream from its own writer goroutine, so only the call's probe (grpc-go's
/// `(*http2Client).NewStream`) tells which goroutine made it. A seeded mix of /check (the
/// handler's goroutine calls Health/Check), /spawned (a goroutine it starts does) and
/// /watch (Health/Watch, cancelled after its first message), first one at a time, then
/// four at a time. Every front request is one SERVER span; every gRPC CLIENT span with a
/// parent has the front request that made it as parent (same trace, the method its
/// path calls, one call per request); every such span one at a time has one; the rest
/// are exactly the streams counted ambiguous (another call of the same method was
/// waiting); every gRPC SERVER span is the child of its CLIENT span. Seeded
/// (`PERISCOPE_GRPC_SEED`).
#[test]
fn grpc_go_handlers_parent_the_calls_they_make() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let seed = harness::seed_from_env("PERISCOPE_GRPC_SEED");
    let server_bin = harness::build_go_program(
        "gogrpc",
        &harness::go_toolchain("1.27"),
        harness::GoFlavor::Plain,
    );
    let front_bin = harness::build_go_program(
        "gogrpc",
        &harness::go_toolchain("1.23"),
        harness::GoFlavor::Stripped,
    );
    let dir = harness::TempDir::new("gogrpc-front");
    let server_log = dir.path().join("server.log");
    let front_log = dir.path().join("front.log");
    let mut cmd = Command::new(&server_bin);
    cmd.arg("server").arg(&server_log);
    let srv = harness::start_announced("gogrpc-server", cmd);
    let mut cmd = Command::new(&front_bin);
    cmd.arg("front").arg(srv.addr.to_string()).arg(&front_log);
    let front = harness::start_announced("gogrpc-front", cmd);
    let receiver = Receiver::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let agent = Agent::start_on_pids(
        &[srv.pid(), front.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[],
    );
    let mut rng = periscope_e2e::traffic::Rng::new(seed);
    let paths = ["/check", "/spawned", "/watch"];
    let mut urls = |n: usize| -> Vec<String> {
        (0..n)
            .map(|_| format!("http://{}{}", front.addr, rng.pick(&paths)))
            .collect()
    };
    let (alone, together) = (45, 45);
    // One at a time on one keep-alive connection, then four at a time.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "-o", "/dev/null"])
        .args(urls(alone));
    run_ok(&mut cmd);
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--fail", "--parallel", "--parallel-max", "4"]);
    for u in urls(together) {
        cmd.args(["-o", "/dev/null", &u]);
    }
    run_ok(&mut cmd);
    let n = alone + together;
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + SPAN_TIMEOUT;
    while (lines(&front_log).len() < n || lines(&server_log).len() < n) && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    let front_lines = lines(&front_log);
    assert_eq!(front_lines.len(), n, "the front's lines");
    assert_eq!(lines(&server_log).len(), n, "the gRPC server's lines");
    receiver.wait_for_spans(3 * n, SPAN_TIMEOUT);
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();

    let mut problems = Vec::new();
    let is_grpc = |s: &&periscope_e2e::receiver::ReceivedSpan| s.attr("rpc.system").is_some();
    let fronts: std::collections::HashMap<String, _> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Server && !is_grpc(s))
        .map(|s| (s.span_id_hex(), s))
        .collect();
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client && is_grpc(s))
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Server && is_grpc(s))
        .collect();
    let mut logged: BTreeMap<String, u32> = BTreeMap::new();
    for l in &front_lines {
        let (path, _code) = l.split_once(' ').expect("PATH CODE");
        *logged.entry(path.to_string()).or_default() += 1;
    }
    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    for s in fronts.values() {
        *served
            .entry(s.attr("url.path").unwrap_or_default())
            .or_default() += 1;
    }
    if served != logged {
        problems.push(format!(
            "front SERVER spans by path {served:?}, its log {logged:?}"
        ));
    }
    if clients.len() != n || servers.len() != n {
        problems.push(format!(
            "{} gRPC client and {} server spans for {n} calls",
            clients.len(),
            servers.len()
        ));
    }
    let mut children: std::collections::HashMap<String, u32> = Default::default();
    let mut parented = 0;
    for c in &clients {
        if c.is_root() {
            continue;
        }
        parented += 1;
        let method = c.attr("rpc.method").unwrap_or_default();
        match fronts.get(&c.parent_span_id_hex()) {
            Some(f) if f.trace_id_hex() == c.trace_id_hex() => {
                let path = f.attr("url.path").unwrap_or_default();
                let want = if path == "/watch" { "Watch" } else { "Check" };
                if method != want {
                    problems.push(format!("a {method} call's parent is a {path} request"));
                }
                *children.entry(f.span_id_hex()).or_default() += 1;
            }
            _ => problems.push(format!(
                "a {method} call's parent {} is no front request of its trace",
                c.parent_span_id_hex()
            )),
        }
    }
    if let Some((_, k)) = children.iter().find(|(_, k)| **k > 1) {
        problems.push(format!("a front request is the parent of {k} calls"));
    }
    let ambiguous =
        metric_sum(&text, "periscope_go_grpc_calls_total{outcome=\"ambiguous\"") as usize;
    let linked = metric_sum(&text, "periscope_go_grpc_calls_total{outcome=\"linked\"") as usize;
    eprintln!(
        "{parented} of {} calls parented, {linked} linked, {ambiguous} ambiguous",
        clients.len()
    );
    if parented < alone || parented != linked || clients.len() - parented != ambiguous {
        problems.push(format!(
            "{parented} of {} calls parented ({alone} made one at a time), {linked} linked, {ambiguous} ambiguous",
            clients.len()
        ));
    }
    let by_id: std::collections::HashMap<String, _> =
        clients.iter().map(|c| (c.span_id_hex(), c)).collect();
    for s in &servers {
        match by_id.get(&s.parent_span_id_hex()) {
            Some(c) if c.trace_id_hex() == s.trace_id_hex() => {}
            _ => problems.push(format!(
                "gRPC server span {} not joined to its client span",
                s.attr("rpc.method").unwrap_or_default()
            )),
        }
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s), {} spans for {n} requests:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}

#[test]
fn grpc_go127_stripped_server_go121_plain_client() {
    grpc_go(
        ("1.27", harness::GoFlavor::Stripped),
        ("1.21", harness::GoFlavor::Plain),
        false,
    );
}

/// One exchange as compared: method, path, status, request and response body bytes.
type Exchange = (String, String, u16, u64, u64);

/// `METHOD PATH PROTO STATUS IN OUT` lines (goh2c's log and its client's output).
fn goh2c_lines(text: &str) -> BTreeMap<Exchange, u32> {
    let mut m = BTreeMap::new();
    for l in text.lines().filter(|l| *l != "done" && *l != "ready") {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 6, "line {l:?}");
        let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| panic!("line {l:?}"));
        let key = (
            f[0].to_string(),
            f[1].to_string(),
            num(f[3]) as u16,
            num(f[4]),
            num(f[5]),
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

/// The server's log lines once `n` are there (or `SPAN_TIMEOUT` passed): the server
/// writes each after its handler, a moment after its client saw the response.
fn logged_lines(log_path: &std::path::Path, n: usize) -> BTreeMap<Exchange, u32> {
    let deadline = Instant::now() + SPAN_TIMEOUT;
    loop {
        let m = goh2c_lines(&std::fs::read_to_string(log_path).unwrap_or_default());
        if m.values().sum::<u32>() as usize >= n || Instant::now() > deadline {
            return m;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn span_exchange(s: &periscope_e2e::receiver::ReceivedSpan) -> Exchange {
    let num = |k: &str| s.attr(k).and_then(|v| v.parse::<u64>().ok());
    // Server spans carry `url.path`; client spans `url.full`.
    let path = s.attr("url.path").or_else(|| {
        let full = s.attr("url.full")?;
        let after_scheme = full.split_once("://")?.1;
        Some(after_scheme[after_scheme.find('/')?..].to_string())
    });
    (
        s.attr("http.request.method").unwrap_or_default(),
        path.unwrap_or_default(),
        num("http.response.status_code").unwrap_or(0) as u16,
        num("http.request.body.size").unwrap_or(0),
        num("http.response.body.size").unwrap_or(u64::MAX),
    )
}

/// What differs between the spans and the programs' own lines: one SERVER span per
/// logged line and one CLIENT span per client line (method, path, status, body sizes),
/// every span `network.protocol.version=2`, the server spans of requests from the traced
/// client (`from_traced_client`) children of the client span of the same exchange, the
/// others roots.
fn exchange_problems(
    spans: &[periscope_e2e::receiver::ReceivedSpan],
    logged: &BTreeMap<Exchange, u32>,
    client_lines: &BTreeMap<Exchange, u32>,
    from_traced_client: &dyn Fn(&periscope_e2e::receiver::ReceivedSpan) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut got: [BTreeMap<Exchange, u32>; 2] = Default::default();
    let clients: std::collections::HashMap<String, _> = spans
        .iter()
        .filter(|s| s.kind() == SpanKind::Client)
        .map(|s| (s.span_id_hex(), s))
        .collect();
    for s in spans {
        let x = span_exchange(s);
        let side = match s.kind() {
            SpanKind::Server => 0,
            SpanKind::Client => 1,
            k => {
                problems.push(format!("kind {k:?}: {x:?}"));
                continue;
            }
        };
        if s.attr("network.protocol.version").as_deref() != Some("2") {
            problems.push(format!(
                "{x:?}: network.protocol.version {:?}",
                s.attr("network.protocol.version")
            ));
        }
        if side == 0 && from_traced_client(s) {
            match clients.get(&s.parent_span_id_hex()) {
                Some(c) if c.trace_id_hex() == s.trace_id_hex() && span_exchange(c) == x => {}
                _ => problems.push(format!(
                    "server span {x:?} of the traced client not joined (trace {} parent {}; client spans of it: {:?})",
                    s.trace_id_hex(),
                    s.parent_span_id_hex(),
                    clients
                        .values()
                        .filter(|c| span_exchange(c) == x)
                        .map(|c| (c.trace_id_hex(), c.span_id_hex()))
                        .collect::<Vec<_>>()
                )),
            }
        } else if side == 0 && !s.is_root() {
            problems.push(format!(
                "server span {x:?} of an untraced client has a parent"
            ));
        }
        *got[side].entry(x).or_default() += 1;
    }
    for (side, want, who) in [
        (0, logged, "the server logged"),
        (1, client_lines, "the client printed"),
    ] {
        if got[side] != *want {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, n)| got[side].get(*k) != Some(n))
                .collect();
            let extra: Vec<_> = got[side]
                .iter()
                .filter(|(k, n)| want.get(*k) != Some(n))
                .collect();
            problems.push(format!(
                "{who}: not as spans {missing:?}; spans not so {extra:?}"
            ));
        }
    }
    problems
}

/// Go net/http serving HTTP/2 in cleartext through golang.org/x/net/http2/h2c (Debian's
/// sources; a stripped Go 1.23 server) to clients that ask for it by Upgrade (`curl
/// --http2` and `nghttp -u`: the request that asks, sent as HTTP/1.1, is answered on
/// stream 1 as HTTP/2; one request per connection and several) and by prior knowledge
/// (curl, and a traced Go 1.27 client). Truth is the programs' own lines: one SERVER
/// span per line of the server's log, with its method, path, status and both body
/// sizes, every one `network.protocol.version=2`; the Go client's CLIENT spans equal its
/// output and each is the parent of the server span of its request; the upgraded
/// connections are counted and no stream is unplaced. Upgraded connections get
/// responses under 1500 bytes: the kernel does not follow HTTP/2 frames after an
/// Upgrade yet (see the README). Seeded (`PERISCOPE_H2C_SEED`).
#[test]
fn go_h2c_upgrade_and_prior_knowledge_spans_match_its_log() {
    use periscope_e2e::traffic::Rng;
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let seed = harness::seed_from_env("PERISCOPE_H2C_SEED");
    let mut rng = Rng::new(seed);
    let server_bin = harness::build_go_program(
        "goh2c",
        &harness::go_toolchain("1.23"),
        harness::GoFlavor::Stripped,
    );
    let client_bin = harness::build_go_program(
        "goh2c",
        &harness::go_toolchain("1.27"),
        harness::GoFlavor::Plain,
    );
    let dir = harness::TempDir::new("goh2c");
    let log_path = dir.path().join("server.log");
    let go_file = dir.path().join("go");
    let mut cmd = Command::new(&server_bin);
    cmd.arg("server").arg(&log_path);
    let srv = harness::start_announced("goh2c-server", cmd);
    let go_n = 20;
    let mut cmd = Command::new(&client_bin);
    cmd.arg("client")
        .arg(srv.addr.to_string())
        .arg(seed.to_string())
        .arg(go_n.to_string())
        .arg(&go_file);
    let mut cli = Process::spawn("goh2c-client", cmd);
    let receiver = Receiver::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let agent = Agent::start_on_pids(
        &[srv.pid(), cli.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[],
    );
    let base = format!("http://{}", srv.addr);
    let body_file = dir.path().join("body");
    // After an Upgrade the socket is the kernel's HTTP/1 class: its frames are not
    // followed in the kernel, and a response written as several frames in one write
    // larger than the capture's head would hide a frame header (counted, no span). So
    // on upgraded connections responses stay under 1500 bytes; with prior knowledge
    // they go up to 40 KB.
    let path = |rng: &mut Rng, max: u64| {
        let code = *rng.pick(&[200, 200, 201, 404, 500]);
        let size = rng.below(3) * rng.below(max);
        format!("{base}/s/{code}/{size}")
    };
    let mut requests = 0;
    let mut upgrades = 0;
    // curl --http2 on http:// asks for the upgrade with its first request; the URLs
    // after it go as streams 3, 5... on the upgraded connection. Bodies go in the
    // HTTP/1.1 request that asks.
    for urls in [1, 1, 1, 1, 1, 1, 1, 1, 3, 3] {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--http2", "-w", "%{http_version}\\n"]);
        if urls == 1 && rng.chance(50) {
            let size = rng.below(30_000) as usize;
            std::fs::write(&body_file, vec![b'p'; size]).unwrap();
            cmd.arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        for _ in 0..urls {
            cmd.args(["-o", "/dev/null"]).arg(path(&mut rng, 750));
        }
        let out = run_ok(&mut cmd);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            vec!["2"; urls],
            "curl --http2"
        );
        requests += urls;
        upgrades += 1;
    }
    // nghttp asks for the upgrade too (and opens idle streams for priorities). Its two
    // requests go at once, so their responses may share one write: under 700 bytes each.
    // nghttp exits 0 even when a stream of its got no response (about one run in 18
    // here had the server log one line short), so what it was answered is counted from
    // its own trace of the responses' headers: the server logs a request before its
    // stream ends, so every answered one is in the log.
    for _ in 0..2 {
        let out = run_ok(
            Command::new("nghttp")
                .args(["-u", "-n", "-v"])
                .args([path(&mut rng, 350), path(&mut rng, 350)]),
        );
        let answered = out
            .lines()
            .filter(|l| l.contains("] recv (stream_id=") && l.contains(") :status: "))
            .count();
        if answered != 2 {
            eprintln!("nghttp -u: {answered} of 2 requests answered:\n{out}");
        }
        requests += answered;
        upgrades += 1;
    }
    // Prior knowledge: the preface opens the connection.
    for _ in 0..4 {
        let out = run_ok(
            Command::new("curl")
                .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null"])
                .args(["-w", "%{http_version}"])
                .arg(path(&mut rng, 20_000)),
        );
        assert_eq!(out, "2", "curl --http2-prior-knowledge");
        requests += 1;
    }
    std::fs::write(&go_file, b"").unwrap();
    cli.wait_for_stdout_line(Duration::from_secs(60), |l| l == "done");
    requests += go_n;
    let logged = logged_lines(&log_path, requests);
    let client_lines = goh2c_lines(&cli.output().stdout());
    assert_eq!(
        logged.values().sum::<u32>() as usize,
        requests,
        "the server's lines:\n{logged:#?}\nthe Go client's:\n{client_lines:#?}"
    );
    assert_eq!(
        client_lines.values().sum::<u32>() as usize,
        go_n,
        "the client's lines"
    );
    receiver.wait_for_spans(requests + go_n, SPAN_TIMEOUT);
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();

    let mut problems = exchange_problems(&spans, &logged, &client_lines, &|s| {
        s.attr("user_agent.original")
            .is_some_and(|ua| ua.starts_with("Go-http-client"))
    });
    let upgraded = metric_sum(&text, "periscope_h2_upgrades_total");
    if upgraded != upgrades as f64 {
        problems.push(format!(
            "periscope_h2_upgrades_total {upgraded}, want {upgrades}"
        ));
    }
    let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total");
    if unplaced != 0.0 {
        problems.push(format!("{unplaced} unplaced streams"));
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s), {} spans for {requests} logged requests and {go_n} client calls:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}

/// node's http2 module in cleartext, server and client traced: the client sends 60
/// seeded GETs and POSTs (bodies up to 20 KB each way) on one session, up to four
/// streams at a time. node writes frames with writev (one iovec per frame, DATA
/// payloads apart) and reads 64 KiB at a time, far more than a syscall's head capture:
/// only the kernel's HTTP/2 framing (frame headers and header blocks copied, DATA
/// payloads counted) keeps such a connection readable. One SERVER span per line the
/// server logged and one CLIENT span per line the client printed (method, path,
/// status, both body sizes), every server span the child of its client span, none
/// counted unplaced. Seeded (`PERISCOPE_H2C_SEED`).
#[test]
fn node_h2c_server_and_client_spans_match_their_lines() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let seed = harness::seed_from_env("PERISCOPE_H2C_SEED");
    let script = harness::workspace_root().join("tests/programs/h2/node_h2.js");
    let dir = harness::TempDir::new("node-h2");
    let log_path = dir.path().join("server.log");
    let go_file = dir.path().join("go");
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg("server").arg(&log_path);
    let srv = harness::start_announced("node-h2-server", cmd);
    let n = 60;
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg("client")
        .arg(srv.addr.to_string())
        .arg(seed.to_string())
        .arg(n.to_string())
        .arg(&go_file)
        .arg("20000")
        .arg("n");
    let mut cli = Process::spawn("node-h2-client", cmd);
    let receiver = Receiver::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let agent = Agent::start_on_pids(
        &[srv.pid(), cli.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[],
    );
    std::fs::write(&go_file, b"").unwrap();
    cli.wait_for_stdout_line(Duration::from_secs(60), |l| l == "done");
    let client_lines = goh2c_lines(&cli.output().stdout());
    assert_eq!(
        client_lines.values().sum::<u32>() as usize,
        n,
        "the client's lines"
    );
    let logged = logged_lines(&log_path, n);
    assert_eq!(
        logged.values().sum::<u32>() as usize,
        n,
        "the server's lines"
    );
    // Every exchange ends as a span or as a count: wait for the two to add up.
    let deadline = Instant::now() + SPAN_TIMEOUT;
    let (text, spans) = loop {
        let text = scrape(metrics_addr);
        let spans = receiver.spans();
        let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total") as usize;
        if spans.len() + unplaced >= 2 * n || Instant::now() > deadline {
            thread::sleep(SETTLE);
            break (scrape(metrics_addr), receiver.spans());
        }
        thread::sleep(Duration::from_millis(200));
    };
    let exit = agent.stop();
    let mut problems = exchange_problems(&spans, &logged, &client_lines, &|_| true);
    let without_span = 2 * n - spans.len().min(2 * n);
    let unplaced = metric_sum(&text, "periscope_h2_streams_unplaced_total");
    if unplaced != without_span as f64 {
        problems.push(format!(
            "{unplaced} streams counted unplaced, {without_span} exchanges (both ends) without a span"
        ));
    }
    // node accepts with accept(fd, NULL, NULL): the kernel reads the peer from the new
    // socket at the accept (this host's BTF gives the offsets). A procfs lookup at the
    // first data finds nothing if the client has closed by then (the likely cause of
    // one run in which none of the 60 server spans joined).
    let lookups = metric_sum(&text, "periscope_peer_address_lookups_total");
    if lookups != 0.0 {
        problems.push(format!(
            "{lookups} peer addresses looked up in procfs, not read at the accept"
        ));
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    eprintln!(
        "node h2c, seed {seed}: {} spans, {without_span} of {} exchange ends counted unplaced",
        spans.len(),
        2 * n
    );
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s), {} spans:\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        spans.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}

/// A connection older than the agent: a traced Go 1.27 h2c client (prior knowledge)
/// made 5 requests on its connection to a traced Go 1.25 server before the agent
/// attached, and makes 20 more after. What those 5 did to the HPACK tables is unknown,
/// so no header may be decoded on that connection: no span comes from it, the
/// connection is counted at both ends, and so is every stream after the attach, once
/// per end. Seeded (`PERISCOPE_H2C_SEED`).
#[test]
fn h2_connection_older_than_the_agent_is_counted_not_traced() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let seed = harness::seed_from_env("PERISCOPE_H2C_SEED");
    let server_bin = harness::build_go_program(
        "goh2c",
        &harness::go_toolchain("1.25"),
        harness::GoFlavor::Plain,
    );
    let client_bin = harness::build_go_program(
        "goh2c",
        &harness::go_toolchain("1.27"),
        harness::GoFlavor::Plain,
    );
    let dir = harness::TempDir::new("goh2c-old");
    let log_path = dir.path().join("server.log");
    let go_file = dir.path().join("go");
    let mut cmd = Command::new(&server_bin);
    cmd.arg("server").arg(&log_path);
    let srv = harness::start_announced("goh2c-server", cmd);
    let (before, n) = (5, 20);
    let mut cmd = Command::new(&client_bin);
    cmd.arg("client")
        .arg(srv.addr.to_string())
        .arg(seed.to_string())
        .arg(n.to_string())
        .arg(&go_file)
        .arg(before.to_string());
    let mut cli = Process::spawn("goh2c-client", cmd);
    cli.wait_for_stdout_line(Duration::from_secs(30), |l| l == "ready");
    let receiver = Receiver::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()));
    let agent = Agent::start_on_pids(
        &[srv.pid(), cli.pid()],
        receiver.endpoint(Protocol::Grpc),
        metrics_addr,
        &[],
    );
    std::fs::write(&go_file, b"").unwrap();
    cli.wait_for_stdout_line(Duration::from_secs(60), |l| l == "done");
    let logged = logged_lines(&log_path, before + n);
    assert_eq!(
        logged.values().sum::<u32>() as usize,
        before + n,
        "the server's lines"
    );
    let mid_stream = |text: &str| {
        metric_sum(
            text,
            "periscope_h2_streams_unplaced_total{reason=\"mid_stream\"}",
        )
    };
    let deadline = Instant::now() + SPAN_TIMEOUT;
    while mid_stream(&scrape(metrics_addr)) < (2 * n) as f64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(SETTLE);
    let text = scrape(metrics_addr);
    let exit = agent.stop();
    let spans = receiver.spans();
    let mut problems = Vec::new();
    for s in &spans {
        problems.push(format!("span {:?} {:?}", s.kind(), span_exchange(s)));
    }
    let conns = metric_sum(&text, "periscope_h2_mid_stream_connections_total");
    if conns != 2.0 {
        problems.push(format!(
            "periscope_h2_mid_stream_connections_total {conns}, want 2"
        ));
    }
    let counted = mid_stream(&text);
    if counted != (2 * n) as f64 {
        problems.push(format!(
            "{counted} streams counted mid_stream, want {}",
            2 * n
        ));
    }
    let other = metric_sum(&text, "periscope_h2_streams_unplaced_total") - counted;
    if other != 0.0 {
        problems.push(format!("{other} streams unplaced for another reason"));
    }
    if !exit.status.success() {
        problems.push(format!("agent exited with {}", exit.status));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s):\n  {}\n--- agent stderr (tail) ---\n{}",
        problems.len(),
        problems.join("\n  "),
        harness::tail(&exit.stderr, 4000)
    );
}
