//! Wire types shared by the kernel programs (`ebpf/`) and the agent (`agent/`).
//!
//! Every kernel event is one [`EventHeader`] followed by a payload whose layout is fixed
//! by its [`EventKind`]. Kind ids are part of the wire format and never change meaning;
//! new kinds take new ids. All structs are `#[repr(C)]`, have no implicit padding and no
//! `bool` fields, and their sizes are pinned by compile-time asserts so both sides agree.
#![no_std]

use core::mem::size_of;

/// Largest prefix of one syscall's payload copied into an event. Enough for a request
/// line, a status line and the headers of nearly every request; the agent treats the
/// rest as bytes it knows the count of but not the content.
pub const MAX_HEAD: usize = 2048;
/// When a chunk is larger than [`MAX_HEAD`], its last bytes are copied too: the end of
/// a chunked body (`0\r\n\r\n`) sits there, which lets the agent find a message's end
/// even when it could not see every chunk-size line.
pub const MAX_TAIL: usize = 64;
/// Size of the payload buffer following a [`DataEvent`].
pub const MAX_PAYLOAD: usize = MAX_HEAD + MAX_TAIL;
/// How many iovec entries readv/writev/recvmsg/sendmsg probes walk.
pub const MAX_IOV: usize = 8;

/// Fixed ids of event kinds. Never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A socket was accepted (server side) or connected (client side).
    ConnOpen = 1,
    /// Bytes moved on a tracked socket.
    Data = 2,
    /// A tracked socket was closed.
    ConnClose = 3,
    /// A traced process forked a new process, which is now traced too.
    ProcessFork = 4,
    /// A traced process exited (its last thread).
    ProcessExit = 5,
    /// A thread of a traced process started ([`ProcessEvent`]: `pid` = tid,
    /// `parent_pid` = tgid).
    ThreadStart = 6,
    /// A thread of a traced process exited (same payload as `ThreadStart`).
    ThreadExit = 7,
    /// A process (any, when discovery is on; else a target) executed a new program
    /// ([`ProcessEvent`]: `pid` = tgid).
    Exec = 8,
    /// A process bound a TCP/UDP port (discovery only; [`BindEvent`]).
    Bind = 9,
    /// A goroutine was created ([`GoroutineEvent`]).
    GoroutineCreate = 10,
    /// A goroutine exited ([`GoroutineEvent`], only `goid` set).
    GoroutineExit = 11,
    /// The Go runtime stopped the world for a GC phase ([`GcEvent`]).
    GcPause = 12,
    /// A GC cycle completed its mark termination ([`GcEvent`], `start_ns` = `end_ns`).
    GcCycle = 13,
    /// A TCP connect of a traced process failed ([`ConnOpenEvent`] with `error` set;
    /// `header.pid_tgid` is the thread that called connect).
    ConnFail = 14,
    /// A Go net/http server goroutine started serving a connection ([`GoConnEvent`]:
    /// `net/http.(*conn).serve` entry).
    GoHttpServe = 15,
    /// A Go goroutine is about to send a request on a client connection
    /// ([`GoConnEvent`]: `net/http.(*persistConn).roundTrip` entry).
    GoHttpRoundTrip = 16,
    /// A non-blocking TCP connect of a traced process completed after connect(2)
    /// returned: the local address is known now ([`ConnOpenEvent`], `header.pid_tgid`
    /// is the thread that called connect, `header.ts_ns` when it was established).
    ConnEstablished = 17,
    /// A traced process used a stream socket it did not accept or connect itself (it
    /// inherited it over fork, got it by dup before tracing or over SCM_RIGHTS, or serves
    /// it inetd-style on fds 0/1): [`ConnAdoptEvent`]. Role unknown; addresses from the
    /// kernel's socket.
    ConnAdopt = 18,
    /// A tracked socket's fd was duplicated (dup, dup2, dup3, fcntl F_DUPFD): both fds
    /// name the same connection from now on ([`ConnDupEvent`]).
    ConnDup = 19,
    /// A goroutine read bytes from a socket for the first time ([`GoConnEvent`], from the
    /// read syscall itself: g at fsbase-8). The first reader of an accepted socket in a
    /// net/http server is the goroutine serving it, whatever type wraps the net.Conn.
    GoSocketRead = 20,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Self::ConnOpen,
            2 => Self::Data,
            3 => Self::ConnClose,
            4 => Self::ProcessFork,
            5 => Self::ProcessExit,
            6 => Self::ThreadStart,
            7 => Self::ThreadExit,
            8 => Self::Exec,
            9 => Self::Bind,
            10 => Self::GoroutineCreate,
            11 => Self::GoroutineExit,
            12 => Self::GcPause,
            13 => Self::GcCycle,
            14 => Self::ConnFail,
            15 => Self::GoHttpServe,
            16 => Self::GoHttpRoundTrip,
            17 => Self::ConnEstablished,
            18 => Self::ConnAdopt,
            19 => Self::ConnDup,
            20 => Self::GoSocketRead,
            other => return Err(other),
        })
    }
}

