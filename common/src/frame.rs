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

/// Most chunks one syscall is reported as (windows and the body bytes between them);
/// past it the rest is one chunk captured from where it starts, and framing is lost.
pub const MAX_SEGMENTS: u32 = 32;
/// Steps that always finish one window: each moves `need` forward by at least a byte.
pub const MAX_WINDOW_STEPS: u32 = MAX_HEAD as u32 + 2;
/// `bpf_loop` iterations that always finish a [`Segmenter`].
pub const MAX_SEGMENTER_STEPS: u32 = (MAX_SEGMENTS + 1) * (MAX_WINDOW_STEPS + 2);

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
}

const SEG_NEXT: u32 = 0;
const SEG_SCAN: u32 = 1;
const SEG_DONE: u32 = 2;

/// Cuts one data syscall of a framed request stream into chunks where the [`Framer`]
/// needs bytes, and runs it over them. One [`Segmenter::step`] per `bpf_loop` iteration.
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
    pub phase: u32,
    pub segments: u32,
    /// Framing was lost in this syscall.
    pub lost: u32,
    pub _pad: u32,
    pub framer: Framer,
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
            phase: SEG_NEXT,
            segments: 0,
            lost: 0,
            _pad: 0,
            framer,
        }
    }

    /// One step; false when the syscall is all reported.
    #[inline(always)]
    pub fn step<C: Capture>(&mut self, cap: &mut C) -> bool {
        match self.phase {
            SEG_NEXT => self.next_chunk(cap),
            SEG_SCAN => match self.framer.step(cap.payload(), self.pos + self.win, self.n) {
                Stop::No => true,
                Stop::Window => self.window_done(cap),
                Stop::Lost => self.lose(cap),
            },
            _ => false,
        }
    }

    #[inline(always)]
    fn next_chunk<C: Capture>(&mut self, cap: &mut C) -> bool {
        let (seg, total) = (self.seg, self.total);
        if seg >= total {
            self.phase = SEG_DONE;
            return false;
        }
        // Where the parser resumes, syscall-relative (it never lags behind `seg`).
        let need = self.framer.need.saturating_sub(self.pos);
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
        if self.segments >= MAX_SEGMENTS || !cap.window(seg, n) {
            // Too many pieces, or the bytes cannot be read: the rest as it comes.
            let head = if self.segments >= MAX_SEGMENTS && cap.window(seg, n) {
                n
            } else {
                0
            };
            cap.emit(seg, total, head, head > 0);
            self.lost = 1;
            self.phase = SEG_DONE;
            return false;
        }
        self.win = seg;
        self.n = n;
        self.phase = SEG_SCAN;
        true
    }

    /// The parser needs bytes past the window at `win`.
    #[inline(always)]
    fn window_done<C: Capture>(&mut self, cap: &mut C) -> bool {
        let (win, n, total) = (self.win, self.n, self.total);
        let need = self.framer.need.saturating_sub(self.pos);
        // The chunk ends where the parser resumes (a later window's start), or with the
        // syscall. Its head is the window; bytes between are body.
        let end = if need < total { need } else { total };
        cap.emit(win, end, n, end == total);
        self.seg = end;
        self.segments += 1;
        self.phase = SEG_NEXT;
        true
    }

    #[inline(always)]
    fn lose<C: Capture>(&mut self, cap: &mut C) -> bool {
        cap.emit(self.win, self.total, self.n, true);
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
            for &l in &size_lines {
                assert!(
                    seen[l..l + 4].iter().all(|&b| b),
                    "{sizes:?}: size line at {l}"
                );
            }
            assert!(seen[next..].iter().all(|&b| b));
            assert_eq!((f.need, f.requests), (r.len() as u64, 2));
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
    fn stream(rng: &mut Rng) -> (Vec<u8>, Vec<(usize, usize)>) {
        let mut bytes = Vec::new();
        let mut needed = Vec::new();
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
                let mut left = body;
                while left > 0 {
                    let c = (1 + rng.below(3000) as usize).min(left);
                    let line = bytes.len();
                    bytes.extend_from_slice(std::format!("{c:x}\r\n").as_bytes());
                    needed.push((line, bytes.len()));
                    bytes.extend(std::iter::repeat_n(b'\n', c));
                    bytes.extend_from_slice(b"\r\n");
                    left -= c;
                }
                let last = bytes.len();
                bytes.extend_from_slice(b"0\r\n\r\n");
                needed.push((last, bytes.len()));
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
                // A body of line feeds and request lines: only framing finds its end.
                let filler = b"\nGET / HTTP/1.1\r\n";
                bytes.extend((0..body).map(|i| filler[i % filler.len()]));
            }
        }
        (bytes, needed)
    }

    /// Random request streams cut into random syscalls (single bytes to 64 KiB): the
    /// chunks tile every syscall and carry the right bytes (checked in `capture`), and
    /// every byte the agent's parser needs (each header block, each chunk-size line) is
    /// captured, while the kernel never loses the framing of these well-formed streams.
    #[test]
    fn every_header_block_and_chunk_line_is_captured() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut body_bytes = 0usize;
        let mut copied_body = 0usize;
        for _ in 0..2000 {
            let (bytes, needed) = stream(&mut rng);
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
            let mut need = vec![false; bytes.len()];
            for &(a, b) in &needed {
                need[a..b].iter_mut().for_each(|x| *x = true);
                assert!(
                    seen[a..b].iter().all(|&x| x),
                    "bytes {a}..{b} not captured, sizes {sizes:?}"
                );
            }
            body_bytes += need.iter().filter(|&&x| !x).count();
            copied_body += need.iter().zip(&seen).filter(|&(&n, &s)| !n && s).count();
        }
        // Bodies are mostly not copied (the window's rest and the tail are).
        std::println!("copied {copied_body} of {body_bytes} body bytes");
        assert!(copied_body * 3 < body_bytes);
    }
}
