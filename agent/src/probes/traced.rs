//! The kernel's byte-per-tgid filter (`TRACED` in ebpf/src/common.rs), written through
//! an mmap of the map: every syscall on the host checks it first, and a byte store is
//! the only write that can never undo a byte the kernel programs wrote beside it (they
//! mark forks and exits of targets in the same memory). The bpf(2) update path would
//! rewrite whole 8-byte elements, so it is not used.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
};

use aya::maps::MapData;

/// Bytes (tgids) the filter covers for a host whose `pid_max` is `pid_max`: every
/// possible tgid, rounded up to whole 8-byte elements, within the kernel's pid limit on
/// 64-bit (2^22). Returns the element count.
pub fn elements(pid_max: u64) -> u32 {
    pid_max.clamp(8, 1 << 22).div_ceil(8) as u32
}

/// `/proc/sys/kernel/pid_max`, or the 64-bit limit when it cannot be read.
pub fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 22)
}

pub struct TracedBytes {
    base: NonNull<u8>,
    len: usize,
    /// Held open: programs loaded after this still name the map by its fd.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value and written with single-byte volatile
// stores only; nothing here hands out references into it.
unsafe impl Send for TracedBytes {}

impl TracedBytes {
    /// Maps the `elements`-element array map `map` (created with BPF_F_MMAPABLE).
    pub fn map(map: MapData, elements: u32) -> io::Result<Self> {
        let len = elements as usize * 8;
        // SAFETY: a shared read-write mapping of an mmapable BPF array of `len` bytes
        // (the kernel rounds the map's memory up to whole pages).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Self {
            base,
            len,
            _map: map,
        })
    }

    /// Marks `tgid` traced or not; a tgid past the array needs nothing (the kernel asks
    /// the exact map for those).
    pub fn set(&mut self, tgid: u32, traced: bool) {
        if (tgid as usize) < self.len {
            // SAFETY: within the mapping; a byte store, see the module comment.
            unsafe {
                self.base
                    .as_ptr()
                    .add(tgid as usize)
                    .write_volatile(traced as u8)
            };
        }
    }
}

impl Drop for TracedBytes {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_tgid_up_to_pid_max() {
        assert_eq!(elements(32_768), 4096);
        assert_eq!(elements(32_769), 4097);
        assert_eq!(elements(1 << 22), 1 << 19);
        // Beyond the 64-bit limit or absurdly small: clamped.
        assert_eq!(elements(u64::MAX), 1 << 19);
        assert_eq!(elements(0), 1);
    }
}
