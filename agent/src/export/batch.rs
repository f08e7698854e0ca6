//! The batch worker behind every queued OTLP signal (spans, log records): it batches what
//! its bounded queue delivers (by size or by delay) and sends one request at a time.
//!
//! A retryable failure (connection refused, timeout, 503, UNAVAILABLE…) does not drop the
//! batch: the worker *holds* it and stops taking items off the queue, so the queue itself
//! buffers the outage up to its bound (`OTEL_BSP_MAX_QUEUE_SIZE`); past that, new items are
//! dropped and counted at the sink, never in memory beyond queue + one batch. The held batch is
//! retried with a backoff capped at the batch delay, so export resumes within one batch
//! interval after the backend recovers and everything still queued is delivered. (An earlier
//! design dropped every batch that came due during an outage's backoff and kept backing off
//! after the backend returned: the spans of the first seconds after recovery were lost too.)
//!
//! A held batch is given up (dropped, counted) after [`MAX_HOLD`] of retries, so one request
//! the backend can never take does not stall the pipeline forever; a permanent error
//! (400, 401, INVALID_ARGUMENT…) drops the batch at once. One warning when an outage starts,
//! one line when it ends. Shutdown cuts retries and timeouts to its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::BatchConfig;
use super::transport::{Service, Transport};

/// Attempts before a failing batch counts as an outage (and is logged as one).
const ATTEMPTS_BEFORE_OUTAGE: u32 = 4;
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
/// Cap on any wait between attempts, including a server's Retry-After.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one batch is retried before it is dropped (as the OTLP exporters' default
/// retry policies do after about a minute).
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(60);

/// What a worker batches: one OTLP item and how a batch of them becomes a request.
pub(crate) trait Item: Send + Sized + 'static {
    type Service: Service;
    /// Plural noun for log lines: "spans", "log records".
    const NOUN: &'static str;
    fn to_request(batch: &[Self]) -> <Self::Service as Service>::Request;
}

/// The counters a worker keeps; each signal's stats type exposes its own.
pub(crate) trait Counters: Send + Sync + 'static {
    fn exported(&self) -> &AtomicU64;
    fn dropped(&self) -> &AtomicU64;
    fn rejected(&self) -> &AtomicU64;
    fn failed_exports(&self) -> &AtomicU64;
    /// `n` items left the queue (for a queue-depth gauge).
    fn dequeued(&self, _n: u64) {}
}

pub(crate) enum Msg<T> {
    Item(T),
    /// Several at once: what the event loop made since its last hand-over, for one
    /// wakeup of the worker rather than one per item.
    Items(Vec<T>),
    /// Sent by shutdown behind every item already queued: drain up to here, then stop.
    Flush,
}

/// A request that failed in a retryable way, waiting for its next attempt.
struct Held<R> {
    req: R,
    items: u64,
    since: Instant,
    attempts: u32,
    backoff: Duration,
    retry_at: Instant,
}

pub(crate) struct BatchWorker<T: Item, C: Counters> {
    /// `None` when the client could not be created: everything is dropped and counted.
    pub transport: Option<Transport<T::Service>>,
    pub timeout: Duration,
    pub batch: BatchConfig,
    pub stats: Arc<C>,
    /// Set once by shutdown: the instant by which the worker must be done.
    pub deadline: watch::Receiver<Option<Instant>>,
    /// "OTLP export", "OTLP logs export": how log lines name this worker.
    pub label: &'static str,
    /// `Some(dropped counter at its start)` during an outage.
    outage: Option<u64>,
    held: Option<Held<<T::Service as Service>::Request>>,
}

