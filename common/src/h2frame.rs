//! HTTP/2 frame boundaries, followed by the kernel on sockets it classified HTTP/2.
//!
//! A syscall captured as a head and a tail (`MAX_HEAD` + `MAX_TAIL` bytes) keeps an
//! HTTP/2 connection readable only while each syscall moves less than the head: node
//! reads 64 KiB at a time and writes a dozen frames with one `writev`, and a gap that
//! hides one frame header leaves the agent's HPACK state unknown for the rest of the
//! connection. So on HTTP/2 sockets the kernel follows the frames itself: frame headers
//! and the payloads of every frame but DATA (header blocks, SETTINGS, RST_STREAM,
//! GOAWAY...) are copied; of a DATA payload only the first 5 bytes are (where a gRPC
//! message prefix is, when a message starts with its frame), the rest counted, and small
//! payloads whole (several messages may share one). A syscall becomes a few chunks, each the
//! copied bytes up to a DATA payload and that payload's length: `head` bytes, then
//! `total - head` uncaptured. The agent reads them as it reads any capture; a gap that
//! lies inside a DATA payload costs it nothing.
//!
//! The position in the frame stream is kept per socket and direction ([`H2Pos`]) between
//! syscalls, from the direction's first byte (the client's starts with the 24-byte
//! preface). The agent never trusts this for meaning: a wrong position only makes a gap
//! hide frame bytes, which the agent counts (the connection's streams unplaced), never a
//! wrong span.
//!
//! One [`H2Cut::step`] per `bpf_loop` iteration: it moves over one run of bytes of one
//! kind (preface, frame header, copied payload, counted payload) inside one contiguous
//! piece of the syscall's buffer (the buffer, or one iovec), or reads the next iovec.

use crate::MAX_HEAD;

/// Steps one syscall may take (about three per frame, one per iovec); a syscall that
/// needs more is reported uncut from there and the direction is no longer followed.
pub const H2_MAX_STEPS: u32 = 2048;
/// DATA payloads up to this long are copied whole; of longer ones the first
/// [`H2_DATA_PREFIX`] bytes, the rest counted.
pub const H2_SMALL_DATA: u32 = 64;
/// Bytes copied of a longer DATA payload: a gRPC message prefix (flag and length).
pub const H2_DATA_PREFIX: u32 = 5;
/// Length of the client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE_LEN: u32 = 24;

const DATA: u8 = 0;
const PADDED: u8 = 0x8;

/// Where one direction of an HTTP/2 socket is in its frame stream, between syscalls.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Pos {
    /// Bytes of the client connection preface still to come.
    pub preface: u32,
    /// Payload bytes of the current frame still to come.
    pub left: u32,
    /// Those bytes are copied (1) or counted (0).
    pub copy: u32,
    /// Payload bytes after those, counted (the rest of a DATA payload whose prefix is
    /// being copied).
    pub then: u32,
    /// Bytes of the next frame header seen so far.
    pub hdr_len: u32,
    /// Those bytes (9 used).
    pub hdr: [u8; 16],
}

impl H2Pos {
    /// A direction at its first byte: the client's (`preface`) or the server's.
    pub fn start(preface: bool) -> Self {
        Self {
            preface: if preface { H2_PREFACE_LEN } else { 0 },
            ..Self::default()
        }
    }

    /// Moves over `n` bytes that cannot be read (sendfile's: nginx writes a DATA frame's
    /// header, then sends its payload from the file). Possible only when they are all
    /// inside the current DATA payload: its counted rest, or its copied prefix and rest
    /// (the prefix is then a gap inside DATA, as any counted byte). False when they may
    /// hold anything else (the preface, a frame header, a payload that is copied whole):
    /// the position is then unknown.
    #[inline(always)]
    pub fn skip(&mut self, n: u64) -> bool {
        if self.preface != 0 || self.hdr_len != 0 {
            return false;
        }
        let inside = if self.copy == 0 {
            self.left as u64
        } else if self.then > 0 {
            self.left as u64 + self.then as u64
        } else {
            return false;
        };
        if n > inside {
            return false;
        }
        if self.copy != 0 && n < self.left as u64 {
            self.left -= n as u32;
        } else {
            self.left = (inside - n) as u32;
            self.copy = 0;
            self.then = 0;
        }
        true
    }
}

