//! The per-stream state machine: chunks in, complete messages out.
//!
//! Each chunk is walked as up to three segments: captured head, gap, captured tail.
//! Captured bytes go through [`StreamParser::step`], which consumes a prefix of them
//! according to the current [`State`]; a gap goes through [`StreamParser::gap`], which
//! either counts it (body bytes whose framing is known) or records that the framing is
//! lost. Two decisions are taken at chunk boundaries only, because only there does the
//! parser see bytes whose position it knows after losing track: at a chunk's start
//! (does it begin a message?) and at its end (does it end a chunked body?).

use std::collections::VecDeque;
use std::mem;

use periscope_common::frame::{RUN_CHUNKS, RUN_FROM_DATA_END, RUN_TO_DATA_END};

use super::syntax::{
    self, Before, FieldLine, StartError, capped_string, ends_chunked_body, list_tokens,
    looks_like_start, method_from_token, parse_chunk_size, parse_content_length, parse_field_line,
    trim_eol,
};
use super::{
    Chunk, Direction, MAX_CHUNK_LINE, MAX_HEADER_SECTION, MAX_LINE, MAX_PENDING, MAX_TARGET,
    MAX_VALUE, Message, MessageKind, Method, ParserStats, Passthrough,
};

/// A line buffer that grew past this is freed once its line is processed, so that one
/// long line does not pin memory for the life of the connection.
const KEEP_LINE_CAPACITY: usize = 1024;

/// `prefix` value once the start of a start line has been validated.
const PREFIX_DONE: u8 = u8::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between messages. Stray CR/LF are skipped; any other byte starts a message.
    Idle,
    /// Inside the start line.
    StartLine,
    /// Inside the header fields.
    Headers,
    /// A gap hit the header section: every byte to the end of the chunk is counted as
    /// header, and the message is emitted (truncated) at the chunk's end.
    HeadGap,
    /// Inside a `Content-Length` body; bytes left (never 0).
    Length(u64),
    Chunked(Chunked),
    /// A gap hid a chunk-size line: the end is found by the end of a chunk
    /// ([`ends_chunked_body`]) or by a chunk that starts a new message.
    Lost,
    /// A response body delimited by the connection's close.
    UntilClose,
    /// Sync lost: skipping to a chunk whose head looks like a message start.
    Resync,
    /// Not HTTP/1.x (any more): bytes are only counted.
    Passthrough(Passthrough),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunked {
    /// Inside a chunk-size line.
    Size,
    /// Inside chunk data; bytes left (never 0).
    Data(u64),
    /// After chunk data, expecting `\r\n` (a bare `\n` is accepted).
    DataCr,
    /// After chunk data and `\r`, expecting `\n`.
    DataLf,
    /// Inside the trailer section.
    Trailers,
}

/// What a response parser knows of the request a response answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Normal,
    /// HEAD (or a caller-declared bodiless request): no body whatever the headers say.
    NoBody,
    /// CONNECT: a 2xx turns the connection into a tunnel.
    Connect,
}

/// The last coding of `Transfer-Encoding`, if the header was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum TransferEncoding {
    #[default]
    Absent,
    Chunked,
    Other,
}

/// The message being parsed. `Default` allocates nothing, so resetting it is free.
#[derive(Debug, Default)]
struct Draft {
    kind: Option<MessageKind>,
    version_minor: u8,
    start_ns: u64,
    /// Timestamp of the last chunk that carried bytes of this message.
    last_ts: u64,
    header_bytes: u64,
    body_bytes: u64,
    /// Bytes of the trailer section so far (capped like a header section).
    trailer_bytes: u64,
    host: Option<String>,
    user_agent: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    content_type: Option<String>,
    content_length: Option<u64>,
    transfer_encoding: TransferEncoding,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    upgrade_h2c: bool,
    truncated: bool,
}

impl Draft {
    fn status(&self) -> Option<u16> {
        match self.kind {
            Some(MessageKind::Response { status, .. }) => Some(status),
            _ => None,
        }
    }