impl<T: Item, C: Counters> BatchWorker<T, C> {
    pub fn new(
        transport: Option<Transport<T::Service>>,
        timeout: Duration,
        batch: BatchConfig,
        stats: Arc<C>,
        deadline: watch::Receiver<Option<Instant>>,
        label: &'static str,
    ) -> Self {
        BatchWorker {
            transport,
            timeout,
            batch,
            stats,
            deadline,
            label,
            outage: None,
            held: None,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Msg<T>>) {
        let far = || Instant::now() + Duration::from_secs(86_400);
        let max_batch = self.batch.max_export_batch_size.max(1);
        let mut batch: Vec<T> = Vec::with_capacity(max_batch.min(4096));
        let mut batch_due: Option<Instant> = None;
        let mut watching = true;
        let mut flushing = false;
        loop {
            if flushing && self.held.is_none() {
                if !batch.is_empty() {
                    self.send(first(&mut batch, max_batch)).await;
                    continue;
                }
                break;
            }
            let until = *self.deadline.borrow();
            let retry_at = self.held.as_ref().map(|h| h.retry_at);
            let holding = retry_at.is_some();
            tokio::select! {
                // Deadline first: a queue that keeps refilling must not keep us past it.
                biased;
                _ = tokio::time::sleep_until(until.unwrap_or_else(far)), if until.is_some() => {
                    let held = self.held.take().map_or(0, |h| h.items);
                    if held > 0 {
                        self.stats.failed_exports().fetch_add(1, Relaxed);
                    }
                    let unsent = batch.len() as u64 + held;
                    if unsent > 0 {
                        tracing::warn!(
                            "{}: shutdown deadline reached, dropping {unsent} unsent {}",
                            self.label,
                            T::NOUN
                        );
                    }
                    self.stats.dropped().fetch_add(unsent, Relaxed);
                    break;
                }
                changed = self.deadline.changed(), if watching => {
                    // The handle was dropped without shutdown: nothing more to watch.
                    watching = changed.is_ok();
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(far)), if holding => {
                    self.retry_held().await;
                }
                _ = tokio::time::sleep_until(batch_due.unwrap_or_else(far)),
                    if batch_due.is_some() && !holding => {
                    self.send(first(&mut batch, max_batch)).await;
                    // What a message of many items left over goes as soon as it may.
                    batch_due = (!batch.is_empty()).then(Instant::now);
                }
                // While a batch is held, the queue (not this task) buffers the outage.
                msg = rx.recv(), if !holding && !flushing => {
                    let mut next = msg;
                    // Take what else is queued now, up to a full batch, without a trip
                    // through the select (its timers) per message.
                    loop {
                        match next {
                            Some(Msg::Item(item)) => {
                                self.stats.dequeued(1);
                                batch.push(item);
                            }
                            Some(Msg::Items(mut items)) => {
                                self.stats.dequeued(items.len() as u64);
                                batch.append(&mut items);
                            }
                            Some(Msg::Flush) | None => {
                                flushing = true;
                                break;
                            }
                        }
                        if batch.len() >= max_batch {
                            break;
                        }
                        next = match rx.try_recv() {
                            Ok(msg) => Some(msg),
                            Err(TryRecvError::Disconnected) => None,
                            Err(TryRecvError::Empty) => break,
                        };
                    }
                    // Full batches go now; a part batch waits for its delay. A message
                    // of many items can fill more than one.
                    while batch.len() >= max_batch && self.held.is_none() {
                        self.send(first(&mut batch, max_batch)).await;
                    }
                    batch_due = if batch.is_empty() {
                        None
                    } else {
                        batch_due.or_else(|| Some(Instant::now() + self.batch.schedule_delay))
                    };
                }
            }
        }
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            let n = match msg {
                Msg::Item(_) => 1,
                Msg::Items(items) => items.len() as u64,
                Msg::Flush => 0,
            };
            self.stats.dequeued(n);
            self.stats.dropped().fetch_add(n, Relaxed);
        }
    }

    /// First attempt for a new batch.
    async fn send(&mut self, batch: Vec<T>) {
        let items = batch.len() as u64;
        if items == 0 {
            return;
        }
        if self.transport.is_none() {
            self.stats.dropped().fetch_add(items, Relaxed);
            return;
        }
        let req = T::to_request(&batch);
        drop(batch);
        let now = Instant::now();
        let held = Held {
            req,
            items,
            since: now,
            attempts: 0,
            backoff: INITIAL_BACKOFF,
            retry_at: now,
        };
        self.attempt(held).await;
    }

