//! The rate cap of `periscope_adaptive`: per service, a trace-consistent probability
//! that follows the load, under a token bucket that makes the cap hard.
//!
//! A token bucket alone caps the rate but picks spans by arrival order, so the client
//! span in one service and the server span of the same trace in another are kept or
//! dropped independently, and most kept traces end up broken. So each service also
//! re-estimates, once per second, the probability `p = max / arrivals_per_second` and
//! keeps a span only if its trace's randomness passes `p`'s threshold
//! ([`super::ratio`]): a trace kept by the service with the lowest `p` is kept by every
//! service it touches (as long as those have tokens). The bucket (capacity: one second
//! of spans) bounds what the one-second lag of the estimate lets through: the first
//! second of a burst, and random excess above the mean.

use std::collections::HashMap;

use super::ratio::threshold_for;

/// Length of a rate-estimation window.
const WINDOW_NS: u64 = 1_000_000_000;
/// Most services with their own state; beyond that (after dropping services idle for
/// a minute) new services share one state. Bounds memory in DaemonSet mode.
pub const MAX_SERVICES: usize = 4096;
/// A service not seen for this long may be forgotten when the table is full.
const IDLE_NS: u64 = 60 * WINDOW_NS;

#[derive(Debug)]
struct ServiceState {
    tokens: f64,
    refilled_ns: u64,
    window_start_ns: u64,
    /// Candidate spans seen in the current window.
    window_count: u64,
    /// Rejection threshold from the previous window's rate (0 = keep all).
    threshold: u64,
    last_seen_ns: u64,
}

impl ServiceState {
    fn new(now_ns: u64, burst: f64) -> ServiceState {
        ServiceState {
            tokens: burst,
            refilled_ns: now_ns,
            window_start_ns: now_ns,
            window_count: 0,
            threshold: 0,
            last_seen_ns: now_ns,
        }
    }

    fn admit(&mut self, now_ns: u64, randomness: u64, max_per_sec: f64, burst: f64) -> bool {
        self.last_seen_ns = self.last_seen_ns.max(now_ns);
        // A clock going backwards (spans finishing out of order) only delays both
        // updates; it never refills or rolls a window.
        if now_ns >= self.window_start_ns.saturating_add(WINDOW_NS) {
            let windows = (now_ns - self.window_start_ns) / WINDOW_NS;
            // More than one window passed: the one just before `now` had no spans.
            let rate = if windows == 1 {
                self.window_count as f64
            } else {
                0.0
            };
            self.threshold = if rate <= max_per_sec {
                0
            } else {
                threshold_for(max_per_sec / rate)
            };
            self.window_start_ns += windows * WINDOW_NS;
            self.window_count = 0;
        }
        self.window_count += 1;

        let elapsed = now_ns.saturating_sub(self.refilled_ns);
        if elapsed > 0 {
            self.tokens =
                (self.tokens + elapsed as f64 * max_per_sec / WINDOW_NS as f64).min(burst);
            self.refilled_ns = now_ns;
        }
        if randomness < self.threshold || self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Per-service rate caps.
#[derive(Debug)]
pub(super) struct Limiter {
    max_per_sec: f64,
    burst: f64,
    max_services: usize,
    services: HashMap<u32, ServiceState>,
    /// Used by new services once `services` is full.
    shared: Option<ServiceState>,
    last_sweep_ns: Option<u64>,
}

impl Limiter {
    pub(super) fn new(max_per_sec: u32, max_services: usize) -> Limiter {
        let max_per_sec = f64::from(max_per_sec.max(1));
        Limiter {
            max_per_sec,
            burst: max_per_sec,
            max_services,
            services: HashMap::new(),
            shared: None,
            last_sweep_ns: None,
        }
    }

    /// Whether a candidate span (one the parent-based policy would keep) fits in its
    /// service's budget; consumes a token if so.
    pub(super) fn admit(&mut self, service: u32, now_ns: u64, randomness: u64) -> bool {
        let (max, burst) = (self.max_per_sec, self.burst);
        if let Some(state) = self.services.get_mut(&service) {
            return state.admit(now_ns, randomness, max, burst);
        }
        if self.services.len() >= self.max_services {
            self.sweep(now_ns);
        }
        let state = if self.services.len() < self.max_services {
            self.services
                .entry(service)
                .or_insert_with(|| ServiceState::new(now_ns, burst))
        } else {
            self.shared
                .get_or_insert_with(|| ServiceState::new(now_ns, burst))
        };
        state.admit(now_ns, randomness, max, burst)
    }

    pub(super) fn forget(&mut self, service: u32) {
        self.services.remove(&service);
    }

    pub(super) fn services(&self) -> usize {
        self.services.len()
    }

    /// Drops idle services, at most once per window (a full table of busy services must
    /// not cost a scan per span).
    fn sweep(&mut self, now_ns: u64) {
        if self
            .last_sweep_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < WINDOW_NS)
        {
            return;
        }
        self.last_sweep_ns = Some(now_ns);
        self.services
            .retain(|_, s| now_ns.saturating_sub(s.last_seen_ns) < IDLE_NS);
    }
}
