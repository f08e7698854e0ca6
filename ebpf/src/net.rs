//! Socket syscalls: which sockets a traced process has (accept/connect/close) and the
//! bytes it moves on them (read/write and their vectored and socket variants, sendfile).

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_loop, bpf_probe_read_user as raw_probe_read_user},
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use periscope_common::*;

use crate::common::*;

/// Sockets of traced processes, keyed by `sock_key(tgid, fd)`: role and class. The
/// agent writes a socket's class back when its parser gives up on it (`CLASS_MUTED`).
#[map]
pub(crate) static SOCKS: HashMap<u64, SockInfo> = HashMap::with_max_entries(262_144, 0);

/// Arguments of an in-flight syscall, keyed by pid_tgid (one syscall per thread at a
/// time). A thread's entry stays from its first traced syscall until the thread exits
/// (sched.rs removes it), and `syscall == NO_SYSCALL` marks it idle: each syscall then
/// costs two lookups and in-place writes instead of a hash insert and delete, which take
/// the bucket lock and the free list.
#[map]
pub(crate) static ARGS: HashMap<u64, Stash> = HashMap::with_max_entries(65_536, 0);

/// `Stash::syscall` of a thread with no syscall in flight.
pub(crate) const NO_SYSCALL: u32 = 0;

/// Go processes: the first goroutine seen reading each socket, keyed by `sock_key`
/// (reported once per socket; an LRU so it never fills).
#[map]
static GO_FD_READER: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65_536, 0);

#[map]
static SCRATCH: PerCpuArray<DataEventBuf> = PerCpuArray::with_max_entries(1, 0);

/// The data path's per-CPU scratch buffer (the framing cut in frame.rs writes its events
/// from it too).
#[inline(always)]
pub(crate) fn scratch() -> Option<*mut DataEventBuf> {
    SCRATCH.get_ptr_mut(0)
}

const EINPROGRESS: i64 = -115;
/// What `sys_enter_*` remembers for the matching `sys_exit_*`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Stash {
    /// One of the `SYS_*` ids (or ACCEPT/CONNECT/BIND/CLOSE below).
    pub syscall: u32,
    pub fd: u32,
    /// Buffer, iovec array, or sockaddr pointer.
    pub ptr: u64,
    /// Number of iovec entries (vectored calls).
    pub iovcnt: u64,
    /// When the syscall was entered. Bytes written are stamped with it: the peer may
    /// read them before this thread returns from write, and a request must not look
    /// as if it started after the server read it.
    pub enter_ns: u64,
    /// connect: the local address, filled in by `sock:inet_sock_set_state` when the
    /// socket is ESTABLISHED while this connect still runs. Family 0 = not yet.
    pub local_family: u16,
    pub local_port: u16,
    /// connect: non-zero once the socket reached SYN_SENT (tcp.rs then reports how
    /// the attempt ends).
    pub syn_sent: u32,
    pub local_addr: [u8; 16],
    /// Data syscalls: the socket's class when the syscall was entered.
    pub class: u32,
    /// Data syscalls: non-zero when the bytes moved are not in the buffer (a receive
    /// with `MSG_TRUNC` discards them).
    pub discard: u32,
}

impl Stash {
    #[inline(always)]
    pub(crate) fn new(syscall: u32, fd: u32, ptr: u64, iovcnt: u64) -> Self {
        Stash {
            syscall,
            fd,
            ptr,
            iovcnt,
            enter_ns: unsafe { bpf_ktime_get_ns() },
            local_family: 0,
            local_port: 0,
            syn_sent: 0,
            local_addr: [0; 16],
            class: CLASS_UNSEEN as u32,
            discard: 0,
        }
    }
}

const STASH_ACCEPT: u32 = 100;
pub(crate) const STASH_CONNECT: u32 = 101;
const STASH_BIND: u32 = 102;
/// close(2) of a tracked socket is in progress on this thread: a TCP socket that goes
/// from SYN_SENT to CLOSE now was given up by its owner (a connect timeout).
pub(crate) const STASH_CLOSE: u32 = 103;
/// dup/dup2/dup3/fcntl(F_DUPFD*) of a tracked socket: `fd` is the old fd.
const STASH_DUP: u32 = 104;

/// A socket entry with a fresh generation (see `SockInfo::generation`).
#[inline(always)]
fn new_sock(role: u32) -> SockInfo {
    SockInfo {
        generation: (unsafe { bpf_ktime_get_ns() } >> 10) as u16,
        ..SockInfo::new(role)
    }
}

#[inline(always)]
fn is_sock(tgid: u32, fd: u32) -> bool {
    maybe_target(tgid) && unsafe { SOCKS.get(&sock_key(tgid, fd)).is_some() }
}

#[inline(always)]
fn stash(pid_tgid: u64, s: Stash) {
    if let Some(slot) = ARGS.get_ptr_mut(&pid_tgid) {
        // SAFETY: this thread's own entry; only this thread writes its arguments.
        unsafe { *slot = s };
    } else if ARGS.insert(&pid_tgid, &s, 0).is_err() {
        count(STAT_STASH_FULL);
    }
}