    async fn retry_held(&mut self) {
        if let Some(held) = self.held.take() {
            self.attempt(held).await;
        }
    }

    /// One attempt; on a retryable failure the batch is held for the next one.
    async fn attempt(&mut self, mut held: Held<<T::Service as Service>::Request>) {
        let Some(transport) = self.transport.as_mut() else {
            return;
        };
        let until = *self.deadline.borrow();
        let timeout = until.map_or(self.timeout, |u| {
            self.timeout
                .min(u.saturating_duration_since(Instant::now()))
        });
        if timeout.is_zero() {
            self.stats.failed_exports().fetch_add(1, Relaxed);
            self.stats.dropped().fetch_add(held.items, Relaxed);
            return;
        }
        held.attempts += 1;
        // An attempt already in flight when shutdown begins must not outlive its deadline.
        let result = tokio::select! {
            r = transport.export(&held.req, timeout) => r,
            () = deadline_passed(&mut self.deadline) => {
                self.stats.failed_exports().fetch_add(1, Relaxed);
                self.stats.dropped().fetch_add(held.items, Relaxed);
                return;
            }
        };
        let endpoint = transport.endpoint().to_owned();
        match result {
            Ok(rejected) => {
                let rejected = rejected.min(held.items);
                self.stats
                    .exported()
                    .fetch_add(held.items - rejected, Relaxed);
                self.stats.rejected().fetch_add(rejected, Relaxed);
                if let Some(dropped_before) = self.outage.take() {
                    let dropped = self.stats.dropped().load(Relaxed) - dropped_before;
                    tracing::info!(
                        "{} to {endpoint} recovered; {dropped} {} were dropped during the outage",
                        self.label,
                        T::NOUN
                    );
                }
            }
            Err(e) if e.is_retryable() && held.since.elapsed() < MAX_HOLD => {
                if held.attempts == ATTEMPTS_BEFORE_OUTAGE {
                    self.begin_outage(&format!(
                        "{e}; holding {} and retrying until the backend recovers \
                         (the queue buffers up to its bound, then drops; logged once per outage)",
                        T::NOUN
                    ));
                }
                let cap = MAX_BACKOFF.min(self.batch.schedule_delay.max(INITIAL_BACKOFF));
                let wait = e.retry_after().unwrap_or(held.backoff).min(MAX_BACKOFF);
                held.backoff = (held.backoff * 2).min(cap);
                held.retry_at = Instant::now() + jitter(wait);
                self.held = Some(held);
            }
            Err(e) => {
                self.stats.failed_exports().fetch_add(1, Relaxed);
                self.stats.dropped().fetch_add(held.items, Relaxed);
                self.begin_outage(&format!(
                    "{e}; dropping {} until the backend accepts them (logged once per outage)",
                    T::NOUN
                ));
            }
        }
    }

    fn begin_outage(&mut self, warning: &str) {
        if self.outage.is_none() {
            tracing::warn!("{warning}");
            self.outage = Some(self.stats.dropped().load(Relaxed));
        }
    }
}

/// The first `max` items of `batch` (all of them if fewer), leaving the rest.
fn first<T>(batch: &mut Vec<T>, max: usize) -> Vec<T> {
    let rest = if batch.len() > max {
        batch.split_off(max)
    } else {
        Vec::new()
    };
    std::mem::replace(batch, rest)
}

/// Resolves once shutdown has set a deadline and it has passed; never if no shutdown comes.
async fn deadline_passed(deadline: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let until = *deadline.borrow_and_update();
        if let Some(until) = until {
            return tokio::time::sleep_until(until).await;
        }
        if deadline.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Up to ±20 %, so that many agents restarted together do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.8 + fastrand::f64() * 0.4)
}
