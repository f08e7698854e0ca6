//! HTTP/2 framing on the capture path (see `periscope_common::h2frame`): each direction's
//! frame position per socket, set when the socket is classified HTTP/2 on its first
//! syscall, and the `bpf_loop` that cuts a later syscall into chunks at its DATA
//! payloads.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_probe_read_user, generated::bpf_loop},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use periscope_common::{h2frame::*, *};

use crate::{common::*, net::Stash};

/// One direction of an HTTP/2 socket.
#[repr(C)]
#[derive(Clone, Copy)]
struct Dir {
    /// The socket's generation: a reused fd is another socket.
    generation: u32,
    /// Non-zero: a TLS socket's direction whose first plaintext is still to come, and
    /// must start HTTP/2's way to be followed (see [`tls_plaintext`]).
    waiting: u32,
    pos: H2Pos,
}

/// Directions of HTTP/2 sockets whose frames are followed, keyed like the request
/// framing's streams (`sock_key` with bit 31 for egress). An LRU: an evicted direction
/// is captured from each syscall's start, as a lost one is.
#[map]
static H2_DIRS: LruHashMap<u64, Dir> = LruHashMap::with_max_entries(16_384, 0);

/// The syscall being cut, between `bpf_loop` steps.
#[repr(C)]
struct Cut {
    stash: Stash,
    pid_tgid: u64,
    direction: u32,
    class: u32,
    /// Iovecs (readv, writev, recvmsg, sendmsg) rather than one buffer.
    vectored: u32,
    chunks: u32,
    cut: H2Cut,
}

#[map]
static H2_CUT: PerCpuArray<Cut> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn dir_key(pid_tgid: u64, fd: u32, direction: u32) -> u64 {
    sock_key((pid_tgid >> 32) as u32, fd) | ((direction as u64 & 1) << 31)
}

/// Both directions of a socket just classified HTTP/2 on its first syscall
/// (`direction`, its first `head` bytes in `payload`), followed from their first byte:
/// the client's side starts with the preface.
#[inline(never)]
pub(crate) fn start(pid_tgid: u64, s: &Stash, head: usize, direction: u32) {
    if !crate::frame::enabled() {
        return;
    }
    let Some(buf) = crate::net::scratch() else {
        return;
    };
    // SAFETY: per-CPU map value.
    let payload = unsafe { (*buf).payload.as_ptr() };
    let generation = s.class >> 16;
    // SAFETY: the first bytes of the scratch payload.
    let client = head >= 3 && unsafe { *payload == b'P' && *payload.add(1) == b'R' && *payload.add(2) == b'I' };
    for (d, preface) in [(direction, client), (direction ^ 1, !client)] {
        let dir = Dir {
            generation,
            waiting: 0,
            pos: H2Pos::start(preface),
        };
        let _ = H2_DIRS.insert(&dir_key(pid_tgid, s.fd, d), &dir, 0);
    }
}

/// Frames looked at in a socket's first syscall (preface, SETTINGS, WINDOW_UPDATE,
/// HEADERS...): where a direction's first syscall ends in its frames must be found
/// among the bytes captured of it.
const FIRST_FRAMES: u32 = 12;

