//! Reads of the current task's kernel structs at offsets the agent found in the running
//! kernel's BTF (`KOFFS`, patched at load; see agent/src/probes/btf.rs): is an fd a
//! stream socket, and where is the user TLS base (Go's current g).
//!
//! Each read is one `bpf_probe_read_kernel` (Linux 5.5+) of a fixed size: a bad offset
//! or a racing close gives a failed read, never a fault, and the walk is a fixed number
//! of reads, so a probe hit stays bounded.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use periscope_common::*;

#[no_mangle]
pub static KOFFS: KernelOffsets = KernelOffsets {
    flags: 0,
    task_fsbase: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_inode: 0,
    file_private_data: 0,
    inode_mode: 0,
    inode_ino: 0,
    socket_type: 0,
    socket_sk: 0,
    skc_family: 0,
    skc_num: 0,
    skc_dport: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    _pad: 0,
};

#[inline(always)]
fn koffs() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&KOFFS) }
}

#[inline(always)]
fn read<T>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const SOCK_STREAM: u16 = 1;

/// What the kernel knows of a socket found behind an fd.
pub struct SockInfo {
    pub inode: u64,
    pub family: u16,
    pub local_port: u16,
    pub peer_port: u16,
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
}

/// The kernel `struct inode` and `struct sock` of the stream socket (TCP, unix stream)
/// behind the current task's `fd`, if it is one.
#[inline(always)]
fn stream_sock(k: &KernelOffsets, fd: u32) -> Option<(u64, u64)> {
    if k.flags & KOFF_ADOPT == 0 {
        return None;
    }
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task + k.task_files as u64)?;
    let fdt: u64 = read(files + k.files_fdt as u64)?;
    let max_fds: u32 = read(fdt + k.fdt_max_fds as u64)?;
    if fd >= max_fds {
        return None;
    }
    let fds: u64 = read(fdt + k.fdt_fd as u64)?;
    let file: u64 = read(fds + fd as u64 * 8)?;
    let inode: u64 = read(file + k.file_inode as u64)?;
    let mode: u16 = read(inode + k.inode_mode as u64)?;
    if mode & S_IFMT != S_IFSOCK {
        return None;
    }
    let sock: u64 = read(file + k.file_private_data as u64)?;
    let ty: u16 = read(sock + k.socket_type as u64)?;
    if ty != SOCK_STREAM {
        return None;
    }
    Some((inode, read(sock + k.socket_sk as u64)?))
}

/// The peer of the TCP socket behind the current task's `fd`: its family (`AF_INET` or
/// `AF_INET6`; 0 when it is no TCP socket or the offsets are unknown), its port and
/// address read straight into `port` and `addr` (IPv4 in the first 4 bytes). No copy on
/// this frame: its caller (an accept exit) spends most of the verifier's 512-byte stack.
#[inline(always)]
pub fn stream_peer(fd: u32, port: &mut u16, addr: &mut [u8; 16]) -> u16 {
    let k = koffs();
    let Some((_, sk)) = stream_sock(&k, fd) else {
        return 0;
    };
    let family: u16 = read(sk + k.skc_family as u64).unwrap_or(0);
    let (from, len) = match family {
        AF_INET => (k.skc_daddr, 4),
        AF_INET6 => (k.skc_v6_daddr, 16),
        _ => return 0,
    };
    let dport: u16 = read(sk + k.skc_dport as u64).unwrap_or(0);
    *port = u16::from_be(dport);
    // SAFETY: `addr` is 16 bytes and len <= 16; a failed read leaves zeros.
    let rc = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            addr.as_mut_ptr().cast(),
            len,
            (sk + from as u64) as *const core::ffi::c_void,
        )
    };
    if rc < 0 {
        return 0;
    }
    family
}

/// The stream socket (TCP, unix stream) behind the current task's `fd`, if it is one.
#[inline(always)]
pub fn stream_socket(fd: u32) -> Option<SockInfo> {
    let k = koffs();
    let (inode, sk) = stream_sock(&k, fd)?;
    let family: u16 = read(sk + k.skc_family as u64)?;
    let mut info = SockInfo {
        inode: read(inode + k.inode_ino as u64)?,
        family,
        local_port: 0,
        peer_port: 0,
        local_addr: [0; 16],
        peer_addr: [0; 16],
    };
    match family {
        AF_INET | AF_INET6 => {
            info.local_port = read(sk + k.skc_num as u64).unwrap_or(0);
            let dport: u16 = read(sk + k.skc_dport as u64).unwrap_or(0);
            info.peer_port = u16::from_be(dport);
            if family == AF_INET {
                let l: [u8; 4] = read(sk + k.skc_rcv_saddr as u64).unwrap_or([0; 4]);
                let p: [u8; 4] = read(sk + k.skc_daddr as u64).unwrap_or([0; 4]);
                info.local_addr[..4].copy_from_slice(&l);
                info.peer_addr[..4].copy_from_slice(&p);
            } else {
                info.local_addr = read(sk + k.skc_v6_rcv_saddr as u64).unwrap_or([0; 16]);
                info.peer_addr = read(sk + k.skc_v6_daddr as u64).unwrap_or([0; 16]);
            }
        }
        AF_UNIX => {}
        _ => return None,
    }
    Some(info)
}

/// The user TLS base of the current thread (amd64 `fsbase`), 0 when unknown.
#[inline(always)]
pub fn fsbase() -> u64 {
    let k = koffs();
    if k.flags & KOFF_FSBASE == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    read(task + k.task_fsbase as u64).unwrap_or(0)
}
