//! Processes and threads of the targets: forks become targets too (when asked), and
//! thread starts/exits keep the live thread count exact.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use periscope_common::*;

use crate::common::*;

const CLONE_THREAD: u64 = 0x0001_0000;

// ---------------------------------------------------------------------------------------
// Processes: forks of a traced process are traced too; exits are reported.

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // task:task_newtask runs in the parent: pid (offset 8) is the new task,
    // clone_flags (offset 32) tells a thread from a process.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(info) = (unsafe { TARGETS.get(&tgid).copied() }) else {
        return 0;
    };
    let flags: u64 = unsafe { ctx.read_at(32) }.unwrap_or(CLONE_THREAD);
    let child: u32 = unsafe { ctx.read_at(8) }.unwrap_or(0);
    if child == 0 {
        return 0;
    }
    if flags & CLONE_THREAD != 0 {
        output(&ProcessEvent {
            header: header(EventKind::ThreadStart, pid_tgid),
            pid: child,
            parent_pid: tgid,
        });
        return 0;
    }
    if info.follow_forks == 0 {
        return 0;
    }
    let _ = TARGETS.insert(&child, &info, 0);
    output(&ProcessEvent {
        header: header(EventKind::ProcessFork, pid_tgid),
        pid: child,
        parent_pid: tgid,
    });
    0
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    output(&ProcessEvent {
        header: header(EventKind::ThreadExit, pid_tgid),
        pid: pid_tgid as u32,
        parent_pid: tgid,
    });
    // group_dead (offset 32): the last thread of the process is exiting.
    let group_dead: u8 = unsafe { ctx.read_at(32) }.unwrap_or(0);
    if group_dead == 0 {
        return 0;
    }
    let _ = TARGETS.remove(&tgid);
    output(&ProcessEvent {
        header: header(EventKind::ProcessExit, pid_tgid),
        pid: tgid,
        parent_pid: 0,
    });
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    // Runs in the new program's context, after the exec succeeded.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !discovery() && !is_target(tgid) {
        return 0;
    }
    output(&ProcessEvent {
        header: header(EventKind::Exec, pid_tgid),
        pid: tgid,
        parent_pid: 0,
    });
    0
}
