//! HTTP/2 (RFC 9113) from captured bytes: one [`Session`] per connection, fed the
//! chunks of both directions in order, hands out one [`H2Exchange`] per stream whose
//! response ended.
//!
//! Why a session and not a parser per direction as for HTTP/1: the two directions of
//! HTTP/2 are not independent. Exchanges are correlated by stream id, not by order,
//! and each direction carries its own HPACK dynamic table that every header block in
//! that direction changes. So the session owns both directions, the open streams, and
//! the loss state of the whole connection.
//!
//! Losses. A chunk may be truncated (head and tail captured, the middle a gap of known
//! length). A gap inside a DATA frame's payload costs nothing but (maybe) the gRPC
//! message count; a gap that hides a frame boundary or any byte of a header block
//! leaves the HPACK tables unknown: a later header could decode to a wrong value, and a
//! stream could get another stream's headers. The session then stops decoding headers
//! for good ("blind"), emits nothing more, and counts every stream it can still see
//! start (and those open at the loss) as unplaced, by reason. Missing beats wrong.
//!
//! HPACK is decoded by the `hpack` module (written here: of the maintained decoders,
//! one was too slow and the other private), with the table size capped at
//! [`MAX_HPACK_TABLE`] so a peer cannot make the agent hold more than a small multiple
//! of it per direction.

use crate::http::{Chunk, MAX_TARGET, MAX_VALUE, Message, MessageKind, Method};
use foldhash::{HashMap, HashMapExt};

pub mod hpack;
#[cfg(test)]
mod tests;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams tracked at once per connection; a stream opened beyond it is not followed
/// (its header blocks are still decoded, to keep HPACK in step) and is counted.
pub const MAX_STREAMS: usize = 256;
/// Largest header block (HEADERS or PUSH_PROMISE plus CONTINUATIONs) buffered for
/// decoding. A larger one cannot be decoded, which leaves HPACK unknown (the session
/// goes blind).
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Largest dynamic table a peer may ask for (RFC 7541 §4.2 size updates); larger asks
/// are a decoding error. Bounds memory: 4 KiB is the default and what most peers use.
pub const MAX_HPACK_TABLE: usize = 64 * 1024;
/// Payload bytes kept of frames other than DATA and header blocks: enough for
/// RST_STREAM's code and GOAWAY's last stream id and code.
const SMALL_PAYLOAD: usize = 8;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// Why a stream got no exchange (the `reason` label of
/// `periscope_h2_streams_unplaced_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unplaced {
    /// A gap hid frame boundaries or header-block bytes: HPACK state unknown.
    Gap,
    /// Over [`MAX_STREAMS`] open streams.
    OverLimit,
    /// Reset (RST_STREAM) before its response headers.
    Reset,
    /// Still open when the connection closed (or its process exited).
    Close,
    /// Malformed frames or header blocks (the session goes blind, as for a gap).
    Malformed,
    /// On a connection older than the agent, joined in the middle of HTTP/2: the
    /// HPACK state of its past is unknown, so its streams are only counted.
    MidStream,
}

/// Counters of one session; add them up with [`H2Stats::add`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    /// Streams whose request headers were seen.
    pub streams: u64,
    /// Exchanges handed out.
    pub exchanges: u64,
    pub unplaced_gap: u64,
    pub unplaced_over_limit: u64,
    pub unplaced_reset: u64,
    pub unplaced_close: u64,
    pub unplaced_malformed: u64,
    pub unplaced_mid_stream: u64,
    /// Times the session went blind (once per connection at most).
    pub blind: u64,
    /// Streams refused by a GOAWAY (id above its last stream id): never processed.
    pub refused: u64,
}

impl H2Stats {
    pub fn add(&mut self, o: &H2Stats) {
        self.streams += o.streams;
        self.exchanges += o.exchanges;
        self.unplaced_gap += o.unplaced_gap;
        self.unplaced_over_limit += o.unplaced_over_limit;
        self.unplaced_reset += o.unplaced_reset;
        self.unplaced_close += o.unplaced_close;
        self.unplaced_malformed += o.unplaced_malformed;
        self.unplaced_mid_stream += o.unplaced_mid_stream;
        self.blind += o.blind;
        self.refused += o.refused;
    }

    fn unplaced(&mut self, why: Unplaced, n: u64) {
        match why {
            Unplaced::Gap => self.unplaced_gap += n,
            Unplaced::OverLimit => self.unplaced_over_limit += n,
            Unplaced::Reset => self.unplaced_reset += n,
            Unplaced::Close => self.unplaced_close += n,
            Unplaced::Malformed => self.unplaced_malformed += n,
            Unplaced::MidStream => self.unplaced_mid_stream += n,
        }
    }
}