/// [`take_stash`] for bind(2), which discovery follows in every process: an untraced
/// thread's entry is removed rather than left idle, so that the threads of the whole
/// host do not each keep one.
fn take_bind_stash(pid_tgid: u64) -> Option<Stash> {
    let slot = ARGS.get_ptr_mut(&pid_tgid)?;
    // SAFETY: this thread's own entry.
    let s = unsafe { *slot };
    if maybe_target((pid_tgid >> 32) as u32) {
        unsafe { (*slot).syscall = NO_SYSCALL };
    } else {
        let _ = ARGS.remove(&pid_tgid);
    }
    (s.syscall != NO_SYSCALL).then_some(s)
}

#[inline(always)]
fn take_stash(pid_tgid: u64) -> Option<Stash> {
    // Most exits are an untraced process's: they leave here.
    if !maybe_target((pid_tgid >> 32) as u32) {
        return None;
    }
    let slot = ARGS.get_ptr_mut(&pid_tgid)?;
    // SAFETY: this thread's own entry, left in place and marked idle.
    unsafe {
        if (*slot).syscall == NO_SYSCALL {
            return None;
        }
        let s = *slot;
        (*slot).syscall = NO_SYSCALL;
        Some(s)
    }
}

// ---------------------------------------------------------------------------------------
// accept / accept4 / connect: a socket starts being tracked.

fn enter_sockaddr_call(ctx: &TracePointContext, syscall: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    stash(
        pid_tgid,
        Stash::new(syscall, arg(ctx, 0) as u32, arg(ctx, 1), 0),
    );
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter_sockaddr_call(&ctx, STASH_ACCEPT)
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    enter_sockaddr_call(&ctx, STASH_ACCEPT)
}

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    enter_sockaddr_call(&ctx, STASH_CONNECT)
}

/// bind(2) tells discovery which process is about to serve which port (`--port`).
#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    if !discovery() {
        return 0;
    }
    stash(
        bpf_get_current_pid_tgid(),
        Stash::new(STASH_BIND, arg(&ctx, 0) as u32, arg(&ctx, 1), 0),
    );
    0
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(s) = take_bind_stash(pid_tgid) else {
        return 0;
    };
    if s.syscall != STASH_BIND || ret(&ctx) != 0 || s.ptr == 0 {
        return 0;
    }
    let family: u16 = unsafe { bpf_probe_read_user(s.ptr as *const u16) }.unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let port: u16 = unsafe { bpf_probe_read_user((s.ptr + 2) as *const u16) }.unwrap_or(0);
    output(&BindEvent {
        header: header(EventKind::Bind, pid_tgid),
        fd: s.fd,
        port: u16::from_be(port),
        family,
    });
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = try_exit_sockaddr_call(&ctx, true);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = try_exit_sockaddr_call(&ctx, true);
    0
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    let _ = try_exit_sockaddr_call(&ctx, false);
    0
}

/// accept(fd, NULL, NULL) (libuv: node) names no peer: read it from the new socket
/// now, while the connection surely exists (the agent's procfs lookup later finds
/// nothing once the client has closed it). Fills the peer's port and address and
/// returns its family (0: unknown). The caller stores the family: a used result keeps
/// LLVM from dropping it, and the verifier rejects a subprogram whose R0 is left
/// pointing into its own stack.
#[inline(never)]
fn accepted_peer(fd: u32, ev: &mut ConnOpenEvent) -> u32 {
    crate::task::stream_peer(fd, &mut ev.peer_port, &mut ev.peer_addr) as u32
}

