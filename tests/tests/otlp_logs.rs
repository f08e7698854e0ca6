//! The agent's OTLP logs exporter against the in-process receiver, over both transports: a
//! goroutine-leak record must arrive with its severity, body, event name, typed attributes
//! and the process' resource. No eBPF here, so these run anywhere.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, SeverityNumber};
use periscope::export::ExportFlags;
use periscope::export::logs::{self, GOROUTINE_LEAK_EVENT, LogsExportConfig, leak_record};
use periscope::resource::{Resource, ResourceConfig};
use periscope_e2e::receiver::{Protocol, Receiver, render};

const WAIT: Duration = Duration::from_secs(10);
const T: u64 = 1_700_000_000_123_456_789;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn resource(pid: u32) -> Arc<Resource> {
    let (cfg, malformed) =
        ResourceConfig::from_values(None, Some("deployment.environment=prod"), "node-7".into());
    assert!(malformed.is_empty());
    let exe = std::path::Path::new("/srv/shop/shop");
    Arc::new(Resource::from_parts(pid, Some(exe), None, &cfg))
}

/// The config `main` would build from `--otlp-endpoint`/`--otlp-protocol`/`--otlp-headers`
/// (with a short batch delay from the env, as an operator could set it).
fn config(receiver: &Receiver, protocol: Protocol) -> LogsExportConfig {
    let flags = ExportFlags {
        otlp_endpoint: Some(receiver.endpoint(protocol)),
        otlp_protocol: Some(protocol.flag().into()),
        otlp_headers: Some("x-tenant=e2e".into()),
        ..Default::default()
    };
    LogsExportConfig::resolve(&flags, |k| {
        (k == logs::OTEL_BLRP_SCHEDULE_DELAY).then(|| "50".to_owned())
    })
    .unwrap()
    .expect("logs export enabled")
}

fn wait_for_logs(receiver: &Receiver, n: usize) -> Vec<ResourceLogs> {
    let begun = Instant::now();
    loop {
        let got = receiver.logs();
        let count: usize = got
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        if count >= n || begun.elapsed() > WAIT {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn attrs(r: &LogRecord) -> BTreeMap<String, Any> {
    r.attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
        .collect()
}

fn check_leak(rl: &ResourceLogs, pid: u32) {
    let res = rl.resource.as_ref().expect("resource");
    let res_attr = |k: &str| {
        res.attributes
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| render(kv.value.as_ref().unwrap()))
    };
    assert_eq!(res_attr("process.pid"), Some(pid.to_string()));
    assert_eq!(res_attr("host.name").as_deref(), Some("node-7"));
    assert_eq!(res_attr("deployment.environment").as_deref(), Some("prod"));
    assert!(res_attr("service.name").is_some());
    assert!(
        matches!(
            res.attributes.iter().find(|kv| kv.key == "process.pid").and_then(|kv| kv.value.clone()?.value),
            Some(Any::IntValue(p)) if p == i64::from(pid)
        ),
        "process.pid is an int"
    );

    let scope = &rl.scope_logs[0];
    assert_eq!(scope.scope.as_ref().unwrap().name, "periscope");
    assert_eq!(scope.log_records.len(), 1);
    let r = &scope.log_records[0];
    assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(r.severity_text, "WARN");
    assert_eq!(r.event_name, GOROUTINE_LEAK_EVENT);
    assert_eq!((r.time_unix_nano, r.observed_time_unix_nano), (T, T));
    assert_eq!(
        r.body.as_ref().map(render).as_deref(),
        Some(
            "goroutine leak suspected: 523 live goroutines created at main.leak (main.go:42), up from 23 over 300s"
        )
    );
    let want: BTreeMap<String, Any> = [
        ("code.function.name", Any::StringValue("main.leak".into())),
        (
            "code.file.path",
            Any::StringValue("/src/app/main.go".into()),
        ),
        ("code.line.number", Any::IntValue(42)),
        ("periscope.goroutines.live", Any::IntValue(523)),
        ("periscope.goroutines.growth", Any::IntValue(500)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(attrs(r), want);
}

#[test]
fn leak_record_arrives_over_both_transports() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let receiver = Receiver::start();
        let rt = runtime();
        let (sink, handle) = logs::start(config(&receiver, protocol), rt.handle());
        sink.send(leak_record(
            resource(4242),
            "main.leak",
            "/src/app/main.go",
            42,
            23,
            523,
            300,
            T,
        ));
        // Delivered by the batch delay, before any shutdown.
        let got = wait_for_logs(&receiver, 1);
        assert_eq!(got.len(), 1, "{protocol:?}");
        check_leak(&got[0], 4242);
        let headers = receiver.request_headers(protocol);
        assert_eq!(
            headers
                .last()
                .and_then(|h| h.get("x-tenant"))
                .map(String::as_str),
            Some("e2e"),
            "{protocol:?}"
        );
        let stats = handle.stats();
        rt.block_on(handle.shutdown(Duration::from_secs(5)));
        assert_eq!(stats.exported.load(Relaxed), 1, "{protocol:?}");
        assert_eq!(stats.dropped.load(Relaxed), 0, "{protocol:?}");
    }
}

#[test]
fn shutdown_flushes_records_of_several_processes() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let receiver = Receiver::start();
        let rt = runtime();
        let mut cfg = config(&receiver, protocol);
        cfg.batch.schedule_delay = Duration::from_secs(3600);
        let (sink, handle) = logs::start(cfg, rt.handle());
        let (a, b) = (resource(1001), resource(1002));
        sink.send(leak_record(
            a,
            "main.leak",
            "/src/app/main.go",
            42,
            23,
            523,
            300,
            T,
        ));
        sink.send(leak_record(
            b,
            "main.leak",
            "/src/app/main.go",
            42,
            23,
            523,
            300,
            T,
        ));
        rt.block_on(handle.shutdown(Duration::from_secs(5)));
        let got = wait_for_logs(&receiver, 2);
        assert_eq!(got.len(), 2, "{protocol:?}: one ResourceLogs per process");
        check_leak(&got[0], 1001);
        check_leak(&got[1], 1002);
    }
}
