//! Request framing on the capture path: where a syscall's capture window starts (see
//! `periscope_common::frame` for why and what the scan does).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use periscope_common::{frame::*, *};

use crate::common::*;

/// Non-zero when the kernel has `bpf_loop` (5.17+) and framing is on. Patched at load;
/// with 0 the verifier never walks the `bpf_loop` call (a constant of a frozen map), so
/// older kernels still load the data programs, which then capture every syscall from
/// its first byte.
#[no_mangle]
static FRAMING: u32 = 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct DirFrame {
    /// Bytes this direction has moved so far.
    pos: u64,
    /// Stream offset where the next request starts (valid unless `lost`).
    next: u64,
    lost: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Frame {
    /// The socket's generation (`SockInfo::generation`): a reused fd starts afresh.
    generation: u32,
    _pad: u32,
    dir: [DirFrame; 2],
}

/// Per socket (`sock_key`), both directions. An LRU: an evicted entry only means that
/// socket's next syscalls are captured from their start until one starts a request.
#[map]
static FRAMES: LruHashMap<u64, Frame> = LruHashMap::with_max_entries(65_536, 0);

/// The running scan, between `bpf_loop` steps.
#[map]
static SCAN: PerCpuArray<FrameScan> = PerCpuArray::with_max_entries(1, 0);

const LOST: DirFrame = DirFrame {
    pos: 0,
    next: 0,
    lost: 1,
    _pad: 0,
};

#[inline(always)]
fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&FRAMING) != 0 }
}

/// [`plan`]'s answer when the window is not to be scanned (it starts at byte 0).
pub(crate) const NO_SCAN: u64 = u64::MAX;

/// What a data syscall of `total` bytes on socket `key` should capture: returns the
/// offset where the capture window starts (a request may start there; the bytes before
/// it end the previous body), to be scanned after the capture, or [`NO_SCAN`]. Not
/// inlined, like [`scan`]: the data path's call chain is close to the 512-byte stack
/// limit (and the `bpf_loop` callback's frame counts on top of its caller's).
#[inline(never)]
pub(crate) fn plan(key: u64, generation: u32, dir: u32, total: u64) -> u64 {
    if !enabled() {
        return NO_SCAN;
    }
    let f = match FRAMES.get_ptr_mut(&key) {
        Some(f) if unsafe { (*f).generation } == generation => f,
        _ => {
            let fresh = Frame {
                generation,
                _pad: 0,
                dir: [LOST; 2],
            };
            if FRAMES.insert(&key, &fresh, 0).is_err() {
                return NO_SCAN;
            }
            match FRAMES.get_ptr_mut(&key) {
                Some(f) => f,
                None => return NO_SCAN,
            }
        }
    };
    let d = unsafe { &mut (*f).dir[(dir & 1) as usize] };
    let p = d.pos;
    d.pos = p + total;
    if d.lost == 0 {
        if d.next >= p + total {
            // All of it is body.
            return NO_SCAN;
        }
        if d.next >= p {
            return d.next - p;
        }
    }
    // Framing unknown: capture from the start, and frame again if a request starts
    // there.
    d.lost = 1;
    0
}

/// The syscall's bytes could not be captured: whatever they framed is unknown.
#[inline(always)]
pub(crate) fn lose(key: u64, dir: u32) {
    if let Some(f) = FRAMES.get_ptr_mut(&key) {
        unsafe { (*f).dir[(dir & 1) as usize].lost = 1 };
    }
}

/// Forgets a closed socket.
#[inline(always)]
pub(crate) fn forget(key: u64) {
    let _ = FRAMES.remove(&key);
}

/// One scan step (a `bpf_loop` callback): the state is in `SCAN`, the window in the
/// data path's scratch buffer.
#[inline(never)]
extern "C" fn step(_index: u64, _ctx: *mut c_void) -> i64 {
    let (Some(st), Some(buf)) = (SCAN.get_ptr_mut(0), crate::net::scratch()) else {
        return 1;
    };
    // SAFETY: per-CPU map values, not shared with another program run on this CPU.
    if unsafe { (*st).step(&(*buf).payload) } {
        0
    } else {
        1
    }
}

/// The window (`n` bytes at the start of the scratch payload, `rest` bytes of the
/// syscall from the window's start) was captured at a point where a request may start:
/// frame what starts there and remember where the next request starts.
#[inline(never)]
pub(crate) fn scan(key: u64, dir: u32, n: u64, rest: u64) {
    let (Some(st), Some(buf)) = (SCAN.get_ptr_mut(0), crate::net::scratch()) else {
        return;
    };
    let Some(f) = FRAMES.get_ptr_mut(&key) else {
        return;
    };
    let d = unsafe { &mut (*f).dir[(dir & 1) as usize] };
    let was_framed = d.lost == 0;
    // SAFETY: per-CPU scratch value.
    if n == 0 || !is_request_start(unsafe { &(*buf).payload }, 0, n) {
        // Not a request here (a response stream, a body's continuation): framing stays
        // unknown; a stream that was framed lost it.
        if was_framed {
            count(STAT_FRAME_LOST);
        }
        d.lost = 1;
        return;
    }
    unsafe { *st = FrameScan::new(n, rest) };
    // Every step moves at least one byte forward: n + 1 steps always finish.
    let _ = unsafe {
        bpf_loop(
            (MAX_HEAD + 8) as u32,
            step as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    let (outcome, next) = unsafe { ((*st).outcome, (*st).next) };
    if outcome == SCAN_DONE {
        // `d.pos` is already past this syscall: the window started `rest` bytes back.
        d.next = d.pos - rest + next;
        d.lost = 0;
    } else {
        count(STAT_FRAME_LOST);
        d.lost = 1;
    }
}