/// The socket was just classified HTTP/2 on the first syscall it made (`direction`),
/// whose first `head` of `total` bytes are in `payload`. The other direction has moved
/// nothing yet: it is followed from its first byte (the client's side starts with the
/// preface). This one is followed from the end of this syscall, if the frames in the
/// captured bytes say where that is.
#[inline(never)]
pub(crate) fn classified(pid_tgid: u64, s: &Stash, head: usize, total: u64, direction: u32) {
    if !crate::frame::enabled() {
        return;
    }
    let Some(buf) = crate::net::scratch() else {
        return;
    };
    // SAFETY: per-CPU map value.
    let payload = unsafe { (*buf).payload.as_ptr() };
    let generation = s.class >> 16;
    let byte = |i: u64| -> u8 {
        // SAFETY: masked into the scratch payload.
        unsafe { *payload.add((i as usize) & crate::net::HEAD_MASK) }
    };
    let client = head >= 3 && byte(0) == b'P' && byte(1) == b'R' && byte(2) == b'I';
    let other = Dir {
        generation,
        waiting: 0,
        pos: H2Pos::start(!client),
    };
    let _ = H2_DIRS.insert(&dir_key(pid_tgid, s.fd, direction ^ 1), &other, 0);
    // Walk this syscall's frames in the captured head.
    let mut at: u64 = if client { H2_PREFACE_LEN as u64 } else { 0 };
    let mut last = at;
    let mut i = 0;
    while i < FIRST_FRAMES {
        if at >= total {
            break;
        }
        if at + 9 > head as u64 {
            // A frame header past what was captured: the position is unknown.
            count(STAT_H2_LOST);
            return;
        }
        let len = ((byte(at) as u64) << 16) | ((byte(at + 1) as u64) << 8) | byte(at + 2) as u64;
        last = at;
        at += 9 + len;
        i += 1;
    }
    if at < total {
        count(STAT_H2_LOST);
        return;
    }
    let mut pos = H2Pos::start(false);
    if at > total {
        // The rest of the last frame's payload is still to come: as `H2Cut` would
        // have left it.
        let kind = byte(last + 3);
        let flags = byte(last + 4);
        let len = at - last - 9;
        let rest = at - total;
        let done = len - rest;
        pos.copy = 1;
        pos.left = rest as u32;
        if kind == 0 && flags & 0x8 == 0 && len > H2_SMALL_DATA as u64 {
            if done < H2_DATA_PREFIX as u64 {
                pos.left = (H2_DATA_PREFIX as u64 - done) as u32;
                pos.then = (len - H2_DATA_PREFIX as u64) as u32;
            } else {
                pos.copy = 0;
            }
        }
    }
    let this = Dir {
        generation,
        waiting: 0,
        pos,
    };
    let _ = H2_DIRS.insert(&dir_key(pid_tgid, s.fd, direction), &this, 0);
}

/// Whether a TLS call's first plaintext bytes start HTTP/2, by the classifier's rules:
/// 1 for the client's preface, 2 for a server's SETTINGS frame (its connection preface,
/// which it may write before it reads the client's), 0 for anything else.
#[inline(never)]
fn plaintext_starts_h2(s: &Stash, total: u64) -> u32 {
    let Some(buf) = crate::net::scratch() else {
        return 0;
    };
    let n = if total < CLASSIFY_LEN as u64 { total } else { CLASSIFY_LEN as u64 };
    if crate::net::copy_plain::<{ crate::net::HEAD_MASK }>(buf, 0, 0, n, s).is_err() {
        return 0;
    }
    // SAFETY: per-CPU map value.
    let payload = unsafe { &(*buf).payload };
    if crate::classify::decide(payload, n as usize, ROLE_SERVER) != CLASS_HTTP2 {
        return 0;
    }
    if payload[0] == b'P' { 1 } else { 2 }
}

