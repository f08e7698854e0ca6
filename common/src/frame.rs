//! Where each HTTP/1 request starts, found by the kernel while the bytes are still in its
//! scratch buffer.
//!
//! The kernel copies a bounded window of each data syscall (`MAX_HEAD` bytes). When a
//! client sends a request with a body and then the next request, a server's read often
//! begins with the end of that body and the next request starts inside the read, past
//! the window; a header block can be larger than the window; a chunked body's size lines
//! fall anywhere. Userspace learns each request's framing far too late to move the window
//! (records are applied after a hold), so the kernel follows the framing of request
//! streams itself, as a small streaming parser whose state lives with the socket: it
//! knows the stream offset of the next byte it must see (a request's start, a chunk-size
//! line, the rest of a header block), and a syscall that reaches that offset is reported
//! as chunks cut there: body bytes as a count only, the bytes the parser needs captured
//! from their first byte. Bodies are never copied.
//!
//! The agent never trusts this framing for meaning: it parses every byte it gets and only
//! sees where the windows start. A wrong offset costs a desync (a counted, missing span),
//! never a wrong span. Requests only: a request's framing needs nothing but its own bytes
//! (a response's depends on its request's method). A stream whose framing the kernel
//! loses (an unreadable `Content-Length`, a start that is no request line, more chunks in
//! one syscall than [`MAX_SEGMENTS`]) is captured from each syscall's start, as it was
//! before, for the rest of its life: framing is only ever derived from a known start.
//!
//! One [`Framer::step`] per `bpf_loop` iteration, each a bounded piece of work without a
//! loop (the verifier walks a callback until its states converge; a loop inside would
//! multiply that walk). A step looks at one byte where the parser needs bytes (a method,
//! a `Content-Length` value, a chunk size) and at eight for a line feed elsewhere; a
//! typical request costs about 60 steps.

use crate::{MAX_HEAD, SCRATCH_PAYLOAD};

/// No `Content-Length` seen (yet) in the current header block.
const CL_NONE: u64 = u64::MAX;
/// Longer values are unframeable (2^48 bytes is not a body anyone sends).
const MAX_DIGITS: u32 = 15;
/// Longest method token taken for one (`VERSION-CONTROL`).
const METHOD_MAX: u32 = 15;

const PH_METHOD: u32 = 0;
/// Skip to the line feed (request line, other header lines, chunk extensions).
const PH_LINE: u32 = 1;
/// First bytes of a header or trailer line.
const PH_LINE_START: u32 = 2;
/// Same, a byte at a time (fewer than 16 bytes left in the window).
const PH_NAME: u32 = 3;
const PH_LENGTH: u32 = 4;
const PH_CHUNK_SIZE: u32 = 5;
/// The CRLF after a chunk's data.
const PH_CHUNK_END: u32 = 6;

/// Most hex digits [`Framer::chunk_line_fast`] reads (chunks under 16 MiB).
const FAST_DIGITS: u64 = 6;
/// Window bytes the fast path may look at: CRLF, digits, CRLF.
const FAST_LINE: u64 = FAST_DIGITS + 4;

/// [`Framer::chunk_edge`]: not at a chunk edge.
pub const EDGE_NONE: u32 = 0;
/// At a chunk-size line's first byte.
pub const EDGE_SIZE: u32 = 1;
/// At the CRLF after a chunk's data.
pub const EDGE_DATA_END: u32 = 2;

/// `Transfer-Encoding` seen in this header block.
const F_TE: u32 = 1;
/// The header-like lines are a chunked body's trailers.
const F_TRAILERS: u32 = 2;
/// Whitespace followed the digits of a value.
const F_OWS: u32 = 4;
/// The [`PH_LINE`] being skipped is a chunk-size line's extension.
const F_EXT: u32 = 8;

/// Window indices are masked with this before every access: the verifier then knows
/// `index + 16 < SCRATCH_PAYLOAD` whatever it knows of the index.
const WIN_MASK: u64 = (2 * MAX_HEAD - 1) as u64;
const _: () = assert!(2 * MAX_HEAD + 32 <= SCRATCH_PAYLOAD);

/// The framing state of one request stream, kept with the socket between syscalls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    /// Stream offset of the next byte the parser must see; everything before it was
    /// seen or is body.
    pub need: u64,
    /// The number being read (a `Content-Length` or a chunk size).
    pub value: u64,
    /// The current header block's `Content-Length`, or `CL_NONE`.
    pub cl: u64,
    /// [`PH_NAME`]: a line's first bytes, little-endian.
    pub name: [u64; 2],
    pub phase: u32,
    /// Bytes of the method, digits of a value, or bytes of a name so far.
    pub count: u32,
    /// `F_*` bits.
    pub flags: u32,
    /// Requests whose header block ended.
    pub requests: u32,
}

/// Why [`Framer::step`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Keep stepping.
    No,
    /// The parser needs bytes past the window (`need` says where).
    Window,
    /// Framing is unknown from here on.
    Lost,
}

impl Default for Framer {
    fn default() -> Self {
        Self::at(0)
    }
}

impl Framer {
    /// A request starts at stream offset `need`.
    #[inline(always)]
    pub fn at(need: u64) -> Self {
        Framer {
            need,
            value: 0,
            cl: CL_NONE,
            name: [0; 2],
            phase: PH_METHOD,
            count: 0,
            flags: 0,
            requests: 0,
        }
    }

    /// Where the parser stands in a chunked body: [`EDGE_SIZE`] at a chunk-size line's
    /// first byte, [`EDGE_DATA_END`] at the CRLF after a chunk's data, else
    /// [`EDGE_NONE`].
    #[inline(always)]
    pub fn chunk_edge(&self) -> u32 {
        if self.phase == PH_CHUNK_SIZE && self.count == 0 && self.flags == 0 {
            EDGE_SIZE
        } else if self.phase == PH_CHUNK_END && self.count == 0 {
            EDGE_DATA_END
        } else {
            EDGE_NONE
        }
    }

