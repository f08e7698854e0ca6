//! The agent's own telemetry: what it received, lost, parsed and exported.
//!
//! The event thread publishes a snapshot here every housekeeping tick; the status line
//! and the metrics endpoint reads it. Every counter is documented because users
//! alert on them: a non-zero `events_lost` means spans are missing.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use crate::{conn::TrackerStats, probes::KernelStats, sampling::SamplerStats};

/// Snapshot shared between the event thread and reporters.
#[derive(Default)]
pub struct Telemetry {
    inner: Mutex<Snapshot>,
    /// Ring-buffer records that could not be decoded (version skew; should stay 0).
    pub decode_errors: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    pub kernel: KernelStats,
    pub tracker: TrackerStats,
    pub sampler: SamplerStats,
    /// Records read from the ring buffer by userspace.
    pub events_received: u64,
    /// Traced processes alive.
    pub processes: u64,
    /// Records applied after a newer one had been (held longer than the reorder window
    /// allows, or pushed out early because the reorder buffer was full).
    pub events_late: u64,
    /// Records released from the reorder buffer before their hold time because it
    /// reached its memory cap (they may then be applied out of order).
    pub events_forced: u64,
    /// Ring-buffer records that could not be decoded (copied from
    /// [`Telemetry::decode_errors`] when published).
    pub decode_errors: u64,
    /// Traced processes that made read/write syscalls for a while without a single
    /// event reaching the agent (see `probes::silence`): the kernel programs do not
    /// see them. Should stay 0.
    pub silent_targets: u64,
}

impl Telemetry {
    pub fn publish(&self, mut snap: Snapshot) {
        snap.decode_errors = self.decode_errors.load(Ordering::Relaxed);
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = snap;
    }

    pub fn snapshot(&self) -> Snapshot {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn decode_error(&self) {
        self.decode_errors.fetch_add(1, Ordering::Relaxed);
    }
}
