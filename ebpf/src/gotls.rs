//! Go crypto/tls plaintext: `crypto/tls.(*Conn).Read` and `(*Conn).Write`, probed at
//! their entry and at each of their RET instructions (never uretprobes: they corrupt Go
//! stacks when they move). Go's register ABI (amd64, Go >= 1.17): at entry RAX is the
//! receiver `c`, RBX/RCX the slice's pointer/length; at a RET, RAX is `n`; R14 is the
//! current goroutine's g throughout.
//!
//! The entry only remembers the call, keyed by `[tgid, g]`: a goroutine runs one call at
//! a time, and it may resume on another thread after it parked in the netpoller, so a
//! thread key would be wrong. The bytes are copied at a RET: the count is known then, and
//! an entry probe can fire twice for one call (a failed stack check restarts the function
//! from its entry through morestack), which would send a written buffer twice. The
//! caller's buffer is untouched until the function returns, so at RET `buf` still holds
//! what was written (or what was read).
//!
//! Which socket: the `net.Conn` the `tls.Conn` wraps (its first field), walked through
//! the types the agent registered in `GO_CONN_TYPES` and, for any other type, as a
//! wrapper struct that embeds a `net.Conn` first (bounded). When that walk fails, the
//! read/write syscall the goroutine makes inside the call names it (`inner_syscall`), and
//! a call that makes none (a record already buffered) uses the socket learnt for the
//! same `*tls.Conn` before, in an earlier call or in its handshake.
//!
//! Ciphertext: the syscalls a goroutine makes inside one of these calls carry its
//! records, and are not sent (`inner_syscall`, keyed by the goroutine read at fsbase-8
//! as in net.rs's `go_first_reader`). That keeps ciphertext of every record out of the
//! ring and names the socket without knowing the `net.Conn`'s type; so do the handshake's
//! own syscalls. On kernels whose BTF gives no fsbase the ciphertext still reaches the
//! agent: the tracker marks such a socket TLS (`looks_like_tls`) and, once plaintext
//! arrives for it from these probes, ignores its socket bytes (`Tls::Plain`), so
//! correctness does not rest on this filter.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use periscope_common::*;

use crate::common::*;
use crate::go::{read_ptr, CONN_NETFD, GO_CONN_TYPES, GO_PROCS, ITAB_FUN0};

/// A Read or Write in progress on a goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoTlsCall {
    /// The `*tls.Conn`.
    conn: u64,
    buf: u64,
    len: u64,
    enter_ns: u64,
    /// The goroutine's `stack.lo` at entry when `buf` lies in its stack, else 0: a stack
    /// that grows during the call is copied elsewhere, and `buf` then points at the old
    /// one.
    stack_lo: u64,
    /// The socket: from the `net.Conn` walk at entry or the call's own syscall;
    /// [`NO_FD`] until known.
    fd: u32,
    /// [`DIR_INGRESS`] (Read) or [`DIR_EGRESS`] (Write).
    direction: u32,
}

/// `[tgid, g] -> call`. An LRU: a goroutine that never reaches a RET (it panicked, or
/// the process was detached mid-call) leaves an entry that is pushed out, never a leak
/// beyond the map's size.
#[map]
static GOTLS_CALLS: LruHashMap<[u64; 2], GoTlsCall> = LruHashMap::with_max_entries(16_384, 0);

/// `[tgid, *tls.Conn] -> fd`, for calls served from the connection's buffer (no
/// syscall) whose `net.Conn` cannot be walked.
#[map]
static GOTLS_CONN_FD: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(65_536, 0);

/// `[tgid, g] -> *tls.Conn` while the goroutine runs the connection's handshake
/// (`serverHandshake` or `clientHandshake`, run once by the first `Handshake`, Read or
/// Write): its syscalls name the socket before any data moves, which a `net.Conn` that
/// cannot be walked needs when the first request arrives with the handshake's last
/// record and the first Read makes no syscall. An LRU, like `GOTLS_CALLS`.
#[map]
static GOTLS_HANDSHAKES: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(16_384, 0);

/// How many `net.Conn` interface values deep the socket is looked for: the `tls.Conn`'s
/// own, then wrappers (a `tls.Conn` over a user type embedding a `*net.TCPConn`...).
const MAX_CONN_DEPTH: usize = 4;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> &pt_regs {
    unsafe { &*ctx.regs }
}

