//! The agent's OTLP metrics exporter against the in-process receiver, over both
//! transports: known requests recorded into a [`Metrics`] registry must arrive with exact
//! counts, buckets, attributes and temporality. Cumulative exports repeat and grow; delta
//! exports carry only what is new since the last delivered one.
//! No eBPF here, so these run anywhere (no root, no kernel features).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, exemplar,
    metric, number_data_point,
};
use periscope::export::metrics::config::{
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, OTEL_METRIC_EXPORT_INTERVAL,
};
use periscope::export::metrics::{
    self as metrics_export, MetricsExportConfig, MetricsExportFlags, MetricsExportHandle,
};
use periscope::metrics::{
    DURATION_BUCKETS, Exemplar, HttpKind, HttpRecord, HttpSeries, Metrics, SIZE_BUCKETS,
};
use periscope::resource::{Resource, ResourceConfig, SDK_VERSION};
use periscope::runtime::go::{GoStats, Site, SiteSnapshot};
use periscope_e2e::receiver::{Protocol, Receiver, render};

const WAIT: Duration = Duration::from_secs(10);
const PROTOCOLS: [Protocol; 2] = [Protocol::Grpc, Protocol::HttpProtobuf];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Resolves the config the way `main` would: flags, plus `env` for what has no flag. The
/// interval is an hour unless `env` says otherwise, so only explicit flushes export.
fn config(receiver: &Receiver, protocol: Protocol, env: &[(&str, &str)]) -> MetricsExportConfig {
    let interval_from_env = env.iter().any(|(k, _)| *k == OTEL_METRIC_EXPORT_INTERVAL);
    let flags = MetricsExportFlags {
        otlp_endpoint: Some(receiver.endpoint(protocol)),
        otlp_protocol: Some(protocol.flag().into()),
        otlp_headers: Some("x-tenant=e2e".into()),
        otlp_timeout: None,
        export_interval: (!interval_from_env).then_some(Duration::from_secs(3600)),
    };
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    MetricsExportConfig::resolve(&flags, |k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
    .expect("metrics export enabled")
}

fn resource(pid: u32) -> Arc<Resource> {
    let (cfg, malformed) =
        ResourceConfig::from_values(None, Some("deployment.environment=prod"), "node-7".into());
    assert!(malformed.is_empty());
    let exe = std::path::Path::new("/usr/sbin/nginx");
    Arc::new(Resource::from_parts(pid, Some(exe), None, &cfg))
}

fn users(status: u16) -> HttpSeries {
    HttpSeries {
        kind: HttpKind::Server,
        method: Arc::from("GET"),
        route: Arc::from("/users/{id}"),
        status,
        error_type: (status >= 500).then(|| Arc::from(status.to_string().as_str())),
        server_address: None,
        server_port: 0,
        rpc: None,
        overflow: false,
    }
}

fn payments() -> HttpSeries {
    HttpSeries {
        kind: HttpKind::Client,
        method: Arc::from("POST"),
        route: Arc::from(""),
        status: 503,
        error_type: Some(Arc::from("503")),
        server_address: Some(Arc::from("payments.local")),
        server_port: 8080,
        rpc: None,
        overflow: false,
    }
}

const EXEMPLAR_TRACE: [u8; 16] =
    *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36";
const EXEMPLAR_SPAN: [u8; 8] = *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7";
const EXEMPLAR_TIME: u64 = 1_700_000_000_123_456_789;

fn request(series: HttpSeries, duration_s: f64, req: u64, resp: u64, sampled: bool) -> HttpRecord {
    HttpRecord {
        series,
        duration_s,
        request_body: req,
        response_body: Some(resp),
        exemplar: sampled.then_some(Exemplar {
            value: duration_s,
            trace_id: EXEMPLAR_TRACE,
            span_id: EXEMPLAR_SPAN,
            time_unix_ns: EXEMPLAR_TIME,
        }),
    }
}

/// The first batch: 3 OK server requests (one sampled), 1 failed one (its route
/// overflowed), and 1 failed client call.
fn record_first(m: &Metrics, r: &Arc<Resource>) {
    m.record_http(r, request(users(200), 0.003, 0, 100, false), false);
    m.record_http(r, request(users(200), 0.02, 0, 100, true), false);
    m.record_http(r, request(users(200), 0.2, 0, 20_000, false), false);
    m.record_http(r, request(users(500), 1.5, 10, 0, false), true);
    m.record_http(r, request(payments(), 0.06, 300, 5, false), false);
}

/// The second batch: 2 more OK server requests.
fn record_second(m: &Metrics, r: &Arc<Resource>) {
    m.record_http(r, request(users(200), 0.004, 0, 100, false), false);
    m.record_http(r, request(users(200), 7.0, 0, 100, false), false);
}

fn flush(rt: &tokio::runtime::Runtime, h: &MetricsExportHandle) -> u64 {
    rt.block_on(h.force_flush()).expect("flush delivers")
}

fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> Option<&'a Metric> {
    rm.scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)
}