/// `accept`: the exit of accept or accept4.
#[inline(always)]
fn try_exit_sockaddr_call(ctx: &TracePointContext, accept: bool) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let s = match take_stash(pid_tgid) {
        Some(s) if !accept || s.syscall == STASH_ACCEPT => s,
        // An accept whose entry was not seen: the thread was already blocked in it when
        // the agent attached (Apache's prefork children wait in accept between
        // connections), or its process became a target meanwhile. The socket it
        // returns is new all the same: tracked from its first byte (its requests
        // framed) rather than adopted in the middle of its first read. Its peer is read
        // from the socket (`ptr` 0), its local address by the agent (no listening fd).
        _ if accept && is_target(tgid) => Stash::new(STASH_ACCEPT, NO_FD, 0, 0),
        _ => return Ok(()),
    };
    let rv = ret(ctx);
    let (fd, role, listen_fd) = match s.syscall {
        STASH_ACCEPT if rv >= 0 => (rv as u32, ROLE_SERVER, s.fd),
        // Non-blocking connects return EINPROGRESS and finish later; the socket is
        // still the one the request will be written to.
        STASH_CONNECT if rv == 0 || rv == EINPROGRESS => (s.fd, ROLE_CLIENT, NO_FD),
        // A connect that failed before the socket ever reached SYN_SENT (no route,
        // no local address, a firewall's EPERM): report it here. Failures after
        // SYN_SENT (refused, timed out) are reported by the TCP state tracepoints.
        STASH_CONNECT if s.syn_sent == 0 && crate::tcp::is_connect_failure(-rv) => {
            (s.fd, ROLE_CLIENT, NO_FD)
        }
        _ => return Ok(()),
    };
    let failed = s.syscall == STASH_CONNECT && rv < 0 && rv != EINPROGRESS;
    let mut ev = ConnOpenEvent {
        header: header(EventKind::ConnOpen, pid_tgid),
        fd,
        role,
        listen_fd,
        family: 0,
        peer_port: 0,
        peer_addr: [0; 16],
        local_family: s.local_family,
        local_port: s.local_port,
        error: 0,
        local_addr: s.local_addr,
        start_ns: 0,
    };
    if s.ptr != 0 {
        let family: u16 = unsafe { bpf_probe_read_user(s.ptr as *const u16) }.unwrap_or(0);
        ev.family = family;
        if family == AF_INET || family == AF_INET6 {
            let port: u16 = unsafe { bpf_probe_read_user((s.ptr + 2) as *const u16) }.unwrap_or(0);
            ev.peer_port = u16::from_be(port);
        }
        if family == AF_INET {
            let a: [u8; 4] =
                unsafe { bpf_probe_read_user((s.ptr + 4) as *const [u8; 4]) }.unwrap_or([0; 4]);
            ev.peer_addr[..4].copy_from_slice(&a);
        } else if family == AF_INET6 {
            ev.peer_addr =
                unsafe { bpf_probe_read_user((s.ptr + 8) as *const [u8; 16]) }.unwrap_or([0; 16]);
        } else if family != AF_UNIX {
            // Datagram "connects" of other families (netlink…) carry no HTTP.
            return Ok(());
        }
    }
    if s.ptr == 0 && s.syscall == STASH_ACCEPT {
        ev.family = accepted_peer(fd, &mut ev) as u16;
    }
    if failed {
        if ev.family != AF_INET && ev.family != AF_INET6 {
            return Ok(());
        }
        ev.header.kind = EventKind::ConnFail as u32;
        ev.error = -rv as i32;
        ev.start_ns = s.enter_ns;
        output(&ev);
        return Ok(());
    }
    let info = new_sock(role);
    if SOCKS.insert(&sock_key(tgid, fd), &info, 0).is_err() {
        count(STAT_SOCKMAP_FULL);
        warn!(ctx, "periscope: socket map full, fd {} not traced", fd);
        return Ok(());
    }
    // Seen from its first byte: its requests can be framed (a server reads them, a
    // client writes them).
    let requests = if role == ROLE_SERVER {
        DIR_INGRESS
    } else {
        DIR_EGRESS
    };
    crate::frame::start(sock_key(tgid, fd), info.generation, requests);
    output(&ev);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Data: read/recvfrom/readv/recvmsg (ingress), write/sendto/writev/sendmsg/sendfile (egress).

#[inline(always)]
fn enter_data(ctx: &TracePointContext, syscall: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !maybe_target(tgid) {
        return 0;
    }
    let fd = arg(ctx, 0) as u32;
    let class = match unsafe { SOCKS.get(&sock_key(tgid, fd)) } {
        Some(info) => info.class as u32 | (info.generation as u32) << 16,
        None if is_target(tgid) && adopt(pid_tgid, fd) => match unsafe {
            SOCKS.get(&sock_key(tgid, fd))
        } {
            Some(info) => (info.generation as u32) << 16,
            None => 0,
        },
        None => return 0,
    };
    // A socket whose first bytes were plaintext HTTP carries no TLS records: the TLS
    // lookups below (up to four maps and two memory reads) are skipped for it.
    if !matches!(class as u8, CLASS_HTTP1 | CLASS_HTTP2) {
        // Inside an OpenSSL call this syscall names the call's socket. Its bytes are
        // ciphertext: the classifier finds them TLS and sends only their count; the
        // plaintext comes from the TLS uprobes.
        crate::tls::inner_syscall(pid_tgid, fd);
        // Ciphertext of a Go crypto/tls call (matched by goroutine and socket): not
        // even counted, the plaintext comes from the Go TLS uprobes (see gotls.rs).
        if crate::gotls::inner_syscall(pid_tgid, fd) {
            return 0;
        }
    }
    let (ptr, iovcnt) = match syscall {
        SYS_READV | SYS_WRITEV => (arg(ctx, 1), arg(ctx, 2)),
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr: msg_iov at offset 16, msg_iovlen at 24 (x86_64 and arm64).
            let msg = arg(ctx, 1);
            let iov: u64 = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.unwrap_or(0);
            let cnt: u64 = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.unwrap_or(0);
            (iov, cnt)
        }
        _ => (arg(ctx, 1), 0),
    };
    // recv flags: MSG_PEEK leaves the bytes to be read again (reporting them would count
    // them twice); MSG_TRUNC consumes them without copying them to the buffer (lighttpd
    // discards unread request bodies so), whose stale contents must not be reported.
    let flags = match syscall {
        SYS_RECVFROM => arg(ctx, 3),
        SYS_RECVMSG => arg(ctx, 2),
        _ => 0,
    };
    if flags & MSG_PEEK != 0 {
        return 0;
    }
    let mut s = Stash::new(syscall, fd, ptr, iovcnt);
    s.class = class;
    s.discard = (flags & MSG_TRUNC != 0) as u32;
    stash(pid_tgid, s);
    0
}