    /// One step over the window of `n` bytes at the start of `buf`, which holds the
    /// stream from offset `win`.
    #[inline(always)]
    pub fn step(&mut self, buf: &[u8; SCRATCH_PAYLOAD], win: u64, n: u64) -> Stop {
        if self.need < win {
            return Stop::Lost;
        }
        let i = self.need - win;
        if i >= n {
            return Stop::Window;
        }
        match self.phase {
            PH_METHOD => self.method(byte(buf, i)),
            PH_LINE => self.line(buf, i, n),
            PH_LINE_START => self.line_start(buf, i, n),
            PH_NAME => self.name_byte(byte(buf, i)),
            PH_LENGTH => self.length(byte(buf, i)),
            PH_CHUNK_SIZE | PH_CHUNK_END if self.count == 0 && n - i >= FAST_LINE => {
                self.chunk_line_fast(buf, i)
            }
            PH_CHUNK_SIZE => self.chunk_size(byte(buf, i)),
            PH_CHUNK_END => self.chunk_end(byte(buf, i)),
            _ => Stop::Lost,
        }
    }

    #[inline(always)]
    fn method(&mut self, c: u8) -> Stop {
        self.need += 1;
        if self.count == 0 && (c == b'\r' || c == b'\n') {
            // Empty lines before a request line are allowed (RFC 9112, 2.2).
            return Stop::No;
        }
        if c == b' ' && self.count > 0 {
            self.phase = PH_LINE;
            return Stop::No;
        }
        if !(c.is_ascii_uppercase() || c == b'-' || c == b'_') || self.count == METHOD_MAX {
            return Stop::Lost;
        }
        self.count += 1;
        Stop::No
    }

    /// Eight bytes of a line: a line feed among them ends it.
    #[inline(always)]
    fn line(&mut self, buf: &[u8; SCRATCH_PAYLOAD], i: u64, n: u64) -> Stop {
        let avail = n - i;
        // Up to four words a step (a `bpf_loop` iteration costs more than a word's test).
        let words = if avail >= 32 { 4 } else { 1 };
        let mut k = 0;
        let mut lf = 0;
        while k < words {
            let mut w = word(buf, i + 8 * k);
            if avail < 8 {
                // Bytes past the capture are stale: make them anything but a line feed.
                w |= u64::MAX << (avail * 8);
            }
            lf = zero_bytes(w ^ 0x0a0a_0a0a_0a0a_0a0a);
            if lf != 0 {
                break;
            }
            k += 1;
        }
        if lf == 0 {
            self.need += if avail < 8 { avail } else { 8 * words };
            return Stop::No;
        }
        self.need += 8 * k + (lf.trailing_zeros() / 8) as u64 + 1;
        if self.flags & F_EXT != 0 {
            self.flags &= !F_EXT;
            return self.chunk_line_end();
        }
        self.phase = PH_LINE_START;
        Stop::No
    }

    /// A header (or trailer) line starts at window byte `i`.
    #[inline(always)]
    fn line_start(&mut self, buf: &[u8; SCRATCH_PAYLOAD], i: u64, n: u64) -> Stop {
        if n - i < 16 {
            self.phase = PH_NAME;
            self.count = 0;
            self.name = [0; 2];
            return Stop::No;
        }
        let c = byte(buf, i);
        if c == b'\n' {
            self.need += 1;
            return self.header_end();
        }
        if c == b'\r' && byte(buf, i + 1) == b'\n' {
            self.need += 2;
            return self.header_end();
        }
        self.phase = PH_LINE;
        if self.flags & F_TRAILERS == 0 {
            let a = word(buf, i) | LOWER;
            let b = word(buf, i + 8) | LOWER;
            return self.field(a, b & 0x00ff_ffff_ffff_ffff, 15);
        }
        Stop::No
    }

    /// A line's first 15 bytes (`a`, then 7 in `b`) are known: `Content-Length` and
    /// `Transfer-Encoding` matter. `skip`: bytes of them not consumed yet.
    #[inline(always)]
    fn field(&mut self, a: u64, b: u64, skip: u64) -> Stop {
        if a == u64::from_le_bytes(*b"content-") && b == u64::from_le_bytes(*b"length:\0") {
            self.need += skip;
            self.phase = PH_LENGTH;
            self.value = 0;
            self.count = 0;
            self.flags &= !F_OWS;
        } else if a == u64::from_le_bytes(*b"transfer") && b == u64::from_le_bytes(*b"-encodi\0") {
            // Its value says chunked, or the server refuses the request (RFC 9112, 6.1).
            self.flags |= F_TE;
        }
        Stop::No
    }

    /// A byte of a line's start, when the window holds fewer than 16 bytes of it.
    #[inline(always)]
    fn name_byte(&mut self, c: u8) -> Stop {
        let k = self.count;
        if c == b'\n' {
            self.need += 1;
            let empty = k == 0 || (k == 1 && self.name[0] & 0xff == b'\r' as u64);
            if empty {
                return self.header_end();
            }
            self.phase = PH_LINE_START;
            return Stop::No;
        }
        self.need += 1;
        // Letters to lower case, as `LOWER` does in the fast path (the names compared
        // hold only letters, `-` and `:`); a CR stays one.
        let lower = if c.is_ascii_alphabetic() { c | 0x20 } else { c } as u64;
        if k < 8 {
            self.name[0] |= lower << (8 * k);
        } else {
            self.name[1] |= lower << (8 * (k & 7));
        }
        self.count = k + 1;
        if k + 1 == 15 {
            self.phase = PH_LINE;
            if self.flags & F_TRAILERS == 0 {
                return self.field(self.name[0], self.name[1], 0);
            }
        }
        Stop::No
    }

