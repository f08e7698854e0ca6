//! Experiments: which probe kinds actually load, attach and fire on this kernel.
//!
//! Feature files and kernel configs lie by omission (a PMU exists but the LSM says no, a
//! program type exists but attaching needs a trampoline the kernel lacks), so each kind
//! is proven the way the agent would use it: a tiny program built in memory that counts
//! its runs in an array map is loaded, attached to a hook we then trigger ourselves
//! (getpid, or a function of this very binary for uprobes), and the count is read back.
//! Everything is closed again before the next experiment.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use aya_obj::{
    btf::{Btf, BtfKind},
    generated::{
        BPF_ADD, BPF_ALU64, BPF_ATOMIC, BPF_CALL, BPF_DW, BPF_EXIT, BPF_IMM, BPF_JEQ, BPF_JMP,
        BPF_K, BPF_LD, BPF_MEM, BPF_MOV, BPF_PSEUDO_MAP_FD, BPF_ST, BPF_STX, BPF_W, BPF_X,
        bpf_attach_type, bpf_func_id, bpf_insn, bpf_map_type, bpf_prog_type,
        perf_type_id::PERF_TYPE_TRACEPOINT,
    },
};

use super::{
    parse,
    sys::{self, ProgSpec},
};

/// The size of the agent's event ring (ebpf/src: `EVENTS`), so the experiment asks the
/// kernel for exactly what the agent will.
pub const AGENT_RING_BYTES: u32 = 16 << 20;

/// The probe kinds the doctor tries, in the order it reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RingBuf,
    Tracepoint,
    RawTracepoint,
    TpBtf,
    Uprobe,
    Uretprobe,
    Kprobe,
    Fentry,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::RingBuf,
        Kind::Tracepoint,
        Kind::RawTracepoint,
        Kind::TpBtf,
        Kind::Uprobe,
        Kind::Uretprobe,
        Kind::Kprobe,
        Kind::Fentry,
    ];

    /// Stable identifier (JSON key, table row).
    pub fn id(self) -> &'static str {
        match self {
            Kind::RingBuf => "ringbuf",
            Kind::Tracepoint => "tracepoint",
            Kind::RawTracepoint => "raw_tracepoint",
            Kind::TpBtf => "tp_btf",
            Kind::Uprobe => "uprobe",
            Kind::Uretprobe => "uretprobe",
            Kind::Kprobe => "kprobe",
            Kind::Fentry => "fentry",
        }
    }

    /// Whether the agent cannot work without it. Syscall tracepoints capture traffic,
    /// uprobes hook the Go runtime and TLS libraries, the ring buffer carries events.
    pub fn required(self) -> bool {
        matches!(self, Kind::RingBuf | Kind::Tracepoint | Kind::Uprobe)
    }

    /// What Periscope uses (or would use) it for.
    pub fn purpose(self) -> &'static str {
        match self {
            Kind::RingBuf => "the agent's event stream",
            Kind::Tracepoint => "syscall capture (accept/connect/read/write/close)",
            Kind::RawTracepoint => "optional; not used by Periscope today",
            Kind::TpBtf => "optional; not used by Periscope today",
            Kind::Uprobe => "Go runtime, net/http and TLS library hooks",
            Kind::Uretprobe => "optional; Go hooks use RET-site uprobes instead",
            Kind::Kprobe => "optional; Periscope needs only tracepoints and uprobes",
            Kind::Fentry => "optional; Periscope needs only tracepoints and uprobes",
        }
    }
}

/// What an experiment found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded and attached (or, for the ring buffer, created). `hits` is how often the
    /// program ran after we triggered it; `None` when there was nothing to trigger.
    Works { what: String, hits: Option<u64> },
    /// The kernel lacks what this kind needs before anything can be loaded (no PMU,
    /// no BTF, no tracefs): `why` says what is missing.
    Unsupported { what: String, why: String },
    /// A system call failed: `stage` is "create", "load" or "attach".
    Failed {
        what: String,
        stage: &'static str,
        errno: Option<i32>,
        error: String,
        verifier: Option<String>,
    },
}