/// gRPC details of an exchange whose request content type is `application/grpc*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcInfo {
    /// `grpc-status` from the trailers (or a trailers-only response); `None` when the
    /// stream ended without one (a reset, a broken server).
    pub status: Option<u32>,
    pub message: Option<String>,
    /// Length-prefixed messages the client sent and the server sent; `None` when a gap
    /// hid a message prefix.
    pub request_messages: Option<u64>,
    pub response_messages: Option<u64>,
}

/// One stream's request and response, with the fields spans and metrics need.
/// `req` and `resp` reuse the HTTP/1 [`Message`]: method and `:path` as the request
/// line, `:authority` (or `host`) as `host`, `:status` as the status; `body_bytes` are
/// DATA payload bytes without padding; `header_bytes` are header block bytes (HPACK
/// encoded, frame headers excluded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H2Exchange {
    pub stream_id: u32,
    pub req: Message,
    pub resp: Message,
    pub grpc: Option<GrpcInfo>,
    /// The stream was reset (RST_STREAM) after its response headers; the code.
    pub reset: Option<u32>,
}

/// Header fields kept of one header block (everything else is decoded and dropped).
#[derive(Clone, Debug, Default)]
struct Fields {
    method: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    host: Option<String>,
    status: Option<u16>,
    content_type: Option<String>,
    content_length: Option<u64>,
    user_agent: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    grpc_status: Option<u32>,
    grpc_message: Option<String>,
}

fn capped(v: &[u8], cap: usize) -> String {
    let s = String::from_utf8_lossy(v);
    let s = s.trim();
    if s.len() <= cap {
        return s.to_string();
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Fields {
    fn set(&mut self, name: &[u8], value: &[u8]) {
        let keep = |slot: &mut Option<String>, cap: usize| {
            if slot.is_none() {
                *slot = Some(capped(value, cap));
            }
        };
        match name {
            b":method" => keep(&mut self.method, 32),
            b":path" => keep(&mut self.path, MAX_TARGET),
            b":authority" => keep(&mut self.authority, MAX_VALUE),
            b"host" => keep(&mut self.host, MAX_VALUE),
            b":status" if self.status.is_none() => {
                self.status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"content-type" => keep(&mut self.content_type, MAX_VALUE),
            b"content-length" if self.content_length.is_none() => {
                self.content_length = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"user-agent" => keep(&mut self.user_agent, MAX_VALUE),
            b"traceparent" => keep(&mut self.traceparent, MAX_VALUE),
            b"tracestate" => keep(&mut self.tracestate, MAX_VALUE),
            b"grpc-status" if self.grpc_status.is_none() => {
                self.grpc_status = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok());
            }
            b"grpc-message" => keep(&mut self.grpc_message, MAX_VALUE),
            _ => {}
        }
    }
}

/// Counts gRPC length-prefixed messages (1 flag byte, 4 length bytes, the message) in
/// one direction of a stream's DATA.
#[derive(Clone, Copy, Debug, Default)]
struct MsgCounter {
    count: u64,
    /// Bytes of the current message still to come (0: a prefix starts next).
    remaining: u64,
    prefix: [u8; 5],
    prefix_len: u8,
    /// A gap hid bytes whose meaning was needed.
    unknown: bool,
}

impl MsgCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining as usize).min(bytes.len());
                self.remaining -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let want = 5 - self.prefix_len as usize;
            let n = want.min(bytes.len());
            self.prefix[self.prefix_len as usize..self.prefix_len as usize + n]
                .copy_from_slice(&bytes[..n]);
            self.prefix_len += n as u8;
            bytes = &bytes[n..];
            if self.prefix_len == 5 {
                self.count += 1;
                self.remaining = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]) as u64;
                self.prefix_len = 0;
            }
        }
    }

    /// `n` data bytes went by unseen: still exact if they were all inside one message.
    fn skip(&mut self, n: u64) {
        if self.remaining >= n && self.prefix_len == 0 {
            self.remaining -= n;
        } else {
            self.unknown = true;
        }
    }

    fn result(&self) -> Option<u64> {
        (!self.unknown).then_some(self.count)
    }
}

/// One open stream.
#[derive(Debug, Default)]
struct Stream {
    req: Option<Fields>,
    req_start_ns: u64,
    req_end_ns: u64,
    req_header_bytes: u64,
    req_body: u64,
    req_msgs: MsgCounter,
    resp: Option<Fields>,
    resp_start_ns: u64,
    resp_header_bytes: u64,
    resp_body: u64,
    resp_msgs: MsgCounter,
    trailers: Option<Fields>,
}

