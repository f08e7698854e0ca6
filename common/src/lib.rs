//! Wire types shared by the kernel programs (`ebpf/`) and the agent (`agent/`).
//!
//! Every kernel event is one [`EventHeader`] followed by a payload whose layout is fixed
//! by its [`EventKind`]. Kind ids are part of the wire format and never change meaning;
//! new kinds take new ids. All structs are `#[repr(C)]`, have no implicit padding and no
//! `bool` fields, and their sizes are pinned by compile-time asserts so both sides agree.
#![no_std]

use core::mem::size_of;

pub mod frame;
pub mod h2frame;

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
/// How many iovec entries readv/writev/recvmsg/sendmsg probes walk without `bpf_loop`
/// (kernels before 5.17, or framing turned off): the walk is unrolled.
pub const MAX_IOV: usize = 8;
/// How many they walk with `bpf_loop`, one iovec per step (Linux's UIO_MAXIOV is 1024;
/// grpcio's C core writes ~30 per sendmsg).
pub const MAX_IOV_LOOP: u32 = 256;

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
    /// A Go goroutine is opening a gRPC stream ([`GoRpcCallEvent`]: entry of grpc-go's
    /// `internal/transport.(*http2Client).NewStream`, once per stream of every call). The
    /// stream is written by grpc-go's own writer goroutine, so this is the only record of
    /// who made it.
    GoGrpcCall = 21,
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
            21 => Self::GoGrpcCall,
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
    /// The socket's class (`CLASS_*`) after this syscall in the low byte, its
    /// `SockInfo::generation` in the high 16 bits. For [`CLASS_TLS`], [`CLASS_UNKNOWN`]
    /// and [`CLASS_MUTED`] no payload follows (`head_len` and `tail_len` are 0): the
    /// event only says how many bytes moved.
    pub class: u32,
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

/// Bytes of a gRPC method name (`/package.Service/Method`) a [`GoRpcCallEvent`] carries.
pub const GO_RPC_METHOD_CAP: usize = 128;

/// [`EventKind::GoGrpcCall`]: the goroutine that started a gRPC call, and the call's
/// method as grpc-go got it (the HTTP/2 `:path` of the stream it opens).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoRpcCallEvent {
    pub header: EventHeader,
    /// The calling goroutine (R14's g.goid).
    pub goid: u64,
    /// g.parentGoid of the calling goroutine (0 when unknown: Go < 1.21).
    pub parent_goid: u64,
    /// The method string's full length; `method` holds its first
    /// `min(method_len, GO_RPC_METHOD_CAP - 1)` bytes.
    pub method_len: u32,
    pub _pad: u32,
    pub method: [u8; GO_RPC_METHOD_CAP],
}
const _: () = assert!(size_of::<GoRpcCallEvent>() == 48 + GO_RPC_METHOD_CAP);

impl GoRpcCallEvent {
    /// The method, when it was copied whole.
    pub fn method(&self) -> Option<&[u8]> {
        let n = self.method_len as usize;
        (n > 0 && n < GO_RPC_METHOD_CAP).then(|| &self.method[..n])
    }
}

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
/// Sockets classified on their first bytes, one counter per class:
/// `STAT_CLASSIFIED + class - 1` for [`CLASS_HTTP1`]..=[`CLASS_DEFERRED`].
pub const STAT_CLASSIFIED: u32 = 8;
/// Bytes moved on sockets whose payload is not copied to userspace (classes
/// [`CLASS_TLS`], [`CLASS_UNKNOWN`], [`CLASS_MUTED`]), first chunk included.
pub const STAT_PAYLOAD_SUPPRESSED: u32 = STAT_CLASSIFIED + CLASS_DEFERRED as u32;
/// Chunks the kernel's request framing cut data syscalls into (at a request's start, a
/// header block's rest or a chunk-size line; see `frame`).
pub const STAT_FRAME_SPLITS: u32 = 14;
/// Request streams whose framing the kernel gave up (see `frame`): captured from each
/// syscall's start for the rest of the connection.
pub const STAT_FRAME_LOST: u32 = 15;
/// Chunks the kernel's HTTP/2 framing cut data syscalls into (see `h2frame`).
pub const STAT_H2_SPLITS: u32 = 16;
/// HTTP/2 socket directions whose frames the kernel stopped following (a read failed,
/// too many steps, the first syscall's frames not followable): captured from each
/// syscall's start from then on.
pub const STAT_H2_LOST: u32 = 17;
pub const STAT_COUNT: u32 = 18;
const _: () = assert!(STAT_PAYLOAD_SUPPRESSED < STAT_FRAME_SPLITS && STAT_FRAME_LOST < STAT_COUNT);

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

