//! SERVER spans from real, uninstrumented HTTP/1.x servers, delivered to a
//! real OTLP receiver over gRPC and HTTP/protobuf.
//!
//! Each test starts a receiver, a target server and an untraced "noise"
//! server, attaches the agent to the target's PID, sends an exactly known
//! mixed workload (keep-alive and fresh connections, some concurrent, HTTP/1.0
//! and 1.1, bodies, HEAD, 2xx–5xx), stops the agent, and checks that every
//! request became exactly one span with the right attributes and nothing
//! else was exported.
//!
//! Needs root and the agent binary (`PERISCOPE_BIN`, default
//! `target/release/periscope`), nginx, python3, and the Go toolchains of
//! `PERISCOPE_GO_TOOLCHAINS` (1.21 and 1.25). Tests take a global lock
//! (`harness::serial`) because they share the kernel; running them with
//! `-- --test-threads=1` keeps the output readable:
//!
//! ```text
//! cargo test -p periscope-e2e --test server_spans -- --test-threads=1
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use periscope_e2e::client::{self, Exchange, TargetKind};
use periscope_e2e::harness::{self, Agent, GoFlavor, Server};
use periscope_e2e::receiver::{Protocol, ReceivedSpan, Receiver};

/// Requests sent to the traced server in each test.
const REQUESTS: usize = 80;
/// Requests sent to the untraced server meanwhile.
const NOISE_REQUESTS: usize = 20;
/// How long the spans may take to arrive.
const SPAN_TIMEOUT: Duration = Duration::from_secs(20);
/// Extra wait after the expected count arrived, to catch duplicates.
const SETTLE: Duration = Duration::from_millis(1500);
/// Allowed skew between span timestamps and the client's wall clock.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Target {
    Python,
    Nginx,
    Go(&'static str, GoFlavor),
}

impl Target {
    /// Builds what must be built (before anything is started).
    fn prepare(self) -> Option<std::path::PathBuf> {
        match self {
            Target::Go(version, flavor) => Some(harness::build_go_program(
                "goserver",
                &harness::go_toolchain(version),
                flavor,
            )),
            _ => None,
        }
    }

    fn start(self, bin: Option<&std::path::Path>) -> Server {
        match self {
            Target::Python => harness::start_python_http_server(),
            Target::Nginx => harness::start_nginx(),
            Target::Go(..) => harness::start_go_server(bin.expect("built")),
        }
    }
}

fn run(target: Target, proto: Protocol, seed: u64) {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin(); // fail early and clearly when it is missing
    let go_bin = target.prepare();

    let receiver = Receiver::start();
    let server = target.start(go_bin.as_deref());
    let noise = harness::start_python_http_server();
    let handler_pids = server.handler_pids();
    assert_eq!(handler_pids.len(), 1, "one request-handling process");
    let expected = Expected {
        proto,
        pid: handler_pids[0],
        exe: harness::exe_name(handler_pids[0]),
        host: harness::host_name(),
        port: server.port(),
        noise_port: noise.port(),
        noise_pid: noise.pid(),
    };

    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".to_string(),
        receiver.endpoint(proto),
        "--otlp-protocol".to_string(),
        proto.flag().to_string(),
    ]);

    // Untraced traffic at the same time as the traced traffic.
    let noise_plan = client::workload(TargetKind::PythonHttpServer, NOISE_REQUESTS, seed, "noise");
    let noise_addr = noise.addr;
    let noise_thread = thread::spawn(move || noise_plan.run(noise_addr));
    let plan = client::workload(server.kind, REQUESTS, seed, "periscope-e2e");
    let sent = plan.run(server.addr);
    let noise_sent = noise_thread.join().expect("noise client");
    assert_eq!(noise_sent.len(), NOISE_REQUESTS);
    assert_eq!(sent.len(), REQUESTS);
    // The servers must have answered as the workload expects, or the test
    // environment (not the agent) is broken.
    for e in sent.iter().chain(&noise_sent) {
        assert_eq!(
            Some(e.status),
            e.expect_status,
            "{target:?} answered {} {} with an unexpected status",
            e.method,
            e.target
        );
    }

    receiver.wait_for_spans(REQUESTS, SPAN_TIMEOUT);
    thread::sleep(SETTLE);
    let exit = agent.stop();
    let spans = receiver.spans();

    let mut problems = check(&expected, &sent, &spans);
    if !exit.status.success() {
        problems.insert(0, format!("agent exited with {}", exit.status));
    }
    if !problems.is_empty() {
        let shown = problems.len().min(60);
        panic!(
            "{target:?} over {}: {} problem(s) with {} span(s) for {} requests:\n  {}{}\n\
             --- agent stderr (tail) ---\n{}",
            proto.flag(),
            problems.len(),
            spans.len(),
            REQUESTS,
            problems[..shown].join("\n  "),
            if shown < problems.len() {
                "\n  ..."
            } else {
                ""
            },
            harness::tail(&exit.stderr, 6000)
        );
    }
    drop(server);
    drop(noise);
}