/// A header block being gathered (HEADERS or PUSH_PROMISE, then CONTINUATIONs).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    /// PUSH_PROMISE: decoded to keep HPACK in step, then dropped.
    promise: bool,
    bytes: Vec<u8>,
    /// Timestamp of the chunk holding the block's first frame.
    ts_ns: u64,
}

/// The frame being read in one direction.
#[derive(Clone, Copy, Debug)]
struct Frame {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
    /// Payload bytes read (or skipped) so far.
    pos: u32,
    /// DATA with PADDED: the pad length, once its byte was read.
    pad: Option<u8>,
}

/// One direction of the connection.
struct Dir {
    from_client: bool,
    /// Preface bytes still expected (client direction only).
    preface_left: usize,
    head: [u8; 9],
    head_len: usize,
    frame: Option<Frame>,
    /// Payload kept of the current frame (not DATA).
    payload: Vec<u8>,
    block: Option<Block>,
    hpack: hpack::Decoder,
    /// Frame boundaries were lost; `resync` says the next chunk may start a frame.
    lost: bool,
}

impl Dir {
    fn new(from_client: bool) -> Self {
        Self {
            from_client,
            preface_left: if from_client { PREFACE.len() } else { 0 },
            head: [0; 9],
            head_len: 0,
            frame: None,
            payload: Vec::new(),
            block: None,
            hpack: hpack::Decoder::new(MAX_HPACK_TABLE),
            lost: false,
        }
    }
}

/// What happened to a frame, for the session to apply.
enum Event {
    /// A complete header block on a stream.
    Headers {
        stream: u32,
        end_stream: bool,
        fields: Box<Fields>,
        block_len: u64,
        ts_ns: u64,
    },
    /// A header block of a stream the session does not know the fields of (blind).
    HeadersUnknown {
        stream: u32,
    },
    EndStream {
        stream: u32,
        ts_ns: u64,
    },
    Reset {
        stream: u32,
        code: u32,
        ts_ns: u64,
    },
    GoAway {
        last_stream: u32,
    },
    /// Frame boundaries or HPACK input lost.
    Lost(Unplaced),
}

/// An HTTP/2 connection seen from one of its ends.
pub struct Session {
    dirs: [Dir; 2],
    core: Core,
}

/// The streams and loss state of a session: what frames act on.
struct Core {
    streams: HashMap<u32, Stream>,
    /// Streams seen but not followed (over the limit): ignored until they end.
    ignored: HashMap<u32, ()>,
    /// HPACK state unknown: no headers are decoded any more.
    blind: bool,
    /// Joined mid-stream (a connection older than the agent): blind from the start,
    /// and which end is the client is not known.
    mid_stream: bool,
    /// Highest client stream id seen (blind: new ids are counted as unplaced).
    max_stream: u32,
    stats: H2Stats,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    pub fn new() -> Self {
        Self {
            dirs: [Dir::new(true), Dir::new(false)],
            core: Core {
                streams: HashMap::new(),
                ignored: HashMap::new(),
                blind: false,
                mid_stream: false,
                max_stream: 0,
                stats: H2Stats::default(),
            },
        }
    }

    /// A connection upgraded from HTTP/1.1 (`Upgrade: h2c`, RFC 7540 §3.2; RFC 9113
    /// deprecates it, servers still grant it): the request that asked for it is stream 1, sent whole
    /// (half-closed by the client), and its response comes as HTTP/2 on that stream.
    /// The client's connection preface is still to come; the server's frames start
    /// right after the `101` response.
    pub fn upgraded(req: &Message) -> Self {
        let mut session = Self::new();
        let MessageKind::Request { method, target } = &req.kind else {
            return session;
        };
        let fields = Fields {
            method: Some(method.as_str().to_string()),
            path: Some(target.clone()),
            host: req.host.clone(),
            content_type: req.content_type.clone(),
            content_length: req.content_length,
            user_agent: req.user_agent.clone(),
            traceparent: req.traceparent.clone(),
            tracestate: req.tracestate.clone(),
            ..Fields::default()
        };
        let core = &mut session.core;
        core.max_stream = 1;
        core.stats.streams += 1;
        core.streams.insert(
            1,
            Stream {
                req: Some(fields),
                req_start_ns: req.start_ns,
                req_end_ns: req.end_ns,
                req_header_bytes: req.header_bytes,
                req_body: req.body_bytes,
                ..Stream::default()
            },
        );
        session
    }

