//! Go runtime state of one traced process, rebuilt from kernel events: live goroutines
//! and where they were created, GC cycles and stop-the-world pauses, and goroutine-leak
//! suspects by creation site.
//!
//! Goroutines are tracked as a set of goids rather than a counter: the set is seeded by
//! walking the runtime's `allgs` when the agent attaches, and creation/exit events are
//! applied with set semantics (insert if absent, remove if present). Events already in
//! flight when the seed was taken therefore count once, whichever order they land in.

use foldhash::{HashMap, HashMapExt};
use std::{collections::VecDeque, fs::File, path::PathBuf, sync::Arc};

use periscope_common::{GO_FLAG_STW_REASON, GoProcInfo};
use thiserror::Error;

use super::gobin::{GoBinError, GoBinary, GoOffsets};
use super::gomem::{GoMemStats, MemReader};

/// grpc-go's transport function that opens a client stream, under its import path
/// (vendored copies keep it).
pub const GRPC_NEW_STREAM: &str =
    "google.golang.org/grpc/internal/transport.(*http2Client).NewStream";

/// When a Go probe is attached, beyond its function being in the binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoProbeGate {
    Always,
    /// Per-goroutine probes: only with `--go-goroutine-events`.
    GoroutineEvents,
    /// net/http connection probes: only when the offsets of `net/http.conn.rwc`,
    /// `net/http.persistConn.conn`, `net.netFD.pfd` and `internal/poll.FD.Sysfd` are
    /// known and the binary has a `net.Conn` type the kernel can look through
    /// ([`CONN_TYPES`]). One event per connection or request, not per goroutine.
    HttpConn,
    /// Go crypto/tls plaintext: attached together by [`tls_sites`], never one without
    /// the others.
    Tls,
}

/// Go functions the kernel programs attach to: (program, Go function, at entry (true)
/// or at each RET (false), required, gate).
pub const GO_PROBES: &[(&str, &str, bool, bool, GoProbeGate)] = &[
    (
        "go_newproc1_ret",
        "runtime.newproc1",
        false,
        true,
        GoProbeGate::GoroutineEvents,
    ),
    (
        "go_goexit1",
        "runtime.goexit1",
        true,
        true,
        GoProbeGate::GoroutineEvents,
    ),
    (
        "go_stw_start",
        "runtime.stopTheWorldWithSema",
        true,
        false,
        GoProbeGate::Always,
    ),
    (
        "go_stw_end",
        "runtime.startTheWorldWithSema",
        false,
        false,
        GoProbeGate::Always,
    ),
    // At RET, not entry: a Go function whose stack check fails calls morestack and
    // starts over from its entry, so an entry probe can fire twice for one call (seen
    // on Go 1.25 for gcMarkTermination); a function returns once.
    (
        "go_gc_done",
        "runtime.gcMarkTermination",
        false,
        false,
        GoProbeGate::Always,
    ),
    // At entry, where the receiver is in RAX (at a RET it is gone). The morestack
    // restart can repeat the event; it then says the same thing twice (same goroutine,
    // same fd), which the consumer takes as one fact.
    (
        "go_http_serve",
        "net/http.(*conn).serve",
        true,
        false,
        GoProbeGate::HttpConn,
    ),
    (
        "go_http_roundtrip",
        "net/http.(*persistConn).roundTrip",
        true,
        false,
        GoProbeGate::HttpConn,
    ),
    // grpc-go's calls: which goroutine opened which stream (its HEADERS are written by
    // the connection's writer goroutine). At entry of the transport's NewStream, which
    // every attempt of every call goes through; grpc-go is optional.
    (
        "go_grpc_call",
        GRPC_NEW_STREAM,
        true,
        false,
        GoProbeGate::Always,
    ),
    // crypto/tls.(*Conn).Read and Write (ebpf/src/gotls.rs): the entries remember the
    // call, `gotls_ret` at every RET of both sends the plaintext. Required (for this
    // gate): a binary without them does not use TLS. The handshakes' pairs tell the
    // socket early; optional.
    ("gotls_read_enter", GOTLS_READ, true, true, GoProbeGate::Tls),
    ("gotls_ret", GOTLS_READ, false, true, GoProbeGate::Tls),
    (
        "gotls_write_enter",
        GOTLS_WRITE,
        true,
        true,
        GoProbeGate::Tls,
    ),
    ("gotls_ret", GOTLS_WRITE, false, true, GoProbeGate::Tls),
    // Not `handshakeContext`: every Read and Write calls it, to return at once.
    (
        "gotls_handshake_enter",
        GOTLS_SERVER_HANDSHAKE,
        true,
        false,
        GoProbeGate::Tls,
    ),
    (
        "gotls_handshake_ret",
        GOTLS_SERVER_HANDSHAKE,
        false,
        false,
        GoProbeGate::Tls,
    ),
    (
        "gotls_handshake_enter",
        GOTLS_CLIENT_HANDSHAKE,
        true,
        false,
        GoProbeGate::Tls,
    ),
    (
        "gotls_handshake_ret",
        GOTLS_CLIENT_HANDSHAKE,
        false,
        false,
        GoProbeGate::Tls,
    ),
];

