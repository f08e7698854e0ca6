//! RED metrics end to end: the real agent traces a real Go server, and real consumers
//! read its `/metrics` endpoint: `promtool check metrics` validates the exposition, a
//! real Prometheus scrapes it and PromQL answers match what the client sent. Also:
//! route templating and its cap under 10k requests, and sampling that never changes
//! metric counts.
//!
//! Run serially (`--test-threads=1`, as `cargo xtask test` does): every test loads the
//! eBPF programs.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_concurrent},
    harness::{
        self, Agent, GoFlavor, Process, Server, TempDir, build_go_program, free_port, go_toolchain,
        start_go_server,
    },
    receiver::{Protocol, Receiver},
};

/// A plain GET with `Connection: close`; returns (status, body).
fn http_get(addr: SocketAddr, target: &str, accept: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Bodies may be chunked (hyper) — undo the framing.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Value of one sample line `name{labels} value` whose labels contain all of `want`.
fn samples<'a>(text: &'a str, name: &str, want: &[(&str, &str)]) -> Vec<(&'a str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            if n != name {
                return None;
            }
            want.iter()
                .all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))
                .then(|| (labels, value.parse().ok()))
                .and_then(|(l, v)| Some((l, v?)))
        })
        .collect()
}

fn count(text: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, "http_server_request_duration_seconds_count", want)
        .iter()
        .map(|(_, v)| v)
        .sum()
}

/// Polls the agent's /metrics until `done` holds (the agent drains the kernel ring
/// every few ms; the last responses may need a moment).
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = http_get(addr, "/metrics", None);
        assert_eq!(status, 200);
        if done(&body) {
            return body;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; last scrape:\n{}",
                harness::tail(&body, 6000)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn go_server() -> Server {
    let tc = go_toolchain("1.25");
    let bin = build_go_program("goserver", &tc, GoFlavor::Plain);
    start_go_server(&bin)
}

fn batches(requests: Vec<Request>, threads: usize) -> Vec<Batch> {
    let mut out: Vec<Batch> = (0..threads)
        .map(|_| Batch {
            mode: ConnMode::KeepAlive,
            requests: Vec::new(),
        })
        .collect();
    for (i, r) in requests.into_iter().enumerate() {
        out[i % threads].requests.push(r);
    }
    out
}

/// 30 x 200 on /users/{id}, 10 x 500, 5 x 404.
fn mixed_requests() -> Vec<Request> {
    let mut reqs = Vec::new();
    for i in 0..30 {
        reqs.push(Request::get(&format!("/users/{}", 1000 + i * 7)).expect(200));
    }
    for _ in 0..10 {
        reqs.push(Request::get("/error").expect(500));
    }
    for i in 0..5 {
        reqs.push(Request::get(&format!("/missing-{i}")).expect(404));
    }
    reqs
}

#[test]
fn promtool_accepts_the_exposition_and_counts_are_exact() {
    harness::require_root();
    let _serial = harness::serial();
    let server = go_server();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--prometheus".into(),
        prom.to_string(),
        "--console".into(),
        "json".into(),
    ]);
    let sent = run_concurrent(server.addr, batches(mixed_requests(), 3));
    for ex in &sent {
        assert_eq!(
            Some(ex.status),
            ex.expect_status,
            "{} {}",
            ex.method,
            ex.target
        );
    }
    let text = scrape_until(prom, "45 requests in the histograms", |t| {
        count(t, &[]) >= 45.0
    });
    // Give a late duplicate a chance to show, then check exact numbers.
    thread::sleep(Duration::from_millis(500));
    let (_, text2) = http_get(prom, "/metrics", None);
    assert_eq!(count(&text2, &[]), 45.0, "exactly one count per request");
    let users = [
        ("http_route", "/users/{id}"),
        ("http_response_status_code", "200"),
    ];
    assert_eq!(count(&text, &users), 30.0);
    assert_eq!(
        count(
            &text,
            &[("http_response_status_code", "500"), ("error_type", "500")]
        ),
        10.0
    );
    assert_eq!(count(&text, &[("http_response_status_code", "404")]), 5.0);
    assert_eq!(
        count(
            &text,
            &[("service_name", "goserver"), ("http_request_method", "GET")]
        ),
        45.0
    );
    // +Inf bucket == count for every series.
    for (labels, v) in samples(
        &text,
        "http_server_request_duration_seconds_bucket",
        &[("le", "+Inf")],
    ) {
        let base = labels.replace(",le=\"+Inf\"", "");
        let c = samples(&text, "http_server_request_duration_seconds_count", &[])
            .into_iter()
            .find(|(l, _)| *l == base)
            .map(|(_, v)| v);
        assert_eq!(Some(v), c, "bucket +Inf vs count for {labels}");
    }
    assert!(
        text.contains("target_info{"),
        "resource attributes are exported"
    );
    assert!(
        text.contains("periscope_events_lost_total 0"),
        "no lost events"
    );

    // A real consumer validates the exposition.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by cargo xtask test");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // OpenMetrics when asked for it, with trace-id exemplars on buckets.
    let (_, om) = http_get(
        prom,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# UNIT http_server_request_duration_seconds seconds"));
    let exemplar_traces: BTreeSet<String> = om
        .lines()
        .filter(|l| l.starts_with("http_server_request_duration_seconds_bucket"))
        .filter_map(|l| {
            l.split_once("# {trace_id=\"")
                .map(|(_, r)| r[..32].to_string())
        })
        .collect();
    assert!(
        !exemplar_traces.is_empty(),
        "exemplars present:\n{}",
        harness::tail(&om, 3000)
    );
    // ... and each exemplar points at a span the agent really emitted.
    let exit = agent.stop();
    for t in &exemplar_traces {
        assert!(
            exit.stdout.contains(&format!("\"trace_id\":\"{t}\"")),
            "exemplar trace {t} has a span"
        );
    }
}

