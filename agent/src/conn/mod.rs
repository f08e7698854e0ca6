//! Per-connection state: which process and fd, which side we are on, the two byte
//! streams with their HTTP parsers, and the requests waiting for their responses.
//!
//! The tracker consumes decoded kernel events in order and emits finished spans. It is
//! single-threaded on purpose (one event thread owns it): events of one connection must
//! be applied in ring order, and no locking keeps the per-event cost small.

mod follow;
pub mod procnet;
#[cfg(test)]
mod tests;

use foldhash::{HashMap, HashMapExt};
use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use periscope_common::{
    AF_INET, AF_INET6, CLASS_TLS, ConnOpenEvent, DIR_INGRESS, DataEvent, GoConnEvent,
    GoRpcCallEvent, GoroutineEvent, NO_FD, ROLE_CLIENT, ROLE_SERVER, SYS_SSL_READ, SYS_SSL_WRITE,
};

use crate::{
    events::Event,
    http::{
        Chunk, Direction, Message, MessageKind, ParserStats, StreamParser, count_request_starts,
        count_response_starts,
    },
    metrics::{Exemplar, HttpKind, HttpRecord, HttpSeries, Metrics, RpcKey},
    resource::{Resource, ResourceConfig},
    route::{RouteConfig, RouteTable},
    runtime::process,
    sampling::{ParentInfo, SampleInput, Sampler, SamplerStats},
    span::{
        Span, SpanKind, SpanStatus,
        build::{Endpoints, Ids, build, is_error, method_name},
    },
};

/// Requests waiting for a response on one connection (pipelining depth) before the
/// oldest is given up: bounds memory on a connection whose responses we cannot see.
const MAX_PENDING: usize = 64;
/// HTTP/2 client stream identities fixed ahead of their exchange, per connection: one
/// per open stream at most.
const MAX_H2_IDS: usize = crate::h2::MAX_STREAMS;
/// Ended HTTP/2 client streams remembered per connection (see `Conn::h2_ended`).
const MAX_H2_ENDED: usize = 64;
/// Closed HTTP/2 client connections remembered (see `Tracker::h2_closed`).
const MAX_H2_CLOSED: usize = 256;
/// How often process gauges are sampled from /proc.
const PROC_SAMPLE_NS: u64 = 1_000_000_000;
/// Connections tracked at once; beyond it new connections are not followed (counted).
const MAX_CONNS: usize = 65_536;
/// Goroutine parent links kept for context lineage (`--go-goroutine-events` only).
const MAX_GO_PARENTS: usize = 1_000_000;
/// How many creators up a goroutine's context is looked for.
const MAX_LINEAGE_DEPTH: usize = 8;
/// grpc-go calls waiting for their stream, per process.
const MAX_GRPC_CALLS: usize = 1024;
/// How long after a grpc-go call started its stream may start (the call may first wait
/// for its connection); older calls are forgotten.
const GRPC_CALL_WINDOW_NS: u64 = 5_000_000_000;
/// Context keys (see [`ActiveSpan`]): a thread id, or a goroutine id with this bit.
const GOROUTINE_KEY: u64 = 1 << 63;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Unknown,
    Server,
    Client,
}

struct Conn {
    role: Role,
    ends: Endpoints,
    /// Bytes the traced process read.
    ingress: StreamParser,
    /// Bytes the traced process wrote.
    egress: StreamParser,
    /// Requests parsed, in order, waiting for their response.
    pending: VecDeque<Pending>,
    /// Requests seen on this connection so far: the k-th request the client wrote is
    /// the k-th one the server read, which pairs the two ends of one connection.
    requests_seen: u64,
    /// Go server: the goroutine running `net/http.(*conn).serve` for this socket.
    go_server_goid: Option<u64>,
    /// Go client: the goroutine (and its creator) that handed the next request to
    /// this connection (`net/http.(*persistConn).roundTrip`).
    go_caller: Option<(u64, u64)>,
    /// Whether this end was opened while traced (accept/connect seen): only then do
    /// request counts start at the connection's first request.
    from_start: bool,
    /// A stream lost its message boundaries (a gap where the framing needed the bytes,
    /// malformed input, a guessed end): how many messages went by is unknown, so
    /// counting no longer pairs requests with responses. Nothing more is paired on this
    /// connection; every response seen is counted instead (see `pairing`).
    desynced: bool,
    /// Why pairing was lost (the first loss; meaningful once `desynced`).
    desync_cause: DesyncCause,
    /// Requests and responses seen since pairing was lost (see `unpaired_at_close`).
    lost_requests: u64,
    lost_responses: u64,
    /// Response syscalls since the loss whose bytes start a final response: once the
    /// request kinds are unknown (HEAD), the parser may swallow a response as another's
    /// body, but a server starts most responses with their own write.
    lost_response_starts: u64,
    /// Request lines in the captured bytes since the loss (see `count_request_starts`).
    lost_request_starts: u64,
    /// TLS on this connection (see `Tls`).
    tls: Tls,
    /// Bytes were fed to the parsers: only a connection's first bytes can say TLS.
    fed: bool,
    /// HTTP/2 (the client preface was seen): every later byte goes to this session
    /// instead of the HTTP/1 parsers.
    h2: Option<Box<crate::h2::Session>>,
    /// HTTP/2 client streams whose span identity was fixed before their exchange ended
    /// (a traced server read the request and joined it): stream id -> identity.
    h2_ids: HashMap<u32, Ids>,
    /// The highest client stream id [`Tracker::link_grpc_streams`] has looked at.
    h2_linked_up_to: u32,
    /// The last HTTP/2 client streams that ended (at most [`MAX_H2_ENDED`]), for a
    /// server whose end of the stream ends later (a stream the client reset): stream
    /// ids are never reused on a connection, so the id names one stream for good.
    h2_ended: VecDeque<EndedStream>,
    /// Upgraded to HTTP/2 by `Upgrade: h2c`: the request that asked, whose entry (span
    /// identity, parent, context) stream 1's exchange takes over.
    h2_upgraded: Option<Box<Pending>>,
    /// The peer address was looked up in procfs (the accept did not give it).
    peer_looked_up: bool,
}

/// Remembers an HTTP/2 client stream that ended, for a traced server whose end of it
/// ends later.
fn push_ended(conn: &mut Conn, stream: u32, ids: &Ids, req: &Message) {
    if conn.h2_ended.len() >= MAX_H2_ENDED {
        conn.h2_ended.pop_front();
    }
    if let MessageKind::Request { method, target } = &req.kind {
        conn.h2_ended.push_back(EndedStream {
            stream,
            ids: ids.clone(),
            request: request_hash(method.as_str(), target),
        });
    }
}

/// A traced HTTP/2 client connection closed lately: its last ended streams, for a
/// server end that finishes a stream after the client closed (a stream the client
/// reset, then closed the connection).
struct ClosedH2Client {
    pid: u32,
    ended: VecDeque<EndedStream>,
}

/// An HTTP/2 client stream that ended: its id, its span's identity and a hash of its
/// method and path (what the server end must have read too).
struct EndedStream {
    stream: u32,
    ids: Ids,
    request: u64,
}

/// What is known of TLS on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// Plain bytes, as far as seen.
    No,
    /// A TLS record was seen and no plaintext has come from the TLS probes (yet): the
    /// socket's bytes are ciphertext and are not parsed.
    Opaque,
    /// Plaintext comes from the TLS probes; the socket's own bytes are ignored.
    Plain,
}

/// Whether a stream's first bytes are a TLS record: handshake (22), alert (21), change
/// cipher spec (20) or application data (23), protocol version 3.x with x <= 4.
pub fn looks_like_tls(head: &[u8]) -> bool {
    matches!(head, [20..=23, 3, 0..=4, ..])
}

impl Conn {
    fn new(role: Role, ends: Endpoints) -> Self {
        let (ingress, egress) = match role {
            Role::Client => (Direction::Response, Direction::Request),
            // An fd found at attach time is assumed to serve until its bytes say
            // otherwise (see `classify`).
            Role::Server | Role::Unknown => (Direction::Request, Direction::Response),
        };
        // Streams of an fd found at attach time may be joined mid-message.
        let parser = if role == Role::Unknown {
            StreamParser::mid_stream
        } else {
            StreamParser::new
        };
        Self {
            role,
            ends,
            ingress: parser(ingress),
            egress: parser(egress),
            pending: VecDeque::new(),
            requests_seen: 0,
            go_server_goid: None,
            go_caller: None,
            from_start: role != Role::Unknown,
            desynced: false,
            desync_cause: DesyncCause::Other,
            lost_requests: 0,
            lost_responses: 0,
            lost_response_starts: 0,
            lost_request_starts: 0,
            tls: Tls::No,
            fed: false,
            h2: None,
            h2_ids: HashMap::new(),
            h2_linked_up_to: 0,
            h2_ended: VecDeque::new(),
            h2_upgraded: None,
            peer_looked_up: false,
        }
    }

    /// Plaintext of this connection arrives from the TLS probes: parse it from a clean
    /// start, whatever the socket's own bytes did to the parsers.
    fn become_tls_plain(&mut self) {
        if self.tls == Tls::No {
            let mut fresh = Conn::new(self.role, self.ends);
            fresh.go_server_goid = self.go_server_goid;
            fresh.go_caller = self.go_caller;
            fresh.from_start = self.from_start;
            *self = fresh;
        }
        self.tls = Tls::Plain;
        self.ends.tls = true;
    }

    /// Exchanges of a desynced connection that got no span. Either stream may have
    /// lost whole messages in gaps, so the larger of the two counts is the better
    /// (lower) bound.
    fn unpaired_at_close(&self) -> u64 {
        self.lost_requests
            .max(self.lost_responses)
            .max(self.lost_response_starts)
            .max(self.lost_request_starts)
    }
}

/// One traced process.
struct Proc {
    resource: Arc<Resource>,
    /// Client calls inherit the server span their thread is serving (off for Go).
    thread_context: bool,
    routes: RouteTable,
    /// Local address of each listening fd, resolved once from procfs.
    listeners: HashMap<u32, Option<SocketAddr>>,
    /// Network namespace (inode of /proc/PID/ns/net): loopback addresses only name
    /// the same socket within one.
    netns: Option<u64>,
}

