//! The HTTP/2 session (`periscope::h2`) and its HPACK decoder on arbitrary bytes.
//!
//! Oracles besides "no panic, no hang, bounded memory": the HPACK decoder, handed the
//! input as a sequence of header blocks, never yields a field larger than its block
//! could encode or its table could hold, and once it refuses a block it refuses every
//! later one; the session is fed the same bytes as both directions of a connection
//! after the client preface, cut into arbitrary chunks, some of them only counted (as
//! truncated captures are).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use periscope::h2::hpack::{Decoder, Error};
use periscope::h2::{MAX_HPACK_TABLE, PREFACE, Session};
use periscope::http::Chunk;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Where the data is cut: header block lengths, then chunk lengths (0 taken as 1);
    /// the top bit of a chunk length sends it from the server, the next one sends it as
    /// a byte count only.
    cuts: Vec<u16>,
    data: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let data = &input.data;
    let cuts: Vec<usize> = if input.cuts.is_empty() {
        vec![data.len().max(1)]
    } else {
        input.cuts.iter().map(|&c| usize::from(c & 0x3fff).max(1)).collect()
    };

    let mut hpack = Decoder::new(MAX_HPACK_TABLE);
    let (mut at, mut k, mut failed) = (0, 0, false);
    while at < data.len() {
        let end = (at + cuts[k % cuts.len()]).min(data.len());
        k += 1;
        let mut fields = 0usize;
        let res = hpack.decode(&data[at..end], |n, v| {
            fields += 1;
            assert!(n.len() + v.len() <= 8 * (end - at) / 5 + MAX_HPACK_TABLE);
        });
        if failed {
            assert_eq!(res, Err(Error::Poisoned), "a failed decoder stays failed");
        }
        failed |= res.is_err();
        at = end;
    }

    let mut session = Session::new();
    let mut out = Vec::new();
    session.feed(true, &Chunk::full(0, PREFACE), &mut out);
    let (mut at, mut k) = (0, 0);
    while at < data.len() {
        let cut = input.cuts.get(k % input.cuts.len().max(1)).copied().unwrap_or(0);
        let end = (at + usize::from(cut & 0x3fff).max(1)).min(data.len());
        k += 1;
        let bytes = &data[at..end];
        let chunk = if cut & 0x4000 != 0 {
            Chunk::captured(k as u64, bytes.len() as u64, &[], &[])
        } else {
            Chunk::full(k as u64, bytes)
        };
        session.feed(cut & 0x8000 == 0, &chunk, &mut out);
        out.clear();
        at = end;
    }
    session.close();
});
