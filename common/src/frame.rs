//! Where the next HTTP/1 request starts, found by the kernel while the bytes are still
//! in its scratch buffer.
//!
//! The kernel copies a bounded window of each data syscall (`MAX_HEAD` bytes from its
//! start). When a client sends a request with a body and then the next request, a
//! server's read often begins with the end of that body; the next request then starts
//! somewhere inside the read, often past the window, and its start line was never
//! captured (the agent's parser counts a `header_gap` and that connection gives no more
//! spans). Userspace learns each request's `Content-Length` far too late to move the
//! window (records are applied after a hold), so the kernel frames request streams
//! itself: after each request it captures, it scans the header block for
//! `Content-Length` and `Transfer-Encoding` and remembers the absolute stream offset
//! where the next request starts. A later syscall that spans that offset is reported as
//! two chunks: the body's end (a byte count only) and the rest, captured from the new
//! request's first byte.
//!
//! The agent never trusts this framing for meaning: it parses every byte it gets and
//! only sees the window moved. A wrong offset costs a desync (a counted, missing span),
//! never a wrong one. So the scan is deliberately small: requests only (their framing
//! needs nothing but their own headers; a response's depends on its request), one
//! window, `Content-Length` bodies; anything else (a chunked body, a header block that
//! does not end inside the window, a request pipelined past the window, a start that is
//! not a request line) makes the kernel give up on the stream's framing until a syscall
//! starts with a request line again.
//!
//! One [`FrameScan::step`] per `bpf_loop` iteration (a bounded loop of up to 2048
//! iterations with this body would cost the verifier ~1M instructions per program; a
//! `bpf_loop` callback is verified on its own). The state lives in a per-CPU map between
//! steps, which is also what keeps the verifier from tracking its values. Each step looks
//! at 8 bytes for a line feed or handles one line end, so a 300-byte header block costs
//! about 50 steps.

use crate::{MAX_HEAD, SCRATCH_PAYLOAD};

/// Still scanning.
pub const SCAN_RUNNING: u32 = 0;
/// Every request starting in the window was framed; the next one starts at
/// [`FrameScan::next`] (window-relative), at or after the syscall's end.
pub const SCAN_DONE: u32 = 1;
/// A header block did not end inside the captured bytes (split over syscalls, or larger
/// than the window).
pub const SCAN_SHORT: u32 = 2;
/// Framing unknown: `Transfer-Encoding`, an unusable `Content-Length`, a next request
/// past the window, or bytes where a request should start that are not a request line.
pub const SCAN_UNFRAMED: u32 = 3;

/// No `Content-Length` seen (yet) in the current header block.
const CL_NONE: u64 = u64::MAX;
/// Larger declared bodies are left unframed (and would overflow nothing, but 2^48 bytes
/// is not a body anyone sends).
const CL_MAX_DIGITS: usize = 15;

/// Window indices are masked with this before every access: the verifier then knows
/// `index + 16 < SCRATCH_PAYLOAD` whatever it knows of the index.
const WIN_MASK: u64 = (2 * MAX_HEAD - 1) as u64;
const _: () = assert!(2 * MAX_HEAD + 32 <= SCRATCH_PAYLOAD);

/// Scan of one captured window (`n` bytes at the start of the scratch payload) of a
/// request stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameScan {
    /// Next window byte to look at.
    pub i: u64,
    /// Bytes captured in the window.
    pub n: u64,
    /// Bytes of the syscall from the window's start (`>= n`).
    pub rest: u64,
    /// Start of the current line.
    pub line: u64,
    /// Start of the current request.
    pub msg: u64,
    /// The current request's `Content-Length`, or `CL_NONE`.
    pub cl: u64,
    /// [`SCAN_DONE`]: where the next request starts, relative to the window's start.
    pub next: u64,
    /// One of the `SCAN_*` outcomes.
    pub outcome: u32,
    /// Requests whose header block ended inside the window.
    pub requests: u32,
}

impl FrameScan {
    /// A scan of a window whose first byte starts a request (checked by the caller with
    /// [`is_request_start`]).
    #[inline(always)]
    pub fn new(n: u64, rest: u64) -> Self {
        FrameScan {
            i: 0,
            n,
            rest,
            line: 0,
            msg: 0,
            cl: CL_NONE,
            next: 0,
            outcome: SCAN_RUNNING,
            requests: 0,
        }
    }

    /// One step. Returns whether to go on; when it returns false, `outcome` says why.
    #[inline(always)]
    pub fn step(&mut self, buf: &[u8; SCRATCH_PAYLOAD]) -> bool {
        let i = self.i;
        if self.outcome != SCAN_RUNNING {
            return false;
        }
        if i >= self.n {
            self.outcome = SCAN_SHORT;
            return false;
        }
        let mut w = word(buf, i);
        let avail = self.n - i;
        if avail < 8 {
            // Bytes past the capture are stale: make them anything but a line feed.
            w |= u64::MAX << (avail * 8);
        }
        let lf = zero_bytes(w ^ 0x0a0a_0a0a_0a0a_0a0a);
        if lf == 0 {
            self.i = i + 8;
            return true;
        }
        let e = i + (lf.trailing_zeros() / 8) as u64;
        self.line_end(buf, e)
    }