fn names(rm: &ResourceMetrics) -> Vec<&str> {
    rm.scope_metrics
        .iter()
        .flat_map(|s| &s.metrics)
        .map(|m| m.name.as_str())
        .collect()
}

/// (temporality, points) of a histogram metric.
fn histogram<'a>(rm: &'a ResourceMetrics, name: &str) -> (i32, &'a [HistogramDataPoint]) {
    match metric(rm, name).map(|m| &m.data) {
        Some(Some(metric::Data::Histogram(h))) => (h.aggregation_temporality, &h.data_points),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// (temporality, monotonic, the single point) of a sum metric.
fn sum<'a>(rm: &'a ResourceMetrics, name: &str) -> (i32, bool, &'a NumberDataPoint) {
    match metric(rm, name).map(|m| &m.data) {
        Some(Some(metric::Data::Sum(s))) => {
            assert_eq!(s.data_points.len(), 1, "{name}");
            (s.aggregation_temporality, s.is_monotonic, &s.data_points[0])
        }
        other => panic!("{name} is not a sum: {other:?}"),
    }
}

fn int(p: &NumberDataPoint) -> i64 {
    match p.value {
        Some(number_data_point::Value::AsInt(v)) => v,
        other => panic!("not an int: {other:?}"),
    }
}

/// Attributes with their wire types, so `"200"` and `200` differ.
fn attrs(p: &HistogramDataPoint) -> BTreeMap<String, Any> {
    p.attributes
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap().value.unwrap()))
        .collect()
}

fn want_attrs(pairs: &[(&str, Any)]) -> BTreeMap<String, Any> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn s(v: &str) -> Any {
    Any::StringValue(v.into())
}

/// The point whose attributes include `key` = `value`.
fn point<'a>(points: &'a [HistogramDataPoint], key: &str, value: Any) -> &'a HistogramDataPoint {
    points
        .iter()
        .find(|p| attrs(p).get(key) == Some(&value))
        .unwrap_or_else(|| panic!("no point with {key}={value:?} in {points:?}"))
}

/// Bucket counts with `n` in each listed bucket index.
fn buckets(len: usize, hits: &[(usize, u64)]) -> Vec<u64> {
    let mut v = vec![0; len + 1];
    for &(i, n) in hits {
        v[i] += n;
    }
    v
}

const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
const DELTA: i32 = AggregationTemporality::Delta as i32;

