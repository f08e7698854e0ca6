//! OTLP over https: the exporters against the in-process receiver served over TLS with a CA
//! made at test time, over both transports, for every signal; then the real agent tracing a
//! real process into it. Trust comes from `--otlp-certificate` or
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`; a CA that does not match, or a CA file that cannot be
//! read, is one clear line and costs the spans (counted), never the run.
//!
//! The in-process tests need no root; the agent tests do (real eBPF).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use periscope::export::logs::{self as logs_export, LogsExportConfig, leak_record};
use periscope::export::metrics::{self as metrics_export, MetricsExportConfig};
use periscope::export::{self, ExportConfig, ExportFlags};
use periscope::metrics::{HttpKind, HttpRecord, HttpSeries, Metrics};
use periscope::resource::{Resource, ResourceConfig};
use periscope::span::{Span, SpanKind, SpanStatus, Value};
use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_batch},
    harness::{self, Agent, start_python_http_server},
    receiver::{ClientAuth, Protocol, Receiver, TestPki},
};

const WAIT: Duration = Duration::from_secs(10);
const PROTOCOLS: [Protocol; 2] = [Protocol::Grpc, Protocol::HttpProtobuf];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The flags `main` would build from `--otlp-endpoint URL --otlp-protocol P
/// --otlp-certificate CA`.
fn flags(receiver: &Receiver, p: Protocol, pki: &TestPki) -> ExportFlags {
    ExportFlags {
        otlp_endpoint: Some(receiver.endpoint(p)),
        otlp_protocol: Some(p.flag().into()),
        otlp_certificate: Some(pki.ca_file()),
        ..Default::default()
    }
}

fn resource() -> Arc<Resource> {
    let (cfg, _) = ResourceConfig::from_values(None, None, "node-7".into());
    let exe = std::path::Path::new("/usr/bin/api");
    Arc::new(Resource::from_parts(4242, Some(exe), None, &cfg))
}

fn span(resource: &Arc<Resource>, id: u8) -> Span {
    Span {
        trace_id: [id; 16],
        span_id: [id; 8],
        parent_span_id: [0; 8],
        trace_state: String::new(),
        flags: 1,
        kind: SpanKind::Server,
        name: "GET /tls".into(),
        start_unix_ns: 1_700_000_000_000_000_000,
        end_unix_ns: 1_700_000_000_001_000_000,
        status: SpanStatus::Unset,
        attributes: vec![("http.request.method", Value::Str("GET".into()))],
        resource: resource.clone(),
    }
}

/// Exports 3 spans through a fresh exporter for `cfg`; returns (exported, dropped).
fn export_spans(mut cfg: ExportConfig) -> (u64, u64) {
    cfg.batch.schedule_delay = Duration::from_millis(20);
    let rt = runtime();
    let (sink, handle) = export::start(cfg, rt.handle());
    let r = resource();
    for id in 1..=3 {
        sink.send(span(&r, id));
    }
    let stats = handle.stats();
    rt.block_on(handle.shutdown(Duration::from_secs(5)));
    (
        stats[0].exported.load(Relaxed),
        stats[0].dropped.load(Relaxed),
    )
}