/// Starts every event in the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    /// An [`EventKind`] id.
    pub kind: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// `tgid << 32 | tid` of the thread that caused it.
    pub pid_tgid: u64,
}
const _: () = assert!(size_of::<EventHeader>() == 24);

impl EventHeader {
    pub fn tgid(&self) -> u32 {
        (self.pid_tgid >> 32) as u32
    }
    pub fn tid(&self) -> u32 {
        self.pid_tgid as u32
    }
}

/// Which side of a connection the traced process is on.
pub const ROLE_UNKNOWN: u32 = 0;
pub const ROLE_SERVER: u32 = 1;
pub const ROLE_CLIENT: u32 = 2;

/// Address families as the kernel numbers them.
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `listen_fd` when there is none (connect, or an fd found at attach time).
pub const NO_FD: u32 = u32::MAX;

/// [`EventKind::ConnOpen`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// [`ROLE_SERVER`] for accept, [`ROLE_CLIENT`] for connect.
    pub role: u32,
    /// The listening socket an accepted connection came from, or [`NO_FD`].
    pub listen_fd: u32,
    /// Address family of `peer_addr`, 0 when the caller passed no address buffer.
    pub family: u16,
    /// Peer port, host byte order.
    pub peer_port: u16,
    /// Peer address: IPv4 in the first 4 bytes, IPv6 in all 16.
    pub peer_addr: [u8; 16],
    /// Local address of a TCP client socket, taken when the kernel moves it to
    /// ESTABLISHED (`sock:inet_sock_set_state`). Family 0 = unknown (server sockets:
    /// the agent knows their listener's address; non-blocking connects: a
    /// [`EventKind::ConnEstablished`] event follows).
    pub local_family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// For [`EventKind::ConnFail`]: the errno (positive), 0 when the socket closed
    /// while connecting without an error report (the caller gave up: a timeout).
    pub error: i32,
    pub local_addr: [u8; 16],
    /// For [`EventKind::ConnFail`]: when the connect began (`header.ts_ns` is when it
    /// failed). 0 otherwise.
    pub start_ns: u64,
}
const _: () = assert!(size_of::<ConnOpenEvent>() == 88);

/// [`EventKind::ConnAdopt`]: the socket as the kernel knows it (`open.role` is
/// [`ROLE_UNKNOWN`], `open.listen_fd` is [`NO_FD`]; addresses filled for TCP).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnAdoptEvent {
    pub open: ConnOpenEvent,
    /// The socket's inode number: two fds of one process with the same inode are one
    /// connection (fds 0 and 1 of an inetd-style server).
    pub inode: u64,
}
const _: () = assert!(size_of::<ConnAdoptEvent>() == 96);

/// [`EventKind::ConnDup`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnDupEvent {
    pub header: EventHeader,
    /// The tracked fd that was duplicated.
    pub fd: u32,
    /// The new fd naming the same socket (whatever it named before is closed).
    pub new_fd: u32,
}
const _: () = assert!(size_of::<ConnDupEvent>() == 32);

/// Direction of a [`DataEvent`], seen from the traced process.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// [`EventKind::Data`], followed in the ring by `head_len + tail_len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// [`DIR_INGRESS`] or [`DIR_EGRESS`].
    pub direction: u32,
    /// Bytes the syscall really moved (its return value).
    pub total_len: u64,
    /// Bytes of the chunk's start copied, `<= MAX_HEAD`.
    pub head_len: u32,
    /// Bytes of the chunk's end copied (only when `total_len > head_len`), `<= MAX_TAIL`.
    pub tail_len: u32,
    /// The syscall, one of the `SYS_*` ids below (diagnostics only).
    pub syscall: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<DataEvent>() == 56);

/// Payload room of the kernel's scratch buffer. Larger than [`MAX_PAYLOAD`] on purpose:
/// the verifier bounds `offset + length` of each copy by the sum of both maxima, so the
/// buffer must hold that sum even though only `MAX_PAYLOAD` bytes are ever used.
pub const SCRATCH_PAYLOAD: usize = 4 * MAX_HEAD;

