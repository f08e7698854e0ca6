//! Go runtime uprobes: goroutine creation and exit, GC stop-the-world pauses and cycles,
//! and which goroutine serves or sends on which net/http connection.
//!
//! Attached per traced Go process (uprobes filtered by pid) at function entries and at
//! each RET instruction found by decoding the function — never uretprobes, which
//! corrupt Go stacks when they move. In Go's register ABI (amd64, Go >= 1.17) results
//! come back in RAX and the current goroutine's g is in R14.
//!
//! Sources: runtime/proc.go `newproc1` (returns the new g, whose goid, parentGoid,
//! gopc and startpc are set by then), `goexit1` (runs on the exiting goroutine),
//! `stopTheWorldWithSema(reason stwReason)` / `startTheWorldWithSema`, and
//! mgc.go `gcMarkTermination`; net/http/server.go `(*conn).serve` and transport.go
//! `(*persistConn).roundTrip`.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use periscope_common::*;

use crate::common::*;

/// Offsets for each traced Go process, filled by userspace before attaching.
#[map]
pub static GO_PROCS: HashMap<u32, GoProcInfo> = HashMap::with_max_entries(4096, 0);

/// Start of a stop-the-world that is part of a GC, per process.
#[map]
static STW_START: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// The `net.Conn` implementations the net/http probes look through, per traced process:
/// key `[tgid, run-time address of the type's Close method]`, value a `CONN_*` kind.
/// Filled by userspace with GO_PROCS (agent/src/runtime/go.rs `CONN_TYPES`).
#[map]
pub(crate) static GO_CONN_TYPES: HashMap<[u64; 2], u32> = HashMap::with_max_entries(16_384, 0);

/// [`GO_CONN_NETFD`]: the data word points at `net.conn{fd *netFD}`.
pub(crate) const CONN_NETFD: u32 = GO_CONN_NETFD;
/// [`GO_CONN_TLS`]: the data word points at `tls.Conn`, whose first field is the
/// underlying `net.Conn` (crypto/tls/conn.go; offset 0 is checked per Go release by the
/// agent's gobin tests).
const CONN_TLS: u32 = GO_CONN_TLS;

/// Offset of `fun[0]` in an itab: `inter`, `_type`, `hash uint32` + padding, then the
/// method table (runtime/runtime2.go `itab` up to Go 1.21, internal/abi `ITab` since).
/// Methods are sorted by name, so `fun[0]` of a `net.Conn` itab is the type's `Close`.
pub(crate) const ITAB_FUN0: u64 = 24;

/// stwReason values of the GC's own stops (runtime/proc.go, Go >= 1.21).
const STW_GC_MARK_TERM: u64 = 1;
const STW_GC_SWEEP_TERM: u64 = 2;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    unsafe { &*ctx.regs }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    if addr == 0 {
        return 0;
    }
    unsafe { bpf_probe_read_user(addr as *const u64) }.unwrap_or(0)
}

#[inline(always)]
fn field(base: u64, off: u32) -> u64 {
    if off == 0 {
        0
    } else {
        read_u64(base + off as u64)
    }
}

/// At each RET of runtime.newproc1: RAX holds the new g.
#[uprobe]
pub fn go_newproc1_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(info) = (unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)).copied() }) else {
        return 0;
    };
    let newg = regs(&ctx).rax;
    if newg == 0 {
        return 0;
    }
    output(&GoroutineEvent {
        header: header(EventKind::GoroutineCreate, pid_tgid),
        goid: field(newg, info.goid_off),
        parent_goid: field(newg, info.parent_goid_off),
        gopc: field(newg, info.gopc_off),
        startpc: field(newg, info.startpc_off),
    });
    0
}

/// Entry of runtime.goexit1, on the exiting goroutine: R14 is its g.
#[uprobe]
pub fn go_goexit1(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(info) = (unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)).copied() }) else {
        return 0;
    };
    let g = regs(&ctx).r14;
    output(&GoroutineEvent {
        header: header(EventKind::GoroutineExit, pid_tgid),
        goid: field(g, info.goid_off),
        ..Default::default()
    });
    0
}