impl Outcome {
    fn failed(what: &str, stage: &'static str, e: &io::Error, log: &[u8]) -> Self {
        Outcome::Failed {
            what: what.to_string(),
            stage,
            errno: e.raw_os_error(),
            error: e.to_string(),
            verifier: verifier_summary(log),
        }
    }
}

/// The last meaningful line of a verifier log (its verdict), if there is a log.
fn verifier_summary(log: &[u8]) -> Option<String> {
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .map(str::to_string)
}

/// Where to find tracefs and BTF; the kernel version for old kprobe ABI rules.
pub struct Env<'a> {
    pub tracefs: Option<&'a Path>,
    pub btf_present: bool,
    pub kernel: Option<parse::KernelVersion>,
}

/// Runs every experiment.
pub fn run_all(env: &Env<'_>) -> Vec<(Kind, Outcome)> {
    // BTF is parsed once (about 5 MiB) for both BTF-typed kinds.
    let btf = if env.btf_present {
        Btf::from_sys_fs().map_err(|e| e.to_string())
    } else {
        Err("no /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF)".to_string())
    };
    Kind::ALL
        .iter()
        .map(|&k| {
            let outcome = match k {
                Kind::RingBuf => ringbuf(),
                Kind::Tracepoint => tracepoint(env),
                Kind::RawTracepoint => raw_tracepoint(),
                Kind::TpBtf => tp_btf(&btf),
                Kind::Uprobe => uprobe(env, false),
                Kind::Uretprobe => uprobe(env, true),
                Kind::Kprobe => kprobe(env),
                Kind::Fentry => fentry(&btf),
            };
            (k, outcome)
        })
        .collect()
}

fn ringbuf() -> Outcome {
    let what = format!("BPF_MAP_TYPE_RINGBUF of {} MiB", AGENT_RING_BYTES >> 20);
    match sys::map_create(bpf_map_type::BPF_MAP_TYPE_RINGBUF, 0, 0, AGENT_RING_BYTES) {
        Ok(_fd) => Outcome::Works { what, hits: None },
        Err(e) => Outcome::failed(&what, "create", &e, &[]),
    }
}

/// A one-slot `u32 -> u64` array the test programs count their runs in.
fn counter_map() -> io::Result<OwnedFd> {
    sys::map_create(bpf_map_type::BPF_MAP_TYPE_ARRAY, 4, 8, 1)
}

