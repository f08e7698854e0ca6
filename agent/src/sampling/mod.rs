//! Span sampling: which finished spans are exported.
//!
//! Metrics are computed from every request before this stage, so sampling never changes
//! a count or a latency histogram; it only decides which spans leave the agent. The
//! agent sees a request only once it has finished, so, unlike an SDK's head sampler, a
//! decision can look at the outcome (error, duration).
//!
//! [`SamplerConfig`] is one of the OpenTelemetry SDK samplers (`OTEL_TRACES_SAMPLER`,
//! default `parentbased_always_on`) or `periscope_adaptive`:
//!
//! * a span whose parent is not sampled is dropped, as with `ParentBased`;
//! * the other spans of each service are capped at `OTEL_TRACES_SAMPLER_ARG` per second
//!   (default 100), by a trace-consistent probability that follows the load plus a token
//!   bucket (see `adaptive`). The bucket holds one second of spans, so the bound is: over
//!   any `t` seconds, at most `(t + 1) * max` such spans (a single second after a quiet
//!   spell can see up to `2 * max`);
//! * errors (the caller's [`SampleInput::is_error`]: span status error) and slow spans
//!   (`PERISCOPE_SLOW_THRESHOLD_MS`, default 1000) are **always** kept, even with an
//!   unsampled parent and even beyond the cap; when the cap has room they use it up
//!   like other spans. An error storm is therefore exported in full: that is the point.
//! * once a span of a trace is kept, the other spans of that trace seen on this node are
//!   kept too (up to 1000 per trace): children usually finish before their parents, so
//!   a failing backend call keeps the whole chain of callers above it, across the
//!   processes of the node, instead of leaving a trace with holes.
//!
//! `traceidratio` uses the consistent-probability algorithm (keep when the 56 random
//! bits of the trace id are at least `(1 - p) * 2^56`); `ratio` explains why and
//! how it relates to what SDKs do. The threshold is not yet written into the kept spans'
//! tracestate (`ot=th:…`), so backends cannot compute adjusted counts from it.
//!
//! The [`Sampler`] lives on the event thread: `decide` takes `&mut self`, does not
//! allocate once a service is known, and keeps plain counters that the thread publishes
//! with its other telemetry ([`Sampler::stats`]).

mod adaptive;
mod config;
mod ratio;

#[cfg(test)]
mod tests;

pub use adaptive::MAX_SERVICES;
pub use config::{
    AdaptiveConfig, DEFAULT_MAX_SPANS_PER_SECOND, DEFAULT_SLOW_THRESHOLD_MS, OTEL_TRACES_SAMPLER,
    OTEL_TRACES_SAMPLER_ARG, PERISCOPE_ADAPTIVE, PERISCOPE_SLOW_THRESHOLD_MS, RootSampler,
    SamplerConfig, SamplerConfigError,
};
pub use ratio::{MAX_THRESHOLD, Ratio, explicit_randomness, threshold_for, trace_randomness};

use crate::span::TraceId;

/// The parent span's context, when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// The parent's sampled flag (W3C trace-flags bit 0).
    pub sampled: bool,
    /// From another process (a `traceparent` header) rather than joined by the agent.
    /// With the spec's default `ParentBased` delegates it does not change the decision.
    pub remote: bool,
}

/// What the sampler needs to know about a finished span.
#[derive(Clone, Copy, Debug)]
pub struct SampleInput {
    pub trace_id: TraceId,
    pub parent: Option<ParentInfo>,
    /// The `rv` value of the incoming tracestate ([`explicit_randomness`]); when `None`
    /// the trace id's 56 random bits are used.
    pub explicit_randomness: Option<u64>,
    /// The span's status is error (for HTTP: 5xx on a server span, 4xx/5xx on a client
    /// span, or no response).
    pub is_error: bool,
    pub duration_ns: u64,
    /// Identifies the service (e.g. the traced process); the adaptive cap is per key.
    pub service_key: u32,
    /// Any monotonic clock in nanoseconds (e.g. the span's end); only differences matter.
    pub now_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub sampled: bool,
    pub reason: Reason,
}

/// Why a span was kept or dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The configured sampler decided (kept or dropped).
    Sampler,
    /// `periscope_adaptive` kept an error the sampler would have dropped.
    Error,
    /// `periscope_adaptive` kept a slow span the sampler would have dropped.
    Slow,
    /// `periscope_adaptive` kept a span because another span of its trace was kept on
    /// this node (children usually finish first): traces stay whole.
    Trace,
}

/// Counters since start. `sampled + dropped_by_sampler` is every decision;
/// `kept_because_error` and `kept_because_slow` are the part of `sampled` that only the
/// adaptive overrides kept (a span both failed and slow counts as error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SamplerStats {
    pub sampled: u64,
    pub dropped_by_sampler: u64,
    pub kept_because_error: u64,
    pub kept_because_slow: u64,
    pub kept_because_trace: u64,
}

