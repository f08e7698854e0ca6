//! Process-level gauges for any traced process: live threads (kept exact by the
//! kernel's thread start/exit events, seeded from /proc/PID/task at attach), CPU time,
//! resident memory and open file descriptors (sampled from /proc on housekeeping).

use std::fs;

/// One process's resource usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Live OS threads.
    pub threads: i64,
    /// Threads started / exited since the agent attached.
    pub threads_started: u64,
    pub threads_exited: u64,
    /// CPU time in seconds, user and system.
    pub cpu_user_s: f64,
    pub cpu_system_s: f64,
    pub rss_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// Process start, Unix seconds.
    pub start_time_s: f64,
    /// Monotonic time of the /proc listing that seeded `threads`: thread events older
    /// than this are already in the seed.
    pub seeded_at_ns: u64,
    /// Consecutive samples where `threads` disagreed with /proc/PID/task.
    pub mismatched_samples: u32,
    /// Times `threads` was corrected from /proc (should stay 0; see `reconcile`).
    pub thread_corrections: u64,
}

/// Samples in a row that must disagree before the event-driven count is replaced by
/// /proc's. One sample can disagree for a moment: an exiting thread stays listed
/// until it is reaped, after its exit event.
const MISMATCHES_BEFORE_CORRECTION: u32 = 3;

impl ProcessStats {
    /// Applies a thread start/exit event that happened at `ts_ns` (monotonic).
    pub fn thread_event(&mut self, started: bool, ts_ns: u64) {
        if ts_ns < self.seeded_at_ns {
            return;
        }
        if started {
            self.threads += 1;
            self.threads_started += 1;
        } else {
            self.threads -= 1;
            self.threads_exited += 1;
        }
    }

    /// Compares the event-driven thread count with a /proc listing; after several
    /// disagreements in a row (an event lost to a full ring), adopts the listing.
    pub fn reconcile(&mut self, listed: i64) {
        if listed == self.threads {
            self.mismatched_samples = 0;
            return;
        }
        self.mismatched_samples += 1;
        if self.mismatched_samples >= MISMATCHES_BEFORE_CORRECTION {
            self.threads = listed;
            self.mismatched_samples = 0;
            self.thread_corrections += 1;
        }
    }
}

/// Ticks per second of /proc/PID/stat times (USER_HZ; 100 on every Linux ABI we run on).
const USER_HZ: f64 = 100.0;

/// Fields of /proc/PID/stat we use: (utime, stime, starttime ticks, vsize, rss pages).
pub fn parse_stat(stat: &str) -> Option<(u64, u64, u64, u64, u64)> {
    // comm may contain spaces and ')' — fields resume after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the comm: state is field 3 -> index 0; utime 14 -> 11; stime 15 -> 12;
    // starttime 22 -> 19; vsize 23 -> 20; rss 24 -> 21.
    let n = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some((n(11)?, n(12)?, n(19)?, n(20)?, n(21)?))
}

pub fn thread_count(pid: u32) -> Option<i64> {
    Some(fs::read_dir(format!("/proc/{pid}/task")).ok()?.count() as i64)
}

fn boot_time_s() -> Option<f64> {
    fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Refreshes the /proc-sampled fields of `stats` and reconciles the thread count.
pub fn sample(pid: u32, stats: &mut ProcessStats) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some((utime, stime, start, vsize, rss_pages)) = parse_stat(&stat) else {
        return false;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    stats.cpu_user_s = utime as f64 / USER_HZ;
    stats.cpu_system_s = stime as f64 / USER_HZ;
    stats.virtual_bytes = vsize;
    stats.rss_bytes = rss_pages * page;
    stats.start_time_s = boot_time_s().unwrap_or(0.0) + start as f64 / USER_HZ;
    stats.open_fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    if let Some(n) = thread_count(pid) {
        stats.reconcile(n);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let stat = "1234 (my (weird) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 7 0 5000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((250, 75, 5000, 104857600, 2560)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn thread_events_before_the_seed_are_ignored_and_drift_is_corrected() {
        let mut p = ProcessStats {
            threads: 4,
            seeded_at_ns: 100,
            ..Default::default()
        };
        p.thread_event(true, 50); // already in the seed
        assert_eq!(p.threads, 4);
        p.thread_event(true, 150);
        p.thread_event(false, 160);
        p.thread_event(true, 170);
        assert_eq!((p.threads, p.threads_started, p.threads_exited), (5, 2, 1));
        p.reconcile(5);
        p.reconcile(6);
        p.reconcile(6);
        assert_eq!(p.threads, 5, "transient disagreement is tolerated");
        p.reconcile(6);
        assert_eq!((p.threads, p.thread_corrections), (6, 1));
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let mut s = ProcessStats::default();
        assert!(sample(me, &mut s));
        assert!(s.rss_bytes > 0);
        assert!(s.open_fds > 0);
        assert!(thread_count(me).unwrap() >= 1);
    }
}