/// `counter[0] += 1; return 0;` — touches no context, so the same bytes load as any
/// program type.
fn counter_program(map: &OwnedFd) -> Vec<bpf_insn> {
    use std::os::fd::AsRawFd;
    let i = sys::insn;
    vec![
        // r1 = map (64-bit immediate spanning two instructions)
        i(
            BPF_LD | BPF_DW | BPF_IMM,
            1,
            BPF_PSEUDO_MAP_FD as u8,
            0,
            map.as_raw_fd(),
        ),
        i(0, 0, 0, 0, 0),
        // *(u32 *)(r10 - 4) = 0; r2 = r10 - 4
        i(BPF_ST | BPF_MEM | BPF_W, 10, 0, -4, 0),
        i(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0),
        i(BPF_ALU64 | BPF_ADD | BPF_K, 2, 0, 0, -4),
        // r0 = bpf_map_lookup_elem(r1, r2); if r0 == NULL goto out
        i(
            BPF_JMP | BPF_CALL,
            0,
            0,
            0,
            bpf_func_id::BPF_FUNC_map_lookup_elem as i32,
        ),
        i(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 2, 0),
        // lock *(u64 *)(r0 + 0) += 1
        i(BPF_ALU64 | BPF_MOV | BPF_K, 1, 0, 0, 1),
        i(BPF_STX | BPF_ATOMIC | BPF_DW, 0, 1, 0, BPF_ADD as i32),
        // out: return 0
        i(BPF_ALU64 | BPF_MOV | BPF_K, 0, 0, 0, 0),
        i(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
    ]
}

/// A counting program of `spec`'s type and its map.
fn load_counter(spec: ProgSpec, what: &str) -> Result<(OwnedFd, OwnedFd), Outcome> {
    let map = counter_map().map_err(|e| Outcome::failed(what, "create", &e, &[]))?;
    let insns = counter_program(&map);
    let mut log = vec![0u8; 16 * 1024];
    match sys::prog_load(spec, &insns, &mut log) {
        Ok(prog) => Ok((map, prog)),
        Err(e) => Err(Outcome::failed(what, "load", &e, &log)),
    }
}

/// Runs `trigger`, then reads how often the program ran.
fn fired(map: &OwnedFd, what: String, trigger: impl Fn()) -> Outcome {
    for _ in 0..3 {
        trigger();
    }
    let hits = sys::map_lookup_u64(map.as_fd(), 0).ok();
    Outcome::Works { what, hits }
}

/// A real `getpid` system call (glibc and musl no longer cache it).
fn getpid() {
    std::hint::black_box(std::process::id());
}

fn spec(prog_type: bpf_prog_type) -> ProgSpec {
    ProgSpec {
        prog_type,
        expected_attach_type: None,
        attach_btf_id: 0,
        kern_version: 0,
    }
}

fn tracepoint(env: &Env<'_>) -> Outcome {
    let what = "syscalls/sys_enter_getpid via perf_event_open".to_string();
    let Some(tracefs) = env.tracefs else {
        return Outcome::Unsupported {
            what,
            why: "tracefs is not mounted, so tracepoint ids cannot be read".into(),
        };
    };
    let id_path = tracefs.join("events/syscalls/sys_enter_getpid/id");
    let id = match fs::read_to_string(&id_path) {
        Ok(s) => match parse::int(&s) {
            Some(id) => id as u64,
            None => {
                return Outcome::Unsupported {
                    what,
                    why: format!("{} is not a number", id_path.display()),
                };
            }
        },
        Err(e) => {
            return Outcome::Unsupported {
                what,
                why: format!(
                    "{}: {e} (kernel without CONFIG_FTRACE_SYSCALLS?)",
                    id_path.display()
                ),
            };
        }
    };
    let (map, prog) = match load_counter(spec(bpf_prog_type::BPF_PROG_TYPE_TRACEPOINT), &what) {
        Ok(v) => v,
        Err(o) => return o,
    };
    // A tracepoint program runs for every task that hits the tracepoint; aya and libbpf
    // open the event for all processes on CPU 0, and so do we.
    let perf = match sys::perf_event_open(PERF_TYPE_TRACEPOINT as u32, id, None, 0, -1, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::failed(&what, "attach", &e, &[]),
    };
    if let Err(e) = sys::perf_attach_bpf(perf.as_fd(), prog.as_fd()) {
        return Outcome::failed(&what, "attach", &e, &[]);
    }
    fired(&map, what, getpid)
}

fn raw_tracepoint() -> Outcome {
    let what = "raw tracepoint sys_enter".to_string();
    let (map, prog) = match load_counter(spec(bpf_prog_type::BPF_PROG_TYPE_RAW_TRACEPOINT), &what) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let _link = match sys::raw_tracepoint_open(Some(c"sys_enter"), prog.as_fd()) {
        Ok(fd) => fd,
        Err(e) => return Outcome::failed(&what, "attach", &e, &[]),
    };
    fired(&map, what, getpid)
}

/// Loads a BTF-typed (`BPF_PROG_TYPE_TRACING`) counter at `name` and attaches it.
fn btf_typed(
    btf: &Result<Btf, String>,
    what: String,
    candidates: &[(&str, BtfKind)],
    attach: bpf_attach_type,
) -> Outcome {
    let btf = match btf {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Unsupported {
                what,
                why: format!("no kernel BTF: {e}"),
            };
        }
    };
    let Some((name, id)) = candidates
        .iter()
        .find_map(|&(n, k)| btf.id_by_type_name_kind(n, k).ok().map(|id| (n, id)))
    else {
        return Outcome::Unsupported {
            what,
            why: "none of the attach points is in the kernel's BTF".into(),
        };
    };
    let what = format!("{what} {name}");
    let spec = ProgSpec {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_TRACING,
        expected_attach_type: Some(attach),
        attach_btf_id: id,
        kern_version: 0,
    };
    let (map, prog) = match load_counter(spec, &what) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let _link = match sys::raw_tracepoint_open(None, prog.as_fd()) {
        Ok(fd) => fd,
        Err(e) => return Outcome::failed(&what, "attach", &e, &[]),
    };
    // Every candidate fires on getpid except the last-resort test function.
    if name == "bpf_fentry_test1" {
        Outcome::Works { what, hits: None }
    } else {
        fired(&map, what, getpid)
    }
}

