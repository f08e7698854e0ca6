//! The agent's OTLP exporter against the in-process receiver, over both transports: every
//! field of every span must arrive as built, grouped under its process's resource.
//! No eBPF here, so these run anywhere (no root, no kernel features).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind as ProtoKind;
use periscope::export::{self, ExportConfig, ExportFlags};
use periscope::resource::{Resource, ResourceConfig, SDK_VERSION};
use periscope::span::{Span, SpanKind, SpanStatus, Value};
use periscope_e2e::receiver::{Protocol, ReceivedSpan, Receiver};

const WAIT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Resolves the config the way `main` does, from flags only (no env).
fn config(receiver: &Receiver, protocol: Protocol) -> ExportConfig {
    let flags = ExportFlags {
        otlp_endpoint: Some(receiver.endpoint(protocol)),
        otlp_protocol: Some(protocol.flag().into()),
        otlp_headers: Some("x-tenant=e2e".into()),
        ..Default::default()
    };
    let mut cfg = ExportConfig::resolve(&flags, |_| None).unwrap();
    cfg.batch.schedule_delay = Duration::from_millis(20);
    cfg
}

fn resource(pid: u32, attrs: &str) -> Arc<Resource> {
    let (cfg, malformed) = ResourceConfig::from_values(None, Some(attrs), "node-7".into());
    assert!(malformed.is_empty());
    let exe = std::path::Path::new("/usr/sbin/nginx");
    Arc::new(Resource::from_parts(pid, Some(exe), None, &cfg))
}

/// A server span with a remote parent, and a failed client root span from another process.
fn spans() -> Vec<Span> {
    let web = resource(4242, "deployment.environment=prod,team=a%2Cb");
    let api = resource(777, "service.name=api");
    vec![
        Span {
            trace_id: *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36",
            span_id: *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7",
            parent_span_id: *b"\x11\x22\x33\x44\x55\x66\x77\x88",
            trace_state: "congo=t61rcWkgMzE".into(),
            flags: 1,
            kind: SpanKind::Server,
            name: "GET /users/{id}".into(),
            start_unix_ns: 1_700_000_000_123_456_789,
            end_unix_ns: 1_700_000_000_124_691_789,
            status: SpanStatus::Unset,
            attributes: vec![
                ("http.request.method", Value::Str("GET".into())),
                ("url.path", Value::Str("/users/42".into())),
                ("http.route", Value::Str("/users/{id}".into())),
                ("http.response.status_code", Value::Int(200)),
                ("client.address", Value::Str("10.0.0.7".into())),
                ("client.port", Value::Int(51234)),
            ],
            resource: web.clone(),
        },
        Span {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            parent_span_id: [0; 8],
            trace_state: String::new(),
            flags: 0,
            kind: SpanKind::Client,
            name: "POST".into(),
            start_unix_ns: 1_700_000_001_000_000_000,
            end_unix_ns: 1_700_000_003_500_000_000,
            status: SpanStatus::Error,
            attributes: vec![
                ("http.request.method", Value::Str("POST".into())),
                ("server.address", Value::Str("payments.local".into())),
                ("server.port", Value::Int(8080)),
                ("http.response.status_code", Value::Int(503)),
            ],
            resource: api,
        },
        // Same process as the first: must share its ResourceSpans.
        Span {
            span_id: [0x01; 8],
            name: "GET".into(),
            ..spans_third(web)
        },
    ]
}

fn spans_third(web: Arc<Resource>) -> Span {
    Span {
        trace_id: [0x0f; 16],
        span_id: [0; 8],
        parent_span_id: [0; 8],
        trace_state: String::new(),
        flags: 1,
        kind: SpanKind::Server,
        name: String::new(),
        start_unix_ns: 1_700_000_002_000_000_000,
        end_unix_ns: 1_700_000_002_000_050_000,
        status: SpanStatus::Unset,
        attributes: vec![("http.request.method", Value::Str("GET".into()))],
        resource: web,
    }
}

fn export_and_receive(protocol: Protocol) -> (Receiver, Vec<ReceivedSpan>) {
    let receiver = Receiver::start();
    let rt = runtime();
    let (sink, handle) = export::start(config(&receiver, protocol), rt.handle());
    for s in spans() {
        sink.send(s);
    }
    let stats = handle.stats();
    rt.block_on(handle.shutdown(Duration::from_secs(5)));
    assert_eq!(stats[0].exported.load(Relaxed), 3, "{protocol:?}");
    assert_eq!(stats[0].dropped.load(Relaxed), 0, "{protocol:?}");
    let got = receiver.wait_for_spans(3, WAIT);
    (receiver, got)
}