/// Counters of the tracker, for self-telemetry.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrackerStats {
    pub spans: u64,
    pub requests: u64,
    pub responses_without_request: u64,
    pub requests_without_response: u64,
    pub parse_errors: u64,
    pub non_http_streams: u64,
    pub conns_opened: u64,
    pub conns_over_limit: u64,
    /// Server spans made children of the traced client span that sent the request.
    pub joined: u64,
    /// CLIENT spans for connects that failed.
    pub connect_failures: u64,
    /// Processes found to serve several connections per thread (thread context off).
    pub event_loop_processes: u64,
    /// Exchanges not turned into spans because their connection's pairing was lost
    /// (see `Conn::desynced`), added when the connection closes.
    pub unpaired_desync: u64,
    /// Responses delimited by their connection's close: whether the server closed in
    /// order or the peer reset mid-response is not captured, so their spans claim no
    /// response size.
    pub responses_ended_by_close: u64,
    /// `unpaired_desync` by what made the connection lose pairing, indexed by
    /// [`DesyncCause`].
    pub unpaired_desync_by_cause: [u64; DesyncCause::ALL.len()],
    /// Sockets a process used without accepting or connecting them (see `follow`).
    pub conns_adopted: u64,
    /// Socket fds duplicated onto other fds.
    pub conns_duplicated: u64,
    /// Connections found to carry TLS.
    pub tls_conns: u64,
    /// Of those, the ones whose plaintext came from the TLS probes.
    pub tls_conns_plaintext: u64,
    /// TLS plaintext whose socket could not be told (dropped).
    pub tls_unplaced: u64,
    /// Payload bytes received from the kernel (head and tail copies), by the socket's
    /// class (`DataEvent::class`, a `CLASS_*` id).
    pub payload_bytes: [u64; 7],
    /// Sockets the agent told the kernel to stop copying (their parser gave up).
    pub sockets_muted: u64,
    /// Mute requests that did not reach the kernel (socket gone, queue full).
    pub mute_failures: u64,
    /// HTTP/2 connections (client preface seen, or an h2c upgrade granted).
    pub h2_conns: u64,
    /// Of those, connections switched from HTTP/1.1 by `Upgrade: h2c` and a `101`.
    pub h2_upgrades: u64,
    /// Of those, connections older than the agent, joined in the middle of HTTP/2.
    pub h2_mid_stream: u64,
    /// Accepted connections whose addresses were read from procfs (the accept syscall
    /// did not ask for the peer's, or its entry was missed and no listening socket
    /// names the local end).
    pub peer_lookups: u64,
    /// HTTP/2 sessions' counters, added when their connection closes.
    pub h2: crate::h2::H2Stats,
    /// grpc-go calls whose client stream was linked to the goroutine that made them.
    pub grpc_calls_linked: u64,
    /// gRPC client streams that more than one recorded call could have opened: no
    /// in-process parent (see [`Tracker::grpc_caller`]).
    pub grpc_calls_ambiguous: u64,
    /// grpc-go calls not recorded because the table of calls was full.
    pub grpc_calls_dropped: u64,
}

/// Mute requests waiting for the event loop to write them to the kernel.
const MAX_MUTES: usize = 4096;

/// What made a connection lose pairing, for `periscope_exchanges_unpaired_desync`:
/// which capture limit to lift, or which input to look at, for fewer missing spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesyncCause {
    /// A gap (bytes beyond the capture) cut a start line or header section.
    HeaderGap,
    /// A gap hid a chunk-size line of a chunked body.
    ChunkGap,
    /// A gap hid where the next message starts.
    BoundaryGap,
    /// Malformed input (or a line over the parser's caps).
    Malformed,
    /// A message whose end was guessed (truncated at close) or anything else.
    Other,
}

impl DesyncCause {
    pub const ALL: [DesyncCause; 5] = [
        DesyncCause::HeaderGap,
        DesyncCause::ChunkGap,
        DesyncCause::BoundaryGap,
        DesyncCause::Malformed,
        DesyncCause::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DesyncCause::HeaderGap => "header_gap",
            DesyncCause::ChunkGap => "chunk_gap",
            DesyncCause::BoundaryGap => "boundary_gap",
            DesyncCause::Malformed => "malformed",
            DesyncCause::Other => "other",
        }
    }

    /// The cause of a loss between two snapshots of one stream's parser stats.
    fn between(before: &ParserStats, after: &ParserStats) -> DesyncCause {
        if after.gaps_in_header > before.gaps_in_header {
            DesyncCause::HeaderGap
        } else if after.gaps_in_chunk_framing > before.gaps_in_chunk_framing {
            DesyncCause::ChunkGap
        } else if after.gaps_hiding_start > before.gaps_hiding_start {
            DesyncCause::BoundaryGap
        } else if after.parse_errors > before.parse_errors {
            DesyncCause::Malformed
        } else {
            DesyncCause::Other
        }
    }
}

impl TrackerStats {
    /// Counts the exchanges a connection could not pair, by its cause.
    fn add_unpaired(&mut self, conn: &Conn) {
        let n = conn.unpaired_at_close();
        self.unpaired_desync += n;
        self.unpaired_desync_by_cause[conn.desync_cause as usize] += n;
    }
}

/// What the tracker needs besides events: where metrics go, how routes and sampling
/// are decided.
pub struct TrackerConfig {
    pub resource: ResourceConfig,
    pub routes: RouteConfig,
    pub sampler: Sampler,
    pub metrics: Arc<Metrics>,
}

/// A request waiting for its response. Its span identity is decided when the request
/// is seen, so that calls the serving thread makes meanwhile can name it as parent.
struct Pending {
    msg: Message,
    ids: Ids,
    /// The parent's sampling decision is not made yet: a span of this process (a
    /// client call made while serving) or of a traced client on this node.
    local_parent: bool,
    /// Context key (thread or goroutine) a server request is active under.
    ctx_key: u64,
    /// Index of the request on its connection (see `Conn::requests_seen`).
    seq: u64,
    /// Server request joined to a traced client: the client's service, for the
    /// service graph.
    client_service: Option<Arc<str>>,
    /// The whole request was read. An entry is made when its header section is
    /// complete, so that a response written before the body was read (an early error,
    /// 100-continue refused) still pairs with it; `msg` is then replaced by the
    /// complete request.
    complete: bool,
    /// Its response, when that came before the request's body was read.
    resp: Option<Message>,
}

/// A request paired with its response, ready to become metrics and maybe a span.
struct Exchange {
    kind: SpanKind,
    req: Message,
    resp: Message,
    ends: Endpoints,
    ids: Ids,
    local_parent: bool,
    ctx_key: u64,
    client_service: Option<Arc<str>>,
    /// HTTP/2: the stream's gRPC details (and that it is HTTP/2 at all).
    h2: Option<Box<H2Extra>>,
}

/// What an HTTP/2 exchange adds (see `crate::span::rpc`).
struct H2Extra {
    grpc: Option<crate::h2::GrpcInfo>,
}

/// The server span a thread is working on: calls it makes are its children. This is
/// the thread-per-request model (Python threaded servers, gunicorn sync, C servers,
/// Java-style pools); Go processes are excluded because their goroutines hop threads.
#[derive(Clone, Debug)]
struct ActiveSpan {
    trace_id: crate::span::TraceId,
    span_id: crate::span::SpanId,
    flags: u8,
    trace_state: String,
    /// The server connection the request came on.
    fd: u32,
}

impl ActiveSpan {
    /// A new span's identity in this span's trace, with this span as its parent.
    fn child(&self) -> Ids {
        Ids {
            trace_id: self.trace_id,
            span_id: crate::span::context::new_span_id(),
            parent_span_id: self.span_id,
            flags: self.flags,
            trace_state: self.trace_state.clone(),
        }
    }
}

/// What `on_message` needs besides the connection.
struct MessageCtx<'a> {
    pid: u32,
    tid: u32,
    fd: u32,
    /// Set when a thread read a request on one connection while a request read on
    /// another is still unanswered: an event loop, not thread-per-request.
    multiplexed: bool,
    thread_context: bool,
    active: &'a mut HashMap<(u32, u64), ActiveSpan>,
    stats: &'a mut TrackerStats,
    /// Every other connection, to find the client end of a server connection.
    peers: Option<Peers<'a>>,
    go_parents: &'a HashMap<(u32, u64), u64>,
}

/// The connections and the index that find the traced client end of a connection.
struct Peers<'a> {
    conns: &'a HashMap<(u32, u32), Box<Conn>>,
    clients: &'a HashMap<(IpAddr, u16), Vec<ClientEnd>>,
    procs: &'a HashMap<u32, Proc>,
}

/// A traced client socket, indexed by its local address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClientEnd {
    server_port: u16,
    pid: u32,
    fd: u32,
}

pub struct Tracker {
    /// Boxed: a connection leaves the map while its event is handled, and moving the
    /// whole struct out and back for every event was a measurable share of the CPU.
    conns: HashMap<(u32, u32), Box<Conn>>,
    procs: HashMap<u32, Proc>,
    resource_cfg: ResourceConfig,
    route_cfg: RouteConfig,
    sampler: Sampler,
    metrics: Arc<Metrics>,
    /// Add to a kernel monotonic timestamp to get Unix time.
    mono_to_unix_offset: i128,
    stats: TrackerStats,
    scratch: Vec<Message>,
    exchanges: Vec<Exchange>,
    /// (pid, context key) -> the server span that thread or goroutine serves now.
    active: HashMap<(u32, u64), ActiveSpan>,
    last_proc_sample_ns: u64,
    /// Client sockets of traced processes by local (address, port).
    clients: HashMap<(IpAddr, u16), Vec<ClientEnd>>,
    /// HTTP/2 client connections closed lately, by local (address, port), oldest first
    /// in `h2_closed_order`.
    h2_closed: HashMap<(IpAddr, u16), ClosedH2Client>,
    h2_closed_order: VecDeque<(IpAddr, u16)>,
    /// (pid, goid) -> the goroutine that created it (from goroutine events).
    go_parents: HashMap<(u32, u64), u64>,
    /// grpc-go calls per process whose client stream has not been seen yet.
    grpc_calls: HashMap<u32, GrpcCalls>,
    /// Fds that name another fd's connection (dup, adopted twice); see `follow`.
    aliases: follow::Aliases,
    /// (pid, fd) of sockets whose payload is of no use any more (see `take_mutes`).
    mutes: Vec<(u32, u32, u16)>,
}

