//! Which processes to trace: explicit PIDs, executables matching a glob (`--exe`),
//! processes serving a port (`--port`), or every process on the node (no selector,
//! the DaemonSet mode).
//!
//! Processes that start later are found from the kernel's exec and bind events (only
//! reported when discovery is on). A minimum process age keeps short-lived commands
//! (shell pipelines, health-check probes) out; a process that binds a selected port is
//! taken at once, since it is a server by definition. The agent never traces itself.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    path::Path,
    time::{Duration, Instant},
};

use thiserror::Error;

use crate::conn::procnet;

#[derive(Debug, Error)]
pub enum SelectorError {
    #[error("invalid --exe pattern {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
}

/// What the user asked to trace. Several selectors add up (union).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub pids: Vec<u32>,
    pub exes: Vec<glob::Pattern>,
    pub ports: Vec<u16>,
}

impl Selector {
    pub fn new(pids: Vec<u32>, exes: &[String], ports: Vec<u16>) -> Result<Self, SelectorError> {
        let exes = exes
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| SelectorError::BadGlob {
                    pattern: p.clone(),
                    reason: e.msg.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { pids, exes, ports })
    }

    /// No selector at all: every process on the node.
    pub fn is_all(&self) -> bool {
        self.pids.is_empty() && self.exes.is_empty() && self.ports.is_empty()
    }

    /// Whether new processes must be discovered (the kernel then reports execs/binds).
    pub fn discovers(&self) -> bool {
        self.is_all() || !self.exes.is_empty() || !self.ports.is_empty()
    }

    /// Does an executable path match an `--exe` glob? Globs are tried against the
    /// full path and the base name (`nginx`, `*/bin/python3*`).
    pub fn exe_matches(&self, exe: &Path) -> bool {
        let base = exe.file_name().map(|b| b.to_string_lossy().to_string());
        self.exes
            .iter()
            .any(|g| g.matches_path(exe) || base.as_deref().is_some_and(|b| g.matches(b)))
    }
}

fn exe_of(pid: u32) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Seconds since boot at which `pid` started, from /proc/PID/stat.
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    crate::runtime::process::parse_stat(&stat).map(|(_, _, start, _, _)| start)
}

fn uptime_ticks() -> Option<u64> {
    let up: f64 = fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((up * 100.0) as u64)
}

/// PIDs with a TCP socket listening on one of `ports` (any network namespace).
pub fn listeners(ports: &[u16]) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    if ports.is_empty() {
        return out;
    }
    // Listening inodes per network namespace, read once per namespace.
    let mut by_netns: HashMap<String, HashSet<u64>> = HashMap::new();
    for pid in all_pids() {
        let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        let inodes = by_netns
            .entry(ns.to_string_lossy().to_string())
            .or_insert_with(|| {
                procnet::tcp_rows(pid)
                    .into_iter()
                    .filter(|r| r.state == 0x0A && ports.contains(&r.local.port()))
                    .map(|r| r.inode)
                    .collect()
            });
        if inodes.is_empty() {
            continue;
        }
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = fs::read_link(fd.path())
                && let Some(inode) = procnet::socket_inode(&link.to_string_lossy())
                && inodes.contains(&inode)
            {
                out.insert(pid);
                break;
            }
        }
    }
    out
}

/// Decides, over time, which processes to trace.
pub struct Discovery {
    sel: Selector,
    min_age: Duration,
    self_pid: u32,
    /// Processes waiting for their minimum age, with when it is reached.
    pending: Vec<(u32, Instant)>,
}

impl Discovery {
    pub fn new(sel: Selector, min_age: Duration) -> Self {
        Self {
            sel,
            min_age,
            self_pid: std::process::id(),
            pending: Vec::new(),
        }
    }

    pub fn selector(&self) -> &Selector {
        &self.sel
    }

    fn eligible(&self, pid: u32) -> bool {
        // Kernel threads have no executable; the agent never traces itself.
        pid != self.self_pid && pid > 1 && exe_of(pid).is_some()
    }

