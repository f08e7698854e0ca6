//! Fail loudly, never silently: a traced process that keeps making read/write
//! syscalls while the kernel programs report nothing at all for it means the programs
//! do not see it (a kernel whose tracepoint records differ, a target map entry the
//! kernel dropped). Nothing else would tell: an agent that sees nothing looks exactly
//! like one whose targets are idle.
//!
//! The process's own count of read/write-family syscalls (`/proc/PID/io`: `syscr`,
//! `syscw`) is the independent witness; any event with the process's tgid (a thread
//! start, a connection, bytes) counts as being seen. One warning per process.

use foldhash::HashMap;
use std::{
    fs,
    time::{Duration, Instant},
};

/// How long a process is watched before it may be called silent.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Read/write syscalls within [`WINDOW`] that make silence suspicious.
pub const MIN_SYSCALLS: u64 = 20;

struct Watch {
    since: Instant,
    /// syscr + syscw at `since`, when readable.
    io_at_start: Option<u64>,
    events: u64,
    done: bool,
}

/// Per traced process: events seen versus syscalls made.
#[derive(Default)]
pub struct SilenceWatch {
    watched: HashMap<u32, Watch>,
    /// Processes warned about (exported as a counter).
    pub silent: u64,
}

/// `syscr + syscw` from a `/proc/PID/io` text.
pub fn io_syscalls(text: &str) -> Option<u64> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(field("syscr:")? + field("syscw:")?)
}

/// The process's read/write syscall count, when it has a socket open: a process that
/// only reads files has nothing for the programs to report.
fn read_io(pid: u32) -> Option<u64> {
    let has_socket = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .any(|e| fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")));
    if !has_socket {
        return None;
    }
    io_syscalls(&fs::read_to_string(format!("/proc/{pid}/io")).ok()?)
}

impl SilenceWatch {
    pub fn attached(&mut self, pid: u32, now: Instant) {
        self.watched.insert(
            pid,
            Watch {
                since: now,
                io_at_start: read_io(pid),
                events: 0,
                done: false,
            },
        );
    }

    pub fn detached(&mut self, pid: u32) {
        self.watched.remove(&pid);
    }

    /// A ring record whose header names `tgid` arrived.
    pub fn event(&mut self, tgid: u32) {
        if let Some(w) = self.watched.get_mut(&tgid) {
            w.events += 1;
        }
    }

    /// Warnings for processes that made syscalls for a whole window without one
    /// event; `in_kernel` says whether the kernel's target map still holds a pid.
    pub fn check(&mut self, now: Instant, in_kernel: &dyn Fn(u32) -> bool) -> Vec<String> {
        self.check_with(now, in_kernel, &read_io)
    }

    fn check_with(
        &mut self,
        now: Instant,
        in_kernel: &dyn Fn(u32) -> bool,
        io: &dyn Fn(u32) -> Option<u64>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for (&pid, w) in &mut self.watched {
            if w.done || now.duration_since(w.since) < WINDOW {
                continue;
            }
            if w.events > 0 {
                // Seen: this kernel's programs work for it.
                w.done = true;
                continue;
            }
            let Some(io_now) = io(pid) else {
                // No socket (or /proc unreadable) yet: a new window.
                w.since = now;
                w.io_at_start = None;
                continue;
            };
            let Some(start) = w.io_at_start else {
                w.since = now;
                w.io_at_start = Some(io_now);
                continue;
            };
            let made = io_now.saturating_sub(start);
            if made < MIN_SYSCALLS {
                // Idle so far: a new window.
                w.since = now;
                w.io_at_start = Some(io_now);
                continue;
            }
            w.done = true;
            self.silent += 1;
            let why = if in_kernel(pid) {
                "the kernel programs do not see it"
            } else {
                "the kernel's target map lost it"
            };
            out.push(format!(
                "periscope: warning: PID {pid} made {made} read/write syscalls in {:.0} s but no event arrived for it: {why}; run `periscope doctor` (its capture row) and please report `uname -r`",
                now.duration_since(w.since).as_secs_f64()
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_syscalls_parse() {
        let text = "rchar: 1\nwchar: 2\nsyscr: 30\nsyscw: 12\nread_bytes: 0\n";
        assert_eq!(io_syscalls(text), Some(42));
        assert_eq!(io_syscalls("rchar: 1\n"), None);
    }

    #[test]
    fn warns_once_for_a_busy_process_without_events() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::default();
        w.watched.insert(
            7,
            Watch {
                since: t0,
                io_at_start: Some(100),
                events: 0,
                done: false,
            },
        );
        let io = |_| Some(100 + MIN_SYSCALLS);
        // Not before a whole window.
        assert!(w.check_with(t0 + WINDOW / 2, &|_| true, &io).is_empty());
        let warned = w.check_with(t0 + WINDOW, &|_| false, &io);
        assert_eq!(warned.len(), 1);
        assert!(warned[0].contains("PID 7 made 20 read/write syscalls"));
        assert!(warned[0].contains("target map lost it"));
        assert_eq!(w.silent, 1);
        assert!(w.check_with(t0 + WINDOW * 3, &|_| true, &io).is_empty());
    }

    #[test]
    fn quiet_or_seen_processes_are_not_warned_about() {
        let t0 = Instant::now();
        let mut w = SilenceWatch::default();
        for pid in [1, 2] {
            w.watched.insert(
                pid,
                Watch {
                    since: t0,
                    io_at_start: Some(0),
                    events: 0,
                    done: false,
                },
            );
        }
        w.event(2);
        // PID 1 idle (few syscalls), PID 2 busy but seen.
        let io = |pid| Some(if pid == 1 { 3 } else { 1000 });
        assert!(w.check_with(t0 + WINDOW, &|_| true, &io).is_empty());
        assert_eq!(w.silent, 0);
        // PID 1 gets busy in its next window and stays unseen.
        let io = |pid| Some(if pid == 1 { 3 + MIN_SYSCALLS } else { 1000 });
        assert_eq!(w.check_with(t0 + WINDOW * 2, &|_| true, &io).len(), 1);
    }
}