/// A socket address as the kernel events carry it: IPv4 in the first 4 bytes, IPv6 in
/// all 16 (v4-mapped ones shown as IPv4); `None` for other families.
fn sockaddr(family: u16, addr: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn peer_addr(ev: &ConnOpenEvent) -> Option<SocketAddr> {
    sockaddr(ev.family, &ev.peer_addr, ev.peer_port)
}

/// Local address of a client socket (from the TCP state tracepoint), if known.
fn local_addr(ev: &ConnOpenEvent) -> Option<SocketAddr> {
    sockaddr(ev.local_family, &ev.local_addr, ev.local_port)
}

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC (what bpf_ktime_get_ns reads).
pub fn mono_to_unix_offset() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the valid timespec we pass.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let mono = now(libc::CLOCK_MONOTONIC);
    let real = now(libc::CLOCK_REALTIME);
    real - mono
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            conns: HashMap::new(),
            procs: HashMap::new(),
            resource_cfg: cfg.resource,
            route_cfg: cfg.routes,
            sampler: cfg.sampler,
            metrics: cfg.metrics,
            mono_to_unix_offset: mono_to_unix_offset(),
            stats: TrackerStats::default(),
            scratch: Vec::new(),
            exchanges: Vec::new(),
            active: HashMap::new(),
            last_proc_sample_ns: 0,
            clients: HashMap::new(),
            h2_closed: HashMap::new(),
            h2_closed_order: VecDeque::new(),
            go_parents: HashMap::new(),
            grpc_calls: HashMap::new(),
            aliases: follow::Aliases::default(),
            mutes: Vec::new(),
        }
    }

    /// Go programs run goroutines on any thread, so a thread says nothing about which
    /// request a call belongs to there.
    pub fn disable_thread_context(&mut self, pid: u32) {
        if let Some(p) = self.procs.get_mut(&pid) {
            p.thread_context = false;
        }
    }

    /// A thread of `pid` serves several connections at once (an event loop: nginx,
    /// Node.js, asyncio): a thread says nothing about which request a call belongs to,
    /// and guessing would give wrong parents. Calls there become roots from now on.
    fn stop_thread_context(&mut self, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        if !p.thread_context {
            return;
        }
        p.thread_context = false;
        self.active
            .retain(|(q, k), _| *q != pid || *k & GOROUTINE_KEY != 0);
        self.stats.event_loop_processes += 1;
        tracing::info!(
            "PID {pid} serves several connections per thread (an event loop): its outgoing calls are not linked to the requests it serves"
        );
    }

    /// Periodic upkeep: sample /proc for process gauges (at most once per
    /// [`PROC_SAMPLE_NS`]: with every process of a node traced, /proc reads add up),
    /// forget the metrics of processes that exited long ago.
    pub fn housekeeping(&mut self) {
        let now = monotonic_ns();
        if now.saturating_sub(self.last_proc_sample_ns) < PROC_SAMPLE_NS {
            return;
        }
        self.last_proc_sample_ns = now;
        for &pid in self.procs.keys() {
            self.metrics.update_process(pid, |p| {
                process::sample(pid, p);
            });
        }
        self.metrics.gc(self.to_unix(monotonic_ns()));
    }

    pub fn sampler_stats(&self) -> SamplerStats {
        self.sampler.stats()
    }

    fn to_unix(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.mono_to_unix_offset).max(0) as u64
    }

    pub fn stats(&self) -> TrackerStats {
        let mut s = self.stats;
        s.parse_errors += self
            .conns
            .values()
            .map(|c| c.ingress.stats().parse_errors + c.egress.stats().parse_errors)
            .sum::<u64>();
        // Open HTTP/2 sessions count too (closed ones were added at close).
        for session in self.conns.values().filter_map(|c| c.h2.as_deref()) {
            s.h2.add(&session.stats());
        }
        s
    }

    pub fn add_process(&mut self, pid: u32) -> Arc<Resource> {
        self.add_process_from(pid, pid)
    }

    /// A forked child of a traced process: described as its parent (same program until
    /// it execs) when its own /proc entries are already gone.
    pub fn add_forked_process(&mut self, pid: u32, parent: u32) -> Arc<Resource> {
        self.note_fork(pid, parent);
        let gone = std::fs::read_link(format!("/proc/{pid}/exe")).is_err();
        self.add_process_from(pid, if gone { parent } else { pid })
    }

    fn add_process_from(&mut self, pid: u32, source: u32) -> Arc<Resource> {
        let cfg = &self.resource_cfg;
        let route_cfg = &self.route_cfg;
        let resource = self
            .procs
            .entry(pid)
            .or_insert_with(|| Proc {
                resource: Arc::new(Resource::for_process_from(pid, source, cfg)),
                thread_context: true,
                routes: RouteTable::new(route_cfg),
                listeners: HashMap::new(),
                netns: std::fs::metadata(format!("/proc/{source}/ns/net"))
                    .ok()
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m)),
            })
            .resource
            .clone();
        let now = self.to_unix(crate::conn::monotonic_ns());
        self.metrics.add_service(&resource, now);
        // Seed the live thread count; thread start/exit events newer than the listing
        // keep it exact from here (`housekeeping` checks it against /proc).
        let listed_at = monotonic_ns();
        if let Some(n) = process::thread_count(pid) {
            self.metrics.update_process(pid, |p| {
                p.threads = n;
                p.seeded_at_ns = listed_at;
            });
        }
        resource
    }

    pub fn resource(&self, pid: u32) -> Option<Arc<Resource>> {
        self.procs.get(&pid).map(|p| p.resource.clone())
    }

    /// Number of traced processes still alive.
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.keys().copied().collect()
    }

    /// Forgets a process that exited, finishing what its connections can still finish.
    /// Returns the fds it had open so the caller can drop them from the kernel map.
    pub fn remove_process(&mut self, pid: u32, ts_ns: u64, sink: &mut dyn FnMut(Span)) -> Vec<u32> {
        let mut fds: Vec<u32> = self
            .conns
            .keys()
            .filter(|(p, _)| *p == pid)
            .map(|(_, fd)| *fd)
            .collect();
        for &fd in &fds {
            self.close(pid, fd, ts_ns, sink);
        }
        fds.extend(self.forget_aliases(pid));
        self.procs.remove(&pid);
        self.active.retain(|(p, _), _| *p != pid);
        self.go_parents.retain(|(p, _), _| *p != pid);
        self.grpc_calls.remove(&pid);
        self.sampler.forget_service(pid);
        self.metrics
            .service_exited(pid, self.to_unix(crate::conn::monotonic_ns()));
        fds
    }

    pub fn handle(&mut self, event: Event<'_>, sink: &mut dyn FnMut(Span)) {
        match event {
            Event::ConnOpen(ev) => self.open(&ev),
            Event::Data { ev, head, tail } => self.data(&ev, head, tail, sink),
            Event::ConnClose(ev) => self.close_fd(ev.header.tgid(), ev.fd, ev.header.ts_ns, sink),
            Event::ThreadStart(ev) => self
                .metrics
                .update_process(ev.parent_pid, |p| p.thread_event(true, ev.header.ts_ns)),
            Event::ThreadExit(ev) => self
                .metrics
                .update_process(ev.parent_pid, |p| p.thread_event(false, ev.header.ts_ns)),
            // Forks, exits, execs and binds change the target set; the caller handles them
            // because they touch kernel maps too.
            Event::Fork(_) | Event::Exit(_) | Event::Exec(_) | Event::Bind(_) => {}
            // Go runtime events belong to the runtime stage (see runtime::go).
            Event::GoroutineCreate(_)
            | Event::GoroutineExit(_)
            | Event::GcPause(_)
            | Event::GcCycle(_) => {}
            Event::ConnFail(ev) => self.connect_failed(&ev, sink),
            Event::GoHttpServe(ev) => self.go_serve(&ev),
            Event::GoHttpRoundTrip(ev) => self.go_round_trip(&ev),
            Event::ConnEstablished(ev) => self.established(&ev),
            Event::ConnAdopt(ev) => self.adopt(&ev, sink),
            Event::ConnDup(ev) => self.dup(&ev, sink),
            Event::GoSocketRead(ev) => self.go_socket_read(&ev),
            Event::GoGrpcCall(ev) => self.grpc_call(&ev),
        }
    }

    fn open(&mut self, ev: &ConnOpenEvent) {
        let pid = ev.header.tgid();
        self.fd_reused(pid, ev.fd);
        let role = match ev.role {
            ROLE_SERVER => Role::Server,
            ROLE_CLIENT => Role::Client,
            _ => Role::Unknown,
        };
        let mut ends = Endpoints {
            local: local_addr(ev),
            peer: peer_addr(ev),
            tls: false,
        };
        if role == Role::Server && ev.listen_fd != NO_FD {
            ends.local = self.listener_addr(pid, ev.listen_fd);
        }
        if self.conns.len() >= MAX_CONNS && !self.conns.contains_key(&(pid, ev.fd)) {
            self.stats.conns_over_limit += 1;
            return;
        }
        self.stats.conns_opened += 1;
        // A reused fd number means the old connection is gone even if we missed its close.
        if let Some(old) = self
            .conns
            .insert((pid, ev.fd), Box::new(Conn::new(role, ends)))
        {
            self.stats.add_unpaired(&old);
            self.unindex_client(pid, ev.fd, &old);
        }
        if role == Role::Client {
            self.index_client(pid, ev.fd, &ends);
        }
    }

    /// A non-blocking connect completed: its local address is known now.
    fn established(&mut self, ev: &ConnOpenEvent) {
        let pid = ev.header.tgid();
        let (Some(local), Some(conn)) = (local_addr(ev), self.conns.get_mut(&(pid, ev.fd))) else {
            return;
        };
        if conn.role != Role::Client || conn.ends.local.is_some() {
            return;
        }
        conn.ends.local = Some(local);
        let ends = conn.ends;
        self.index_client(pid, ev.fd, &ends);
    }

    /// Makes a client socket findable by its local address (see `find_client_end`),
    /// once both of its addresses are known.
    fn index_client(&mut self, pid: u32, fd: u32, ends: &Endpoints) {
        let (Some(local), Some(peer)) = (ends.local, ends.peer) else {
            return;
        };
        // A new connection from the same address: the closed one's streams are history.
        self.h2_closed.remove(&(local.ip(), local.port()));
        let v = self.clients.entry((local.ip(), local.port())).or_default();
        v.retain(|c| (c.pid, c.fd) != (pid, fd));
        v.push(ClientEnd {
            server_port: peer.port(),
            pid,
            fd,
        });
    }

    fn unindex_client(&mut self, pid: u32, fd: u32, conn: &Conn) {
        if conn.role != Role::Client {
            return;
        }
        let Some(local) = conn.ends.local else {
            return;
        };
        let key = (local.ip(), local.port());
        if let Some(v) = self.clients.get_mut(&key) {
            v.retain(|c| (c.pid, c.fd) != (pid, fd));
            if v.is_empty() {
                self.clients.remove(&key);
            }
        }
    }

    fn go_serve(&mut self, ev: &GoConnEvent) {
        let fd = self.aliases.resolve(ev.header.tgid(), ev.fd);
        if let Some(c) = self.conns.get_mut(&(ev.header.tgid(), fd)) {
            c.go_server_goid = Some(ev.goid);
        }
    }

    fn go_round_trip(&mut self, ev: &GoConnEvent) {
        let fd = self.aliases.resolve(ev.header.tgid(), ev.fd);
        if let Some(c) = self.conns.get_mut(&(ev.header.tgid(), fd)) {
            c.go_caller = Some((ev.goid, ev.parent_goid));
        }
    }

    /// A goroutine is opening a grpc-go stream (one event per stream: each attempt of
    /// a retried call has its own): kept until that client stream is seen. A goroutine
    /// opens one stream at a time (the opening returns once the stream has its id), so
    /// its new opening replaces its previous one; the probe's double firing on a stack
    /// growth repeats the same opening.
    fn grpc_call(&mut self, ev: &GoRpcCallEvent) {
        let Some(method) = ev.method() else {
            return;
        };
        let pid = ev.header.tgid();
        if !self.procs.contains_key(&pid) {
            return;
        }
        let table = self.grpc_calls.entry(pid).or_default();
        let now = ev.header.ts_ns;
        let calls = &mut table.calls;
        calls.retain(|c| c.goid != ev.goid && now.saturating_sub(c.ts_ns) <= GRPC_CALL_WINDOW_NS);
        table
            .unassigned
            .retain(|u| now.saturating_sub(u.start_ns) <= GRPC_CALL_WINDOW_NS);
        if calls.len() >= MAX_GRPC_CALLS {
            self.stats.grpc_calls_dropped += 1;
            return;
        }
        calls.push(GrpcCall {
            goid: ev.goid,
            parent_goid: ev.parent_goid,
            ts_ns: now,
            method: method.into(),
        });
    }

    /// The goroutine (and its parent) whose grpc-go call opened a client stream of
    /// `path` in `pid` that started at `start_ns`: the one call of that method started
    /// before the stream, within [`GRPC_CALL_WINDOW_NS`]. Taken from the table. None when
    /// there is no such call, or more than one (counted): which of two concurrent calls
    /// of one method got which stream id is not visible here, and a guess could give the
    /// span another request's parent. Openings whose streams must all have been seen
    /// (as many ambiguous streams as openings they could be from) are forgotten.
    fn grpc_caller(&mut self, pid: u32, path: &str, start_ns: u64) -> Option<(u64, u64)> {
        let table = self.grpc_calls.get_mut(&pid)?;
        let candidates: Vec<(u64, u64)> = table
            .calls
            .iter()
            .filter(|c| {
                &*c.method == path.as_bytes()
                    && c.ts_ns <= start_ns
                    && start_ns - c.ts_ns <= GRPC_CALL_WINDOW_NS
            })
            .map(|c| (c.goid, c.ts_ns))
            .collect();
        match candidates.len() {
            0 => None,
            1 => {
                let i = table
                    .calls
                    .iter()
                    .position(|c| (c.goid, c.ts_ns) == candidates[0])?;
                let c = table.calls.swap_remove(i);
                self.stats.grpc_calls_linked += 1;
                Some((c.goid, c.parent_goid))
            }
            n => {
                self.stats.grpc_calls_ambiguous += 1;
                // Each opening opens one stream. Once as many unassigned streams as
                // there are candidates could only be theirs, every candidate has its
                // stream: none is waiting any more, and keeping them would make every
                // later stream of the method ambiguous too.
                if table.unassigned.len() >= MAX_GRPC_CALLS {
                    table.unassigned.remove(0);
                }
                table.unassigned.push(Unassigned {
                    start_ns,
                    candidates: candidates.clone(),
                });
                let within = |u: &Unassigned| u.candidates.iter().all(|id| candidates.contains(id));
                if table.unassigned.iter().filter(|u| within(u)).count() == n {
                    table
                        .calls
                        .retain(|c| !candidates.contains(&(c.goid, c.ts_ns)));
                    table.unassigned.retain(|u| !within(u));
                }
                None
            }
        }
    }

    /// Streams a client HTTP/2 connection of `pid` opened since the last look, while
    /// grpc-go calls of `pid` wait for theirs: each whose call is known (see
    /// [`Self::grpc_caller`]) gets its span's identity now, a child of the server span
    /// the calling goroutine (or its creator) serves at the time the stream opens, for
    /// its exchange and a traced server's join to use.
    fn link_grpc_streams(&mut self, pid: u32, conn: &mut Conn) {
        if self.grpc_calls.get(&pid).is_none_or(|t| t.calls.is_empty()) {
            return;
        }
        let Some(session) = conn.h2.as_ref() else {
            return;
        };
        let opened = session.requests_opened_after(conn.h2_linked_up_to);
        for (stream, path, start_ns) in opened {
            conn.h2_linked_up_to = conn.h2_linked_up_to.max(stream);
            if conn.h2_ids.contains_key(&stream) || conn.h2_ids.len() >= MAX_H2_IDS {
                continue;
            }
            let Some(caller) = self.grpc_caller(pid, &path, start_ns) else {
                continue;
            };
            if let Some(a) = goroutine_span(&self.active, &self.go_parents, pid, caller) {
                conn.h2_ids.insert(stream, a.child());
            }
        }
    }

    /// Goroutine creations (with `--go-goroutine-events`): who created whom, so that a
    /// call made by a grandchild of a handler goroutine still finds the handler.
    pub fn goroutine_created(&mut self, ev: &GoroutineEvent) {
        if ev.parent_goid == 0 || self.go_parents.len() >= MAX_GO_PARENTS {
            return;
        }
        self.go_parents
            .insert((ev.header.tgid(), ev.goid), ev.parent_goid);
    }

    pub fn goroutine_exited(&mut self, ev: &GoroutineEvent) {
        self.go_parents.remove(&(ev.header.tgid(), ev.goid));
    }

    /// A CLIENT span for a connect that failed: no request was ever sent, so it is
    /// named `connect` and carries the peer and the error.
    fn connect_failed(&mut self, ev: &ConnOpenEvent, sink: &mut dyn FnMut(Span)) {
        let pid = ev.header.tgid();
        let Some((resource, thread_context)) = self
            .procs
            .get(&pid)
            .map(|p| (p.resource.clone(), p.thread_context))
        else {
            return;
        };
        let Some(peer) = peer_addr(ev) else {
            return;
        };
        self.stats.connect_failures += 1;
        // The attempt's socket is gone; forget what we knew of it.
        if let Some(old) = self.conns.remove(&(pid, ev.fd))
            && old.pending.is_empty()
            && old.role == Role::Client
        {
            self.unindex_client(pid, ev.fd, &old);
        }
        let parent = thread_context
            .then(|| self.active.get(&(pid, ev.header.tid() as u64)))
            .flatten();
        let ids = match parent {
            Some(a) => a.child(),
            None => Ids {
                trace_id: crate::span::context::new_trace_id(),
                span_id: crate::span::context::new_span_id(),
                parent_span_id: [0; 8],
                flags: 0,
                trace_state: String::new(),
            },
        };
        let end = ev.header.ts_ns;
        let start = if ev.start_ns != 0 && ev.start_ns <= end {
            ev.start_ns
        } else {
            end
        };
        let decision = self.sampler.decide(&SampleInput {
            trace_id: ids.trace_id,
            parent: None,
            explicit_randomness: None,
            is_error: true,
            duration_ns: end - start,
            service_key: pid,
            now_ns: end,
        });
        if !decision.sampled {
            return;
        }
        let mut ids = ids;
        ids.flags |= 1;
        let span = crate::span::build::connect_failure(
            peer,
            local_addr(ev),
            ev.error,
            ids,
            &resource,
            self.to_unix(start),
            self.to_unix(end),
        );
        sink(span);
    }

    fn listener_addr(&mut self, pid: u32, listen_fd: u32) -> Option<SocketAddr> {
        let proc = self.procs.get_mut(&pid)?;
        *proc.listeners.entry(listen_fd).or_insert_with(|| {
            let inode = procnet::fd_inode(pid, listen_fd)?;
            procnet::tcp_rows(pid)
                .into_iter()
                .find(|r| r.inode == inode)
                .map(|r| r.local)
        })
    }

    /// Sockets to mute in the kernel (`Probes::set_class` with `CLASS_MUTED`): the
    /// request stream is not HTTP/1.x or was upgraded (WebSocket, CONNECT tunnel), so
    /// its parser ignores every byte. Desynced connections are not muted: their bytes
    /// still count the exchanges that got no span.
    pub fn take_mutes(&mut self) -> std::vec::Drain<'_, (u32, u32, u16)> {
        self.mutes.drain(..)
    }

    /// The outcome of one mute request, for self-telemetry.
    pub fn mute_done(&mut self, ok: bool) {
        if ok {
            self.stats.sockets_muted += 1;
        } else {
            self.stats.mute_failures += 1;
        }
    }

    fn data(&mut self, ev: &DataEvent, head: &[u8], tail: &[u8], sink: &mut dyn FnMut(Span)) {
        let pid = ev.header.tgid();
        if let Some(n) = self.stats.payload_bytes.get_mut((ev.class & 0xff) as usize) {
            *n += (head.len() + tail.len()) as u64;
        }
        let from_tls = matches!(ev.syscall, SYS_SSL_READ | SYS_SSL_WRITE);
        if ev.fd == NO_FD {
            self.stats.tls_unplaced += u64::from(from_tls);
            return;
        }
        // The connection's primary fd (a dup'ed fd names its original's connection).
        let fd = self.aliases.resolve(pid, ev.fd);
        let key = (pid, fd);
        if !self.conns.contains_key(&key) {
            // A socket that was open before we attached: learn its addresses once.
            if self.conns.len() >= MAX_CONNS {
                self.stats.conns_over_limit += 1;
                return;
            }
            let ends = procnet::fd_addrs(pid, ev.fd)
                .map(|r| Endpoints {
                    local: Some(r.local),
                    peer: Some(r.remote),
                    tls: false,
                })
                .unwrap_or_default();
            self.conns
                .insert(key, Box::new(Conn::new(Role::Unknown, ends)));
        }
        // Out of the map while its messages are handled, so that the other
        // connections can be searched for this one's client end.
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        if conn.role == Role::Server
            && (conn.ends.peer.is_none() || conn.ends.local.is_none())
            && !conn.peer_looked_up
        {
            // Accepted without a peer address (libuv's accept(fd, NULL, NULL): node)
            // that the kernel could not read from the socket either (no BTF offsets),
            // or by an accept whose entry the kernel missed (no listening socket to
            // name the local end): read them once from procfs, for the span's
            // addresses and the join to a traced client.
            conn.peer_looked_up = true;
            self.stats.peer_lookups += 1;
            if let Some(r) = procnet::fd_addrs(pid, fd) {
                conn.ends.peer = conn.ends.peer.or(Some(r.remote));
                conn.ends.local = conn.ends.local.or(Some(r.local));
            }
        }
        // TLS: the socket's bytes are ciphertext; plaintext comes from the TLS probes.
        if from_tls {
            if conn.tls != Tls::Plain {
                self.stats.tls_conns += u64::from(conn.tls == Tls::No);
                self.stats.tls_conns_plaintext += 1;
                conn.become_tls_plain();
            }
        } else if conn.tls != Tls::No
            || (ev.class & 0xff) as u8 == CLASS_TLS
            || (!conn.fed && looks_like_tls(head))
        {
            if conn.tls == Tls::No {
                self.stats.tls_conns += 1;
                conn.tls = Tls::Opaque;
                conn.ends.tls = true;
            }
            self.conns.insert(key, conn);
            return;
        }
        let suppressed = !periscope_common::class_captures(ev.class as u8);
        if suppressed && !conn.ingress.is_passthrough() && conn.h2.is_none() {
            // The kernel judged the socket (TLS, not HTTP) or we muted it: only byte
            // counts come from now on.
            self.stats.non_http_streams += 1;
        }
        let ingress = ev.direction == DIR_INGRESS;
        if !suppressed && conn.h2.is_none() && head.starts_with(crate::h2::PREFACE) {
            let parser = if ingress { &conn.ingress } else { &conn.egress };
            if parser.stats().messages == 0 {
                // The client's preface: reading it means serving, writing it calling.
                let role = if ingress { Role::Server } else { Role::Client };
                if role != conn.role {
                    let ends = conn.ends;
                    let tls = conn.tls;
                    *conn = Conn::new(role, ends);
                    conn.tls = tls;
                }
                conn.h2 = Some(Box::default());
                conn.fed = true;
                self.stats.h2_conns += 1;
            }
        } else if !suppressed
            && conn.h2.is_none()
            && !ingress
            && !conn.fed
            && conn.role == Role::Server
            && periscope_common::classify_bytes(head) == periscope_common::Class::Http2
        {
            // The server's preface (a SETTINGS frame, the kernel classifier's rule)
            // before the client's was read (grpc-go, Go net/http).
            conn.h2 = Some(Box::default());
            conn.fed = true;
            self.stats.h2_conns += 1;
        } else if !suppressed
            && conn.h2.is_none()
            && !conn.from_start
            && conn.role == Role::Unknown
            && conn.ingress.stats().messages == 0
            && conn.egress.stats().messages == 0
            && crate::h2::looks_like_frames(head, ev.total_len)
        {
            // A connection older than the agent, in the middle of HTTP/2: its streams
            // are counted, never given headers decoded against an unknown table.
            conn.h2 = Some(Box::new(crate::h2::Session::mid_stream()));
            conn.fed = true;
            self.stats.h2_conns += 1;
            self.stats.h2_mid_stream += 1;
        }
        if conn.h2.is_some() {
            // Count-only chunks reach the session as gaps.
            let chunk = Chunk::captured(ev.header.ts_ns, ev.total_len, head, tail);
            self.h2_data(key, conn, ingress, chunk, sink);
            return;
        }
        if suppressed {
            conn.ingress.not_http1();
            conn.egress.not_http1();
        } else if conn.role == Role::Unknown {
            classify(&mut conn, ev.direction, head);
        }
        let chunk = Chunk {
            ts_ns: ev.header.ts_ns,
            total_len: ev.total_len,
            head,
            tail,
            run: ev.class & periscope_common::frame::RUN_MASK,
        };
        let mut out = std::mem::take(&mut self.scratch);
        let parser = if ingress {
            &mut conn.ingress
        } else {
            &mut conn.egress
        };
        let was_http = !parser.is_passthrough();
        let losses = parser.losses();
        let before = parser.stats();
        let resyncs = before.resyncs;
        // A byte count on a request stream may be a body discarded unread after its
        // answer (lighttpd's lingering close consumes it with MSG_TRUNC); what the
        // request was up to then, in case the count hides framing the parser needed.
        // Not for a run of whole chunks (the kernel read that framing itself).
        let discarded = if head.is_empty() && tail.is_empty() && !suppressed && chunk.run == 0 {
            parser.open_request()
        } else {
            None
        };
        conn.fed = true;
        parser.feed(&chunk, &mut out);
        let cause = DesyncCause::between(&before, &parser.stats());
        if was_http && parser.is_passthrough() && parser.stats().messages == 0 {
            self.stats.non_http_streams += 1;
        }
        let lost = parser.losses() > losses || out.iter().any(|m| m.truncated);
        // Each time a stream resyncs there were bytes of at least one message it could
        // not parse: on a desynced connection that is one more exchange without a span.
        let new_resyncs = parser.stats().resyncs - resyncs;
        let requests_are_ingress = conn.role != Role::Client;
        let is_request_stream = ingress == requests_are_ingress;
        // The request whose body is still being read, if no entry stands for it yet.
        let open_head = (is_request_stream
            && (!out.is_empty() || conn.pending.back().is_none_or(|p| p.complete)))
        .then(|| parser.open_request())
        .flatten();
        let mut ctx = MessageCtx {
            pid,
            tid: ev.header.tid(),
            fd,
            multiplexed: false,
            thread_context: self.procs.get(&pid).is_some_and(|p| p.thread_context),
            active: &mut self.active,
            stats: &mut self.stats,
            peers: Some(Peers {
                conns: &self.conns,
                clients: &self.clients,
                procs: &self.procs,
            }),
            go_parents: &self.go_parents,
        };
        if lost {
            // The request answered before its body was read, whose rest is now gone
            // unseen: the exchange is what the server did (it read this much, then
            // answered), as when the connection closes instead.
            if let Some(m) = discarded.filter(|_| is_request_stream && !conn.desynced)
                && let Some(i) = conn
                    .pending
                    .iter()
                    .position(|p| !p.complete && p.resp.is_some())
            {
                let mut p = conn.pending.remove(i).expect("index from position");
                p.msg = m;
                let resp = p.resp.take().expect("checked above");
                self.exchanges.push(exchange(&conn, p, resp));
            }
            desync(&mut conn, cause, &mut ctx);
        }
        if conn.desynced {
            if is_request_stream {
                conn.lost_requests += new_resyncs;
                // A resyncing parser skips whole reads that do not start with a
                // request (a body's end, then pipelined requests): count the request
                // lines seen in the captured head instead.
                conn.lost_request_starts += count_starts(count_request_starts, &chunk);
            } else {
                conn.lost_responses += new_resyncs;
                conn.lost_response_starts += count_starts(count_response_starts, &chunk);
            }
            drop_desynced(&mut conn, &mut out, is_request_stream);
        }
        for msg in out.drain(..) {
            if let Some(x) = on_message(&mut conn, msg, is_request_stream, &mut ctx) {
                self.exchanges.push(x);
            }
        }
        if let Some(head) = open_head.filter(|_| !conn.desynced) {
            on_request_head(&mut conn, head, &mut ctx);
        }
        let multiplexed = ctx.multiplexed;
        let request_parser = if requests_are_ingress {
            &conn.ingress
        } else {
            &conn.egress
        };
        // Upgraded to HTTP/2 in this chunk (h2c): the bytes after the `101` are the
        // server's first frames.
        let upgraded = conn.h2.is_some();
        let h2_rest = if upgraded {
            let parser = if ingress { &conn.ingress } else { &conn.egress };
            match parser.upgraded_at() {
                Some(at) => chunk.after(at),
                None => {
                    // Where the `101` ended is not known: the bytes after it are lost.
                    if let Some(session) = conn.h2.as_mut() {
                        session.lose(is_request_stream);
                    }
                    None
                }
            }
        } else {
            None
        };
        // A TLS connection's socket carries ciphertext the kernel already keeps to
        // itself; its plaintext comes from the TLS probes, which a mute does not stop.
        if !suppressed
            && !from_tls
            && !upgraded
            && !head.is_empty()
            && request_parser.is_passthrough()
        {
            if self.mutes.len() < MAX_MUTES {
                self.mutes.push((pid, ev.fd, (ev.class >> 16) as u16));
            } else {
                self.stats.mute_failures += 1;
            }
        }
        self.conns.insert(key, conn);
        if multiplexed {
            self.stop_thread_context(pid);
        }
        self.scratch = out;
        self.finish_exchanges(pid, sink);
        if let Some(rest) = h2_rest
            && let Some(conn) = self.conns.remove(&key)
        {
            self.h2_data(key, conn, ingress, rest, sink);
        }
    }

    /// A chunk of an HTTP/2 connection: its session pairs by stream id; each stream
    /// whose response ended becomes an exchange.
    fn h2_data(
        &mut self,
        key: (u32, u32),
        mut conn: Box<Conn>,
        ingress: bool,
        chunk: Chunk<'_>,
        sink: &mut dyn FnMut(Span),
    ) {
        let from_client = ingress == (conn.role != Role::Client);
        conn.fed = true;
        let mut out = Vec::new();
        if let Some(session) = conn.h2.as_mut() {
            session.feed(from_client, &chunk, &mut out);
        }
        let kind = if conn.role == Role::Client {
            SpanKind::Client
        } else {
            SpanKind::Server
        };
        if kind == SpanKind::Client && from_client {
            self.link_grpc_streams(key.0, &mut conn);
        }
        for x in out {
            self.stats.requests += 1;
            if x.stream_id == 1
                && let Some(p) = conn.h2_upgraded.take()
            {
                // The request that asked for the upgrade (h2c): its HTTP/1.1 entry
                // already has its identity, parent and context.
                conn.h2_ids.remove(&1);
                if kind == SpanKind::Client {
                    push_ended(&mut conn, 1, &p.ids, &x.req);
                }
                self.exchanges.push(Exchange {
                    kind,
                    ids: p.ids,
                    req: x.req,
                    resp: x.resp,
                    ends: conn.ends,
                    local_parent: p.local_parent,
                    ctx_key: p.ctx_key,
                    client_service: p.client_service,
                    h2: Some(Box::new(H2Extra { grpc: x.grpc })),
                });
                continue;
            }
            let mut client_service = None;
            let (ids, local_parent) = match kind {
                // Fixed already when a traced server joined the stream.
                SpanKind::Client => {
                    let ids = conn
                        .h2_ids
                        .remove(&x.stream_id)
                        .unwrap_or_else(|| Ids::for_request(kind, &x.req));
                    push_ended(&mut conn, x.stream_id, &ids, &x.req);
                    // A client span's parent is always this process's own span.
                    let local = ids.has_parent();
                    (ids, local)
                }
                SpanKind::Server => {
                    let joined = conn
                        .from_start
                        .then(|| self.h2_client_parent(key.0, &conn.ends, x.stream_id, &x.req))
                        .flatten();
                    match joined {
                        Some((parent, service)) => {
                            self.stats.joined += 1;
                            client_service = Some(service);
                            (parent.child(), true)
                        }
                        None => (Ids::for_request(kind, &x.req), false),
                    }
                }
            };
            self.exchanges.push(Exchange {
                kind,
                ids,
                req: x.req,
                resp: x.resp,
                ends: conn.ends,
                local_parent,
                ctx_key: u64::MAX,
                client_service,
                h2: Some(Box::new(H2Extra { grpc: x.grpc })),
            });
        }
        self.conns.insert(key, conn);
        self.finish_exchanges(key.0, sink);
    }

    /// The traced client end of an HTTP/2 server connection's stream: the client
    /// socket whose local address is the connection's peer, and on it the stream with
    /// the same id (both ends number streams alike) and the same method and path: open
    /// (the client span's identity is fixed here, for its exchange to use when it ends)
    /// or among the last ended (a stream the client reset ends there first).
    fn h2_client_parent(
        &mut self,
        server_pid: u32,
        ends: &Endpoints,
        stream: u32,
        req: &Message,
    ) -> Option<(Ids, Arc<str>)> {
        let MessageKind::Request { method, target } = &req.kind else {
            return None;
        };
        for c in client_candidates(&self.clients, &self.procs, server_pid, ends) {
            let Some(conn) = self.conns.get_mut(&(c.pid, c.fd)) else {
                continue;
            };
            if !conn.from_start || conn.role != Role::Client {
                continue;
            }
            let Some(session) = conn.h2.as_ref() else {
                continue;
            };
            if session.open_request(stream) != Some((method.as_str(), target.as_str())) {
                // Ended on the client's side already (it reset the stream)?
                let request = request_hash(method.as_str(), target);
                match conn
                    .h2_ended
                    .iter()
                    .find(|e| e.stream == stream && e.request == request)
                {
                    Some(e) => return Some((e.ids.clone(), service_name(&self.procs, c.pid))),
                    None => continue,
                }
            }
            if conn.h2_ids.len() >= MAX_H2_IDS {
                // Streams that ended without an exchange (reset, lost) leave theirs.
                let session = conn.h2.as_ref().expect("checked above");
                conn.h2_ids
                    .retain(|id, _| session.open_request(*id).is_some());
                if conn.h2_ids.len() >= MAX_H2_IDS {
                    return None;
                }
            }
            let ids = conn
                .h2_ids
                .entry(stream)
                .or_insert_with(|| Ids::for_request(SpanKind::Client, req))
                .clone();
            return Some((ids, service_name(&self.procs, c.pid)));
        }
        // The client's connection is closed already.
        let peer = ends.peer?;
        let closed = self.h2_closed.get(&(peer.ip(), peer.port()))?;
        if netns_apart(&self.procs, peer.ip(), server_pid, closed.pid) {
            return None;
        }
        let request = request_hash(method.as_str(), target);
        let e = closed
            .ended
            .iter()
            .find(|e| e.stream == stream && e.request == request)?;
        Some((e.ids.clone(), service_name(&self.procs, closed.pid)))
    }

    /// Turns paired exchanges into metrics (always) and spans (when sampled).
    fn finish_exchanges(&mut self, pid: u32, sink: &mut dyn FnMut(Span)) {
        let mut exchanges = std::mem::take(&mut self.exchanges);
        for x in exchanges.drain(..) {
            self.finish(pid, x, sink);
        }
        self.exchanges = exchanges;
    }

    fn finish(&mut self, pid: u32, x: Exchange, sink: &mut dyn FnMut(Span)) {
        let offset = self.mono_to_unix_offset;
        let to_unix = |ns: u64| (ns as i128 + offset).max(0) as u64;
        let Some(proc) = self.procs.get_mut(&pid) else {
            return;
        };
        let (method, target) = match &x.req.kind {
            MessageKind::Request { method, target } => (method.as_str(), target.as_str()),
            MessageKind::Response { .. } => return,
        };
        let status = x.resp.status().unwrap_or(0);
        // A gRPC call: its stream's gRPC view, and `package.Service` and `Method`. Its
        // method is its own low-cardinality route.
        let grpc =
            x.h2.as_ref()
                .and_then(|h| h.grpc.as_ref())
                .and_then(|g| Some((g, crate::span::rpc::grpc_method(target)?)));
        let grpc_route = grpc.map(|_| crate::route::Route::exact(target));
        let route = match x.kind {
            SpanKind::Server => Some(grpc_route.unwrap_or_else(|| proc.routes.route(target))),
            SpanKind::Client => None,
        };
        let ids = x.ids.clone();
        if x.kind == SpanKind::Server
            && self
                .active
                .get(&(pid, x.ctx_key))
                .is_some_and(|a| a.span_id == ids.span_id)
        {
            self.active.remove(&(pid, x.ctx_key));
        }
        let duration_ns = x.resp.end_ns.saturating_sub(x.req.start_ns);
        let error = match grpc {
            Some((g, _)) => crate::span::rpc::grpc_is_error(x.kind, g.status),
            None => is_error(x.kind, status),
        };
        if let Some(client) = &x.client_service {
            self.metrics.record_edge(
                client,
                &proc.resource.service_name,
                error,
                duration_ns as f64 / 1e9,
            );
        }
        let decision = self.sampler.decide(&SampleInput {
            trace_id: ids.trace_id,
            // A local parent's decision is not made yet (it ends after its children);
            // its children decide from the shared trace id like a root does.
            parent: (ids.has_parent() && !x.local_parent).then_some(ParentInfo {
                sampled: ids.flags & 1 != 0,
                remote: true,
            }),
            explicit_randomness: crate::sampling::explicit_randomness(&ids.trace_state),
            is_error: error,
            duration_ns,
            service_key: pid,
            now_ns: x.resp.end_ns,
        });
        let duration_s = duration_ns as f64 / 1e9;
        let rpc = grpc.map(|(g, (service, method))| RpcKey {
            service: Arc::from(service),
            method: Arc::from(method),
            grpc_status: g.status,
        });
        let error_type = match (&rpc, error) {
            (_, false) => None,
            // As the span's error.type: the gRPC code's name.
            (Some(r), true) => Some(Arc::from(
                r.grpc_status
                    .map_or("no_status", crate::span::rpc::grpc_code_name),
            )),
            (None, true) => Some(Arc::from(status.to_string())),
        };
        let series = HttpSeries {
            kind: HttpKind::from(x.kind),
            // A gRPC call's method and route are its rpc.service and rpc.method.
            method: match rpc {
                Some(_) => Arc::from(""),
                None => Arc::from(method_name(method)),
            },
            route: match (&rpc, &route) {
                (None, Some(r)) => Arc::from(r.as_str()),
                _ => Arc::from(""),
            },
            // Not an RPC attribute: kept out of the key so that labels stay unique.
            status: if rpc.is_some() { 0 } else { status },
            error_type,
            server_address: match x.kind {
                // server.address is the host alone; the port has its own label.
                SpanKind::Client => x
                    .req
                    .host
                    .as_deref()
                    .map(|h| Arc::from(crate::span::build::split_host(h).0)),
                SpanKind::Server => None,
            },
            server_port: match x.kind {
                SpanKind::Client => x.ends.peer.map_or(0, |p| p.port()),
                SpanKind::Server => 0,
            },
            rpc,
            overflow: false,
        };
        let exemplar = decision.sampled.then(|| Exemplar {
            value: duration_s,
            trace_id: ids.trace_id,
            span_id: ids.span_id,
            time_unix_ns: to_unix(x.resp.end_ns),
        });
        self.metrics.record_http(
            &proc.resource,
            HttpRecord {
                series,
                duration_s,
                request_body: x.req.body_bytes,
                response_body: (!x.resp.size_unknown).then_some(x.resp.body_bytes),
                exemplar,
            },
            route.as_ref().is_some_and(|r| r.is_overflow()),
        );
        self.stats.spans += 1;
        if !decision.sampled {
            return;
        }
        let mut ids = ids;
        ids.flags |= 1;
        // An overflowed route says nothing about the request: name the span by method.
        let route_name = route
            .as_ref()
            .filter(|r| !r.is_overflow())
            .map(|r| r.as_str());
        let mut span = build(
            x.kind,
            &x.req,
            &x.resp,
            x.ends,
            route_name,
            ids,
            &proc.resource,
            to_unix,
        );
        if let Some(h) = &x.h2 {
            crate::span::rpc::apply_h2(&mut span, target, h.grpc.as_ref());
        }
        debug_assert_eq!(span.status == SpanStatus::Error, error);
        sink(span);
    }

    fn close(&mut self, pid: u32, fd: u32, ts_ns: u64, sink: &mut dyn FnMut(Span)) {
        let Some(mut conn) = self.conns.remove(&(pid, fd)) else {
            return;
        };
        self.unindex_client(pid, fd, &conn);
        if let Some(p) = conn.h2_upgraded.take()
            && self
                .active
                .get(&(pid, p.ctx_key))
                .is_some_and(|a| a.span_id == p.ids.span_id)
        {
            // Stream 1 was never answered: its request is no one's context any more.
            self.active.remove(&(pid, p.ctx_key));
        }
        if let Some(mut session) = conn.h2.take() {
            session.close();
            self.stats.h2.add(&session.stats());
            if let (Role::Client, true, Some(local)) = (conn.role, conn.from_start, conn.ends.local)
                && !conn.h2_ended.is_empty()
            {
                let key = (local.ip(), local.port());
                if self.h2_closed_order.len() >= MAX_H2_CLOSED
                    && let Some(old) = self.h2_closed_order.pop_front()
                {
                    self.h2_closed.remove(&old);
                }
                self.h2_closed_order.push_back(key);
                self.h2_closed.insert(
                    key,
                    ClosedH2Client {
                        pid,
                        ended: std::mem::take(&mut conn.h2_ended),
                    },
                );
            }
            return;
        }
        let requests_are_ingress = conn.role != Role::Client;
        let mut out = Vec::new();
        // Close-delimited responses end here.
        let (req_stream, resp_stream) = if requests_are_ingress {
            (&mut conn.ingress, &mut conn.egress)
        } else {
            (&mut conn.egress, &mut conn.ingress)
        };
        // What was read of a request whose body never arrived in full, in case it was
        // answered early (the server read no further, then closed).
        let open_request = req_stream.open_request();
        // A request cut inside its header section (the client reset) has no entry yet,
        // and the server may have logged it: count it with the unanswered requests.
        let cut_head = req_stream.head_in_progress();
        let losses = req_stream.losses() + resp_stream.losses();
        let mut before = req_stream.stats();
        before += resp_stream.stats();
        req_stream.close(ts_ns, &mut out);
        let n_req = out.len();
        resp_stream.close(ts_ns, &mut out);
        let mut after = req_stream.stats();
        after += resp_stream.stats();
        let cause = DesyncCause::between(&before, &after);
        let lost =
            req_stream.losses() + resp_stream.losses() > losses || out.iter().any(|m| m.truncated);
        let msgs: Vec<(bool, Message)> = out
            .into_iter()
            .enumerate()
            .map(|(i, m)| (i < n_req, m))
            .collect();
        let mut ctx = MessageCtx {
            pid,
            tid: 0,
            fd,
            multiplexed: false,
            thread_context: false,
            active: &mut self.active,
            stats: &mut self.stats,
            peers: None,
            go_parents: &self.go_parents,
        };
        if lost {
            desync(&mut conn, cause, &mut ctx);
        }
        for (is_req, msg) in msgs {
            if conn.desynced {
                if is_req {
                    conn.lost_requests += 1;
                } else {
                    conn.lost_responses += 1;
                }
                continue;
            }
            // A response delimited by the close: its span claims no size (see
            // `Message::size_unknown`).
            ctx.stats.responses_ended_by_close += u64::from(msg.size_unknown);
            if let Some(x) = on_message(&mut conn, msg, is_req, &mut ctx) {
                self.exchanges.push(x);
            }
        }
        // Answered before its body was read, and the body never came: the exchange is
        // what the server did (it read this much, then answered and closed).
        if let Some(i) = conn
            .pending
            .iter()
            .position(|p| !p.complete && p.resp.is_some())
        {
            let mut p = conn.pending.remove(i).expect("index from position");
            if let Some(m) = open_request {
                p.msg = m;
            }
            let resp = p.resp.take().expect("checked above");
            self.exchanges.push(exchange(&conn, p, resp));
        }
        self.stats.requests_without_response +=
            conn.pending.len() as u64 + u64::from(cut_head && !conn.desynced);
        self.stats.add_unpaired(&conn);
        // Requests that will never be answered are no longer anyone's context.
        for p in &conn.pending {
            if self
                .active
                .get(&(pid, p.ctx_key))
                .is_some_and(|a| a.span_id == p.ids.span_id)
            {
                self.active.remove(&(pid, p.ctx_key));
            }
        }
        self.stats.parse_errors +=
            conn.ingress.stats().parse_errors + conn.egress.stats().parse_errors;
        self.finish_exchanges(pid, sink);
    }

    /// Rebuilds the resource of processes whose Kubernetes pod metadata arrived after they
    /// were attached (see `crate::kube`): their spans and metrics from now on carry it. One atomic
    /// load when nothing arrived, so it can run on every housekeeping tick.
    pub fn refresh_resources(&mut self) {
        for pid in crate::kube::take_resolved() {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.resource = Arc::new(Resource::for_process(pid, &self.resource_cfg));
                self.metrics.replace_resource(&p.resource);
            }
        }
    }
}