/// Entry of runtime.stopTheWorldWithSema: remember when a GC stop began.
#[uprobe]
pub fn go_stw_start(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(info) = (unsafe { GO_PROCS.get(&tgid).copied() }) else {
        return 0;
    };
    if info.flags & GO_FLAG_STW_REASON != 0 {
        // First argument (RAX): the stwReason; only the GC's own stops are GC pauses.
        let reason = regs(&ctx).rax & 0xff;
        if reason != STW_GC_MARK_TERM && reason != STW_GC_SWEEP_TERM {
            return 0;
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // BPF_NOEXIST: an entry probe fires again when the function restarts after growing
    // its stack (morestack); the first time is when the stop began.
    let _ = STW_START.insert(&tgid, &now, 1);
    0
}

/// At each RET of runtime.startTheWorldWithSema: the stop is over.
#[uprobe]
pub fn go_stw_end(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(start) = (unsafe { STW_START.get(&tgid).copied() }) else {
        return 0;
    };
    let _ = STW_START.remove(&tgid);
    let now = unsafe { bpf_ktime_get_ns() };
    output(&GcEvent {
        header: header(EventKind::GcPause, pid_tgid),
        start_ns: start,
        end_ns: now,
    });
    0
}

/// At each RET of runtime.gcMarkTermination: one GC cycle completed (NumGC increments
/// in it).
#[uprobe]
pub fn go_gc_done(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)).is_none() } {
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    output(&GcEvent {
        header: header(EventKind::GcCycle, pid_tgid),
        start_ns: now,
        end_ns: now,
    });
    0
}

/// Reads a u64 of the traced process; 0 is treated as a failed read (a nil pointer).
#[inline(always)]
pub(crate) fn read_ptr(addr: u64) -> Result<u64, i64> {
    match unsafe { bpf_probe_read_user(addr as *const u64) } {
        Ok(0) => Err(0),
        Ok(v) => Ok(v),
        Err(e) => Err(e.into()),
    }
}

/// The kind (`CONN_*`) and data word of the `net.Conn` interface value stored at
/// `iface`, when the dynamic type is one the agent registered for this process.
#[inline(always)]
fn conn_kind(tgid: u32, iface: u64) -> Result<(u32, u64), i64> {
    let itab = read_ptr(iface)?;
    let data = read_ptr(iface + 8)?;
    let close = read_ptr(itab + ITAB_FUN0)?;
    let kind = unsafe { GO_CONN_TYPES.get(&[tgid as u64, close]) }.ok_or(0i64)?;
    Ok((*kind, data))
}

/// The socket fd behind the `net.Conn` interface value at `iface`: through one
/// `*tls.Conn`, then `*net.TCPConn` (or `UnixConn`) -> `*netFD` -> `pfd.Sysfd`.
/// Other implementations (user wrappers) are not followed: their layout is unknown.
#[inline(always)]
fn conn_fd(tgid: u32, info: &GoProcInfo, iface: u64) -> Result<u32, i64> {
    let (mut kind, mut data) = conn_kind(tgid, iface)?;
    if kind == CONN_TLS {
        (kind, data) = conn_kind(tgid, data)?;
    }
    if kind != CONN_NETFD {
        return Err(0);
    }
    let netfd = read_ptr(data)?;
    let at = netfd + info.netfd_pfd_off as u64 + info.poll_fd_sysfd_off as u64;
    // Sysfd is an int; -1 once the fd is closed.
    let fd = unsafe { bpf_probe_read_user(at as *const i64) }?;
    if !(0..=i32::MAX as i64).contains(&fd) {
        return Err(0);
    }
    Ok(fd as u32)
}

/// One [`GoConnEvent`] for the current goroutine (R14) and the connection of the
/// receiver (RAX): a `*net/http.conn` when `server`, else a `*net/http.persistConn`.
#[inline(always)]
fn try_go_conn(ctx: &ProbeContext, kind: EventKind, server: bool) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let info = unsafe { GO_PROCS.get(&tgid).copied() }.ok_or(0i64)?;
    let conn_off = if server {
        info.http_conn_rwc_off
    } else {
        info.persist_conn_conn_off
    };
    if conn_off == 0 {
        return Err(0);
    }
    let r = regs(ctx);
    let (recv, g) = (r.rax, r.r14);
    if recv == 0 || g == 0 {
        return Err(0);
    }
    let fd = conn_fd(tgid, &info, recv + conn_off as u64)?;
    let goid = read_ptr(g + info.goid_off as u64)?;
    output(&GoConnEvent {
        header: header(kind, pid_tgid),
        goid,
        parent_goid: field(g, info.parent_goid_off),
        fd,
        _pad: 0,
    });
    Ok(())
}

