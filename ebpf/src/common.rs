//! Maps and helpers every kernel program shares: the target filter, the event ring,
//! the counters, and how events are written.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use periscope_common::*;

/// Traced processes (tgid). Userspace fills it; forks of a traced process are added here.
#[map]
pub static TARGETS: HashMap<u32, TargetInfo> = HashMap::with_max_entries(32_768, 0);

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

/// Argument `n` of a syscall tracepoint (`sys_enter_*`): each is an 8-byte slot after
/// `__syscall_nr`, from an offset read from tracefs.
#[inline(always)]
pub fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    tp_read_in::<u64>(ctx, tp::SYS_ARG0, 8 * n).unwrap_or(0)
}

/// The return value in a `sys_exit_*` record.
#[inline(always)]
pub fn ret(ctx: &TracePointContext) -> i64 {
    tp_read::<i64>(ctx, tp::SYS_RET).unwrap_or(-1)
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

#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    unsafe { TARGETS.get(&tgid).is_some() }
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