    /// A byte of a `Content-Length` value: optional whitespace, 1 to 15 digits,
    /// optional whitespace, then the line's end.
    #[inline(always)]
    fn length(&mut self, c: u8) -> Stop {
        self.need += 1;
        if c.is_ascii_digit() && self.flags & F_OWS == 0 {
            if self.count == MAX_DIGITS {
                return Stop::Lost;
            }
            self.value = self.value * 10 + (c - b'0') as u64;
            self.count += 1;
            return Stop::No;
        }
        match c {
            b' ' | b'\t' => {
                if self.count > 0 {
                    self.flags |= F_OWS;
                }
                Stop::No
            }
            b'\r' => Stop::No,
            b'\n' => {
                // Unreadable, or two that differ (the server answers 400 and closes).
                if self.count == 0 || (self.cl != CL_NONE && self.cl != self.value) {
                    return Stop::Lost;
                }
                self.cl = self.value;
                self.phase = PH_LINE_START;
                Stop::No
            }
            _ => Stop::Lost,
        }
    }

    /// The empty line ending a header block (or a chunked body's trailers) was just
    /// consumed.
    #[inline(always)]
    fn header_end(&mut self) -> Stop {
        if self.flags & F_TRAILERS != 0 {
            return self.next_request(self.need);
        }
        self.requests += 1;
        if self.flags & F_TE != 0 {
            // Chunked wins over Content-Length (RFC 9112, 6.3).
            self.phase = PH_CHUNK_SIZE;
            self.value = 0;
            self.count = 0;
            self.flags = 0;
            return Stop::No;
        }
        let body = if self.cl == CL_NONE { 0 } else { self.cl };
        self.next_request(self.need + body)
    }

    #[inline(always)]
    fn next_request(&mut self, at: u64) -> Stop {
        let requests = self.requests;
        *self = Framer::at(at);
        self.requests = requests;
        Stop::No
    }

    /// A byte of a chunk-size line: hex digits, optional whitespace, an extension
    /// after `;`, the line's end.
    #[inline(always)]
    fn chunk_size(&mut self, c: u8) -> Stop {
        self.need += 1;
        let digit = match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        if let Some(d) = digit {
            if self.flags & F_OWS != 0 || self.count == MAX_DIGITS {
                return Stop::Lost;
            }
            self.value = self.value * 16 + d as u64;
            self.count += 1;
            return Stop::No;
        }
        match c {
            b' ' | b'\t' if self.count > 0 => {
                self.flags |= F_OWS;
                Stop::No
            }
            b';' if self.count > 0 => {
                self.flags |= F_EXT;
                self.phase = PH_LINE;
                Stop::No
            }
            b'\r' => Stop::No,
            b'\n' if self.count > 0 => self.chunk_line_end(),
            _ => Stop::Lost,
        }
    }

    /// At a chunk edge with [`FAST_LINE`] bytes in the window: the CRLF after a chunk's
    /// data (`PH_CHUNK_END`), then a size line of 1 to [`FAST_DIGITS`] hex digits and its
    /// CRLF, in one step (dense chunking costs a step per chunk, not six). Anything else
    /// (an extension, whitespace, a longer number, a bare LF) takes the byte-wise path:
    /// this step then consumes only the CRLF, or nothing.
    #[inline(always)]
    fn chunk_line_fast(&mut self, buf: &[u8; SCRATCH_PAYLOAD], i: u64) -> Stop {
        let mut at = i;
        if self.phase == PH_CHUNK_END {
            if byte(buf, at) != b'\r' || byte(buf, at + 1) != b'\n' {
                return self.chunk_end(byte(buf, at));
            }
            at += 2;
            self.need += 2;
            self.phase = PH_CHUNK_SIZE;
            self.value = 0;
        }
        let mut value = 0u64;
        let mut k = 0;
        while k < FAST_DIGITS {
            let c = byte(buf, at + k);
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            value = value * 16 + d as u64;
            k += 1;
        }
        if k == 0 || byte(buf, at + k) != b'\r' || byte(buf, at + k + 1) != b'\n' {
            // The size line goes byte by byte, from its first byte (this step takes it,
            // so that every step moves on).
            return self.chunk_size(byte(buf, at));
        }
        self.need += k + 2;
        self.value = value;
        self.chunk_line_end()
    }

    /// A chunk-size line ended (`need` is just past it).
    #[inline(always)]
    fn chunk_line_end(&mut self) -> Stop {
        self.flags &= !F_OWS;
        if self.value == 0 {
            // The last chunk: trailers, then an empty line.
            self.flags |= F_TRAILERS;
            self.phase = PH_LINE_START;
            return Stop::No;
        }
        self.need += self.value;
        self.phase = PH_CHUNK_END;
        self.count = 0;
        Stop::No
    }

    #[inline(always)]
    fn chunk_end(&mut self, c: u8) -> Stop {
        self.need += 1;
        match c {
            b'\r' if self.count == 0 => {
                self.count = 1;
                Stop::No
            }
            b'\n' => {
                self.phase = PH_CHUNK_SIZE;
                self.value = 0;
                self.count = 0;
                Stop::No
            }
            _ => Stop::Lost,
        }
    }
}

/// ASCII letters to lower case (`-`, `:` and digits already have the bit).
const LOWER: u64 = 0x2020_2020_2020_2020;

#[inline(always)]
fn word(buf: &[u8; SCRATCH_PAYLOAD], at: u64) -> u64 {
    let at = (at & WIN_MASK) as usize;
    // SAFETY: `at + 8 <= 2 * MAX_HEAD + 8 <= SCRATCH_PAYLOAD` (asserted above); a read
    // straight from the buffer keeps it off the BPF stack, which is tight.
    unsafe { core::ptr::read_unaligned(buf.as_ptr().add(at).cast::<u64>()) }.to_le()
}

#[inline(always)]
fn byte(buf: &[u8; SCRATCH_PAYLOAD], at: u64) -> u8 {
    buf[(at & WIN_MASK) as usize]
}

/// 0x80 in every byte of `x` that is zero, 0 elsewhere (exact: no false positives).
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// Most chunks one syscall is reported as (windows, the body bytes between them, runs
/// of elided windows); past it the rest is one chunk captured from where it starts, and
/// framing is lost.
pub const MAX_SEGMENTS: u32 = 32;
/// Most windows one syscall is read through (elided or not): about 140 KiB of dense
/// chunk framing. Past it, as past [`MAX_SEGMENTS`].
pub const MAX_WINDOWS: u32 = 72;
/// Steps that always finish one window: each moves `need` forward by at least a byte.
pub const MAX_WINDOW_STEPS: u32 = MAX_HEAD as u32 + 2;
/// `bpf_loop` iterations that always finish a [`Segmenter`]: per window its framer
/// steps, its start, its end and a run flushed before it; per other segment two steps;
/// the loss and a last flush.
pub const MAX_SEGMENTER_STEPS: u32 =
    (MAX_WINDOWS + 1) * (MAX_WINDOW_STEPS + 3) + 2 * MAX_SEGMENTS + 4;