    /// A connection older than the agent, joined in the middle of HTTP/2 (see
    /// [`looks_like_frames`]): what its past did to the HPACK tables is unknown, so no
    /// header is decoded; each direction's framing is picked up where a chunk starts
    /// with a plausible frame, and every stream that starts from then on (a header
    /// block on a new client stream id, whichever end sent it) is counted unplaced
    /// ([`Unplaced::MidStream`]).
    pub fn mid_stream() -> Self {
        let mut session = Self::new();
        session.core.blind = true;
        session.core.mid_stream = true;
        for d in &mut session.dirs {
            d.preface_left = 0;
            d.lost = true;
        }
        session
    }

    pub fn stats(&self) -> H2Stats {
        self.core.stats
    }

    /// The method and path of the request on `stream` while the stream is open (its
    /// response has not ended): what a traced server must have read, for the two ends'
    /// spans of one stream to be joined.
    pub fn open_request(&self, stream: u32) -> Option<(&str, &str)> {
        let f = self.core.streams.get(&stream)?.req.as_ref()?;
        Some((f.method.as_deref()?, f.path.as_deref()?))
    }

    /// Open streams above `after` whose request headers are decoded: (stream id, path,
    /// when the request started), by stream id.
    pub fn requests_opened_after(&self, after: u32) -> Vec<(u32, String, u64)> {
        let mut v: Vec<(u32, String, u64)> = self
            .core
            .streams
            .iter()
            .filter(|(id, _)| **id > after)
            .filter_map(|(id, st)| {
                let path = st.req.as_ref()?.path.as_deref()?;
                Some((*id, path.to_string(), st.req_start_ns))
            })
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v
    }

    /// Whether headers are no longer decoded on this connection.
    pub fn is_blind(&self) -> bool {
        self.core.blind
    }

    /// Feeds one chunk; `from_client` says which direction it moved in. Exchanges whose
    /// response ended are pushed to `out`.
    pub fn feed(&mut self, from_client: bool, chunk: &Chunk<'_>, out: &mut Vec<H2Exchange>) {
        let d = usize::from(!from_client);
        let head_len = chunk.head.len() as u64;
        let total = chunk.total_len.max(head_len);
        let tail_len = (chunk.tail.len() as u64).min(total - head_len);
        let tail = &chunk.tail[chunk.tail.len() - tail_len as usize..];
        let gap = total - head_len - tail_len;
        let core = &mut self.core;
        let dir = &mut self.dirs[d];
        let mut cx = Cx {
            core,
            out,
            ts_ns: chunk.ts_ns,
        };
        {
            if dir.lost {
                // A syscall usually starts with a frame: resume framing if these bytes
                // look like one. Headers stay unknown (blind), but streams can still
                // be counted.
                if plausible_frame(chunk.head, from_client) {
                    dir.lost = false;
                    dir.head_len = 0;
                    dir.frame = None;
                    dir.block = None;
                    dir.payload.clear();
                } else {
                    return;
                }
            }
            read(dir, chunk.head, &mut cx);
            if gap > 0 && !dir.lost {
                skip(dir, gap, &mut cx);
            }
            if !dir.lost {
                read(dir, tail, &mut cx);
            }
        }
    }

    /// Bytes of one direction went by unseen, how many is not known: its frame
    /// boundaries and HPACK state are lost (the session goes blind).
    pub fn lose(&mut self, from_client: bool) {
        let mut out = Vec::new();
        let mut cx = Cx {
            core: &mut self.core,
            out: &mut out,
            ts_ns: 0,
        };
        lose(
            &mut self.dirs[usize::from(!from_client)],
            &mut cx,
            Unplaced::Gap,
        );
    }

    /// The connection closed: open streams are counted.
    pub fn close(&mut self) {
        self.core.close();
    }
}

/// What frame handling needs besides its direction.
struct Cx<'a> {
    core: &'a mut Core,
    out: &'a mut Vec<H2Exchange>,
    /// Timestamp of the chunk being read.
    ts_ns: u64,
}

impl Cx<'_> {
    fn emit(&mut self, from_client: bool, ev: Event) {
        self.core.apply(from_client, ev, self.out);
    }
}

impl Core {
    fn close(&mut self) {
        let open = self.streams.len() as u64;
        self.stats.unplaced(Unplaced::Close, open);
        self.streams.clear();
        self.ignored.clear();
    }

    fn go_blind(&mut self, why: Unplaced) {
        if self.blind {
            return;
        }
        self.blind = true;
        self.stats.blind += 1;
        // An open stream may have lost any of its frames: none is trusted.
        self.stats.unplaced(why, self.streams.len() as u64);
        self.streams.clear();
        self.ignored.clear();
    }

