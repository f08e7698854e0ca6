//! Traces inside one process, thread-per-request model: a Python threaded server
//! (tests/programs/pyproxy) calls a backend from the thread serving each request. The
//! agent must make each outgoing call a CLIENT span under the SERVER span of the
//! request that caused it — with concurrent requests and no cross-talk — and honour an
//! incoming `traceparent`. The backend is not traced: client spans must still appear and
//! nothing must wait for a server span that will never come.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::Command,
    time::Duration,
};

use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_concurrent},
    harness::{self, Agent, Process, python3, start_python_http_server},
    receiver::{Protocol, ReceivedSpan, Receiver},
};

fn start_pyproxy(backend: SocketAddr) -> (Process, SocketAddr) {
    let script = harness::program_dir("pyproxy").join("pyproxy.py");
    let mut cmd = Command::new(python3());
    cmd.arg("-u")
        .arg(script)
        .arg("0")
        .env("BACKEND", backend.to_string());
    let mut p = Process::spawn("pyproxy", cmd);
    let line = p.wait_for_stdout_line(Duration::from_secs(20), |l| l.starts_with("listening on "));
    let addr: SocketAddr = line["listening on ".len()..].trim().parse().unwrap();
    p.wait_for_port(addr, Duration::from_secs(20));
    (p, addr)
}

fn kind(s: &ReceivedSpan) -> i32 {
    s.span.kind
}

const SERVER: i32 = 2; // opentelemetry.proto.trace.v1.Span.SpanKind
const CLIENT: i32 = 3;

