//! Request framing on the capture path (see `periscope_common::frame` for why and how):
//! the framer's state per request stream, and the `bpf_loop` that cuts a syscall into
//! the chunks the agent gets.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use periscope_common::{frame::*, *};

use crate::{common::*, net::Stash};

/// Non-zero when the kernel has `bpf_loop` (5.17+) and framing is on. Patched at load;
/// with 0 the verifier never walks the `bpf_loop` call (a constant of a frozen map), so
/// older kernels still load the data programs, which then capture every syscall from
/// its first byte.
#[no_mangle]
static FRAMING: u32 = 0;

/// One request stream's framing: a server socket's ingress, a client socket's egress.
#[repr(C)]
#[derive(Clone, Copy)]
struct Stream {
    /// The socket's generation (`SockInfo::generation`): a reused fd is another socket.
    generation: u32,
    /// [`FRAMED`], [`LOST`] (captured from each syscall's first byte, for good) or
    /// [`PLAINTEXT`].
    state: u32,
    /// Bytes the stream has moved so far.
    pos: u64,
    framer: Framer,
}

/// The stream's requests are framed from the socket's syscalls.
const FRAMED: u32 = 0;
/// Framing was lost: syscalls are captured from their first byte, for good.
const LOST: u32 = 1;
/// A TLS socket: its requests are framed in the plaintext its TLS library moves
/// (OpenSSL, Go crypto/tls), counted from the first plaintext byte; its ciphertext
/// syscalls no longer touch the stream.
const PLAINTEXT: u32 = 2;

/// The generation to pass [`emit_framed`] for a syscall (its stash carries it).
pub(crate) const SYSCALL: u32 = u32::MAX;

/// Request streams of sockets the kernel saw from their first byte (accepted or
/// connected), keyed by [`stream_key`]. An LRU: an evicted stream is captured from each
/// syscall's start, as one framing was lost for.
#[map]
static STREAMS: LruHashMap<u64, Stream> = LruHashMap::with_max_entries(32_768, 0);

/// The syscall being cut, between `bpf_loop` steps.
#[repr(C)]
struct Cut {
    stash: Stash,
    pid_tgid: u64,
    direction: u32,
    /// The socket's class and generation as the data events carry them; the first
    /// window classifies an unseen socket.
    class: u32,
    seg: Segmenter,
}

#[map]
static CUT: PerCpuArray<Cut> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&FRAMING) != 0 }
}

/// Key of a socket's request stream: `sock_key` with bit 31 for egress (fds are far
/// below 2^31).
#[inline(always)]
fn stream_key(key: u64, direction: u32) -> u64 {
    key | ((direction as u64 & 1) << 31)
}

/// A socket was accepted (`direction` = ingress carries requests) or connected
/// (egress): its request stream starts now, at a request.
#[inline(always)]
pub(crate) fn start(key: u64, generation: u16, direction: u32) {
    if !enabled() {
        return;
    }
    let s = Stream {
        generation: generation as u32,
        state: FRAMED,
        pos: 0,
        framer: Framer::at(0),
    };
    let _ = STREAMS.insert(&stream_key(key, direction), &s, 0);
}

/// Forgets a closed socket.
#[inline(always)]
pub(crate) fn forget(key: u64) {
    let _ = STREAMS.remove(&stream_key(key, DIR_INGRESS));
    let _ = STREAMS.remove(&stream_key(key, DIR_EGRESS));
}

/// The framed request stream a data syscall (or a TLS call) of `total` bytes belongs
/// to, with its position advanced past it and its offset in it; `None` when the socket's
/// requests are not framed (not seen from the start, lost, a reused fd). `tls_generation`
/// is [`SYSCALL`] for a syscall, else the socket's generation for a TLS call's plaintext:
/// that claims a stream no syscall has moved bytes of (Go's ciphertext syscalls are not
/// reported) or one whose first bytes were TLS.
#[inline(always)]
fn stream_of(
    pid_tgid: u64,
    stash: &Stash,
    total: u64,
    direction: u32,
    tls_generation: u32,
) -> Option<(*mut Stream, u64)> {
    if !enabled() {
        return None;
    }
    let key = stream_key(sock_key((pid_tgid >> 32) as u32, stash.fd), direction);
    let st = STREAMS.get_ptr_mut(&key)?;
    // SAFETY: a map value; concurrent syscalls on one socket only misplace windows.
    unsafe {
        if tls_generation == SYSCALL {
            if (*st).state != FRAMED || (*st).generation != stash.class >> 16 {
                return None;
            }
        } else {
            if (*st).generation != tls_generation
                || (*st).state == LOST
                || ((*st).state == FRAMED && (*st).pos != 0)
            {
                return None;
            }
            (*st).state = PLAINTEXT;
        }
        let pos = (*st).pos;
        (*st).pos = pos + total;
        Some((st, pos))
    }
}

