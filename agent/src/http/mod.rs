//! HTTP/1.x message framing over captured syscall data.
//!
//! The kernel side reports every read/write on a tracked socket as one [`Chunk`]: the
//! number of bytes really moved, the first [`MAX_HEAD`] bytes, and, for larger chunks,
//! the last [`MAX_TAIL`] bytes. What lies between is a *gap*: its length is known, its
//! content is not. [`StreamParser`] turns the chunks of one direction of one connection
//! into complete [`Message`]s (requests on one stream, responses on the other).
//!
//! Two properties drive the design, and the tests beside this file check both:
//!
//! * **Split invariance.** However a fully captured byte stream is cut into chunks, the
//!   parser emits the same messages; each message's `start_ns`/`end_ns` are the
//!   timestamps of the chunks holding its first and last byte. To get there every state
//!   works byte-wise and only *partial lines* are buffered (start line, header line,
//!   chunk-size line, trailer line), each under a fixed cap; bodies are only counted.
//! * **Gap tolerance without guessing silently.** A gap in a `Content-Length` body (or
//!   inside the data of one chunk of a chunked body) changes nothing. A gap anywhere the
//!   framing needed the bytes makes the parser guess, and every message whose end was
//!   guessed carries `truncated = true`. After a guess the parser only trusts a chunk
//!   whose first bytes look like the start of a message, so it never emits a
//!   non-truncated message with wrong sizes.
//!
//! The module is split by role: `syntax` holds the pure line-level parsers (start line,
//! header field, chunk size, "does this look like a message start"), `parser` holds the
//! per-stream state machine, and the tests live in `tests` (examples) and `props`
//! (property tests).
//!
//! [`MAX_HEAD`]: periscope_common::MAX_HEAD
//! [`MAX_TAIL`]: periscope_common::MAX_TAIL

mod parser;
mod syntax;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::AddAssign;

pub use parser::StreamParser;
pub use syntax::{count_request_starts, count_response_starts};

/// Longest start line, header or trailer line, line end included. A longer line is a
/// parse error (or, before the first message, proof the stream is not HTTP/1.x); it is
/// also the most a parser ever buffers.
pub const MAX_LINE: usize = 8 * 1024;
/// Longest chunk-size line (size, extensions, line end).
pub const MAX_CHUNK_LINE: usize = 1024;
/// Largest header section (start line + fields + empty line) and, separately, largest
/// trailer section. Larger is a parse error.
pub const MAX_HEADER_SECTION: u64 = 64 * 1024;
/// Cap, in bytes, of each header value kept in a [`Message`] (and of a status reason).
pub const MAX_VALUE: usize = 512;
/// Cap, in bytes, of a request target kept in a [`Message`].
pub const MAX_TARGET: usize = 1024;
/// Most request kinds a response parser remembers (see [`StreamParser::push_request`]);
/// beyond that the oldest entry is dropped.
pub const MAX_PENDING: usize = 1024;

/// One syscall's worth of a byte stream, as captured by the kernel side.
///
/// Stream bytes `[0, head.len())` are `head`, the last `tail.len()` bytes are `tail`, and
/// the `total_len - head.len() - tail.len()` bytes between are a gap. Inconsistent
/// values are clamped rather than rejected: `total_len` is raised to `head.len()` if
/// smaller, and a tail longer than the bytes after the head keeps only its last bytes.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    /// Time of the syscall (monotonic ns).
    pub ts_ns: u64,
    /// Bytes the syscall really moved (`>= head.len() + tail.len()`).
    pub total_len: u64,
    /// First bytes of the chunk.
    pub head: &'a [u8],
    /// Last bytes of the chunk, only when `total_len > head.len()`.
    pub tail: &'a [u8],
    /// `periscope_common::frame::RUN_*` bits when the kernel reports the chunk as a run
    /// of whole chunks of a chunked request body (no bytes copied), else 0.
    pub run: u32,
}

impl<'a> Chunk<'a> {
    /// A chunk whose every byte was captured.
    pub fn full(ts_ns: u64, data: &'a [u8]) -> Self {
        Self {
            ts_ns,
            total_len: data.len() as u64,
            head: data,
            tail: &[],
            run: 0,
        }
    }

    /// A chunk as the kernel reports it: `total_len` bytes moved, `head` and `tail` copied.
    pub fn captured(ts_ns: u64, total_len: u64, head: &'a [u8], tail: &'a [u8]) -> Self {
        Self {
            ts_ns,
            total_len,
            head,
            tail,
            run: 0,
        }
    }

    /// The bytes of this chunk from offset `at` on (counting the uncaptured middle), as
    /// a chunk of their own; `None` when there are none.
    pub fn after(&self, at: u64) -> Option<Self> {
        let total = self.total_len.max(self.head.len() as u64);
        if at >= total {
            return None;
        }
        // Past the head, the tail alone is kept: of it, what lies past `at` is its
        // last `total - at` bytes, which is how a chunk's tail is read.
        let from = usize::try_from(at).map_or(self.head.len(), |a| a.min(self.head.len()));
        Some(Self {
            ts_ns: self.ts_ns,
            total_len: total - at,
            head: &self.head[from..],
            tail: self.tail,
            run: 0,
        })
    }
}

/// Which kind of message a stream carries: what a client writes (and a server reads) is
/// [`Direction::Request`], the other direction is [`Direction::Response`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// A request method. The common ones are variants so that parsing them allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Any other token (`1..=20` bytes of `A-Z`, `-`, `_`).
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`Message`] is: its start line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Request {
        method: Method,
        /// Request target as sent (origin-form `/a?b`, absolute-form, authority-form or
        /// `*`), capped at [`MAX_TARGET`] bytes. Lossy UTF-8.
        target: String,
    },
    Response {
        status: u16,
        /// Reason phrase, trimmed, capped at [`MAX_VALUE`]; `None` when empty.
        reason: Option<String>,
    },
}