#[test]
fn spans_metrics_and_logs_over_https_with_a_ca_file() {
    let pki = TestPki::new();
    for p in PROTOCOLS {
        let receiver = Receiver::start_tls(&pki, ClientAuth::None);
        let f = flags(&receiver, p, &pki);

        let cfg = ExportConfig::resolve(&f, |_| None).unwrap();
        assert!(cfg.otlp.as_ref().unwrap().is_https());
        assert_eq!(export_spans(cfg), (3, 0), "{p:?}");
        let spans = receiver.wait_for_spans(3, WAIT);
        assert_eq!(spans.len(), 3, "{p:?}");
        assert!(
            spans
                .iter()
                .all(|s| s.protocol == p && s.name() == "GET /tls")
        );

        // Metrics: the same flags, through the resolver main uses.
        let rt = runtime();
        let metrics = Arc::new(Metrics::default());
        let series = HttpSeries {
            kind: HttpKind::Server,
            method: Arc::from("GET"),
            route: Arc::from("/tls"),
            status: 200,
            error_type: None,
            server_address: None,
            server_port: 0,
            rpc: None,
            overflow: false,
        };
        metrics.record_http(
            &resource(),
            HttpRecord {
                series,
                duration_s: 0.01,
                request_body: 0,
                response_body: Some(2),
                exemplar: None,
            },
            false,
        );
        let mut mcfg = MetricsExportConfig::resolve_export_flags(&f, |_| None)
            .unwrap()
            .unwrap();
        mcfg.interval = Duration::from_secs(3600);
        let h = metrics_export::start(mcfg, metrics, rt.handle());
        let delivered = rt.block_on(h.force_flush()).expect("metrics over https");
        assert!(delivered > 0, "{p:?}");
        assert!(!receiver.wait_for_metrics(1, WAIT).is_empty(), "{p:?}");
        rt.block_on(h.shutdown(Duration::from_secs(2)));

        // Logs.
        let mut lcfg = LogsExportConfig::resolve(&f, |_| None).unwrap().unwrap();
        lcfg.batch.schedule_delay = Duration::from_millis(20);
        let (sink, handle) = logs_export::start(lcfg, rt.handle());
        sink.send(leak_record(
            resource(),
            "main.leak",
            "/src/main.go",
            7,
            1,
            200,
            60,
            1_700_000_000_000_000_000,
        ));
        let stats = handle.stats();
        rt.block_on(handle.shutdown(Duration::from_secs(5)));
        assert_eq!(stats.exported.load(Relaxed), 1, "{p:?}");
        assert_eq!(receiver.logs().len(), 1, "{p:?}");
        assert_eq!(receiver.tls_failures(p), 0, "{p:?}");
    }
}

#[test]
fn client_certificates_for_mtls() {
    let pki = TestPki::new();
    for p in PROTOCOLS {
        let receiver = Receiver::start_tls(&pki, ClientAuth::Required);
        // With the client certificate and key, from the generic env vars.
        let ca = pki.ca_file().display().to_string();
        let cert = pki.client_cert_file().display().to_string();
        let key = pki.client_key_file().display().to_string();
        let endpoint = receiver.endpoint(p);
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", p.flag()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
        ];
        let lookup = |vars: &[(&str, &str)], k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let cfg = ExportConfig::resolve(&ExportFlags::default(), |k| lookup(&env, k)).unwrap();
        assert_eq!(export_spans(cfg), (3, 0), "{p:?}");
        assert_eq!(receiver.wait_for_spans(3, WAIT).len(), 3, "{p:?}");

        // Without them the server refuses the handshake: dropped and counted.
        let cfg = ExportConfig::resolve(&ExportFlags::default(), |k| lookup(&env[..3], k)).unwrap();
        let (exported, dropped) = export_spans(cfg);
        assert_eq!((exported, dropped), (0, 3), "{p:?}");
        assert!(receiver.tls_failures(p) >= 1, "{p:?}");
        assert_eq!(receiver.spans().len(), 3, "{p:?}");
    }
}

#[test]
fn untrusted_server_or_unusable_ca_file_drops_and_counts() {
    let pki = TestPki::new();
    let other = TestPki::new();
    for p in PROTOCOLS {
        let receiver = Receiver::start_tls(&pki, ClientAuth::None);
        // Trusting another CA: every handshake fails, the spans are dropped.
        let cfg = ExportConfig::resolve(&flags(&receiver, p, &other), |_| None).unwrap();
        assert_eq!(export_spans(cfg), (0, 3), "{p:?}");
        assert!(receiver.tls_failures(p) >= 1, "{p:?}");
        // No CA file: the platform roots, which do not know the test CA either.
        let f = ExportFlags {
            otlp_certificate: None,
            ..flags(&receiver, p, &pki)
        };
        let cfg = ExportConfig::resolve(&f, |_| None).unwrap();
        assert_eq!(export_spans(cfg), (0, 3), "{p:?}");
        // A CA file that does not exist: no client, every span dropped and counted.
        let f = ExportFlags {
            otlp_certificate: Some("/nonexistent/ca.pem".into()),
            ..flags(&receiver, p, &pki)
        };
        let cfg = ExportConfig::resolve(&f, |_| None).unwrap();
        assert_eq!(export_spans(cfg), (0, 3), "{p:?}");
        assert!(receiver.spans().is_empty(), "{p:?}");
    }
}