const MSG_PEEK: u64 = 0x2;
const MSG_TRUNC: u64 = 0x20;

/// A traced process moves bytes on an fd it never accepted or connected: if it is a
/// stream socket, track it from now on and tell the agent what it is. This is how
/// sockets are followed through fork, SCM_RIGHTS and inetd-style fds 0/1: whatever way
/// the fd arrived, its first use finds it. Non-sockets cost one bounded walk per call.
#[inline(never)]
fn adopt(pid_tgid: u64, fd: u32) -> bool {
    let Some(sock) = crate::task::stream_socket(fd) else {
        return false;
    };
    if SOCKS
        .insert(
            &sock_key((pid_tgid >> 32) as u32, fd),
            &new_sock(ROLE_UNKNOWN),
            0,
        )
        .is_err()
    {
        count(STAT_SOCKMAP_FULL);
        return false;
    }
    count(STAT_ADOPTED);
    output(&ConnAdoptEvent {
        open: ConnOpenEvent {
            header: header(EventKind::ConnAdopt, pid_tgid),
            fd,
            role: ROLE_UNKNOWN,
            listen_fd: NO_FD,
            family: sock.family,
            peer_port: sock.peer_port,
            peer_addr: sock.peer_addr,
            local_family: sock.family,
            local_port: sock.local_port,
            error: 0,
            local_addr: sock.local_addr,
            start_ns: 0,
        },
        inode: sock.inode,
    });
    true
}

/// Go processes: report the first goroutine that reads each socket. The goroutine is the
/// caller's g, at fsbase-8 while a Go thread is in a syscall (amd64).
#[inline(never)]
fn go_first_reader(pid_tgid: u64, fd: u32) {
    let tgid = (pid_tgid >> 32) as u32;
    let Some(info) = (unsafe { crate::go::GO_PROCS.get(&tgid).copied() }) else {
        return;
    };
    let key = sock_key(tgid, fd);
    if info.goid_off == 0 || unsafe { GO_FD_READER.get(&key).is_some() } {
        return;
    }
    let fs = crate::task::fsbase();
    if fs < 8 {
        return;
    }
    let Ok(g) = (unsafe { bpf_probe_read_user((fs - 8) as *const u64) }) else {
        return;
    };
    if g == 0 {
        return;
    }
    let Ok(goid) = (unsafe { bpf_probe_read_user((g + info.goid_off as u64) as *const u64) })
    else {
        return;
    };
    let parent_goid = if info.parent_goid_off == 0 {
        0
    } else {
        unsafe { bpf_probe_read_user((g + info.parent_goid_off as u64) as *const u64) }
            .unwrap_or(0)
    };
    let _ = GO_FD_READER.insert(&key, &goid, 0);
    output(&GoConnEvent {
        header: header(EventKind::GoSocketRead, pid_tgid),
        goid,
        parent_goid,
        fd,
        _pad: 0,
    });
}

/// `cuttable`: a plain-buffer syscall (read, recvfrom, write, sendto), whose framed
/// request streams are cut in frame.rs; a constant per program, so the others do not
/// carry (nor get verified with) that code.
#[inline(always)]
fn exit_data(ctx: &TracePointContext, direction: u32, cuttable: bool, iov_loop: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(s) = take_stash(pid_tgid) else {
        return 0;
    };
    let rv = ret(ctx);
    if rv <= 0 {
        return 0;
    }
    if direction == DIR_INGRESS {
        go_first_reader(pid_tgid, s.fd);
    }
    if s.discard != 0 {
        // Discarded unread: a byte count, which a framed request stream takes as body.
        if !crate::frame::uncut(pid_tgid, &s, rv as u64, direction) {
            emit_count(pid_tgid, &s, rv as u64, direction);
        }
        return 0;
    }
    if !class_captures(s.class as u8) {
        // Only the count: the tracker still sees the connection live and its sizes.
        count_n(STAT_PAYLOAD_SUPPRESSED, rv as u64);
        output(&data_event(pid_tgid, &s, rv as u64, direction, 0, 0, s.class));
        return 0;
    }
    // HTTP/2: sendfile's bytes are a DATA payload's (or the direction is lost), counted
    // below as any sendfile's.
    if s.syscall == SYS_SENDFILE && s.class as u8 == CLASS_HTTP2 {
        crate::h2::skip(pid_tgid, &s, rv as u64, direction);
    }
    // HTTP/2: cut at DATA payloads (programs that may run a `bpf_loop` only).
    if (cuttable || iov_loop)
        && s.class as u8 == CLASS_HTTP2
        && crate::h2::emit_framed(pid_tgid, &s, s.class, rv as u64, direction)
    {
        return 0;
    }
    // A request stream followed from its start: cut where its requests start.
    let framed = if cuttable {
        crate::frame::emit_framed(pid_tgid, &s, rv as u64, direction, crate::frame::SYSCALL)
    } else {
        crate::frame::uncut(pid_tgid, &s, rv as u64, direction)
    };
    if framed {
        return 0;
    }
    let sent = if iov_loop {
        try_emit_vectored(pid_tgid, &s, rv as u64, direction)
    } else {
        if cuttable {
            try_emit_data::<true>(pid_tgid, &s, rv as u64, direction)
        } else {
            try_emit_data::<false>(pid_tgid, &s, rv as u64, direction)
        }
    };
    if sent.is_err() {
        count(STAT_READ_ERRORS);
    }
    0
}