/// Decides which side of an fd found at attach time we are on, from the first bytes:
/// reading a request means serving, writing one means calling.
fn classify(conn: &mut Conn, direction: u32, head: &[u8]) {
    let looks_like_request = head
        .iter()
        .position(|&b| b == b' ')
        .is_some_and(|sp| sp > 0 && sp <= 20 && head[..sp].iter().all(|b| b.is_ascii_uppercase()));
    let looks_like_response = head.starts_with(b"HTTP/1.");
    let ingress = direction == DIR_INGRESS;
    let role = match (looks_like_request, looks_like_response, ingress) {
        (true, _, true) | (_, true, false) => Role::Server,
        (true, _, false) | (_, true, true) => Role::Client,
        _ => return,
    };
    if role != conn.role {
        let ends = conn.ends;
        *conn = Conn::new(role, ends);
    }
}

/// Pairs requests with responses on one connection; returns a finished exchange.
fn on_message(
    conn: &mut Conn,
    msg: Message,
    is_request_stream: bool,
    ctx: &mut MessageCtx<'_>,
) -> Option<Exchange> {
    match (&msg.kind, is_request_stream) {
        (MessageKind::Request { .. }, true) => {
            // The request whose header section made an entry is complete now.
            if let Some(i) = conn.pending.iter().position(|p| !p.complete) {
                let p = &mut conn.pending[i];
                p.msg = msg;
                p.complete = true;
                if p.resp.is_some() {
                    let mut p = conn.pending.remove(i).expect("index from position");
                    let resp = p.resp.take().expect("checked above");
                    return Some(exchange(conn, p, resp));
                }
                return None;
            }
            push_request(conn, msg, true, ctx);
            None
        }
        (MessageKind::Response { status, .. }, false) => {
            if *status == 101 {
                // Switching protocols: what follows on the request side is not HTTP/1.x.
                let req_parser = if conn.role == Role::Client {
                    &mut conn.egress
                } else {
                    &mut conn.ingress
                };
                req_parser.enter_passthrough();
                // To HTTP/2 (h2c): the request that asked is answered on stream 1.
                if msg.upgrade_h2c
                    && conn.h2.is_none()
                    && conn.pending.len() == 1
                    && conn.pending[0].complete
                    && conn.pending[0].resp.is_none()
                    && conn.pending[0].msg.upgrade_h2c
                {
                    let p = conn.pending.pop_front().expect("one entry, checked above");
                    conn.h2 = Some(Box::new(crate::h2::Session::upgraded(&p.msg)));
                    if conn.role == Role::Client {
                        // For a traced server's end of stream 1 to join.
                        conn.h2_ids.insert(1, p.ids.clone());
                    }
                    // The entry the request got (identity, parent, context) is
                    // stream 1's.
                    conn.h2_upgraded = Some(Box::new(p));
                    ctx.stats.h2_conns += 1;
                    ctx.stats.h2_upgrades += 1;
                    return None;
                }
            }
            // Responses come in request order: this one answers the oldest request
            // not answered yet.
            let Some(i) = conn.pending.iter().position(|p| p.resp.is_none()) else {
                ctx.stats.responses_without_request += 1;
                return None;
            };
            if !conn.pending[i].complete {
                conn.pending[i].resp = Some(msg);
                return None;
            }
            let p = conn.pending.remove(i).expect("index from position");
            Some(exchange(conn, p, msg))
        }
        // A request on the response stream or vice versa: the stream is not what we
        // thought; the parsers resync on their own.
        _ => {
            ctx.stats.parse_errors += 1;
            None
        }
    }
}