/// Checks the resource, scope and every field of the first export (identical under both
/// temporalities but for the temporality itself: the first delta window starts at the
/// process start). `temporality` is the histograms', `counters` the sums'.
fn check_first_export(rm: &ResourceMetrics, temporality: i32, counters: i32, start: u64) {
    let resource: BTreeMap<String, String> = rm
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| (kv.key.clone(), render(kv.value.as_ref().unwrap())))
        .collect();
    assert_eq!(resource["service.name"], "nginx");
    assert_eq!(resource["process.pid"], "4242");
    assert_eq!(resource["deployment.environment"], "prod");
    assert_eq!(resource["host.name"], "node-7");
    let pid = rm.resource.as_ref().unwrap().attributes.iter();
    let pid = pid.clone().find(|kv| kv.key == "process.pid").unwrap();
    assert_eq!(
        pid.value.as_ref().unwrap().value,
        Some(Any::IntValue(4242)),
        "process.pid is an int"
    );
    assert_eq!(rm.scope_metrics.len(), 1);
    let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("periscope", SDK_VERSION)
    );
    let want_names = [
        "http.server.request.duration",
        "http.server.request.body.size",
        "http.server.response.body.size",
        "http.client.request.duration",
        "http.client.request.body.size",
        "http.client.response.body.size",
        "periscope.route.overflow",
    ];
    let got = names(rm);
    assert_eq!(got[..want_names.len()], want_names);
    for (name, unit) in [
        ("http.server.request.duration", "s"),
        ("http.server.response.body.size", "By"),
        ("http.client.request.body.size", "By"),
        ("periscope.route.overflow", "{request}"),
    ] {
        assert_eq!(metric(rm, name).unwrap().unit, unit, "{name}");
    }

    // Server durations: two series.
    let (t, points) = histogram(rm, "http.server.request.duration");
    assert_eq!(t, temporality);
    assert_eq!(points.len(), 2);
    let ok = point(points, "http.response.status_code", Any::IntValue(200));
    assert_eq!(
        attrs(ok),
        want_attrs(&[
            ("http.request.method", s("GET")),
            ("http.response.status_code", Any::IntValue(200)),
            ("http.route", s("/users/{id}")),
        ])
    );
    assert_eq!(ok.start_time_unix_nano, start);
    assert!(ok.time_unix_nano >= start);
    assert_eq!(ok.count, 3);
    assert!((ok.sum.unwrap() - 0.223).abs() < 1e-9, "{:?}", ok.sum);
    assert_eq!((ok.min, ok.max), (Some(0.003), Some(0.2)));
    assert_eq!(ok.explicit_bounds, DURATION_BUCKETS);
    // 0.003 <= 0.005 (0); 0.02 in (0.01, 0.025] (2); 0.2 in (0.1, 0.25] (6).
    assert_eq!(
        ok.bucket_counts,
        buckets(DURATION_BUCKETS.len(), &[(0, 1), (2, 1), (6, 1)])
    );
    assert_eq!(ok.exemplars.len(), 1);
    let ex = &ok.exemplars[0];
    assert_eq!(ex.trace_id, EXEMPLAR_TRACE);
    assert_eq!(ex.span_id, EXEMPLAR_SPAN);
    assert_eq!(ex.time_unix_nano, EXEMPLAR_TIME);
    assert_eq!(ex.value, Some(exemplar::Value::AsDouble(0.02)));

    let failed = point(points, "http.response.status_code", Any::IntValue(500));
    assert_eq!(
        attrs(failed),
        want_attrs(&[
            ("http.request.method", s("GET")),
            ("http.response.status_code", Any::IntValue(500)),
            ("http.route", s("/users/{id}")),
            ("error.type", s("500")),
        ])
    );
    assert_eq!(failed.count, 1);
    // 1.5 in (1.0, 2.5] (10).
    assert_eq!(
        failed.bucket_counts,
        buckets(DURATION_BUCKETS.len(), &[(10, 1)])
    );
    assert!(failed.exemplars.is_empty());

    // Server response sizes: 100, 100, 20000 | 0.
    let (_, points) = histogram(rm, "http.server.response.body.size");
    let ok = point(points, "http.response.status_code", Any::IntValue(200));
    assert_eq!(ok.explicit_bounds, SIZE_BUCKETS);
    // 100 in (75, 100] (6); 20000 above every bound (15).
    assert_eq!(
        ok.bucket_counts,
        buckets(SIZE_BUCKETS.len(), &[(6, 2), (15, 1)])
    );
    assert_eq!((ok.count, ok.sum), (3, Some(20_200.0)));
    assert_eq!(
        ok.exemplars[0].value,
        Some(exemplar::Value::AsDouble(100.0))
    );
    let (_, points) = histogram(rm, "http.server.request.body.size");
    let failed = point(points, "http.response.status_code", Any::IntValue(500));
    // 10 in (5, 10] (2).
    assert_eq!(failed.bucket_counts, buckets(SIZE_BUCKETS.len(), &[(2, 1)]));

    // The client call.
    let (t, points) = histogram(rm, "http.client.request.duration");
    assert_eq!(t, temporality);
    assert_eq!(points.len(), 1);
    assert_eq!(
        attrs(&points[0]),
        want_attrs(&[
            ("http.request.method", s("POST")),
            ("http.response.status_code", Any::IntValue(503)),
            ("server.address", s("payments.local")),
            ("server.port", Any::IntValue(8080)),
            ("error.type", s("503")),
        ])
    );
    // 0.06 in (0.05, 0.075] (4).
    assert_eq!(
        points[0].bucket_counts,
        buckets(DURATION_BUCKETS.len(), &[(4, 1)])
    );
    let (_, points) = histogram(rm, "http.client.request.body.size");
    assert_eq!((points[0].count, points[0].sum), (1, Some(300.0)));

    let (t, monotonic, p) = sum(rm, "periscope.route.overflow");
    assert_eq!((t, monotonic, int(p)), (counters, true, 1));
    assert_eq!(p.start_time_unix_nano, start);
}