    /// The line that started at `self.line` ends with a line feed at `e`.
    #[inline(always)]
    fn line_end(&mut self, buf: &[u8; SCRATCH_PAYLOAD], e: u64) -> bool {
        let start = self.line;
        let mut len = e.saturating_sub(start);
        if len > 0 && byte(buf, e - 1) == b'\r' {
            len -= 1;
        }
        self.line = e + 1;
        self.i = e + 1;
        if start == self.msg {
            // The start line (checked before the scan began).
            return true;
        }
        if len == 0 {
            return self.header_end(buf, e + 1);
        }
        if len < 15 {
            return true;
        }
        let a = word(buf, start) | LOWER;
        let b = word(buf, start + 8) | LOWER;
        if a == u64::from_le_bytes(*b"content-")
            && b & 0x00ff_ffff_ffff_ffff == u64::from_le_bytes(*b"length:\0")
        {
            match content_length(buf, start + 15, start + len) {
                Some(v) if self.cl == CL_NONE || self.cl == v => self.cl = v,
                // Unreadable, or two that differ (the server answers 400 and closes).
                _ => return self.unframed(),
            }
        } else if a == u64::from_le_bytes(*b"transfer") && b == u64::from_le_bytes(*b"-encodin")
        {
            // Chunked (or another coding): its end is not a byte count.
            return self.unframed();
        }
        true
    }

    /// The header block of the current request ends just before `body` (window-relative).
    #[inline(always)]
    fn header_end(&mut self, buf: &[u8; SCRATCH_PAYLOAD], body: u64) -> bool {
        let len = if self.cl == CL_NONE { 0 } else { self.cl };
        let next = body + len;
        self.requests += 1;
        self.next = next;
        if next >= self.rest {
            self.outcome = SCAN_DONE;
            return false;
        }
        if next >= self.n || !is_request_start(buf, next, self.n) {
            // Pipelined past the window (its start was not captured), or not a request.
            return self.unframed();
        }
        self.msg = next;
        self.line = next;
        self.i = next;
        self.cl = CL_NONE;
        true
    }