/// A request whose header section is complete and whose body is being read: it gets
/// its entry (and span identity) now, so that an answer written before the body is read
/// pairs with it.
fn on_request_head(conn: &mut Conn, head: Message, ctx: &mut MessageCtx<'_>) {
    if conn.pending.iter().any(|p| !p.complete) {
        return;
    }
    push_request(conn, head, false, ctx);
}

/// Pairing is lost on this connection (see `Conn::desynced`): drop what waits, count
/// what was already answered, and give up the contexts of the dropped requests.
fn desync(conn: &mut Conn, cause: DesyncCause, ctx: &mut MessageCtx<'_>) {
    if conn.desynced {
        return;
    }
    conn.desynced = true;
    conn.desync_cause = cause;
    for p in conn.pending.drain(..) {
        // Each is a request seen; an answered one is a response seen too.
        conn.lost_requests += 1;
        conn.lost_request_starts += 1;
        conn.lost_responses += u64::from(p.resp.is_some());
        if ctx
            .active
            .get(&(ctx.pid, p.ctx_key))
            .is_some_and(|a| a.span_id == p.ids.span_id)
        {
            ctx.active.remove(&(ctx.pid, p.ctx_key));
        }
    }
}

/// Message starts in what was captured of a chunk: its head, and the lines of its tail
/// when the tail does not overlap the head (the tail's first line may be cut, so only
/// lines after its first line end count).
fn count_starts(count: fn(&[u8]) -> u64, chunk: &Chunk<'_>) -> u64 {
    let disjoint = chunk.total_len >= (chunk.head.len() + chunk.tail.len()) as u64;
    let tail_lines = match chunk.tail.iter().position(|&b| b == b'\n') {
        Some(nl) if disjoint => &chunk.tail[nl + 1..],
        _ => &[],
    };
    count(chunk.head) + count(tail_lines)
}

