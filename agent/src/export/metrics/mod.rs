//! OTLP metrics: a periodic reader of the [`Metrics`] registry that sends it to an OTLP
//! backend (gRPC or HTTP/protobuf), cumulative or delta.
//!
//! Unlike spans, metrics need no queue: the registry already aggregates, so the exporter
//! only takes a [`Metrics::snapshot`] every interval (one short lock, shared with the event
//! thread's increments) and converts it on its own task. Nothing accumulates while the
//! backend is down: cumulative values are simply sent again next time, and delta windows
//! are only advanced by a delivered export, so the next request covers the gap.
//! [`MetricsExportHandle::shutdown`] does one last export, so a run with `--duration`
//! delivers what it measured even if it is shorter than the interval.
//!
//! Layout: `config` (flags + env), `encode` (snapshot -> size-bounded requests, delta state),
//! `transport` (gRPC / HTTP clients), this file (the periodic task and its telemetry).

pub mod config;
pub mod encode;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

pub use crate::export::transport::MetricsTransport;
pub use config::{MetricsExportConfig, MetricsExportFlags, TemporalityPreference};
pub use encode::{Batch, Collector};

use crate::export::otlp::ExportError;
use crate::metrics::Metrics;

/// First wait between attempts of the final export (doubles up to [`MAX_BACKOFF`]).
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long [`MetricsExportHandle::shutdown`] waits past its deadline before aborting.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// The metrics exporter's own telemetry. Counters only grow; relaxed atomics (statistics,
/// not synchronization).
#[derive(Debug, Default)]
pub struct MetricsExportStats {
    /// Requests the backend accepted (fully or partially). One collection is sent as one
    /// or more requests (see [`encode::MAX_POINTS_PER_REQUEST`]).
    pub exports_ok: AtomicU64,
    /// Collections whose sending stopped at a failed request (periodic: one attempt; final:
    /// after retries). What was not delivered is not lost unless it was the final export:
    /// the next export carries it.
    pub exports_failed: AtomicU64,
    /// Data points delivered (accepted, minus those rejected in a partial success).
    pub data_points: AtomicU64,
    /// Data points the backend refused in a partial success.
    pub rejected_data_points: AtomicU64,
}

/// A [`MetricsExportHandle::force_flush`] that did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("the OTLP metrics exporter has stopped")]
    Stopped,
}