const GOTLS_READ: &str = "crypto/tls.(*Conn).Read";
const GOTLS_WRITE: &str = "crypto/tls.(*Conn).Write";
const GOTLS_SERVER_HANDSHAKE: &str = "crypto/tls.(*Conn).serverHandshake";
const GOTLS_CLIENT_HANDSHAKE: &str = "crypto/tls.(*Conn).clientHandshake";

/// Whether a Go probe program is one of the crypto/tls ones (a feature of its own:
/// reported as "TLS plaintext (Go crypto/tls)", and a kernel that refuses them keeps
/// the other Go probes).
pub fn is_tls_program(name: &str) -> bool {
    name.starts_with("gotls_")
}

/// Where the crypto/tls probes go in `bin`: `Ok(None)` when the binary has no
/// `crypto/tls.(*Conn).Read`/`Write` (it does not use TLS), an error when it has them
/// but their RET sites cannot be found. A function's entry and RET probes go on
/// together or not at all: an entry without its RETs would leave every call pending.
pub fn tls_sites(bin: &GoBinary) -> Result<Option<Vec<(&'static str, u64)>>, String> {
    let mut sites = Vec::new();
    let tls_probes = || GO_PROBES.iter().filter(|p| p.4 == GoProbeGate::Tls);
    let mut funcs: Vec<(&str, bool)> = Vec::new();
    for p in tls_probes() {
        if !funcs.iter().any(|f| f.0 == p.1) {
            funcs.push((p.1, p.3));
        }
    }
    for (func, required) in funcs {
        let one = || -> Result<Option<Vec<(&'static str, u64)>>, String> {
            let Some(f) = bin.find_function(func) else {
                return Ok(None);
            };
            let entry = bin
                .entry_probe_offset(&f)
                .ok_or_else(|| format!("{func}: entry not in the file"))?;
            let rets = bin.ret_offsets(&f).map_err(|e| format!("{func}: {e}"))?;
            if rets.is_empty() {
                return Err(format!("{func}: no RET found"));
            }
            let mut out = Vec::new();
            for &(prog, _, at_entry, ..) in tls_probes().filter(|p| p.1 == func) {
                if at_entry {
                    out.push((prog, entry));
                } else {
                    out.extend(rets.iter().map(|&o| (prog, o)));
                }
            }
            Ok(Some(out))
        };
        match one() {
            Ok(Some(s)) => sites.extend(s),
            Ok(None) if required => return Ok(None),
            Err(e) if required => return Err(e),
            Ok(None) => {}
            Err(e) => tracing::debug!("{e}"),
        }
    }
    Ok(Some(sites))
}

/// What a `net.Conn` interface value of a given dynamic type holds, for the net/http
/// probes (shared with ebpf/src/go.rs through periscope_common).
pub const CONN_NETFD: u32 = periscope_common::GO_CONN_NETFD;
pub const CONN_TLS: u32 = periscope_common::GO_CONN_TLS;