/// A data event with the syscall's byte count and no payload.
#[inline(never)]
pub(crate) fn emit_count(pid_tgid: u64, s: &Stash, total: u64, direction: u32) {
    output(&data_event(pid_tgid, s, total, direction, 0, 0, s.class));
}

/// [`emit_count`] with the class the socket was just given.
#[inline(never)]
pub(crate) fn emit_count_as(pid_tgid: u64, s: &Stash, total: u64, direction: u32, class: u32) {
    output(&data_event(pid_tgid, s, total, direction, 0, 0, class));
}

/// Writes the data event in the scratch buffer's header slot and sends it with its
/// `head + tail` payload bytes (already in place).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn output_data(
    pid_tgid: u64,
    s: &Stash,
    buf: *mut DataEventBuf,
    total: u64,
    direction: u32,
    head: usize,
    tail: usize,
    class: u32,
) {
    unsafe {
        (*buf).event = data_event(pid_tgid, s, total, direction, head, tail, class);
    }
    let size = core::mem::size_of::<DataEvent>() + (launder(buf, head + tail) & OUT_MASK);
    let bytes: &[u8] = unsafe {
        core::slice::from_raw_parts(buf as *const u8, core::mem::size_of::<DataEventBuf>())
    };
    if EVENTS.output::<[u8]>(&bytes[..size], submit_flags()).is_err() {
        count(STAT_RINGBUF_DROPS);
    } else {
        count(STAT_EVENTS);
    }
}

/// Copies `len` bytes of a plain-buffer syscall (read, recvfrom, write, sendto) from
/// byte `from` to the scratch payload at `dst`.
#[inline(always)]
pub(crate) fn copy_plain<const LEN_MASK: usize>(
    buf: *mut DataEventBuf,
    dst: usize,
    from: u64,
    len: u64,
    s: &Stash,
) -> Result<(), i64> {
    copy_user::<LEN_MASK>(buf, dst, len as usize, s.ptr + from)
}

#[inline(always)]
fn data_event(
    pid_tgid: u64,
    s: &Stash,
    total: u64,
    direction: u32,
    head: usize,
    tail: usize,
    class: u32,
) -> DataEvent {
    let mut hdr = header(EventKind::Data, pid_tgid);
    if direction == DIR_EGRESS {
        hdr.ts_ns = s.enter_ns;
    }
    DataEvent {
        header: hdr,
        fd: s.fd,
        direction,
        total_len: total,
        head_len: head as u32,
        tail_len: tail as u32,
        syscall: s.syscall,
        class,
    }
}

/// The socket's first chunk with bytes in it is in the scratch buffer: decide its class
/// from them and store it. Returns the class the event carries.
#[inline(never)]
pub(crate) fn classify_first(pid_tgid: u64, s: &Stash, buf: *const DataEventBuf, head: usize, egress: bool) -> u8 {
    let key = sock_key((pid_tgid >> 32) as u32, s.fd);
    // Closed meanwhile by another thread: nothing to store, keep the bytes.
    let Some(info) = SOCKS.get_ptr_mut(&key) else {
        return CLASS_DEFERRED;
    };
    let class = unsafe { crate::classify::decide(&(*buf).payload, head, (*info).role) };
    // Classified already by the request framing (which hands HTTP/2 sockets back to
    // the capture path, which classifies again): counted once.
    let again = unsafe { (*info).class } == class;
    unsafe {
        (*info).class = class;
        if egress {
            (*info).flags |= SOCK_CLASSIFIED_EGRESS;
        }
    }
    if !again {
        count(STAT_CLASSIFIED + class as u32 - 1);
    }
    class
}

pub(crate) const HEAD_MASK: usize = 2 * MAX_HEAD - 1;
pub(crate) const TAIL_MASK: usize = 2 * MAX_TAIL - 1;
const OUT_MASK: usize = SCRATCH_PAYLOAD - 1;

/// Where [`launder`] parks a value: the scratch payload's last 8 bytes, past anything a
/// copy writes (`MAX_HEAD + MAX_TAIL` bytes at most).
const LAUNDER_OFF: usize = SCRATCH_PAYLOAD - 8;
const _: () = assert!(MAX_PAYLOAD <= LAUNDER_OFF);

/// `v`, hidden from both the optimizer and the verifier, so that a mask applied to it
/// is really executed and is all the verifier knows about it.
///
/// LLVM drops a mask it can prove redundant (`head & HEAD_MASK` when `head <= MAX_HEAD`
/// on every real path). Verifiers before Linux ~6.8 also walk branches that cannot
/// happen, where the register holding `head` then has impossible bounds (Debian's 6.1:
/// `umin=2048, umax=2047`); adding such a register to the scratch-buffer pointer turns
/// the pointer into a scalar, and the copy is rejected ("R1 type=scalar expected=...
/// map_value"). A volatile stack slot is not enough: the verifier tracks spilled
/// scalars, the impossible bounds survive it and `& HEAD_MASK` keeps bit 11 set
/// (`var_off=(0x800; 0x7ff)`), which is how 6.1 rejected `sys_exit_read` in the iovec
/// loop once the classifier changed the register allocation. A value read back from
/// map memory is an unknown scalar on every kernel, whatever the compiler emits.
#[inline(always)]
fn launder(buf: *mut DataEventBuf, v: usize) -> usize {
    // SAFETY: `buf` is the per-CPU scratch value; LAUNDER_OFF + 8 <= SCRATCH_PAYLOAD.
    unsafe {
        let slot = (*buf).payload.as_mut_ptr().add(LAUNDER_OFF).cast::<u64>();
        core::ptr::write_volatile(slot, v as u64);
        core::ptr::read_volatile(slot as *const u64) as usize
    }
}

