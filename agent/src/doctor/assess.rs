//! Verdicts: what the gathered facts and experiment outcomes mean for Periscope, and
//! what to do about each one that is not ok.
//!
//! Pure functions of [`Facts`] and [`Outcome`]s, so every verdict is unit-tested on
//! fixtures of real hosts (this VM, an old kernel, a DaemonSet pod, a plain user).
//! Only checks the agent cannot work without ever `Fail`; optional ones at worst `Warn`.

use super::{
    Check, Status,
    facts::{Facts, LockdownState, MountState},
    parse::{KernelVersion, Lockdown, PROC_PID_INIT_INO, cap},
    probe::{Kind, Outcome},
};

/// Ring buffer and CAP_BPF / CAP_PERFMON: Linux 5.8.
pub const MIN_KERNEL: KernelVersion = KernelVersion::new(5, 8, 0);
/// BPF memory charged to the memory cgroup instead of RLIMIT_MEMLOCK: Linux 5.11.
pub const MEMCG_KERNEL: KernelVersion = KernelVersion::new(5, 11, 0);

const PRIVILEGES_FIX: &str = "run as root, or grant CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN (uprobes, see below), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (CAP_SYS_ADMIN alone covers BPF and perf before Linux 5.8; see deploy/)";
/// Linux 6.16 (and stable kernels that took the fix in 2025) reverted uprobes to
/// CAP_SYS_ADMIN: "perf: Revert to requiring CAP_SYS_ADMIN for uprobes" (ba677dbe,
/// kernel/events/core.c perf_uprobe_event_init). CAP_PERFMON is not enough there.
const UPROBE_SYS_ADMIN_FIX: &str = "grant CAP_SYS_ADMIN: this kernel requires it for uprobes (Linux 6.16+ and 2025 stable kernels, commit ba677dbe \"perf: Revert to requiring CAP_SYS_ADMIN for uprobes\"); CAP_PERFMON is not enough";
const TRACEFS_FIX: &str = "mount -t tracefs tracefs /sys/kernel/tracing (needs CAP_SYS_ADMIN); in a container, mount the host's /sys/kernel/tracing into it";

fn check(id: &'static str, status: Status, required: bool, detail: String) -> Check {
    Check {
        id,
        status,
        required,
        detail,
        fix: None,
    }
}

fn with_fix(mut c: Check, fix: impl Into<String>) -> Check {
    c.fix = Some(fix.into());
    c
}

