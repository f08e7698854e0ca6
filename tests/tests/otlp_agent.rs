//! The real agent as an OTLP client for all three signals at once: traces, metrics with
//! the temporality asked for in the environment, and the goroutine-leak log record.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric};
use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_batch},
    harness::{self, Agent, GoFlavor, build_go_program, go_toolchain, start_go_server},
    receiver::{Protocol, Receiver, find},
};

#[test]
fn agent_exports_delta_metrics_and_a_leak_log_record() {
    harness::require_root();
    let _serial = harness::serial();
    let bin = build_go_program("gotruth", &go_toolchain("1.25"), GoFlavor::Stripped);
    let server = start_go_server(&bin);
    let recv = Receiver::start();
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            server.pid().to_string(),
            "--otlp-endpoint".into(),
            recv.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            "grpc".into(),
            "--leak-window".into(),
            "8".into(),
            "--leak-min-growth".into(),
            "20".into(),
        ],
        &[
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
        ],
    );
    let n = 25;
    run_batch(
        server.addr,
        &Batch {
            mode: ConnMode::KeepAlive,
            requests: (0..n).map(|_| Request::get("/").expect(200)).collect(),
        },
    );
    // A steady leak for longer than the window.
    let deadline = Instant::now() + Duration::from_secs(40);
    let leak_log = loop {
        run_batch(
            server.addr,
            &Batch {
                mode: ConnMode::Fresh,
                requests: vec![Request::new("POST", "/leak?n=10").expect(200)],
            },
        );
        let found = recv.logs().into_iter().flat_map(|rl| {
            rl.scope_logs
                .into_iter()
                .flat_map(|sl| sl.log_records)
                .collect::<Vec<_>>()
        });
        let found: Vec<_> = found
            .filter(|r| r.event_name == "periscope.go.goroutine_leak")
            .collect();
        if let Some(r) = found.into_iter().next() {
            break r;
        }
        assert!(Instant::now() < deadline, "no leak log record arrived");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(leak_log.severity_text, "WARN");
    assert_eq!(
        find(&leak_log.attributes, "code.function.name").as_deref(),
        Some("main.leakOne")
    );
    assert!(
        find(&leak_log.attributes, "code.file.path")
            .is_some_and(|f| f.ends_with("gotruth/main.go"))
    );
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    // Delta points add up to exactly the requests sent, per route.
    let mut total_root = 0u64;
    let mut saw_goroutines = false;
    for rm in recv.metrics() {
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                match (m.name.as_str(), m.data) {
                    ("http.server.request.duration", Some(metric::Data::Histogram(h))) => {
                        assert_eq!(
                            h.aggregation_temporality,
                            AggregationTemporality::Delta as i32
                        );
                        for p in h.data_points {
                            if find(&p.attributes, "http.route").as_deref() == Some("/") {
                                total_root += p.count;
                            }
                        }
                    }
                    ("go.goroutine.count", Some(_)) => saw_goroutines = true,
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        total_root, n as u64,
        "delta counts sum to the requests sent"
    );
    assert!(saw_goroutines, "go.goroutine.count exported over OTLP");
    assert!(recv.spans().len() >= n, "spans exported too");
}