/// On a desynced connection: drop the chunk's messages, counting them (see
/// `Conn::unpaired_at_close`).
fn drop_desynced(conn: &mut Conn, out: &mut Vec<Message>, is_request_stream: bool) {
    if is_request_stream {
        conn.lost_requests += out.len() as u64;
    } else {
        conn.lost_responses += out.len() as u64;
    }
    out.clear();
}

fn exchange(conn: &Conn, p: Pending, resp: Message) -> Exchange {
    Exchange {
        kind: if conn.role == Role::Client {
            SpanKind::Client
        } else {
            SpanKind::Server
        },
        req: p.msg,
        resp,
        ends: conn.ends,
        ids: p.ids,
        local_parent: p.local_parent,
        ctx_key: p.ctx_key,
        client_service: p.client_service,
        h2: None,
    }
}

/// Makes the entry of a request (its span identity, its context, the response
/// parser's note of what kind of request it answers).
fn push_request(conn: &mut Conn, msg: Message, complete: bool, ctx: &mut MessageCtx<'_>) {
    ctx.stats.requests += 1;
    let client = conn.role == Role::Client;
    let resp_parser = if client {
        &mut conn.ingress
    } else {
        &mut conn.egress
    };
    // HEAD answers have no body; CONNECT + 2xx turns the stream into a tunnel.
    resp_parser.push_request_for(&msg);
    if conn.pending.len() >= MAX_PENDING {
        conn.pending.pop_front();
        ctx.stats.requests_without_response += 1;
    }
    let seq = conn.requests_seen;
    conn.requests_seen += 1;
    let mut client_service = None;
    let mut ctx_key = None;
    let (ids, local_parent) = if client {
        let caller = conn.go_caller.take();
        match caller_context(ctx, caller) {
            Some(a) => (a.child(), true),
            None => (Ids::for_request(SpanKind::Client, &msg), false),
        }
    } else {
        let joined = (conn.from_start)
            .then(|| find_client_end(ctx.peers.as_ref()?, ctx.pid, &conn.ends, seq, &msg))
            .flatten();
        let (ids, local) = match joined {
            Some((parent, service)) => {
                ctx.stats.joined += 1;
                client_service = Some(service);
                (parent.child(), true)
            }
            None => (Ids::for_request(SpanKind::Server, &msg), false),
        };
        ctx_key = if ctx.thread_context {
            Some(ctx.tid as u64)
        } else {
            conn.go_server_goid.map(|g| GOROUTINE_KEY | g)
        };
        if ctx.thread_context
            && ctx
                .active
                .get(&(ctx.pid, ctx.tid as u64))
                .is_some_and(|a| a.fd != ctx.fd)
        {
            ctx.multiplexed = true;
            ctx_key = None;
        }
        if let Some(k) = ctx_key {
            ctx.active.insert(
                (ctx.pid, k),
                ActiveSpan {
                    trace_id: ids.trace_id,
                    span_id: ids.span_id,
                    flags: ids.flags,
                    trace_state: ids.trace_state.clone(),
                    fd: ctx.fd,
                },
            );
        }
        (ids, local)
    };
    conn.pending.push_back(Pending {
        msg,
        ids,
        local_parent,
        ctx_key: ctx_key.unwrap_or(u64::MAX),
        seq,
        client_service,
        complete,
        resp: None,
    });
}