    /// Records one header field; `Err` when its value makes the message unframeable.
    fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), ()> {
        fn keep(slot: &mut Option<String>, value: &[u8]) {
            if slot.is_none() {
                *slot = Some(capped_string(value, MAX_VALUE));
            }
        }
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        // Dispatch on length first: most fields are none of these and cost one compare.
        match name.len() {
            4 if is("host") => keep(&mut self.host, value),
            6 if is("expect") => {
                self.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            7 if is("upgrade") => {
                self.upgrade_h2c |= list_tokens(value).any(|t| t.eq_ignore_ascii_case(b"h2c"));
            }
            10 if is("user-agent") => keep(&mut self.user_agent, value),
            10 if is("tracestate") => keep(&mut self.tracestate, value),
            10 if is("connection") => {
                for t in list_tokens(value) {
                    self.close |= t.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            11 if is("traceparent") => keep(&mut self.traceparent, value),
            12 if is("content-type") => keep(&mut self.content_type, value),
            14 if is("content-length") => {
                let n = parse_content_length(value).ok_or(())?;
                match self.content_length {
                    Some(prev) if prev != n => return Err(()),
                    _ => self.content_length = Some(n),
                }
            }
            17 if is("transfer-encoding") => {
                if let Some(last) = list_tokens(value).last() {
                    self.transfer_encoding = if last.eq_ignore_ascii_case(b"chunked") {
                        TransferEncoding::Chunked
                    } else {
                        TransferEncoding::Other
                    };
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn into_message(self, end_ns: u64) -> Option<Message> {
        Some(Message {
            kind: self.kind?,
            version_minor: self.version_minor,
            start_ns: self.start_ns,
            end_ns,
            header_bytes: self.header_bytes,
            body_bytes: self.body_bytes,
            host: self.host,
            user_agent: self.user_agent,
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            content_type: self.content_type,
            content_length: self.content_length,
            chunked: self.transfer_encoding == TransferEncoding::Chunked,
            connection_close: self.close || (self.version_minor == 0 && !self.keep_alive),
            expect_continue: self.expect_continue,
            upgrade_h2c: self.upgrade_h2c,
            truncated: self.truncated,
            size_unknown: false,
        })
    }
}

/// Outcome of feeding bytes to the line assembler.
enum Line {
    /// No line end yet; the bytes were buffered.
    Partial,
    /// The line would exceed its cap.
    TooLong,
    /// A line ended within the input: it is the consumed bytes.
    InPlace,
    /// A line ended and was reassembled in this buffer (give it back with `recycle`).
    Buffered(Vec<u8>),
}

/// Incremental HTTP/1.x parser of one direction of one connection.
///
/// Feed it every chunk of the stream in order with [`feed`](Self::feed); each call
/// appends the messages that completed in that chunk. Memory per parser is one partial
/// line (at most [`MAX_LINE`] bytes), the fields of the message in progress (each
/// capped), and for response streams up to [`MAX_PENDING`] request kinds.
///
/// It never panics on any input. Malformed input is counted
/// ([`ParserStats::parse_errors`]) and skipped up to the next chunk that starts a
/// message; a stream whose first bytes are not HTTP/1.x is ignored for good
/// ([`is_passthrough`](Self::is_passthrough)).
#[derive(Debug)]
pub struct StreamParser {
    dir: Direction,
    state: State,
    draft: Draft,
    /// Partial line carried over between chunks.
    line: Vec<u8>,
    /// Bytes of the current start line checked so far by `check_prefix`, or `PREFIX_DONE`.
    prefix: u8,
    /// A valid start line has been seen: from then on bad input is a parse error, not
    /// proof that the stream is not HTTP.
    started: bool,
    pending: VecDeque<Pending>,
    stats: ParserStats,
    /// Bytes of the chunk being fed consumed so far (head, gap and tail, in order).
    fed: u64,
    /// Where, in the chunk last fed, the bytes after an upgrade (`101`, or a 2xx to
    /// CONNECT) begin, when the response granting it ended in that chunk.
    upgraded_at: Option<u64>,
}

impl StreamParser {
    pub fn new(dir: Direction) -> Self {
        Self {
            dir,
            state: State::Idle,
            draft: Draft::default(),
            line: Vec::new(),
            prefix: 0,
            started: false,
            pending: VecDeque::new(),
            stats: ParserStats::default(),
            fed: 0,
            upgraded_at: None,
        }
    }

    /// A parser for a stream joined in the middle (a connection that was open before the
    /// agent attached): it skips bytes until a chunk starts with a message, instead of
    /// judging the stream by bytes that may be the inside of a body.
    pub fn mid_stream(dir: Direction) -> Self {
        Self {
            state: State::Resync,
            started: true,
            ..Self::new(dir)
        }
    }

    pub fn direction(&self) -> Direction {
        self.dir
    }

    /// Feeds the next chunk of the stream and appends every message that completes in it
    /// to `out`, in stream order.
    pub fn feed(&mut self, chunk: &Chunk<'_>, out: &mut Vec<Message>) {
        self.fed = 0;
        self.upgraded_at = None;
        let ts = chunk.ts_ns;
        let head = chunk.head;
        let total = chunk.total_len.max(head.len() as u64);
        let after_head = total - head.len() as u64;
        let tail = if after_head == 0 {
            &[][..]
        } else {
            // A tail longer than the bytes after the head keeps its last bytes.
            let keep = chunk
                .tail
                .len()
                .min(usize::try_from(after_head).unwrap_or(usize::MAX));
            &chunk.tail[chunk.tail.len() - keep..]
        };
        let gap = after_head - tail.len() as u64;
        if total == 0 {
            return;
        }
        if let State::Passthrough(_) = self.state {
            self.stats.passthrough_bytes += total;
            return;
        }

        if chunk.run & RUN_CHUNKS != 0
            && head.is_empty()
            && tail.is_empty()
            && self.run(chunk.run, total, ts)
        {
            return;
        }

        // A chunk boundary is where a lost parser may find its footing again.
        match self.state {
            State::Resync if looks_like_start(self.dir, head) => self.state = State::Idle,
            State::Lost if looks_like_start(self.dir, head) => {
                // The old message ended with the previous chunk that carried its bytes.
                let end = self.draft.last_ts;
                self.finish(end, out);
            }
            _ => {}
        }

        self.bytes(head, ts, out);
        if gap > 0 {
            self.gap(gap, ts, out);
            self.fed += gap;
        }
        self.bytes(tail, ts, out);

        match self.state {
            State::HeadGap => self.finish_head_gap(ts, out),
            State::Lost => {
                let (end, before) = if !tail.is_empty() {
                    let before = match (gap, head.last()) {
                        (0, Some(&b)) => Before::Byte(b),
                        (0, None) => Before::ChunkStart,
                        _ => Before::Unknown,
                    };
                    (tail, before)
                } else if gap == 0 {
                    (head, Before::ChunkStart)
                } else {
                    (&[][..], Before::Unknown)
                };
                if ends_chunked_body(end, before) {
                    self.finish(ts, out);
                }
            }
            _ => {}
        }
    }

    /// Response streams only: the request answered by the next response not yet
    /// answered had no response body (`no_body`: HEAD). Call once per request, in
    /// request order, before feeding its response; without an entry a response is
    /// assumed to answer an ordinary request. Interim (1xx) responses do not consume
    /// an entry. Ignored on request streams.
    pub fn push_request(&mut self, no_body: bool) {
        self.push_pending(if no_body {
            Pending::NoBody
        } else {
            Pending::Normal
        });
    }

    /// Like [`push_request`](Self::push_request), from the parsed request: HEAD means no
    /// body, and for CONNECT a 2xx response makes the stream a tunnel (passthrough).
    pub fn push_request_for(&mut self, request: &Message) {
        self.push_pending(match request.method() {
            Some(Method::Head) => Pending::NoBody,
            Some(Method::Connect) => Pending::Connect,
            _ => Pending::Normal,
        });
    }

    fn push_pending(&mut self, p: Pending) {
        if self.dir != Direction::Response || self.is_passthrough() {
            return;
        }
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending.push_back(p);
    }

    /// The connection closed at `ts_ns`. A close-delimited response in progress is
    /// complete: it is appended to `out` with `end_ns = ts_ns`. A message whose chunked
    /// framing was lost in a gap (already `truncated`) is appended too, ending with the
    /// last chunk that carried its bytes: the close is the last place its end can be.
    /// Any other partial message is dropped and counted in
    /// [`ParserStats::dropped_at_close`]. The parser is left ready for a new stream.
    pub fn close(&mut self, ts_ns: u64, out: &mut Vec<Message>) {
        match self.state {
            State::UntilClose => {
                let n = out.len();
                self.finish(ts_ns, out);
                out.iter_mut().skip(n).for_each(|m| m.size_unknown = true);
            }
            State::Lost => {
                let end = self.draft.last_ts;
                self.finish(end, out);
            }
            State::Length(_) | State::Chunked(_)
                if self.dir == Direction::Response
                    && self.stats.resyncs == 0
                    && self.stats.parse_errors == 0 =>
            {
                // The connection ended inside a response's body: the peer went away
                // (a client that gave up; the server's later writes failed, which the
                // capture does not report) or the server stopped. The response is what
                // the server answered; how much of its body crossed is not known. Only
                // on a stream that never lost its footing: after a resync, where the
                // parser found a start depends on where chunks began, and a message it
                // could not finish is no message to vouch for.
                let n = out.len();
                let end = self.draft.last_ts;
                self.finish(end, out);
                out.iter_mut().skip(n).for_each(|m| m.size_unknown = true);
            }
            State::Idle | State::Resync | State::Passthrough(_) => {}
            _ => self.stats.dropped_at_close += 1,
        }
        if !self.is_passthrough() {
            self.state = State::Idle;
        }
        self.draft = Draft::default();
        self.line = Vec::new();
        self.pending = VecDeque::new();
        self.prefix = 0;
    }

    /// Stops parsing: every later byte is counted as passthrough. For the request
    /// stream of a connection whose response stream saw `101 Switching Protocols` (or
    /// a 2xx to CONNECT).
    pub fn enter_passthrough(&mut self) {
        if !self.is_passthrough() {
            self.become_passthrough(Passthrough::Upgraded);
        }
    }

    /// Stops parsing because the stream is known not to be HTTP/1.x (the kernel saw
    /// its first bytes and sends no payload for it).
    pub fn not_http1(&mut self) {
        if !self.is_passthrough() {
            self.become_passthrough(Passthrough::NotHttp1);
        }
    }

    pub fn stats(&self) -> ParserStats {
        self.stats
    }

    /// Where, in the chunk last fed, the bytes of the protocol switched to begin (an
    /// offset into the chunk's bytes, counting its gap): set when the response granting
    /// an upgrade (`101 Switching Protocols`, or a 2xx to CONNECT) ended in that chunk
    /// and its end is known.
    pub fn upgraded_at(&self) -> Option<u64> {
        self.upgraded_at
    }

    /// True once the stream was judged not to be HTTP/1.x or was upgraded.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::Passthrough(_))
    }

    /// Why the stream is passthrough, if it is.
    pub fn passthrough(&self) -> Option<Passthrough> {
        match self.state {
            State::Passthrough(why) => Some(why),
            _ => None,
        }
    }

    /// Bytes allocated for a partial line (capacity, not length): at most [`MAX_LINE`].
    pub fn buffered_bytes(&self) -> usize {
        self.line.capacity()
    }

    /// Request streams only: the request whose header section is complete but whose body
    /// is still being read, as a message ending at the last chunk that carried its bytes
    /// (`body_bytes` counts what was read so far). A server may answer before it reads
    /// (or instead of reading) the body, so pairing keys on the header section; this is
    /// how the caller learns of it. `None` when no body is in progress or its framing
    /// was lost.
    pub fn open_request(&self) -> Option<Message> {
        if self.dir != Direction::Request
            || !matches!(self.state, State::Length(_) | State::Chunked(_))
        {
            return None;
        }
        let d = &self.draft;
        Some(Message {
            kind: d.kind.clone()?,
            version_minor: d.version_minor,
            start_ns: d.start_ns,
            end_ns: d.last_ts.max(d.start_ns),
            header_bytes: d.header_bytes,
            body_bytes: d.body_bytes,
            host: d.host.clone(),
            user_agent: d.user_agent.clone(),
            traceparent: d.traceparent.clone(),
            tracestate: d.tracestate.clone(),
            content_type: d.content_type.clone(),
            content_length: d.content_length,
            chunked: d.transfer_encoding == TransferEncoding::Chunked,
            connection_close: d.close || (d.version_minor == 0 && !d.keep_alive),
            expect_continue: d.expect_continue,
            upgrade_h2c: d.upgrade_h2c,
            truncated: d.truncated,
            size_unknown: false,
        })
    }

    /// Times this stream lost message boundaries or emitted a message whose end was
    /// guessed: after any of these, counting messages no longer pairs them.
    /// Waiting in a body whose chunked framing a gap hid counts at once, not only when
    /// that message is emitted (truncated): its end, and what follows, is a guess.
    pub fn losses(&self) -> u64 {
        self.stats.resyncs
            + self.stats.parse_errors
            + self.stats.truncated
            + u64::from(self.state == State::Lost)
    }

    /// Request streams only: a request line was read and its header section is still
    /// incomplete (a client that gave up mid-header): an exchange the server may log
    /// that can never get a span.
    pub fn head_in_progress(&self) -> bool {
        self.dir == Direction::Request && self.state == State::Headers && self.draft.kind.is_some()
    }

    /// Request kinds remembered for responses not yet seen.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    // ---- captured bytes -------------------------------------------------------------

    fn bytes(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Message>) {
        while !data.is_empty() {
            let used = self.step(data, ts, out);
            data = &data[used..];
            self.fed += used as u64;
            if self.upgraded_at.is_none() && self.state == State::Passthrough(Passthrough::Upgraded)
            {
                // The step that ended the response granting an upgrade stops right
                // after its header section: the other protocol starts here.
                self.upgraded_at = Some(self.fed);
            }
        }
    }

    /// Consumes a prefix of `data` (at least one byte, except when it only moves from
    /// `Idle` to `StartLine`, which then consumes).
    fn step(&mut self, data: &[u8], ts: u64, out: &mut Vec<Message>) -> usize {
        let len = data.len();
        match self.state {
            State::Passthrough(_) => {
                self.stats.passthrough_bytes += len as u64;
                len
            }
            State::Resync => {
                self.stats.skipped_bytes += len as u64;
                len
            }
            State::HeadGap => {
                self.draft.header_bytes += len as u64;
                len
            }
            State::Lost | State::UntilClose => {
                self.draft.body_bytes += len as u64;
                self.draft.last_ts = ts;
                len
            }
            State::Idle => match data.iter().position(|&b| b != b'\r' && b != b'\n') {
                None => len,
                Some(0) => {
                    self.draft = Draft {
                        start_ns: ts,
                        last_ts: ts,
                        ..Draft::default()
                    };
                    self.state = State::StartLine;
                    self.prefix = 0;
                    0
                }
                Some(i) => i,
            },
            State::StartLine | State::Headers => self.head_step(data, ts, out),
            State::Length(rem) => {
                let n = rem.min(len as u64);
                self.draft.body_bytes += n;
                self.draft.last_ts = ts;
                if n == rem {
                    self.finish(ts, out);
                } else {
                    self.state = State::Length(rem - n);
                }
                n as usize
            }
            State::Chunked(c) => self.chunked_step(c, data, ts, out),
        }
    }

    /// Start line or header fields.
    fn head_step(&mut self, data: &[u8], ts: u64, out: &mut Vec<Message>) -> usize {
        let (used, line) = self.next_line(data, MAX_LINE);
        self.draft.header_bytes += used as u64;
        self.draft.last_ts = ts;
        if self.state == State::StartLine
            && self.prefix != PREFIX_DONE
            && !self.check_prefix(&data[..used])
        {
            self.start_failed(line);
            return used;
        }
        if self.draft.header_bytes > MAX_HEADER_SECTION {
            self.discard(line);
            self.start_failed_or_error();
            return used;
        }
        match line {
            Line::Partial => {}
            Line::TooLong => self.start_failed_or_error(),
            Line::InPlace => self.head_line(trim_eol(&data[..used]), ts, out),
            Line::Buffered(buf) => {
                self.head_line(trim_eol(&buf), ts, out);
                self.recycle(buf);
            }
        }
        used
    }

    /// Checks the first bytes of a start line as they arrive, so that a stream that is
    /// not HTTP fails on its first byte instead of after a full line.
    fn check_prefix(&mut self, bytes: &[u8]) -> bool {
        const VERSION: &[u8] = b"HTTP/1.";
        for &b in bytes {
            match self.dir {
                Direction::Request => {
                    if b == b' ' && self.prefix > 0 {
                        self.prefix = PREFIX_DONE;
                        return true;
                    }
                    if !syntax::is_method_byte(b) || usize::from(self.prefix) >= syntax::MAX_METHOD
                    {
                        return false;
                    }
                    self.prefix += 1;
                }
                Direction::Response => {
                    if b != VERSION[usize::from(self.prefix)] {
                        return false;
                    }
                    self.prefix += 1;
                    if usize::from(self.prefix) == VERSION.len() {
                        self.prefix = PREFIX_DONE;
                        return true;
                    }
                }
            }
        }
        true
    }

    fn head_line(&mut self, line: &[u8], ts: u64, out: &mut Vec<Message>) {
        if self.state == State::StartLine {
            return self.start_line(line);
        }
        if line.is_empty() {
            return self.end_head(ts, out);
        }
        match parse_field_line(line) {
            Some(FieldLine::Field(name, value)) => {
                if self.draft.field(name, value).is_err() {
                    self.error();
                }
            }
            Some(FieldLine::Continuation) => {}
            None => self.error(),
        }
    }

    fn start_line(&mut self, line: &[u8]) {
        let parsed = match self.dir {
            Direction::Request => syntax::parse_request_line(line).map(|r| {
                let target = capped_string(r.target, MAX_TARGET);
                let kind = MessageKind::Request {
                    method: method_from_token(r.method),
                    target,
                };
                (kind, r.version_minor)
            }),
            Direction::Response => syntax::parse_status_line(line).map(|s| {
                let reason = (!s.reason.is_empty()).then(|| capped_string(s.reason, MAX_VALUE));
                (
                    MessageKind::Response {
                        status: s.status,
                        reason,
                    },
                    s.version_minor,
                )
            }),
        };
        match parsed {
            Ok((kind, minor)) => {
                self.draft.kind = Some(kind);
                self.draft.version_minor = minor;
                self.state = State::Headers;
                self.started = true;
            }
            Err(StartError::NotHttp1) if !self.started => {
                self.stats.passthrough_bytes += self.draft.header_bytes;
                self.become_passthrough(Passthrough::NotHttp1);
            }
            Err(_) => self.start_failed_or_error(),
        }
    }

    /// The empty line ending a header section: decide how the body is framed.
    fn end_head(&mut self, ts: u64, out: &mut Vec<Message>) {
        let d = &self.draft;
        let te = d.transfer_encoding;
        let cl = d.content_length;
        match (self.dir, d.status()) {
            (Direction::Request, _) => match (te, cl) {
                (TransferEncoding::Chunked, _) => self.state = State::Chunked(Chunked::Size),
                // RFC 9112 §6.3: a request whose final coding is not chunked cannot be framed.
                (TransferEncoding::Other, _) => self.error(),
                (TransferEncoding::Absent, Some(n)) if n > 0 => self.state = State::Length(n),
                (TransferEncoding::Absent, _) => self.finish(ts, out),
            },
            (Direction::Response, Some(status))
                if (100..200).contains(&status) && status != 101 =>
            {
                // Interim response: the final one follows and is the one that counts.
                self.stats.interim += 1;
                self.draft = Draft::default();
                self.state = State::Idle;
            }
            (Direction::Response, status) => {
                let status = status.unwrap_or(0);
                let pending = self.pending.pop_front().unwrap_or(Pending::Normal);
                let tunnel = pending == Pending::Connect && (200..300).contains(&status);
                if status == 101 || tunnel {
                    self.finish(ts, out);
                    self.become_passthrough(Passthrough::Upgraded);
                } else if pending == Pending::NoBody || status == 204 || status == 304 {
                    self.finish(ts, out);
                } else {
                    match (te, cl) {
                        (TransferEncoding::Chunked, _) => {
                            self.state = State::Chunked(Chunked::Size);
                        }
                        (TransferEncoding::Other, _) | (TransferEncoding::Absent, None) => {
                            self.state = State::UntilClose;
                        }
                        (TransferEncoding::Absent, Some(0)) => self.finish(ts, out),
                        (TransferEncoding::Absent, Some(n)) => self.state = State::Length(n),
                    }
                }
            }
        }
    }

    fn chunked_step(&mut self, c: Chunked, data: &[u8], ts: u64, out: &mut Vec<Message>) -> usize {
        self.draft.last_ts = ts;
        match c {
            Chunked::Data(rem) => {
                let n = rem.min(data.len() as u64);
                self.draft.body_bytes += n;
                self.state = State::Chunked(if n == rem {
                    Chunked::DataCr
                } else {
                    Chunked::Data(rem - n)
                });
                n as usize
            }
            Chunked::DataCr | Chunked::DataLf => {
                self.draft.body_bytes += 1;
                self.state = match (c, data[0]) {
                    (Chunked::DataCr, b'\r') => State::Chunked(Chunked::DataLf),
                    (_, b'\n') => State::Chunked(Chunked::Size),
                    _ => {
                        self.error();
                        return 1;
                    }
                };
                1
            }
            Chunked::Size => {
                let (used, line) = self.next_line(data, MAX_CHUNK_LINE);
                self.draft.body_bytes += used as u64;
                let size = match line {
                    Line::Partial => return used,
                    Line::TooLong => None,
                    Line::InPlace => parse_chunk_size(trim_eol(&data[..used])),
                    Line::Buffered(buf) => {
                        let size = parse_chunk_size(trim_eol(&buf));
                        self.recycle(buf);
                        size
                    }
                };
                match size {
                    Some(0) => self.state = State::Chunked(Chunked::Trailers),
                    Some(n) => self.state = State::Chunked(Chunked::Data(n)),
                    None => self.error(),
                }
                used
            }
            Chunked::Trailers => {
                let (used, line) = self.next_line(data, MAX_LINE);
                self.draft.body_bytes += used as u64;
                self.draft.trailer_bytes += used as u64;
                if self.draft.trailer_bytes > MAX_HEADER_SECTION {
                    self.discard(line);
                    self.error();
                    return used;
                }
                let verdict = match line {
                    Line::Partial => return used,
                    Line::TooLong => Err(()),
                    Line::InPlace => trailer_verdict(trim_eol(&data[..used])),
                    Line::Buffered(buf) => {
                        let v = trailer_verdict(trim_eol(&buf));
                        self.recycle(buf);
                        v
                    }
                };
                match verdict {
                    Ok(true) => self.finish(ts, out),
                    Ok(false) => {}
                    Err(()) => self.error(),
                }
                used
            }
        }
    }

    /// A run of whole chunks of a chunked body, `n` bytes, framed by the kernel
    /// (`run`: its `RUN_*` bits). Taken only where it says it starts: at a chunk-size
    /// line's first byte or at the CRLF after a chunk's data; false otherwise (the
    /// bytes are then a gap like any other, and framing is lost).
    fn run(&mut self, run: u32, n: u64, ts: u64) -> bool {
        let from_data_end = run & RUN_FROM_DATA_END != 0;
        let fits = match self.state {
            State::Chunked(Chunked::Size) => !from_data_end && self.line.is_empty(),
            State::Chunked(Chunked::DataCr) => from_data_end,
            _ => false,
        };
        if !fits || self.dir != Direction::Request {
            self.stats.chunk_runs_refused += 1;
            return false;
        }
        self.stats.chunk_runs += 1;
        self.draft.last_ts = ts;
        self.draft.body_bytes += n;
        self.state = State::Chunked(if run & RUN_TO_DATA_END != 0 {
            Chunked::DataCr
        } else {
            Chunked::Size
        });
        true
    }

    // ---- gaps -----------------------------------------------------------------------

    /// `n > 0` bytes of the stream were not captured.
    fn gap(&mut self, n: u64, ts: u64, out: &mut Vec<Message>) {
        match self.state {
            State::Passthrough(_) => self.stats.passthrough_bytes += n,
            State::Resync => self.stats.skipped_bytes += n,
            State::Idle => {
                // A message may start anywhere in there: nothing to do but wait for a
                // chunk that starts one.
                self.stats.gaps_hiding_start += 1;
                self.enter_resync();
                self.stats.skipped_bytes += n;
            }
            State::StartLine => {
                self.stats.gaps_in_header += 1;
                let line = mem::take(&mut self.line);
                let known = self.partial_start_line(&line);
                self.recycle(line);
                if known {
                    self.draft.truncated = true;
                    self.draft.header_bytes += n;
                    self.state = State::HeadGap;
                } else if !self.started {
                    self.stats.passthrough_bytes += self.draft.header_bytes + n;
                    self.become_passthrough(Passthrough::NotHttp1);
                } else {
                    self.enter_resync();
                    self.stats.skipped_bytes += n;
                }
            }
            State::Headers => {
                self.stats.gaps_in_header += 1;
                // The partial field line is dropped: its value may be cut.
                self.line.clear();
                self.draft.truncated = true;
                self.draft.header_bytes += n;
                self.state = State::HeadGap;
            }
            State::HeadGap => self.draft.header_bytes += n,
            State::Length(rem) => {
                self.draft.last_ts = ts;
                if n < rem {
                    self.draft.body_bytes += n;
                    self.state = State::Length(rem - n);
                } else {
                    // The body ended inside the gap; what followed it is unknown.
                    self.draft.body_bytes += rem;
                    self.finish(ts, out);
                    if n > rem {
                        self.stats.gaps_hiding_start += 1;
                        self.enter_resync();
                        self.stats.skipped_bytes += n - rem;
                    }
                }
            }
            State::Chunked(Chunked::Data(rem)) if n <= rem => {
                self.draft.last_ts = ts;
                self.draft.body_bytes += n;
                let next = if n == rem {
                    Chunked::DataCr
                } else {
                    Chunked::Data(rem - n)
                };
                self.state = State::Chunked(next);
            }
            State::Chunked(_) => {
                // A chunk-size line (or the trailers) fell in the gap.
                self.stats.gaps_in_chunk_framing += 1;
                self.line.clear();
                self.draft.last_ts = ts;
                self.draft.body_bytes += n;
                self.draft.truncated = true;
                self.state = State::Lost;
            }
            State::Lost | State::UntilClose => {
                self.draft.last_ts = ts;
                self.draft.body_bytes += n;
            }
        }
    }

    /// Fills the draft from a start line cut by a gap. False if too little of it is known.
    fn partial_start_line(&mut self, line: &[u8]) -> bool {
        let kind = match self.dir {
            Direction::Request => match syntax::parse_partial_request_line(line) {
                Some((method, target)) => {
                    self.draft.version_minor = 1;
                    let target = capped_string(target, MAX_TARGET);
                    MessageKind::Request {
                        method: method_from_token(method),
                        target,
                    }
                }
                None => return false,
            },
            Direction::Response => match syntax::parse_partial_status_line(line) {
                Some((minor, status)) => {
                    self.draft.version_minor = minor;
                    MessageKind::Response {
                        status,
                        reason: None,
                    }
                }
                None => return false,
            },
        };
        self.draft.kind = Some(kind);
        self.started = true;
        true
    }

    /// End of a chunk whose header section was cut by a gap: emit the message as it is,
    /// ending here, and look for the next message at the next chunk.
    fn finish_head_gap(&mut self, ts: u64, out: &mut Vec<Message>) {
        if self.dir == Direction::Response {
            match self.draft.status() {
                Some(s) if (100..200).contains(&s) && s != 101 => {
                    self.stats.interim += 1;
                    self.draft = Draft::default();
                    self.enter_resync();
                    return;
                }
                Some(101) => {
                    self.pending.pop_front();
                    self.finish(ts, out);
                    return self.become_passthrough(Passthrough::Upgraded);
                }
                _ => {
                    self.pending.pop_front();
                }
            }
        }
        self.finish(ts, out);
        self.enter_resync();
    }

    // ---- transitions ----------------------------------------------------------------

    fn finish(&mut self, end_ns: u64, out: &mut Vec<Message>) {
        let draft = mem::take(&mut self.draft);
        if let Some(msg) = draft.into_message(end_ns) {
            self.stats.messages += 1;
            self.stats.truncated += u64::from(msg.truncated);
            out.push(msg);
        }
        self.state = State::Idle;
    }

    /// The start line in progress is not one. Before the first message that means the
    /// stream is not HTTP/1.x; after, it is a parse error.
    fn start_failed(&mut self, line: Line) {
        self.discard(line);
        self.start_failed_or_error();
    }

    fn start_failed_or_error(&mut self) {
        if self.started || self.state != State::StartLine {
            self.error();
        } else {
            self.stats.passthrough_bytes += self.draft.header_bytes;
            self.become_passthrough(Passthrough::NotHttp1);
        }
    }

    /// Malformed input: drop the message in progress and resync.
    fn error(&mut self) {
        self.stats.parse_errors += 1;
        if self.dir == Direction::Response && self.state == State::Headers {
            // This final response had not yet taken its request's entry.
            if matches!(self.draft.status(), Some(s) if s >= 200 || s == 101) {
                self.pending.pop_front();
            }
        }
        self.enter_resync();
    }

    fn enter_resync(&mut self) {
        self.stats.resyncs += 1;
        self.state = State::Resync;
        self.draft = Draft::default();
        self.clear_line();
    }

    fn become_passthrough(&mut self, why: Passthrough) {
        self.state = State::Passthrough(why);
        self.draft = Draft::default();
        self.line = Vec::new();
        self.pending = VecDeque::new();
    }

    // ---- line assembly --------------------------------------------------------------

    /// Consumes `data` up to and including the next `\n`, or all of it. A line that
    /// crosses chunks is assembled in `self.line`, never longer than `cap`.
    fn next_line(&mut self, data: &[u8], cap: usize) -> (usize, Line) {
        let (used, complete) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (data.len(), false),
        };
        if complete && self.line.is_empty() {
            return (
                used,
                if used > cap {
                    Line::TooLong
                } else {
                    Line::InPlace
                },
            );
        }
        let need = self.line.len() + used;
        if need > cap {
            self.clear_line();
            return (used, Line::TooLong);
        }
        if need > self.line.capacity() {
            // Grow geometrically but never past the cap, so capacity stays bounded.
            let target = need.max(self.line.capacity() * 2).clamp(64, cap);
            self.line.reserve_exact(target - self.line.len());
        }
        self.line.extend_from_slice(&data[..used]);
        if complete {
            (used, Line::Buffered(mem::take(&mut self.line)))
        } else {
            (used, Line::Partial)
        }
    }

    /// Gives a line buffer back for reuse, unless it grew large.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= KEEP_LINE_CAPACITY && self.line.capacity() == 0 {
            buf.clear();
            self.line = buf;
        }
    }

    fn discard(&mut self, line: Line) {
        if let Line::Buffered(buf) = line {
            self.recycle(buf);
        }
        self.clear_line();
    }

    fn clear_line(&mut self) {
        if self.line.capacity() > KEEP_LINE_CAPACITY {
            self.line = Vec::new();
        } else {
            self.line.clear();
        }
    }
}

/// A trailer section line: `Ok(true)` for the empty line ending it, `Ok(false)` for a
/// field line, `Err` otherwise.
fn trailer_verdict(line: &[u8]) -> Result<bool, ()> {
    if line.is_empty() {
        Ok(true)
    } else if syntax::is_trailer_line(line) {
        Ok(false)
    } else {
        Err(())
    }
}