    fn matches(&self, pid: u32) -> bool {
        if !self.eligible(pid) {
            return false;
        }
        if self.sel.is_all() || self.sel.pids.contains(&pid) {
            return true;
        }
        exe_of(pid).is_some_and(|e| self.sel.exe_matches(&e))
    }

    /// Processes to trace at startup: the explicit PIDs, and matching processes that are
    /// old enough (younger ones are queued).
    pub fn initial(&mut self, now: Instant) -> BTreeSet<u32> {
        let mut out: BTreeSet<u32> = self.sel.pids.iter().copied().collect();
        out.extend(
            listeners(&self.sel.ports)
                .into_iter()
                .filter(|&p| self.eligible(p)),
        );
        if self.sel.is_all() || !self.sel.exes.is_empty() {
            let up = uptime_ticks().unwrap_or(u64::MAX);
            let min_ticks = (self.min_age.as_secs_f64() * 100.0) as u64;
            for pid in all_pids() {
                if out.contains(&pid) || !self.matches(pid) {
                    continue;
                }
                let age = up.saturating_sub(start_ticks(pid).unwrap_or(0));
                if age >= min_ticks {
                    out.insert(pid);
                } else {
                    let wait = Duration::from_millis((min_ticks - age) * 10);
                    self.pending.push((pid, now + wait));
                }
            }
        }
        out.remove(&self.self_pid);
        out
    }

    /// A process executed a new program: queue it if it may match once old enough.
    pub fn on_exec(&mut self, pid: u32, now: Instant) {
        if self.sel.is_all() || !self.sel.exes.is_empty() {
            self.pending.retain(|(p, _)| *p != pid);
            self.pending.push((pid, now + self.min_age));
        }
    }

    /// A process bound a port: trace it now if the port is selected.
    pub fn on_bind(&self, pid: u32, port: u16) -> bool {
        self.sel.ports.contains(&port) && self.eligible(pid)
    }

    /// Queued processes whose minimum age has passed and that (still) match.
    pub fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut ready = Vec::new();
        self.pending.retain(|&(pid, at)| {
            if at > now {
                return true;
            }
            ready.push(pid);
            false
        });
        ready.retain(|&pid| self.matches(pid));
        ready
    }

    /// Whether a traced process that exec'd another program should stay traced.
    /// Port-selected servers stay traced across an exec (they may re-exec themselves).
    pub fn still_matches(&self, pid: u32) -> bool {
        self.sel.pids.contains(&pid) || !self.sel.ports.is_empty() || self.matches(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_globs_match_path_or_basename() {
        let s = Selector::new(vec![], &["nginx".into(), "*/bin/python3*".into()], vec![]).unwrap();
        assert!(s.exe_matches(Path::new("/usr/sbin/nginx")));
        assert!(s.exe_matches(Path::new("/usr/bin/python3.11")));
        assert!(!s.exe_matches(Path::new("/usr/bin/ngin")));
        assert!(Selector::new(vec![], &["[".into()], vec![]).is_err());
    }

    #[test]
    fn selector_modes() {
        assert!(Selector::default().is_all());
        assert!(Selector::default().discovers());
        let pids = Selector::new(vec![1], &[], vec![]).unwrap();
        assert!(!pids.is_all() && !pids.discovers());
        assert!(Selector::new(vec![], &[], vec![80]).unwrap().discovers());
    }

    #[test]
    fn finds_this_process_when_it_listens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listeners(&[port]).contains(&std::process::id()));
    }

    #[test]
    fn execs_wait_for_the_minimum_age() {
        let sel = Selector::new(vec![], &["*".into()], vec![]).unwrap();
        let mut d = Discovery::new(sel, Duration::from_millis(500));
        let t0 = Instant::now();
        let me = std::process::id();
        // Our own pid never matches; use the parent (cargo's test runner or a shell).
        let parent = std::os::unix::process::parent_id();
        d.on_exec(parent, t0);
        d.on_exec(me, t0);
        assert!(d.due(t0 + Duration::from_millis(100)).is_empty());
        assert_eq!(d.due(t0 + Duration::from_millis(600)), vec![parent]);
        assert!(
            d.due(t0 + Duration::from_millis(700)).is_empty(),
            "taken once"
        );
    }
}
