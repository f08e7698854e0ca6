//! Periscope's kernel programs.
//!
//! Syscall and sched tracepoints carry the socket data path: they load on every kernel we care
//! about, including ones without kprobes or fentry (see ../shared/TOOLCHAIN.md). Every
//! program starts with the cheapest possible filter — one hash lookup keyed by the
//! current tgid (or tgid+fd) — so syscalls of processes we do not trace cost almost
//! nothing. Probe bodies are `try_*` functions; the exported entry only maps the result.
//!
//! Data flow: `sys_enter_*` stashes the arguments of a syscall on a traced socket, keyed
//! by thread; `sys_exit_*` reads the return value, copies a bounded prefix (and a short
//! suffix) of the bytes that really moved, and writes one event to the ring buffer
//! without waking userspace (it drains on a timer), unless the ring is filling up.
#![no_std]
#![no_main]

mod classify;
mod common;
mod frame;
mod go;
mod h2;
mod gotls;
mod net;
mod sched;
mod task;
mod tcp;
mod tls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