/// One complete request or final response.
///
/// String fields are lossy UTF-8, trimmed of surrounding spaces/tabs and capped (a cut
/// never splits a character). When a header field appears more than once, the first
/// value is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    /// `HTTP/1.0` -> 0, `HTTP/1.1` -> 1. Guessed as 1 when a gap hid the version.
    pub version_minor: u8,
    /// Timestamp of the chunk holding the message's first byte. For a response preceded
    /// by interim (1xx) responses, the first byte of the final response.
    pub start_ns: u64,
    /// Timestamp of the chunk holding the message's last byte. Exception: a
    /// close-delimited response ends when the connection closes, so its `end_ns` is the
    /// time passed to [`StreamParser::close`].
    pub end_ns: u64,
    /// Bytes of the header section: start line, fields and the empty line, with their
    /// line ends. When a gap hid the end of the header section, every byte up to the end
    /// of that chunk.
    pub header_bytes: u64,
    /// Bytes after the header section up to the end of the message, as on the wire: for
    /// chunked bodies this includes chunk-size lines, chunk CRLFs, the last chunk and the
    /// trailer section.
    pub body_bytes: u64,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub content_type: Option<String>,
    /// The `Content-Length` header, as sent, even where it does not frame the body
    /// (responses to HEAD, 304, or alongside `Transfer-Encoding`).
    pub content_length: Option<u64>,
    /// The `Transfer-Encoding` header's last coding is `chunked` (as sent, like
    /// `content_length`; the body was read chunked unless the message has no body).
    pub chunked: bool,
    /// The connection closes after this message: `Connection: close`, or HTTP/1.0
    /// without `Connection: keep-alive`.
    pub connection_close: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// `Upgrade` names `h2c`: a request asking to switch to HTTP/2 over cleartext (RFC
    /// 7540 §3.2), or the `101 Switching Protocols` granting it.
    pub upgrade_h2c: bool,
    /// Bytes the framing needed were not captured, so where this message ends (and
    /// possibly some fields) is a best guess. Sizes of a truncated message are not exact.
    pub truncated: bool,
    /// The body's size is not known: a body delimited by the connection's close,
    /// which an orderly close and a peer's reset (after writes that failed, which the
    /// capture does not report) end alike. Spans and metrics then claim no size.
    pub size_unknown: bool,
}

impl Message {
    /// For a request: its method (`None` for a response).
    pub fn method(&self) -> Option<&Method> {
        match &self.kind {
            MessageKind::Request { method, .. } => Some(method),
            MessageKind::Response { .. } => None,
        }
    }

    /// For a response: its status code.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            MessageKind::Response { status, .. } => Some(status),
            MessageKind::Request { .. } => None,
        }
    }
}

/// Why a stream stopped being parsed as HTTP/1.x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Passthrough {
    /// The stream's first bytes cannot start an HTTP/1.x message (TLS, HTTP/2, a
    /// binary protocol on the port).
    NotHttp1,
    /// `101 Switching Protocols`, a 2xx answer to `CONNECT`, or
    /// [`StreamParser::enter_passthrough`].
    Upgraded,
}

/// Counters of one [`StreamParser`]; add them up with `+=` to aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParserStats {
    /// Messages emitted (truncated ones included).
    pub messages: u64,
    /// Messages emitted with `truncated` set.
    pub truncated: u64,
    /// Interim (1xx other than 101) responses consumed without a message.
    pub interim: u64,
    /// Malformed input after the stream had been recognised as HTTP: bad start line,
    /// header line, chunk size or `Content-Length`, a line or header section over its cap.
    pub parse_errors: u64,
    /// Times the parser lost the message boundaries and had to wait for a chunk whose
    /// head starts a message: after a parse error, after a message truncated by a gap in
    /// its header section, or when a gap hid where the next message starts.
    pub resyncs: u64,
    /// Bytes skipped while waiting for such a chunk.
    pub skipped_bytes: u64,
    /// Bytes ignored because the stream is not (or no longer) HTTP/1.x.
    pub passthrough_bytes: u64,
    /// Partial messages dropped by [`StreamParser::close`].
    pub dropped_at_close: u64,
    /// Gaps (bytes not captured) that cut a start line or header section.
    pub gaps_in_header: u64,
    /// Gaps that hid a chunk-size line or trailers of a chunked body.
    pub gaps_in_chunk_framing: u64,
    /// Gaps that hid where the next message starts (between messages, or a body that
    /// ended inside the gap with more bytes after it).
    pub gaps_hiding_start: u64,
    /// Runs of whole chunks the kernel framed (counted as body, no bytes seen).
    pub chunk_runs: u64,
    /// Such runs that did not start where the parser stood (taken as gaps).
    pub chunk_runs_refused: u64,
}

impl AddAssign for ParserStats {
    fn add_assign(&mut self, o: Self) {
        self.messages += o.messages;
        self.truncated += o.truncated;
        self.interim += o.interim;
        self.parse_errors += o.parse_errors;
        self.resyncs += o.resyncs;
        self.skipped_bytes += o.skipped_bytes;
        self.passthrough_bytes += o.passthrough_bytes;
        self.dropped_at_close += o.dropped_at_close;
        self.gaps_in_header += o.gaps_in_header;
        self.gaps_in_chunk_framing += o.gaps_in_chunk_framing;
        self.chunk_runs += o.chunk_runs;
        self.chunk_runs_refused += o.chunk_runs_refused;
        self.gaps_hiding_start += o.gaps_hiding_start;
    }
}
