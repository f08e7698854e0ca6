//! Go runtime uprobes: goroutine creation and exit, GC stop-the-world pauses and cycles.
//!
//! Attached per traced Go process (uprobes filtered by pid) at function entries and at
//! each RET instruction found by decoding the function — never uretprobes, which
//! corrupt Go stacks when they move. In Go's register ABI (amd64, Go >= 1.17) results
//! come back in RAX and the current goroutine's g is in R14.
//!
//! Sources: runtime/proc.go `newproc1` (returns the new g, whose goid, parentGoid,
//! gopc and startpc are set by then), `goexit1` (runs on the exiting goroutine),
//! `stopTheWorldWithSema(reason stwReason)` / `startTheWorldWithSema`, and
//! mgc.go `gcMarkTermination`.

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
