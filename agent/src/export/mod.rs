//! Export: the last stage. Spans enter through a [`SpanSink`] and leave through the outputs
//! [`ExportConfig`] selects — OTLP (gRPC or HTTP/protobuf), console text, console JSON —
//! several at once if asked.
//!
//! The event path must never wait for a backend, so each output has its own bounded queue
//! (`OTEL_BSP_MAX_QUEUE_SIZE`) and [`SpanSink::send`] only `try_send`s into it: a full queue
//! drops the span and counts it, in that output's [`ExportStats`]. One queue per output (rather
//! than one shared queue) keeps a dead OTLP backend from silencing the console.
//!
//! The OTLP output runs the shared batch worker (`batch`): batches by size or delay, holds a
//! batch that failed in a retryable way and retries it (so an outage is buffered by the
//! bounded queue and delivered on recovery), one warning per outage and one line when it
//! ends. Nothing is ever queued beyond the queue's capacity plus the one batch in flight.
//! Console outputs run on their own threads because writing to stdout may block.
//!
//! Layout: `config` (flags + env, shared by every OTLP signal), `otlp` (conversion +
//! transports), `tls` (CA bundle, platform roots and client identity for https:// endpoints),
//! `console` (line formats), `batch` (the OTLP batch worker, shared with logs), `metrics` and
//! `logs` (the other two OTLP signals), this file (queues, outputs, shutdown).

mod batch;
pub mod config;
pub mod console;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod tls;
pub mod trace_wire;
pub mod transport;

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use config::{
    BatchConfig, ClientIdentity, ConfigError, ConsoleFormat, ExportConfig, ExportFlags, OtlpConfig,
    Protocol, TlsConfig, TlsFile,
};

use crate::span::Span;

/// How long [`ExportHandle::shutdown`] waits past its deadline before aborting an output.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Which output a set of [`ExportStats`] belongs to. Also the metric label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputKind {
    Otlp,
    ConsoleText,
    ConsoleJson,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Otlp => "otlp",
            OutputKind::ConsoleText => "console",
            OutputKind::ConsoleJson => "console_json",
        }
    }
}

/// The export stage's own telemetry, one set per output, shared (`Arc`) between the sinks,
/// the output's worker and whoever reports them (metrics, the periodic console summary).
/// Counters only grow; all use relaxed atomics (they are statistics, not synchronization).
#[derive(Debug)]
pub struct ExportStats {
    pub output: OutputKind,
    /// Spans delivered: accepted by the OTLP backend, or written to the console.
    pub exported: AtomicU64,
    /// Spans lost on our side: the queue was full, the batch failed after its retries, the
    /// shutdown deadline passed, or the span arrived after shutdown.
    pub dropped: AtomicU64,
    /// Spans the OTLP backend refused in a partial success (not in `exported`).
    pub rejected: AtomicU64,
    /// OTLP batches given up on (each one's spans are in `dropped`); retries not counted.
    pub failed_exports: AtomicU64,
    /// Spans waiting in the queue right now (a gauge; excludes the batch in flight).
    pub queue_depth: AtomicU64,
}

impl ExportStats {
    fn new(output: OutputKind) -> ExportStats {
        ExportStats {
            output,
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed_exports: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
        }
    }
}

type Msg = batch::Msg<Span>;

impl batch::Item for Span {
    type Service = transport::Traces;
    const NOUN: &'static str = "spans";
    fn to_request(batch: &[Span]) -> trace_wire::EncodedTraces {
        trace_wire::encode(batch)
    }
}

impl batch::Counters for ExportStats {
    fn exported(&self) -> &AtomicU64 {
        &self.exported
    }
    fn dropped(&self) -> &AtomicU64 {
        &self.dropped
    }
    fn rejected(&self) -> &AtomicU64 {
        &self.rejected
    }
    fn failed_exports(&self) -> &AtomicU64 {
        &self.failed_exports
    }
    fn dequeued(&self, n: u64) {
        self.queue_depth.fetch_sub(n, Relaxed);
    }
}

struct Queue {
    tx: mpsc::Sender<Msg>,
    stats: Arc<ExportStats>,
    /// Most spans queued at once (`OTEL_BSP_MAX_QUEUE_SIZE`); the channel's own bound
    /// counts messages, which may hold many spans each.
    capacity: u64,
}