/// The `net.Conn` implementations the kernel looks through, each known by its `Close`
/// method: the first entry of a `net.Conn` itab's method table (methods are sorted by
/// name), which is found in stripped binaries too. `*net.TCPConn` and `*net.UnixConn`
/// point at `net.conn{fd *netFD}`; `*crypto/tls.Conn` starts with the `net.Conn` it
/// wraps (src/crypto/tls/conn.go). Any other type (a user's wrapper) is skipped.
pub const CONN_TYPES: &[(&str, u32)] = &[
    ("net.(*TCPConn).Close", CONN_NETFD),
    ("net.(*UnixConn).Close", CONN_NETFD),
    ("crypto/tls.(*Conn).Close", CONN_TLS),
];

/// Most goroutines tracked individually per process; beyond it new goroutines are
/// counted in `untracked` (their site and exit cannot be matched).
const MAX_TRACKED_GOROUTINES: usize = 2_000_000;
/// How often sampling mode walks allgs.
pub const RESCAN_NS: u64 = 500_000_000;
/// GC pauses kept for the quantiles (the runtime keeps 256 as well).
const PAUSE_HISTORY: usize = 256;

#[derive(Debug, Error)]
pub enum AllgsError {
    #[error("allgs not found in this binary")]
    NotFound,
    #[error("cannot open the process's memory: {0}")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    Walk(#[from] super::allgs::WalkError),
}