/// The spec's insecure rule, end to end: a gRPC endpoint without a scheme is TLS unless
/// `OTEL_EXPORTER_OTLP_INSECURE=true`.
#[test]
fn scheme_less_grpc_endpoint_follows_insecure() {
    let pki = TestPki::new();
    let ca = pki.ca_file().display().to_string();
    let tls = Receiver::start_tls(&pki, ClientAuth::None);
    let plain = Receiver::start();
    let bare = |r: &Receiver| {
        r.endpoint(Protocol::Grpc)
            .split("://")
            .nth(1)
            .unwrap()
            .to_owned()
    };
    let run = |endpoint: String, insecure: Option<&str>| {
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_string(), endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "grpc".into()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE".into(), ca.clone()),
        ];
        if let Some(v) = insecure {
            env.push(("OTEL_EXPORTER_OTLP_INSECURE".into(), v.into()));
        }
        let cfg = ExportConfig::resolve(&ExportFlags::default(), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        export_spans(cfg)
    };
    assert_eq!(run(bare(&tls), None), (3, 0), "TLS by default");
    assert_eq!(
        run(bare(&plain), Some("true")),
        (3, 0),
        "plaintext when insecure"
    );
    assert_eq!(run(bare(&tls), Some("false")), (3, 0));
    assert_eq!(tls.wait_for_spans(6, WAIT).len(), 6);
    assert_eq!(plain.wait_for_spans(3, WAIT).len(), 3);
}

// ---------------------------------------------------------------------------
// The real agent

/// A traced python server, a few requests, and the agent's SERVER spans at `receiver`.
fn agent_exports_spans(p: Protocol, ca_by_env: bool) {
    harness::require_root();
    let _serial = harness::serial();
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(&pki, ClientAuth::None);
    let server = start_python_http_server();
    let mut args = vec![
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".into(),
        receiver.endpoint(p),
        "--otlp-protocol".into(),
        p.flag().into(),
    ];
    let ca = pki.ca_file().display().to_string();
    let mut env = vec![("OTEL_BSP_SCHEDULE_DELAY", "100")];
    if ca_by_env {
        env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()));
    } else {
        args.extend(["--otlp-certificate".into(), ca.clone()]);
    }
    let agent = Agent::start_with_env(args, &env);
    run_batch(
        server.addr,
        &Batch {
            mode: ConnMode::KeepAlive,
            requests: (0..5)
                .map(|i| Request::get(&format!("/tls/{i}")).expect(404))
                .collect(),
        },
    );
    let spans = receiver.wait_for_spans(5, Duration::from_secs(20));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let server_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.attr("url.path").is_some_and(|u| u.starts_with("/tls/")))
        .collect();
    assert_eq!(server_spans.len(), 5, "{p:?}: {spans:?}\n{}", exit.stderr);
    assert!(server_spans.iter().all(|s| s.protocol == p));
    assert_eq!(
        server_spans[0].resource_attr("process.pid"),
        Some(server.pid().to_string().as_str())
    );
    assert_eq!(receiver.tls_failures(p), 0);
    assert!(
        !exit.stderr.contains("ERROR") && !exit.stderr.contains("WARN"),
        "{}",
        exit.stderr
    );
}

#[test]
fn agent_exports_over_https_grpc_with_certificate_flag() {
    agent_exports_spans(Protocol::Grpc, false);
}

#[test]
fn agent_exports_over_https_http_protobuf_with_certificate_env() {
    agent_exports_spans(Protocol::HttpProtobuf, true);
}

/// Lines of `stderr` that mention `needle`.
fn lines_with<'a>(stderr: &'a str, needle: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.contains(needle)).collect()
}

