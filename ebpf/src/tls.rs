//! OpenSSL plaintext: uprobes at the entry of `SSL_read`, `SSL_read_ex`, `SSL_write` and
//! `SSL_write_ex` remember the buffer, a uretprobe at their return copies the bytes that
//! really moved, exactly as a read/write syscall's exit does for a plain socket.
//!
//! OpenSSL is C code, so uretprobes are safe here (they are never put on Go code).
//! Attached once per library file for every process; each program first checks that the
//! caller is traced, so other processes pay one hash lookup per call.
//!
//! Which socket: the read/write syscall the library makes on this thread inside the call
//! names it (`inner_syscall`, called from the syscall tracepoints). That syscall's own
//! bytes are ciphertext: the socket classifier (classify.rs) finds them TLS and sends
//! only their count. A call served from OpenSSL's buffer makes no
//! syscall; the socket learnt for the same `SSL*` earlier names it then.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use periscope_common::*;

use crate::common::*;

/// An `SSL_*` call in progress on a thread, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsCall {
    /// The `SSL*`.
    ssl: u64,
    buf: u64,
    /// `SSL_*_ex`: where the library stores the byte count (0 for the plain calls,
    /// which return it).
    count_ptr: u64,
    enter_ns: u64,
    /// The socket the call's own syscall used, [`NO_FD`] until one is made.
    fd: u32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    direction: u32,
}

#[map]
static TLS_CALLS: HashMap<u64, TlsCall> = HashMap::with_max_entries(16_384, 0);

/// `[tgid, SSL*] -> fd`, learnt from `SSL_set_fd` and from the syscalls made inside
/// calls on that `SSL*`.
#[map]
static TLS_SSL_FD: LruHashMap<[u64; 2], u32> = LruHashMap::with_max_entries(65_536, 0);

/// An `SSL_do_handshake` in progress on a thread (`SSL_accept` and `SSL_connect` call
/// it): pid_tgid -> `SSL*`. Its syscalls name the socket before any data moves, which
/// matters when the first request is read into OpenSSL's buffer by the handshake
/// itself and `SSL_read` then makes no syscall.
#[map]
static TLS_HANDSHAKES: HashMap<u64, u64> = HashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u32, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let count_ptr = if ex { ctx.arg::<u64>(3).unwrap_or(0) } else { 0 };
    let call = TlsCall {
        ssl,
        buf,
        count_ptr,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        fd: NO_FD,
        direction,
    };
    if TLS_CALLS.insert(&pid_tgid, &call, 0).is_err() {
        count(STAT_STASH_FULL);
    }
    0
}

#[uprobe]
pub fn tls_read_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, false)
}

#[uprobe]
pub fn tls_read_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_INGRESS, true)
}

#[uprobe]
pub fn tls_write_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, false)
}

#[uprobe]
pub fn tls_write_ex_enter(ctx: ProbeContext) -> u32 {
    enter(&ctx, DIR_EGRESS, true)
}

/// `SSL_set_fd(ssl, fd)`: the socket of an `SSL*`, straight from its owner.
#[uprobe]
pub fn tls_set_fd(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        let _ = TLS_SSL_FD.insert(&[pid_tgid >> 32, ssl], &(fd as u32), 0);
    }
    0
}

#[uprobe]
pub fn tls_handshake_enter(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    if let Some(ssl) = ctx.arg::<u64>(0) {
        if TLS_HANDSHAKES.insert(&pid_tgid, &ssl, 0).is_err() {
            count(STAT_STASH_FULL);
        }
    }
    0
}

#[uretprobe]
pub fn tls_handshake_ret(_ctx: RetProbeContext) -> u32 {
    let _ = TLS_HANDSHAKES.remove(&bpf_get_current_pid_tgid());
    0
}