/// Whether a TLS socket of `generation`, seen from its start, has moved no plaintext
/// yet in its request stream (its first TLS call is under way, in either direction).
#[inline(always)]
pub(crate) fn plaintext_unclaimed(pid_tgid: u64, fd: u32, generation: u32) -> bool {
    if !enabled() {
        return false;
    }
    let key = sock_key((pid_tgid >> 32) as u32, fd);
    for direction in [DIR_INGRESS, DIR_EGRESS] {
        // SAFETY: a map value, read only.
        if let Some(st) = unsafe { STREAMS.get(&stream_key(key, direction)) } {
            return st.generation == generation && st.state != LOST && st.pos == 0;
        }
    }
    false
}

/// A TLS socket's plaintext is HTTP/2: its request stream is not framed as HTTP/1.
#[inline(always)]
pub(crate) fn lose_plaintext(pid_tgid: u64, fd: u32) {
    let key = sock_key((pid_tgid >> 32) as u32, fd);
    for direction in [DIR_INGRESS, DIR_EGRESS] {
        if let Some(st) = STREAMS.get_ptr_mut(&stream_key(key, direction)) {
            // SAFETY: a map value.
            unsafe { (*st).state = LOST };
        }
    }
}

/// A syscall whose bytes are not cut: vectored ones (the iovec walk per window is more
/// than the verifier affords inside the `bpf_loop` callback), sendfile (its bytes are
/// never copied) and receives that discard what they consume (`MSG_TRUNC`). If it moved
/// a framed request stream's bytes, only a body may pass so; else the stream's framing
/// is lost. Returns true when the syscall was reported here.
#[inline(never)]
pub(crate) fn uncut(pid_tgid: u64, stash: &Stash, total: u64, direction: u32) -> bool {
    let Some((st, pos)) = stream_of(pid_tgid, stash, total, direction, SYSCALL) else {
        return false;
    };
    // SAFETY: as in `stream_of`.
    let st = unsafe { &mut *st };
    if st.framer.need >= pos + total {
        crate::net::emit_count(pid_tgid, stash, total, direction);
        return true;
    }
    st.state = LOST;
    count(STAT_FRAME_LOST);
    false
}