/// Value of the tracked-socket map (`SOCKS`): what the kernel knows of one socket fd.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// [`ROLE_SERVER`], [`ROLE_CLIENT`] or [`ROLE_UNKNOWN`] (adopted or found at attach
    /// time: possibly joined mid-stream).
    pub role: u32,
    /// A `CLASS_*` id: what its first bytes say it speaks, or that the agent muted it.
    pub class: u8,
    /// `SOCK_*` bits.
    pub flags: u8,
    /// Set by the kernel when it starts tracking the socket, different (mostly) for the
    /// next socket on the same fd number: the agent's mute names the socket it means,
    /// not whatever reuses its fd by the time the mute is written.
    pub generation: u16,
}
const _: () = assert!(size_of::<SockInfo>() == 8);
const _: () = assert!(CLASSIFY_LEN.is_power_of_two() && CLASSIFY_LEN > MAX_METHOD + 2);
/// The class was decided on bytes the process wrote (else: read).
pub const SOCK_CLASSIFIED_EGRESS: u8 = 1;

impl SockInfo {
    pub fn new(role: u32) -> Self {
        Self {
            role,
            ..Self::default()
        }
    }
}

/// Socket classes (`SockInfo::class`, `DataEvent::class`). Never renumber.
/// No data moved yet: the next data syscall classifies the socket.
pub const CLASS_UNSEEN: u8 = 0;
/// An HTTP/1.x request or status line: payload captured.
pub const CLASS_HTTP1: u8 = 1;
/// The HTTP/2 client preface: payload captured.
pub const CLASS_HTTP2: u8 = 2;
/// A TLS record header: ciphertext, never copied (plaintext comes from TLS uprobes).
pub const CLASS_TLS: u8 = 3;
/// Anything else (binary protocols, Redis, garbage): never copied.
pub const CLASS_UNKNOWN: u8 = 4;
/// The first bytes could not decide (too short, or a socket joined mid-stream):
/// payload captured and the agent's parser decides (it may mute the socket).
pub const CLASS_DEFERRED: u8 = 5;
/// The agent's parser gave up on this socket (not HTTP, or an upgraded/tunnelled
/// stream) and told the kernel to stop copying its payload.
pub const CLASS_MUTED: u8 = 6;

/// Whether a socket of this class has its payload copied to userspace.
#[inline(always)]
pub fn class_captures(class: u8) -> bool {
    !matches!(class, CLASS_TLS | CLASS_UNKNOWN | CLASS_MUTED)
}

/// How many first bytes [`classify`] looks at (a power of two, for index masks): more
/// than the longest method token the agent's HTTP/1 parser accepts (20), a space and
/// one byte of the target.
pub const CLASSIFY_LEN: usize = 32;

/// What a socket's first bytes say, before the kernel maps it to a stored class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Http1,
    Http2,
    Tls,
    Unknown,
    /// The bytes are a strict prefix of something we would capture: too short to tell.
    NeedMore,
}

/// Methods taken as HTTP/1 whatever their target looks like (absolute-form and
/// authority-form targets included), each with its space.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
const H1_RESPONSE: &[u8] = b"HTTP/1.";
/// The agent's HTTP/1 parser takes any method token up to this long.
const MAX_METHOD: usize = 20;

/// How `first[..len]` relates to `pat`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// `first` starts with all of `pat`.
    Whole,
    /// `first` is shorter than `pat` and is a prefix of it.
    Part,
    No,
}

#[inline(always)]
fn prefix(first: &[u8; CLASSIFY_LEN], len: usize, pat: &[u8]) -> Prefix {
    // Indices are below `pat.len()` (a constant <= CLASSIFY_LEN after inlining), so
    // the kernel build has no bounds checks left to fail.
    for (i, (&p, &b)) in pat.iter().zip(first.iter()).enumerate() {
        if i >= len {
            return Prefix::Part;
        }
        if p != b {
            return Prefix::No;
        }
    }
    Prefix::Whole
}