/// Records, exports, records more, exports again; returns the two exports.
fn two_exports(protocol: Protocol, env: &[(&str, &str)]) -> (Receiver, u64, Vec<ResourceMetrics>) {
    let receiver = Receiver::start();
    let rt = runtime();
    let m = Arc::new(Metrics::default());
    let r = resource(4242);
    let start = now_ns();
    m.add_service(&r, start);
    let h = metrics_export::start(config(&receiver, protocol, env), m.clone(), rt.handle());
    record_first(&m, &r);
    assert!(flush(&rt, &h) > 0);
    assert_eq!(receiver.wait_for_metrics(1, WAIT).len(), 1);
    record_second(&m, &r);
    assert!(flush(&rt, &h) > 0);
    let stats = h.stats();
    rt.block_on(h.shutdown(Duration::from_secs(5)));
    assert_eq!(stats.exports_failed.load(Relaxed), 0);
    assert_eq!(stats.rejected_data_points.load(Relaxed), 0);
    let got = receiver.wait_for_metrics(2, WAIT);
    (receiver, start, got)
}

#[test]
fn cumulative_exports_grow() {
    for protocol in PROTOCOLS {
        let (receiver, start, got) = two_exports(protocol, &[]);
        // Two flushes and the final export at shutdown, which repeats the totals.
        assert_eq!(got.len(), 3, "{protocol:?}");
        assert_eq!(receiver.requests(protocol), 3, "{protocol:?}");
        let headers = &receiver.request_headers(protocol)[0];
        assert_eq!(headers.get("x-tenant").map(String::as_str), Some("e2e"));
        assert!(headers["user-agent"].starts_with("periscope/"));
        check_first_export(&got[0], CUMULATIVE, CUMULATIVE, start);

        let second = &got[1];
        let (t, points) = histogram(second, "http.server.request.duration");
        assert_eq!(t, CUMULATIVE);
        let ok = point(points, "http.response.status_code", Any::IntValue(200));
        assert_eq!(ok.start_time_unix_nano, start, "cumulative keeps its start");
        assert!(
            ok.time_unix_nano
                >= histogram(&got[0], "http.server.request.duration").1[0].time_unix_nano
        );
        assert_eq!(ok.count, 5);
        assert!((ok.sum.unwrap() - 7.227).abs() < 1e-9);
        assert_eq!((ok.min, ok.max), (Some(0.003), Some(7.0)));
        // + 0.004 (0) + 7.0 in (5, 7.5] (12).
        assert_eq!(
            ok.bucket_counts,
            buckets(DURATION_BUCKETS.len(), &[(0, 2), (2, 1), (6, 1), (12, 1)])
        );
        // The unchanged series are sent again, unchanged.
        let failed = point(points, "http.response.status_code", Any::IntValue(500));
        assert_eq!(failed.count, 1);
        assert_eq!(
            histogram(second, "http.client.request.duration").1[0].count,
            1
        );
        let (_, _, p) = sum(second, "periscope.route.overflow");
        assert_eq!((int(p), p.start_time_unix_nano), (1, start));
        let (_, _, p) = sum(second, "periscope.metric.series.overflow");
        assert_eq!(int(p), 0);

        let last = &got[2];
        let (_, points) = histogram(last, "http.server.request.duration");
        assert_eq!(
            point(points, "http.response.status_code", Any::IntValue(200)).count,
            5
        );
    }
}