/// A [`DataEvent`] with its payload buffer, as the kernel side assembles it before
/// copying `size_of::<DataEvent>() + head_len + tail_len` bytes of it into the ring.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEventBuf {
    pub event: DataEvent,
    pub payload: [u8; SCRATCH_PAYLOAD],
}
const _: () = assert!(size_of::<DataEventBuf>() == 56 + SCRATCH_PAYLOAD);
const _: () = assert!(MAX_HEAD.is_power_of_two() && MAX_TAIL.is_power_of_two());

pub const SYS_READ: u32 = 1;
pub const SYS_READV: u32 = 2;
pub const SYS_RECVFROM: u32 = 3;
pub const SYS_RECVMSG: u32 = 4;
pub const SYS_WRITE: u32 = 5;
pub const SYS_WRITEV: u32 = 6;
pub const SYS_SENDTO: u32 = 7;
pub const SYS_SENDMSG: u32 = 8;
pub const SYS_SENDFILE: u32 = 9;
/// Plaintext read through OpenSSL's `SSL_read`/`SSL_read_ex` (a uprobe, not a syscall):
/// the data of a TLS connection, under the fd of its socket ([`NO_FD`] when the socket
/// could not be told yet).
pub const SYS_SSL_READ: u32 = 10;
/// Plaintext written through `SSL_write`/`SSL_write_ex`.
pub const SYS_SSL_WRITE: u32 = 11;

/// [`EventKind::ConnClose`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnCloseEvent {
    pub header: EventHeader,
    pub fd: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ConnCloseEvent>() == 32);

/// [`EventKind::ProcessFork`] and [`EventKind::ProcessExit`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcessEvent {
    pub header: EventHeader,
    /// The new process (fork) or the exiting one (exit).
    pub pid: u32,
    /// The forking process (fork); 0 for exit.
    pub parent_pid: u32,
}
const _: () = assert!(size_of::<ProcessEvent>() == 32);

/// [`EventKind::Bind`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BindEvent {
    pub header: EventHeader,
    pub fd: u32,
    /// Local port, host byte order.
    pub port: u16,
    pub family: u16,
}
const _: () = assert!(size_of::<BindEvent>() == 32);

/// [`EventKind::GoroutineCreate`] / [`EventKind::GoroutineExit`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoroutineEvent {
    pub header: EventHeader,
    pub goid: u64,
    /// Goroutine that ran the `go` statement (0 when unknown).
    pub parent_goid: u64,
    /// PC of the `go` statement (g.gopc).
    pub gopc: u64,
    /// Entry of the goroutine's function (g.startpc).
    pub startpc: u64,
}
const _: () = assert!(size_of::<GoroutineEvent>() == 56);

/// [`EventKind::GcPause`] / [`EventKind::GcCycle`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GcEvent {
    pub header: EventHeader,
    pub start_ns: u64,
    pub end_ns: u64,
}
const _: () = assert!(size_of::<GcEvent>() == 40);

/// [`EventKind::GoHttpServe`] / [`EventKind::GoHttpRoundTrip`]: which goroutine
/// uses which socket fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoConnEvent {
    pub header: EventHeader,
    /// The current goroutine (R14's g.goid).
    pub goid: u64,
    /// g.parentGoid of the current goroutine (0 when unknown: Go < 1.21).
    pub parent_goid: u64,
    /// The socket's fd (`poll.FD.Sysfd`), or `u32::MAX` when it could not be read.
    pub fd: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<GoConnEvent>() == 48);

/// Per-process facts the Go probes need, keyed by tgid: offsets into `runtime.g`
/// for the binary's Go version (0 = field unknown, not read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GoProcInfo {
    pub goid_off: u32,
    pub parent_goid_off: u32,
    pub gopc_off: u32,
    pub startpc_off: u32,
    /// Bit 0: `stopTheWorldWithSema` takes a `stwReason` (Go >= 1.21), so GC pauses can
    /// be told from other stops.
    pub flags: u32,
    /// `net/http.conn.rwc` (net.Conn interface; its data word is at +8). 0 = the
    /// net/http probes are not attached for this process.
    pub http_conn_rwc_off: u32,
    /// `net/http.persistConn.conn` (net.Conn interface).
    pub persist_conn_conn_off: u32,
    /// `net.netFD.pfd` (internal/poll.FD) inside the netFD a `*net.TCPConn` points to.
    pub netfd_pfd_off: u32,
    /// `internal/poll.FD.Sysfd`.
    pub poll_fd_sysfd_off: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<GoProcInfo>() == 40);
pub const GO_FLAG_STW_REASON: u32 = 1;