/// Copies `len` user bytes from `src` to `payload[off..]`. The masks are what the
/// verifier needs to bound the write: callers keep `off < MAX_HEAD` and `len` within
/// `LEN_MASK` (HEAD_MASK for the head, TAIL_MASK for the tail).
#[inline(always)]
fn copy_user<const LEN_MASK: usize>(
    buf: *mut DataEventBuf,
    off: usize,
    len: usize,
    src: u64,
) -> Result<(), i64> {
    let off = launder(buf, off) & HEAD_MASK;
    let len = launder(buf, len) & LEN_MASK;
    if len == 0 {
        return Ok(());
    }
    let rc = unsafe {
        let dst = (*buf).payload.as_mut_ptr().add(off);
        raw_probe_read_user(dst.cast(), len as u32, src as *const _)
    };
    if rc < 0 {
        Err(rc)
    } else {
        Ok(())
    }
}

/// [`copy_user`] into the head part of the payload, for the HTTP/2 framing.
#[inline(always)]
pub(crate) fn copy_user_at(buf: *mut DataEventBuf, off: usize, len: usize, src: u64) -> Result<(), i64> {
    copy_user::<HEAD_MASK>(buf, off, len, src)
}

/// A vectored syscall's iovecs being walked by [`iov_step`], between `bpf_loop` steps.
#[repr(C)]
struct IovWalk {
    /// The iovec array and its length.
    ptr: u64,
    iovcnt: u64,
    /// Bytes the syscall moved, and those not yet walked.
    total: u64,
    left: u64,
    /// Head and tail bytes copied so far.
    head: u64,
    tail: u64,
    /// A user read failed.
    failed: u64,
}

#[map]
static IOV_WALK: PerCpuArray<IovWalk> = PerCpuArray::with_max_entries(1, 0);

/// One `bpf_loop` step of the iovec walk in `IOV_WALK`: iovec `i`, as one turn of the
/// unrolled walk in [`try_emit_data`] does.
#[inline(never)]
extern "C" fn iov_step(i: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let (Some(w), Some(buf)) = (IOV_WALK.get_ptr_mut(0), scratch()) else {
        return 1;
    };
    // SAFETY: per-CPU map values, used by this program run only.
    let w = unsafe { &mut *w };
    if i >= w.iovcnt || w.left == 0 {
        return 1;
    }
    let iov = w.ptr + i * 16;
    // SAFETY: user memory reads, checked by the helper.
    let read = unsafe {
        (
            bpf_probe_read_user(iov as *const u64),
            bpf_probe_read_user((iov + 8) as *const u64),
        )
    };
    let (Ok(base), Ok(len)) = read else {
        w.failed = 1;
        return 1;
    };
    let used = if len < w.left { len } else { w.left };
    let head = w.head;
    if head < MAX_HEAD as u64 {
        let room = MAX_HEAD as u64 - head;
        let n = if used < room { used } else { room };
        if copy_user::<HEAD_MASK>(buf, head as usize, n as usize, base).is_err() {
            w.failed = 1;
            return 1;
        }
        w.head = head + n;
    }
    w.left -= used;
    if w.left == 0 && w.total > w.head {
        let t = if used < MAX_TAIL as u64 {
            used
        } else {
            MAX_TAIL as u64
        };
        if copy_user::<TAIL_MASK>(buf, w.head as usize, t as usize, base + used - t).is_err() {
            w.failed = 1;
            return 1;
        }
        w.tail = t;
    }
    0
}

/// [`try_emit_data`] for a vectored syscall, its iovecs walked by `bpf_loop` (up to
/// [`MAX_IOV_LOOP`]) instead of the unrolled [`MAX_IOV`]. Only the programs that may
/// reference a `bpf_loop` callback call it (see `uncut_probes`).
#[inline(always)]
fn try_emit_vectored(pid_tgid: u64, s: &Stash, total: u64, direction: u32) -> Result<(), i64> {
    if !crate::frame::enabled() {
        return try_emit_data::<true>(pid_tgid, s, total, direction);
    }
    let w = IOV_WALK.get_ptr_mut(0).ok_or(0i64)?;
    // SAFETY: per-CPU map value.
    unsafe {
        *w = IovWalk {
            ptr: s.ptr,
            iovcnt: s.iovcnt,
            total,
            left: total,
            head: 0,
            tail: 0,
            failed: 0,
        };
        let _ = bpf_loop(MAX_IOV_LOOP, iov_step as *mut core::ffi::c_void, core::ptr::null_mut(), 0);
        if (*w).failed != 0 {
            return Err(0);
        }
        finish_data(pid_tgid, s, total, direction, (*w).head as usize, (*w).tail as usize, true)
    }
}

