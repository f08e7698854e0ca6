//! The kernel boundary: loads the embedded eBPF object, attaches its programs, and owns
//! the maps userspace writes (targets, sockets) and reads (counters, events).
//!
//! One table ([`PROBES`]) declares every program, what it hooks and why; attaching is a
//! loop over it. `unsafe` for this crate lives here and in `events` (decoding records).

use std::{
    fs,
    io::{self, ErrorKind},
    path::Path,
};

use std::collections::HashMap as StdHashMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
    },
};
use periscope_common::{GoProcInfo, SockInfo, TargetInfo, sock_key};

use crate::runtime::go::{self, GO_PROBES, GoPlan};

pub mod btf;
pub mod format;
pub mod nostep;
pub mod silence;
pub mod tls;
mod traced;
use thiserror::Error;

/// The kernel object built by `cargo xtask build` (see build.rs).
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/periscope.bpf.o"));

/// One kernel program: (program name in the object, tracepoint category, tracepoint name,
/// what it is for). All of these are syscall/sched tracepoints, available since Linux 4.7
/// (ring buffer: 5.8), and need neither kprobes nor BTF.
pub const PROBES: &[(&str, &str, &str, &str)] = &[
    (
        "sys_enter_accept",
        "syscalls",
        "sys_enter_accept",
        "server connections",
    ),
    (
        "sys_exit_accept",
        "syscalls",
        "sys_exit_accept",
        "server connections",
    ),
    (
        "sys_enter_accept4",
        "syscalls",
        "sys_enter_accept4",
        "server connections",
    ),
    (
        "sys_exit_accept4",
        "syscalls",
        "sys_exit_accept4",
        "server connections",
    ),
    (
        "sys_enter_connect",
        "syscalls",
        "sys_enter_connect",
        "client connections",
    ),
    (
        "sys_exit_connect",
        "syscalls",
        "sys_exit_connect",
        "client connections",
    ),
    (
        "sys_enter_read",
        "syscalls",
        "sys_enter_read",
        "ingress bytes",
    ),
    (
        "sys_exit_read",
        "syscalls",
        "sys_exit_read",
        "ingress bytes",
    ),
    (
        "sys_enter_readv",
        "syscalls",
        "sys_enter_readv",
        "ingress bytes",
    ),
    (
        "sys_exit_readv",
        "syscalls",
        "sys_exit_readv",
        "ingress bytes",
    ),
    (
        "sys_enter_recvfrom",
        "syscalls",
        "sys_enter_recvfrom",
        "ingress bytes",
    ),
    (
        "sys_exit_recvfrom",
        "syscalls",
        "sys_exit_recvfrom",
        "ingress bytes",
    ),
    (
        "sys_enter_recvmsg",
        "syscalls",
        "sys_enter_recvmsg",
        "ingress bytes",
    ),
    (
        "sys_exit_recvmsg",
        "syscalls",
        "sys_exit_recvmsg",
        "ingress bytes",
    ),
    (
        "sys_enter_write",
        "syscalls",
        "sys_enter_write",
        "egress bytes",
    ),
    (
        "sys_exit_write",
        "syscalls",
        "sys_exit_write",
        "egress bytes",
    ),
    (
        "sys_enter_writev",
        "syscalls",
        "sys_enter_writev",
        "egress bytes",
    ),
    (
        "sys_exit_writev",
        "syscalls",
        "sys_exit_writev",
        "egress bytes",
    ),
    (
        "sys_enter_sendto",
        "syscalls",
        "sys_enter_sendto",
        "egress bytes",
    ),
    (
        "sys_exit_sendto",
        "syscalls",
        "sys_exit_sendto",
        "egress bytes",
    ),
    (
        "sys_enter_sendmsg",
        "syscalls",
        "sys_enter_sendmsg",
        "egress bytes",
    ),
    (
        "sys_exit_sendmsg",
        "syscalls",
        "sys_exit_sendmsg",
        "egress bytes",
    ),
    (
        "sys_enter_sendfile64",
        "syscalls",
        "sys_enter_sendfile64",
        "egress bytes (static files)",
    ),
    (
        "sys_exit_sendfile64",
        "syscalls",
        "sys_exit_sendfile64",
        "egress bytes (static files)",
    ),
    (
        "sys_enter_dup",
        "syscalls",
        "sys_enter_dup",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_exit_dup",
        "syscalls",
        "sys_exit_dup",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_enter_dup2",
        "syscalls",
        "sys_enter_dup2",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_exit_dup2",
        "syscalls",
        "sys_exit_dup2",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_enter_dup3",
        "syscalls",
        "sys_enter_dup3",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_exit_dup3",
        "syscalls",
        "sys_exit_dup3",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_enter_fcntl",
        "syscalls",
        "sys_enter_fcntl",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_exit_fcntl",
        "syscalls",
        "sys_exit_fcntl",
        "sockets duplicated onto other fds",
    ),
    (
        "sys_enter_close",
        "syscalls",
        "sys_enter_close",
        "connection end",
    ),
    (
        "sys_exit_close",
        "syscalls",
        "sys_exit_close",
        "connection end",
    ),
    // sock tracepoints exist since Linux 4.16.
    (
        "sock_inet_sock_set_state",
        "sock",
        "inet_sock_set_state",
        "client local addresses, connect failures",
    ),
    (
        "sock_inet_sk_error_report",
        "sock",
        "inet_sk_error_report",
        "connect failures",
    ),
    (
        "sys_enter_bind",
        "syscalls",
        "sys_enter_bind",
        "discovery by port",
    ),
    (
        "sys_exit_bind",
        "syscalls",
        "sys_exit_bind",
        "discovery by port",
    ),
    (
        "task_newtask",
        "task",
        "task_newtask",
        "follow forked children, thread starts",
    ),
    (
        "sched_process_exec",
        "sched",
        "sched_process_exec",
        "discovery of new processes",
    ),
    (
        "sched_process_exit",
        "sched",
        "sched_process_exit",
        "target exit",
    ),
];

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(
        "this periscope binary was built without its eBPF object; build it with `cargo xtask build`"
    )]
    NoObject,
    #[error(
        "permission denied loading eBPF programs: run as root (sudo) or grant CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE (and CAP_SYS_ADMIN for uprobes on Linux >= 6.16); `periscope doctor` shows what is missing"
    )]
    PermissionDenied,
    #[error(
        "tracefs is not mounted and could not be mounted at /sys/kernel/tracing ({0}); mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    Tracefs(io::Error),
    #[error("loading eBPF object: {}", explain_load(.0))]
    Load(#[source] aya::EbpfError),
    /// An essential program (the socket data path) cannot run on this kernel.
    #[error("eBPF program {name} ({what}) cannot run on this kernel: {reason}")]
    Essential {
        name: &'static str,
        what: &'static str,
        reason: String,
    },
    #[error("eBPF program {name} ({what}): {source}")]
    Program {
        name: &'static str,
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF program {0} is in the object but not in the probe table (a build bug)")]
    Undeclared(String),
    #[error("PID {0}: cannot read its executable: {1}")]
    GoTarget(u32, #[source] io::Error),
    #[error("PID {0}: cannot read its OpenSSL library {1}: {2}")]
    TlsLibrary(u32, String, #[source] io::Error),
    #[error("eBPF program {0} was not loaded on this kernel: {1}")]
    NotLoaded(&'static str, String),
    #[error("eBPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("eBPF map {0}: cannot map its memory: {1}")]
    MapMemory(&'static str, #[source] io::Error),
    #[error("--ring-buffer-mib {0}: the event ring must be a power of two from 1 to 1024 MiB")]
    RingSize(u32),
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The object-level error with its causes on one line; an EPERM/EACCES here comes
/// after the privilege check passed, so it is not about privileges.
fn explain_load(e: &aya::EbpfError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg = format!("{msg}: {t}");
        }
        src = s.source();
    }
    msg
}

/// What the kernel said when a program did not load or attach, as one line: the
/// verifier's last lines for a rejected program (the whole log at debug level).
pub fn program_failure(name: &str, e: &aya::programs::ProgramError) -> String {
    use aya::programs::ProgramError as P;
    match e {
        P::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            tracing::debug!("verifier log of {name}:\n{log}");
            let tail = verifier_tail(&log, 4);
            let errno = io_error.raw_os_error().unwrap_or(0);
            let kind = if errno == libc::EACCES || errno == libc::EPERM || errno == libc::EINVAL {
                // The verifier returns EACCES/EINVAL for programs it refuses; as root
                // that is about the program and this kernel, not about privileges.
                format!("the kernel's verifier rejected it ({io_error}; not a privilege problem)")
            } else {
                format!("BPF_PROG_LOAD failed ({io_error})")
            };
            if tail.is_empty() {
                kind
            } else {
                format!("{kind}: {tail}")
            }
        }
        other => {
            let mut msg = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(s) = src {
                let t = s.to_string();
                if !msg.contains(&t) {
                    msg = format!("{msg}: {t}");
                }
                src = s.source();
            }
            msg
        }
    }
}

/// The last `n` meaningful lines of a verifier log, joined with " | ".
pub fn verifier_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("verification time"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Programs that are not essential, and what is lost without each. Every other
/// program in [`PROBES`] (the socket data path) is essential: the agent does not start
/// without it.
pub fn optional_cost(program: &str) -> Option<&'static str> {
    Some(match program {
        "sock_inet_sock_set_state" | "sock_inet_sk_error_report" => {
            "no client local addresses (no cross-process joins) and no failed-connect spans"
        }
        "sys_enter_bind" | "sys_exit_bind" => "--port finds only processes already listening",
        "task_newtask" => "forked children are not followed and thread counts miss new threads",
        "sched_process_exec" => "--exe/--port/node-wide discovery misses new processes",
        "sched_process_exit" => "exited targets are noticed only by polling /proc",
        "tls_read_enter"
        | "tls_read_ex_enter"
        | "tls_write_enter"
        | "tls_write_ex_enter"
        | "tls_ret"
        | "tls_set_fd"
        | "tls_handshake_enter"
        | "tls_handshake_ret" => {
            "HTTPS through OpenSSL gets no spans (its sockets are still counted)"
        }
        "gotls_read_enter" | "gotls_write_enter" | "gotls_ret" => {
            "HTTPS through Go crypto/tls gets no spans (its sockets are still counted)"
        }
        "gotls_handshake_enter" | "gotls_handshake_ret" => {
            "Go HTTPS over a net.Conn wrapper may lose a connection's first request"
        }
        _ => return None,
    })
}

/// How one program fared on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramReport {
    pub name: &'static str,
    pub what: &'static str,
    pub essential: bool,
    /// `None` = loaded and attached (Go programs: loaded, attached per process).
    pub failure: Option<String>,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { name, source }
}

/// Kernel-side counters (summed over CPUs).
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelStats {
    /// Events written to the ring.
    pub events: u64,
    /// Events lost because the ring was full.
    pub ringbuf_drops: u64,
    /// Syscalls not followed because the per-thread argument map was full.
    pub stash_full: u64,
    /// Payload copies that failed (user memory not readable).
    pub read_errors: u64,
    /// Sockets not followed because the socket map was full.
    pub sockmap_full: u64,
    /// Sockets a traced process used without accepting or connecting them, adopted.
    pub adopted: u64,
    /// Socket fds a traced process duplicated onto other fds.
    pub dups: u64,
    /// Sockets classified on their first bytes, by class (`CLASS_HTTP1` first, up to
    /// `CLASS_DEFERRED`).
    pub classified: [u64; 5],
    /// Bytes moved on sockets whose payload was not copied (TLS, unknown, muted).
    pub payload_suppressed: u64,
    /// Data syscalls whose capture started at a request the kernel framed.
    pub frame_splits: u64,
    /// Requests the kernel could not frame.
    pub frame_lost: u64,
    /// Chunks the kernel's HTTP/2 framing cut data syscalls into.
    pub h2_splits: u64,
    /// HTTP/2 socket directions whose frames the kernel stopped following.
    pub h2_lost: u64,
}

/// The uprobe links on one executable or library file, and the traced pids using it.
type FileLinks = (Vec<(&'static str, UProbeLinkId)>, Vec<u32>);

/// `pid` no longer uses the uprobes of the file it shares in `files`; the last process
/// out detaches them.
fn release_links(ebpf: &mut Ebpf, files: &mut StdHashMap<(u64, u64), FileLinks>, pid: u32) {
    let Some(key) = files
        .iter()
        .find(|(_, (_, pids))| pids.contains(&pid))
        .map(|(k, _)| *k)
    else {
        return;
    };
    let (_, pids) = files.get_mut(&key).expect("found above");
    pids.retain(|&p| p != pid);
    if !pids.is_empty() {
        return;
    }
    let (links, _) = files.remove(&key).expect("found above");
    for (name, link) in links {
        if let Some(p) = ebpf.program_mut(name)
            && let Ok(p) = <&mut UProbe>::try_from(p)
        {
            let _ = p.detach(link);
        }
    }
}

/// Loaded and attached kernel programs plus the maps userspace maintains.
pub struct Probes {
    ebpf: Ebpf,
    go_procs: HashMap<MapData, u32, GoProcInfo>,
    /// `[tgid, run-time address of a Close method] -> CONN_*`: the `net.Conn` types the
    /// net/http probes look through (see `runtime::go::CONN_TYPES`).
    go_conn_types: HashMap<MapData, [u64; 2], u32>,
    /// Uprobe links per Go executable (device, inode), shared by every traced process
    /// running it, with the pids using them; detached when the last one goes.
    go_links: StdHashMap<(u64, u64), FileLinks>,
    /// Uprobe links per OpenSSL library file (device, inode), shared by every traced
    /// process that maps it, with those pids.
    tls_links: StdHashMap<(u64, u64), FileLinks>,
    targets: HashMap<MapData, u32, TargetInfo>,
    /// The kernel's fast filter over `targets`: kept equal to it, byte per tgid.
    traced: traced::TracedBytes,
    socks: HashMap<MapData, u64, SockInfo>,
    stats: PerCpuArray<MapData, u64>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// Every program's result on this kernel, for doctor and the startup warnings.
    report: Vec<ProgramReport>,
}

/// Detaching is slow in the kernel, not here: closing a tracepoint's perf event waits
/// for an RCU grace period under `event_mutex` (40-120 ms each on a 2 vCPU VM; 4.3 s
/// from SIGINT to exit for the agent's tracepoints and a python target's OpenSSL
/// uprobes, one after another). From one thread per program the parts outside that
/// mutex overlap: 2.5 s for the same set. Dropping [`Ebpf`] afterwards finds nothing
/// left to detach.
impl Drop for Probes {
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        let progs: Vec<&mut aya::programs::Program> =
            self.ebpf.programs_mut().map(|(_, p)| p).collect();
        let threads = progs.len().min(64);
        in_parallel(progs, threads, |p| {
            let _ = match p {
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::UProbe(p) => p.unload(),
                _ => Ok(()),
            };
        });
        tracing::debug!("programs detached in {} ms", started.elapsed().as_millis());
    }
}

/// Where tracefs is (the directory holding `events/`).
pub fn tracefs_root() -> &'static Path {
    if Path::new("/sys/kernel/tracing/events").exists() {
        Path::new("/sys/kernel/tracing")
    } else {
        Path::new("/sys/kernel/debug/tracing")
    }
}

/// Makes sure tracefs is reachable, mounting it when it is not (as many minimal VMs and
/// containers boot without it).
pub fn ensure_tracefs() -> Result<(), ProbeError> {
    if Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(ProbeError::Tracefs(io::Error::last_os_error()));
    }
    Ok(())
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether the effective capability set (CapEff in /proc/self/status) allows loading
/// tracing programs: CAP_BPF + CAP_PERFMON (Linux >= 5.8) or CAP_SYS_ADMIN.
pub fn has_bpf_privileges(status: &str) -> bool {
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Loads one program and says at debug level what the verifier spent on it (load time
/// is mostly verification, and it grows with the programs' loops).
fn timed_load<P: Loadable>(name: &str, prog: &mut P) -> Result<(), aya::programs::ProgramError> {
    let start = std::time::Instant::now();
    prog.load_now()?;
    tracing::debug!(
        "program {name}: verified in {} ms ({} instructions processed)",
        start.elapsed().as_millis(),
        prog.verified().map_or("?".to_string(), |n| n.to_string())
    );
    Ok(())
}

/// The two kinds of program the agent loads, for [`timed_load`] and [`preload`].
trait Loadable {
    fn load_now(&mut self) -> Result<(), aya::programs::ProgramError>;
    fn verified(&self) -> Option<u32>;
}

/// aya gives each program type its own inherent `load` and `info`, no shared trait.
macro_rules! loadable {
    ($($t:ty),*) => {$(
        impl Loadable for $t {
            fn load_now(&mut self) -> Result<(), aya::programs::ProgramError> {
                self.load()
            }
            fn verified(&self) -> Option<u32> {
                self.info()
                    .ok()
                    .and_then(|i| i.verified_instruction_count())
            }
        }
    )*};
}
loadable!(TracePoint, UProbe);

/// Exits whose program is another's, instruction for instruction (the same `exit_data`
/// direction and cutting, see ebpf `net.rs`; the syscall comes from the entry's stash):
/// the second is not loaded, the first is attached to its tracepoint as well. Verifying
/// the plain-buffer exits is most of the agent's start (0.8-1.3 s each on a 2 vCPU VM),
/// and each loaded copy costs the kernel its JIT image. The object keeps one program per
/// tracepoint (one macro line per syscall makes both ends, and the report and `doctor`
/// name each); `shared_exits_are_the_same_code` checks the claim on the object.
pub const SHARED_EXITS: &[(&str, &str)] = &[
    ("sys_exit_recvfrom", "sys_exit_read"),
    ("sys_exit_sendto", "sys_exit_write"),
    ("sys_exit_recvmsg", "sys_exit_readv"),
    ("sys_exit_sendmsg", "sys_exit_writev"),
    ("sys_exit_recvfrom_uncut", "sys_exit_read_uncut"),
    ("sys_exit_sendto_uncut", "sys_exit_write_uncut"),
    ("sys_exit_recvmsg_uncut", "sys_exit_readv_uncut"),
    ("sys_exit_sendmsg_uncut", "sys_exit_writev_uncut"),
];

/// The program that runs for `name` (itself unless it shares another's code).
fn loaded_as(name: &str) -> &str {
    SHARED_EXITS
        .iter()
        .find(|s| s.0 == name)
        .map_or(name, |s| s.1)
}

/// Runs `f` on every item from up to `threads` threads, taking the items in order.
fn in_parallel<T: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) + Sync) {
    let queue = std::sync::Mutex::new(items.into_iter());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while let Some(item) = next() {
                    f(item);
                }
            });
        }
    });
}