/// Owns the export task. [`shutdown`](Self::shutdown) exports one last time and stops it;
/// dropping the handle stops it without that final export.
pub struct MetricsExportHandle {
    flush: mpsc::Sender<oneshot::Sender<Result<u64, FlushError>>>,
    shutdown: watch::Sender<Option<Instant>>,
    stats: Arc<MetricsExportStats>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsExportHandle {
    pub fn stats(&self) -> Arc<MetricsExportStats> {
        self.stats.clone()
    }

    /// Collects and exports now (one attempt per request, outside the interval), returning
    /// the data points delivered. `Ok(0)` when there was nothing to send.
    pub async fn force_flush(&self) -> Result<u64, FlushError> {
        let (tx, rx) = oneshot::channel();
        self.flush.send(tx).await.map_err(|_| FlushError::Stopped)?;
        rx.await.map_err(|_| FlushError::Stopped)?
    }

    /// Exports the registry one last time (retrying within `deadline`), then stops. An
    /// export in flight when this is called is abandoned in favor of the final one, which
    /// reads a newer snapshot anyway. Returns by `deadline` plus a short grace period
    /// whatever the backend does.
    pub async fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let _ = self.shutdown.send(Some(until));
        let abort = self.task.abort_handle();
        if tokio::time::timeout_at(until + SHUTDOWN_GRACE, self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Starts exporting `metrics` every `cfg.interval` on `rt`. If the OTLP client cannot be
/// created the error is logged once and every export counts as failed.
#[must_use = "dropping the handle stops the export"]
pub fn start(
    cfg: MetricsExportConfig,
    metrics: Arc<Metrics>,
    rt: &tokio::runtime::Handle,
) -> MetricsExportHandle {
    let transport = {
        let _guard = rt.enter();
        MetricsTransport::new(&cfg.otlp)
    };
    let transport = transport.map_err(|e| {
        crate::export::otlp::report_client_error("OTLP metrics export disabled", &e);
        e.to_string()
    });
    let stats = Arc::new(MetricsExportStats::default());
    let (flush_tx, flush_rx) = mpsc::channel(4);
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let worker = Worker {
        endpoint: cfg.otlp.endpoint().to_owned(),
        transport,
        timeout: cfg.otlp.timeout(),
        // The fields are public: a zero interval would make tokio's interval panic.
        interval: cfg.interval.max(Duration::from_millis(1)),
        collector: Collector::new(cfg.temporality),
        metrics,
        stats: stats.clone(),
        shutdown: shutdown_rx,
        healthy: true,
    };
    let task = rt.spawn(worker.run(flush_rx));
    MetricsExportHandle {
        flush: flush_tx,
        shutdown: shutdown_tx,
        stats,
        task,
    }
}

struct Worker {
    endpoint: String,
    /// `Err(reason)` when the client could not be created.
    transport: Result<MetricsTransport, String>,
    timeout: Duration,
    interval: Duration,
    collector: Collector,
    metrics: Arc<Metrics>,
    stats: Arc<MetricsExportStats>,
    /// Set once by shutdown: the instant by which the final export must be done.
    shutdown: watch::Receiver<Option<Instant>>,
    /// False during an outage: the first failure warns, the recovery logs once.
    healthy: bool,
}

/// How an export ends when it does not deliver.
enum Failure {
    Export(ExportError),
    /// Cut short by shutdown (periodic) or by its deadline (final).
    Cut,
}

impl Worker {
    async fn run(mut self, mut flushes: mpsc::Receiver<oneshot::Sender<Result<u64, FlushError>>>) {
        let mut ticker = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        // A slow export delays the next one rather than causing a burst.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let shutdown = *self.shutdown.borrow_and_update();
            if let Some(until) = shutdown {
                self.export(Some(until)).await.ok();
                break;
            }
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    // Err: the handle was dropped without shutdown.
                    if changed.is_err() {
                        break;
                    }
                }
                flush = flushes.recv() => match flush {
                    Some(reply) => {
                        let result = match self.export(None).await {
                            Ok(n) => Ok(n),
                            Err(Failure::Export(e)) => Err(FlushError::Export(e)),
                            // Shutdown began: its final export takes over.
                            Err(Failure::Cut) => Err(FlushError::Stopped),
                        };
                        let _ = reply.send(result);
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    self.export(None).await.ok();
                }
            }
        }
    }

    /// Collects one snapshot and sends its batches in order, committing each one delivered.
    /// Stops at the first failure: the batches not sent keep their windows open, and the
    /// next export carries them. `until` marks the final export (each batch retried within
    /// it); otherwise one attempt per batch, abandoned if shutdown begins.
    async fn export(&mut self, until: Option<Instant>) -> Result<u64, Failure> {
        let snapshot = self.metrics.snapshot();
        let mut batches = self.collector.collect(snapshot, unix_now_ns()).into_iter();
        if batches.len() == 0 {
            return Ok(0);
        }
        let transport = match &mut self.transport {
            Ok(t) => t,
            Err(reason) => {
                self.stats.exports_failed.fetch_add(1, Relaxed);
                return Err(Failure::Export(ExportError::Client {
                    endpoint: self.endpoint.clone(),
                    reason: reason.clone(),
                }));
            }
        };
        let mut delivered = 0;
        let failure = loop {
            let Some(batch) = batches.next() else {
                break None;
            };
            match send(transport, &batch, self.timeout, until, &self.shutdown).await {
                Ok(rejected) => {
                    let n = batch.data_points;
                    let rejected = rejected.min(n);
                    self.stats.exports_ok.fetch_add(1, Relaxed);
                    self.stats.data_points.fetch_add(n - rejected, Relaxed);
                    self.stats.rejected_data_points.fetch_add(rejected, Relaxed);
                    delivered += n - rejected;
                    self.collector.commit(batch);
                }
                Err(f) => {
                    let unsent = batch.data_points + batches.map(|b| b.data_points).sum::<u64>();
                    break Some((f, unsent));
                }
            }
        };
        let Some((failure, unsent)) = failure else {
            if !self.healthy {
                tracing::info!("OTLP metrics export to {} recovered", self.endpoint);
                self.healthy = true;
            }
            return Ok(delivered);
        };
        match (&failure, until) {
            // Abandoned for the final export: not a failure.
            (Failure::Cut, None) => {}
            (Failure::Cut, Some(_)) => {
                self.stats.exports_failed.fetch_add(1, Relaxed);
                tracing::warn!(
                    "final OTLP metrics export: shutdown deadline reached, {unsent} data points lost"
                );
            }
            (Failure::Export(e), Some(_)) => {
                self.stats.exports_failed.fetch_add(1, Relaxed);
                tracing::warn!("final OTLP metrics export failed, {unsent} data points lost: {e}");
            }
            (Failure::Export(e), None) => {
                self.stats.exports_failed.fetch_add(1, Relaxed);
                if self.healthy {
                    tracing::warn!(
                        "{e}; metrics will be sent again at the next export (logged once per outage)"
                    );
                    self.healthy = false;
                }
            }
        }
        Err(failure)
    }
}

/// Sends one batch: one attempt, or retries within `until` for the final export. Returns
/// the data points the backend rejected.
async fn send(
    transport: &mut MetricsTransport,
    batch: &Batch,
    timeout: Duration,
    until: Option<Instant>,
    shutdown: &watch::Receiver<Option<Instant>>,
) -> Result<u64, Failure> {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let timeout = until.map_or(timeout, |u| {
            timeout.min(u.saturating_duration_since(Instant::now()))
        });
        if timeout.is_zero() {
            return Err(Failure::Cut);
        }
        let attempt = transport.export(&batch.request, timeout);
        let result = match until {
            Some(_) => attempt.await,
            None => {
                let mut shutdown = shutdown.clone();
                tokio::select! {
                    r = attempt => r,
                    _ = shutdown.wait_for(Option::is_some) => return Err(Failure::Cut),
                }
            }
        };
        match (result, until) {
            (Ok(rejected), _) => return Ok(rejected),
            (Err(e), Some(u)) if e.is_retryable() => {
                let wait = e.retry_after().unwrap_or(backoff).min(MAX_BACKOFF);
                if Instant::now() + wait >= u {
                    return Err(Failure::Export(e));
                }
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            (Err(e), _) => return Err(Failure::Export(e)),
        }
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::config::{OtlpConfig, Protocol};
    use crate::metrics::{HttpRecord, test_series};
    use crate::resource::Resource;

    fn registry() -> Arc<Metrics> {
        let m = Arc::new(Metrics::default());
        let r = Arc::new(Resource {
            pid: 1,
            service_name: "a".into(),
            attributes: vec![("service.name".into(), "a".into())],
        });
        m.add_service(&r, 1);
        m.record_http(
            &r,
            HttpRecord {
                series: test_series("/", 200),
                duration_s: 0.1,
                request_body: 0,
                response_body: Some(0),
                exemplar: None,
            },
            false,
        );
        m
    }

    fn config(url: &str, protocol: Protocol) -> MetricsExportConfig {
        let otlp = OtlpConfig::new(url, protocol)
            .unwrap()
            .with_timeout(Duration::from_secs(5))
            .unwrap();
        MetricsExportConfig {
            interval: Duration::from_secs(3600),
            ..MetricsExportConfig::new(otlp)
        }
    }

    /// A port that accepts connections and never answers.
    async fn black_hole() -> (tokio::net::TcpListener, String) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        (l, url)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn refused_exports_are_counted_and_shutdown_keeps_its_deadline() {
        // Bind then drop: nothing listens there any more.
        let url = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/v1/metrics", l.local_addr().unwrap())
        };
        let h = start(
            config(&url, Protocol::HttpProtobuf),
            registry(),
            &tokio::runtime::Handle::current(),
        );
        let stats = h.stats();
        let err = h.force_flush().await.unwrap_err();
        assert!(err.to_string().contains("failed"), "{err}");
        assert_eq!(stats.exports_failed.load(Relaxed), 1);
        let begun = std::time::Instant::now();
        h.shutdown(Duration::from_millis(600)).await;
        assert!(begun.elapsed() < Duration::from_millis(600) + SHUTDOWN_GRACE * 2);
        // The final export retried (refusals are retryable) and gave up at the deadline.
        assert_eq!(stats.exports_failed.load(Relaxed), 2);
        assert_eq!(stats.exports_ok.load(Relaxed), 0);
        assert_eq!(stats.data_points.load(Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn shutdown_cuts_a_hanging_export_short() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let (_listener, url) = black_hole().await;
            let h = start(
                config(&url, protocol),
                registry(),
                &tokio::runtime::Handle::current(),
            );
            let stats = h.stats();
            let begun = std::time::Instant::now();
            h.shutdown(Duration::from_millis(300)).await;
            let took = begun.elapsed();
            assert!(
                took < Duration::from_millis(300) + SHUTDOWN_GRACE * 2,
                "{protocol}: {took:?}"
            );
            assert_eq!(stats.exports_ok.load(Relaxed), 0, "{protocol}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn nothing_to_send_sends_nothing() {
        let (_listener, url) = black_hole().await;
        let h = start(
            config(&url, Protocol::HttpProtobuf),
            Arc::new(Metrics::default()),
            &tokio::runtime::Handle::current(),
        );
        assert_eq!(h.force_flush().await.unwrap(), 0);
        let stats = h.stats();
        h.shutdown(Duration::from_millis(100)).await;
        assert_eq!(stats.exports_failed.load(Relaxed), 0);
        assert_eq!(stats.exports_ok.load(Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn dropping_the_handle_stops_the_task() {
        let (_listener, url) = black_hole().await;
        let h = start(
            config(&url, Protocol::HttpProtobuf),
            registry(),
            &tokio::runtime::Handle::current(),
        );
        let task = h.task.abort_handle();
        drop(h);
        tokio::time::timeout(Duration::from_secs(2), async {
            while !task.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("task stops");
    }
}