/// Trace ids `periscope_adaptive` kept a span of, most recent [`KEPT_TRACES`].
const KEPT_TRACES: usize = 65_536;
/// Spans of one trace kept only because the trace was: a trace that never ends (one
/// upstream trace id on every request of a batch job) must not lift the cap for good.
const MAX_FOLLOWED_PER_TRACE: u32 = 1_000;

#[derive(Debug, Default)]
struct KeptTraces {
    /// Trace id -> spans kept because of it so far.
    followed: std::collections::HashMap<TraceId, u32>,
    order: std::collections::VecDeque<TraceId>,
}

impl KeptTraces {
    /// Whether a span of `t` is kept because its trace was; counts it if so.
    fn follow(&mut self, t: &TraceId) -> bool {
        match self.followed.get_mut(t) {
            Some(n) if *n < MAX_FOLLOWED_PER_TRACE => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    fn insert(&mut self, t: TraceId) {
        if self.followed.contains_key(&t) {
            return;
        }
        self.followed.insert(t, 0);
        self.order.push_back(t);
        if self.order.len() > KEPT_TRACES
            && let Some(old) = self.order.pop_front()
        {
            self.followed.remove(&old);
        }
    }
}

#[derive(Debug)]
pub struct Sampler {
    config: SamplerConfig,
    limiter: Option<adaptive::Limiter>,
    /// Adaptive only: traces with a kept span, whose other spans are then kept too.
    kept_traces: KeptTraces,
    stats: SamplerStats,
}

impl Sampler {
    pub fn new(config: SamplerConfig) -> Sampler {
        Sampler::with_max_services(config, MAX_SERVICES)
    }

    fn with_max_services(config: SamplerConfig, max_services: usize) -> Sampler {
        let limiter = match config {
            SamplerConfig::Adaptive(a) => {
                Some(adaptive::Limiter::new(a.max_spans_per_second, max_services))
            }
            _ => None,
        };
        Sampler {
            config,
            limiter,
            kept_traces: KeptTraces::default(),
            stats: SamplerStats::default(),
        }
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.config
    }

    pub fn decide(&mut self, input: &SampleInput) -> Decision {
        let r = || {
            input
                .explicit_randomness
                .unwrap_or_else(|| trace_randomness(&input.trace_id))
        };
        let root = |root: &RootSampler| match root {
            RootSampler::AlwaysOn => true,
            RootSampler::AlwaysOff => false,
            RootSampler::TraceIdRatio(ratio) => ratio.samples(r()),
        };
        let mut reason = Reason::Sampler;
        let sampled = match &self.config {
            SamplerConfig::AlwaysOn => true,
            SamplerConfig::AlwaysOff => false,
            SamplerConfig::TraceIdRatio(ratio) => ratio.samples(r()),
            SamplerConfig::ParentBased(root_sampler) => match input.parent {
                Some(parent) => parent.sampled,
                None => root(root_sampler),
            },
            SamplerConfig::Adaptive(adaptive) => {
                let candidate = input.parent.is_none_or(|p| p.sampled);
                // A parent that said "not sampled" still wins, as below.
                let kept = if candidate && self.kept_traces.follow(&input.trace_id) {
                    reason = Reason::Trace;
                    true
                // `new` always builds the limiter for this config.
                } else if candidate
                    && self
                        .limiter
                        .as_mut()
                        .is_none_or(|l| l.admit(input.service_key, input.now_ns, r()))
                {
                    true
                } else if input.is_error {
                    reason = Reason::Error;
                    true
                } else if input.duration_ns >= adaptive.slow_threshold_ns {
                    reason = Reason::Slow;
                    true
                } else {
                    false
                };
                if kept {
                    self.kept_traces.insert(input.trace_id);
                }
                kept
            }
        };
        if sampled {
            self.stats.sampled += 1;
            match reason {
                Reason::Sampler => {}
                Reason::Error => self.stats.kept_because_error += 1,
                Reason::Slow => self.stats.kept_because_slow += 1,
                Reason::Trace => self.stats.kept_because_trace += 1,
            }
        } else {
            self.stats.dropped_by_sampler += 1;
        }
        Decision { sampled, reason }
    }

    pub fn stats(&self) -> SamplerStats {
        self.stats
    }

    /// Releases the adaptive state of a service (call when its process exits).
    pub fn forget_service(&mut self, service_key: u32) {
        if let Some(l) = &mut self.limiter {
            l.forget(service_key);
        }
    }

    /// Services with their own adaptive state.
    pub fn services_tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, adaptive::Limiter::services)
    }
}