/// What [`H2Cut`] needs from the capture path (the kernel's scratch buffer and ring; a
/// vector in tests).
pub trait H2Capture {
    /// Piece `index` of the syscall's buffer: its address and length (the buffer itself
    /// for a plain syscall, an iovec for a vectored one); `None` when it cannot be read.
    fn piece(&mut self, index: u32) -> Option<(u64, u64)>;
    /// Copies `n` bytes from address `src` to the payload at `at` (`at + n <=
    /// MAX_HEAD`). False when the read failed.
    fn copy(&mut self, at: u64, src: u64, n: u64) -> bool;
    /// The payload byte at `at` (one just copied).
    fn byte(&self, at: u64) -> u8;
    /// Reports the next `total` bytes of the syscall, of which the first `head` are the
    /// payload's.
    fn emit(&mut self, head: u64, total: u64);
}

/// One syscall being walked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct H2Cut {
    pub pos: H2Pos,
    /// Bytes of the syscall not walked yet.
    pub remaining: u64,
    /// Index of the next piece to read.
    pub piece: u32,
    /// A read failed or the steps ran out: the rest was reported uncut and the
    /// direction is not followed any more.
    pub lost: u32,
    /// Address and bytes left of the current piece.
    pub base: u64,
    pub piece_left: u64,
    /// Payload bytes of the chunk being built, and counted bytes after them.
    pub head: u64,
    pub gap: u64,
}

impl H2Cut {
    pub fn new(pos: H2Pos, total: u64) -> Self {
        Self {
            pos,
            remaining: total,
            piece: 0,
            lost: 0,
            base: 0,
            piece_left: 0,
            head: 0,
            gap: 0,
        }
    }

    /// Reports the chunk being built, if any.
    #[inline(always)]
    fn flush<C: H2Capture>(&mut self, cap: &mut C) {
        if self.head + self.gap > 0 {
            cap.emit(self.head, self.head + self.gap);
            self.head = 0;
            self.gap = 0;
        }
    }

    /// Gives up: what was built, then the rest as a count.
    #[inline(always)]
    fn lose<C: H2Capture>(&mut self, cap: &mut C) -> bool {
        self.gap += self.remaining;
        self.remaining = 0;
        self.flush(cap);
        self.lost = 1;
        false
    }

    /// Called when the steps ran out with bytes left.
    pub fn out_of_steps<C: H2Capture>(&mut self, cap: &mut C) {
        if self.remaining > 0 {
            self.lose(cap);
        } else {
            self.flush(cap);
        }
    }

    /// One step; false when the syscall is done (everything reported).
    #[inline(always)]
    pub fn step<C: H2Capture>(&mut self, cap: &mut C) -> bool {
        if self.remaining == 0 {
            self.flush(cap);
            return false;
        }
        if self.piece_left == 0 {
            let Some((base, len)) = cap.piece(self.piece) else {
                return self.lose(cap);
            };
            self.piece += 1;
            self.base = base;
            self.piece_left = if len < self.remaining {
                len
            } else {
                self.remaining
            };
            return true;
        }
        let avail = self.piece_left;
        let pos = &mut self.pos;
        // What the next bytes are, and how many of them are of that kind.
        let (want, copied, header) = if pos.preface > 0 {
            (pos.preface as u64, true, false)
        } else if pos.left > 0 {
            (pos.left as u64, pos.copy != 0, false)
        } else {
            (9u64.saturating_sub(pos.hdr_len as u64), true, true)
        };
        let mut n = if want < avail { want } else { avail };
        if copied {
            if self.gap > 0 || self.head >= MAX_HEAD as u64 {
                // Copied bytes after counted ones, or no room: a new chunk.
                self.flush(cap);
            }
            let room = MAX_HEAD as u64 - self.head;
            if n > room {
                n = room;
            }
            if !cap.copy(self.head, self.base, n) {
                return self.lose(cap);
            }
            if header {
                let mut i = 0u64;
                while i < 9 {
                    let j = (self.pos.hdr_len as u64 + i) as usize;
                    if i < n && j < 9 {
                        self.pos.hdr[j] = cap.byte(self.head + i);
                    }
                    i += 1;
                }
            }
            self.head += n;
        } else {
            self.gap += n;
        }
        let pos = &mut self.pos;
        if pos.preface > 0 {
            pos.preface -= n as u32;
        } else if pos.left > 0 {
            pos.left -= n as u32;
            if pos.left == 0 && pos.then > 0 {
                pos.left = pos.then;
                pos.then = 0;
                pos.copy = 0;
            }
        } else {
            pos.hdr_len += n as u32;
            if pos.hdr_len >= 9 {
                let len = (pos.hdr[0] as u32) << 16 | (pos.hdr[1] as u32) << 8 | pos.hdr[2] as u32;
                pos.hdr_len = 0;
                if pos.hdr[3] == DATA && pos.hdr[4] & PADDED == 0 && len > H2_SMALL_DATA {
                    pos.left = H2_DATA_PREFIX;
                    pos.copy = 1;
                    pos.then = len - H2_DATA_PREFIX;
                } else {
                    pos.left = len;
                    pos.copy = 1;
                    pos.then = 0;
                }
            }
        }
        self.base += n;
        self.piece_left -= n;
        self.remaining -= n;
        true
    }
}