    fn apply(&mut self, from_client: bool, ev: Event, out: &mut Vec<H2Exchange>) {
        match ev {
            Event::Lost(why) => self.go_blind(why),
            Event::HeadersUnknown { stream } => {
                // Joined mid-stream, either end may be the client: stream ids only
                // grow, so a new odd id is a new stream whoever carried it.
                if (from_client || self.mid_stream) && stream > self.max_stream && stream % 2 == 1 {
                    self.max_stream = stream;
                    let why = if self.mid_stream {
                        Unplaced::MidStream
                    } else {
                        Unplaced::Gap
                    };
                    self.stats.unplaced(why, 1);
                }
            }
            Event::Headers {
                stream,
                end_stream,
                fields,
                block_len,
                ts_ns,
            } => {
                if self.blind {
                    return;
                }
                if from_client {
                    if stream > self.max_stream {
                        self.max_stream = stream;
                        if self.streams.len() >= MAX_STREAMS {
                            self.stats.unplaced(Unplaced::OverLimit, 1);
                            self.ignored.insert(stream, ());
                            return;
                        }
                        self.stats.streams += 1;
                        let s = self.streams.entry(stream).or_default();
                        s.req = Some(*fields);
                        s.req_start_ns = ts_ns;
                        s.req_end_ns = ts_ns;
                        s.req_header_bytes = block_len;
                    } else if let Some(s) = self.streams.get_mut(&stream) {
                        // Request trailers: nothing kept but their size.
                        s.req_header_bytes += block_len;
                        s.req_end_ns = ts_ns;
                    }
                } else if let Some(s) = self.streams.get_mut(&stream) {
                    match (&s.resp, fields.status) {
                        // Interim (1xx) responses are not the response.
                        (None, Some(st)) if (100..200).contains(&st) => {}
                        (None, _) => {
                            s.resp = Some(*fields);
                            s.resp_start_ns = ts_ns;
                            s.resp_header_bytes = block_len;
                        }
                        (Some(_), _) => {
                            s.trailers = Some(*fields);
                            s.resp_header_bytes += block_len;
                        }
                    }
                }
                if end_stream {
                    self.end_stream(from_client, stream, ts_ns, out);
                }
            }
            Event::EndStream { stream, ts_ns } => self.end_stream(from_client, stream, ts_ns, out),
            Event::Reset {
                stream,
                code,
                ts_ns,
            } => {
                if self.ignored.remove(&stream).is_some() {
                    return;
                }
                let Some(s) = self.streams.remove(&stream) else {
                    return;
                };
                if s.resp.is_some() {
                    out.push(self.exchange(stream, s, ts_ns, Some(code)));
                } else {
                    self.stats.unplaced(Unplaced::Reset, 1);
                }
            }
            Event::GoAway { last_stream } => {
                // Streams above the last one the sender processed were refused; the
                // client may retry them on another connection.
                if from_client {
                    return;
                }
                let refused: Vec<u32> = self
                    .streams
                    .keys()
                    .copied()
                    .filter(|&id| id > last_stream)
                    .collect();
                for id in refused {
                    self.streams.remove(&id);
                    self.stats.refused += 1;
                }
            }
        }
    }

    fn end_stream(
        &mut self,
        from_client: bool,
        stream: u32,
        ts_ns: u64,
        out: &mut Vec<H2Exchange>,
    ) {
        if from_client {
            if let Some(s) = self.streams.get_mut(&stream) {
                s.req_end_ns = ts_ns;
            }
            return;
        }
        if self.ignored.remove(&stream).is_some() {
            return;
        }
        // The response is complete: the exchange is what it is now (a request still
        // open is reset by the server or abandoned; its bytes so far count).
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        if s.resp.is_none() {
            self.stats.unplaced(Unplaced::Malformed, 1);
            return;
        }
        out.push(self.exchange(stream, s, ts_ns, None));
    }