#[test]
fn calls_made_while_serving_are_children_without_cross_talk() {
    harness::require_root();
    let _serial = harness::serial();
    let backend = start_python_http_server();
    let (proxy, addr) = start_pyproxy(backend.addr);
    let recv = Receiver::start();
    let agent = Agent::start([
        "--pid".to_string(),
        proxy.pid().to_string(),
        "--otlp-endpoint".into(),
        recv.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        "grpc".into(),
    ]);
    // 8 concurrent clients x 5 requests, each request makes 2 backend calls.
    let batches: Vec<Batch> = (0..8)
        .map(|c| Batch {
            mode: ConnMode::KeepAlive,
            requests: (0..5)
                .map(|i| {
                    Request::get("/call?n=2")
                        .with_user_agent(&format!("tree-{c}-{i}"))
                        .expect(200)
                })
                .collect(),
        })
        .collect();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut sent = run_concurrent(addr, batches);
    sent.extend(run_concurrent(
        addr,
        vec![Batch {
            mode: ConnMode::Fresh,
            requests: vec![
                Request::get("/call?n=2")
                    .with_user_agent("with-traceparent")
                    .with_header("traceparent", traceparent)
                    .expect(200),
            ],
        }],
    ));
    assert_eq!(sent.len(), 41);
    let first = recv.wait_for_spans(41 * 3, Duration::from_secs(20));
    assert_eq!(first.len(), 41 * 3, "spans before the timeout");
    // Whatever arrives after the expected count is a duplicate or a stray span.
    std::thread::sleep(Duration::from_millis(1500));
    let spans = recv.spans();
    assert_eq!(
        spans.len(),
        41 * 3,
        "one server and two client spans per request, nothing more after settling"
    );
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    let servers: Vec<&ReceivedSpan> = spans.iter().filter(|s| kind(s) == SERVER).collect();
    let clients: Vec<&ReceivedSpan> = spans.iter().filter(|s| kind(s) == CLIENT).collect();
    assert_eq!(servers.len(), 41, "one server span per request");
    assert_eq!(
        clients.len(),
        82,
        "one client span per backend call (untraced backend)"
    );

    // Every client span hangs under exactly one server span, in its trace, inside its
    // time window; every server span has exactly its two calls.
    let by_id: BTreeMap<String, &ReceivedSpan> =
        servers.iter().map(|s| (s.span_id_hex(), *s)).collect();
    let mut children: BTreeMap<String, usize> = BTreeMap::new();
    for c in &clients {
        let parent = c.parent_span_id_hex();
        let p = by_id.get(&parent).unwrap_or_else(|| {
            panic!(
                "client span {} has no server parent ({parent:?})",
                c.span_id_hex()
            )
        });
        assert_eq!(
            c.trace_id_hex(),
            p.trace_id_hex(),
            "child in its parent's trace"
        );
        assert!(
            c.span.start_time_unix_nano >= p.span.start_time_unix_nano
                && c.span.end_time_unix_nano <= p.span.end_time_unix_nano,
            "child nested in its parent's time window"
        );
        assert_eq!(c.attr("server.port"), Some(backend.port().to_string()));
        assert!(
            c.attr("url.full")
                .is_some_and(|u| u.contains("/hello.txt?call=REDACTED"))
        );
        *children.entry(parent).or_default() += 1;
    }
    for s in &servers {
        assert_eq!(
            children.get(&s.span_id_hex()),
            Some(&2),
            "two calls under {}",
            s.name()
        );
    }
    // Distinct requests never share a trace (no cross-talk between concurrent ones).
    let traces: BTreeSet<String> = servers.iter().map(|s| s.trace_id_hex()).collect();
    assert_eq!(traces.len(), 41);
    // The incoming traceparent is honoured, and children follow it.
    let tp = servers
        .iter()
        .find(|s| s.attr("user_agent.original").as_deref() == Some("with-traceparent"))
        .expect("span of the request with traceparent");
    assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tp.parent_span_id_hex(), "00f067aa0ba902b7");
    let tp_children = clients
        .iter()
        .filter(|c| c.parent_span_id_hex() == tp.span_id_hex());
    assert!(
        tp_children
            .clone()
            .all(|c| c.trace_id_hex() == "4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(tp_children.count(), 2);
}

/// `periscope_adaptive` at 1 span/s per service: a call that fails (a 404 seen by the
/// client is an error) is kept, and so is the healthy server span above it — the trace
/// stays whole — while a proxy whose calls succeed stays capped.
#[test]
fn adaptive_sampling_keeps_the_callers_of_failed_calls() {
    harness::require_root();
    let _serial = harness::serial();
    let backend = start_python_http_server();
    let start = |path: &str| {
        let mut cmd = Command::new(python3());
        cmd.arg("-u")
            .arg(harness::program_dir("pyproxy").join("pyproxy.py"))
            .arg("0")
            .env("BACKEND", backend.addr.to_string())
            .env("BACKEND_PATH", path);
        harness::start_announced("pyproxy", cmd)
    };
    let failing = start("/missing.txt");
    let healthy = start("/hello.txt");
    let recv = Receiver::start();
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            failing.pid().to_string(),
            "--pid".into(),
            healthy.pid().to_string(),
            "--otlp-endpoint".into(),
            recv.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            "grpc".into(),
        ],
        &[
            ("OTEL_TRACES_SAMPLER", "periscope_adaptive"),
            ("OTEL_TRACES_SAMPLER_ARG", "1"),
        ],
    );
    const N: usize = 30;
    for proxy in [&failing, &healthy] {
        let sent = run_concurrent(
            proxy.addr,
            vec![Batch {
                mode: ConnMode::KeepAlive,
                requests: (0..N)
                    .map(|_| Request::get("/call?n=1").expect(200))
                    .collect(),
            }],
        );
        assert_eq!(sent.len(), N);
    }
    // Every failing call and its caller, plus the few the cap lets through.
    recv.wait_for_spans(2 * N, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let spans = recv.spans();
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let pid_of =
        |s: &ReceivedSpan| -> String { s.resource_attr("process.pid").unwrap_or_default().into() };
    let count = |pid: u32, k: i32| {
        spans
            .iter()
            .filter(|s| pid_of(s) == pid.to_string() && kind(s) == k)
            .count()
    };
    assert_eq!(count(failing.pid(), CLIENT), N, "failed calls are all kept");
    assert_eq!(
        count(failing.pid(), SERVER),
        N,
        "their callers are kept with them, over the cap"
    );
    let failing_servers: BTreeSet<String> = spans
        .iter()
        .filter(|s| pid_of(s) == failing.pid().to_string() && kind(s) == SERVER)
        .map(|s| s.span_id_hex())
        .collect();
    for c in spans
        .iter()
        .filter(|s| pid_of(s) == failing.pid().to_string() && kind(s) == CLIENT)
    {
        assert!(
            failing_servers.contains(&c.parent_span_id_hex()),
            "a kept failed call whose caller is missing"
        );
    }
    // The healthy proxy's spans are capped: about 1/s, plus one second of burst.
    let healthy_spans = count(healthy.pid(), SERVER) + count(healthy.pid(), CLIENT);
    assert!(
        healthy_spans < N,
        "the cap still applies to healthy traces: {healthy_spans} spans kept of {}",
        2 * N
    );
}