/// Entry of `net/http.(*conn).serve(c, ctx)`: RAX is c, the goroutine is the one that
/// serves this connection for its whole life (one per connection).
///
/// An entry probe can fire twice for one call: a function whose stack check fails calls
/// morestack and restarts from its entry. The event then repeats with the same goroutine
/// and fd, which the consumer takes as the same fact.
#[uprobe]
pub fn go_http_serve(ctx: ProbeContext) -> u32 {
    let _ = try_go_conn(&ctx, EventKind::GoHttpServe, true);
    0
}

/// Entry of `net/http.(*persistConn).roundTrip(pc, req)`: RAX is pc, the goroutine is
/// the caller of `Transport.RoundTrip` (the request is written and its response read by
/// pc's writeLoop/readLoop goroutines, but this one waits for them). May fire twice
/// for one call, as `go_http_serve`.
#[uprobe]
pub fn go_http_roundtrip(ctx: ProbeContext) -> u32 {
    let _ = try_go_conn(&ctx, EventKind::GoHttpRoundTrip, false);
    0
}

/// One [`GoRpcCallEvent`]: the current goroutine (R14) and the method string whose
/// pointer and length are in `ptr` and `len`.
#[inline(always)]
fn try_grpc_call(ptr: u64, len: u64, g: u64) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let info = unsafe { GO_PROCS.get(&((pid_tgid >> 32) as u32)).copied() }.ok_or(0i64)?;
    if g == 0 || ptr == 0 || len == 0 {
        return Err(0);
    }
    let mut ev = GoRpcCallEvent {
        header: header(EventKind::GoGrpcCall, pid_tgid),
        goid: read_ptr(g + info.goid_off as u64)?,
        parent_goid: field(g, info.parent_goid_off),
        method_len: len.min(u32::MAX as u64) as u32,
        _pad: 0,
        method: [0; GO_RPC_METHOD_CAP],
    };
    // At most CAP - 1 bytes; the mask bounds the size for the verifier.
    let n = if len > (GO_RPC_METHOD_CAP - 1) as u64 {
        (GO_RPC_METHOD_CAP - 1) as u64
    } else {
        len
    };
    let n = (n as u32) & (GO_RPC_METHOD_CAP as u32 - 1);
    if n == 0 {
        return Err(0);
    }
    // SAFETY: n < the method array's size.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(
            ev.method.as_mut_ptr().cast(),
            n,
            ptr as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        return Err(rc);
    }
    output(&ev);
    Ok(())
}

/// Entry of grpc-go's `internal/transport.(*http2Client).NewStream(t, ctx, callHdr
/// *CallHdr)`, which opens every stream of every call (unary or streaming, each retry
/// its own): RAX is t, RBX/RCX ctx, RDI callHdr, whose first fields are `Host string`
/// and `Method string` (offset 16) in every grpc-go release. It runs on the calling
/// goroutine; the connection's writer goroutine writes the stream's HEADERS. May fire
/// twice for one call (see `go_http_serve`); the consumer keeps one stream per goroutine.
#[uprobe]
pub fn go_grpc_call(ctx: ProbeContext) -> u32 {
    let r = regs(&ctx);
    let hdr = r.rdi;
    if hdr == 0 {
        return 0;
    }
    let ptr = read_u64(hdr + GRPC_CALLHDR_METHOD);
    let len = read_u64(hdr + GRPC_CALLHDR_METHOD + 8);
    let _ = try_grpc_call(ptr, len, r.r14);
    0
}

/// Offset of `Method` in grpc-go's `transport.CallHdr` (after `Host string`).
const GRPC_CALLHDR_METHOD: u64 = 16;