/// `CAN_LOOP`: the calling program may run a `bpf_loop` (see `uncut_probes`); a
/// separate function each way, so that the others never reference one.
pub(crate) fn try_emit_data<const CAN_LOOP: bool>(pid_tgid: u64, s: &Stash, total: u64, direction: u32) -> Result<(), i64> {
    let buf = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    let mut head: usize = 0;
    let mut tail: usize = 0;
    match s.syscall {
        SYS_SENDFILE => {}
        SYS_READV | SYS_WRITEV | SYS_RECVMSG | SYS_SENDMSG => {
            // Walk the iovecs that the syscall actually filled/drained: `left` counts
            // down from the return value. The head takes bytes from the first ones;
            // the tail, when the data overflows the head, the last bytes moved.
            let mut left = total;
            let mut i = 0;
            while i < MAX_IOV {
                if (i as u64) >= s.iovcnt || left == 0 {
                    break;
                }
                let iov = s.ptr + (i as u64) * 16;
                let base: u64 = unsafe { bpf_probe_read_user(iov as *const u64) }?;
                let len: u64 = unsafe { bpf_probe_read_user((iov + 8) as *const u64) }?;
                let used = if len < left { len } else { left };
                if head < MAX_HEAD {
                    let room = (MAX_HEAD - head) as u64;
                    let n = if used < room { used } else { room };
                    copy_user::<HEAD_MASK>(buf, head, n as usize, base)?;
                    head += n as usize;
                }
                left -= used;
                if left == 0 && total > head as u64 {
                    let t = if used < MAX_TAIL as u64 {
                        used
                    } else {
                        MAX_TAIL as u64
                    };
                    copy_user::<TAIL_MASK>(buf, head, t as usize, base + used - t)?;
                    tail = t as usize;
                }
                i += 1;
            }
        }
        _ => {
            let n = if total < MAX_HEAD as u64 {
                total
            } else {
                MAX_HEAD as u64
            };
            copy_user::<HEAD_MASK>(buf, 0, n as usize, s.ptr)?;
            head = n as usize;
            if total > MAX_HEAD as u64 {
                let t = if total - MAX_HEAD as u64 > MAX_TAIL as u64 {
                    MAX_TAIL as u64
                } else {
                    total - MAX_HEAD as u64
                };
                copy_user::<TAIL_MASK>(buf, head, t as usize, s.ptr + total - t)?;
                tail = t as usize;
            }
        }
    }
    finish_data(pid_tgid, s, total, direction, head, tail, CAN_LOOP)
}

/// Classifies an unseen socket on the `head` bytes in the scratch buffer and sends the
/// data event with its `head + tail` payload bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn finish_data(
    pid_tgid: u64,
    s: &Stash,
    total: u64,
    direction: u32,
    mut head: usize,
    mut tail: usize,
    can_loop: bool,
) -> Result<(), i64> {
    let buf = SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    let mut class = s.class as u8;
    let generation = s.class & 0xffff_0000;
    if class == CLASS_UNSEEN && head > 0 {
        class = classify_first(pid_tgid, s, buf, head, direction == DIR_EGRESS);
        if class == CLASS_HTTP2 {
            if can_loop {
                // Followed from this first byte on, both ways: this syscall is cut
                // at its DATA payloads too.
                crate::h2::start(pid_tgid, s, head, direction);
                let class = class as u32 | generation;
                if crate::h2::emit_framed(pid_tgid, s, class, total, direction) {
                    return Ok(());
                }
            } else {
                crate::h2::classified(pid_tgid, s, head, total, direction);
            }
        }
        if !class_captures(class) {
            count_n(STAT_PAYLOAD_SUPPRESSED, total);
            head = 0;
            tail = 0;
        }
    }
    unsafe {
        (*buf).event = data_event(
            pid_tgid,
            s,
            total,
            direction,
            head,
            tail,
            class as u32 | generation,
        );
    }
    let size = core::mem::size_of::<DataEvent>() + (launder(buf, head + tail) & OUT_MASK);
    let bytes: &[u8] = unsafe {
        core::slice::from_raw_parts(buf as *const u8, core::mem::size_of::<DataEventBuf>())
    };
    let flags = submit_flags();
    if EVENTS.output::<[u8]>(&bytes[..size], flags).is_err() {
        count(STAT_RINGBUF_DROPS);
    } else {
        count(STAT_EVENTS);
    }
    Ok(())
}

macro_rules! data_probes {
    ($($enter:ident, $exit:ident, $sys:expr, $dir:expr, $cut:expr, $iov_loop:expr;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            enter_data(&ctx, $sys)
        }
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit_data(&ctx, $dir, $cut, $iov_loop)
        }
    )*};
}

