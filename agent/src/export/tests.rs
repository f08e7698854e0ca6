//! Pipeline tests: batching, retries, drop accounting, outage logging and shutdown, against
//! the scriptable collector in `test_support`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::test_support::{FakeCollector, Reply, SharedBuf, resource, sample_span};
use super::*;

fn batch(size: usize, delay_ms: u64, queue: usize) -> BatchConfig {
    BatchConfig {
        schedule_delay: Duration::from_millis(delay_ms),
        max_export_batch_size: size,
        max_queue_size: queue,
    }
}

fn otlp_config(url: &str, protocol: Protocol, timeout_ms: u64, batch: BatchConfig) -> ExportConfig {
    let otlp = OtlpConfig::new(url, protocol)
        .unwrap()
        .with_timeout(Duration::from_millis(timeout_ms))
        .unwrap();
    ExportConfig {
        otlp: Some(otlp),
        console: Vec::new(),
        batch,
    }
}

/// `n` sample spans of one resource.
fn spans(n: usize) -> Vec<crate::span::Span> {
    let r = resource(1, "svc");
    (0..n).map(|i| sample_span(r.clone(), i as u8)).collect()
}

/// Sends `n` sample spans one by one.
fn send(sink: &SpanSink, n: usize) {
    for span in spans(n) {
        sink.send(span);
    }
}

fn get(stats: &ExportStats) -> (u64, u64, u64, u64) {
    (
        stats.exported.load(Relaxed),
        stats.dropped.load(Relaxed),
        stats.failed_exports.load(Relaxed),
        stats.queue_depth.load(Relaxed),
    )
}

