//! The HTTP/1.x stream parser on arbitrary bytes, split arbitrarily, fully captured and
//! captured as the kernel does (a head and a tail per syscall, a gap between).
//!
//! Oracles besides "no panic, no hang": the messages of a fully captured stream do not
//! depend on how it is split into syscalls (the parser's central property, for streams
//! it parses without a parse error), and no
//! message claims more bytes than the stream had.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use periscope::http::{Chunk, Direction, Message, StreamParser};

#[derive(Arbitrary, Debug)]
struct Input {
    response: bool,
    /// Where the stream is cut into syscalls (offsets taken modulo its length).
    cuts: Vec<u16>,
    /// Per kernel-style chunk: how many bytes of its head and tail were captured.
    capture: Vec<(u16, u8)>,
    data: Vec<u8>,
}

fn pieces<'a>(data: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| *c as usize % (data.len() + 1))
        .collect();
    at.push(0);
    at.push(data.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// The messages, and whether the parser ever lost its footing (a parse error: it then
/// looks for a start at chunk boundaries, so what it finds depends on the split).
fn run(dir: Direction, chunks: &[Chunk<'_>]) -> (Vec<Message>, bool) {
    let mut p = StreamParser::new(dir);
    let mut out = Vec::new();
    for c in chunks {
        p.feed(c, &mut out);
    }
    p.close(u64::MAX, &mut out);
    let s = p.stats();
    (out, s.parse_errors > 0 || s.resyncs > 0)
}

fuzz_target!(|input: Input| {
    let dir = if input.response {
        Direction::Response
    } else {
        Direction::Request
    };
    let data = &input.data;
    let (whole, whole_lost) = run(dir, &[Chunk::full(1, data)]);
    let split: Vec<Chunk<'_>> = pieces(data, &input.cuts)
        .into_iter()
        .enumerate()
        .map(|(i, p)| Chunk::full(1 + i as u64, p))
        .collect();
    let (by_pieces, pieces_lost) = run(dir, &split);
    // Timestamps legitimately differ between the two feeds; everything else must not.
    let strip = |ms: Vec<Message>| -> Vec<Message> {
        ms.into_iter()
            .map(|mut m| {
                m.start_ns = 0;
                m.end_ns = 0;
                m
            })
            .collect()
    };
    // The parser's central property, for streams it parses without losing its footing
    // (after a parse error it resyncs at chunk boundaries, by design; the tracker pairs
    // nothing more on such a connection).
    if !whole_lost && !pieces_lost {
        assert_eq!(strip(whole.clone()), strip(by_pieces), "split changed the messages");
    }
    let claimed: u64 = whole.iter().map(|m| m.header_bytes + m.body_bytes).sum();
    assert!(
        claimed <= data.len() as u64,
        "messages claim {claimed} bytes of a {}-byte stream",
        data.len()
    );

    // Kernel-style capture: a head and a tail of each piece, the rest a gap.
    let captured: Vec<Chunk<'_>> = pieces(data, &input.cuts)
        .into_iter()
        .zip(input.capture.iter().cycle())
        .enumerate()
        .map(|(i, (p, (h, t)))| {
            let head = (*h as usize).min(p.len());
            let tail = (*t as usize).min(p.len() - head);
            Chunk::captured(1 + i as u64, p.len() as u64, &p[..head], &p[p.len() - tail..])
        })
        .collect();
    if !captured.is_empty() {
        let _ = run(dir, &captured);
    }
});
