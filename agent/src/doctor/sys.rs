//! The doctor's kernel boundary: every system call the checks make, each wrapped in a
//! safe function that owns what it returns (`OwnedFd`) and reports `io::Error`.
//!
//! This is the only file of the doctor with `unsafe`. The attribute layouts come from
//! aya-obj's generated kernel bindings (`bpf_attr`, `perf_event_attr`, `bpf_insn`), so
//! nothing here restates a kernel ABI by hand.

use std::{
    ffi::{CStr, c_long},
    io, mem,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use aya_obj::generated::{
    PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF, PERF_FLAG_FD_CLOEXEC, bpf_attach_type, bpf_attr,
    bpf_cmd, bpf_insn, bpf_map_type, bpf_prog_type, perf_event_attr,
};

/// One eBPF instruction. All-zero is a valid `bpf_insn` (a plain struct of integers with
/// a bitfield byte), so this needs no `unsafe`.
pub(super) fn insn(code: u32, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
    bpf_insn {
        code: code as u8,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(dst, src),
        off,
        imm,
    }
}

/// `bpf(cmd, attr, sizeof(attr))`, returning the raw result.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<c_long> {
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` that lives for the whole
    // call; the size passed is its real size. The kernel only reads/writes inside it and
    // inside the buffers its pointer fields name, which the callers keep alive.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as c_long,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>() as u32,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Wraps a syscall result that is a new file descriptor.
fn owned(fd: c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A zeroed `bpf_attr`: every member of the union is plain integers, so all-zero bytes
/// are a valid value (and what the kernel expects in fields a command doesn't use).
fn zeroed_attr() -> bpf_attr {
    // SAFETY: see above; `bpf_attr` has no references, enums or non-nullable pointers.
    unsafe { mem::zeroed() }
}

/// `BPF_MAP_CREATE`.
pub(super) fn map_create(
    map_type: bpf_map_type,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the map-create member of a zeroed union.
    let u = unsafe { &mut attr.__bindgen_anon_1 };
    u.map_type = map_type as u32;
    u.key_size = key_size;
    u.value_size = value_size;
    u.max_entries = max_entries;
    sys_bpf(bpf_cmd::BPF_MAP_CREATE, &mut attr).map(owned)
}

/// `BPF_MAP_LOOKUP_ELEM` of a `u32 -> u64` map.
pub(super) fn map_lookup_u64(map: BorrowedFd<'_>, key: u32) -> io::Result<u64> {
    let mut value = 0u64;
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the map-elem member of a zeroed union. The key
    // and value pointers point at locals that outlive the syscall, of the map's sizes.
    let u = unsafe { &mut attr.__bindgen_anon_2 };
    u.map_fd = map.as_raw_fd() as u32;
    u.key = &key as *const u32 as u64;
    u.__bindgen_anon_1.value = &mut value as *mut u64 as u64;
    sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr)?;
    Ok(value)
}

/// What to load: program type and, for BTF-typed programs, the attach point.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProgSpec {
    pub prog_type: bpf_prog_type,
    pub expected_attach_type: Option<bpf_attach_type>,
    pub attach_btf_id: u32,
    /// `LINUX_VERSION_CODE`, checked for kprobe-type programs before Linux 5.0.
    pub kern_version: u32,
}

/// `BPF_PROG_LOAD` with a GPL licence. The verifier's log goes into `log` (truncated at
/// its length); it is empty when the load failed before the verifier ran.
pub(super) fn prog_load(spec: ProgSpec, insns: &[bpf_insn], log: &mut [u8]) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the prog-load member of a zeroed union. The
    // pointers (instructions, licence, log) outlive the syscall; lengths are theirs.
    let u = unsafe { &mut attr.__bindgen_anon_3 };
    u.prog_type = spec.prog_type as u32;
    u.insn_cnt = insns.len() as u32;
    u.insns = insns.as_ptr() as u64;
    u.license = c"GPL".as_ptr() as u64;
    if let Some(t) = spec.expected_attach_type {
        u.expected_attach_type = t as u32;
    }
    u.attach_btf_id = spec.attach_btf_id;
    u.kern_version = spec.kern_version;
    if !log.is_empty() {
        u.log_level = 1;
        u.log_buf = log.as_mut_ptr() as u64;
        u.log_size = log.len() as u32;
    }
    sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(owned)
}

/// `BPF_RAW_TRACEPOINT_OPEN`: attaches a raw tracepoint program by tracepoint name, or a
/// BTF-typed program (tp_btf, fentry) at the attach point it was loaded for (`None`).
pub(super) fn raw_tracepoint_open(
    name: Option<&CStr>,
    prog: BorrowedFd<'_>,
) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    // SAFETY: writing plain integers into the raw_tracepoint member of a zeroed union;
    // `name` outlives the syscall.
    let u = unsafe { &mut attr.raw_tracepoint };
    u.name = name.map_or(0, |n| n.as_ptr() as u64);
    u.prog_fd = prog.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(owned)
}

/// `perf_event_open` for a tracepoint or probe PMU event. `name` becomes `config1` (the
/// kprobe function or uprobe path), `offset` `config2`. `pid == -1` needs a `cpu`.
pub(super) fn perf_event_open(
    pmu_type: u32,
    config: u64,
    name: Option<&CStr>,
    offset: u64,
    pid: i32,
    cpu: i32,
) -> io::Result<OwnedFd> {
    // SAFETY: `perf_event_attr` is plain integers and unions of integers; all-zero is
    // valid and is what the kernel expects in unused fields.
    let mut attr: perf_event_attr = unsafe { mem::zeroed() };
    attr.type_ = pmu_type;
    attr.size = mem::size_of::<perf_event_attr>() as u32;
    attr.config = config;
    attr.__bindgen_anon_1.sample_period = 1;
    attr.__bindgen_anon_2.wakeup_events = 1;
    attr.__bindgen_anon_3.config1 = name.map_or(0, |n| n.as_ptr() as u64);
    attr.__bindgen_anon_4.config2 = offset;
    // SAFETY: `attr` is initialised and outlives the call; `name` (if any) too. No group
    // fd; the returned descriptor is new and ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            pid,
            cpu,
            -1i32,
            PERF_FLAG_FD_CLOEXEC as c_long,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(owned(rc))
    }
}

/// Attaches `prog` to a perf event and enables it (`PERF_EVENT_IOC_SET_BPF`, `_ENABLE`).
/// The program stays attached until the perf event's descriptor is closed.
pub(super) fn perf_attach_bpf(perf: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: both descriptors are open (borrowed for the call); SET_BPF takes the
    // program fd as its integer argument.
    let rc = unsafe {
        libc::ioctl(
            perf.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF as _,
            prog.as_raw_fd(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; ENABLE takes no argument.
    let rc = unsafe { libc::ioctl(perf.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `mount(source, target, fstype, 0, NULL)`.
pub(super) fn mount(source: &CStr, target: &CStr, fstype: &CStr) -> io::Result<()> {
    // SAFETY: valid NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `umount(target)`.
pub(super) fn umount(target: &CStr) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::umount(target.as_ptr()) };
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The filesystem magic (`f_type`) of the filesystem `path` is on.
pub(super) fn statfs_type(path: &CStr) -> io::Result<u64> {
    // SAFETY: `statfs` is plain integers; all-zero is valid and the kernel fills it.
    let mut st: libc::statfs = unsafe { mem::zeroed() };
    // SAFETY: valid path and a pointer to a live, writable `statfs`.
    let rc = unsafe { libc::statfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // f_type's integer type differs between libcs and architectures.
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type is i64 or u32 depending on target"
    )]
    Ok(st.f_type as u64)
}

/// (soft, hard) `RLIMIT_MEMLOCK`; `u64::MAX` is unlimited.
pub(super) fn memlock_limit() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a pointer to a live, writable `rlimit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "rlim_t is u32 on some 32-bit targets"
    )]
    let conv = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v as u64
        }
    };
    Ok((conv(rl.rlim_cur), conv(rl.rlim_max)))
}

/// The effective user id.
pub(super) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `uname(2)`: (release, machine).
pub(super) fn uname() -> io::Result<(String, String)> {
    // SAFETY: `utsname` is arrays of chars; all-zero is valid.
    let mut u: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: a pointer to a live, writable `utsname`.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok((field(&u.release), field(&u.machine)))
}