    fn exchange(
        &mut self,
        stream_id: u32,
        s: Stream,
        end_ns: u64,
        reset: Option<u32>,
    ) -> H2Exchange {
        self.stats.exchanges += 1;
        let req_f = s.req.unwrap_or_default();
        let resp_f = s.resp.unwrap_or_default();
        let trailers = s.trailers.unwrap_or_default();
        let grpc = req_f
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/grpc"))
            .then(|| GrpcInfo {
                status: trailers
                    .grpc_status
                    .or(resp_f.grpc_status)
                    .or(reset.map(grpc_status_of_reset)),
                message: trailers
                    .grpc_message
                    .clone()
                    .or(resp_f.grpc_message.clone()),
                request_messages: s.req_msgs.result(),
                response_messages: s.resp_msgs.result(),
            });
        let method = req_f
            .method
            .as_deref()
            .map_or(Method::Other(String::new()), method_from_str);
        let req = Message {
            kind: MessageKind::Request {
                method,
                target: req_f.path.unwrap_or_default(),
            },
            version_minor: 0,
            start_ns: s.req_start_ns,
            end_ns: s.req_end_ns,
            header_bytes: s.req_header_bytes,
            body_bytes: s.req_body,
            host: req_f.authority.or(req_f.host),
            user_agent: req_f.user_agent,
            traceparent: req_f.traceparent,
            tracestate: req_f.tracestate,
            content_type: req_f.content_type,
            content_length: req_f.content_length,
            chunked: false,
            connection_close: false,
            expect_continue: false,
            upgrade_h2c: false,
            truncated: false,
            size_unknown: false,
        };
        let resp = Message {
            kind: MessageKind::Response {
                status: resp_f.status.unwrap_or(0),
                reason: None,
            },
            version_minor: 0,
            start_ns: s.resp_start_ns,
            end_ns: end_ns.max(s.resp_start_ns),
            header_bytes: s.resp_header_bytes,
            body_bytes: s.resp_body,
            host: None,
            user_agent: None,
            traceparent: None,
            tracestate: None,
            content_type: resp_f.content_type,
            content_length: resp_f.content_length,
            chunked: false,
            connection_close: false,
            expect_continue: false,
            upgrade_h2c: false,
            truncated: false,
            size_unknown: false,
        };
        H2Exchange {
            stream_id,
            req,
            resp,
            grpc,
            reset,
        }
    }

    /// DATA bytes of a stream: counted, and fed to its gRPC message counter.
    fn data(&mut self, from_client: bool, stream: u32, bytes: &[u8]) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if from_client {
                s.req_body += bytes.len() as u64;
                s.req_msgs.feed(bytes);
            } else {
                s.resp_body += bytes.len() as u64;
                s.resp_msgs.feed(bytes);
            }
        }
    }

    /// `n` DATA bytes of a stream went by uncaptured.
    fn data_skipped(&mut self, from_client: bool, stream: u32, n: u64) {
        if let Some(s) = self.streams.get_mut(&stream) {
            if from_client {
                s.req_body += n;
                s.req_msgs.skip(n);
            } else {
                s.resp_body += n;
                s.resp_msgs.skip(n);
            }
        }
    }
}

/// The gRPC status of a call whose stream was reset before its trailers, from the
/// RST_STREAM error code, as gRPC's HTTP/2 transport mapping says (PROTOCOL-HTTP2.md:
/// CANCEL is CANCELLED, REFUSED_STREAM UNAVAILABLE, ENHANCE_YOUR_CALM
/// RESOURCE_EXHAUSTED, INADEQUATE_SECURITY PERMISSION_DENIED, the rest INTERNAL).
fn grpc_status_of_reset(code: u32) -> u32 {
    match code {
        0x7 => 14,
        0x8 => 1,
        0xb => 8,
        0xc => 7,
        _ => 13,
    }
}

fn method_from_str(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    }
}

/// Whether `b` starts with something that reads as a frame header a peer in this
/// direction would send: a known type, a length under the largest frame size, the
/// reserved bit clear, stream 0 exactly for connection frames.
fn plausible_frame(b: &[u8], from_client: bool) -> bool {
    if b.len() < 9 {
        return false;
    }
    let len = u32::from_be_bytes([0, b[0], b[1], b[2]]);
    let kind = b[3];
    let raw = u32::from_be_bytes([b[5], b[6], b[7], b[8]]);
    let stream = raw & 0x7fff_ffff;
    if raw & 0x8000_0000 != 0 || kind > CONTINUATION || len > (1 << 24) - 1 {
        return false;
    }
    let conn_frame = matches!(kind, SETTINGS | PING | GOAWAY);
    if conn_frame != (stream == 0) && kind != WINDOW_UPDATE {
        return false;
    }
    // Clients open odd streams; a server's HEADERS answer them (odd too).
    !(kind == HEADERS && stream.is_multiple_of(2) && from_client)
}

/// Whether the captured start of a chunk of a connection joined mid-stream reads as
/// HTTP/2 frames: at least one whole frame header, every header plausible and within
/// the default largest frame size (16 KiB; a peer that raised it is not recognised),
/// and the frames tiling the head exactly when the whole chunk was captured. Other
/// protocols' bytes almost never do.
pub fn looks_like_frames(head: &[u8], total_len: u64) -> bool {
    let mut at = 0usize;
    let mut frames = 0;
    while at + 9 <= head.len() {
        let b = &head[at..];
        // Parity of HEADERS ids is the one check that needs the role: not used.
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        if !plausible_frame(b, false) || len > 1 << 14 || b[3] == CONTINUATION && frames == 0 {
            return false;
        }
        at += 9 + len;
        frames += 1;
    }
    // Cut short by the capture, the walk stops past the head or inside a header.
    let whole = total_len <= head.len() as u64;
    frames > 0 && (!whole || at == head.len())
}