fn start_prometheus(target: SocketAddr, dir: &TempDir) -> (Process, SocketAddr) {
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: periscope\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"));
    let mut p = Process::spawn("prometheus", cmd);
    p.wait_for_port(listen, Duration::from_secs(30));
    (p, listen)
}

fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an instant query; returns the single result's value (None when empty).
fn promql(prom: SocketAddr, q: &str) -> Option<f64> {
    let (status, body) = http_get(
        prom,
        &format!("/api/v1/query?query={}", encode_query(q)),
        None,
    );
    if status == 503 {
        return None; // Prometheus still starting up
    }
    assert_eq!(status, 200, "query {q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = v["data"]["result"].as_array()?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_and_promql_matches_what_was_sent() {
    harness::require_root();
    let _serial = harness::serial();
    let server = go_server();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--prometheus".into(),
        metrics.to_string(),
        "--console".into(),
        "json".into(),
    ]);
    let dir = TempDir::new("prometheus");
    let (_prom_proc, prom) = start_prometheus(metrics, &dir);
    run_concurrent(server.addr, batches(mixed_requests(), 3));
    let total_q = "sum(http_server_request_duration_seconds_count{service_name=\"goserver\"})";
    let err_q = "sum(http_server_request_duration_seconds_count{service_name=\"goserver\",http_response_status_code=~\"5..\"}) / sum(http_server_request_duration_seconds_count{service_name=\"goserver\"})";
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let total = promql(prom, total_q);
        if total == Some(45.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw 45 requests (last: {total:?})"
        );
        thread::sleep(Duration::from_millis(500));
    }
    let rate = promql(prom, err_q).expect("error ratio");
    assert!((rate - 10.0 / 45.0).abs() < 1e-9, "error ratio {rate}");
    let route = promql(
        prom,
        "sum(http_server_request_duration_seconds_count{http_route=\"/users/{id}\"})",
    );
    assert_eq!(route, Some(30.0));
    assert_eq!(
        promql(prom, "sum(target_info{service_name=\"goserver\"})"),
        Some(1.0)
    );
}