/// The server span a client request is made under: the serving thread's (thread-per-
/// request processes), or the goroutine's that called the Go client — or of the
/// goroutine that created it, up the creation lineage.
fn caller_context<'a>(
    ctx: &'a MessageCtx<'_>,
    go_caller: Option<(u64, u64)>,
) -> Option<&'a ActiveSpan> {
    if ctx.thread_context {
        return ctx.active.get(&(ctx.pid, ctx.tid as u64));
    }
    goroutine_span(ctx.active, ctx.go_parents, ctx.pid, go_caller?)
}

/// The server span goroutine `goid` (whose parent is `parent`, 0 if unknown) of `pid`
/// serves, or that of the goroutine that created it, up the creation lineage.
fn goroutine_span<'a>(
    active: &'a HashMap<(u32, u64), ActiveSpan>,
    go_parents: &HashMap<(u32, u64), u64>,
    pid: u32,
    (goid, parent): (u64, u64),
) -> Option<&'a ActiveSpan> {
    let lookup = |g: u64| active.get(&(pid, GOROUTINE_KEY | g));
    if let Some(a) = lookup(goid) {
        return Some(a);
    }
    // g.parentGoid from the probe (Go >= 1.21), then recorded creations further up.
    let mut g = if parent != 0 {
        parent
    } else {
        *go_parents.get(&(pid, goid))?
    };
    for _ in 0..MAX_LINEAGE_DEPTH {
        if let Some(a) = lookup(g) {
            return Some(a);
        }
        g = *go_parents.get(&(pid, g))?;
    }
    None
}