/// Reports a read, recvfrom, write or sendto of `total` bytes (`tls_generation`
/// [`SYSCALL`]), or a TLS call's plaintext (the socket's generation), if it belongs to a
/// framed request stream. Returns false when it does not (the caller captures it from
/// its start).
#[inline(never)]
pub(crate) fn emit_framed(
    pid_tgid: u64,
    stash: &Stash,
    total: u64,
    direction: u32,
    tls_generation: u32,
) -> bool {
    let Some((st, pos)) = stream_of(pid_tgid, stash, total, direction, tls_generation) else {
        return false;
    };
    // SAFETY: as in `stream_of`.
    let st = unsafe { &mut *st };
    if st.framer.need >= pos + total {
        // Body to the end: its size is all the agent needs.
        crate::net::emit_count(pid_tgid, stash, total, direction);
        return true;
    }
    let (Some(cut), Some(buf)) = (CUT.get_ptr_mut(0), crate::net::scratch()) else {
        return false;
    };
    let mut class = stash.class;
    if class as u8 == CLASS_UNSEEN {
        // The socket's first bytes: classified here, not in the callback (the
        // classifier would be verified again for every path through it).
        let n = if total < MAX_HEAD as u64 { total } else { MAX_HEAD as u64 };
        if crate::net::copy_plain::<{ crate::net::HEAD_MASK }>(buf, 0, 0, n, stash).is_err() {
            count(STAT_READ_ERRORS);
            return false;
        }
        let c = crate::net::classify_first(pid_tgid, stash, buf, n as usize, direction == DIR_EGRESS);
        class = (class & 0xffff_0000) | c as u32;
        if c == CLASS_HTTP2 {
            // Not HTTP/1: the capture path classifies it again and follows its frames.
            st.state = LOST;
            return false;
        }
        if !class_captures(c) {
            count_n(STAT_PAYLOAD_SUPPRESSED, total);
            if c == CLASS_TLS {
                // Its requests come as the TLS library's plaintext, from its first byte.
                st.state = PLAINTEXT;
                st.pos = 0;
                st.framer = Framer::at(0);
            } else {
                st.state = LOST;
            }
            crate::net::emit_count_as(pid_tgid, stash, total, direction, class);
            return true;
        }
    }
    unsafe {
        (*cut).stash = *stash;
        (*cut).pid_tgid = pid_tgid;
        (*cut).direction = direction;
        (*cut).class = class;
        (*cut).seg = Segmenter::new(pos, total, st.framer);
    }
    let _ = unsafe { bpf_loop(MAX_SEGMENTER_STEPS, step as *mut c_void, core::ptr::null_mut(), 0) };
    let (lost, segments, framer) = unsafe { ((*cut).seg.lost, (*cut).seg.segments, (*cut).seg.framer) };
    st.framer = framer;
    if lost != 0 {
        st.state = LOST;
        count(STAT_FRAME_LOST);
    }
    if segments > 0 {
        count_n(STAT_FRAME_SPLITS, segments as u64);
    }
    true
}

/// One `bpf_loop` iteration: a step of the segmenter in `CUT`.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(cut), Some(buf)) = (CUT.get_ptr_mut(0), crate::net::scratch()) else {
        return 1;
    };
    let mut cap = KernelCapture { cut, buf };
    // SAFETY: per-CPU map values, used by this program run only.
    let go_on = unsafe { (*cut).seg.step(&mut cap) };
    if go_on { 0 } else { 1 }
}

/// The capture path as the segmenter sees it.
struct KernelCapture {
    cut: *mut Cut,
    buf: *mut DataEventBuf,
}

impl Capture for KernelCapture {
    #[inline(always)]
    fn window(&mut self, from: u64, n: u64) -> bool {
        // SAFETY: per-CPU map values.
        let cut = unsafe { &mut *self.cut };
        if crate::net::copy_plain::<{ crate::net::HEAD_MASK }>(self.buf, 0, from, n, &cut.stash).is_err() {
            count(STAT_READ_ERRORS);
            return false;
        }
        true
    }

    #[inline(always)]
    fn payload(&self) -> &[u8; SCRATCH_PAYLOAD] {
        // SAFETY: per-CPU map value.
        unsafe { &(*self.buf).payload }
    }

    #[inline(always)]
    fn emit(&mut self, from: u64, to: u64, head: u64, tail: bool) {
        // SAFETY: per-CPU map values.
        let cut = unsafe { &mut *self.cut };
        let total = cut.seg.total;
        let len = to - from;
        let mut t = 0;
        if tail && len > head {
            t = if len - head < MAX_TAIL as u64 {
                len - head
            } else {
                MAX_TAIL as u64
            };
            if crate::net::copy_plain::<{ crate::net::TAIL_MASK }>(
                self.buf,
                head as usize,
                total - t,
                t,
                &cut.stash,
            )
            .is_err()
            {
                t = 0;
            }
        }
        crate::net::output_data(
            cut.pid_tgid,
            &cut.stash,
            self.buf,
            len,
            cut.direction,
            head as usize,
            t as usize,
            cut.class,
        );
    }

    #[inline(always)]
    fn emit_run(&mut self, from: u64, to: u64, run: u32) {
        // SAFETY: per-CPU map value.
        let cut = unsafe { &*self.cut };
        crate::net::emit_count_as(cut.pid_tgid, &cut.stash, to - from, cut.direction, cut.class | run);
    }
}