#[test]
fn delta_exports_carry_only_new_requests() {
    for protocol in PROTOCOLS {
        let env = [(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "Delta")];
        let (receiver, start, got) = two_exports(protocol, &env);
        // Nothing new at shutdown: no third request.
        assert_eq!(got.len(), 2, "{protocol:?}");
        assert_eq!(receiver.requests(protocol), 2, "{protocol:?}");
        check_first_export(&got[0], DELTA, DELTA, start);
        let first_time = histogram(&got[0], "http.server.request.duration").1[0].time_unix_nano;

        let second = &got[1];
        assert_eq!(
            names(second),
            [
                "http.server.request.duration",
                "http.server.request.body.size",
                "http.server.response.body.size",
            ],
            "only what changed"
        );
        let (t, points) = histogram(second, "http.server.request.duration");
        assert_eq!(t, DELTA);
        assert_eq!(points.len(), 1, "the 500 series had nothing new");
        let ok = &points[0];
        assert_eq!(
            attrs(ok),
            want_attrs(&[
                ("http.request.method", s("GET")),
                ("http.response.status_code", Any::IntValue(200)),
                ("http.route", s("/users/{id}")),
            ])
        );
        assert_eq!(
            ok.start_time_unix_nano, first_time,
            "the window starts where the last one ended"
        );
        assert!(ok.time_unix_nano >= first_time);
        assert_eq!(ok.count, 2);
        assert!((ok.sum.unwrap() - 7.004).abs() < 1e-9);
        assert_eq!(
            ok.bucket_counts,
            buckets(DURATION_BUCKETS.len(), &[(0, 1), (12, 1)])
        );
        assert_eq!((ok.min, ok.max), (None, None));
        assert!(ok.exemplars.is_empty(), "the old exemplar is not resent");
        let (_, points) = histogram(second, "http.server.response.body.size");
        assert_eq!(
            points[0].bucket_counts,
            buckets(SIZE_BUCKETS.len(), &[(6, 2)])
        );
    }
}

#[test]
fn lowmemory_keeps_counters_cumulative() {
    let env = [(
        OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
        "lowmemory",
    )];
    let (_receiver, start, got) = two_exports(Protocol::HttpProtobuf, &env);
    // The final export repeats the cumulative counters even with no new requests.
    assert_eq!(got.len(), 3);
    check_first_export(&got[0], DELTA, CUMULATIVE, start);
    let (_, points) = histogram(&got[1], "http.server.request.duration");
    assert_eq!((points.len(), points[0].count), (1, 2));
    assert_eq!(
        names(&got[2]),
        [
            "periscope.route.overflow",
            "periscope.metric.series.overflow"
        ]
    );
}