/// A TLS call's plaintext (OpenSSL, Go crypto/tls) of `total` bytes on a socket of
/// `generation` seen from its start: HTTP/2 frames are followed in it as in a cleartext
/// socket's syscalls, so that a write of many frames (nginx and Go coalesce a dozen
/// streams' HEADERS and DATA into one) is cut at its DATA payloads instead of losing the
/// frame headers past the captured head. A socket's first plaintext decides: if it is
/// HTTP/2's (the client's preface, or a server's SETTINGS written before the preface is
/// read), that direction is followed from its first byte, and the other direction from
/// its own first plaintext, if that starts HTTP/2's way too. Returns whether the call
/// was reported.
#[inline(never)]
pub(crate) fn tls_plaintext(pid_tgid: u64, s: &Stash, total: u64, direction: u32, generation: u32) -> bool {
    if !crate::frame::enabled() {
        return false;
    }
    let key = dir_key(pid_tgid, s.fd, direction);
    // As the data events of TLS calls carry it, with the socket's generation.
    let class = (generation << 16) | CLASS_HTTP1 as u32;
    if let Some(d) = H2_DIRS.get_ptr_mut(&key) {
        // SAFETY: a map value (see `emit_framed`).
        let d = unsafe { &mut *d };
        if d.generation != generation {
            return false;
        }
        if d.waiting != 0 {
            let kind = plaintext_starts_h2(s, total);
            if kind == 0 {
                let _ = H2_DIRS.remove(&key);
                return false;
            }
            d.pos = H2Pos::start(kind == 1);
            d.waiting = 0;
        }
        return emit_framed(pid_tgid, s, class, total, direction);
    }
    if !crate::frame::plaintext_unclaimed(pid_tgid, s.fd, generation) {
        return false;
    }
    let kind = plaintext_starts_h2(s, total);
    if kind == 0 {
        return false;
    }
    // Its requests are HTTP/2 streams: the request framing stops here for good, so a
    // direction lost later is never picked up again mid-stream.
    crate::frame::lose_plaintext(pid_tgid, s.fd);
    let this = Dir {
        generation,
        waiting: 0,
        pos: H2Pos::start(kind == 1),
    };
    let other = Dir {
        generation,
        waiting: 1,
        pos: H2Pos::start(kind != 1),
    };
    let _ = H2_DIRS.insert(&key, &this, 0);
    let _ = H2_DIRS.insert(&dir_key(pid_tgid, s.fd, direction ^ 1), &other, 0);
    emit_framed(pid_tgid, s, class, total, direction)
}

/// Forgets a closed socket.
#[inline(always)]
pub(crate) fn forget(key: u64) {
    let _ = H2_DIRS.remove(&key);
    let _ = H2_DIRS.remove(&(key | (1 << 31)));
}

/// A sendfile on an HTTP/2 socket (`total` bytes, never read): the followed direction
/// moves over them if they lie inside a DATA payload, else it is lost (its later
/// syscalls are captured from their start). The caller reports the byte count.
#[inline(never)]
pub(crate) fn skip(pid_tgid: u64, s: &Stash, total: u64, direction: u32) {
    if !crate::frame::enabled() {
        return;
    }
    let key = dir_key(pid_tgid, s.fd, direction);
    let Some(d) = H2_DIRS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a map value (see `emit_framed`).
    let d = unsafe { &mut *d };
    if d.generation != s.class >> 16 || d.waiting != 0 {
        return;
    }
    if !d.pos.skip(total) {
        count(STAT_H2_LOST);
        let _ = H2_DIRS.remove(&key);
    }
}