struct Expected {
    proto: Protocol,
    /// The process whose syscalls carry the requests.
    pid: u32,
    /// Basename of its executable: service.name and process.executable.name.
    exe: String,
    host: String,
    port: u16,
    noise_port: u16,
    noise_pid: u32,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn check(x: &Expected, sent: &[Exchange], spans: &[ReceivedSpan]) -> Vec<String> {
    let mut problems = Vec::new();

    // Nothing from the untraced server or any other process.
    for s in spans {
        let port = s.attr("server.port");
        let pid = s.resource.get("process.pid").cloned();
        let ua = s.attr("user_agent.original").unwrap_or_default();
        if port == Some(x.noise_port.to_string())
            || pid == Some(x.noise_pid.to_string())
            || ua.starts_with("noise/")
        {
            problems.push(format!(
                "span from the untraced server (port {port:?}, pid {pid:?}, user agent {ua:?})"
            ));
        }
    }

    // Counts and the multiset of (method, path, status).
    let server_spans: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.span.kind == SpanKind::Server as i32)
        .collect();
    if spans.len() != sent.len() || server_spans.len() != sent.len() {
        problems.push(format!(
            "expected exactly {} spans, all SERVER; got {} spans, {} SERVER",
            sent.len(),
            spans.len(),
            server_spans.len()
        ));
    }
    let mut want: BTreeMap<(String, String, String), i64> = BTreeMap::new();
    for e in sent {
        let key = (e.method.clone(), e.path().to_string(), e.status.to_string());
        *want.entry(key).or_default() += 1;
    }
    for s in &server_spans {
        let key = (
            s.attr("http.request.method").unwrap_or_default(),
            s.attr("url.path").unwrap_or_default(),
            s.attr("http.response.status_code").unwrap_or_default(),
        );
        *want.entry(key).or_default() -= 1;
    }
    for ((method, path, status), n) in &want {
        if *n > 0 {
            problems.push(format!(
                "{n} x ({method} {path} -> {status}) sent but no span"
            ));
        } else if *n < 0 {
            problems.push(format!(
                "{} x span ({method} {path} -> {status}) not sent",
                -n
            ));
        }
    }

    // Each span against the request it is for (user agents are unique).
    let by_ua: HashMap<&str, &Exchange> = sent.iter().map(|e| (e.user_agent.as_str(), e)).collect();
    let mut seen_ua = HashSet::new();
    let mut seen_span_ids = HashSet::new();
    for s in &server_spans {
        let ua = s.attr("user_agent.original").unwrap_or_default();
        let Some(e) = by_ua.get(ua.as_str()) else {
            problems.push(format!(
                "span {:?} has user_agent.original {ua:?}, which no request sent",
                s.span.name
            ));
            continue;
        };
        if !seen_ua.insert(ua.clone()) {
            problems.push(format!(
                "more than one span for {} {} ({ua})",
                e.method, e.target
            ));
        }
        let what = format!("{} {} {} ({ua})", e.method, e.target, e.version);
        let mut attr = |key: &str, want: String| {
            let got = s.attr(key);
            if got.as_deref() != Some(want.as_str()) {
                problems.push(format!("{what}: {key} = {got:?}, expected {want:?}"));
            }
        };
        attr("http.request.method", e.method.clone());
        attr("url.path", e.path().to_string());
        attr("url.scheme", "http".to_string());
        attr("http.response.status_code", e.status.to_string());
        attr("network.protocol.version", e.version.as_str().to_string());
        attr("server.address", "127.0.0.1".to_string());
        attr("server.port", x.port.to_string());
        attr("client.address", "127.0.0.1".to_string());
        attr("client.port", e.local_port.to_string());
        attr("user_agent.original", e.user_agent.clone());

        let mut res = |key: &str, want: String| {
            let got = s.resource.get(key);
            if got != Some(&want) {
                problems.push(format!(
                    "{what}: resource {key} = {got:?}, expected {want:?}"
                ));
            }
        };
        res("service.name", x.exe.clone());
        res("process.executable.name", x.exe.clone());
        res("process.pid", x.pid.to_string());
        res("host.name", x.host.clone());

        if s.protocol != x.proto {
            problems.push(format!("{what}: span arrived over the other OTLP protocol"));
        }
        let span = &s.span;
        if span.name != e.method && !span.name.starts_with(&format!("{} ", e.method)) {
            problems.push(format!("{what}: span name {:?}", span.name));
        }
        let code = span.status.as_ref().map_or(0, |st| st.code);
        let want_code = if e.status >= 500 {
            StatusCode::Error
        } else {
            StatusCode::Unset
        };
        if code != want_code as i32 {
            problems.push(format!(
                "{what}: status code {code}, expected {want_code:?} for HTTP {}",
                e.status
            ));
        }
        if span.trace_id.len() != 16 || span.trace_id.iter().all(|&b| b == 0) {
            problems.push(format!("{what}: invalid trace id {:?}", span.trace_id));
        }
        if span.span_id.len() != 8 || span.span_id.iter().all(|&b| b == 0) {
            problems.push(format!("{what}: invalid span id {:?}", span.span_id));
        } else if !seen_span_ids.insert(span.span_id.clone()) {
            problems.push(format!("{what}: duplicate span id {:?}", span.span_id));
        }
        if !s.is_root() {
            problems.push(format!(
                "{what}: has a parent {:?}, but the client is untraced and sent no traceparent",
                span.parent_span_id
            ));
        }
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        let slack = CLOCK_SLACK.as_nanos() as u64;
        if start > end {
            problems.push(format!("{what}: start {start} after end {end}"));
        }
        if start + slack < nanos(e.started) || end > nanos(e.finished) + slack {
            problems.push(format!(
                "{what}: span [{start}, {end}] is not within the client's [{}, {}] (±{CLOCK_SLACK:?})",
                nanos(e.started),
                nanos(e.finished)
            ));
        }
        let slept_ms = e
            .target
            .strip_prefix("/slow?ms=")
            .and_then(|m| m.parse::<u64>().ok());
        if let Some(ms) = slept_ms.filter(|ms| end.saturating_sub(start) < ms * 1_000_000) {
            problems.push(format!(
                "{what}: lasted {} ns, but the handler sleeps {ms} ms",
                end.saturating_sub(start)
            ));
        }
    }
    problems
}