/// The return of any of the four data calls.
#[uretprobe]
pub fn tls_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = (unsafe { TLS_CALLS.get(&pid_tgid).copied() }) else {
        return 0;
    };
    let _ = TLS_CALLS.remove(&pid_tgid);
    // All four return a C int: the upper half of the register is not part of it (an
    // SSL_read that failed with -1 leaves 0x00000000ffffffff there, which read as an
    // i64 was a 4 GiB read of whatever the buffer held).
    let rv = ctx.ret::<u64>() as u32 as i32;
    // SSL_read/SSL_write return the byte count (<= 0 on error or "want more");
    // the _ex variants return 1 and store it.
    let moved: u64 = if call.count_ptr == 0 {
        if rv <= 0 {
            return 0;
        }
        rv as u64
    } else {
        if rv != 1 {
            return 0;
        }
        match unsafe { bpf_probe_read_user(call.count_ptr as *const u64) } {
            Ok(n) => n,
            Err(_) => return 0,
        }
    };
    if moved == 0 {
        return 0;
    }
    let fd = socket_of(&TLS_SSL_FD, [pid_tgid >> 32, call.ssl], call.fd);
    emit_plaintext(pid_tgid, fd, call.buf, moved, call.direction, call.enter_ns);
    0
}

/// The socket of a TLS connection object (`[tgid, object address]`): `fd` when the call
/// learnt it (remembered for later calls), else the one remembered, else `NO_FD`.
/// Shared by OpenSSL's `SSL*` and Go's `*tls.Conn`.
#[inline(always)]
pub fn socket_of(map: &LruHashMap<[u64; 2], u32>, key: [u64; 2], fd: u32) -> u32 {
    if fd != NO_FD {
        let _ = map.insert(&key, &fd, 0);
        fd
    } else {
        unsafe { map.get(&key).copied() }.unwrap_or(NO_FD)
    }
}

/// Sends `n` plaintext bytes at `buf`, moved by a TLS call (OpenSSL or Go crypto/tls)
/// on socket `fd`, as the data events syscalls make, with `SYS_SSL_READ`/`SYS_SSL_WRITE`
/// ids: to the tracker both libraries are "plaintext of a TLS socket".
#[inline(always)]
pub fn emit_plaintext(pid_tgid: u64, fd: u32, buf: u64, n: u64, direction: u32, enter_ns: u64) {
    let syscall = if direction == DIR_INGRESS {
        SYS_SSL_READ
    } else {
        SYS_SSL_WRITE
    };
    let mut s = crate::net::Stash::new(syscall, fd, buf, 0);
    s.enter_ns = enter_ns;
    // Plaintext is always captured, and says nothing about the socket's own class.
    s.class = CLASS_HTTP1 as u32;
    // A socket seen from its start: its requests are framed in the plaintext.
    if fd != NO_FD {
        let key = sock_key((pid_tgid >> 32) as u32, fd);
        if let Some(info) = unsafe { crate::net::SOCKS.get(&key) } {
            if crate::h2::tls_plaintext(pid_tgid, &s, n, direction, info.generation as u32) {
                return;
            }
            if crate::frame::emit_framed(pid_tgid, &s, n, direction, info.generation as u32) {
                return;
            }
        }
    }
    if crate::net::try_emit_data::<false>(pid_tgid, &s, n, direction).is_err() {
        count(STAT_READ_ERRORS);
    }
}

/// Called by the data syscalls on a traced socket: inside an `SSL_*` call on this
/// thread, the syscall names the call's socket. Returns whether that is the case.
#[inline(always)]
pub fn inner_syscall(pid_tgid: u64, fd: u32) -> bool {
    if let Some(call) = TLS_CALLS.get_ptr_mut(&pid_tgid) {
        unsafe { (*call).fd = fd };
        return true;
    }
    if let Some(ssl) = unsafe { TLS_HANDSHAKES.get(&pid_tgid).copied() } {
        let _ = TLS_SSL_FD.insert(&[pid_tgid >> 32, ssl], &fd, 0);
        return true;
    }
    false
}