/// Reads captured bytes of one direction, acting on each frame as it completes.
fn read(dir: &mut Dir, mut b: &[u8], cx: &mut Cx<'_>) {
    if dir.preface_left > 0 && !b.is_empty() {
        let done = PREFACE.len() - dir.preface_left;
        let n = dir.preface_left.min(b.len());
        if b[..n] != PREFACE[done..done + n] {
            return lose(dir, cx, Unplaced::Malformed);
        }
        dir.preface_left -= n;
        b = &b[n..];
    }
    while !b.is_empty() && !dir.lost {
        let Some(mut f) = dir.frame else {
            let n = (9 - dir.head_len).min(b.len());
            dir.head[dir.head_len..dir.head_len + n].copy_from_slice(&b[..n]);
            dir.head_len += n;
            b = &b[n..];
            if dir.head_len == 9 {
                let h = dir.head;
                dir.head_len = 0;
                let f = Frame {
                    len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    pos: 0,
                    pad: None,
                };
                // A header block goes on with CONTINUATION frames and nothing else
                // (RFC 9113 §6.10).
                if dir.block.is_some() != (f.kind == CONTINUATION) {
                    return lose(dir, cx, Unplaced::Malformed);
                }
                dir.payload.clear();
                dir.frame = Some(f);
                if f.len == 0 {
                    finish_frame(dir, cx);
                }
            }
            continue;
        };
        let left = (f.len - f.pos) as usize;
        let n = left.min(b.len());
        let bytes = &b[..n];
        b = &b[n..];
        if f.kind == DATA {
            data_bytes(&mut f, bytes, dir.from_client, cx);
        } else {
            let cap = if matches!(f.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
                MAX_HEADER_BLOCK + 256
            } else {
                SMALL_PAYLOAD
            };
            let keep = cap.saturating_sub(dir.payload.len()).min(bytes.len());
            dir.payload.extend_from_slice(&bytes[..keep]);
        }
        f.pos += n as u32;
        dir.frame = Some(f);
        if f.pos == f.len {
            finish_frame(dir, cx);
        }
    }
}

/// DATA payload bytes `bytes` at `f.pos`: the pad length (when PADDED), data, padding.
fn data_bytes(f: &mut Frame, mut bytes: &[u8], from_client: bool, cx: &mut Cx<'_>) {
    let mut pos = f.pos;
    if f.flags & PADDED != 0 && pos == 0 && !bytes.is_empty() {
        f.pad = Some(bytes[0]);
        bytes = &bytes[1..];
        pos = 1;
    }
    let data_end = f.len.saturating_sub(u32::from(f.pad.unwrap_or(0)));
    if pos >= data_end {
        return;
    }
    let n = ((data_end - pos) as usize).min(bytes.len());
    if n > 0 {
        cx.core.data(from_client, f.stream, &bytes[..n]);
    }
}

/// A whole frame was read.
fn finish_frame(dir: &mut Dir, cx: &mut Cx<'_>) {
    let Some(f) = dir.frame.take() else {
        return;
    };
    let from_client = dir.from_client;
    let p = std::mem::take(&mut dir.payload);
    match f.kind {
        DATA => {
            if f.flags & PADDED != 0 && u32::from(f.pad.unwrap_or(0)) >= f.len.max(1) {
                return lose(dir, cx, Unplaced::Malformed);
            }
            if f.flags & END_STREAM != 0 {
                let ts_ns = cx.ts_ns;
                cx.emit(
                    from_client,
                    Event::EndStream {
                        stream: f.stream,
                        ts_ns,
                    },
                );
            }
        }
        HEADERS | PUSH_PROMISE => {
            let mut body: &[u8] = &p;
            let mut pad = 0usize;
            if f.flags & PADDED != 0 {
                let Some((&pl, rest)) = body.split_first() else {
                    return lose(dir, cx, Unplaced::Malformed);
                };
                pad = pl as usize;
                body = rest;
            }
            if f.kind == HEADERS && f.flags & PRIORITY_FLAG != 0 {
                if body.len() < 5 {
                    return lose(dir, cx, Unplaced::Malformed);
                }
                body = &body[5..];
            }
            if f.kind == PUSH_PROMISE {
                if body.len() < 4 {
                    return lose(dir, cx, Unplaced::Malformed);
                }
                body = &body[4..];
            }
            if (f.len as usize) > p.len() || pad > body.len() {
                // Over the cap (the block cannot be decoded) or malformed padding.
                return lose(dir, cx, Unplaced::Malformed);
            }
            let frag = &body[..body.len() - pad];
            dir.block = Some(Block {
                stream: f.stream,
                end_stream: f.kind == HEADERS && f.flags & END_STREAM != 0,
                promise: f.kind == PUSH_PROMISE,
                bytes: frag.to_vec(),
                ts_ns: cx.ts_ns,
            });
            if f.flags & END_HEADERS != 0 {
                decode_block(dir, cx);
            }
        }
        CONTINUATION => {
            let Some(block) = dir.block.as_mut() else {
                return lose(dir, cx, Unplaced::Malformed);
            };
            if block.stream != f.stream
                || (f.len as usize) > p.len()
                || block.bytes.len() + p.len() > MAX_HEADER_BLOCK
            {
                return lose(dir, cx, Unplaced::Malformed);
            }
            block.bytes.extend_from_slice(&p);
            if f.flags & END_HEADERS != 0 {
                decode_block(dir, cx);
            }
        }
        RST_STREAM if p.len() >= 4 => {
            let ts_ns = cx.ts_ns;
            cx.emit(
                from_client,
                Event::Reset {
                    stream: f.stream,
                    code: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    ts_ns,
                },
            );
        }
        GOAWAY if p.len() >= 8 => cx.emit(
            from_client,
            Event::GoAway {
                last_stream: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
            },
        ),
        // SETTINGS (a peer's SETTINGS_HEADER_TABLE_SIZE only bounds what the encoder
        // may ask for in-band, and the decoder follows the in-band size updates),
        // PING, WINDOW_UPDATE, PRIORITY and unknown types (ignored, RFC 9113 §5.5)
        // carry nothing used here.
        _ => {}
    }
    // The payload buffer is reused for the next frame.
    dir.payload = p;
    dir.payload.clear();
}