/// Values of the Go net.Conn type map (`GO_CONN_TYPES`): what the data word of a
/// `net.Conn` interface value of that dynamic type points at.
/// `*net.TCPConn`, `*net.UnixConn`: `net.conn{fd *netFD}`.
pub const GO_CONN_NETFD: u32 = 1;
/// `*crypto/tls.Conn`, whose first field is the underlying `net.Conn`.
pub const GO_CONN_TLS: u32 = 2;

/// Offsets of kernel struct fields, from the running kernel's BTF (the agent patches the
/// object's `KOFFS` global at load). A path whose flag bit is clear is disabled.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    /// [`KOFF_ADOPT`] | [`KOFF_FSBASE`].
    pub flags: u32,
    /// `task_struct.thread.fsbase` (amd64).
    pub task_fsbase: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_inode: u32,
    pub file_private_data: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    /// `struct sock` fields (its `__sk_common` included).
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 80);
/// The fd -> file -> socket walk (socket adoption) may run.
pub const KOFF_ADOPT: u32 = 1;
/// The current goroutine may be read in syscall tracepoints (`task_fsbase` is set).
pub const KOFF_FSBASE: u32 = 2;

/// Counters the kernel side keeps in a per-CPU array, indexed by these ids.
pub const STAT_RINGBUF_DROPS: u32 = 0;
pub const STAT_EVENTS: u32 = 1;
pub const STAT_STASH_FULL: u32 = 2;
pub const STAT_READ_ERRORS: u32 = 3;
pub const STAT_SOCKMAP_FULL: u32 = 4;
/// Sockets a traced process used without accepting or connecting them, adopted.
pub const STAT_ADOPTED: u32 = 5;
/// Socket fds duplicated by a traced process (dup, dup2, dup3, fcntl F_DUPFD).
pub const STAT_DUPS: u32 = 6;
pub const STAT_COUNT: u32 = 8;
const _: () = assert!(STAT_DUPS < STAT_COUNT);

/// Offsets into tracepoint records, patched into the kernel object's `TP_FIELDS` at
/// load time from tracefs (`events/<sys>/<name>/format`): record layouts differ between
/// kernels, so the kernel side hard-codes none of them. Indices into `TP_FIELDS`.
pub mod tp {
    /// A field this kernel's record does not have.
    pub const NO_FIELD: u32 = u32::MAX;
    /// syscalls/sys_enter_*: offset of the first argument (each is an 8-byte slot).
    pub const SYS_ARG0: usize = 0;
    /// syscalls/sys_exit_*: offset of `ret`.
    pub const SYS_RET: usize = 1;
    /// task/task_newtask `pid` (4 bytes) and `clone_flags` (8 bytes).
    pub const NEWTASK_PID: usize = 2;
    pub const NEWTASK_CLONE_FLAGS: usize = 3;
    /// sched/sched_process_exit `group_dead` (1 byte; newer than 6.12: Debian's 6.1 and 6.12 lack it).
    pub const EXIT_GROUP_DEAD: usize = 4;
    /// sock/inet_sock_set_state `skaddr` (8), `oldstate` (4), `newstate` (4), then a tuple.
    pub const STATE_SKADDR: usize = 5;
    pub const STATE_OLD: usize = 6;
    pub const STATE_NEW: usize = 7;
    pub const STATE_TUPLE: usize = 8;
    /// sock/inet_sk_error_report `error` (4), then a tuple.
    pub const ERROR_ERROR: usize = STATE_TUPLE + TUPLE_LEN;
    pub const ERROR_TUPLE: usize = ERROR_ERROR + 1;
    /// A 4-tuple's fields, relative to `STATE_TUPLE` / `ERROR_TUPLE`.
    pub const TUPLE_SPORT: usize = 0;
    pub const TUPLE_DPORT: usize = 1;
    pub const TUPLE_FAMILY: usize = 2;
    pub const TUPLE_PROTOCOL: usize = 3;
    pub const TUPLE_SADDR: usize = 4;
    pub const TUPLE_DADDR: usize = 5;
    pub const TUPLE_SADDR6: usize = 6;
    pub const TUPLE_DADDR6: usize = 7;
    pub const TUPLE_LEN: usize = 8;
    pub const TP_FIELD_COUNT: usize = ERROR_TUPLE + TUPLE_LEN;
    const _: () = assert!(TP_FIELD_COUNT == 25);
}

/// Value of the per-target map: flags for one traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TargetInfo {
    /// 1 = follow forks: children become targets too.
    pub follow_forks: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<TargetInfo>() == 8);

/// Key of the tracked-socket map.
pub fn sock_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data without padding or invalid bit patterns.
    unsafe impl aya::Pod for super::TargetInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GoProcInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
}