/// In a [`DataEvent`](crate::DataEvent)'s `class` (bits 8 to 10, free in the class
/// byte's neighbour): the event counts bytes of whole chunks of a chunked request body,
/// every chunk-size line of which the kernel's framer read without needing anything
/// else (an elided run of windows). It starts and ends at a chunk edge: at a chunk-size
/// line's first byte, or with [`RUN_FROM_DATA_END`] / [`RUN_TO_DATA_END`] at the CRLF
/// after a chunk's data. No payload follows. A parser that stands at that start edge
/// counts the bytes as body and stands at the end edge; any other gets a gap. Dense
/// chunking (a client writing 18-byte chunks) took a 2 KiB window per 2 KiB of body,
/// copied to the ring and parsed again by the agent, and lost framing past
/// [`MAX_SEGMENTS`] windows in one read: node reads 64 KiB.
pub const RUN_CHUNKS: u32 = 1 << 8;
pub const RUN_FROM_DATA_END: u32 = 1 << 9;
pub const RUN_TO_DATA_END: u32 = 1 << 10;
/// Every `RUN_*` bit.
pub const RUN_MASK: u32 = RUN_CHUNKS | RUN_FROM_DATA_END | RUN_TO_DATA_END;

/// What the [`Segmenter`] needs from the capture path (the kernel's scratch buffer and
/// ring; a vector in tests).
pub trait Capture {
    /// Copies `n` bytes of the syscall from byte `from` to the window (the payload's
    /// start). False when nothing may be captured (a read failed, or the socket's
    /// class says its payload is not to be copied).
    fn window(&mut self, from: u64, n: u64) -> bool;
    /// The payload, with the window at its start.
    fn payload(&self) -> &[u8; SCRATCH_PAYLOAD];
    /// Reports bytes `from..to` of the syscall as one chunk: its first `head` bytes are
    /// the window's (0: a byte count only); with `tail`, also the syscall's last bytes
    /// past the head (`to` is then the syscall's end).
    fn emit(&mut self, from: u64, to: u64, head: u64, tail: bool);
    /// Reports bytes `from..to` of the syscall as a run of whole chunks (`run`: the
    /// `RUN_*` bits, [`RUN_CHUNKS`] set); it leaves the window's bytes in place.
    fn emit_run(&mut self, from: u64, to: u64, run: u32);
}

const SEG_NEXT: u32 = 0;
const SEG_SCAN: u32 = 1;
const SEG_DONE: u32 = 2;
/// The window is parsed: elide it or report it.
const SEG_WINDOW: u32 = 3;
/// Framing is lost: report the rest from `lose_from` (`lose_head` bytes of it copied).
const SEG_LOSE: u32 = 4;

/// Cuts one data syscall of a framed request stream into chunks where the [`Framer`]
/// needs bytes, and runs it over them. One [`Segmenter::step`] per `bpf_loop` iteration,
/// each reporting at most one chunk.
///
/// A window whose bytes the framer read as nothing but chunk framing (it starts and ends
/// at a chunk edge, with no header block in between) is not reported; consecutive such
/// windows become one count-only run ([`RUN_CHUNKS`]), reported before the next chunk.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Segmenter {
    /// Bytes the syscall moved.
    pub total: u64,
    /// Stream offset of the syscall's first byte.
    pub pos: u64,
    /// Start of the next chunk (syscall-relative).
    pub seg: u64,
    /// Start of the current window (syscall-relative) and its captured bytes.
    pub win: u64,
    pub n: u64,
    /// The pending run of elided windows (syscall-relative; empty when equal).
    pub run_from: u64,
    pub run_to: u64,
    /// Where a lost syscall's last chunk starts, and its bytes copied.
    pub lose_from: u64,
    pub lose_head: u64,
    pub phase: u32,
    /// Chunks reported.
    pub segments: u32,
    /// Windows read.
    pub windows: u32,
    /// Framing was lost in this syscall.
    pub lost: u32,
    /// The framer's chunk edge at the current window's start, and its request count.
    pub edge: u32,
    pub requests: u32,
    /// `RUN_*` bits of the pending run.
    pub run: u32,
    /// `mark` holds the framer at the current window's last chunk edge.
    pub marked: u32,
    pub framer: Framer,
    pub mark: Framer,
}

impl Segmenter {
    #[inline(always)]
    pub fn new(pos: u64, total: u64, framer: Framer) -> Self {
        Segmenter {
            total,
            pos,
            seg: 0,
            win: 0,
            n: 0,
            run_from: 0,
            run_to: 0,
            lose_from: 0,
            lose_head: 0,
            phase: SEG_NEXT,
            segments: 0,
            windows: 0,
            lost: 0,
            edge: EDGE_NONE,
            requests: 0,
            run: 0,
            marked: 0,
            framer,
            mark: framer,
        }
    }

    /// One step; false when the syscall is all reported.
    #[inline(always)]
    pub fn step<C: Capture>(&mut self, cap: &mut C) -> bool {
        match self.phase {
            SEG_NEXT => self.next_chunk(cap),
            SEG_SCAN => {
                match self.framer.step(cap.payload(), self.pos + self.win, self.n) {
                    Stop::No => {
                        // An edge past the window (a chunk's data ends beyond it) is
                        // where the parser resumes anyway.
                        if self.framer.chunk_edge() != EDGE_NONE
                            && self.framer.need <= self.pos + self.win + self.n
                        {
                            if self.edge == EDGE_NONE {
                                // A window that started elsewhere (a header block, a
                                // size line's rest) ends at its first chunk edge: the
                                // next one starts there and can be elided.
                                self.phase = SEG_WINDOW;
                            } else {
                                self.mark = self.framer;
                                self.marked = 1;
                            }
                        }
                    }
                    Stop::Window => self.phase = SEG_WINDOW,
                    Stop::Lost => {
                        self.lose_from = self.win;
                        self.lose_head = self.n;
                        self.phase = SEG_LOSE;
                    }
                }
                true
            }
            SEG_WINDOW => self.window_done(cap),
            SEG_LOSE => self.lose(cap),
            _ => false,
        }
    }