/// Frame boundaries or HPACK input of this direction are lost.
fn lose(dir: &mut Dir, cx: &mut Cx<'_>, why: Unplaced) {
    dir.lost = true;
    dir.block = None;
    dir.frame = None;
    dir.head_len = 0;
    dir.payload.clear();
    cx.emit(dir.from_client, Event::Lost(why));
}

/// A complete header block: decoded always (even for a stream not followed), to keep
/// the dynamic table in step.
fn decode_block(dir: &mut Dir, cx: &mut Cx<'_>) {
    let Some(block) = dir.block.take() else {
        return;
    };
    if cx.core.blind {
        if !block.promise {
            cx.emit(
                dir.from_client,
                Event::HeadersUnknown {
                    stream: block.stream,
                },
            );
        }
        return;
    }
    let mut fields = Fields::default();
    let res = dir.hpack.decode(&block.bytes, |n, v| fields.set(n, v));
    if res.is_err() {
        return lose(dir, cx, Unplaced::Malformed);
    }
    if block.promise {
        return;
    }
    cx.emit(
        dir.from_client,
        Event::Headers {
            stream: block.stream,
            end_stream: block.end_stream,
            fields: Box::new(fields),
            block_len: block.bytes.len() as u64,
            ts_ns: block.ts_ns,
        },
    );
}

/// `n` bytes of this direction went by uncaptured (the middle of a truncated chunk).
/// Only a gap inside one frame's payload whose bytes are not needed keeps the framing.
fn skip(dir: &mut Dir, n: u64, cx: &mut Cx<'_>) {
    if dir.preface_left > 0 || dir.head_len > 0 {
        return lose(dir, cx, Unplaced::Gap);
    }
    let Some(mut f) = dir.frame else {
        // The next frame header is in the gap.
        return lose(dir, cx, Unplaced::Gap);
    };
    let left = u64::from(f.len - f.pos);
    if n > left {
        return lose(dir, cx, Unplaced::Gap);
    }
    match f.kind {
        DATA => {
            // The pad length byte is needed to know where data ends.
            if f.flags & PADDED != 0 && f.pos == 0 {
                return lose(dir, cx, Unplaced::Gap);
            }
            let data_end = u64::from(f.len.saturating_sub(u32::from(f.pad.unwrap_or(0))));
            let data_skipped = data_end.saturating_sub(u64::from(f.pos)).min(n);
            if data_skipped > 0 {
                cx.core
                    .data_skipped(dir.from_client, f.stream, data_skipped);
            }
        }
        HEADERS | CONTINUATION | PUSH_PROMISE => return lose(dir, cx, Unplaced::Gap),
        RST_STREAM | GOAWAY if (dir.payload.len() as u32) < (SMALL_PAYLOAD as u32).min(f.len) => {
            return lose(dir, cx, Unplaced::Gap);
        }
        _ => {}
    }
    f.pos += n as u32;
    dir.frame = Some(f);
    if f.pos == f.len {
        finish_frame(dir, cx);
    }
}
