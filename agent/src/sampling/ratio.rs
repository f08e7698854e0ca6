//! Consistent probability sampling: a trace's randomness `R` against a rejection
//! threshold `T`, both 56-bit integers; keep when `R >= T`.
//!
//! This is the algorithm of the OpenTelemetry `ProbabilitySampler` and of the
//! "Consistent Probability Sampling" spec
//! (<https://opentelemetry.io/docs/specs/otel/trace/tracestate-probability-sampling/>):
//!
//! * `R` is the explicit randomness `rv` of the OpenTelemetry tracestate entry
//!   (`ot=rv:<14 hex digits>`) when present, otherwise the 7 rightmost bytes of the trace
//!   id (W3C Trace Context Level 2 guarantees those 56 bits are random), big-endian.
//! * `T = 2^56 - round(p * 2^56)` for probability `p` (full 56-bit precision; `p = 1`
//!   gives 0, `p = 0` gives 2^56, which no `R` reaches).
//!
//! Why this one: the spec deprecates `TraceIdRatioBased` (its algorithm was never
//! specified, and SDKs disagree: Go and Rust compare the low 8 bytes shifted right by
//! one to `p * 2^63`, Java the low 8 bytes' absolute value to `p * i64::MAX`, Python
//! the low 64 bits to `p * 2^64`; all keep *small* values). It tells SDKs to replace
//! `traceidratio` with an equally configured `ProbabilitySampler` from 2027 on. Using the
//! replacement now means Periscope agrees with every consistent-probability sampler
//! (SDKs, the Collector's probabilistic sampler) for the same trace, and that a trace
//! kept at some probability is kept at every higher one (also across Periscope's own
//! services). SDKs that round `T` to the spec's recommended 4 hex digits for the `th`
//! encoding disagree only for `R` inside that rounding step (< 2^-16 of traces).

/// 2^56: one more than the largest randomness value.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// A sampling probability in `[0, 1]` and its rejection threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    probability: f64,
    threshold: u64,
}

impl Ratio {
    pub const ONE: Ratio = Ratio {
        probability: 1.0,
        threshold: 0,
    };

    /// `None` unless `0 <= probability <= 1`.
    pub fn new(probability: f64) -> Option<Ratio> {
        if !(0.0..=1.0).contains(&probability) {
            return None;
        }
        Some(Ratio {
            probability,
            threshold: threshold_for(probability),
        })
    }

    pub fn probability(&self) -> f64 {
        self.probability
    }

    /// The 56-bit rejection threshold `T` (`2^56` for probability 0).
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The sampling decision for randomness `r` (`R >= T`).
    pub fn samples(&self, r: u64) -> bool {
        r >= self.threshold
    }
}

/// `T = 2^56 - round(p * 2^56)` for `p` in `[0, 1]` (clamped).
pub fn threshold_for(probability: f64) -> u64 {
    let p = if probability.is_nan() {
        0.0
    } else {
        probability.clamp(0.0, 1.0)
    };
    // Exact: p * 2^56 only changes the exponent, and the result is at most 2^56.
    let keep = (p * MAX_THRESHOLD as f64).round() as u64;
    MAX_THRESHOLD - keep.min(MAX_THRESHOLD)
}

/// The randomness value `R` of a trace: its 7 rightmost bytes, big-endian.
pub fn trace_randomness(trace_id: &[u8; 16]) -> u64 {
    let mut b = [0u8; 8];
    b[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(b)
}

/// The explicit randomness `rv` of a W3C `tracestate` header value: the `rv` sub-key of
/// the `ot` list member, exactly 14 lowercase hex digits
/// (<https://opentelemetry.io/docs/specs/otel/trace/tracestate-handling/>). `None` when
/// absent or malformed (the trace id is used then).
pub fn explicit_randomness(tracestate: &str) -> Option<u64> {
    let ot = tracestate
        .split(',')
        .find_map(|member| member.trim().strip_prefix("ot="))?;
    let rv = ot.split(';').find_map(|kv| kv.strip_prefix("rv:"))?;
    if rv.len() != 14 || !rv.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(rv, 16).ok()
}