#[test]
fn delta_survives_an_outage_without_losing_requests() {
    for protocol in PROTOCOLS {
        let receiver = Receiver::start();
        let rt = runtime();
        let m = Arc::new(Metrics::default());
        let r = resource(4242);
        let start = now_ns();
        m.add_service(&r, start);
        let env = [(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "delta")];
        let h = metrics_export::start(config(&receiver, protocol, &env), m.clone(), rt.handle());
        record_first(&m, &r);
        receiver.set_unavailable(true);
        let err = rt.block_on(h.force_flush()).unwrap_err();
        assert!(err.to_string().contains("failed"), "{protocol:?}: {err}");
        receiver.set_unavailable(false);
        record_second(&m, &r);
        assert!(flush(&rt, &h) > 0);
        let stats = h.stats();
        rt.block_on(h.shutdown(Duration::from_secs(5)));
        assert_eq!(stats.exports_failed.load(Relaxed), 1, "{protocol:?}");
        assert_eq!(stats.exports_ok.load(Relaxed), 1, "{protocol:?}");
        let got = receiver.wait_for_metrics(1, WAIT);
        assert_eq!(got.len(), 1, "{protocol:?}");
        // The delivered window covers both batches, from the process start.
        let (t, points) = histogram(&got[0], "http.server.request.duration");
        assert_eq!(t, DELTA);
        let ok = point(points, "http.response.status_code", Any::IntValue(200));
        assert_eq!((ok.count, ok.start_time_unix_nano), (5, start));
        assert_eq!(
            stats.data_points.load(Relaxed),
            // 3 server histograms x 2 series, 3 client histograms, 1 route overflow.
            10
        );
    }
}

#[test]
fn shutdown_delivers_a_short_run() {
    for protocol in PROTOCOLS {
        let receiver = Receiver::start();
        let rt = runtime();
        let m = Arc::new(Metrics::default());
        let r = resource(4242);
        let start = now_ns();
        m.add_service(&r, start);
        let h = metrics_export::start(config(&receiver, protocol, &[]), m.clone(), rt.handle());
        record_first(&m, &r);
        rt.block_on(h.shutdown(Duration::from_secs(5)));
        let got = receiver.wait_for_metrics(1, WAIT);
        assert_eq!(got.len(), 1, "{protocol:?}");
        check_first_export(&got[0], CUMULATIVE, CUMULATIVE, start);
    }
}

#[test]
fn exports_every_interval() {
    let receiver = Receiver::start();
    let rt = runtime();
    let m = Arc::new(Metrics::default());
    let r = resource(4242);
    m.add_service(&r, now_ns());
    record_first(&m, &r);
    let cfg = config(
        &receiver,
        Protocol::Grpc,
        &[(OTEL_METRIC_EXPORT_INTERVAL, "100")],
    );
    assert_eq!(cfg.interval, Duration::from_millis(100));
    let h = metrics_export::start(cfg, m.clone(), rt.handle());
    let got = receiver.wait_for_metrics(3, WAIT);
    assert!(got.len() >= 3, "{}", got.len());
    rt.block_on(h.shutdown(Duration::from_secs(5)));
}

#[test]
fn large_registries_are_split_into_bounded_requests() {
    let receiver = Receiver::start();
    let rt = runtime();
    let m = Arc::new(Metrics::default());
    let r = resource(4242);
    m.add_service(&r, now_ns());
    let series = 1200;
    for i in 0..series {
        let mut s = users(200);
        s.route = Arc::from(format!("/r{i}").as_str());
        m.record_http(&r, request(s, 0.02, 10, 100, true), false);
    }
    let h = metrics_export::start(
        config(&receiver, Protocol::Grpc, &[]),
        m.clone(),
        rt.handle(),
    );
    let stats = h.stats();
    assert_eq!(flush(&rt, &h), 3 * series + 2);
    assert_eq!(stats.exports_ok.load(Relaxed), 2, "two requests");
    assert_eq!(receiver.requests(Protocol::Grpc), 2);
    let got = receiver.wait_for_metrics(2, WAIT);
    assert_eq!(got.len(), 2, "the process appears once per request");
    let mut routes = std::collections::BTreeSet::new();
    for rm in &got {
        let (_, points) = histogram(rm, "http.server.request.duration");
        for p in points {
            assert_eq!(p.count, 1);
            let Some(Any::StringValue(route)) = attrs(p).remove("http.route") else {
                panic!("no route: {p:?}");
            };
            assert!(routes.insert(route));
        }
    }
    assert_eq!(routes.len(), series as usize, "every series exactly once");
    rt.block_on(h.shutdown(Duration::from_secs(5)));
}