/// The socket fd behind the `net.Conn` interface value at `iface`. Registered types are
/// followed by what they are; any other dynamic type is taken as a struct whose first
/// field is an embedded `net.Conn` (the usual wrapper). A wrong guess costs nothing: the
/// next step must land on an itab whose `Close` the agent registered, or the walk fails.
#[inline(always)]
fn walk_fd(tgid: u32, info: &GoProcInfo, mut iface: u64) -> Result<u32, i64> {
    // The netFD offsets are set (with the net/http ones) only when all are known.
    if info.http_conn_rwc_off == 0 {
        return Err(0);
    }
    for _ in 0..MAX_CONN_DEPTH {
        let itab = read_ptr(iface)?;
        let data = read_ptr(iface + 8)?;
        let close = read_ptr(itab + ITAB_FUN0)?;
        let kind = unsafe { GO_CONN_TYPES.get(&[tgid as u64, close]).copied() }.unwrap_or(0);
        match kind {
            CONN_NETFD => {
                let netfd = read_ptr(data)?;
                let at = netfd + info.netfd_pfd_off as u64 + info.poll_fd_sysfd_off as u64;
                // Sysfd is an int; -1 once the fd is closed.
                let fd = unsafe { bpf_probe_read_user(at as *const i64) }?;
                if !(0..=i32::MAX as i64).contains(&fd) {
                    return Err(0);
                }
                return Ok(fd as u32);
            }
            // A tls.Conn starts with the net.Conn it wraps (CONN_TLS); so, by guess,
            // does any other type.
            _ => iface = data,
        }
    }
    Err(0)
}

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(info) = (unsafe { GO_PROCS.get(&tgid).copied() }) else {
        return 0;
    };
    let r = regs(ctx);
    let (conn, buf, len, g) = (r.rax, r.rbx, r.rcx, r.r14);
    if conn == 0 || g == 0 || len == 0 {
        return 0;
    }
    // `g.stack` is g's first field: lo, hi.
    let lo = read_ptr(g).unwrap_or(0);
    let hi = read_ptr(g + 8).unwrap_or(0);
    let stack_lo = if buf >= lo && buf < hi { lo } else { 0 };
    let call = GoTlsCall {
        conn,
        buf,
        len,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        stack_lo,
        fd: walk_fd(tgid, &info, conn).unwrap_or(NO_FD),
        direction,
    };
    let _ = GOTLS_CALLS.insert(&[tgid as u64, g], &call, 0);
    0
}

/// Entry of `crypto/tls.(*Conn).Read(c, b)`.
#[uprobe]
pub fn gotls_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS)
}

/// Entry of `crypto/tls.(*Conn).Write(c, b)`.
#[uprobe]
pub fn gotls_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS)
}

/// Entry of `crypto/tls.(*Conn).serverHandshake(c, ctx)` and `clientHandshake`.
#[uprobe]
pub fn gotls_handshake_enter(ctx: ProbeContext) -> u32 {
    let tgid = bpf_get_current_pid_tgid() >> 32;
    if unsafe { GO_PROCS.get(&(tgid as u32)).is_none() } {
        return 0;
    }
    let r = regs(&ctx);
    // Copied out first: a map value must not point into the context (verifier).
    let (conn, g) = (r.rax, r.r14);
    if conn != 0 && g != 0 {
        // A new handshake is a new connection: a `tls.Conn` freed and allocated again
        // at the same address must not keep the socket of the old one.
        let _ = GOTLS_CONN_FD.remove(&[tgid, conn]);
        let _ = GOTLS_HANDSHAKES.insert(&[tgid, g], &conn, 0);
    }
    0
}

/// Each RET of `serverHandshake` and `clientHandshake`.
#[uprobe]
pub fn gotls_handshake_ret(ctx: ProbeContext) -> u32 {
    let tgid = bpf_get_current_pid_tgid() >> 32;
    let _ = GOTLS_HANDSHAKES.remove(&[tgid, regs(&ctx).r14]);
    0
}

/// Each RET of Read and of Write: RAX is the byte count.
#[uprobe]
pub fn gotls_ret(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u64;
    let r = regs(&ctx);
    let (n, g) = (r.rax as i64, r.r14);
    let key = [tgid, g];
    let Some(call) = (unsafe { GOTLS_CALLS.get(&key).copied() }) else {
        return 0;
    };
    let _ = GOTLS_CALLS.remove(&key);
    if n <= 0 || n as u64 > call.len {
        return 0;
    }
    if call.stack_lo != 0 && read_ptr(g).unwrap_or(0) != call.stack_lo {
        // The buffer moved with the goroutine's stack: its old place may hold anything
        // now. Missing beats wrong (counted with the payloads that could not be read).
        count(STAT_READ_ERRORS);
        return 0;
    }
    let fd = crate::tls::socket_of(&GOTLS_CONN_FD, [tgid, call.conn], call.fd);
    crate::tls::emit_plaintext(pid_tgid, fd, call.buf, n as u64, call.direction, call.enter_ns);
    0
}

/// Called by the data syscalls on a traced socket of a Go process: whether the calling
/// goroutine is inside a Read or Write of a `tls.Conn` (its bytes are then ciphertext,
/// and the caller sends nothing for the syscall). The call learns its socket from it.
#[inline(always)]
pub fn inner_syscall(pid_tgid: u64, fd: u32) -> bool {
    let tgid = pid_tgid >> 32;
    if unsafe { GO_PROCS.get(&(tgid as u32)).is_none() } {
        return false;
    }
    let fs = crate::task::fsbase();
    if fs < 8 {
        return false;
    }
    let Ok(g) = (unsafe { bpf_probe_read_user((fs - 8) as *const u64) }) else {
        return false;
    };
    if g == 0 {
        return false;
    }
    // A goroutine that left a call without reaching a RET (a panic) leaves an entry
    // until the LRU drops it or the goroutine (or a new one reusing its g) makes the
    // next call: a syscall on another socket than the call's is not the call's.
    let key = [tgid, g];
    if let Some(call) = GOTLS_CALLS.get_ptr_mut(&key) {
        unsafe {
            if (*call).fd == NO_FD {
                (*call).fd = fd;
            }
            return (*call).fd == fd;
        }
    }
    if let Some(conn) = unsafe { GOTLS_HANDSHAKES.get(&key).copied() } {
        let conn_key = [tgid, conn];
        return match unsafe { GOTLS_CONN_FD.get(&conn_key).copied() } {
            Some(known) => known == fd,
            None => GOTLS_CONN_FD.insert(&conn_key, &fd, 0).is_ok(),
        };
    }
    false
}