fn mib(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".into()
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

/// Every environment check, in report order.
pub fn environment(f: &Facts) -> Vec<Check> {
    vec![
        kernel(f),
        btf(f),
        tracefs(f),
        sock_tracepoints(f),
        bpffs(f),
        lockdown(f),
        privileges(f),
        pid_namespace(f),
        perf_event_paranoid(f),
        unprivileged_bpf(f),
        memlock(f),
    ]
}

pub fn kernel(f: &Facts) -> Check {
    match f.kernel {
        Some(v) if v >= MIN_KERNEL => check(
            "kernel",
            Status::Ok,
            true,
            format!(
                "{} on {} (>= {MIN_KERNEL}: BPF ring buffer, CAP_BPF)",
                f.release, f.machine
            ),
        ),
        Some(_) => with_fix(
            check(
                "kernel",
                Status::Fail,
                true,
                format!(
                    "{} on {}: older than {MIN_KERNEL}, no BPF ring buffer",
                    f.release, f.machine
                ),
            ),
            format!("upgrade to Linux >= {MIN_KERNEL} (every major distribution since 2021)"),
        ),
        None => with_fix(
            check(
                "kernel",
                Status::Warn,
                true,
                format!("cannot parse the kernel release {:?}", f.release),
            ),
            "check `uname -r`; Periscope needs Linux >= 5.8 — the probe rows below are the real test",
        ),
    }
}

pub fn btf(f: &Facts) -> Check {
    match f.btf_bytes {
        Some(n) => check(
            "btf",
            Status::Ok,
            false,
            format!("/sys/kernel/btf/vmlinux ({})", mib(n)),
        ),
        None => with_fix(
            check(
                "btf",
                Status::Warn,
                false,
                "no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF".into(),
            ),
            "nothing to do: Periscope's tracepoints and uprobes do not need BTF (tp_btf and fentry do)",
        ),
    }
}

pub fn tracefs(f: &Facts) -> Check {
    match &f.tracefs {
        MountState::Mounted(p) => check(
            "tracefs",
            Status::Ok,
            true,
            format!("mounted at {}", p.display()),
        ),
        MountState::MountedByDoctor(p) => check(
            "tracefs",
            Status::Ok,
            true,
            format!(
                "was not mounted; doctor mounted it at {} (the agent would do the same at start)",
                p.display()
            ),
        ),
        MountState::Missing {
            mount_error: Some(e),
        } => with_fix(
            check(
                "tracefs",
                Status::Fail,
                true,
                format!("not mounted, and mounting it failed: {e}"),
            ),
            TRACEFS_FIX,
        ),
        MountState::Missing { mount_error: None } if f.has_cap(cap::SYS_ADMIN) => with_fix(
            check(
                "tracefs",
                Status::Warn,
                true,
                "not mounted (not mounted by doctor, as asked); the agent mounts it at start with its CAP_SYS_ADMIN".into(),
            ),
            "nothing needed, or mount it now: mount -t tracefs tracefs /sys/kernel/tracing",
        ),
        MountState::Missing { mount_error: None } => with_fix(
            check(
                "tracefs",
                Status::Fail,
                true,
                "not mounted, and without CAP_SYS_ADMIN the agent cannot mount it".into(),
            ),
            TRACEFS_FIX,
        ),
    }
}

/// The TCP state tracepoints: client sockets' local addresses (cross-process trace
/// joins) and failed connects. Optional: spans are right without them, less linked.
pub fn sock_tracepoints(f: &Facts) -> Check {
    const ID: &str = "sock-tracepoints";
    match f.sock_tracepoints {
        Some(true) => check(
            ID,
            Status::Ok,
            false,
            "sock:inet_sock_set_state and sock:inet_sk_error_report present (cross-process trace joins, failed-connect spans)".into(),
        ),
        Some(false) => with_fix(
            check(
                ID,
                Status::Warn,
                false,
                "sock:inet_sock_set_state / sock:inet_sk_error_report missing".into(),
            ),
            "Linux >= 4.16 has them; without them server spans are not linked to the traced callers on this node and failed connects give no span",
        ),
        None => check(
            ID,
            Status::Info,
            false,
            "not checked: tracefs is not mounted".into(),
        ),
    }
}

pub fn bpffs(f: &Facts) -> Check {
    match &f.bpffs {
        MountState::Mounted(p) | MountState::MountedByDoctor(p) => check(
            "bpffs",
            Status::Ok,
            false,
            format!("mounted at {}", p.display()),
        ),
        MountState::Missing { .. } => with_fix(
            check(
                "bpffs",
                Status::Warn,
                false,
                "not mounted at /sys/fs/bpf: needed only to pin maps across agent restarts, which Periscope does not do today".into(),
            ),
            "optional: mount -t bpf bpf /sys/fs/bpf",
        ),
    }
}

pub fn lockdown(f: &Facts) -> Check {
    let suffix = |via: bool| {
        if via {
            " (securityfs mounted for this check, then unmounted)"
        } else {
            ""
        }
    };
    match &f.lockdown {
        LockdownState::Mode {
            mode: Lockdown::None,
            via_doctor_mount,
        } => check(
            "lockdown",
            Status::Ok,
            true,
            format!("none{}", suffix(*via_doctor_mount)),
        ),
        LockdownState::Mode {
            mode: Lockdown::Integrity,
            via_doctor_mount,
        } => check(
            "lockdown",
            Status::Ok,
            true,
            format!(
                "integrity: forbids bpf_probe_write_user, which Periscope never uses; reading memory is allowed{}",
                suffix(*via_doctor_mount)
            ),
        ),
        LockdownState::Mode {
            mode: Lockdown::Confidentiality,
            via_doctor_mount,
        } => with_fix(
            check(
                "lockdown",
                Status::Fail,
                true,
                format!(
                    "confidentiality: blocks tracefs and BPF reads of kernel memory{}",
                    suffix(*via_doctor_mount)
                ),
            ),
            "boot with lockdown=integrity (kernel command line `lockdown=integrity`) or without lockdown",
        ),
        LockdownState::NotActive => check(
            "lockdown",
            Status::Ok,
            true,
            "lockdown LSM not active (securityfs has no lockdown file)".into(),
        ),
        LockdownState::Unknown(why) => with_fix(
            check("lockdown", Status::Warn, true, format!("unknown: {why}")),
            "mount -t securityfs securityfs /sys/kernel/security, then run doctor again",
        ),
    }
}

pub fn privileges(f: &Facts) -> Check {
    let who = if f.euid == 0 {
        "euid 0 (root)".to_string()
    } else {
        format!("euid {}", f.euid)
    };
    let Some(mask) = f.cap_eff else {
        return with_fix(
            check(
                "privileges",
                Status::Warn,
                true,
                format!("{who}; cannot read CapEff from /proc/self/status"),
            ),
            "check /proc/self/status; the probe rows below are the real test",
        );
    };
    let relevant = [
        cap::BPF,
        cap::PERFMON,
        cap::SYS_ADMIN,
        cap::SYS_PTRACE,
        cap::DAC_READ_SEARCH,
        cap::SYS_RESOURCE,
    ];
    let (have, missing): (Vec<u32>, Vec<u32>) = relevant.iter().partition(|&&b| cap::has(mask, b));
    let names = |v: &[u32]| {
        v.iter()
            .map(|&b| cap::name(b))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut detail = format!("{who}; CapEff {mask:016x}");
    if !have.is_empty() {
        detail.push_str(&format!(": {}", names(&have)));
    }
    if !missing.is_empty() {
        detail.push_str(&format!("; missing {}", names(&missing)));
    }
    let bpf = (cap::has(mask, cap::BPF) && cap::has(mask, cap::PERFMON))
        || cap::has(mask, cap::SYS_ADMIN);
    if !bpf {
        return with_fix(
            check(
                "privileges",
                Status::Fail,
                true,
                format!("{detail} — cannot load eBPF programs"),
            ),
            PRIVILEGES_FIX,
        );
    }
    let procfs = [cap::SYS_PTRACE, cap::DAC_READ_SEARCH]
        .into_iter()
        .filter(|&b| !cap::has(mask, b))
        .collect::<Vec<_>>();
    if !procfs.is_empty() {
        return with_fix(
            check(
                "privileges",
                Status::Warn,
                true,
                format!("{detail} — processes of other users cannot be inspected"),
            ),
            format!(
                "grant {} (reading /proc/PID/{{exe,maps,fd,root}} and the binaries of other users' processes)",
                names(&procfs)
            ),
        );
    }
    if !cap::has(mask, cap::SYS_ADMIN) {
        detail.push_str(" (uprobes may also need CAP_SYS_ADMIN: see the uprobe row)");
    }
    check("privileges", Status::Ok, true, detail)
}

pub fn pid_namespace(f: &Facts) -> Check {
    const FIX: &str =
        "run in the host PID namespace (Kubernetes: hostPID: true; docker/podman: --pid=host)";
    match f.pid_ns {
        Some(PROC_PID_INIT_INO) => check(
            "pid_namespace",
            Status::Ok,
            false,
            "host PID namespace: every process on this machine is visible".into(),
        ),
        Some(ino) => with_fix(
            check(
                "pid_namespace",
                Status::Warn,
                false,
                format!(
                    "in a child PID namespace (pid:[{ino}]): the kernel reports host PIDs, this process sees others"
                ),
            ),
            FIX,
        ),
        None => with_fix(
            check(
                "pid_namespace",
                Status::Warn,
                false,
                "cannot read /proc/self/ns/pid".into(),
            ),
            FIX,
        ),
    }
}

pub fn perf_event_paranoid(f: &Facts) -> Check {
    let privileged = f.has_cap(cap::PERFMON) || f.has_cap(cap::SYS_ADMIN);
    let detail = match f.perf_event_paranoid {
        Some(v) if privileged => {
            format!("{v}; ignored for a process with CAP_PERFMON/CAP_SYS_ADMIN")
        }
        Some(v) => format!("{v}; without CAP_PERFMON it limits perf_event_open (see privileges)"),
        None => "unknown (no /proc/sys/kernel/perf_event_paranoid)".into(),
    };
    check("perf_event_paranoid", Status::Info, false, detail)
}

pub fn unprivileged_bpf(f: &Facts) -> Check {
    let meaning = match f.unprivileged_bpf_disabled {
        Some(0) => "0: unprivileged bpf() allowed",
        Some(1) => "1: unprivileged bpf() disabled until reboot",
        Some(2) => "2: unprivileged bpf() disabled (an admin may re-enable it)",
        Some(_) => "unrecognised value",
        None => "unknown",
    };
    check(
        "unprivileged_bpf_disabled",
        Status::Info,
        false,
        format!("{meaning}; irrelevant: Periscope runs with privileges"),
    )
}

pub fn memlock(f: &Facts) -> Check {
    let Some((soft, hard)) = f.memlock else {
        return check(
            "memlock",
            Status::Info,
            false,
            "RLIMIT_MEMLOCK unknown".into(),
        );
    };
    let limits = format!("RLIMIT_MEMLOCK {} (hard {})", mib(soft), mib(hard));
    let memcg = f.kernel.is_some_and(|v| v >= MEMCG_KERNEL);
    if memcg {
        return check(
            "memlock",
            Status::Info,
            false,
            format!(
                "{limits}; irrelevant on >= {MEMCG_KERNEL}: BPF memory is charged to the memory cgroup"
            ),
        );
    }
    if soft == u64::MAX || f.has_cap(cap::SYS_RESOURCE) {
        return check(
            "memlock",
            Status::Ok,
            false,
            format!("{limits}; enough (or raisable with CAP_SYS_RESOURCE) on this pre-5.11 kernel"),
        );
    }
    with_fix(
        check(
            "memlock",
            Status::Warn,
            false,
            format!(
                "{limits}; before Linux 5.11 BPF maps count against it (the ring alone is 16 MiB)"
            ),
        ),
        "LimitMEMLOCK=infinity (systemd) or `ulimit -l unlimited`, or grant CAP_SYS_RESOURCE",
    )
}

/// A probe experiment's verdict.
pub fn probe(kind: Kind, outcome: &Outcome, f: &Facts) -> Check {
    let required = kind.required();
    let not_ok = if required { Status::Fail } else { Status::Warn };
    let optional_fix = || format!("nothing to do: {}", kind.purpose());
    match outcome {
        Outcome::Works { what, hits: None } => check(
            kind.id(),
            Status::Ok,
            required,
            format!("{what}: works — {}", kind.purpose()),
        ),
        Outcome::Works {
            what,
            hits: Some(0),
        } => with_fix(
            check(
                kind.id(),
                Status::Warn,
                required,
                format!("{what}: loaded and attached, but did not run when triggered"),
            ),
            "unexpected: please report it with this output",
        ),
        Outcome::Works {
            what,
            hits: Some(n),
        } => check(
            kind.id(),
            Status::Ok,
            required,
            format!("{what}: loaded, attached, ran {n}x — {}", kind.purpose()),
        ),
        Outcome::Unsupported { what, why } => {
            let fix = if required {
                match kind {
                    Kind::RingBuf => format!("upgrade to Linux >= {MIN_KERNEL}"),
                    Kind::Tracepoint => {
                        "mount tracefs (see the tracefs row); the kernel needs CONFIG_FTRACE_SYSCALLS=y".into()
                    }
                    _ => "use a kernel with CONFIG_UPROBE_EVENTS=y (all mainstream distribution kernels have it)".into(),
                }
            } else {
                optional_fix()
            };
            with_fix(
                check(
                    kind.id(),
                    not_ok,
                    required,
                    format!("{what}: not available: {why}"),
                ),
                fix,
            )
        }
        Outcome::Failed {
            what,
            stage,
            errno,
            error,
            verifier,
        } => {
            let mut detail = format!("{what}: {stage} failed: {error}");
            if let Some(v) = verifier {
                detail.push_str(&format!(" (verifier: {v})"));
            }
            let uprobe_kind = matches!(kind, Kind::Uprobe | Kind::Uretprobe);
            let fix = if uprobe_kind
                && *stage == "attach"
                && *errno == Some(libc::EACCES)
                && !f.has_cap(cap::SYS_ADMIN)
            {
                UPROBE_SYS_ADMIN_FIX.to_string()
            } else if !required {
                optional_fix()
            } else if *errno == Some(libc::EPERM) {
                PRIVILEGES_FIX.to_string()
            } else {
                "unexpected on a kernel >= 5.8: please report it with this output".to_string()
            };
            with_fix(check(kind.id(), not_ok, required, detail), fix)
        }
    }
}

/// `bpf_probe_write_user` is decided by lockdown alone (loading a program that calls it
/// would print a kernel warning on every run of the doctor).
pub fn probe_write_user(f: &Facts) -> Check {
    let detail = match &f.lockdown {
        LockdownState::Mode {
            mode: m @ (Lockdown::Integrity | Lockdown::Confidentiality),
            ..
        } => format!("unavailable (lockdown={m}); Periscope never writes user memory"),
        LockdownState::Mode { .. } | LockdownState::NotActive => {
            "available; unused by Periscope".into()
        }
        LockdownState::Unknown(_) => "unknown (lockdown mode unknown); unused by Periscope".into(),
    };
    check("probe_write_user", Status::Info, false, detail)
}

/// The agent's own programs, loaded for real: `Ok(report)` lists each program's result
/// (loaded, or optional and not loaded with the kernel's reason); `Err(None)` skipped.
pub fn agent_programs(
    result: &Result<Vec<crate::probes::ProgramReport>, Option<crate::probes::ProbeError>>,
) -> Check {
    use crate::probes::ProbeError;
    match result {
        Ok(report) => {
            let loaded: Vec<&str> = report
                .iter()
                .filter(|r| r.failure.is_none())
                .map(|r| r.name)
                .collect();
            let failed: Vec<String> = report
                .iter()
                .filter_map(|r| {
                    r.failure
                        .as_ref()
                        .map(|why| format!("{} ({}): {why}", r.name, r.what))
                })
                .collect();
            let mut detail = format!(
                "{} of {} programs of the embedded eBPF object loaded and attached (then detached): {}",
                loaded.len(),
                report.len(),
                loaded.join(", ")
            );
            if failed.is_empty() {
                return check("agent_programs", Status::Ok, true, detail);
            }
            detail.push_str(&format!("; optional, not loaded: {}", failed.join("; ")));
            let costs: Vec<String> = report
                .iter()
                .filter(|r| r.failure.is_some())
                .map(|r| {
                    let cost = crate::probes::optional_cost(r.name)
                        .unwrap_or("no Go runtime metrics / Go request context");
                    format!("{}: {cost}", r.name)
                })
                .collect();
            with_fix(
                check("agent_programs", Status::Warn, true, detail),
                format!(
                    "tracing works without them, at a cost: {}",
                    costs.join("; ")
                ),
            )
        }
        Err(None) => with_fix(
            check(
                "agent_programs",
                Status::Warn,
                true,
                "skipped: tracefs is not mounted and doctor was asked not to mount it".into(),
            ),
            "mount tracefs (see the tracefs row) and run doctor again",
        ),
        Err(Some(e @ ProbeError::NoObject)) => with_fix(
            check("agent_programs", Status::Warn, true, e.to_string()),
            "build with `cargo xtask build`; the probe rows above still tell what this kernel allows",
        ),
        Err(Some(e @ ProbeError::Essential { .. })) => with_fix(
            check("agent_programs", Status::Fail, true, e.to_string()),
            "this kernel cannot run the socket data path; run with PERISCOPE_LOG=debug for the whole verifier log and please report it",
        ),
        Err(Some(e)) => with_fix(
            check("agent_programs", Status::Fail, true, e.to_string()),
            "fix the failing rows above; if none fails, please report this output",
        ),
    }
}

/// The doctor's own loopback HTTP exchange, as the agent's programs saw it (`None`:
/// the programs did not load, the row above says why).
pub fn capture(result: Option<&Result<String, String>>) -> Check {
    match result {
        Some(Ok(seen)) => check(
            "capture",
            Status::Ok,
            true,
            format!("a loopback HTTP exchange of the doctor's own was captured: {seen}"),
        ),
        Some(Err(missing)) => with_fix(
            check(
                "capture",
                Status::Fail,
                true,
                format!(
                    "the programs loaded but did not capture a loopback HTTP exchange: {missing}"
                ),
            ),
            "the agent would start and see nothing here; run with PERISCOPE_LOG=debug and please report this output with `uname -r`",
        ),
        None => with_fix(
            check(
                "capture",
                Status::Warn,
                true,
                "not tried: the agent's programs did not load".into(),
            ),
            "see the agent_programs row",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::parse::KernelVersion;

    /// This Firecracker VM as measured: 6.18, BTF, tracefs mounted, integrity lockdown,
    /// root without CAP_SYS_RESOURCE, host PID namespace.
    fn this_vm() -> Facts {
        Facts {
            release: "6.18.44-fc-v669".into(),
            machine: "x86_64".into(),
            kernel: Some(KernelVersion::new(6, 18, 44)),
            btf_bytes: Some(5_516_713),
            tracefs: MountState::Mounted("/sys/kernel/tracing".into()),
            bpffs: MountState::Missing { mount_error: None },
            lockdown: LockdownState::Mode {
                mode: Lockdown::Integrity,
                via_doctor_mount: true,
            },
            euid: 0,
            cap_eff: Some(0x1fffeffffff),
            perf_event_paranoid: Some(2),
            unprivileged_bpf_disabled: Some(2),
            memlock: Some((8 << 20, 8 << 20)),
            pid_ns: Some(PROC_PID_INIT_INO),
            sock_tracepoints: Some(true),
        }
    }

    #[test]
    fn sock_tracepoint_states() {
        let mut f = this_vm();
        assert_eq!(sock_tracepoints(&f).status, Status::Ok);
        f.sock_tracepoints = Some(false);
        let c = sock_tracepoints(&f);
        assert_eq!(c.status, Status::Warn);
        assert!(!c.required && c.fix.is_some());
        f.sock_tracepoints = None;
        assert_eq!(sock_tracepoints(&f).status, Status::Info);
    }

    fn status(c: &Check) -> Status {
        c.status
    }

    #[test]
    fn this_vm_is_ready() {
        let f = this_vm();
        let checks = environment(&f);
        assert!(
            checks.iter().all(|c| c.status != Status::Fail),
            "{checks:#?}"
        );
        for c in &checks {
            assert_eq!(
                c.fix.is_some(),
                matches!(c.status, Status::Warn | Status::Fail),
                "every non-ok check says what to do, ok ones don't: {c:?}"
            );
        }
        assert_eq!(status(&bpffs(&f)), Status::Warn);
        assert!(lockdown(&f).detail.contains("integrity"));
        assert!(lockdown(&f).detail.contains("then unmounted"));
        assert_eq!(status(&privileges(&f)), Status::Ok);
        assert!(privileges(&f).detail.contains("missing CAP_SYS_RESOURCE"));
        assert!(memlock(&f).detail.contains("irrelevant"));
        assert!(
            probe_write_user(&f)
                .detail
                .contains("unavailable (lockdown=integrity)")
        );
    }

    #[test]
    fn old_kernel() {
        let f = Facts {
            release: "5.4.0-150-generic".into(),
            kernel: Some(KernelVersion::new(5, 4, 0)),
            cap_eff: Some(0x3fffffffff),
            ..this_vm()
        };
        let k = kernel(&f);
        assert_eq!(k.status, Status::Fail);
        assert!(k.fix.unwrap().contains("5.8"));
        // Before 5.11, a finite memlock limit matters unless CAP_SYS_RESOURCE can raise it.
        assert_eq!(memlock(&f).status, Status::Ok);
        let no_resource = Facts {
            cap_eff: Some(0x3fffffffff & !(1 << cap::SYS_RESOURCE)),
            ..f.clone()
        };
        assert_eq!(memlock(&no_resource).status, Status::Warn);
        let unlimited = Facts {
            memlock: Some((u64::MAX, u64::MAX)),
            ..no_resource
        };
        assert_eq!(memlock(&unlimited).status, Status::Ok);
        // Pre-5.8 root has CAP_SYS_ADMIN, which stands in for CAP_BPF.
        assert_eq!(privileges(&f).status, Status::Ok);
    }

    #[test]
    fn daemonset_pod() {
        // CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH; hostPID; tracefs
        // from the host; no CAP_SYS_ADMIN so securityfs could not be mounted.
        let f = Facts {
            euid: 0,
            cap_eff: Some(0xc000080004),
            lockdown: LockdownState::Unknown("securityfs is not mounted".into()),
            ..this_vm()
        };
        let p = privileges(&f);
        assert_eq!(p.status, Status::Ok, "{p:?}");
        assert!(p.detail.contains("missing CAP_SYS_ADMIN"));
        let l = lockdown(&f);
        assert_eq!(l.status, Status::Warn);
        assert!(l.fix.unwrap().contains("mount -t securityfs"));
        assert!(probe_write_user(&f).detail.starts_with("unknown"));

        let no_tracefs = Facts {
            tracefs: MountState::Missing { mount_error: None },
            ..f.clone()
        };
        let t = tracefs(&no_tracefs);
        assert_eq!(t.status, Status::Fail);
        assert!(t.fix.unwrap().contains("mount -t tracefs"));

        let child_ns = Facts {
            pid_ns: Some(4026532412),
            ..f
        };
        let n = pid_namespace(&child_ns);
        assert_eq!(n.status, Status::Warn);
        assert!(n.fix.unwrap().contains("hostPID: true"));
    }

    #[test]
    fn plain_user() {
        let f = Facts {
            euid: 1000,
            cap_eff: Some(0),
            tracefs: MountState::Missing { mount_error: None },
            ..this_vm()
        };
        let p = privileges(&f);
        assert_eq!(p.status, Status::Fail);
        assert!(p.detail.starts_with("euid 1000"));
        assert!(p.fix.unwrap().contains("CAP_BPF"));
        assert_eq!(tracefs(&f).status, Status::Fail);
        assert!(
            perf_event_paranoid(&f)
                .detail
                .contains("without CAP_PERFMON")
        );

        // Root without CAP_SYS_PTRACE can load but not inspect other users' processes.
        let no_ptrace = Facts {
            euid: 0,
            cap_eff: Some(0x1fffeffffff & !(1 << cap::SYS_PTRACE)),
            ..this_vm()
        };
        let p = privileges(&no_ptrace);
        assert_eq!(p.status, Status::Warn);
        assert!(p.fix.unwrap().contains("CAP_SYS_PTRACE"));
    }

    #[test]
    fn tracefs_states() {
        let mut f = this_vm();
        f.tracefs = MountState::MountedByDoctor("/sys/kernel/tracing".into());
        assert_eq!(tracefs(&f).status, Status::Ok);
        assert!(tracefs(&f).detail.contains("doctor mounted it"));
        f.tracefs = MountState::Missing { mount_error: None };
        assert_eq!(
            tracefs(&f).status,
            Status::Warn,
            "root can mount it at start"
        );
        f.tracefs = MountState::Missing {
            mount_error: Some("EROFS".into()),
        };
        assert_eq!(tracefs(&f).status, Status::Fail);
    }

    #[test]
    fn lockdown_modes() {
        let mut f = this_vm();
        f.lockdown = LockdownState::Mode {
            mode: Lockdown::Confidentiality,
            via_doctor_mount: false,
        };
        let l = lockdown(&f);
        assert_eq!(l.status, Status::Fail);
        assert!(l.fix.unwrap().contains("lockdown=integrity"));
        f.lockdown = LockdownState::Mode {
            mode: Lockdown::None,
            via_doctor_mount: false,
        };
        assert_eq!(lockdown(&f).status, Status::Ok);
        assert_eq!(
            probe_write_user(&f).detail,
            "available; unused by Periscope"
        );
        f.lockdown = LockdownState::NotActive;
        assert_eq!(lockdown(&f).status, Status::Ok);
    }

    #[test]
    fn probe_verdicts() {
        let works = Outcome::Works {
            what: "x".into(),
            hits: Some(3),
        };
        assert_eq!(
            probe(Kind::Tracepoint, &works, &this_vm()).status,
            Status::Ok
        );
        let silent = Outcome::Works {
            what: "x".into(),
            hits: Some(0),
        };
        assert_eq!(
            probe(Kind::Uprobe, &silent, &this_vm()).status,
            Status::Warn
        );
        let no_pmu = Outcome::Unsupported {
            what: "kprobe on __x64_sys_getpid".into(),
            why: "no kprobe PMU: kernel built without CONFIG_KPROBES".into(),
        };
        let k = probe(Kind::Kprobe, &no_pmu, &this_vm());
        assert_eq!(k.status, Status::Warn, "optional kinds never fail");
        assert!(!k.required);
        assert!(k.fix.unwrap().starts_with("nothing to do"));
        let eperm = Outcome::Failed {
            what: "fentry __x64_sys_getpid".into(),
            stage: "load",
            errno: Some(libc::EPERM),
            error: "Operation not permitted (os error 1)".into(),
            verifier: None,
        };
        assert_eq!(probe(Kind::Fentry, &eperm, &this_vm()).status, Status::Warn);
        let t = probe(Kind::Tracepoint, &eperm, &this_vm());
        assert_eq!(t.status, Status::Fail);
        assert!(t.fix.unwrap().contains("CAP_BPF"));
        let rejected = Outcome::Failed {
            what: "uprobe".into(),
            stage: "load",
            errno: Some(libc::EACCES),
            error: "Permission denied (os error 13)".into(),
            verifier: Some("invalid mem access".into()),
        };
        let u = probe(Kind::Uprobe, &rejected, &this_vm());
        assert_eq!(u.status, Status::Fail);
        assert!(u.detail.contains("verifier: invalid mem access"));
        assert!(u.fix.unwrap().contains("report"));
        // Uprobes refused with EACCES to a process without CAP_SYS_ADMIN: say why.
        let eacces = Outcome::Failed {
            what: "uprobe".into(),
            stage: "attach",
            errno: Some(libc::EACCES),
            error: "Permission denied (os error 13)".into(),
            verifier: None,
        };
        let ds = Facts {
            cap_eff: Some(0xc000080004),
            ..this_vm()
        };
        let u = probe(Kind::Uprobe, &eacces, &ds);
        assert_eq!(u.status, Status::Fail);
        assert!(u.fix.unwrap().contains("CAP_SYS_ADMIN"));
        let r = probe(Kind::Uretprobe, &eacces, &ds);
        assert_eq!(r.status, Status::Warn);
        assert!(r.fix.unwrap().contains("CAP_SYS_ADMIN"));
        assert!(
            privileges(&ds)
                .detail
                .contains("uprobes may also need CAP_SYS_ADMIN")
        );
        let no_uprobe_pmu = Outcome::Unsupported {
            what: "uprobe".into(),
            why: "no uprobe PMU".into(),
        };
        assert!(
            probe(Kind::Uprobe, &no_uprobe_pmu, &this_vm())
                .fix
                .unwrap()
                .contains("CONFIG_UPROBE_EVENTS")
        );
    }

    #[test]
    fn agent_program_verdicts() {
        use crate::probes::ProbeError;
        use crate::probes::ProgramReport;
        let ok = |name| ProgramReport {
            name,
            what: "x",
            essential: true,
            failure: None,
        };
        let all = agent_programs(&Ok(vec![ok("sys_enter_read"), ok("sys_exit_read")]));
        assert_eq!(all.status, Status::Ok);
        assert!(all.detail.contains("2 of 2"), "{}", all.detail);
        assert!(all.detail.contains("sys_enter_read, sys_exit_read"));
        let mut some = vec![ok("sys_enter_read"), ok("task_newtask")];
        some[1].essential = false;
        some[1].failure = Some("tracepoint task:task_newtask: record has no field pid".into());
        let some = agent_programs(&Ok(some));
        assert_eq!(some.status, Status::Warn);
        assert!(some.detail.contains("1 of 2"), "{}", some.detail);
        assert!(some.detail.contains("record has no field pid"));
        assert!(
            some.fix
                .unwrap()
                .contains("forked children are not followed")
        );
        let essential = agent_programs(&Err(Some(ProbeError::Essential {
            name: "sys_exit_read",
            what: "ingress bytes",
            reason: "the kernel's verifier rejected it".into(),
        })));
        assert_eq!(essential.status, Status::Fail);
        assert!(essential.detail.contains("sys_exit_read"));
        assert_eq!(agent_programs(&Err(None)).status, Status::Warn);
        let no_obj = agent_programs(&Err(Some(ProbeError::NoObject)));
        assert_eq!(no_obj.status, Status::Warn);
        assert!(no_obj.fix.unwrap().contains("cargo xtask build"));
        assert_eq!(
            agent_programs(&Err(Some(ProbeError::PermissionDenied))).status,
            Status::Fail
        );
    }

    #[test]
    fn capture_verdicts() {
        assert_eq!(capture(Some(&Ok("all seen".into()))).status, Status::Ok);
        let missed = capture(Some(&Err("request bytes MISSING".into())));
        assert_eq!(missed.status, Status::Fail);
        assert!(missed.detail.contains("request bytes MISSING"));
        assert_eq!(capture(None).status, Status::Warn);
    }

    #[test]
    fn sizes() {
        assert_eq!(mib(8 << 20), "8.0 MiB");
        assert_eq!(mib(64 << 10), "64 KiB");
        assert_eq!(mib(u64::MAX), "unlimited");
    }
}
