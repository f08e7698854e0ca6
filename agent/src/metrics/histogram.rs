//! Explicit-bucket histograms with per-bucket exemplars.

use crate::span::{SpanId, TraceId};

/// `http.server.request.duration` / `http.client.request.duration` boundaries, in
/// seconds, as the HTTP semantic conventions recommend.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Body-size boundaries, in bytes: the OpenTelemetry SDKs' default explicit buckets, so
/// these series line up with what hand-instrumented services emit.
pub const SIZE_BUCKETS: &[f64] = &[
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

/// A measurement tied to the trace that produced it (only sampled traces: an exemplar
/// must point at a trace the backend has).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    pub value: f64,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub time_unix_ns: u64,
}

/// Cumulative histogram. `counts[i]` counts values in `(bounds[i-1], bounds[i]]`; the
/// last slot counts values above every bound (OTLP layout; Prometheus' cumulative `le`
/// buckets are derived when rendering).
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub exemplars: Vec<Option<Exemplar>>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exemplars: vec![None; bounds.len() + 1],
        }
    }

    /// Index of the bucket holding `v` (upper bounds are inclusive, as in Prometheus).
    pub fn bucket(&self, v: f64) -> usize {
        self.bounds.partition_point(|&b| b < v)
    }

    pub fn record(&mut self, v: f64, exemplar: Option<Exemplar>) {
        let i = self.bucket(v);
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if exemplar.is_some() {
            self.exemplars[i] = exemplar;
        }
    }

    /// What was recorded since `earlier` (a previous snapshot of this histogram), for
    /// delta temporality. min/max cannot be diffed, so they are the cumulative ones.
    pub fn delta_since(&self, earlier: &Histogram) -> Histogram {
        let mut d = self.clone();
        for (c, e) in d.counts.iter_mut().zip(&earlier.counts) {
            *c -= e;
        }
        d.count -= earlier.count;
        d.sum -= earlier.sum;
        for (x, e) in d.exemplars.iter_mut().zip(&earlier.exemplars) {
            if x == e {
                *x = None;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bounds_are_inclusive() {
        let mut h = Histogram::new(DURATION_BUCKETS);
        h.record(0.005, None);
        h.record(0.0051, None);
        h.record(100.0, None);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[DURATION_BUCKETS.len()], 1);
        assert_eq!(h.count, 3);
        assert!((h.sum - 100.0101).abs() < 1e-9);
    }

    #[test]
    fn delta_subtracts() {
        let mut h = Histogram::new(SIZE_BUCKETS);
        h.record(3.0, None);
        let first = h.clone();
        h.record(3.0, None);
        h.record(20000.0, None);
        let d = h.delta_since(&first);
        assert_eq!(d.count, 2);
        assert_eq!(d.counts.iter().sum::<u64>(), 2);
        assert_eq!(d.sum, 20003.0);
    }
}