#[derive(Debug, Error)]
pub enum GoError {
    #[error(transparent)]
    Bin(#[from] GoBinError),
    #[error("{0} not found in the Go binary")]
    MissingFunction(&'static str),
}

/// Where to attach for one Go process.
pub struct GoPlan {
    pub version: String,
    pub info: GoProcInfo,
    /// (program, file offset in the executable)
    pub attach: Vec<(&'static str, u64)>,
    /// (run-time address of a `Close` method, `CONN_*`) for the net/http probes, from
    /// [`CONN_TYPES`]; empty when they are not attached.
    pub conn_types: Vec<(u64, u32)>,
    /// The crypto/tls probes: `Ok(Some(sites))` when in `attach`, `Ok(None)` for a
    /// binary without crypto/tls, `Err(why)` when it has it but cannot be hooked.
    pub tls: Result<Option<usize>, String>,
    pub offsets: GoOffsets,
    pub bin: Arc<GoBinary>,
}

impl GoPlan {
    /// How many of the planned sites the kernel single-steps (amd64: a second trap per
    /// hit, the expensive one in a VM; see probes/nostep.rs): the RETs, and entries of
    /// functions without the usual stack check. `None` where that is not known (arm64).
    pub fn single_stepped(&self) -> Option<usize> {
        if self.bin.arch() != super::gobin::Arch::Amd64 {
            return None;
        }
        Some(
            self.attach
                .iter()
                .filter(|&&(_, off)| {
                    self.bin
                        .va_for_file_offset(off)
                        .and_then(|va| self.bin.bytes_at(va, 2))
                        .is_none_or(|b| !crate::probes::nostep::emulated(b))
                })
                .count(),
        )
    }
}

/// Analyses `/proc/PID/exe`. `Ok(None)` for a binary that is not Go.
/// `goroutine_events`: attach the per-goroutine probes (newproc1, goexit1). Without
/// them goroutines are counted by sampling `allgs` (see [`GoProcess::rescan`]), which
/// costs the target nothing; with them every creation and exit is an event (exact
/// lineage, but a uprobe trap per goroutine: see the benchmark).
pub fn plan(pid: u32, goroutine_events: bool) -> Result<Option<GoPlan>, GoError> {
    let path = PathBuf::from(format!("/proc/{pid}/exe"));
    let bin = match GoBinary::open(&path) {
        Ok(b) => b,
        Err(GoBinError::NotGo) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let offsets = bin.offsets()?;
    let version = bin
        .go_version()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "unknown".into());
    let stw_reason = bin
        .go_version()
        .is_some_and(|v| (v.major, v.minor) >= (1, 21));
    let mut info = GoProcInfo {
        goid_off: offsets.g_goid,
        parent_goid_off: offsets.g_parent_goid.unwrap_or(0),
        gopc_off: offsets.g_gopc,
        startpc_off: offsets.g_startpc,
        flags: if stw_reason { GO_FLAG_STW_REASON } else { 0 },
        http_conn_rwc_off: 0,
        persist_conn_conn_off: 0,
        netfd_pfd_off: 0,
        poll_fd_sysfd_off: 0,
        _pad: 0,
    };
    let conn_types = http_conn_types(pid, &bin, &offsets, &mut info);
    let mut attach = Vec::new();
    for &(prog, func, at_entry, required, gate) in GO_PROBES {
        let wanted = match gate {
            GoProbeGate::Always => true,
            GoProbeGate::GoroutineEvents => goroutine_events,
            GoProbeGate::HttpConn => !conn_types.is_empty(),
            GoProbeGate::Tls => false,
        };
        if !wanted {
            continue;
        }
        let Some(f) = bin.find_function(func) else {
            if required {
                return Err(GoError::MissingFunction(func));
            }
            continue;
        };
        if at_entry {
            if let Some(off) = bin.entry_probe_offset(&f) {
                attach.push((prog, off));
            }
        } else {
            match bin.ret_offsets(&f) {
                Ok(offs) => attach.extend(offs.into_iter().map(|o| (prog, o))),
                Err(e) if !required => tracing::debug!("{func}: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    let tls = tls_sites(&bin);
    if let Ok(Some(sites)) = &tls {
        attach.extend(sites.iter().copied());
    }
    Ok(Some(GoPlan {
        version,
        info,
        attach,
        tls: tls.map(|s| s.map(|s| s.len())),
        conn_types,
        offsets,
        bin: Arc::new(bin),
    }))
}

/// Fills the net/http offsets of `info` and returns the `net.Conn` types for the kernel
/// (run-time addresses), when all four offsets are known and at least one type of
/// [`CONN_TYPES`] is in the binary; otherwise leaves `info` without them (the net/http
/// probes are then not attached) and returns nothing.
fn http_conn_types(
    pid: u32,
    bin: &GoBinary,
    offsets: &GoOffsets,
    info: &mut GoProcInfo,
) -> Vec<(u64, u32)> {
    let (Some(rwc), Some(conn), Some(pfd), Some(sysfd)) = (
        offsets.http_conn_rwc,
        offsets.persist_conn_conn,
        offsets.netfd_pfd,
        offsets.poll_fd_sysfd,
    ) else {
        return Vec::new();
    };
    let bias = load_bias(pid, bin);
    let types: Vec<(u64, u32)> = CONN_TYPES
        .iter()
        .filter_map(|&(close, kind)| Some((bin.find_function(close)?.entry + bias, kind)))
        .collect();
    if !types.iter().any(|&(_, kind)| kind == CONN_NETFD) {
        return Vec::new();
    }
    info.http_conn_rwc_off = rwc;
    info.persist_conn_conn_off = conn;
    info.netfd_pfd_off = pfd;
    info.poll_fd_sysfd_off = sysfd;
    types
}

/// One `go` statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Site {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl Site {
    /// `main.leak /src/app/main.go:42`
    pub fn label(&self) -> String {
        format!("{} {}:{}", self.function, self.file, self.line)
    }

    /// The Go package of the creating function, from its symbol name: the import path up to
    /// the first `.` after the last `/` (`net/http.(*conn).serve` -> `net/http`,
    /// `main.leak` -> `main`). A package whose last path element has a dot (`gopkg.in/
    /// yaml.v3`) is cut at that dot, as Go's symbol names do not mark the boundary.
    pub fn package(&self) -> &str {
        let f = self.function.as_str();
        let tail = f.rfind('/').map_or(0, |i| i + 1);
        match f[tail..].find('.') {
            Some(dot) => &f[..tail + dot],
            None => f,
        }
    }
}

#[derive(Default)]
struct SiteStats {
    live: i64,
    created: u64,
    /// Live count at each leak-detection sample, oldest first.
    samples: VecDeque<i64>,
    suspected: bool,
}

/// What the metrics show for one site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteSnapshot {
    pub site: Arc<Site>,
    pub live: i64,
    pub created: u64,
    pub suspected: bool,
}

/// The exported view of a Go process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoStats {
    pub version: String,
    /// Live user goroutines (runtime.NumGoroutine's meaning: system goroutines excluded).
    pub goroutines: i64,
    pub goroutines_created: u64,
    pub goroutines_exited: u64,
    /// Goroutines beyond the tracking cap (not in `goroutines`).
    pub untracked: u64,
    /// Completed GC cycles seen (since attach, plus the count read at attach if known).
    pub gc_cycles: u64,
    /// Sum of GC stop-the-world pauses, seconds.
    pub gc_pause_sum_s: f64,
    /// min, 25%, 50%, 75%, max of recent GC pauses, seconds.
    pub gc_pause_quantiles: Option<[f64; 5]>,
    /// Top sites by live goroutines, plus every suspected one.
    pub sites: Vec<SiteSnapshot>,
    /// Heap and GC statistics read from the process's memory (`gomem.rs`); when present,
    /// `gc_cycles`, `gc_pause_sum_s` and `gc_pause_quantiles` are the runtime's own
    /// (since process start) rather than counted from events since attach.
    pub mem: Option<GoMemStats>,
}

/// Leak detection settings.
#[derive(Clone, Copy, Debug)]
pub struct LeakConfig {
    /// A site is judged over this window (sampled `SAMPLES` times).
    pub window_ns: u64,
    /// ... and suspected when its live count grew at least this much over it, almost
    /// monotonically.
    pub min_growth: i64,
    /// How many sites the metrics show (plus suspected ones).
    pub top_sites: usize,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            window_ns: 300_000_000_000,
            min_growth: 100,
            top_sites: 20,
        }
    }
}

/// Samples per window.
const SAMPLES: usize = 10;

/// A site leaks when, over a full window, its live count grew by `min_growth` or more
/// and at least 80% of the steps between samples did not go down: a spike that drains,
/// or a count that oscillates around a level, is not a leak.
pub fn looks_like_leak(samples: &VecDeque<i64>, min_growth: i64) -> bool {
    if samples.len() < SAMPLES + 1 {
        return false;
    }
    let first = samples[0];
    let last = samples[samples.len() - 1];
    if last - first < min_growth {
        return false;
    }
    let steps = samples.len() - 1;
    let rising = samples
        .iter()
        .zip(samples.iter().skip(1))
        .filter(|(a, b)| b >= a)
        .count();
    rising * 10 >= steps * 8
}

pub struct GoProcess {
    pid: u32,
    /// Count goroutines by walking allgs every [`RESCAN_NS`] (no per-goroutine probes).
    pub sample_allgs: bool,
    offsets: GoOffsets,
    last_rescan_ns: u64,
    bin: Arc<GoBinary>,
    /// Run-time minus link-time addresses (PIE executables).
    bias: u64,
    version: String,
    /// goid -> creation pc, for every live goroutine.
    live: HashMap<u64, u64>,
    /// Live goroutines that are system goroutines (not in NumGoroutine).
    system_live: i64,
    untracked: u64,
    created: u64,
    exited: u64,
    sites: HashMap<u64, SiteStats>,
    site_names: HashMap<u64, Arc<Site>>,
    /// startpc -> is a system goroutine.
    system_start: HashMap<u64, bool>,
    gc_cycles: u64,
    gc_pause_sum_ns: u64,
    pauses: VecDeque<u64>,
    leak: LeakConfig,
    last_sample_ns: u64,
    /// Sites that became suspected since the last call to `take_new_suspects`.
    new_suspects: Vec<(Arc<Site>, i64, i64)>,
    /// Reads heap and GC statistics from memory; `None` when this binary's globals or
    /// layouts are unknown (the reason is logged once at attach).
    mem_reader: Option<MemReader>,
    mem_file: Option<File>,
}

impl GoProcess {
    pub fn new(pid: u32, plan: &GoPlan, leak: LeakConfig) -> Self {
        Self {
            pid,
            sample_allgs: false,
            offsets: plan.offsets,
            last_rescan_ns: 0,
            bias: load_bias(pid, &plan.bin),
            bin: plan.bin.clone(),
            version: plan.version.clone(),
            live: HashMap::new(),
            system_live: 0,
            untracked: 0,
            created: 0,
            exited: 0,
            sites: HashMap::new(),
            site_names: HashMap::new(),
            system_start: HashMap::new(),
            gc_cycles: 0,
            gc_pause_sum_ns: 0,
            pauses: VecDeque::new(),
            leak,
            last_sample_ns: 0,
            new_suspects: Vec::new(),
            mem_reader: None,
            mem_file: None,
        }
    }

    /// Enables reading heap and GC statistics from memory; the error says why they are
    /// not available for this binary.
    pub fn enable_memory_stats(&mut self) -> Result<(), String> {
        let reader = MemReader::new(&self.bin, &self.offsets).map_err(|e| e.to_string())?;
        let file = File::open(format!("/proc/{}/mem", self.pid)).map_err(|e| e.to_string())?;
        reader
            .read(&file, self.bias)
            .ok_or("reading the runtime's statistics failed")?;
        self.mem_reader = Some(reader);
        self.mem_file = Some(file);
        Ok(())
    }

    /// Reads the heap and GC statistics now (`None` without a reader or when the read
    /// fails, e.g. the process is exiting).
    pub fn read_memory_stats(&self) -> Option<GoMemStats> {
        self.mem_reader
            .as_ref()?
            .read(self.mem_file.as_ref()?, self.bias)
    }

    fn is_system(&mut self, startpc: u64) -> bool {
        let bin = &self.bin;
        *self.system_start.entry(startpc).or_insert_with(|| {
            // runtime.isSystemGoroutine: goroutines started in package runtime, except
            // runtime.main and the async event handler.
            bin.func_for_pc(startpc).is_some_and(|f| {
                f.name.starts_with("runtime.")
                    && f.name != "runtime.main"
                    && f.name != "runtime.handleAsyncEvent"
            })
        })
    }

    /// Adds a live goroutine; `created` when it comes from a creation event (a walk of
    /// allgs sees goroutines, not creations).
    fn add(&mut self, goid: u64, gopc: u64, startpc: u64, created: bool) {
        if self.live.contains_key(&goid) {
            return;
        }
        if self.live.len() >= MAX_TRACKED_GOROUTINES {
            self.untracked += 1;
            return;
        }
        if self.is_system(startpc) {
            self.system_live += 1;
            // Mark system goroutines with pc 0 so their exit is undone the same way.
            self.live.insert(goid, 0);
            return;
        }
        self.live.insert(goid, gopc);
        let s = self.sites.entry(gopc).or_default();
        s.live += 1;
        if created {
            s.created += 1;
        }
    }

    /// A creation event; pcs are run-time addresses.
    pub fn on_create(&mut self, goid: u64, gopc: u64, startpc: u64) {
        self.created += 1;
        self.add(
            goid,
            gopc.wrapping_sub(self.bias),
            startpc.wrapping_sub(self.bias),
            true,
        );
    }

    pub fn on_exit(&mut self, goid: u64) {
        self.exited += 1;
        match self.live.remove(&goid) {
            Some(0) => self.system_live -= 1,
            Some(gopc) => {
                if let Some(s) = self.sites.get_mut(&gopc) {
                    s.live -= 1;
                }
            }
            None => {}
        }
    }

    pub fn on_gc_pause(&mut self, start_ns: u64, end_ns: u64) {
        let d = end_ns.saturating_sub(start_ns);
        self.gc_pause_sum_ns += d;
        if self.pauses.len() == PAUSE_HISTORY {
            self.pauses.pop_front();
        }
        self.pauses.push_back(d);
    }

    pub fn on_gc_cycle(&mut self) {
        self.gc_cycles += 1;
    }

    /// Seeds the live set from the process's memory: `allgs` (a slice of *g) read
    /// through /proc/PID/mem, bounded and checked (see [`super::allgs`]). Returns how
    /// many live goroutines were found.
    pub fn seed_from_memory(&mut self, offsets: &GoOffsets) -> Result<usize, AllgsError> {
        let live = self.read_allgs(offsets)?;
        let bias = self.bias;
        for g in &live {
            self.add(
                g.goid,
                g.gopc.wrapping_sub(bias),
                g.startpc.wrapping_sub(bias),
                false,
            );
        }
        Ok(live.len())
    }

    /// Walks `allgs` without changing anything: whether the runtime's memory matches
    /// the struct offsets this binary was given (checked before any probe is attached).
    pub fn read_allgs(&self, offsets: &GoOffsets) -> Result<Vec<super::allgs::G>, AllgsError> {
        let allgs = self.bin.allgs_address().ok_or(AllgsError::NotFound)?;
        let mem = File::open(format!("/proc/{}/mem", self.pid)).map_err(AllgsError::Open)?;
        Ok(super::allgs::walk(&mem, allgs + self.bias, offsets)?)
    }

    /// In sampling mode, rescans allgs once per [`RESCAN_NS`].
    pub fn rescan_if_due(&mut self, now_ns: u64) {
        if self.sample_allgs && now_ns.saturating_sub(self.last_rescan_ns) >= RESCAN_NS {
            self.last_rescan_ns = now_ns;
            let offsets = self.offsets;
            self.rescan(&offsets);
        }
    }

    /// Sampling mode (no per-goroutine probes): replaces the live set by a fresh walk of
    /// `allgs`. Returns false when allgs cannot be read (the set is then left as it was).
    pub fn rescan(&mut self, offsets: &GoOffsets) -> bool {
        let (live, system_live) = (std::mem::take(&mut self.live), self.system_live);
        let site_live: Vec<(u64, i64)> = self.sites.iter().map(|(&k, s)| (k, s.live)).collect();
        self.system_live = 0;
        for s in self.sites.values_mut() {
            s.live = 0;
        }
        match self.seed_from_memory(offsets) {
            Ok(_) => return true,
            // The process went away, or its memory stopped looking like goroutines
            // (overwritten, or the offsets never fit): stop sampling, say so once.
            Err(AllgsError::Walk(super::allgs::WalkError::Unreadable(_))) => {}
            Err(e @ AllgsError::Walk(_)) => {
                eprintln!(
                    "periscope: warning: PID {}: goroutine sampling stopped: {e}",
                    self.pid
                );
                self.sample_allgs = false;
            }
            Err(_) => {}
        }
        self.live = live;
        self.system_live = system_live;
        for (k, v) in site_live {
            if let Some(s) = self.sites.get_mut(&k) {
                s.live = v;
            }
        }
        false
    }

    fn site(&mut self, gopc: u64) -> Arc<Site> {
        let bin = &self.bin;
        self.site_names
            .entry(gopc)
            .or_insert_with(|| {
                let function = bin
                    .func_for_pc(gopc)
                    .map_or_else(|| format!("{gopc:#x}"), |f| f.name.to_string());
                let (file, line) = bin.creation_site(gopc).unwrap_or_default();
                Arc::new(Site {
                    function,
                    file,
                    line,
                })
            })
            .clone()
    }

    /// Takes a leak-detection sample when one is due (every window / SAMPLES).
    pub fn sample(&mut self, now_ns: u64) {
        let every = self.leak.window_ns / SAMPLES as u64;
        if now_ns.saturating_sub(self.last_sample_ns) < every {
            return;
        }
        self.last_sample_ns = now_ns;
        let mut newly = Vec::new();
        for (&gopc, s) in self.sites.iter_mut() {
            if s.samples.len() == SAMPLES + 1 {
                s.samples.pop_front();
            }
            s.samples.push_back(s.live);
            let leak = looks_like_leak(&s.samples, self.leak.min_growth);
            if leak && !s.suspected {
                newly.push((gopc, s.samples[0], s.live));
            }
            s.suspected = leak;
        }
        // Sites with nothing live and nothing suspect are forgotten (bounded memory).
        self.sites
            .retain(|_, s| s.live > 0 || s.suspected || s.samples.iter().any(|&v| v > 0));
        for (gopc, from, to) in newly {
            let site = self.site(gopc);
            self.new_suspects.push((site, from, to));
        }
    }

    /// Sites that became suspected since the last call: (site, count at window start,
    /// count now).
    pub fn take_new_suspects(&mut self) -> Vec<(Arc<Site>, i64, i64)> {
        std::mem::take(&mut self.new_suspects)
    }

    pub fn stats(&mut self) -> GoStats {
        let mut ranked: Vec<(u64, i64, u64, bool)> = self
            .sites
            .iter()
            .map(|(&pc, s)| (pc, s.live, s.created, s.suspected))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top = self.leak.top_sites;
        let chosen: Vec<_> = ranked
            .iter()
            .enumerate()
            .filter(|(i, r)| *i < top || r.3)
            .map(|(_, r)| *r)
            .collect();
        let sites = chosen
            .into_iter()
            .map(|(pc, live, created, suspected)| SiteSnapshot {
                site: self.site(pc),
                live,
                created,
                suspected,
            })
            .collect();
        let quantiles = (!self.pauses.is_empty()).then(|| {
            let mut v: Vec<u64> = self.pauses.iter().copied().collect();
            v.sort_unstable();
            let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1e9;
            [q(0.0), q(0.25), q(0.5), q(0.75), q(1.0)]
        });
        let mem = self.read_memory_stats();
        let (gc_cycles, gc_pause_sum_s, quantiles) = match &mem {
            Some(m) => (
                m.num_gc,
                m.pause_total_ns as f64 / 1e9,
                Some(m.pause_quantiles_ns.map(|v| v as f64 / 1e9)),
            ),
            None => (self.gc_cycles, self.gc_pause_sum_ns as f64 / 1e9, quantiles),
        };
        GoStats {
            version: self.version.clone(),
            // The runtime's own count when it can be read (exact, and right from attach);
            // the events' count misses goroutines started before attach when allgs
            // could not be walked.
            goroutines: mem
                .as_ref()
                .and_then(|m| m.goroutines)
                .unwrap_or(self.live.len() as i64 - self.system_live),
            goroutines_created: self.created,
            goroutines_exited: self.exited,
            untracked: self.untracked,
            gc_cycles,
            gc_pause_sum_s,
            gc_pause_quantiles: quantiles,
            sites,
            mem,
        }
    }
}

/// Difference between run-time and link-time addresses of the executable (0 unless it
/// is position independent), from /proc/PID/maps.
pub fn load_bias(pid: u32, bin: &GoBinary) -> u64 {
    if !bin.is_pie() {
        return 0;
    }
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return 0;
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 6
            && f[2] == "00000000"
            && exe.as_deref().is_some_and(|e| e.to_string_lossy() == f[5])
            && let Some(start) = f[0]
                .split('-')
                .next()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        {
            return start.saturating_sub(bin.va_for_file_offset(0).unwrap_or(0));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(v: &[i64]) -> VecDeque<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn package_of_creating_function() {
        let site = |f: &str| Site {
            function: f.into(),
            file: String::new(),
            line: 0,
        };
        assert_eq!(site("main.leak").package(), "main");
        assert_eq!(site("main.main.func1").package(), "main");
        assert_eq!(site("net/http.(*conn).serve").package(), "net/http");
        assert_eq!(
            site("github.com/a/b/pkg.(*T).Run.func2").package(),
            "github.com/a/b/pkg"
        );
        assert_eq!(site("0x4567").package(), "0x4567");
    }

    #[test]
    fn steady_growth_is_a_leak() {
        let s = window(&[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
        assert!(looks_like_leak(&s, 50));
        assert!(!looks_like_leak(&s, 150), "not enough growth");
    }

    #[test]
    fn spike_and_drain_is_not() {
        let s = window(&[0, 200, 200, 150, 100, 50, 0, 0, 0, 0, 0]);
        assert!(!looks_like_leak(&s, 20));
        let s = window(&[0, 200, 190, 180, 170, 160, 150, 140, 130, 120, 110]);
        assert!(!looks_like_leak(&s, 20), "mostly falling");
    }

    #[test]
    fn needs_a_full_window() {
        let s = window(&[0, 100, 200]);
        assert!(!looks_like_leak(&s, 20));
    }

    #[test]
    fn noisy_growth_is_still_a_leak() {
        let s = window(&[10, 30, 28, 50, 70, 90, 88, 110, 130, 150, 170]);
        assert!(looks_like_leak(&s, 100));
    }
}