#[test]
fn ten_thousand_ids_fold_into_one_route_and_random_paths_stay_under_the_cap() {
    harness::require_root();
    let _serial = harness::serial();
    let server = go_server();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cap = 50;
    let _agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--prometheus".into(),
        prom.to_string(),
        "--max-routes".into(),
        cap.to_string(),
        "--console".into(),
        "json".into(),
    ]);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let ids: Vec<Request> = (0..10_000)
        .map(|_| Request::get(&format!("/users/{}", next() % 1_000_000_000)).expect(200))
        .collect();
    run_concurrent(server.addr, batches(ids, 4));
    let text = scrape_until(prom, "10000 requests", |t| count(t, &[]) >= 10_000.0);
    let routes: BTreeMap<String, f64> =
        samples(&text, "http_server_request_duration_seconds_count", &[])
            .into_iter()
            .map(|(l, v)| {
                let r = l
                    .split("http_route=\"")
                    .nth(1)
                    .unwrap_or("")
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string();
                (r, v)
            })
            .collect();
    assert_eq!(routes.len(), 1, "one templated route: {routes:?}");
    assert_eq!(routes.get("/users/{id}"), Some(&10_000.0));

    // Truly random paths: at most `cap` distinct routes, the rest counted as overflow.
    let letters = |n: u64| -> String {
        let mut v = n;
        (0..10)
            .map(|_| {
                let c = (b'a' + (v % 26) as u8) as char;
                v /= 26;
                c
            })
            .collect()
    };
    let random: Vec<Request> = (0..10_000)
        .map(|_| Request::get(&format!("/{}/{}", letters(next()), letters(next()))).expect(404))
        .collect();
    run_concurrent(server.addr, batches(random, 4));
    let text = scrape_until(prom, "20000 requests", |t| count(t, &[]) >= 20_000.0);
    let routes: BTreeSet<String> =
        samples(&text, "http_server_request_duration_seconds_count", &[])
            .into_iter()
            .filter_map(|(l, _)| {
                l.split("http_route=\"")
                    .nth(1)
                    .map(|r| r.split('"').next().unwrap().to_string())
            })
            .collect();
    assert!(
        routes.len() <= cap + 1,
        "{} routes > cap {cap} + overflow",
        routes.len()
    );
    assert!(routes.contains("/{overflow}"));
    // /users/{id} took one slot of the cap; every other new route overflowed.
    let overflow: f64 = samples(
        &text,
        "periscope_route_overflow_total",
        &[("service_name", "goserver")],
    )
    .iter()
    .map(|(_, v)| v)
    .sum();
    assert_eq!(
        overflow,
        (10_000 - (cap - 1)) as f64,
        "overflow counted exactly"
    );
    assert_eq!(count(&text, &[("http_route", "/{overflow}")]), overflow);
    assert_eq!(count(&text, &[]), 20_000.0, "no request lost to the cap");
}

#[test]
fn ratio_sampling_keeps_about_ten_percent_of_spans_and_exact_metrics() {
    harness::require_root();
    let _serial = harness::serial();
    let server = go_server();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let recv = Receiver::start();
    let _agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--prometheus".into(),
            prom.to_string(),
            "--otlp-endpoint".into(),
            recv.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            "grpc".into(),
        ],
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ],
    );
    let n = 3000usize;
    let reqs: Vec<Request> = (0..n)
        .map(|i| Request::get(&format!("/users/{i}")).expect(200))
        .collect();
    run_concurrent(server.addr, batches(reqs, 4));
    let text = scrape_until(prom, "all requests", |t| count(t, &[]) >= n as f64);
    assert_eq!(
        count(&text, &[]),
        n as f64,
        "metrics count every request whatever is sampled"
    );
    // Let the exporter flush (batch delay 500 ms), then count spans.
    thread::sleep(Duration::from_secs(2));
    let spans = recv.spans().len() as f64;
    // Binomial(3000, 0.1): mean 300, sd 16.4; 5 sd either side.
    assert!(
        (218.0..=382.0).contains(&spans),
        "{spans} spans sampled of {n}"
    );
    let sampled = samples(&text, "periscope_spans_sampled_total", &[]);
    assert!(!sampled.is_empty());
}

#[test]
fn adaptive_sampling_caps_spans_but_keeps_every_error() {
    harness::require_root();
    let _serial = harness::serial();
    let server = go_server();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let recv = Receiver::start();
    let _agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--prometheus".into(),
            prom.to_string(),
            "--otlp-endpoint".into(),
            recv.endpoint(Protocol::HttpProtobuf),
            "--otlp-protocol".into(),
            "http/protobuf".into(),
        ],
        &[
            ("OTEL_TRACES_SAMPLER", "periscope_adaptive"),
            ("OTEL_TRACES_SAMPLER_ARG", "5"),
        ],
    );
    let mut reqs = Vec::new();
    for i in 0..1000 {
        if i % 25 == 0 {
            reqs.push(Request::get("/error").expect(500));
        } else {
            reqs.push(Request::get("/").expect(200));
        }
    }
    let start = Instant::now();
    run_concurrent(server.addr, batches(reqs, 4));
    let secs = start.elapsed().as_secs_f64().ceil();
    let text = scrape_until(prom, "all requests", |t| count(t, &[]) >= 1000.0);
    assert_eq!(count(&text, &[]), 1000.0);
    thread::sleep(Duration::from_secs(2));
    let spans = recv.spans();
    let errors = spans.iter().filter(|s| s.is_error()).count();
    assert_eq!(errors, 40, "every error span is kept");
    let ok = spans.len() - errors;
    // At most (t+1) x 5 ordinary spans over t seconds.
    assert!(
        (ok as f64) <= (secs + 2.0) * 5.0,
        "{ok} ordinary spans in {secs}s with a cap of 5/s"
    );
}