    /// Reports the pending run, if any; true if it did (the step is spent).
    #[inline(always)]
    fn flush<C: Capture>(&mut self, cap: &mut C) -> bool {
        if self.run_to == self.run_from {
            return false;
        }
        cap.emit_run(self.run_from, self.run_to, self.run);
        self.segments += 1;
        self.run_from = 0;
        self.run_to = 0;
        self.run = 0;
        true
    }

    #[inline(always)]
    fn next_chunk<C: Capture>(&mut self, cap: &mut C) -> bool {
        let (seg, total) = (self.seg, self.total);
        // Where the parser resumes, syscall-relative (it never lags behind `seg`).
        let need = self.framer.need.saturating_sub(self.pos);
        let window = seg < total
            && need <= seg
            && self.segments < MAX_SEGMENTS
            && self.windows < MAX_WINDOWS;
        // Anything reported now follows the pending run.
        if !window && self.flush(cap) {
            return true;
        }
        if seg >= total {
            self.phase = SEG_DONE;
            return false;
        }
        if need >= total {
            // Body to the end.
            cap.emit(seg, total, 0, false);
            self.phase = SEG_DONE;
            return false;
        }
        if need > seg {
            // The body's end, then what the parser needs.
            cap.emit(seg, need, 0, false);
            self.seg = need;
            self.segments += 1;
            return true;
        }
        let n = min(MAX_HEAD as u64, total - seg);
        if !window {
            // Too many pieces: the rest as it comes.
            self.lose_from = seg;
            self.lose_head = if cap.window(seg, n) { n } else { 0 };
            self.phase = SEG_LOSE;
            return true;
        }
        if !cap.window(seg, n) {
            // The bytes cannot be read.
            self.lose_from = seg;
            self.lose_head = 0;
            self.phase = SEG_LOSE;
            return true;
        }
        self.win = seg;
        self.n = n;
        self.windows += 1;
        self.edge = self.framer.chunk_edge();
        self.requests = self.framer.requests;
        self.marked = 0;
        self.phase = SEG_SCAN;
        true
    }

    /// The parser needs bytes past the window at `win`.
    #[inline(always)]
    fn window_done<C: Capture>(&mut self, cap: &mut C) -> bool {
        let (win, n, total) = (self.win, self.n, self.total);
        let mut need = self.framer.need.saturating_sub(self.pos);
        if self.marked != 0
            && (self.framer.chunk_edge() == EDGE_NONE || need > total)
            && self.mark.need > self.pos + win
        {
            // The window stops inside chunk framing (a size line cut in two) or past
            // the syscall: it ends at its last chunk edge instead, where the next one
            // starts over, so that runs of elided windows join up and a syscall's last
            // window copies only the bytes after its last edge.
            self.framer = self.mark;
            self.marked = 0;
            need = self.framer.need - self.pos;
        }
        let end_edge = self.framer.chunk_edge();
        if self.edge != EDGE_NONE
            && end_edge != EDGE_NONE
            && need <= total
            && self.framer.requests == self.requests
            && (self.run_to == self.run_from || self.run_to == win)
        {
            // Nothing but chunk framing, from edge to edge: elided.
            if self.run_to == self.run_from {
                self.run_from = win;
                self.run = RUN_CHUNKS
                    | if self.edge == EDGE_DATA_END {
                        RUN_FROM_DATA_END
                    } else {
                        0
                    };
            }
            self.run_to = need;
            self.run = (self.run & !RUN_TO_DATA_END)
                | if end_edge == EDGE_DATA_END {
                    RUN_TO_DATA_END
                } else {
                    0
                };
            self.seg = need;
            self.phase = SEG_NEXT;
            return true;
        }
        if self.flush(cap) {
            // The window is reported next step (the run left its bytes in place).
            return true;
        }
        // The chunk ends where the parser resumes (a later window's start), or with the
        // syscall. Its head is the window; bytes between are body.
        let end = if need < total { need } else { total };
        // A window cut back at its last edge reports only the bytes before it.
        let head = min(n, end - win);
        cap.emit(win, end, head, end == total);
        self.seg = end;
        self.segments += 1;
        self.phase = SEG_NEXT;
        true
    }

    #[inline(always)]
    fn lose<C: Capture>(&mut self, cap: &mut C) -> bool {
        if self.flush(cap) {
            return true;
        }
        let head = self.lose_head;
        cap.emit(self.lose_from, self.total, head, head > 0);
        self.lost = 1;
        self.phase = SEG_DONE;
        false
    }
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{boxed::Box, vec, vec::Vec};

    /// A [`Capture`] over one syscall's bytes: records the chunks as the agent gets them.
    struct Slice<'a> {
        bytes: &'a [u8],
        buf: Box<[u8; SCRATCH_PAYLOAD]>,
        win: Option<u64>,
        chunks: Vec<Chunk>,
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Chunk {
        from: u64,
        to: u64,
        head: Vec<u8>,
        tail: Vec<u8>,
        /// `RUN_*` bits of a run of elided windows (0: an ordinary chunk).
        run: u32,
    }