/// Loads `names` (tracepoints and uprobes) from several threads: the kernel verifies
/// privileged loads concurrently, and verification is most of the agent's start. The
/// costliest go first (the plain-buffer data exits, then the vectored ones). Returns
/// each failure, already worded; attaching happens afterwards, in table order.
fn preload(ebpf: &mut Ebpf, names: &[&str]) -> StdHashMap<String, String> {
    let rank = |name: &str| {
        ["sys_exit_write", "sys_exit_read", "sys_exit_sendfile64"]
            .iter()
            .position(|h| name == *h)
            .unwrap_or(if name.starts_with("sys_exit_") { 3 } else { 4 })
    };
    let mut progs: Vec<(String, &mut aya::programs::Program)> = ebpf
        .programs_mut()
        .filter(|(n, _)| names.contains(n))
        .map(|(n, p)| (n.to_string(), p))
        .collect();
    progs.sort_by_key(|(n, _)| rank(n));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let failures = std::sync::Mutex::new(StdHashMap::new());
    in_parallel(progs, threads, |(name, prog)| {
        let result = match prog {
            aya::programs::Program::TracePoint(p) => timed_load(&name, p),
            aya::programs::Program::UProbe(p) => timed_load(&name, p),
            _ => Err(aya::programs::ProgramError::UnexpectedProgramType),
        };
        if let Err(e) = result {
            let why = program_failure(&name, &e);
            failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name, why);
        }
    });
    failures.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Data exits that use `bpf_loop` (the plain-buffer ones cut framed request streams,
/// the vectored ones walk up to `MAX_IOV_LOOP` iovecs), and the same programs without
/// it (no cutting; an unrolled walk of `MAX_IOV` iovecs), loaded instead on kernels without `bpf_loop` (before 5.17; before 5.13 a
/// program referencing a callback does not load at all) or when the first is refused.
pub const UNCUT_FALLBACKS: &[(&str, &str)] = &[
    ("sys_exit_read", "sys_exit_read_uncut"),
    ("sys_exit_recvfrom", "sys_exit_recvfrom_uncut"),
    ("sys_exit_write", "sys_exit_write_uncut"),
    ("sys_exit_sendto", "sys_exit_sendto_uncut"),
    ("sys_exit_readv", "sys_exit_readv_uncut"),
    ("sys_exit_recvmsg", "sys_exit_recvmsg_uncut"),
    ("sys_exit_writev", "sys_exit_writev_uncut"),
    ("sys_exit_sendmsg", "sys_exit_sendmsg_uncut"),
];

/// Attaches one tracepoint program (loading it first unless [`preload`] did, or failed
/// to: `failed` has its reason); the reason when it cannot.
fn load_tracepoint(
    ebpf: &mut Ebpf,
    failed: &StdHashMap<String, String>,
    name: &str,
    category: &str,
    tracepoint: &str,
) -> Option<String> {
    let name = loaded_as(name);
    if let Some(why) = failed.get(name) {
        return Some(why.clone());
    }
    match ebpf.program_mut(name) {
        None => Some("not in the eBPF object".to_string()),
        Some(p) => match <&mut TracePoint>::try_from(p) {
            Err(e) => Some(program_failure(name, &e)),
            Ok(prog) => {
                let loaded = if prog.fd().is_ok() {
                    Ok(())
                } else {
                    timed_load(name, prog)
                };
                match loaded {
                    Err(e) => Some(program_failure(name, &e)),
                    Ok(()) => prog.attach(category, tracepoint).err().map(|e| {
                        format!(
                            "attaching to {category}:{tracepoint}: {}",
                            program_failure(name, &e)
                        )
                    }),
                }
            }
        },
    }
}

/// Whether the kernel frames request streams (ebpf `frame.rs`): it needs `bpf_loop`
/// (Linux 5.17). `PERISCOPE_KERNEL_FRAMING=0` turns it off, to compare with and without
/// in the conformance suite and benchmarks.
fn kernel_framing() -> bool {
    if std::env::var("PERISCOPE_KERNEL_FRAMING").is_ok_and(|v| v == "0") {
        return false;
    }
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 17, 0))
}