/// Decides what a socket speaks from the first bytes it moved: `first[..len]` (`len`
/// at most [`CLASSIFY_LEN`]; later bytes are ignored). Pure, bounded and without
/// loops over `len`, so that the kernel programs run it as is; the agent's unit tests
/// and fuzzers run the very same code. A short first chunk that could still become a
/// request or status line (a client writing byte by byte) is `NeedMore`, never
/// `Unknown`: muting HTTP by mistake would lose spans, keeping garbage only costs copies.
#[inline(always)]
pub fn classify(first: &[u8; CLASSIFY_LEN], len: usize) -> Class {
    let len = if len > CLASSIFY_LEN {
        CLASSIFY_LEN
    } else {
        len
    };
    if len == 0 {
        return Class::NeedMore;
    }
    // TLS record header: content type (change_cipher_spec, alert, handshake,
    // application_data), then protocol version 3.0 (SSL 3) to 3.4.
    if (0x14..=0x17).contains(&first[0]) {
        if len < 2 || (first[1] == 3 && len < 3) {
            return Class::NeedMore;
        }
        if first[1] == 3 && first[2] <= 4 {
            return Class::Tls;
        }
        return Class::Unknown;
    }
    // HTTP/2's server connection preface: a SETTINGS frame (not an ACK) on stream 0,
    // its length a multiple of 6 below 2^16. A server may write it before it reads the
    // client's preface (grpc-go, Go net/http), so it can be a server socket's first bytes.
    if first[0] == 0 {
        let mut settings = true;
        for (i, want) in [(3usize, 4u8), (4, 0), (5, 0), (6, 0), (7, 0), (8, 0)] {
            if i < len && first[i] != want {
                settings = false;
            }
        }
        if settings {
            if len < 9 {
                return Class::NeedMore;
            }
            if (((first[1] as u32) << 8) | first[2] as u32).is_multiple_of(6) {
                return Class::Http2;
            }
        }
    }
    match prefix(first, len, H2_PREFACE) {
        Prefix::Whole => return Class::Http2,
        // Would pass for an extension method below, but it is HTTP/2's start.
        Prefix::Part => return Class::NeedMore,
        Prefix::No => {}
    }
    let mut need_more = false;
    match prefix(first, len, H1_RESPONSE) {
        Prefix::Whole => return Class::Http1,
        Prefix::Part => need_more = true,
        Prefix::No => {}
    }
    for m in METHODS {
        match prefix(first, len, m) {
            Prefix::Whole => return Class::Http1,
            Prefix::Part => need_more = true,
            Prefix::No => {}
        }
    }
    // Any other method token (WebDAV, PURGE, ...) with an origin-form or `*` target:
    // `TOKEN SP /` or `TOKEN SP *`.
    let mut token = 0;
    for (i, &b) in first.iter().enumerate() {
        if i >= len || !(b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            break;
        }
        token = i + 1;
    }
    if token == len && token <= MAX_METHOD {
        need_more = true;
    } else if token > 0 && token <= MAX_METHOD && first[token & (CLASSIFY_LEN - 1)] == b' ' {
        if token + 1 >= len {
            need_more = true;
        } else {
            let t = first[(token + 1) & (CLASSIFY_LEN - 1)];
            if t == b'/' || t == b'*' {
                return Class::Http1;
            }
        }
    }
    if need_more {
        Class::NeedMore
    } else {
        Class::Unknown
    }
}

