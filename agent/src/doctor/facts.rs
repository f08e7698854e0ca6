//! Gathering what the host is: files under /proc and /sys, `uname`, `statfs`, limits.
//!
//! The only side effects of the doctor live here: mounting tracefs when it is missing
//! (the agent does the same at start, so it stays mounted) and mounting securityfs just
//! long enough to read the lockdown mode (unmounted again). Both only when allowed by
//! [`super::Options::mount`] and only with CAP_SYS_ADMIN.

use std::{
    ffi::CStr,
    fs,
    path::{Path, PathBuf},
};

use super::{
    parse::{self, KernelVersion, Lockdown, cap},
    sys,
};

/// Filesystem magics (include/uapi/linux/magic.h).
const TRACEFS_MAGIC: u64 = 0x7472_6163;
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
const SECURITYFS_MAGIC: u64 = 0x7363_6673;

/// Where tracefs lives: its own mount point (Linux 4.1+), or under debugfs.
pub const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
pub const LOCKDOWN_PATH: &str = "/sys/kernel/security/lockdown";
pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

/// A pseudo filesystem the agent uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountState {
    Mounted(PathBuf),
    /// It was missing and the doctor mounted it here.
    MountedByDoctor(PathBuf),
    /// Missing; `mount_error` is set when the doctor tried to mount it and failed.
    Missing {
        mount_error: Option<String>,
    },
}

impl MountState {
    pub fn path(&self) -> Option<&Path> {
        match self {
            MountState::Mounted(p) | MountState::MountedByDoctor(p) => Some(p),
            MountState::Missing { .. } => None,
        }
    }
}

/// The kernel lockdown mode as far as we could learn it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockdownState {
    /// `via_doctor_mount`: securityfs was mounted (and unmounted) to read it.
    Mode {
        mode: Lockdown,
        via_doctor_mount: bool,
    },
    /// securityfs is there but has no `lockdown`: the LSM is not built in or not enabled.
    NotActive,
    Unknown(String),
}

/// Everything the environment checks decide from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub release: String,
    pub machine: String,
    pub kernel: Option<KernelVersion>,
    pub btf_bytes: Option<u64>,
    pub tracefs: MountState,
    pub bpffs: MountState,
    pub lockdown: LockdownState,
    pub euid: u32,
    pub cap_eff: Option<u64>,
    pub perf_event_paranoid: Option<i64>,
    pub unprivileged_bpf_disabled: Option<i64>,
    /// (soft, hard); `u64::MAX` = unlimited.
    pub memlock: Option<(u64, u64)>,
    pub pid_ns: Option<u64>,
    /// Whether tracefs lists `sock:inet_sock_set_state` and `sock:inet_sk_error_report`
    /// (Linux 4.16+); `None` when tracefs is not mounted.
    pub sock_tracepoints: Option<bool>,
}

impl Facts {
    pub fn has_cap(&self, bit: u32) -> bool {
        self.cap_eff.is_some_and(|m| cap::has(m, bit))
    }
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn fs_magic(path: &CStr) -> Option<u64> {
    sys::statfs_type(path).ok()
}

/// Looks at the host; mounts tracefs / securityfs when `mount` allows (see module doc).
pub fn gather(mount: bool) -> Facts {
    let (release, machine) =
        sys::uname().unwrap_or_else(|e| (format!("unknown ({e})"), "?".into()));
    let cap_eff = read("/proc/self/status").and_then(|s| parse::cap_eff(&s));
    let can_mount = mount && cap_eff.is_some_and(|m| cap::has(m, cap::SYS_ADMIN));
    let tracefs = tracefs(can_mount);
    let sock_tracepoints = match &tracefs {
        MountState::Mounted(p) | MountState::MountedByDoctor(p) => Some(
            ["inet_sock_set_state", "inet_sk_error_report"]
                .iter()
                .all(|t| p.join("events/sock").join(t).exists()),
        ),
        MountState::Missing { .. } => None,
    };
    Facts {
        kernel: parse::kernel_release(&release),
        release,
        machine,
        btf_bytes: fs::metadata(BTF_PATH).ok().map(|m| m.len()),
        tracefs,
        sock_tracepoints,
        bpffs: if fs_magic(c"/sys/fs/bpf") == Some(BPF_FS_MAGIC) {
            MountState::Mounted(BPFFS_PATH.into())
        } else {
            MountState::Missing { mount_error: None }
        },
        lockdown: lockdown(can_mount),
        euid: sys::geteuid(),
        cap_eff,
        perf_event_paranoid: read("/proc/sys/kernel/perf_event_paranoid")
            .and_then(|s| parse::int(&s)),
        unprivileged_bpf_disabled: read("/proc/sys/kernel/unprivileged_bpf_disabled")
            .and_then(|s| parse::int(&s)),
        memlock: sys::memlock_limit().ok(),
        pid_ns: fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|l| parse::ns_inode(&l.to_string_lossy())),
    }
}

fn tracefs(can_mount: bool) -> MountState {
    for (path, c) in TRACEFS_PATHS
        .iter()
        .zip([c"/sys/kernel/tracing", c"/sys/kernel/debug/tracing"])
    {
        if fs_magic(c) == Some(TRACEFS_MAGIC) && Path::new(path).join("events").is_dir() {
            return MountState::Mounted(PathBuf::from(path));
        }
    }
    if !can_mount {
        return MountState::Missing { mount_error: None };
    }
    match sys::mount(c"tracefs", c"/sys/kernel/tracing", c"tracefs") {
        Ok(()) => MountState::MountedByDoctor(PathBuf::from(TRACEFS_PATHS[0])),
        Err(e) => MountState::Missing {
            mount_error: Some(format!("mount -t tracefs tracefs /sys/kernel/tracing: {e}")),
        },
    }
}

fn lockdown(can_mount: bool) -> LockdownState {
    let from_file = |via_doctor_mount| match fs::read_to_string(LOCKDOWN_PATH) {
        Ok(text) => match parse::lockdown(&text) {
            Some(mode) => LockdownState::Mode {
                mode,
                via_doctor_mount,
            },
            None => {
                LockdownState::Unknown(format!("unrecognised {LOCKDOWN_PATH}: {}", text.trim()))
            }
        },
        Err(_) => LockdownState::NotActive,
    };
    if fs_magic(c"/sys/kernel/security") == Some(SECURITYFS_MAGIC) {
        return from_file(false);
    }
    if !can_mount {
        return LockdownState::Unknown("securityfs is not mounted".into());
    }
    let target = c"/sys/kernel/security";
    if let Err(e) = sys::mount(c"securityfs", target, c"securityfs") {
        return LockdownState::Unknown(format!(
            "securityfs is not mounted and mounting it failed: {e}"
        ));
    }
    let state = from_file(true);
    // Leave the host as we found it; a failure here only leaves a harmless mount behind.
    let _ = sys::umount(target);
    state
}