fn tp_btf(btf: &Result<Btf, String>) -> Outcome {
    btf_typed(
        btf,
        "tp_btf".into(),
        &[("btf_trace_sys_enter", BtfKind::Typedef)],
        bpf_attach_type::BPF_TRACE_RAW_TP,
    )
}

fn fentry(btf: &Result<Btf, String>) -> Outcome {
    btf_typed(
        btf,
        "fentry".into(),
        &[
            ("__do_sys_getpid", BtfKind::Func),
            ("__x64_sys_getpid", BtfKind::Func),
            ("__arm64_sys_getpid", BtfKind::Func),
            ("bpf_fentry_test1", BtfKind::Func),
        ],
        bpf_attach_type::BPF_TRACE_FENTRY,
    )
}

/// The PMU type of a dynamic probe PMU ("kprobe", "uprobe"), or why there is none.
fn pmu_type(name: &str) -> Result<u32, String> {
    let path = format!("/sys/bus/event_source/devices/{name}/type");
    match fs::read_to_string(&path) {
        Ok(s) => parse::int(&s)
            .map(|t| t as u32)
            .ok_or_else(|| format!("{path} is not a number")),
        Err(e) => Err(format!("no {name} PMU ({path}: {e})")),
    }
}

/// `KERNEL_VERSION(a, b, c)`, which kprobe-type programs had to carry before Linux 5.0.
fn kern_version(v: Option<parse::KernelVersion>) -> u32 {
    v.map_or(0, |v| {
        (v.major << 16) | (v.minor.min(255) << 8) | v.patch.min(255)
    })
}

/// The uprobe target: a function of this binary, called through an opaque pointer so it
/// is neither inlined nor folded away.
#[inline(never)]
extern "C" fn uprobe_target(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(31) ^ 0x5a
}