/// Waits until the status line reports `n` dropped OTLP spans.
fn wait_for_drops(agent: &Agent, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let want = format!("otlp_dropped={n}");
    loop {
        let stderr = agent.output().stderr();
        if stderr.lines().any(|l| l.contains(&want)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {want} in:\n{}",
            harness::tail(&stderr, 4000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn send_requests(server: &harness::Server, n: usize) {
    run_batch(
        server.addr,
        &Batch {
            mode: ConnMode::Fresh,
            requests: (0..n).map(|_| Request::get("/").expect(200)).collect(),
        },
    );
}

#[test]
fn agent_with_the_wrong_ca_says_so_once_and_keeps_running() {
    harness::require_root();
    let _serial = harness::serial();
    let pki = TestPki::new();
    let wrong = TestPki::new();
    let receiver = Receiver::start_tls(&pki, ClientAuth::None);
    let server = start_python_http_server();
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--otlp-endpoint".into(),
            receiver.endpoint(Protocol::HttpProtobuf),
            "--otlp-certificate".into(),
            wrong.ca_file().display().to_string(),
            "--status-interval".into(),
            "1".into(),
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
    );
    // Two rounds: the second lands while the outage is already known. A failed handshake
    // is retried like an outage: the spans are held (they fit the queue), not dropped.
    send_requests(&server, 10);
    receiver.wait_for_tls_failures(Protocol::HttpProtobuf, 2, Duration::from_secs(30));
    send_requests(&server, 10);
    let failed = receiver.tls_failures(Protocol::HttpProtobuf);
    receiver.wait_for_tls_failures(Protocol::HttpProtobuf, failed + 2, Duration::from_secs(30));
    assert!(receiver.tls_failures(Protocol::HttpProtobuf) >= failed + 2);
    assert!(receiver.spans().is_empty());
    // While it runs: one line, naming the endpoint, the reason and what to check, however
    // many attempts failed (rustls' own logging stays quiet). The receiver can count the
    // failed handshakes before the agent has printed it (seen under load), so it is awaited.
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = loop {
        let stderr = agent.output().stderr();
        if !lines_with(&stderr, "certificate").is_empty() || Instant::now() > deadline {
            // Let a second line, were there one, come out too.
            std::thread::sleep(Duration::from_millis(500));
            break agent.output().stderr();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let lines = lines_with(&running, "certificate");
    assert_eq!(lines.len(), 1, "{running}");
    assert!(
        lines[0].contains("https://127.0.0.1")
            && lines[0].contains("/v1/traces")
            && lines[0].contains("invalid peer certificate: UnknownIssuer")
            && lines[0].contains("--otlp-certificate"),
        "{}",
        lines[0]
    );

    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let last = exit.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("spans=20") && last.contains("otlp_exported=0 otlp_dropped=20"),
        "{}",
        exit.stderr
    );
    // At exit the final metrics export may say the same about /v1/metrics; nothing more.
    let lines = lines_with(&exit.stderr, "certificate");
    assert_eq!(lines_with(&exit.stderr, "/v1/traces").len(), 1);
    assert!(
        lines.len() == 1 || (lines.len() == 2 && lines[1].contains("/v1/metrics")),
        "{}",
        exit.stderr
    );
}

#[test]
fn agent_with_an_unreadable_ca_file_says_so_once_and_keeps_running() {
    harness::require_root();
    let _serial = harness::serial();
    let receiver = Receiver::start_tls(&TestPki::new(), ClientAuth::None);
    let server = start_python_http_server();
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--otlp-endpoint".into(),
            receiver.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            "grpc".into(),
            "--status-interval".into(),
            "1".into(),
        ],
        &[(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "/nonexistent/periscope-ca.pem",
        )],
    );
    send_requests(&server, 5);
    wait_for_drops(&agent, 5);
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    // Traces, metrics and logs all use the file: one line for all of them.
    let lines = lines_with(&exit.stderr, "/nonexistent/periscope-ca.pem");
    assert_eq!(lines.len(), 1, "{}", exit.stderr);
    assert!(
        lines[0].contains("OTEL_EXPORTER_OTLP_CERTIFICATE")
            && lines[0].contains("cannot read it")
            && lines[0].contains("dropped and counted"),
        "{}",
        lines[0]
    );
    assert_eq!(receiver.requests(Protocol::Grpc), 0);
}

/// mTLS over gRPC, the CA from the config file and the client identity from the env.
#[test]
fn agent_mtls_over_grpc_with_config_file_ca_and_client_certificate_env() {
    harness::require_root();
    let _serial = harness::serial();
    let pki = TestPki::new();
    let receiver = Receiver::start_tls(&pki, ClientAuth::Required);
    let server = start_python_http_server();
    let dir = harness::TempDir::new("otlp-tls-config");
    let config = dir.path().join("periscope.toml");
    std::fs::write(
        &config,
        format!(
            "otlp-protocol = \"grpc\"\notlp-certificate = {:?}\n",
            pki.ca_file().display().to_string()
        ),
    )
    .unwrap();
    let (cert, key) = (
        pki.client_cert_file().display().to_string(),
        pki.client_key_file().display().to_string(),
    );
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--config".into(),
            config.display().to_string(),
        ],
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                receiver.endpoint(Protocol::Grpc).as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert.as_str()),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", key.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    send_requests(&server, 3);
    let spans = receiver.wait_for_spans(3, Duration::from_secs(20));
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(spans.len() >= 3, "{spans:?}\n{}", exit.stderr);
    assert!(spans.iter().all(|s| s.protocol == Protocol::Grpc));
    assert_eq!(receiver.tls_failures(Protocol::Grpc), 0);
}