    impl Capture for Slice<'_> {
        fn window(&mut self, from: u64, n: u64) -> bool {
            let (f, n) = (from as usize, n as usize);
            // Stale bytes past the window, as in the kernel's reused buffer.
            self.buf.fill(b'\n');
            self.buf[..n].copy_from_slice(&self.bytes[f..f + n]);
            self.win = Some(from);
            true
        }
        fn payload(&self) -> &[u8; SCRATCH_PAYLOAD] {
            &self.buf
        }
        fn emit(&mut self, from: u64, to: u64, head: u64, tail: bool) {
            if head > 0 {
                assert_eq!(
                    self.win,
                    Some(from),
                    "a head is the window at the chunk's start"
                );
            }
            assert!(head <= to - from && head <= MAX_HEAD as u64);
            let head_bytes = self.buf[..head as usize].to_vec();
            let mut tail_bytes = Vec::new();
            if tail {
                assert_eq!(to, self.bytes.len() as u64, "a tail ends the syscall");
                let t = (to - from - head).min(crate::MAX_TAIL as u64) as usize;
                tail_bytes = self.bytes[to as usize - t..].to_vec();
            }
            self.chunks.push(Chunk {
                from,
                to,
                head: head_bytes,
                tail: tail_bytes,
                run: 0,
            });
        }
        fn emit_run(&mut self, from: u64, to: u64, run: u32) {
            assert!(from < to && to <= self.bytes.len() as u64);
            assert_eq!(run & !RUN_MASK, 0);
            assert_ne!(run & RUN_CHUNKS, 0);
            self.chunks.push(Chunk {
                from,
                to,
                head: Vec::new(),
                tail: Vec::new(),
                run,
            });
        }
    }

    /// What the kernel reports for `bytes` moved by syscalls of `sizes` (cycled): the
    /// chunks (stream offsets), and whether framing was lost.
    fn capture(bytes: &[u8], sizes: &[u64]) -> (Vec<Chunk>, bool, Framer) {
        let mut out = Vec::new();
        let mut framer = Framer::at(0);
        let mut lost = false;
        let mut pos = 0u64;
        let mut k = 0;
        while pos < bytes.len() as u64 {
            let size = sizes[k % sizes.len()].min(bytes.len() as u64 - pos);
            k += 1;
            let sys = &bytes[pos as usize..(pos + size) as usize];
            let mut cap = Slice {
                bytes: sys,
                buf: Box::new([0; SCRATCH_PAYLOAD]),
                win: None,
                chunks: Vec::new(),
            };
            if lost {
                // What the kernel does on a stream whose framing is lost.
                let n = size.min(MAX_HEAD as u64);
                cap.window(0, n);
                cap.emit(0, size, n, size > n);
            } else if framer.need >= pos + size {
                cap.emit(0, size, 0, false);
            } else {
                let mut seg = Segmenter::new(pos, size, framer);
                let mut steps = 0;
                while seg.step(&mut cap) {
                    steps += 1;
                    assert!(steps < MAX_SEGMENTER_STEPS);
                }
                framer = seg.framer;
                lost = seg.lost != 0;
            }
            let mut at = 0;
            for c in &cap.chunks {
                assert_eq!(c.from, at, "chunks tile the syscall");
                assert!(c.to > c.from);
                assert_eq!(
                    &c.head[..],
                    &sys[c.from as usize..c.from as usize + c.head.len()]
                );
                at = c.to;
                out.push(Chunk {
                    from: pos + c.from,
                    to: pos + c.to,
                    ..c.clone()
                });
            }
            assert_eq!(at, size, "chunks tile the syscall");
            pos += size;
        }
        (out, lost, framer)
    }

    /// Stream offsets whose bytes some chunk carries.
    fn captured(chunks: &[Chunk], len: usize) -> Vec<bool> {
        let mut seen = vec![false; len];
        for c in chunks {
            let h = c.from as usize;
            seen[h..h + c.head.len()].iter_mut().for_each(|b| *b = true);
            let t = c.to as usize;
            seen[t - c.tail.len()..t].iter_mut().for_each(|b| *b = true);
        }
        seen
    }

    /// Stream offsets inside a run of elided windows.
    fn in_runs(chunks: &[Chunk], len: usize) -> Vec<bool> {
        let mut run = vec![false; len];
        for c in chunks.iter().filter(|c| c.run != 0) {
            run[c.from as usize..c.to as usize]
                .iter_mut()
                .for_each(|b| *b = true);
        }
        run
    }

    fn starts_of(chunks: &[Chunk]) -> Vec<u64> {
        chunks
            .iter()
            .filter(|c| !c.head.is_empty())
            .map(|c| c.from)
            .collect()
    }

    #[test]
    fn a_request_after_a_body_starts_a_chunk() {
        let mut r = b"POST /a HTTP/1.1\r\nHost: x\r\ncontent-LENGTH:  5000 \r\n\r\n".to_vec();
        r.extend(std::iter::repeat_n(b'b', 5000));
        let second = r.len() as u64;
        r.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        // One read of everything, and reads of 4 KiB.
        for sizes in [&[100_000][..], &[4096][..], &[1][..], &[7, 3000][..]] {
            let (chunks, lost, f) = capture(&r, sizes);
            assert!(!lost, "{sizes:?}");
            let seen = captured(&chunks, r.len());
            assert!(
                seen[second as usize..].iter().all(|&b| b),
                "{sizes:?}: {chunks:?}"
            );
            assert_eq!(
                (f.need, f.phase, f.requests > 0),
                (r.len() as u64, PH_METHOD, true)
            );
            if sizes[0] > 2048 {
                assert!(starts_of(&chunks).contains(&second), "{sizes:?}");
                // The body past the window is never copied.
                assert!(!seen[2500..4000].iter().any(|&b| b));
            }
        }
    }

    #[test]
    fn header_blocks_larger_than_the_window_are_captured_whole() {
        let mut r = b"PUT /big HTTP/1.1\r\n".to_vec();
        for i in 0..3 {
            r.extend_from_slice(std::format!("X-Pad-{i}: ").as_bytes());
            r.extend(std::iter::repeat_n(b'p', 1500 + i * 700));
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"Content-Length: 3\r\n\r\nabc");
        let header_end = r.len() - 3;
        r.extend_from_slice(b"DELETE /x HTTP/1.1\r\n\r\n");
        let (chunks, lost, f) = capture(&r, &[1 << 20]);
        assert!(!lost);
        let seen = captured(&chunks, r.len());
        assert!(seen[..header_end].iter().all(|&b| b));
        assert_eq!(f.need, r.len() as u64);
        assert_eq!(f.requests, 2);
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let mut r = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut size_lines = Vec::new();
        for size in [3000usize, 1, 5000] {
            size_lines.push(r.len());
            r.extend_from_slice(std::format!("{size:X};ext=1\r\n").as_bytes());
            r.extend(std::iter::repeat_n(b'\n', size));
            r.extend_from_slice(b"\r\n");
        }
        size_lines.push(r.len());
        r.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        let next = r.len();
        r.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
        for sizes in [&[1 << 20][..], &[1000][..], &[3][..]] {
            let (chunks, lost, f) = capture(&r, sizes);
            assert!(!lost, "{sizes:?}");
            let seen = captured(&chunks, r.len());
            let run = in_runs(&chunks, r.len());
            for &l in &size_lines {
                assert!(
                    seen[l..l + 4].iter().all(|&b| b) || run[l..l + 4].iter().all(|&b| b),
                    "{sizes:?}: size line at {l}"
                );
            }
            assert!(seen[next..].iter().all(|&b| b));
            assert_eq!((f.need, f.requests), (r.len() as u64, 2));
        }
    }

    /// Node reads 64 KiB at a time; a client writing 2-byte chunks puts 9,000 chunk-size
    /// lines in one read. They come as a few runs of elided windows, whatever chunk size
    /// and read size, and the request after the body is still found.
    #[test]
    fn dense_chunk_framing_is_elided_in_runs() {
        for chunk in [1usize, 2, 3, 7, 18, 100, 600] {
            let mut r = b"PATCH /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            while r.len() < 300_000 {
                r.extend_from_slice(std::format!("{chunk:x}\r\n").as_bytes());
                r.extend(std::iter::repeat_n(b'z', chunk));
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            let next = r.len();
            r.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
            for read in [65_536u64, 16_384, 100_000, 4_096] {
                let (chunks, lost, f) = capture(&r, &[read]);
                assert!(!lost, "chunk {chunk}, read {read}");
                assert_eq!((f.need, f.requests), (r.len() as u64, 2));
                let seen = captured(&chunks, r.len());
                assert!(seen[next..].iter().all(|&b| b));
                let syscalls = r.len().div_ceil(read as usize);
                let elided: u64 = chunks
                    .iter()
                    .filter(|c| c.run != 0)
                    .map(|c| c.to - c.from)
                    .sum();
                let copied: usize = chunks.iter().map(|c| c.head.len() + c.tail.len()).sum();
                // Most of the body comes as runs, little of it copied, in a handful of
                // chunks per read.
                assert!(
                    elided * 4 > r.len() as u64 * 3,
                    "chunk {chunk}, read {read}: {elided}"
                );
                assert!(copied * 5 < r.len(), "chunk {chunk}, read {read}: {copied}");
                assert!(
                    chunks.len() <= 4 * syscalls,
                    "chunk {chunk}, read {read}: {}",
                    chunks.len()
                );
            }
        }
    }

    /// The one-step path for chunk-size lines and the byte-wise one agree on every
    /// spelling of a size line, valid or not: the same stream framed from 1-byte reads
    /// (windows too short for the fast path) and from one read ends in the same place,
    /// lost or not alike.
    #[test]
    fn fast_and_bytewise_size_lines_agree() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let spellings = [
            "{x}",
            "{X}",
            "0{x}",
            "000000{x}",
            "{x};ext=1",
            "{x} ",
            "{x}\t;e",
            "{x}\n",
            " {x}",
            "{x}\r",
            "{x}g",
            "",
        ];
        for _ in 0..3000 {
            let mut r = b"POST /f HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..1 + rng.below(20) {
                let most = if rng.below(2) == 0 { 40 } else { 1 << 20 };
                let size = 1 + rng.below(most) as usize;
                let spelling = if rng.below(4) == 0 {
                    spellings[rng.below(spellings.len() as u64) as usize]
                } else {
                    "{x}"
                };
                let line = spelling
                    .replace("{x}", &std::format!("{size:x}"))
                    .replace("{X}", &std::format!("{size:X}"));
                r.extend_from_slice(line.as_bytes());
                r.extend_from_slice(if rng.below(10) == 0 { b"\n" } else { b"\r\n" });
                r.extend(std::iter::repeat_n(b'x', size.min(300)));
                if size > 300 {
                    // A chunk longer than what follows: framing waits past the stream.
                    break;
                }
                r.extend_from_slice(
                    [&b"\r\n"[..], b"\n", b"\r\r\n", b"x\r\n"][rng.below(4) as usize],
                );
            }
            r.extend_from_slice(b"0\r\n\r\nGET /n HTTP/1.1\r\n\r\n");
            let (_, lost_slow, slow) = capture(&r, &[1]);
            let (_, lost_fast, fast) = capture(&r, &[1 << 20]);
            assert_eq!(lost_slow, lost_fast, "{:?}", std::str::from_utf8(&r));
            if !lost_slow {
                assert_eq!(
                    (slow.need, slow.requests, slow.phase),
                    (fast.need, fast.requests, fast.phase),
                    "{:?}",
                    std::str::from_utf8(&r)
                );
            }
        }
    }

    #[test]
    fn what_cannot_be_framed_is_lost_for_good() {
        let cases: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\na",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        for case in cases {
            let mut r = case.to_vec();
            r.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let (_, lost, _) = capture(&r, &[1 << 20]);
            assert!(lost, "{:?}", std::str::from_utf8(case));
        }
        // The same length twice is fine.
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        let (_, lost, f) = capture(same, &[1 << 20]);
        assert!(!lost);
        assert_eq!(f.need, same.len() as u64);
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, m: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % m.max(1)
        }
    }

    /// A stream of requests (random methods, header blocks up to 6 KiB, bodies up to
    /// 20 KiB, some chunked), and the byte ranges the agent's parser needs: header
    /// blocks and chunk framing.
    ///
    /// Also the chunk edges (offset to `EDGE_*`) and which `needed` ranges are
    /// chunk framing (a run of elided windows may hold those, never a header block).
    #[allow(clippy::type_complexity)]
    fn stream(
        rng: &mut Rng,
    ) -> (
        Vec<u8>,
        Vec<(usize, usize)>,
        std::collections::BTreeMap<usize, u32>,
        Vec<bool>,
    ) {
        let mut bytes = Vec::new();
        let mut needed = Vec::new();
        let mut edges = std::collections::BTreeMap::new();
        let mut framing = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let start = bytes.len();
            let method: &[u8] =
                [&b"GET"[..], b"POST", b"PUT", b"PROPFIND", b"DELETE"][rng.below(5) as usize];
            bytes.extend_from_slice(method);
            bytes.extend_from_slice(b" /x?q=1 HTTP/1.1\r\nHost: h\r\n");
            for _ in 0..rng.below(4) {
                bytes.extend_from_slice(b"X-Pad: ");
                let pad = if rng.below(6) == 0 {
                    2048 + rng.below(4096)
                } else {
                    rng.below(40)
                };
                bytes.extend(std::iter::repeat_n(b'p', pad as usize));
                bytes.extend_from_slice(b"\r\n");
            }
            let body = match rng.below(4) {
                0 => 0,
                1 => rng.below(100),
                2 => rng.below(5000),
                _ => rng.below(20_000),
            } as usize;
            if body > 0 && rng.below(4) == 0 {
                bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                needed.push((start, bytes.len()));
                framing.push(false);
                let mut left = body;
                // Dense chunking (tiny chunks) in some bodies.
                let most = [3000, 40, 3][rng.below(3) as usize];
                while left > 0 {
                    let c = (1 + rng.below(most) as usize).min(left);
                    let line = bytes.len();
                    edges.insert(line, EDGE_SIZE);
                    bytes.extend_from_slice(std::format!("{c:x}\r\n").as_bytes());
                    needed.push((line, bytes.len()));
                    framing.push(true);
                    bytes.extend(std::iter::repeat_n(b'\n', c));
                    edges.insert(bytes.len(), EDGE_DATA_END);
                    bytes.extend_from_slice(b"\r\n");
                    left -= c;
                }
                let last = bytes.len();
                edges.insert(last, EDGE_SIZE);
                bytes.extend_from_slice(b"0\r\n\r\n");
                needed.push((last, bytes.len()));
                framing.push(false);
            } else {
                if body > 0 || rng.below(2) == 0 {
                    let name: &[u8] =
                        [&b"Content-Length"[..], b"content-length", b"CONTENT-LENGTH"]
                            [rng.below(3) as usize];
                    bytes.extend_from_slice(name);
                    bytes.extend_from_slice(
                        std::format!(":{}{}\r\n", " ".repeat(rng.below(3) as usize), body)
                            .as_bytes(),
                    );
                }
                bytes.extend_from_slice(if rng.below(5) == 0 { b"\n" } else { b"\r\n" });
                needed.push((start, bytes.len()));
                framing.push(false);
                // A body of line feeds and request lines: only framing finds its end.
                let filler = b"\nGET / HTTP/1.1\r\n";
                bytes.extend((0..body).map(|i| filler[i % filler.len()]));
            }
        }
        (bytes, needed, edges, framing)
    }

    /// Random request streams cut into random syscalls (single bytes to 64 KiB): the
    /// chunks tile every syscall and carry the right bytes (checked in `capture`), and
    /// every byte the agent's parser needs (each header block, each chunk-size line) is
    /// captured, or (chunk-size lines only) inside a run that starts and ends at the
    /// chunk edges it claims, while the kernel never loses the framing of these
    /// well-formed streams.
    #[test]
    fn every_header_block_and_chunk_line_is_captured() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut body_bytes = 0usize;
        let mut copied_body = 0usize;
        let (mut runs, mut elided_lines) = (0, 0);
        for _ in 0..2000 {
            let (bytes, needed, edges, framing) = stream(&mut rng);
            let sizes: Vec<u64> = (0..1 + rng.below(4))
                .map(|_| match rng.below(4) {
                    0 => 1 + rng.below(16),
                    1 => 1 + rng.below(4096),
                    _ => 1 + rng.below(65536),
                })
                .collect();
            let (chunks, lost, f) = capture(&bytes, &sizes);
            assert!(!lost, "sizes {sizes:?}");
            assert_eq!(f.need, bytes.len() as u64);
            let seen = captured(&chunks, bytes.len());
            let run = in_runs(&chunks, bytes.len());
            for c in chunks.iter().filter(|c| c.run != 0) {
                let from = if c.run & RUN_FROM_DATA_END != 0 {
                    EDGE_DATA_END
                } else {
                    EDGE_SIZE
                };
                let to = if c.run & RUN_TO_DATA_END != 0 {
                    EDGE_DATA_END
                } else {
                    EDGE_SIZE
                };
                assert_eq!(edges.get(&(c.from as usize)), Some(&from), "{c:?}");
                assert_eq!(edges.get(&(c.to as usize)), Some(&to), "{c:?}");
                runs += 1;
            }
            let mut need = vec![false; bytes.len()];
            for (&(a, b), &chunk_line) in needed.iter().zip(&framing) {
                need[a..b].iter_mut().for_each(|x| *x = true);
                if chunk_line && run[a..b].iter().all(|&x| x) {
                    elided_lines += 1;
                    continue;
                }
                assert!(
                    seen[a..b].iter().all(|&x| x) && !run[a..b].iter().any(|&x| x),
                    "bytes {a}..{b} not captured, sizes {sizes:?}"
                );
            }
            body_bytes += need.iter().filter(|&&x| !x).count();
            copied_body += need.iter().zip(&seen).filter(|&(&n, &s)| !n && s).count();
        }
        // Bodies are mostly not copied (the window's rest and the tail are), and dense
        // chunk framing is mostly elided.
        std::println!(
            "copied {copied_body} of {body_bytes} body bytes; {runs} runs elided {elided_lines} chunk-size lines"
        );
        assert!(copied_body * 3 < body_bytes);
        assert!(runs > 100 && elided_lines > 10 * runs);
    }
}