    #[inline(always)]
    fn unframed(&mut self) -> bool {
        self.outcome = SCAN_UNFRAMED;
        false
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

/// The value of a `Content-Length` field between `from` and `to` (window-relative):
/// optional whitespace, 1 to 15 digits, optional whitespace.
#[inline(always)]
fn content_length(buf: &[u8; SCRATCH_PAYLOAD], from: u64, to: u64) -> Option<u64> {
    let mut v: u64 = 0;
    let mut digits = 0usize;
    let mut after = false;
    let mut k = 0u64;
    // Bounded for the verifier: whitespace plus digits of any sane field.
    while k < 24 {
        let at = from + k;
        if at >= to {
            break;
        }
        let c = byte(buf, at);
        if c.is_ascii_digit() && !after {
            if digits == CL_MAX_DIGITS {
                return None;
            }
            v = v * 10 + (c - b'0') as u64;
            digits += 1;
        } else if c == b' ' || c == b'\t' {
            after = digits > 0;
        } else {
            return None;
        }
        k += 1;
    }
    if digits == 0 || from + k < to {
        return None;
    }
    Some(v)
}

/// Whether the window holds, at `at`, the start of a request line: a method token (`A`
/// to `Z`, `-`, `_`; up to 15 bytes), one space, then a target's first byte. `n` is the
/// number of captured bytes: the token and what follows it must be among them.
#[inline(always)]
pub fn is_request_start(buf: &[u8; SCRATCH_PAYLOAD], at: u64, n: u64) -> bool {
    let mut k = 0u64;
    while k < 16 {
        if at + k + 1 >= n {
            return false;
        }
        let c = byte(buf, at + k);
        if c == b' ' {
            let t = byte(buf, at + k + 1);
            return k > 0 && t > b' ' && t < 0x7f;
        }
        if !(c.is_ascii_uppercase() || c == b'-' || c == b'_') {
            return false;
        }
        k += 1;
    }
    false
}

/// Runs a whole scan (what the kernel does with `bpf_loop`); for tests and fuzzing.
pub fn scan_window(buf: &[u8; SCRATCH_PAYLOAD], n: u64, rest: u64) -> FrameScan {
    let mut s = FrameScan::new(n, rest);
    if !is_request_start(buf, 0, n) {
        s.outcome = SCAN_UNFRAMED;
        return s;
    }
    // Each step moves `i` forward by at least one byte.
    for _ in 0..=MAX_HEAD + 8 {
        if !s.step(buf) {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{boxed::Box, vec::Vec};

    fn window(bytes: &[u8]) -> Box<[u8; SCRATCH_PAYLOAD]> {
        let mut b = Box::new([0xeeu8; SCRATCH_PAYLOAD]);
        b[..bytes.len()].copy_from_slice(bytes);
        b
    }

    fn scan(bytes: &[u8], n: usize, rest: usize) -> FrameScan {
        scan_window(&window(bytes), n as u64, rest as u64)
    }

    #[test]
    fn a_body_then_the_next_request() {
        let mut r = b"POST /a HTTP/1.1\r\nHost: x\r\ncontent-LENGTH:  5 \r\n\r\nhello".to_vec();
        let first = r.len();
        r.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let s = scan(&r, r.len(), r.len());
        assert_eq!(s.outcome, SCAN_DONE);
        assert_eq!(s.requests, 2);
        assert_eq!(s.next, r.len() as u64);
        // The same request whose body goes on past this syscall.
        let s = scan(&r[..first - 2], first - 2, first - 2);
        assert_eq!((s.outcome, s.next), (SCAN_DONE, first as u64));
        // A body that ends past the window but inside the syscall: the next start
        // is known and lies in the syscall, not in the window.
        let s = scan(&r[..first - 2], first - 2, 100_000);
        assert_eq!((s.outcome, s.next), (SCAN_UNFRAMED, first as u64));
    }

    #[test]
    fn what_cannot_be_framed() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(scan(chunked, chunked.len(), chunked.len()).outcome, SCAN_UNFRAMED);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(scan(two, two.len(), two.len()).outcome, SCAN_UNFRAMED);
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\na";
        assert_eq!(scan(bad, bad.len(), bad.len()).outcome, SCAN_UNFRAMED);
        let cut = b"GET / HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(scan(cut, cut.len(), cut.len()).outcome, SCAN_SHORT);
        let response = b"HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(scan(response, response.len(), response.len()).outcome, SCAN_UNFRAMED);
        // The same length twice is allowed.
        let same = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        let s = scan(same, same.len(), same.len());
        assert_eq!((s.outcome, s.next), (SCAN_DONE, same.len() as u64));
    }

    /// Bytes past `n` are stale in the kernel's buffer: a line feed there must not end
    /// a header block.
    #[test]
    fn stale_bytes_past_the_capture_are_ignored() {
        let r = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let s = scan(r, r.len() - 2, r.len() + 100);
        assert_eq!(s.outcome, SCAN_SHORT);
    }

    /// Pipelined requests of random sizes and field layouts: the scan agrees with where
    /// each request really ends, or gives up; it never names a wrong offset.
    #[test]
    fn pipelined_requests_are_framed_exactly_or_not_at_all() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut framed = 0;
        for _ in 0..5000 {
            let mut bytes = Vec::new();
            let mut ends = Vec::new();
            for _ in 0..1 + rnd(4) {
                let body = rnd(300) as usize;
                let method: &[u8] = [&b"GET"[..], b"POST", b"PUT", b"PROPFIND"][rnd(4) as usize];
                bytes.extend_from_slice(method);
                bytes.extend_from_slice(b" /x HTTP/1.1\r\n");
                for _ in 0..rnd(4) {
                    bytes.extend_from_slice(b"X-Pad: ");
                    bytes.extend(std::iter::repeat_n(b'p', rnd(40) as usize));
                    bytes.extend_from_slice(b"\r\n");
                }
                let name: &[u8] = [&b"Content-Length"[..], b"content-length", b"CONTENT-LENGTH"]
                    [rnd(3) as usize];
                if body > 0 || rnd(2) == 0 {
                    bytes.extend_from_slice(name);
                    bytes.extend_from_slice(std::format!(":{}{}\r\n", " ".repeat(rnd(3) as usize), body).as_bytes());
                }
                bytes.extend_from_slice(if rnd(5) == 0 { b"\n" } else { b"\r\n" });
                bytes.extend(std::iter::repeat_n(b'\n', body));
                ends.push(bytes.len() as u64);
            }
            let total = bytes.len();
            let n = if rnd(2) == 0 { total } else { 1 + rnd(total as u64) as usize };
            let n = n.min(MAX_HEAD);
            let s = scan(&bytes, n, total);
            match s.outcome {
                SCAN_DONE => {
                    assert_eq!(s.next, *ends.last().unwrap(), "{:?}", std::str::from_utf8(&bytes));
                    framed += 1;
                }
                SCAN_UNFRAMED => {
                    // Only when a request started past the capture, or so close to its
                    // end that its method was cut.
                    assert!(s.next + 16 >= n as u64, "next {} n {n} {:?}", s.next, std::str::from_utf8(&bytes));
                }
                SCAN_SHORT => assert!(n < total),
                o => panic!("outcome {o}"),
            }
        }
        assert!(framed > 1000, "only {framed} framed");
    }
}