fn uprobe(env: &Env<'_>, ret: bool) -> Outcome {
    let kind = if ret { "uretprobe" } else { "uprobe" };
    let pmu = match pmu_type("uprobe") {
        Ok(t) => t,
        Err(why) => {
            return Outcome::Unsupported {
                what: kind.into(),
                why: format!("{why}: kernel without CONFIG_UPROBE_EVENTS"),
            };
        }
    };
    let config = if ret {
        match fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/retprobe")
            .ok()
            .and_then(|s| parse::pmu_format_bit(&s))
        {
            Some(bit) if bit < 64 => 1u64 << bit,
            _ => {
                return Outcome::Unsupported {
                    what: kind.into(),
                    why: "the uprobe PMU has no retprobe format bit".into(),
                };
            }
        }
    } else {
        0
    };
    let target: extern "C" fn(u64) -> u64 = uprobe_target;
    let addr = target as usize as u64;
    let maps = fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some((path, offset)) = parse::file_offset(&maps, addr) else {
        return Outcome::Unsupported {
            what: kind.into(),
            why: "this binary's own code is not in a file mapping (/proc/self/maps)".into(),
        };
    };
    let what = format!("{kind} on this binary ({path}+{offset:#x})");
    let Ok(cpath) = CString::new(path) else {
        return Outcome::Unsupported {
            what,
            why: "binary path contains NUL".into(),
        };
    };
    let mut s = spec(bpf_prog_type::BPF_PROG_TYPE_KPROBE);
    s.kern_version = kern_version(env.kernel);
    let (map, prog) = match load_counter(s, &what) {
        Ok(v) => v,
        Err(o) => return o,
    };
    // This process only (pid 0, any CPU), as the agent scopes uprobes to targets.
    let perf = match sys::perf_event_open(pmu, config, Some(&cpath), offset, 0, -1) {
        Ok(fd) => fd,
        Err(e) => return Outcome::failed(&what, "attach", &e, &[]),
    };
    if let Err(e) = sys::perf_attach_bpf(perf.as_fd(), prog.as_fd()) {
        return Outcome::failed(&what, "attach", &e, &[]);
    }
    fired(&map, what, || {
        std::hint::black_box(std::hint::black_box(target)(7));
    })
}

fn kprobe(env: &Env<'_>) -> Outcome {
    let func = match std::env::consts::ARCH {
        "aarch64" => c"__arm64_sys_getpid",
        _ => c"__x64_sys_getpid",
    };
    let what = format!("kprobe on {}", func.to_string_lossy());
    let pmu = match pmu_type("kprobe") {
        Ok(t) => t,
        Err(why) => {
            return Outcome::Unsupported {
                what,
                why: format!("{why}: kernel built without CONFIG_KPROBES"),
            };
        }
    };
    let mut s = spec(bpf_prog_type::BPF_PROG_TYPE_KPROBE);
    s.kern_version = kern_version(env.kernel);
    let (map, prog) = match load_counter(s, &what) {
        Ok(v) => v,
        Err(o) => return o,
    };
    let perf = match sys::perf_event_open(pmu, 0, Some(func), 0, -1, 0) {
        Ok(fd) => fd,
        Err(e) => return Outcome::failed(&what, "attach", &e, &[]),
    };
    if let Err(e) = sys::perf_attach_bpf(perf.as_fd(), prog.as_fd()) {
        return Outcome::failed(&what, "attach", &e, &[]);
    }
    fired(&map, what, getpid)
}

/// Loads and attaches the agent's own embedded programs (then detaches them): the most
/// direct answer to "will `periscope` start here". `Ok(n)` = n programs attached.
pub fn agent_programs() -> Result<AgentPrograms, crate::probes::ProbeError> {
    // No node-wide discovery: loading, then one exchange of our own, is the test.
    let (mut probes, mut ring) =
        crate::probes::Probes::load(crate::probes::DEFAULT_RING_BYTES, false)?;
    let capture = loopback_capture(&mut probes, &mut ring);
    Ok(AgentPrograms {
        report: probes.report().to_vec(),
        capture,
    })
}

/// What loading the agent's programs found, and whether they saw an exchange.
#[derive(Clone, Debug)]
pub struct AgentPrograms {
    pub report: Vec<crate::probes::ProgramReport>,
    /// `Ok(what was seen)` or `Err(what was missing)`.
    pub capture: Result<String, String>,
}