/// (temporality, monotonic, points) of a sum metric with any number of points.
fn sum_points<'a>(rm: &'a ResourceMetrics, name: &str) -> (i32, bool, &'a [NumberDataPoint]) {
    match metric(rm, name).map(|m| &m.data) {
        Some(Some(metric::Data::Sum(s))) => {
            (s.aggregation_temporality, s.is_monotonic, &s.data_points)
        }
        other => panic!("{name} is not a sum: {other:?}"),
    }
}

fn gauge<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a [NumberDataPoint] {
    match metric(rm, name).map(|m| &m.data) {
        Some(Some(metric::Data::Gauge(g))) => &g.data_points,
        other => panic!("{name} is not a gauge: {other:?}"),
    }
}

fn double(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        other => panic!("not a double: {other:?}"),
    }
}

fn point_attr(p: &NumberDataPoint, key: &str) -> Option<Any> {
    p.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone()?.value)
}

/// (code.function.name, code.file.path, code.line.number, value) of a by-site point.
type SitePoint = (Option<Any>, Option<Any>, Option<Any>, i64);

fn unit(rm: &ResourceMetrics, name: &str) -> String {
    metric(rm, name).unwrap().unit.clone()
}

fn runtime_registry(start: u64) -> Arc<Metrics> {
    let m = Arc::new(Metrics::default());
    m.add_service(&resource(4242), start);
    m.update_process(4242, |p| {
        p.threads = 9;
        p.cpu_user_s = 2.5;
        p.cpu_system_s = 0.5;
        p.rss_bytes = 64 << 20;
        p.virtual_bytes = 2 << 30;
        p.open_fds = 33;
        p.start_time_s = 1_700_000_000.0;
    });
    let site = |function: &str, line: u32, live: i64, suspected: bool| SiteSnapshot {
        site: Arc::new(Site {
            function: function.into(),
            file: "/src/app/main.go".into(),
            line,
        }),
        live,
        created: live as u64,
        suspected,
    };
    m.set_go(
        4242,
        GoStats {
            version: "1.22.1".into(),
            goroutines: 530,
            gc_cycles: 12,
            gc_pause_sum_s: 0.024,
            gc_pause_quantiles: Some([0.0001, 0.0002, 0.0003, 0.0004, 0.002]),
            sites: vec![
                site("main.leak", 42, 523, true),
                site("main.serve", 17, 5, false),
            ],
            ..Default::default()
        },
    );
    m
}