/// Reports a data syscall of an HTTP/2 socket (`class`: its class and generation as the
/// events carry them) as its frames say, if its direction is followed. Returns false
/// when it is not (the caller captures it from its start).
#[inline(never)]
pub(crate) fn emit_framed(pid_tgid: u64, s: &Stash, class: u32, total: u64, direction: u32) -> bool {
    if !crate::frame::enabled() {
        return false;
    }
    let key = dir_key(pid_tgid, s.fd, direction);
    let Some(d) = H2_DIRS.get_ptr_mut(&key) else {
        return false;
    };
    // SAFETY: a map value; concurrent syscalls on one socket direction only misplace
    // chunks, which the agent counts.
    let d = unsafe { &mut *d };
    if d.generation != class >> 16 {
        return false;
    }
    let Some(cut) = H2_CUT.get_ptr_mut(0) else {
        return false;
    };
    // Field by field: the structs are too large for the stack of this call chain.
    unsafe {
        (*cut).stash = *s;
        (*cut).pid_tgid = pid_tgid;
        (*cut).direction = direction;
        (*cut).class = class;
        // Iovecs (readv, writev, recvmsg, sendmsg) or one buffer.
        (*cut).vectored = u32::from(s.iovcnt != 0);
        (*cut).chunks = 0;
        let c = &mut (*cut).cut;
        c.pos = d.pos;
        c.remaining = total;
        c.piece = 0;
        c.lost = 0;
        c.base = 0;
        c.piece_left = 0;
        c.head = 0;
        c.gap = 0;
    }
    let _ = unsafe { bpf_loop(H2_MAX_STEPS, step as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: per-CPU map values, used by this program run only.
    unsafe {
        if (*cut).cut.remaining > 0 {
            if let Some(buf) = crate::net::scratch() {
                // Out of steps: the rest uncut, and the direction no longer followed.
                let mut cap = KernelCapture { cut, buf };
                (*cut).cut.out_of_steps(&mut cap);
            }
        }
    }
    // SAFETY: per-CPU map value.
    let cut = unsafe { &*cut };
    count_n(STAT_H2_SPLITS, cut.chunks as u64);
    if cut.cut.lost != 0 {
        count(STAT_H2_LOST);
        let _ = H2_DIRS.remove(&key);
    } else {
        d.pos = cut.cut.pos;
    }
    true
}

/// One `bpf_loop` iteration: a step of the cut in `H2_CUT`.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(cut), Some(buf)) = (H2_CUT.get_ptr_mut(0), crate::net::scratch()) else {
        return 1;
    };
    let mut cap = KernelCapture { cut, buf };
    // SAFETY: per-CPU map values, used by this program run only.
    let go_on = unsafe { (*cut).cut.step(&mut cap) };
    if go_on { 0 } else { 1 }
}

/// The capture path as the cut sees it.
struct KernelCapture {
    cut: *mut Cut,
    buf: *mut DataEventBuf,
}

impl H2Capture for KernelCapture {
    #[inline(always)]
    fn piece(&mut self, index: u32) -> Option<(u64, u64)> {
        // SAFETY: per-CPU map value.
        let cut = unsafe { &*self.cut };
        if cut.vectored == 0 {
            return if index == 0 {
                Some((cut.stash.ptr, cut.cut.remaining))
            } else {
                None
            };
        }
        if index as u64 >= cut.stash.iovcnt {
            return None;
        }
        let iov = cut.stash.ptr + index as u64 * 16;
        // SAFETY: user memory reads, checked by the helper.
        let base: u64 = unsafe { bpf_probe_read_user(iov as *const u64) }.ok()?;
        let len: u64 = unsafe { bpf_probe_read_user((iov + 8) as *const u64) }.ok()?;
        Some((base, len))
    }

    #[inline(always)]
    fn copy(&mut self, at: u64, src: u64, n: u64) -> bool {
        if crate::net::copy_user_at(self.buf, at as usize, n as usize, src).is_err() {
            count(STAT_READ_ERRORS);
            return false;
        }
        true
    }

    #[inline(always)]
    fn byte(&self, at: u64) -> u8 {
        // SAFETY: per-CPU map value; the index is masked into the payload.
        unsafe { (*self.buf).payload[(at as usize) & crate::net::HEAD_MASK] }
    }

    #[inline(always)]
    fn emit(&mut self, head: u64, total: u64) {
        emit_chunk(self.cut, self.buf, head, total);
    }
}

/// Sends one chunk. Not inlined: the event is built in this frame, not in the step's,
/// whose call chain (under the data program's own frame) must stay within 512 bytes.
#[inline(never)]
fn emit_chunk(cut: *mut Cut, buf: *mut DataEventBuf, head: u64, total: u64) {
    // SAFETY: per-CPU map value.
    let cut = unsafe { &mut *cut };
    cut.chunks += 1;
    crate::net::output_data(
        cut.pid_tgid,
        &cut.stash,
        buf,
        total,
        cut.direction,
        head as usize,
        0,
        cut.class,
    );
}