/// A process's grpc-go stream openings waiting for their stream, and the streams that
/// more than one of them could have opened.
#[derive(Debug, Default)]
struct GrpcCalls {
    calls: Vec<GrpcCall>,
    unassigned: Vec<Unassigned>,
}

/// A client stream that more than one waiting opening could have opened: when it
/// started, and those openings' (goroutine, time).
#[derive(Debug)]
struct Unassigned {
    start_ns: u64,
    candidates: Vec<(u64, u64)>,
}

/// A grpc-go call a goroutine started (see [`Tracker::grpc_call`]).
#[derive(Debug)]
struct GrpcCall {
    goid: u64,
    parent_goid: u64,
    ts_ns: u64,
    /// The gRPC method: the HTTP/2 `:path` of the stream the call opens.
    method: Box<[u8]>,
}

/// The traced client span that sent the request a server connection just read: the
/// client socket whose local address is this connection's peer, and on it the request
/// with the same index — and the same request line, which the two ends must agree on
/// because they are the same bytes. Falls back to the same request line alone when
/// the counts disagree (a request one end could not parse).
///
/// A client whose destination port differs from the server's local port (a
/// Kubernetes Service port in front of its targetPort) still qualifies, after the
/// candidates whose ports agree. Loopback addresses only match within one network
/// namespace (every pod has its own 127.0.0.1).
fn find_client_end(
    peers: &Peers<'_>,
    server_pid: u32,
    ends: &Endpoints,
    seq: u64,
    msg: &Message,
) -> Option<(ActiveSpan, Arc<str>)> {
    let ordered = client_candidates(peers.clients, peers.procs, server_pid, ends);
    let same_line = |m: &Message| match (&m.kind, &msg.kind) {
        (
            MessageKind::Request { method, target },
            MessageKind::Request {
                method: m2,
                target: t2,
            },
        ) => method == m2 && target == t2,
        _ => false,
    };
    for c in ordered {
        let Some(conn) = peers.conns.get(&(c.pid, c.fd)) else {
            continue;
        };
        if !conn.from_start || conn.role != Role::Client {
            continue;
        }
        let Some(p) = conn
            .pending
            .iter()
            .find(|p| p.seq == seq && same_line(&p.msg))
            .or_else(|| conn.pending.iter().find(|p| same_line(&p.msg)))
        else {
            continue;
        };
        let service = service_name(peers.procs, c.pid);
        return Some((
            ActiveSpan {
                trace_id: p.ids.trace_id,
                span_id: p.ids.span_id,
                flags: p.ids.flags,
                trace_state: p.ids.trace_state.clone(),
                fd: c.fd,
            },
            service,
        ));
    }
    None
}

/// The service name of a traced process ("" once it is gone).
fn service_name(procs: &HashMap<u32, Proc>, pid: u32) -> Arc<str> {
    procs.get(&pid).map_or_else(
        || Arc::from(""),
        |p| Arc::from(p.resource.service_name.as_str()),
    )
}

/// A hash of a request's method and target, to recognise it at the other end.
fn request_hash(method: &str, target: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (method, target).hash(&mut h);
    h.finish()
}

/// The traced client sockets that may be the other end of a server connection: those
/// whose local address is its peer, the ones whose destination port is the server's
/// local port first (see `find_client_end`); loopback ones only within the server's
/// network namespace.
fn client_candidates(
    clients: &HashMap<(IpAddr, u16), Vec<ClientEnd>>,
    procs: &HashMap<u32, Proc>,
    server_pid: u32,
    ends: &Endpoints,
) -> Vec<ClientEnd> {
    let Some(peer) = ends.peer else {
        return Vec::new();
    };
    let Some(candidates) = clients.get(&(peer.ip(), peer.port())) else {
        return Vec::new();
    };
    let server_port = ends.local.map(|l| l.port());
    let same_port = |c: &&ClientEnd| server_port.is_none_or(|p| p == c.server_port);
    candidates
        .iter()
        .filter(same_port)
        .chain(candidates.iter().filter(|c| !same_port(c)))
        .filter(|c| !netns_apart(procs, peer.ip(), server_pid, c.pid))
        .copied()
        .collect()
}

/// Whether a loopback address cannot join processes `a` and `b`: they are in known,
/// different network namespaces (every pod has its own 127.0.0.1).
fn netns_apart(procs: &HashMap<u32, Proc>, ip: IpAddr, a: u32, b: u32) -> bool {
    let netns = |pid: u32| procs.get(&pid).and_then(|p| p.netns);
    ip.is_loopback() && matches!((netns(a), netns(b)), (Some(x), Some(y)) if x != y)
}

/// CLOCK_MONOTONIC now, in the kernel's bpf_ktime_get_ns units.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