/// [`classify`] on a slice (userspace).
pub fn classify_bytes(bytes: &[u8]) -> Class {
    let mut first = [0u8; CLASSIFY_LEN];
    let len = bytes.len().min(CLASSIFY_LEN);
    first[..len].copy_from_slice(&bytes[..len]);
    classify(&first, len)
}

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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockInfo {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// First bytes of real traffic (captured from the programs named), and what the
    /// kernel must decide on each.
    const TABLE: &[(&str, &[u8], Class)] = &[
        (
            "curl 8 request",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
            Class::Http1,
        ),
        (
            "nginx 1.22 response",
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 05 Dec 2026 14:00:00 GMT\r\n",
            Class::Http1,
        ),
        (
            "python http.server HTTP/1.0 response",
            b"HTTP/1.0 404 File not found\r\n",
            Class::Http1,
        ),
        (
            "h2 client preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            Class::Http2,
        ),
        (
            "grpc-go 1.33 server preface (SETTINGS before the client's preface)",
            b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x40\x00",
            Class::Http2,
        ),
        (
            "Go net/http server preface",
            b"\x00\x00\x18\x04\x00\x00\x00\x00\x00\x00\x05\x00\x10\x00\x00\x00\x03",
            Class::Http2,
        ),
        ("SETTINGS ACK is no preface", b"\x00\x00\x00\x04\x01\x00\x00\x00\x00", Class::Unknown),
        ("SETTINGS of a broken length", b"\x00\x00\x07\x04\x00\x00\x00\x00\x00\x00", Class::Unknown),
        ("start of a SETTINGS frame", b"\x00\x00\x06\x04", Class::NeedMore),
        (
            "openssl s_client TLS 1.2 ClientHello record",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1f",
            Class::Tls,
        ),
        (
            "TLS application data",
            b"\x17\x03\x03\x00\x1c\xde\xad",
            Class::Tls,
        ),
        ("redis RESP PING", b"*1\r\n$4\r\nPING\r\n", Class::Unknown),
        ("redis reply", b"+PONG\r\n", Class::Unknown),
        ("redis inline", b"PING\r\n", Class::Unknown),
        ("random bytes", b"\x9c\x04\xf1\x00\x7f\x13\x88\xfe\x01", Class::Unknown),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", Class::Unknown),
        ("lowercase method", b"get / HTTP/1.1\r\n", Class::Unknown),
        ("WebDAV PROPFIND", b"PROPFIND /dav/ HTTP/1.1\r\n", Class::Http1),
        ("proxy absolute form", b"GET http://example.com/ HTTP/1.1\r\n", Class::Http1),
        ("CONNECT authority form", b"CONNECT example.com:443 HTTP/1.1\r\n", Class::Http1),
        ("OPTIONS asterisk", b"OPTIONS * HTTP/1.1\r\n", Class::Http1),
        ("token without a target", b"SET key value\r\n", Class::Unknown),
        ("HTTP/2 status line is not HTTP/1", b"HTTP/2 200\r\n", Class::Unknown),
        // A slow client writes its request byte by byte: never muted for that.
        ("one byte of GET", b"G", Class::NeedMore),
        ("GET without its space", b"GET", Class::NeedMore),
        ("start of a status line", b"HTTP/", Class::NeedMore),
        ("start of the h2 preface", b"PRI * HTT", Class::NeedMore),
        ("start of a TLS header", b"\x16\x03", Class::NeedMore),
        ("extension token cut", b"PROPFIND", Class::NeedMore),
        ("extension token and space", b"PROPFIND ", Class::NeedMore),
        ("TLS type with another version", b"\x16\x01\x00", Class::Unknown),
        ("too long a token", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ /", Class::Unknown),
    ];

    #[test]
    fn classifies_real_first_bytes() {
        for (name, bytes, want) in TABLE {
            assert_eq!(classify_bytes(bytes), *want, "{name}");
        }
    }

    /// Whatever bytes follow, a prefix that decided keeps its decision: the kernel sees
    /// only the first syscall's bytes, the agent's fuzzers whole streams.
    #[test]
    fn decision_is_stable_under_longer_input() {
        for (name, bytes, want) in TABLE {
            if *want == Class::NeedMore {
                continue;
            }
            let mut longer = std::vec::Vec::from(*bytes);
            longer.extend_from_slice(&[0xAA; 40]);
            assert_eq!(classify_bytes(&longer), *want, "{name}");
        }
    }

    /// No input of any length panics, and deciding never needs more than the window.
    #[test]
    fn total_on_every_short_input() {
        let mut x: u32 = 0x1234_5678;
        for n in 0..=64 {
            for _ in 0..2000 {
                let mut v = std::vec::Vec::with_capacity(n);
                for _ in 0..n {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    v.push(x as u8);
                }
                let c = classify_bytes(&v);
                if n >= CLASSIFY_LEN {
                    assert_ne!(c, Class::NeedMore, "{v:?}");
                }
            }
        }
    }
}