#[test]
fn process_and_go_metrics_arrive_with_semconv_names_units_and_types() {
    for (protocol, env) in [
        (Protocol::Grpc, &[][..]),
        (
            Protocol::HttpProtobuf,
            &[(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "delta")][..],
        ),
    ] {
        let receiver = Receiver::start();
        let rt = runtime();
        let start = now_ns();
        let m = runtime_registry(start);
        let h = metrics_export::start(config(&receiver, protocol, env), m.clone(), rt.handle());
        assert!(flush(&rt, &h) > 0);
        rt.block_on(h.shutdown(Duration::from_secs(5)));
        let got = receiver.wait_for_metrics(1, WAIT);
        let rm = &got[0];
        let delta = !env.is_empty();
        let want_temporality = if delta { DELTA } else { CUMULATIVE };

        for (name, want) in [
            ("process.thread.count", "{thread}"),
            ("process.cpu.time", "s"),
            ("process.memory.usage", "By"),
            ("process.memory.virtual", "By"),
            ("process.unix.file_descriptor.count", "{file_descriptor}"),
            ("go.goroutine.count", "{goroutine}"),
            ("periscope.go.gc.cycles", "{gc_cycle}"),
            ("periscope.go.gc.pause.duration", "s"),
            ("periscope.go.goroutine.by_site", "{goroutine}"),
            ("periscope.go.goroutine.leak_suspected", "{site}"),
        ] {
            assert_eq!(unit(rm, name), want, "{protocol:?} {name}");
        }
        // Semconv UpDownCounters: non-monotonic sums, cumulative under either preference.
        let one = |name: &str| {
            let (temporality, monotonic, points) = sum_points(rm, name);
            assert_eq!((temporality, monotonic), (CUMULATIVE, false), "{name}");
            assert_eq!(points.len(), 1, "{name}");
            assert!(points[0].start_time_unix_nano > 0, "{name}: start time");
            int(&points[0])
        };
        assert_eq!(one("process.thread.count"), 9);
        assert_eq!(one("process.memory.usage"), 64 << 20);
        assert_eq!(one("process.memory.virtual"), 2 << 30);
        assert_eq!(one("process.unix.file_descriptor.count"), 33);
        assert_eq!(one("go.goroutine.count"), 530);

        let (temporality, monotonic, cpu) = sum_points(rm, "process.cpu.time");
        assert_eq!((temporality, monotonic), (want_temporality, true));
        let mode = |m: &str| {
            cpu.iter()
                .find(|p| point_attr(p, "cpu.mode") == Some(s(m)))
                .map(|p| (double(p), p.start_time_unix_nano))
        };
        let proc_start = 1_700_000_000 * 1_000_000_000;
        assert_eq!(mode("user"), Some((2.5, proc_start)), "{protocol:?}");
        assert_eq!(mode("system"), Some((0.5, proc_start)), "{protocol:?}");

        let (temporality, monotonic, gc) = sum(rm, "periscope.go.gc.cycles");
        assert_eq!((temporality, monotonic), (want_temporality, true));
        assert_eq!((int(gc), gc.start_time_unix_nano), (12, start));

        let Some(Some(metric::Data::Summary(pause))) =
            metric(rm, "periscope.go.gc.pause.duration").map(|m| &m.data)
        else {
            panic!("not a summary");
        };
        let p = &pause.data_points[0];
        assert_eq!((p.count, p.sum), (12, 0.024));
        let q: Vec<(f64, f64)> = p
            .quantile_values
            .iter()
            .map(|v| (v.quantile, v.value))
            .collect();
        assert_eq!(
            q,
            [
                (0.0, 0.0001),
                (0.25, 0.0002),
                (0.5, 0.0003),
                (0.75, 0.0004),
                (1.0, 0.002)
            ]
        );

        let sites = gauge(rm, "periscope.go.goroutine.by_site");
        let by_fn: Vec<SitePoint> = sites
            .iter()
            .map(|p| {
                (
                    point_attr(p, "code.function.name"),
                    point_attr(p, "code.file.path"),
                    point_attr(p, "code.line.number"),
                    int(p),
                )
            })
            .collect();
        assert_eq!(
            by_fn,
            [
                (
                    Some(s("main.leak")),
                    Some(s("/src/app/main.go")),
                    Some(Any::IntValue(42)),
                    523
                ),
                (
                    Some(s("main.serve")),
                    Some(s("/src/app/main.go")),
                    Some(Any::IntValue(17)),
                    5
                ),
            ]
        );
        let leaks = gauge(rm, "periscope.go.goroutine.leak_suspected");
        assert_eq!(leaks.len(), 1);
        assert_eq!(
            point_attr(&leaks[0], "code.function.name"),
            Some(s("main.leak"))
        );
        assert_eq!(int(&leaks[0]), 1);
    }
}