/// A loopback port nothing listens on.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_by_size_and_flushes_the_rest_at_shutdown() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(3, 60_000, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 7);
    wait_until("two full batches", || c.accepted_batches().len() == 2).await;
    handle.shutdown(Duration::from_secs(2)).await;
    assert_eq!(c.accepted_batches(), vec![3, 3, 1]);
    assert_eq!(get(&sink.stats()[0]), (7, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_by_delay() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(100, 50, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 2);
    // Exported by the 50 ms timer, long before any shutdown.
    let stats = handle.stats();
    wait_until("the delayed batch", || stats[0].exported.load(Relaxed) == 2).await;
    assert_eq!(c.accepted_batches(), vec![2]);
    handle.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_drops_counts_and_does_not_hang_shutdown() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let cfg = otlp_config(&closed_port_url(), protocol, 10_000, batch(4, 20, 100));
        let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
        send(&sink, 10);
        let stats = sink.stats();
        let t = Instant::now();
        handle.shutdown(Duration::from_secs(3)).await;
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "{protocol}: shutdown took {:?}",
            t.elapsed()
        );
        let (exported, dropped, failed, depth) = get(&stats[0]);
        assert_eq!((exported, dropped, depth), (0, 10, 0), "{protocol}");
        assert!(failed >= 1, "{protocol}");
        // After shutdown, sends are dropped and counted, never queued.
        sink.send(sample_span(resource(1, "svc"), 0));
        assert_eq!(stats[0].dropped.load(Relaxed), 11);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_backend_cannot_hold_shutdown_past_its_deadline() {
    let c = FakeCollector::start(Reply::Hang).await;
    // The export timeout (30 s) is far longer than the shutdown deadline.
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        30_000,
        batch(5, 10, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 12);
    wait_until("the first request", || c.requests() >= 1).await;
    let stats = sink.stats();
    let t = Instant::now();
    handle.shutdown(Duration::from_millis(500)).await;
    let took = t.elapsed();
    // Far below the 30 s export timeout; slack for a loaded CI machine.
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    let (exported, dropped, _, depth) = get(&stats[0]);
    assert_eq!((exported, dropped, depth), (0, 12, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_and_counts_without_blocking_send() {
    let c = FakeCollector::start(Reply::Hang).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        30_000,
        batch(2, 10, 4),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 2);
    wait_until("the hung request", || c.requests() >= 1).await;
    let t = Instant::now();
    send(&sink, 1000);
    assert!(t.elapsed() < Duration::from_secs(1), "send must never wait");
    let stats = sink.stats();
    // 4 fit in the queue, the rest are dropped at once.
    assert_eq!(stats[0].queue_depth.load(Relaxed), 4);
    assert_eq!(stats[0].dropped.load(Relaxed), 996);
    handle.shutdown(Duration::from_millis(300)).await;
    let (exported, dropped, _, depth) = get(&stats[0]);
    assert_eq!((exported, dropped, depth), (0, 1002, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_failed_batch_honouring_retry_after() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    c.script(&[Reply::Status(503, Some(0)), Reply::Status(429, None)]);
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(10, 10, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 3);
    wait_until("the retried batch", || c.accepted_batches() == vec![3]).await;
    assert_eq!(c.requests(), 3);
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(get(&sink.stats()[0]), (3, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn does_not_retry_a_permanent_error() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    c.script(&[Reply::Status(400, None)]);
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(10, 10, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    send(&sink, 3);
    wait_until("the failed batch", || {
        sink.stats()[0].failed_exports.load(Relaxed) == 1
    })
    .await;
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(c.requests(), 1);
    assert_eq!(get(&sink.stats()[0]), (0, 3, 1, 0));
}

/// Runs on the test's thread (current_thread runtime) so the thread-local log subscriber
/// sees the worker's lines.
#[tokio::test]
async fn one_warning_per_outage_and_one_line_on_recovery() {
    let logs = SharedBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let c = FakeCollector::start(Reply::Status(503, Some(0))).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(1, 1, 10),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    let stats = sink.stats();
    send(&sink, 1);
    // The batch is held and retried; then 10 wait in the queue and 9 are dropped.
    wait_until("the outage to be declared", || c.requests() >= 5).await;
    send(&sink, 19);
    c.set_default(Reply::Status(200, None));
    wait_until("recovery", || stats[0].exported.load(Relaxed) == 11).await;
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(get(&stats[0]), (11, 9, 0, 0));

    let text = logs.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains(&format!(
            "HTTP export to {} failed: 503 Service Unavailable; holding spans and retrying until the backend recovers",
            c.traces_url()
        )),
        "{text}"
    );
    let recovered: Vec<&str> = text.lines().filter(|l| l.contains("recovered")).collect();
    assert_eq!(recovered.len(), 1, "{text}");
    assert!(
        recovered[0].contains("9 spans were dropped during the outage"),
        "{text}"
    );
}

/// Issue 16: after an outage, the spans sent in the first seconds of recovery were dropped
/// too (each batch that came due during the outage's backoff was dropped), and export only
/// resumed after the backoff. Now the queue buffers the outage and the held batch is retried
/// at most one batch delay apart, so everything queued is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_outage_queued_spans_delivered_on_recovery() {
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let c = FakeCollector::start(Reply::Status(503, None)).await;
        let url = match protocol {
            Protocol::Grpc => closed_port_url(),
            Protocol::HttpProtobuf => c.traces_url(),
        };
        let cfg = otlp_config(&url, protocol, 2000, batch(8, 20, 64));
        let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
        let stats = sink.stats();
        send(&sink, 40);
        // Long enough for several failed attempts (an outage, not a blip).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            get(&stats[0]),
            (0, 0, 0, 32),
            "{protocol}: held 8, queued 32"
        );
        if protocol == Protocol::Grpc {
            // No gRPC fake here: shut down and check the held batch is accounted for.
            handle.shutdown(Duration::from_millis(300)).await;
            assert_eq!(get(&stats[0]), (0, 40, 1, 0), "{protocol}");
            continue;
        }
        c.set_default(Reply::Status(200, None));
        // Spans sent right after recovery go out as well.
        send(&sink, 10);
        wait_until("every span delivered", || {
            stats[0].exported.load(Relaxed) == 50
        })
        .await;
        handle.shutdown(Duration::from_secs(1)).await;
        assert_eq!(get(&stats[0]), (50, 0, 0, 0), "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_past_the_queue_bound_drops_newest_and_counts() {
    let c = FakeCollector::start(Reply::Status(503, None)).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(5, 20, 10),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    let stats = sink.stats();
    send(&sink, 5);
    wait_until("the first batch to be held", || c.requests() >= 2).await;
    send(&sink, 100);
    assert_eq!(get(&stats[0]), (0, 90, 0, 10));
    c.set_default(Reply::Status(200, None));
    wait_until("recovery", || stats[0].exported.load(Relaxed) == 15).await;
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(get(&stats[0]), (15, 90, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_at_once() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    let mut cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(10, 10, 100),
    );
    cfg.console = vec![ConsoleFormat::Text, ConsoleFormat::Json];
    let (text, json) = (SharedBuf::default(), SharedBuf::default());
    let (t, j) = (text.clone(), json.clone());
    let (sink, handle) =
        start_with_console(cfg, &tokio::runtime::Handle::current(), move |f| match f {
            ConsoleFormat::Text => Box::new(t.clone()),
            ConsoleFormat::Json => Box::new(j.clone()),
        });
    send(&sink, 5);
    let stats = handle.stats();
    handle.shutdown(Duration::from_secs(2)).await;
    let kinds: Vec<OutputKind> = stats.iter().map(|s| s.output).collect();
    assert_eq!(
        kinds,
        [
            OutputKind::Otlp,
            OutputKind::ConsoleText,
            OutputKind::ConsoleJson
        ]
    );
    for s in &stats {
        assert_eq!(get(s), (5, 0, 0, 0), "{:?}", s.output);
    }
    assert_eq!(c.accepted_batches(), vec![5]);
    let text = text.text();
    assert_eq!(text.lines().count(), 5);
    assert!(
        text.lines()
            .all(|l| l.contains(" SERVER GET /users/{id} 500 ERROR 1.234ms "))
    );
    let json = json.text();
    assert_eq!(json.lines().count(), 5);
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kind"], "SERVER");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_outputs_is_harmless() {
    let (sink, handle) = start(ExportConfig::default(), &tokio::runtime::Handle::current());
    send(&sink, 3);
    assert!(sink.stats().is_empty());
    handle.shutdown(Duration::from_millis(100)).await;
}
/// A hand-over of many spans is one message, still cut into batches of the configured
/// size (never a larger request), with the part batch sent after its delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spans_at_once_are_cut_into_batches() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(4, 50, 100),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    sink.send_many(spans(10));
    sink.send_many(Vec::new());
    let stats = handle.stats();
    wait_until("all ten", || stats[0].exported.load(Relaxed) == 10).await;
    assert_eq!(c.accepted_batches(), vec![4, 4, 2]);
    handle.shutdown(Duration::from_secs(1)).await;
    assert_eq!(get(&stats[0]), (10, 0, 0, 0));
}

/// The queue's bound counts spans, not messages: a hand-over larger than the room left
/// is cut to fit and the rest dropped and counted, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spans_at_once_respect_the_queue_bound() {
    let c = FakeCollector::start(Reply::Hang).await;
    let cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        30_000,
        batch(2, 10, 6),
    );
    let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
    sink.send_many(spans(2));
    wait_until("the hung request", || c.requests() >= 1).await;
    let stats = sink.stats();
    sink.send_many(spans(4));
    sink.send_many(spans(5));
    // 4 + 2 of the 5 fit; 3 are dropped.
    assert_eq!(stats[0].queue_depth.load(Relaxed), 6);
    assert_eq!(stats[0].dropped.load(Relaxed), 3);
    sink.send_many(spans(1000));
    assert_eq!(stats[0].dropped.load(Relaxed), 1003);
    handle.shutdown(Duration::from_millis(300)).await;
    assert_eq!(get(&stats[0]), (0, 1011, 1, 0));
}

/// Every output gets every span of a hand-over (the console ones line by line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spans_at_once_reach_every_output() {
    let c = FakeCollector::start(Reply::Status(200, None)).await;
    let mut cfg = otlp_config(
        &c.traces_url(),
        Protocol::HttpProtobuf,
        2000,
        batch(10, 10, 100),
    );
    cfg.console = vec![ConsoleFormat::Text];
    let text = SharedBuf::default();
    let t = text.clone();
    let (sink, handle) = start_with_console(cfg, &tokio::runtime::Handle::current(), move |_| {
        Box::new(t.clone())
    });
    sink.send_many(spans(7));
    sink.send(spans(1).remove(0));
    let stats = handle.stats();
    handle.shutdown(Duration::from_secs(2)).await;
    for s in &stats {
        assert_eq!(get(s), (8, 0, 0, 0), "{:?}", s.output);
    }
    assert_eq!(c.accepted_batches(), vec![8]);
    assert_eq!(text.text().lines().count(), 8);
}
