//! Processes and threads of the targets: forks become targets too (when asked), and
//! thread starts/exits keep the live thread count exact.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use periscope_common::*;

use crate::common::*;
use periscope_common::tp;

const CLONE_THREAD: u64 = 0x0001_0000;

// ---------------------------------------------------------------------------------------
// Processes: forks of a traced process are traced too; exits are reported.

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // task:task_newtask runs in the parent: pid is the new task, clone_flags tells a
    // thread from a process (offsets from tracefs, see common::TP_FIELDS).
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !maybe_target(tgid) {
        return 0;
    }
    let Some(info) = (unsafe { TARGETS.get(&tgid).copied() }) else {
        return 0;
    };
    let flags: u64 = tp_read(&ctx, tp::NEWTASK_CLONE_FLAGS).unwrap_or(CLONE_THREAD);
    let child: u32 = tp_read(&ctx, tp::NEWTASK_PID).unwrap_or(0);
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
    if TARGETS.insert(&child, &info, 0).is_ok() {
        set_traced(child, true);
    }
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
    // The thread's syscall slot (net.rs), whether or not its process is still traced:
    // a process may have stopped being one while its threads live on.
    let _ = crate::net::ARGS.remove(&pid_tgid);
    if !is_target(tgid) {
        return 0;
    }
    output(&ProcessEvent {
        header: header(EventKind::ThreadExit, pid_tgid),
        pid: pid_tgid as u32,
        parent_pid: tgid,
    });
    // group_dead: the last thread of the process is exiting. Kernels up to 6.12
    // (Debian's 6.1 and 6.12 among them) have no such field; there the exit of the
    // thread-group leader stands for the process's: exit_group(2) ends every thread
    // at once, and a leader that leaves its other threads running (pthread_exit in
    // main) is rare. Such a process is then taken for gone early, never kept late.
    let group_dead = match tp_read::<u8>(&ctx, tp::EXIT_GROUP_DEAD) {
        Some(dead) => dead != 0,
        None => pid_tgid as u32 == tgid,
    };
    if !group_dead {
        return 0;
    }
    let _ = TARGETS.remove(&tgid);
    set_traced(tgid, false);
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