impl Queue {
    fn offer(&self, span: Span) {
        // Count before sending so the worker's decrement can never run first.
        self.stats.queue_depth.fetch_add(1, Relaxed);
        if self.tx.try_send(Msg::Item(span)).is_err() {
            self.stats.queue_depth.fetch_sub(1, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }

    fn offer_many(&self, mut spans: Vec<Span>) {
        let n = spans.len() as u64;
        // Only the event thread adds; the worker's decrements can only make room.
        let depth = self.stats.queue_depth.fetch_add(n, Relaxed);
        let room = self.capacity.saturating_sub(depth).min(n);
        if room < n {
            self.stats.queue_depth.fetch_sub(n - room, Relaxed);
            self.stats.dropped.fetch_add(n - room, Relaxed);
            spans.truncate(room as usize);
        }
        if spans.is_empty() {
            return;
        }
        if let Err(e) = self.tx.try_send(Msg::Items(spans)) {
            let Msg::Items(spans) = e.into_inner() else {
                unreachable!("sent Items")
            };
            let n = spans.len() as u64;
            self.stats.queue_depth.fetch_sub(n, Relaxed);
            self.stats.dropped.fetch_add(n, Relaxed);
        }
    }
}

/// Where the rest of the agent puts finished spans. Clone it freely (one `Arc`); `send`
/// never blocks and never allocates beyond one clone per extra output.
#[derive(Clone)]
pub struct SpanSink {
    queues: Arc<[Queue]>,
}

impl SpanSink {
    /// Queues `span` on every output; where a queue is full (or shut down) the span is
    /// dropped and counted in that output's stats.
    pub fn send(&self, span: Span) {
        if let Some((last, rest)) = self.queues.split_last() {
            for q in rest {
                q.offer(span.clone());
            }
            last.offer(span);
        }
    }

    /// Queues many spans with one message per output (one wakeup of its worker, rather
    /// than one per span): what the event loop made since its last hand-over.
    pub fn send_many(&self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        if let Some((last, rest)) = self.queues.split_last() {
            for q in rest {
                q.offer_many(spans.clone());
            }
            last.offer_many(spans);
        }
    }

    /// Stats of every output, in configuration order (OTLP, console text, console JSON).
    pub fn stats(&self) -> Vec<Arc<ExportStats>> {
        self.queues.iter().map(|q| q.stats.clone()).collect()
    }
}

enum Worker {
    Task(tokio::task::JoinHandle<()>),
    Thread(oneshot::Receiver<()>),
}

/// Owns the output workers; [`ExportHandle::shutdown`] flushes and stops them. Dropping it
/// without shutdown leaves the workers running until every [`SpanSink`] is gone.
pub struct ExportHandle {
    queues: Vec<(mpsc::Sender<Msg>, Arc<ExportStats>)>,
    deadline: watch::Sender<Option<Instant>>,
    workers: Vec<Worker>,
}

impl ExportHandle {
    pub fn stats(&self) -> Vec<Arc<ExportStats>> {
        self.queues.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Exports what is queued (within `deadline`), then stops every output. Spans that could
    /// not be sent in time, or that arrive afterwards, are counted as dropped. Returns by
    /// `deadline` plus a short grace period whatever the backend does.
    pub async fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        // Tells the OTLP worker to cut retries and timeouts short.
        let _ = self.deadline.send(Some(until));
        for (tx, _) in &self.queues {
            // Lands behind every span already queued; waits only if a queue is full.
            let _ = tokio::time::timeout_at(until, tx.send(Msg::Flush)).await;
        }
        let hard_stop = until + SHUTDOWN_GRACE;
        for worker in self.workers {
            match worker {
                Worker::Task(task) => {
                    let abort = task.abort_handle();
                    if tokio::time::timeout_at(hard_stop, task).await.is_err() {
                        abort.abort();
                    }
                }
                // A console thread stuck on a blocked stdout is left behind, not waited for.
                Worker::Thread(done) => {
                    let _ = tokio::time::timeout_at(hard_stop, done).await;
                }
            }
        }
    }
}

/// Starts every output `cfg` selects, console outputs writing to stdout. Must be called with
/// the runtime the OTLP worker should run on.
pub fn start(cfg: ExportConfig, rt: &tokio::runtime::Handle) -> (SpanSink, ExportHandle) {
    start_with_console(cfg, rt, |_| Box::new(std::io::stdout()))
}

/// Like [`start`], with each console output writing to `console(format)` instead of stdout.
pub fn start_with_console(
    cfg: ExportConfig,
    rt: &tokio::runtime::Handle,
    mut console: impl FnMut(ConsoleFormat) -> Box<dyn Write + Send>,
) -> (SpanSink, ExportHandle) {
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let capacity = cfg.batch.max_queue_size.max(1);
    let mut queues = Vec::new();
    let mut handle_queues = Vec::new();
    let mut workers = Vec::new();
    let mut add = |kind: OutputKind| {
        let (tx, rx) = mpsc::channel(capacity);
        let stats = Arc::new(ExportStats::new(kind));
        queues.push(Queue {
            tx: tx.clone(),
            stats: stats.clone(),
            capacity: capacity as u64,
        });
        handle_queues.push((tx, stats.clone()));
        (rx, stats)
    };

    if let Some(otlp) = &cfg.otlp {
        let (rx, stats) = add(OutputKind::Otlp);
        let transport = {
            let _guard = rt.enter();
            transport::TraceTransport::new(otlp)
        };
        let transport = match transport {
            Ok(t) => Some(t),
            Err(e) => {
                otlp::report_client_error("OTLP export disabled, every span will be dropped", &e);
                None
            }
        };
        let worker = batch::BatchWorker::<Span, _>::new(
            transport,
            otlp.timeout(),
            cfg.batch,
            stats,
            deadline_rx.clone(),
            "OTLP export",
        );
        workers.push(Worker::Task(rt.spawn(worker.run(rx))));
    }
    for format in &cfg.console {
        let kind = match format {
            ConsoleFormat::Text => OutputKind::ConsoleText,
            ConsoleFormat::Json => OutputKind::ConsoleJson,
        };
        let (rx, stats) = add(kind);
        let out = console(*format);
        let (done_tx, done_rx) = oneshot::channel();
        let format = *format;
        let spawned = std::thread::Builder::new()
            .name(format!("export-{}", kind.as_str()))
            .spawn(move || {
                run_console(rx, format, out, &stats);
                let _ = done_tx.send(());
            });
        match spawned {
            Ok(_) => workers.push(Worker::Thread(done_rx)),
            // The queue's receiver died with the closure: every send counts as dropped.
            Err(e) => tracing::error!("cannot start the {} output: {e}", kind.as_str()),
        }
    }

    let sink = SpanSink {
        queues: queues.into(),
    };
    let handle = ExportHandle {
        queues: handle_queues,
        deadline: deadline_tx,
        workers,
    };
    (sink, handle)
}

/// Counts what is still queued as dropped, after the worker stopped consuming.
fn drain_dropped(rx: &mut mpsc::Receiver<Msg>, stats: &ExportStats) {
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        let n = match msg {
            Msg::Item(_) => 1,
            Msg::Items(spans) => spans.len() as u64,
            Msg::Flush => 0,
        };
        stats.queue_depth.fetch_sub(n, Relaxed);
        stats.dropped.fetch_add(n, Relaxed);
    }
}

fn run_console(
    mut rx: mpsc::Receiver<Msg>,
    format: ConsoleFormat,
    out: Box<dyn Write + Send>,
    stats: &ExportStats,
) {
    let mut out = std::io::BufWriter::new(out);
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => Some(msg),
            // Flush whenever the queue runs empty: lines appear promptly when idle and in
            // large writes under load.
            Err(mpsc::error::TryRecvError::Empty) => {
                let _ = out.flush();
                rx.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let spans = match msg {
            Some(Msg::Item(span)) => vec![span],
            Some(Msg::Items(spans)) => spans,
            Some(Msg::Flush) | None => break,
        };
        stats.queue_depth.fetch_sub(spans.len() as u64, Relaxed);
        for span in spans {
            let mut line = match format {
                ConsoleFormat::Text => console::format_text(&span),
                ConsoleFormat::Json => console::format_json(&span),
            };
            line.push('\n');
            match out.write_all(line.as_bytes()) {
                Ok(()) => stats.exported.fetch_add(1, Relaxed),
                Err(_) => stats.dropped.fetch_add(1, Relaxed),
            };
        }
    }
    let _ = out.flush();
    drain_dropped(&mut rx, stats);
}

/// True the first time `msg` is offered in this process: for problems that every signal
/// (or every resolution) would otherwise report again, such as one bad CA file.
pub(crate) fn first_report(msg: &str) -> bool {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    seen.get_or_insert_with(HashSet::new).insert(msg.to_owned())
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
