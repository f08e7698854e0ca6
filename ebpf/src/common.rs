//! Maps and helpers every kernel program shares: the target filter, the event ring,
//! the counters, and how events are written.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use periscope_common::*;

/// Traced processes (tgid). Userspace fills it; forks of a traced process are added here.
#[map]
pub static TARGETS: HashMap<u32, TargetInfo> = HashMap::with_max_entries(32_768, 0);

/// The traced processes again, as one byte per tgid (byte `tgid` of the array's
/// memory, 8 per element): non-zero while `TARGETS` holds it. Every syscall of every
/// process on the host goes through the syscall tracepoints, and this is how those of
/// untraced processes leave after one array load instead of two or three hash lookups.
/// Sized from `pid_max` at load (agent/src/probes/traced.rs); userspace writes its bytes through
/// an mmap of the map and the kernel programs write them on fork and exit, a byte
/// store each, so neither side ever rewrites the other's bytes.
#[map]
pub static TRACED: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Non-zero when the agent discovers processes by itself (`--exe`, `--port`, or no
/// selector): exec and bind events are then reported for every process. Patched at load.
#[no_mangle]
pub static DISCOVERY: u32 = 0;

#[inline(always)]
pub fn discovery() -> bool {
    unsafe { core::ptr::read_volatile(&DISCOVERY) != 0 }
}

/// Bytes waiting in the ring above which a submit wakes the reader instead of leaving
/// it to the next timed drain. Patched at load time.
#[no_mangle]
pub static WAKEUP_BYTES: u64 = 1 << 20;

/// Offsets into tracepoint records (indices: `periscope_common::tp`), patched at load
/// from tracefs because record layouts differ between kernels. The defaults are
/// Linux 6.18's; `tp::NO_FIELD` marks a field this kernel's record lacks.
#[no_mangle]
pub static TP_FIELDS: [u32; tp::TP_FIELD_COUNT] = [
    16, 16, // syscalls: first argument, ret
    8, 32, // task_newtask: pid, clone_flags
    32, // sched_process_exit: group_dead
    8, 16, 20, 24, 26, 28, 30, 32, 36, 40, 56, // inet_sock_set_state
    8, 12, 14, 16, 18, 20, 24, 28, 44, // inet_sk_error_report
];

#[inline(always)]
fn tp_offset(field: usize) -> u32 {
    // Volatile: the value is patched after compilation.
    unsafe { core::ptr::read_volatile(&TP_FIELDS[field]) }
}

/// Reads field `field` (a `tp::*` index) of the current tracepoint record; `None` when
/// this kernel's record has no such field or it cannot be read.
#[inline(always)]
pub fn tp_read<T>(ctx: &TracePointContext, field: usize) -> Option<T> {
    let off = tp_offset(field);
    if off == tp::NO_FIELD {
        return None;
    }
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// Like [`tp_read`], `extra` bytes into the field (array elements).
#[inline(always)]
pub fn tp_read_in<T>(ctx: &TracePointContext, field: usize, extra: usize) -> Option<T> {
    let off = tp_offset(field);
    if off == tp::NO_FIELD {
        return None;
    }
    unsafe { ctx.read_at::<T>(off as usize + extra) }.ok()
}

/// Where syscall records keep their first argument (`sys_enter_*`) and their return
/// value (`sys_exit_*`) on every kernel we know of: after the 8-byte common header and
/// `int __syscall_nr` with its padding.
const SYS_SLOT: u32 = 16;

/// The 8-byte slot `slot` of the current syscall record, read straight from the
/// context when the record has the usual layout (a load the verifier checks once, where
/// the general path costs a `bpf_probe_read_kernel` call on every syscall), else through
/// the offset tracefs gave.
#[inline(always)]
fn sys_slot(ctx: &TracePointContext, field: usize, slot: usize) -> Option<u64> {
    if tp_offset(field) == SYS_SLOT {
        // SAFETY: a tracepoint program may load aligned 8-byte words of its record at
        // constant offsets (the verifier bounds them); tracefs said the field is there.
        Some(unsafe { *(ctx.as_ptr() as *const u64).add(SYS_SLOT as usize / 8 + slot) })
    } else {
        tp_read_in::<u64>(ctx, field, 8 * slot)
    }
}

/// Argument `n` of a syscall tracepoint (`sys_enter_*`): each is an 8-byte slot after
/// `__syscall_nr`, from an offset read from tracefs.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    sys_slot(ctx, tp::SYS_ARG0, n).unwrap_or(0)
}

/// The return value in a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    sys_slot(ctx, tp::SYS_RET, 0).map_or(-1, |v| v as i64)
}

#[inline(always)]
pub fn count(stat: u32) {
    if let Some(v) = STATS.get_ptr_mut(stat) {
        unsafe { *v += 1 };
    }
}

#[inline(always)]
pub fn count_n(stat: u32, n: u64) {
    if let Some(v) = STATS.get_ptr_mut(stat) {
        unsafe { *v += n };
    }
}

/// The fast, inexact half of [`is_target`]: false only for a process that is surely not
/// traced. A tgid past the array (pid_max raised after load) is a maybe.
#[inline(always)]
pub fn maybe_target(tgid: u32) -> bool {
    match TRACED.get_ptr(tgid / 8) {
        // SAFETY: byte `tgid % 8` of an 8-byte map value.
        Some(p) => unsafe { *(p as *const u8).add((tgid % 8) as usize) != 0 },
        None => true,
    }
}

/// Marks `tgid` traced or not in [`TRACED`] (forks and exits of targets).
#[inline(always)]
pub fn set_traced(tgid: u32, traced: bool) {
    if let Some(p) = TRACED.get_ptr_mut(tgid / 8) {
        // SAFETY: byte `tgid % 8` of an 8-byte map value.
        unsafe { *(p as *mut u8).add((tgid % 8) as usize) = traced as u8 };
    }
}

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    maybe_target(tgid) && unsafe { TARGETS.get(&tgid).is_some() }
}

#[inline(always)]
pub fn header(kind: EventKind, pid_tgid: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pid_tgid,
    }
}

/// Submit flags: no wakeup unless the ring holds more than WAKEUP_BYTES.
#[inline(always)]
pub fn submit_flags() -> u64 {
    let limit = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) > limit {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
pub fn output<T>(ev: &T) {
    let flags = submit_flags();
    if EVENTS.output::<T>(ev, flags).is_err() {
        count(STAT_RINGBUF_DROPS);
    } else {
        count(STAT_EVENTS);
    }
}