fn check_round_trip(protocol: Protocol) {
    let (receiver, got) = export_and_receive(protocol);
    assert_eq!(got.len(), 3, "{protocol:?}: {got:?}");
    assert!(got.iter().all(|s| s.protocol == protocol));
    // One batch: one request (the other protocol's port saw nothing).
    let other = match protocol {
        Protocol::Grpc => Protocol::HttpProtobuf,
        Protocol::HttpProtobuf => Protocol::Grpc,
    };
    assert_eq!(
        (receiver.requests(protocol), receiver.requests(other)),
        (1, 0)
    );
    let headers = &receiver.request_headers(protocol)[0];
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("e2e"));
    let user_agent = headers.get("user-agent").unwrap();
    assert!(user_agent.starts_with("periscope/"), "{user_agent}");
    let content_type = headers.get("content-type").map(String::as_str);
    match protocol {
        Protocol::Grpc => assert_eq!(content_type, Some("application/grpc")),
        Protocol::HttpProtobuf => assert_eq!(content_type, Some("application/x-protobuf")),
    }

    // Grouped per process, in order of first appearance: web's two spans, then api's.
    let order: Vec<&str> = got
        .iter()
        .map(|s| s.resource_attr("process.pid").unwrap())
        .collect();
    assert_eq!(order, ["4242", "4242", "777"]);

    let server = &got[0];
    assert_eq!(server.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.span_id_hex(), "00f067aa0ba902b7");
    assert_eq!(server.parent_span_id_hex(), "1122334455667788");
    assert_eq!(server.span.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(
        server.span.flags, 0x301,
        "sampled; parent known to be remote"
    );
    assert_eq!(server.name(), "GET /users/{id}");
    assert_eq!(server.kind(), ProtoKind::Server);
    assert_eq!(server.span.start_time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(server.span.end_time_unix_nano, 1_700_000_000_124_691_789);
    assert_eq!(server.duration(), Duration::from_nanos(1_235_000));
    assert!(!server.is_error());
    assert_eq!(server.span.status, None, "UNSET is sent as no status");
    let attrs: Vec<(String, String)> = server
        .span
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), server.attr(&kv.key).unwrap()))
        .collect();
    let want: Vec<(String, String)> = [
        ("http.request.method", "GET"),
        ("url.path", "/users/42"),
        ("http.route", "/users/{id}"),
        ("http.response.status_code", "200"),
        ("client.address", "10.0.0.7"),
        ("client.port", "51234"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(attrs, want, "attributes arrive in order");
    // Ints stay ints on the wire.
    let status_code = &server.span.attributes[3].value.as_ref().unwrap().value;
    assert!(matches!(
        status_code,
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(200))
    ));
    assert_eq!(
        (server.scope_name.as_str(), server.scope_version.as_str()),
        ("periscope", SDK_VERSION)
    );

    let resource: Vec<(&str, &str)> = server
        .resource
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        resource,
        [
            ("deployment.environment", "prod"),
            ("host.name", "node-7"),
            ("process.executable.name", "nginx"),
            ("process.executable.path", "/usr/sbin/nginx"),
            ("process.pid", "4242"),
            ("service.name", "nginx"),
            ("team", "a,b"),
            ("telemetry.sdk.name", "periscope"),
            ("telemetry.sdk.version", SDK_VERSION),
        ]
    );

    let third = &got[1];
    assert_eq!(third.span_id_hex(), "0101010101010101");
    assert!(third.is_root() && third.parent_span_id_hex().is_empty());
    assert_eq!(third.span.flags, 0x101, "sampled; no remote parent");

    let client = &got[2];
    assert_eq!(client.trace_id_hex(), "ab".repeat(16));
    assert_eq!(client.span_id_hex(), "cd".repeat(8));
    assert!(client.is_root());
    assert_eq!(
        client.span.flags, 0x100,
        "not sampled; parent locality known"
    );
    assert_eq!(client.span.trace_state, "");
    assert_eq!(client.name(), "POST");
    assert_eq!(client.kind(), ProtoKind::Client);
    assert!(client.is_error());
    assert_eq!(client.duration(), Duration::from_millis(2500));
    assert_eq!(
        client.attr("server.address").as_deref(),
        Some("payments.local")
    );
    assert_eq!(client.attr("server.port").as_deref(), Some("8080"));
    assert_eq!(
        client.attr("http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(client.resource_attr("service.name"), Some("api"));
    assert_eq!(client.resource_attr("process.pid"), Some("777"));
    assert_eq!(client.resource_attr("deployment.environment"), None);
}

#[test]
fn round_trip_over_grpc() {
    check_round_trip(Protocol::Grpc);
}

#[test]
fn round_trip_over_http_protobuf() {
    check_round_trip(Protocol::HttpProtobuf);
}

/// A backend outage blocks nothing: the batch in flight is held and retried, the queue
/// buffers the rest, and when the backend comes back every span is delivered, none dropped.
fn check_outage_and_recovery(protocol: Protocol) {
    let receiver = Receiver::start();
    let rt = runtime();
    let (sink, handle) = export::start(config(&receiver, protocol), rt.handle());
    let stats = handle.stats();
    let one = || spans().remove(0);

    receiver.set_unavailable(true);
    for _ in 0..50 {
        sink.send(one());
    }
    let start = std::time::Instant::now();
    while receiver.requests(protocol) < 3 {
        assert!(start.elapsed() < WAIT, "{protocol:?}: no retries");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(receiver.spans().is_empty());
    assert_eq!(
        stats[0].dropped.load(Relaxed),
        0,
        "{protocol:?}: held, not dropped"
    );

    receiver.set_unavailable(false);
    for _ in 0..10 {
        sink.send(one());
    }
    let start = std::time::Instant::now();
    while receiver.spans().len() < 60 {
        assert!(
            start.elapsed() < WAIT,
            "{protocol:?}: export never recovered ({} spans)",
            receiver.spans().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(handle.shutdown(Duration::from_secs(5)));
    assert_eq!(receiver.spans().len(), 60, "{protocol:?}: each once");
    assert_eq!(
        (
            stats[0].exported.load(Relaxed),
            stats[0].dropped.load(Relaxed),
            stats[0].queue_depth.load(Relaxed)
        ),
        (60, 0, 0),
        "{protocol:?}"
    );
}

#[test]
fn outage_and_recovery_over_grpc() {
    check_outage_and_recovery(Protocol::Grpc);
}

#[test]
fn outage_and_recovery_over_http_protobuf() {
    check_outage_and_recovery(Protocol::HttpProtobuf);
}