/// The event ring's default size. The kernel maps a ring's pages twice into the reader
/// (so that a record never wraps), and all of them up front: the ring counts twice in the
/// agent's RSS whether it is busy or not (16 MiB, the size before, was 33 of an idle
/// agent's 49 MiB).
pub const DEFAULT_RING_BYTES: u64 = 4 << 20;

/// The ring size for `--ring-buffer-mib` (the default without it); a clear error for a
/// size the kernel would refuse (a power of two pages) or that makes no sense here.
pub fn ring_bytes(mib: Option<u32>) -> Result<u64, ProbeError> {
    match mib {
        None => Ok(DEFAULT_RING_BYTES),
        Some(m) if m.is_power_of_two() && m <= 1024 => Ok(u64::from(m) << 20),
        Some(m) => Err(ProbeError::RingSize(m)),
    }
}

impl Probes {
    /// Loads the object and attaches every program in [`PROBES`]. The returned ring is
    /// the event stream; the caller drains it. The kernel wakes the reader once a quarter
    /// of the ring is pending (the reader also polls every few milliseconds).
    pub fn load(ring_bytes: u64, discovery: bool) -> Result<(Self, RingBuf<MapData>), ProbeError> {
        let wakeup_bytes = ring_bytes / 4;
        if EBPF_OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        // Say the real problem first: without privileges nothing else can work, and
        // tracefs looks missing to an unprivileged user anyway.
        if !fs::read_to_string("/proc/self/status").is_ok_and(|s| has_bpf_privileges(&s)) {
            return Err(ProbeError::PermissionDenied);
        }
        ensure_tracefs()?;
        let syscalls: Vec<&str> = PROBES
            .iter()
            .filter(|p| p.1 == "syscalls")
            .map(|p| p.2)
            .collect();
        let layout = format::Layout::read(tracefs_root(), &syscalls);
        for (tp, field) in &layout.missing_optional {
            tracing::debug!("tracepoint {tp} has no field {field} on this kernel");
        }
        // Without BTF the adoption and Go-syscall paths stay off (offsets 0): sockets are
        // then followed from accept/connect and dup only.
        let koffs = btf::Btf::from_sys_fs()
            .map(|b| btf::kernel_offsets(&b))
            .unwrap_or_default();
        let framing = kernel_framing();
        let traced_elements = traced::elements(traced::pid_max());
        let mut ebpf = EbpfLoader::new()
            .override_global("FRAMING", &(framing as u32), true)
            .override_global("KOFFS", &koffs, true)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .map_max_entries("EVENTS", ring_bytes as u32)
            .override_global("DISCOVERY", &(discovery as u32), true)
            .override_global("TP_FIELDS", &layout.fields, true)
            .map_max_entries("TRACED", traced_elements)
            .load(EBPF_OBJECT)
            .map_err(ProbeError::Load)?;
        // Kernel-side diagnostics (aya-log); absent when the object logs nothing.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
        };
        let targets = HashMap::try_from(take(&mut ebpf, "TARGETS")?).map_err(map_err("TARGETS"))?;
        let traced = match take(&mut ebpf, "TRACED")? {
            aya::maps::Map::Array(data) => traced::TracedBytes::map(data, traced_elements)
                .map_err(|e| ProbeError::MapMemory("TRACED", e))?,
            _ => return Err(ProbeError::MissingMap("TRACED")),
        };
        let socks = HashMap::try_from(take(&mut ebpf, "SOCKS")?).map_err(map_err("SOCKS"))?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "STATS")?).map_err(map_err("STATS"))?;
        let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
        let go_procs =
            HashMap::try_from(take(&mut ebpf, "GO_PROCS")?).map_err(map_err("GO_PROCS"))?;
        let go_conn_types = HashMap::try_from(take(&mut ebpf, "GO_CONN_TYPES")?)
            .map_err(map_err("GO_CONN_TYPES"))?;
        // Every program in the object must be declared in PROBES: a program built but
        // never attached would fail silently.
        if let Some((name, _)) = ebpf.programs().find(|(name, _)| {
            !PROBES.iter().any(|p| p.0 == *name)
                && !UNCUT_FALLBACKS.iter().any(|f| f.1 == *name)
                && !GO_PROBES.iter().any(|p| p.0 == *name)
                && !tls::TLS_PROGRAMS.contains(name)
        }) {
            return Err(ProbeError::Undeclared(name.to_string()));
        }
        let mut report =
            Vec::with_capacity(PROBES.len() + GO_PROBES.len() + tls::TLS_PROGRAMS.len());
        // Uprobes are loaded now and attached later: the Go ones per Go process, the
        // OpenSSL ones per library file a traced process maps. A kernel that refuses one
        // loses that feature only (attach_go / attach_tls say which).
        // GO_PROBES names `gotls_ret` once per function it goes on: load each once.
        let mut go_names: Vec<&'static str> = Vec::with_capacity(GO_PROBES.len());
        for p in GO_PROBES {
            if !go_names.contains(&p.0) {
                go_names.push(p.0);
            }
        }
        let uprobes = go_names
            .into_iter()
            .map(|name| {
                let what = if go::is_tls_program(name) {
                    "TLS plaintext (Go crypto/tls)"
                } else {
                    "Go runtime"
                };
                (name, what)
            })
            .chain(
                tls::TLS_PROGRAMS
                    .iter()
                    .map(|&n| (n, "TLS plaintext (OpenSSL)")),
            );
        let uprobes: Vec<(&'static str, &'static str)> = uprobes.collect();
        // Everything the tables load on their first choice, verified in parallel.
        let mut first_choice: Vec<&str> = uprobes.iter().map(|u| u.0).collect();
        for &(name, category, tracepoint, _) in PROBES {
            if layout.problem(category, tracepoint).is_some() {
                continue;
            }
            let fallback = UNCUT_FALLBACKS.iter().find(|f| f.0 == name).map(|f| f.1);
            let name = loaded_as(match fallback {
                Some(uncut) if !framing => uncut,
                _ => name,
            });
            if !first_choice.contains(&name) {
                first_choice.push(name);
            }
        }
        let started = std::time::Instant::now();
        let failed = preload(&mut ebpf, &first_choice);
        tracing::debug!(
            "{} programs verified in {} ms",
            first_choice.len(),
            started.elapsed().as_millis()
        );
        for (name, what) in uprobes {
            let failure = match ebpf.program_mut(name) {
                None => Some("not in the eBPF object".to_string()),
                Some(_) => failed.get(name).cloned(),
            };
            report.push(ProgramReport {
                name,
                what,
                essential: false,
                failure,
            });
        }
        for &(name, category, tracepoint, what) in PROBES {
            let essential = optional_cost(name).is_none();
            let fallback = UNCUT_FALLBACKS.iter().find(|f| f.0 == name).map(|f| f.1);
            let failure = match (layout.problem(category, tracepoint), fallback) {
                (Some(p), _) => Some(format!("tracepoint {category}:{tracepoint}: {p}")),
                (None, Some(uncut)) if !framing => load_tracepoint(&mut ebpf, &failed, uncut, category, tracepoint),
                (None, Some(uncut)) => load_tracepoint(&mut ebpf, &failed, name, category, tracepoint).and_then(|why| {
                    // Capture as before (each syscall from its start) rather than not at all.
                    tracing::warn!("{name}: kernel request framing unavailable ({why}); capturing each syscall from its start");
                    load_tracepoint(&mut ebpf, &failed, uncut, category, tracepoint)
                }),
                (None, None) => load_tracepoint(&mut ebpf, &failed, name, category, tracepoint),
            };
            if let Some(reason) = &failure {
                if essential {
                    return Err(ProbeError::Essential {
                        name,
                        what,
                        reason: reason.clone(),
                    });
                }
            }
            report.push(ProgramReport {
                name,
                what,
                essential,
                failure,
            });
        }
        Ok((
            Self {
                ebpf,
                go_procs,
                go_conn_types,
                go_links: StdHashMap::new(),
                tls_links: StdHashMap::new(),
                targets,
                traced,
                socks,
                stats,
                logger,
                report,
            },
            ring,
        ))
    }

    /// Every program's result on this kernel.
    pub fn report(&self) -> &[ProgramReport] {
        &self.report
    }

    /// One warning line per optional program this kernel could not take, with what
    /// that costs.
    pub fn warn_unavailable(&self) {
        for r in self.report.iter().filter(|r| r.failure.is_some()) {
            let cost = optional_cost(r.name).unwrap_or("Go runtime metrics and Go request context");
            eprintln!(
                "periscope: warning: eBPF program {} ({}) not available on this kernel: {}; so {cost}",
                r.name,
                r.what,
                r.failure.as_deref().unwrap_or_default()
            );
        }
    }

    pub fn add_target(&mut self, pid: u32, follow_forks: bool) -> Result<(), ProbeError> {
        let info = TargetInfo {
            follow_forks: follow_forks as u32,
            _pad: 0,
        };
        self.targets
            .insert(pid, info, 0)
            .map_err(map_err("TARGETS"))?;
        self.traced.set(pid, true);
        Ok(())
    }

    /// Whether the kernel's target map holds `pid` (it removes exited processes itself).
    pub fn has_target(&self, pid: u32) -> bool {
        self.targets.get(&pid, 0).is_ok()
    }

    pub fn remove_target(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
        self.traced.set(pid, false);
    }

    /// Starts following an fd that existed before the agent attached.
    pub fn add_socket(&mut self, pid: u32, fd: u32, role: u32) -> Result<(), ProbeError> {
        self.socks
            .insert(sock_key(pid, fd), SockInfo::new(role), 0)
            .map_err(map_err("SOCKS"))
    }

    /// Writes a tracked socket's class back (`CLASS_MUTED`: the agent's parser gave up,
    /// stop copying its payload). Only an entry that still exists is updated: the fd
    /// may have been closed since its last event, and its fd number reused by another
    /// socket (`generation` tells). Returns whether it was.
    pub fn set_class(&mut self, pid: u32, fd: u32, generation: u16, class: u8) -> bool {
        let key = sock_key(pid, fd);
        let Ok(mut info) = self.socks.get(&key, 0) else {
            return false;
        };
        // Another socket on the same fd number since (closed and reused meanwhile).
        if info.generation != generation {
            return false;
        }
        info.class = class;
        // BPF_EXIST: never recreate an entry close(2) removed meanwhile.
        self.socks.insert(key, info, 2).is_ok()
    }

    /// Forgets sockets of a process that exited (close(2) never ran for them).
    pub fn remove_sockets(&mut self, pid: u32, fds: impl IntoIterator<Item = u32>) {
        for fd in fds {
            let _ = self.socks.remove(&sock_key(pid, fd));
        }
    }

    /// Removes every socket entry of `pid`, including ones userspace never saw data for.
    pub fn purge_process(&mut self, pid: u32) {
        let keys: Vec<u64> = self
            .socks
            .keys()
            .filter_map(Result::ok)
            .filter(|k| (k >> 32) as u32 == pid)
            .collect();
        for k in keys {
            let _ = self.socks.remove(&k);
        }
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |i: u32| -> u64 { self.stats.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        KernelStats {
            events: sum(periscope_common::STAT_EVENTS),
            ringbuf_drops: sum(periscope_common::STAT_RINGBUF_DROPS),
            stash_full: sum(periscope_common::STAT_STASH_FULL),
            read_errors: sum(periscope_common::STAT_READ_ERRORS),
            sockmap_full: sum(periscope_common::STAT_SOCKMAP_FULL),
            adopted: sum(periscope_common::STAT_ADOPTED),
            dups: sum(periscope_common::STAT_DUPS),
            classified: std::array::from_fn(|i| sum(periscope_common::STAT_CLASSIFIED + i as u32)),
            payload_suppressed: sum(periscope_common::STAT_PAYLOAD_SUPPRESSED),
            frame_splits: sum(periscope_common::STAT_FRAME_SPLITS),
            frame_lost: sum(periscope_common::STAT_FRAME_LOST),
            h2_splits: sum(periscope_common::STAT_H2_SPLITS),
            h2_lost: sum(periscope_common::STAT_H2_LOST),
        }
    }

    /// Attaches the Go runtime uprobes for one process (entry and RET sites from
    /// `plan`). Uprobes are per executable file: a perf event bound to a pid would only
    /// see that one thread, and goroutines run on every thread. So each executable is
    /// probed once for all processes, and the programs keep to traced processes by
    /// looking up GO_PROCS. On failure nothing new stays attached.
    pub fn attach_go(&mut self, pid: u32, plan: &GoPlan) -> Result<usize, ProbeError> {
        use std::os::unix::fs::MetadataExt;
        let target = format!("/proc/{pid}/exe");
        let meta = fs::metadata(&target).map_err(|e| ProbeError::GoTarget(pid, e))?;
        let key = (meta.dev(), meta.ino());
        let failed = |name: &str| {
            self.report
                .iter()
                .find(|r| r.name == name)
                .and_then(|r| r.failure.clone())
        };
        for &(name, _) in &plan.attach {
            // The crypto/tls programs are a feature of their own (warned about once at
            // load): without them the other Go probes still go on.
            if let Some(why) = failed(name)
                && !go::is_tls_program(name)
            {
                return Err(ProbeError::NotLoaded(name, why));
            }
        }
        let sites: Vec<(&'static str, u64)> = plan
            .attach
            .iter()
            .copied()
            .filter(|&(name, _)| failed(name).is_none())
            .collect();
        // Per process, not per executable: PIE code addresses differ between processes.
        for &(close, kind) in &plan.conn_types {
            if let Err(e) = self.go_conn_types.insert([u64::from(pid), close], kind, 0) {
                self.remove_go_conn_types(pid);
                return Err(map_err("GO_CONN_TYPES")(e));
            }
        }
        if let Err(e) = self.go_procs.insert(pid, plan.info, 0) {
            self.remove_go_conn_types(pid);
            return Err(map_err("GO_PROCS")(e));
        }
        if let Some((links, pids)) = self.go_links.get_mut(&key) {
            pids.push(pid);
            return Ok(links.len());
        }
        let mut links = Vec::with_capacity(sites.len());
        for &(name, offset) in &sites {
            let attached = self
                .ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingMap(name))
                .and_then(|p| {
                    let p: &mut UProbe = p.try_into().map_err(|source| ProbeError::Program {
                        name,
                        what: "Go runtime",
                        source,
                    })?;
                    p.attach(
                        UProbeAttachLocation::AbsoluteOffset(offset),
                        &target,
                        UProbeScope::AllProcesses,
                    )
                    .map_err(|source| ProbeError::Program {
                        name,
                        what: "Go runtime",
                        source,
                    })
                });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    self.go_links.insert(key, (links, vec![pid]));
                    self.detach_go(pid);
                    return Err(e);
                }
            }
        }
        let n = links.len();
        self.go_links.insert(key, (links, vec![pid]));
        Ok(n)
    }

    fn remove_go_conn_types(&mut self, pid: u32) {
        let keys: Vec<[u64; 2]> = self
            .go_conn_types
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k[0] == u64::from(pid))
            .collect();
        for k in keys {
            let _ = self.go_conn_types.remove(&k);
        }
    }

    pub fn detach_go(&mut self, pid: u32) {
        let _ = self.go_procs.remove(&pid);
        self.remove_go_conn_types(pid);
        release_links(&mut self.ebpf, &mut self.go_links, pid);
    }

    /// Attaches the OpenSSL uprobes for one process, once per library file (like the Go
    /// probes, for every process; the programs keep to traced ones). Returns the library
    /// hooked, `None` when the process maps no OpenSSL. `recheck`: the process was looked
    /// at before, so its executable is known not to export OpenSSL.
    pub fn attach_tls(
        &mut self,
        pid: u32,
        recheck: bool,
    ) -> Result<Option<tls::SslLibrary>, ProbeError> {
        use std::os::unix::fs::MetadataExt;
        let Some(lib) = tls::find(pid, !recheck) else {
            return Ok(None);
        };
        for &name in tls::TLS_PROGRAMS {
            if let Some(r) = self.report.iter().find(|r| r.name == name)
                && let Some(why) = &r.failure
            {
                return Err(ProbeError::NotLoaded(name, why.clone()));
            }
        }
        let meta = fs::metadata(&lib.path)
            .map_err(|e| ProbeError::TlsLibrary(pid, lib.name.clone(), e))?;
        let key = (meta.dev(), meta.ino());
        if let Some((_, pids)) = self.tls_links.get_mut(&key) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
            return Ok(Some(lib));
        }
        let sites = tls::sites(&lib.path).map_err(|why| {
            ProbeError::TlsLibrary(
                pid,
                lib.name.clone(),
                io::Error::new(ErrorKind::InvalidData, why),
            )
        })?;
        tracing::debug!(
            "PID {pid}: OpenSSL probes for {} at {}",
            lib.name,
            if sites.internal {
                "the internal read and write calls (no single-step)"
            } else {
                "the exported calls"
            }
        );
        let mut links = Vec::new();
        let mut attach = |name: &'static str, offset: u64| {
            let p = self
                .ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingMap(name))?;
            let p: &mut UProbe = p.try_into().map_err(|source| ProbeError::Program {
                name,
                what: "TLS plaintext (OpenSSL)",
                source,
            })?;
            p.attach(
                UProbeAttachLocation::AbsoluteOffset(offset),
                &lib.path,
                UProbeScope::AllProcesses,
            )
            .map_err(|source| ProbeError::Program {
                name,
                what: "TLS plaintext (OpenSSL)",
                source,
            })
        };
        let mut failed = None;
        for &(entry, offset, required) in &sites.data {
            // The return probe first: an entry without its return would leave a call
            // stashed per thread until the next one overwrites it.
            match attach(tls::TLS_RET, offset).and_then(|ret| Ok((ret, attach(entry, offset)?))) {
                Ok((ret, ent)) => {
                    links.push((tls::TLS_RET, ret));
                    links.push((entry, ent));
                }
                Err(e) if required => {
                    failed = Some(e);
                    break;
                }
                Err(e) => tracing::debug!("PID {pid}: {entry} not hooked: {e}"),
            }
        }
        if failed.is_none() {
            for &(entry, ret, offset) in &sites.hints {
                // Return first, as above.
                let ret_link = if ret.is_empty() {
                    None
                } else {
                    match attach(ret, offset) {
                        Ok(l) => Some((ret, l)),
                        Err(e) => {
                            tracing::debug!("PID {pid}: {entry} not hooked: {e}");
                            continue;
                        }
                    }
                };
                match attach(entry, offset) {
                    Ok(l) => {
                        links.extend(ret_link);
                        links.push((entry, l));
                    }
                    Err(e) => {
                        tracing::debug!("PID {pid}: {entry} not hooked: {e}");
                        links.extend(ret_link);
                    }
                }
            }
        }
        self.tls_links.insert(key, (links, vec![pid]));
        if let Some(e) = failed {
            self.detach_tls(pid);
            return Err(e);
        }
        Ok(Some(lib))
    }

    /// The process no longer needs its OpenSSL probes; the last one out detaches them.
    pub fn detach_tls(&mut self, pid: u32) {
        release_links(&mut self.ebpf, &mut self.tls_links, pid);
    }

    /// Forwards kernel-side log records (rare: map-full conditions) to our log.
    pub fn flush_logs(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

/// Sockets a process already had open when the agent attached: TCP sockets that are not
/// listening, from /proc/PID/fd and /proc/PID/net/tcp{,6}.
pub fn existing_tcp_sockets(pid: u32) -> io::Result<Vec<u32>> {
    let inodes = crate::conn::procnet::connected_inodes(pid);
    let mut fds = Vec::new();
    let dir = match fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(fds),
        Err(e) => return Err(e),
    };
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(link) = fs::read_link(entry.path()) else {
            continue;
        };
        if let Some(inode) = crate::conn::procnet::socket_inode(&link.to_string_lossy())
            && inodes.contains(&inode)
        {
            fds.push(fd);
        }
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One program's code in the object: its bytes, and where each relocation sits with
    /// the symbol it names (maps, callees), as the loader will resolve them.
    fn program_code(obj: &object::File, name: &str) -> (Vec<u8>, Vec<(u64, String)>) {
        use object::{Object, ObjectSection, ObjectSymbol};
        let sym = obj
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap_or_else(|| panic!("{name} not in the object"));
        let section = obj
            .section_by_index(sym.section_index().expect("a program's section"))
            .unwrap();
        let data = section.data().unwrap();
        let (start, end) = (sym.address(), sym.address() + sym.size());
        let bytes = data[start as usize..end as usize].to_vec();
        let relocs = section
            .relocations()
            .filter(|(at, _)| (start..end).contains(at))
            .map(|(at, r)| {
                let target = match r.target() {
                    object::RelocationTarget::Symbol(i) => obj
                        .symbol_by_index(i)
                        .map(|s| s.name().unwrap_or("?").to_string())
                        .unwrap_or_default(),
                    other => format!("{other:?}"),
                };
                (at - start, target)
            })
            .collect();
        (bytes, relocs)
    }

    #[test]
    fn ring_sizes_the_kernel_takes() {
        assert_eq!(ring_bytes(None).unwrap(), DEFAULT_RING_BYTES);
        assert_eq!(ring_bytes(Some(1)).unwrap(), 1 << 20);
        assert_eq!(ring_bytes(Some(64)).unwrap(), 64 << 20);
        for bad in [0, 3, 48, 2048] {
            let e = ring_bytes(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("power of two") && e.contains(&bad.to_string()),
                "{e}"
            );
        }
    }

    #[test]
    fn shared_exits_are_the_same_code() {
        if EBPF_OBJECT.is_empty() {
            eprintln!("no eBPF object embedded (cargo xtask build): nothing to compare");
            return;
        }
        let obj = object::File::parse(EBPF_OBJECT).unwrap();
        for &(name, runs_as) in SHARED_EXITS {
            let (a, b) = (program_code(&obj, name), program_code(&obj, runs_as));
            assert!(!a.0.is_empty(), "{name} has no code");
            assert_eq!(a, b, "{name} is not {runs_as}'s code");
            // Its tracepoint is one the table attaches, and its stand-in is loaded.
            assert!(
                PROBES.iter().any(|p| p.2 == name) || UNCUT_FALLBACKS.iter().any(|f| f.1 == name)
            );
            assert_eq!(loaded_as(name), runs_as);
            assert_eq!(loaded_as(runs_as), runs_as);
        }
        // A different exit is told apart (the comparison sees what differs).
        assert_ne!(
            program_code(&obj, "sys_exit_read"),
            program_code(&obj, "sys_exit_write")
        );
    }

    #[test]
    fn privileges_from_capeff() {
        assert!(has_bpf_privileges("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(has_bpf_privileges("CapEff:\t0000000000200000\n")); // CAP_SYS_ADMIN
        assert!(has_bpf_privileges("CapEff:\t000000c000000000\n")); // CAP_BPF+CAP_PERFMON
        assert!(!has_bpf_privileges("CapEff:\t0000008000000000\n")); // CAP_BPF alone
        assert!(!has_bpf_privileges("CapEff:\t0000000000000000\n"));
        assert!(!has_bpf_privileges("no caps line"));
    }
}