// (enter, exit, syscall, direction, cut by the request framing, iovecs walked by bpf_loop)
data_probes! {
    sys_enter_read, sys_exit_read, SYS_READ, DIR_INGRESS, true, false;
    sys_enter_readv, sys_exit_readv, SYS_READV, DIR_INGRESS, false, true;
    sys_enter_recvfrom, sys_exit_recvfrom, SYS_RECVFROM, DIR_INGRESS, true, false;
    sys_enter_recvmsg, sys_exit_recvmsg, SYS_RECVMSG, DIR_INGRESS, false, true;
    sys_enter_write, sys_exit_write, SYS_WRITE, DIR_EGRESS, true, false;
    sys_enter_writev, sys_exit_writev, SYS_WRITEV, DIR_EGRESS, false, true;
    sys_enter_sendto, sys_exit_sendto, SYS_SENDTO, DIR_EGRESS, true, false;
    sys_enter_sendmsg, sys_exit_sendmsg, SYS_SENDMSG, DIR_EGRESS, false, true;
    sys_enter_sendfile64, sys_exit_sendfile64, SYS_SENDFILE, DIR_EGRESS, false, false;
}

/// The cutting exits without their `bpf_loop` (kernels before 5.13 reject a program
/// that references a callback at all, even where it cannot run): the agent loads these
/// instead when the kernel has no `bpf_loop` or refuses the others.
macro_rules! uncut_probes {
    ($($exit:ident, $dir:expr;)*) => {$(
        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            exit_data(&ctx, $dir, false, false)
        }
    )*};
}

uncut_probes! {
    sys_exit_read_uncut, DIR_INGRESS;
    sys_exit_recvfrom_uncut, DIR_INGRESS;
    sys_exit_write_uncut, DIR_EGRESS;
    sys_exit_sendto_uncut, DIR_EGRESS;
    sys_exit_readv_uncut, DIR_INGRESS;
    sys_exit_recvmsg_uncut, DIR_INGRESS;
    sys_exit_writev_uncut, DIR_EGRESS;
    sys_exit_sendmsg_uncut, DIR_EGRESS;
}

// ---------------------------------------------------------------------------------------
// close: a socket stops being tracked.

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let fd = arg(&ctx, 0) as u32;
    if !is_sock(tgid, fd) {
        return 0;
    }
    let key = sock_key(tgid, fd);
    let _ = SOCKS.remove(&key);
    let _ = GO_FD_READER.remove(&key);
    crate::frame::forget(key);
    crate::h2::forget(key);
    output(&ConnCloseEvent {
        header: header(EventKind::ConnClose, pid_tgid),
        fd,
        _pad: 0,
    });
    // Lets the TCP state tracepoint tell "the owner closed a socket still connecting"
    // from a close the kernel decided (see tcp.rs).
    stash(pid_tgid, Stash::new(STASH_CLOSE, fd, 0, 0));
    0
}

#[tracepoint]
pub fn sys_exit_close(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let _ = take_stash(pid_tgid);
    0
}

// ---------------------------------------------------------------------------------------
// dup/dup2/dup3/fcntl(F_DUPFD, F_DUPFD_CLOEXEC): a tracked socket gets a second fd.
// Cheap explicit handling (one map lookup on enter): inetd-style servers dup2 an
// accepted socket onto fds 0 and 1 and then read one and write the other.

const F_DUPFD: u64 = 0;
const F_DUPFD_CLOEXEC: u64 = 1030;

#[inline(always)]
fn enter_dup(old: u32) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_sock((pid_tgid >> 32) as u32, old) {
        return 0;
    }
    stash(pid_tgid, Stash::new(STASH_DUP, old, 0, 0));
    0
}

#[tracepoint]
pub fn sys_enter_dup(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32)
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32)
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    enter_dup(arg(&ctx, 0) as u32)
}

#[tracepoint]
pub fn sys_enter_fcntl(ctx: TracePointContext) -> u32 {
    let cmd = arg(&ctx, 1);
    if cmd != F_DUPFD && cmd != F_DUPFD_CLOEXEC {
        return 0;
    }
    enter_dup(arg(&ctx, 0) as u32)
}

#[inline(always)]
fn exit_dup(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let Some(s) = take_stash(pid_tgid) else {
        return 0;
    };
    let rv = ret(ctx);
    if s.syscall != STASH_DUP || rv < 0 || rv as u32 == s.fd {
        return 0;
    }
    let new_fd = rv as u32;
    // The new fd names the same socket: same role, same class.
    let info = unsafe { SOCKS.get(&sock_key(tgid, s.fd)).copied() }
        .unwrap_or(SockInfo::new(ROLE_UNKNOWN));
    if SOCKS.insert(&sock_key(tgid, new_fd), &info, 0).is_err() {
        count(STAT_SOCKMAP_FULL);
        return 0;
    }
    let _ = GO_FD_READER.remove(&sock_key(tgid, new_fd));
    count(STAT_DUPS);
    output(&ConnDupEvent {
        header: header(EventKind::ConnDup, pid_tgid),
        fd: s.fd,
        new_fd,
    });
    0
}

#[tracepoint]
pub fn sys_exit_dup(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

#[tracepoint]
pub fn sys_exit_dup2(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

#[tracepoint]
pub fn sys_exit_dup3(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}

#[tracepoint]
pub fn sys_exit_fcntl(ctx: TracePointContext) -> u32 {
    exit_dup(&ctx)
}