#[test]
fn python_http_server_grpc() {
    run(Target::Python, Protocol::Grpc, 1);
}

#[test]
fn python_http_server_http_protobuf() {
    run(Target::Python, Protocol::HttpProtobuf, 2);
}

#[test]
fn nginx_grpc() {
    run(Target::Nginx, Protocol::Grpc, 3);
}

#[test]
fn nginx_http_protobuf() {
    run(Target::Nginx, Protocol::HttpProtobuf, 4);
}

#[test]
fn go1_21_stripped_grpc() {
    run(Target::Go("1.21", GoFlavor::Stripped), Protocol::Grpc, 5);
}

#[test]
fn go1_21_stripped_http_protobuf() {
    run(
        Target::Go("1.21", GoFlavor::Stripped),
        Protocol::HttpProtobuf,
        6,
    );
}

#[test]
fn go1_25_cgo_grpc() {
    run(Target::Go("1.25", GoFlavor::Cgo), Protocol::Grpc, 7);
}

#[test]
fn go1_25_cgo_http_protobuf() {
    run(Target::Go("1.25", GoFlavor::Cgo), Protocol::HttpProtobuf, 8);
}

// The remaining toolchain x flavor combinations, one protocol each.

#[test]
fn go1_21_plain_http_protobuf() {
    run(
        Target::Go("1.21", GoFlavor::Plain),
        Protocol::HttpProtobuf,
        9,
    );
}

#[test]
fn go1_21_cgo_grpc() {
    run(Target::Go("1.21", GoFlavor::Cgo), Protocol::Grpc, 10);
}

#[test]
fn go1_25_plain_grpc() {
    run(Target::Go("1.25", GoFlavor::Plain), Protocol::Grpc, 11);
}

#[test]
fn go1_25_stripped_http_protobuf() {
    run(
        Target::Go("1.25", GoFlavor::Stripped),
        Protocol::HttpProtobuf,
        12,
    );
}