/// The request the doctor sends itself; its path says who sent it.
const DOCTOR_REQUEST: &[u8] = b"GET /periscope-doctor HTTP/1.1\r\nHost: localhost\r\n\r\n";
const DOCTOR_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Proves capture end to end: the doctor traces itself for one loopback HTTP exchange
/// (a listener thread answers a client thread) and checks that the kernel programs
/// reported the accepted connection, the request read and the response written, with
/// their bytes. Loading is not enough: a program can load and attach and still see
/// nothing (records read at the wrong offsets, a target map entry lost).
pub fn loopback_capture(
    probes: &mut crate::probes::Probes,
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
) -> Result<String, String> {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        time::{Duration, Instant},
    };

    use crate::events::Event;
    use periscope_common::{DIR_EGRESS, DIR_INGRESS};

    let me = std::process::id();
    let exchange = || -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> io::Result<()> {
            let (mut s, _) = listener.accept()?;
            let mut buf = [0u8; 512];
            let mut got = 0;
            while got < DOCTOR_REQUEST.len() {
                let n = s.read(&mut buf[got..])?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            s.write_all(DOCTOR_RESPONSE)
        });
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(DOCTOR_REQUEST)?;
        let mut resp = Vec::new();
        let _ = c.read_to_end(&mut resp);
        server
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))??;
        Ok(())
    };
    probes
        .add_target(me, false)
        .map_err(|e| format!("cannot trace the doctor itself: {e}"))?;
    let done = exchange();
    probes.remove_target(me);
    done.map_err(|e| format!("the loopback exchange itself failed: {e}"))?;
    let (mut accepted, mut request, mut response) = (false, false, false);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !(accepted && request && response) {
        while let Some(item) = ring.next() {
            match Event::try_from(&*item) {
                Ok(Event::ConnOpen(ev)) if ev.header.tgid() == me => accepted = true,
                Ok(Event::Data { ev, head, .. }) if ev.header.tgid() == me => {
                    if ev.direction == DIR_INGRESS && head.starts_with(b"GET /periscope-doctor") {
                        request = true;
                    }
                    if ev.direction == DIR_EGRESS && head.starts_with(b"HTTP/1.1 200 OK") {
                        response = true;
                    }
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = |b: bool| if b { "seen" } else { "MISSING" };
    let detail = format!(
        "connection {}, request bytes {}, response bytes {}",
        seen(accepted),
        seen(request),
        seen(response)
    );
    if accepted && request && response {
        Ok(detail)
    } else {
        Err(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_program_shape() {
        // Any open fd will do to build (not load) the program.
        let map: OwnedFd = fs::File::open("/proc/self/status").unwrap().into();
        let p = counter_program(&map);
        assert_eq!(p.len(), 11);
        assert_eq!(p[0].code as u32, BPF_LD | BPF_DW | BPF_IMM);
        assert_eq!(p[0].src_reg() as u32, BPF_PSEUDO_MAP_FD);
        assert_eq!(p[0].dst_reg(), 1);
        // The NULL check jumps exactly over the increment to `r0 = 0`.
        let jeq = 6;
        assert_eq!(p[jeq].code as u32, BPF_JMP | BPF_JEQ | BPF_K);
        assert_eq!(jeq + 1 + p[jeq].off as usize, 9);
        assert_eq!(p.last().unwrap().code as u32, BPF_JMP | BPF_EXIT);
    }

    #[test]
    fn verifier_log_summary() {
        let log = b"0: R1=ctx() R10=fp0\n0: (85) call bpf_probe_write_user#36\nunknown func bpf_probe_write_user#36\nprocessed 1 insns (limit 1000000)\n\0\0\0";
        assert_eq!(
            verifier_summary(log).as_deref(),
            Some("unknown func bpf_probe_write_user#36")
        );
        assert_eq!(verifier_summary(b"\0\0"), None);
        assert_eq!(verifier_summary(b""), None);
    }

    #[test]
    fn kprobe_kernel_version_code() {
        assert_eq!(
            kern_version(Some(parse::KernelVersion::new(4, 19, 282))),
            (4 << 16) | (19 << 8) | 255
        );
        assert_eq!(kern_version(None), 0);
    }

    #[test]
    fn required_kinds() {
        let req: Vec<_> = Kind::ALL.iter().filter(|k| k.required()).collect();
        assert_eq!(req, [&Kind::RingBuf, &Kind::Tracepoint, &Kind::Uprobe]);
    }
}
