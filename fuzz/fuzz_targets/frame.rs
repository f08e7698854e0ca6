//! The kernel's request framing (`periscope_common::frame`) on arbitrary bytes cut into
//! arbitrary syscalls, and its chunks fed to the HTTP/1 parser.
//!
//! Oracles besides "no panic, no hang": the chunks tile every syscall exactly, every head
//! holds the bytes where its chunk starts, a syscall finishes within
//! `MAX_SEGMENTER_STEPS`, and the framer never moves backwards.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use periscope::http::{Chunk, Direction, StreamParser};
use periscope_common::frame::{
    Capture, Framer, MAX_SEGMENTER_STEPS, RUN_CHUNKS, RUN_MASK, Segmenter,
};
use periscope_common::{MAX_HEAD, MAX_TAIL, SCRATCH_PAYLOAD};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Syscall sizes, cycled (0 taken as 1).
    sizes: Vec<u16>,
    data: Vec<u8>,
}

struct Sys<'a> {
    bytes: &'a [u8],
    buf: Box<[u8; SCRATCH_PAYLOAD]>,
    win: Option<u64>,
    chunks: Vec<(u64, u64, Vec<u8>, Vec<u8>, u32)>,
}

impl Capture for Sys<'_> {
    fn window(&mut self, from: u64, n: u64) -> bool {
        assert!(n <= MAX_HEAD as u64 && from + n <= self.bytes.len() as u64);
        self.buf[..n as usize].copy_from_slice(&self.bytes[from as usize..(from + n) as usize]);
        self.win = Some(from);
        true
    }
    fn payload(&self) -> &[u8; SCRATCH_PAYLOAD] {
        &self.buf
    }
    fn emit(&mut self, from: u64, to: u64, head: u64, tail: bool) {
        assert!(from < to && to <= self.bytes.len() as u64 && head <= to - from);
        if head > 0 {
            assert_eq!(self.win, Some(from));
        }
        let t = if tail {
            assert_eq!(to, self.bytes.len() as u64);
            (to - from - head).min(MAX_TAIL as u64)
        } else {
            0
        };
        let tail = self.bytes[(to - t) as usize..to as usize].to_vec();
        self.chunks.push((from, to, self.buf[..head as usize].to_vec(), tail, 0));
    }
    fn emit_run(&mut self, from: u64, to: u64, run: u32) {
        assert!(from < to && to <= self.bytes.len() as u64);
        assert_eq!(run & !RUN_MASK, 0);
        assert_ne!(run & RUN_CHUNKS, 0);
        self.chunks.push((from, to, Vec::new(), Vec::new(), run));
    }
}

fuzz_target!(|input: Input| {
    let data = &input.data;
    let sizes: Vec<u64> = if input.sizes.is_empty() {
        vec![data.len().max(1) as u64]
    } else {
        input.sizes.iter().map(|&s| u64::from(s).max(1)).collect()
    };
    let mut framer = Framer::at(0);
    let mut lost = false;
    let mut parser = StreamParser::new(Direction::Request);
    let mut out = Vec::new();
    let (mut pos, mut k) = (0u64, 0usize);
    while pos < data.len() as u64 {
        let size = sizes[k % sizes.len()].min(data.len() as u64 - pos);
        k += 1;
        let sys = &data[pos as usize..(pos + size) as usize];
        let mut cap = Sys {
            bytes: sys,
            buf: Box::new([0x0a; SCRATCH_PAYLOAD]),
            win: None,
            chunks: Vec::new(),
        };
        if lost || framer.need >= pos + size {
            let n = if lost { size.min(MAX_HEAD as u64) } else { 0 };
            cap.window(0, n);
            cap.emit(0, size, n, lost);
        } else {
            let mut seg = Segmenter::new(pos, size, framer);
            let mut steps = 0;
            while seg.step(&mut cap) {
                steps += 1;
                assert!(steps < MAX_SEGMENTER_STEPS, "a syscall must finish");
            }
            assert!(seg.framer.need >= framer.need, "the framer never moves back");
            framer = seg.framer;
            lost = seg.lost != 0;
        }
        let mut at = 0;
        for (from, to, head, tail, run) in &cap.chunks {
            assert_eq!(*from, at, "chunks tile the syscall");
            assert_eq!(&head[..], &sys[*from as usize..*from as usize + head.len()]);
            at = *to;
            let chunk = Chunk {
                run: *run,
                ..Chunk::captured(k as u64, to - from, head, tail)
            };
            parser.feed(&chunk, &mut out);
        }
        assert_eq!(at, size, "chunks tile the syscall");
        pos += size;
    }
    parser.close(u64::MAX, &mut out);
});