/// The checker itself, on synthetic spans: exact spans pass, and each kind
/// of deviation is reported. Needs neither root nor the agent.
#[test]
fn checker_accepts_exact_spans_and_reports_deviations() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    use periscope_e2e::client::Version;

    let t0 = SystemTime::now();
    let exchange = |i: u16, method: &str, target: &str, status: u16, version| Exchange {
        method: method.to_string(),
        target: target.to_string(),
        version,
        user_agent: format!("periscope-e2e/1.0 (r{i})"),
        expect_status: Some(status),
        status,
        response_version: version.as_str().to_string(),
        body_len: 0,
        local_port: 40000 + i,
        connection: u64::from(i),
        started: t0 + Duration::from_millis(10 * u64::from(i)),
        finished: t0 + Duration::from_millis(10 * u64::from(i) + 30),
    };
    let sent = vec![
        exchange(0, "GET", "/users/1?x=2", 200, Version::Http11),
        exchange(1, "POST", "/echo", 404, Version::Http10),
        exchange(2, "GET", "/error", 500, Version::Http11),
        exchange(3, "GET", "/slow?ms=15", 200, Version::Http11),
    ];
    let x = Expected {
        proto: Protocol::Grpc,
        pid: 4242,
        exe: "goserver".to_string(),
        host: "h".to_string(),
        port: 8080,
        noise_port: 9090,
        noise_pid: 4343,
    };
    let kv = |k: &str, v: Value| KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
    };
    let s = |v: &str| Value::StringValue(v.to_string());
    let span_for = |i: usize, e: &Exchange| {
        let resource = [
            ("service.name", "goserver"),
            ("process.executable.name", "goserver"),
            ("process.pid", "4242"),
            ("host.name", "h"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        ReceivedSpan {
            protocol: Protocol::Grpc,
            resource,
            scope_name: "periscope".to_string(),
            scope_version: String::new(),
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![i as u8 + 1; 8],
                name: format!("{} /route", e.method),
                kind: SpanKind::Server as i32,
                start_time_unix_nano: nanos(e.started) + 1_000_000,
                end_time_unix_nano: nanos(e.finished) - 1_000_000,
                status: (e.status >= 500).then(|| Status {
                    code: StatusCode::Error as i32,
                    message: String::new(),
                }),
                attributes: vec![
                    kv("http.request.method", s(&e.method)),
                    kv("url.path", s(e.path())),
                    kv("url.scheme", s("http")),
                    kv(
                        "http.response.status_code",
                        Value::IntValue(e.status.into()),
                    ),
                    kv("network.protocol.version", s(e.version.as_str())),
                    kv("server.address", s("127.0.0.1")),
                    kv("server.port", Value::IntValue(8080)),
                    kv("client.address", s("127.0.0.1")),
                    kv("client.port", Value::IntValue(e.local_port.into())),
                    kv("user_agent.original", s(&e.user_agent)),
                ],
                ..Default::default()
            },
        }
    };
    let good: Vec<ReceivedSpan> = sent
        .iter()
        .enumerate()
        .map(|(i, e)| span_for(i, e))
        .collect();
    assert_eq!(check(&x, &sent, &good), Vec::<String>::new());

    let expect_problem = |spans: Vec<ReceivedSpan>, needle: &str| {
        let problems = check(&x, &sent, &spans);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem containing {needle:?}, got {problems:#?}"
        );
    };
    let with = |i: usize, f: &dyn Fn(&mut ReceivedSpan)| {
        let mut spans = good.clone();
        f(&mut spans[i]);
        spans
    };
    let set_attr = |key: &'static str, v: Value| {
        move |s: &mut ReceivedSpan| {
            for a in &mut s.span.attributes {
                if a.key == key {
                    a.value = Some(AnyValue {
                        value: Some(v.clone()),
                    });
                }
            }
        }
    };

    expect_problem(good[1..].to_vec(), "sent but no span");
    let mut dup = good.clone();
    dup.push(good[0].clone());
    expect_problem(dup, "more than one span");
    expect_problem(
        with(0, &set_attr("client.port", Value::IntValue(1))),
        "client.port",
    );
    expect_problem(
        with(1, &set_attr("network.protocol.version", s("1.1"))),
        "network.protocol.version",
    );
    expect_problem(
        with(0, &set_attr("url.path", s("/users/1?x=2"))),
        "not sent",
    );
    expect_problem(
        with(0, &set_attr("server.port", Value::IntValue(9090))),
        "untraced",
    );
    expect_problem(with(2, &|s| s.span.status = None), "status code");
    expect_problem(
        with(0, &|s| {
            s.span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: String::new(),
            })
        }),
        "status code",
    );
    expect_problem(
        with(0, &|s| s.protocol = Protocol::HttpProtobuf),
        "other OTLP protocol",
    );
    expect_problem(
        with(0, &|s| {
            s.resource
                .insert("process.pid".to_string(), "1".to_string());
        }),
        "process.pid",
    );
    expect_problem(
        with(3, &|s| {
            s.span.end_time_unix_nano = s.span.start_time_unix_nano + 1_000_000
        }),
        "sleeps 15 ms",
    );
    expect_problem(
        with(0, &|s| s.span.start_time_unix_nano -= 5_000_000_000),
        "not within",
    );
    expect_problem(
        with(0, &|s| s.span.parent_span_id = vec![7; 8]),
        "has a parent",
    );
    expect_problem(
        with(1, &|s| s.span.span_id = vec![1; 8]),
        "duplicate span id",
    );
    expect_problem(
        with(0, &|s| s.span.kind = SpanKind::Client as i32),
        "all SERVER",
    );
    expect_problem(with(0, &|s| s.span.name = "GETX".to_string()), "span name");
}