/// The walk in userspace, on a syscall given as its pieces (iovecs): for the agent's
/// tests, the fuzzer and the tests here, one capture instead of one per place.
#[cfg(any(test, feature = "user"))]
pub mod user {
    extern crate alloc;
    use alloc::{vec, vec::Vec};

    use super::*;

    /// A syscall's pieces; address `i << 32 | offset` is byte `offset` of piece `i`.
    pub struct Pieces<'a> {
        pub pieces: &'a [&'a [u8]],
        /// Piece index whose read fails (tests of a failed read).
        pub fail_at: Option<u32>,
        payload: Vec<u8>,
        /// The chunks reported: the copied bytes and how many bytes each covers.
        pub chunks: Vec<(Vec<u8>, u64)>,
    }

    impl<'a> Pieces<'a> {
        pub fn new(pieces: &'a [&'a [u8]]) -> Self {
            Self {
                pieces,
                fail_at: None,
                payload: vec![0; MAX_HEAD],
                chunks: Vec::new(),
            }
        }
    }

    impl H2Capture for Pieces<'_> {
        fn piece(&mut self, index: u32) -> Option<(u64, u64)> {
            if self.fail_at == Some(index) {
                return None;
            }
            let p = self.pieces.get(index as usize)?;
            Some(((index as u64) << 32, p.len() as u64))
        }
        fn copy(&mut self, at: u64, src: u64, n: u64) -> bool {
            assert!(at + n <= MAX_HEAD as u64, "copy past the head");
            let p = self.pieces[(src >> 32) as usize];
            let off = (src & 0xffff_ffff) as usize;
            self.payload[at as usize..(at + n) as usize].copy_from_slice(&p[off..off + n as usize]);
            true
        }
        fn byte(&self, at: u64) -> u8 {
            self.payload[at as usize]
        }
        fn emit(&mut self, head: u64, total: u64) {
            assert!(head <= total && head <= MAX_HEAD as u64);
            self.chunks
                .push((self.payload[..head as usize].to_vec(), total));
        }
    }

    /// One syscall of `pieces` walked from `pos` (updated) as the kernel's `bpf_loop`
    /// would: its chunks, the cut (for `lost`), and the steps it took.
    pub fn syscall(pos: &mut H2Pos, pieces: &[&[u8]]) -> (Vec<(Vec<u8>, u64)>, H2Cut, u32) {
        let total = pieces.iter().map(|p| p.len() as u64).sum();
        let mut cap = Pieces::new(pieces);
        let mut cut = H2Cut::new(*pos, total);
        let mut steps = 0;
        while steps < H2_MAX_STEPS && cut.step(&mut cap) {
            steps += 1;
        }
        if steps == H2_MAX_STEPS {
            cut.out_of_steps(&mut cap);
        }
        *pos = cut.pos;
        (cap.chunks, cut, steps)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::{vec, vec::Vec};

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        v.push(kind);
        v.push(flags);
        v.extend(stream.to_be_bytes());
        v.extend(payload);
        v
    }

    /// Walks one syscall of `pieces`; returns its chunks and whether it was lost.
    fn walk(pos: &mut H2Pos, pieces: &[&[u8]]) -> (Vec<(Vec<u8>, u64)>, bool) {
        let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        let (chunks, cut, _) = user::syscall(pos, pieces);
        assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), total);
        (chunks, cut.lost != 0)
    }

    /// Bytes as the chunks say: copied ones, and `None` for each counted one.
    fn seen(chunks: &[(Vec<u8>, u64)]) -> Vec<Option<u8>> {
        let mut v = Vec::new();
        for (head, total) in chunks {
            v.extend(head.iter().map(|&b| Some(b)));
            v.extend(std::iter::repeat_n(None, (*total as usize) - head.len()));
        }
        v
    }

    #[test]
    fn frames_are_copied_and_large_data_payloads_counted() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        bytes.extend(frame(1, 4, 1, &[0x82; 40]));
        let big = [7u8; 20_000];
        bytes.extend(frame(0, 0, 1, &big[..16_384]));
        bytes.extend(frame(0, 1, 1, &big[..3_000]));
        bytes.extend(frame(0, 1, 3, b"small"));
        bytes.extend(frame(3, 0, 5, &[0, 0, 0, 8]));
        // Every split of the bytes into syscalls of pieces gives the same view.
        for split in [1usize, 7, 9, 100, 2048, 4000, 40_000] {
            let mut pos = H2Pos::start(true);
            let mut all = Vec::new();
            for sys in bytes.chunks(split * 3) {
                let pieces: Vec<&[u8]> = sys.chunks(split).collect();
                let (chunks, lost) = walk(&mut pos, &pieces);
                assert!(!lost);
                assert!(chunks.iter().all(|c| c.0.len() <= MAX_HEAD));
                all.extend(seen(&chunks));
            }
            assert_eq!(all.len(), bytes.len(), "split {split}");
            for (i, b) in all.iter().enumerate() {
                // Only the two large DATA payloads past their first 5 bytes are
                // uncaptured.
                let frame_start = 24 + 15 + 49;
                let second = frame_start + 9 + 16_384 + 9;
                let in_big = (frame_start + 9 + 5..frame_start + 9 + 16_384).contains(&i)
                    || (second + 5..second + 3_000).contains(&i);
                match b {
                    Some(v) => assert!(!in_big && *v == bytes[i], "split {split} byte {i}"),
                    None => assert!(in_big, "split {split} byte {i} not captured"),
                }
            }
            // At a frame boundary at the end.
            assert_eq!((pos.preface, pos.left, pos.then, pos.hdr_len), (0, 0, 0, 0));
        }
    }

    /// nginx's h2c sendfile: a writev of HEADERS and a DATA frame header, the payload by
    /// sendfile, then the next frames; the walk goes on after the unread payload, and
    /// bytes that may hold a frame header cannot be skipped.
    #[test]
    fn sendfile_payloads_are_skipped_inside_data_only() {
        let payload = [9u8; 6_000];
        let headers = frame(1, 4, 1, &[0x88; 20]);
        let mut data = frame(0, 1, 1, &payload);
        data.truncate(9);
        let after = frame(1, 4, 3, &[0x89; 10]);
        for sent_first in [0usize, 3, 5, 100] {
            let mut pos = H2Pos::start(false);
            let mut w = headers.clone();
            w.extend(&data);
            w.extend(&payload[..sent_first]);
            let (_, lost) = walk(&mut pos, &[&w]);
            assert!(!lost);
            // The rest of the payload by sendfile: in two parts, then one byte too many.
            let rest = (payload.len() - sent_first) as u64;
            let mut over = pos;
            assert!(pos.skip(rest / 2), "sent_first {sent_first}");
            assert!(pos.skip(rest - rest / 2));
            assert_eq!((pos.left, pos.copy, pos.then, pos.hdr_len), (0, 0, 0, 0));
            assert!(!over.skip(rest + 1), "past the payload: a frame header");
            let (chunks, lost) = walk(&mut pos, &[&after]);
            assert!(!lost);
            assert_eq!(
                seen(&chunks),
                after.iter().map(|&b| Some(b)).collect::<Vec<_>>()
            );
        }
        // Not inside a DATA payload: the preface, a header block, a frame header.
        assert!(!H2Pos::start(true).skip(1));
        let mut pos = H2Pos::start(false);
        let (_, lost) = walk(&mut pos, &[&headers[..12]]);
        assert!(!lost);
        assert!(!pos.skip(1), "in a HEADERS payload");
        let mut pos = H2Pos::start(false);
        let (_, lost) = walk(&mut pos, &[&headers[..4]]);
        assert!(!lost);
        assert!(!pos.skip(1), "in a frame header");
        // A small DATA payload is copied whole: not skippable either.
        let mut pos = H2Pos::start(false);
        let small = frame(0, 1, 1, b"tiny");
        let (_, lost) = walk(&mut pos, &[&small[..9]]);
        assert!(!lost);
        assert!(!pos.skip(4));
    }

    #[test]
    fn a_failed_read_reports_the_rest_uncut() {
        let bytes = frame(1, 4, 1, &[1; 30]);
        let pieces: [&[u8]; 2] = [&bytes[..10], &bytes[10..]];
        let mut cap = user::Pieces::new(&pieces);
        cap.fail_at = Some(1);
        let mut cut = H2Cut::new(H2Pos::start(false), bytes.len() as u64);
        while cut.step(&mut cap) {}
        assert_eq!(cut.lost, 1);
        assert_eq!(cap.chunks, vec![(bytes[..10].to_vec(), bytes.len() as u64)]);
    }

    #[test]
    fn out_of_steps_reports_the_rest_uncut() {
        let mut bytes = Vec::new();
        for i in 0..1200u32 {
            bytes.extend(frame(8, 0, 2 * i + 1, &[0, 0, 1, 0]));
        }
        let mut pos = H2Pos::start(false);
        let (chunks, lost) = walk(&mut pos, &[&bytes]);
        assert!(lost);
        let copied: usize = chunks.iter().map(|c| c.0.len()).sum();
        assert!(copied > 0 && copied < bytes.len());
    }
}
