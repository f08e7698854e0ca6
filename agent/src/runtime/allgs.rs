//! Walking the Go runtime's `allgs` (`[]*g`, every goroutine ever created and not yet
//! freed) in another process's memory, bounded and checked.
//!
//! Everything read here comes from a process the agent does not control: its slice
//! header can claim any length, its pointers can point anywhere, and when the struct
//! offsets are wrong for the binary (build info that lies about the Go version, an
//! offsets table row that does not fit) every field read is garbage. So the walk reads
//! at most [`MAX_ALLGS`] entries, in chunks of bounded size, and checks that what it
//! reads looks like goroutines (valid states, distinct ids); when it does not, it says
//! so instead of feeding made-up goroutines to the metrics and trace context.

use std::{fs::File, os::unix::fs::FileExt};

use thiserror::Error;

use super::gobin::GoOffsets;

/// Most `allgs` entries read in one walk: a larger length is not believed. Programs
/// with a million live goroutines exist; two million `g`s (each >= 400 bytes plus an
/// 8 KiB stack when live) would be 16 GiB of stacks.
pub const MAX_ALLGS: u64 = 2_000_000;
/// Pointers read per chunk of the `allgs` array (32 KiB).
const CHUNK: usize = 4096;
/// Goroutine states (runtime2.go): `_Gidle` 0 .. `_Gpreempted` 9, `_Gleaked` 10 (1.26);
/// `_Gscan` is a bit on top of them.
const G_MAX_STATUS: u32 = 10;
pub const G_DEAD: u32 = 6;
pub const G_SCAN: u32 = 0x1000;
/// Goroutine ids come from a counter handed out in batches per P; an id this large
/// is a misread field, not a goroutine.
const MAX_GOID: u64 = 1 << 48;
/// Entries checked before a walk may be judged, and the share of bad ones tolerated
/// (a goroutine can change while it is read; garbage offsets make most entries bad).
const JUDGE_AFTER: u64 = 64;
const BAD_SHARE: u64 = 8; // more than 1 in 8 bad: implausible

/// Reads another process's memory. A trait so that tests can play a hostile target.
pub trait Memory {
    /// Fills `buf` from `addr`; false when any byte is unreadable.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;
}

impl Memory for File {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_exact_at(buf, addr).is_ok()
    }
}

/// One live goroutine as read; pcs are run-time addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct G {
    pub goid: u64,
    pub gopc: u64,
    pub startpc: u64,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WalkError {
    #[error("allgs at {0:#x} is not readable")]
    Unreadable(u64),
    #[error("allgs claims {len} goroutines but has room for {cap}")]
    LenOverCap { len: u64, cap: u64 },
    #[error("allgs claims {0} goroutines (more than {MAX_ALLGS} is not believed)")]
    TooLong(u64),
    #[error(
        "{bad} of the first {checked} goroutines in allgs are unreadable, in no valid state or repeat an id (wrong struct offsets for this binary?)"
    )]
    Implausible { bad: u64, checked: u64 },
}

/// Reads the live goroutines of `allgs` (the slice header at run-time address
/// `allgs`). At most `MAX_ALLGS + 1 + MAX_ALLGS / CHUNK` reads, each of at most 32 KiB.
pub fn walk(mem: &dyn Memory, allgs: u64, o: &GoOffsets) -> Result<Vec<G>, WalkError> {
    let mut hdr = [0u8; 24];
    if !mem.read(allgs, &mut hdr) {
        return Err(WalkError::Unreadable(allgs));
    }
    let word = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let (ptr, len, cap) = (word(&hdr, 0), word(&hdr, 8), word(&hdr, 16));
    if len > cap {
        return Err(WalkError::LenOverCap { len, cap });
    }
    if len > MAX_ALLGS {
        return Err(WalkError::TooLong(len));
    }
    let fields = [o.g_atomicstatus, o.g_goid, o.g_gopc, o.g_startpc];
    // One read per g covering every field used.
    let mut g_bytes = vec![0u8; fields.iter().copied().max().unwrap_or(0) as usize + 8];
    let at = |b: &[u8], off: u32| word(b, off as usize);
    let mut live = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let (mut checked, mut bad) = (0u64, 0u64);
    let mut chunk = vec![0u8; CHUNK * 8];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        let buf = &mut chunk[..n * 8];
        if !mem.read(ptr.wrapping_add(done * 8), buf) {
            return Err(WalkError::Unreadable(ptr.wrapping_add(done * 8)));
        }
        for p in buf.chunks_exact(8) {
            let g = word(p, 0);
            checked += 1;
            let ok = g != 0 && mem.read(g, &mut g_bytes) && {
                let status = (at(&g_bytes, o.g_atomicstatus) as u32) & !G_SCAN;
                let goid = at(&g_bytes, o.g_goid);
                if status > G_MAX_STATUS || goid >= MAX_GOID {
                    false
                } else if status == G_DEAD {
                    true
                } else if !seen.insert(goid) {
                    false
                } else {
                    live.push(G {
                        goid,
                        gopc: at(&g_bytes, o.g_gopc),
                        startpc: at(&g_bytes, o.g_startpc),
                    });
                    true
                }
            };
            if !ok {
                bad += 1;
            }
            if checked >= JUDGE_AFTER.min(len) && bad * BAD_SHARE > checked {
                return Err(WalkError::Implausible { bad, checked });
            }
        }
        done += n as u64;
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use std::{cell::Cell, collections::BTreeMap};

    use super::*;

    /// A target's memory: sparse regions, and a count of reads and bytes read.
    #[derive(Default)]
    struct Fake {
        regions: BTreeMap<u64, Vec<u8>>,
        reads: Cell<u64>,
        bytes: Cell<u64>,
    }

    impl Fake {
        fn put(&mut self, addr: u64, bytes: Vec<u8>) {
            self.regions.insert(addr, bytes);
        }
    }

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            self.reads.set(self.reads.get() + 1);
            self.bytes.set(self.bytes.get() + buf.len() as u64);
            let Some((start, r)) = self.regions.range(..=addr).next_back() else {
                return false;
            };
            let off = (addr - start) as usize;
            match r.get(off..off + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    fn offsets() -> GoOffsets {
        GoOffsets::for_version(&crate::runtime::gobin::GoVersion::parse("go1.23.0").unwrap())
            .unwrap()
    }

    const ALLGS: u64 = 0x10_0000;
    const ARRAY: u64 = 0x20_0000;
    const GS: u64 = 0x100_0000;
    const G_SIZE: u64 = 0x200;

    fn g(o: &GoOffsets, status: u32, goid: u64) -> Vec<u8> {
        let mut b = vec![0u8; G_SIZE as usize];
        b[o.g_atomicstatus as usize..][..4].copy_from_slice(&status.to_le_bytes());
        b[o.g_goid as usize..][..8].copy_from_slice(&goid.to_le_bytes());
        b[o.g_gopc as usize..][..8].copy_from_slice(&(0x40_0000 + goid).to_le_bytes());
        b[o.g_startpc as usize..][..8].copy_from_slice(&(0x50_0000 + goid).to_le_bytes());
        b
    }

    fn header(ptr: u64, len: u64, cap: u64) -> Vec<u8> {
        [ptr, len, cap]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// `gs[i]` is (status, goid) of the g at GS + i * G_SIZE.
    fn target(gs: &[(u32, u64)], len: u64, cap: u64) -> Fake {
        let o = offsets();
        let mut m = Fake::default();
        m.put(ALLGS, header(ARRAY, len, cap));
        let ptrs = (0..gs.len() as u64).flat_map(|i| (GS + i * G_SIZE).to_le_bytes());
        m.put(ARRAY, ptrs.collect());
        let mut all = Vec::new();
        for &(status, goid) in gs {
            all.extend(g(&o, status, goid));
        }
        m.put(GS, all);
        m
    }

    #[test]
    fn live_goroutines_are_read_and_dead_ones_skipped() {
        let gs = [(2, 1), (G_DEAD, 7), (4 | G_SCAN, 2), (1, 3)];
        let m = target(&gs, 4, 8);
        let live = walk(&m, ALLGS, &offsets()).unwrap();
        let ids: Vec<u64> = live.iter().map(|g| g.goid).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(live[0].gopc, 0x40_0001);
        assert_eq!(live[0].startpc, 0x50_0001);
    }

    /// A huge allglen is refused without reading (or allocating) anything past the
    /// slice header.
    #[test]
    fn allgs_length_huge_is_refused_unread() {
        let m = target(&[(2, 1)], u64::MAX / 2, u64::MAX / 2);
        assert_eq!(
            walk(&m, ALLGS, &offsets()),
            Err(WalkError::TooLong(u64::MAX / 2))
        );
        assert_eq!(m.reads.get(), 1);
        let m = target(&[(2, 1)], 1000, 10);
        assert_eq!(
            walk(&m, ALLGS, &offsets()),
            Err(WalkError::LenOverCap { len: 1000, cap: 10 })
        );
    }

    /// A believable length over an array that ends early: the walk stops at the first
    /// unreadable chunk, having read at most that chunk.
    #[test]
    fn allgs_array_shorter_than_its_length_fails_bounded() {
        let gs: Vec<(u32, u64)> = (1..=10).map(|i| (2, i)).collect();
        let m = target(&gs, MAX_ALLGS, MAX_ALLGS);
        assert!(matches!(
            walk(&m, ALLGS, &offsets()),
            Err(WalkError::Unreadable(_))
        ));
        assert!(
            m.bytes.get() <= 24 + (CHUNK as u64) * 8,
            "{}",
            m.bytes.get()
        );
    }

    /// allgs that "loops": every entry is the same g. Ids repeat, so the walk is
    /// judged implausible early instead of counting one goroutine a thousand times.
    #[test]
    fn allgs_looping_over_one_g_is_implausible() {
        let o = offsets();
        let mut m = Fake::default();
        m.put(ALLGS, header(ARRAY, 100_000, 100_000));
        let ptrs: Vec<u8> = (0..100_000u64).flat_map(|_| GS.to_le_bytes()).collect();
        m.put(ARRAY, ptrs);
        m.put(GS, g(&o, 2, 1));
        let err = walk(&m, ALLGS, &o).unwrap_err();
        assert!(matches!(err, WalkError::Implausible { .. }), "{err}");
        // Judged after one chunk at most, not after 100k g reads.
        assert!(m.reads.get() < 2 + CHUNK as u64, "{} reads", m.reads.get());
    }

    /// The offsets of another Go version (build info that lies): the fields read are
    /// not a status and an id, and the walk says so.
    #[test]
    fn lying_build_info_offsets_give_implausible_goroutines() {
        let gs: Vec<(u32, u64)> = (1..=200)
            .map(|i| (if i % 3 == 0 { 4 } else { 2 }, i))
            .collect();
        let m = target(&gs, 200, 256);
        assert_eq!(walk(&m, ALLGS, &offsets()).unwrap().len(), 200);
        // Go 1.21's table puts atomicstatus and goid 8 bytes earlier than 1.23.
        let older =
            GoOffsets::for_version(&crate::runtime::gobin::GoVersion::parse("go1.21.0").unwrap())
                .unwrap();
        assert_ne!(older.g_goid, offsets().g_goid);
        let err = walk(&m, ALLGS, &older).unwrap_err();
        assert!(matches!(err, WalkError::Implausible { .. }), "{err}");
    }

    /// Pointers to nowhere and garbage statuses among many good goroutines: a few are
    /// tolerated (goroutines change while read), many are not.
    #[test]
    fn some_bad_entries_are_tolerated_many_are_not() {
        let mut gs: Vec<(u32, u64)> = (1..=100).map(|i| (2, i)).collect();
        gs[10].0 = 0xdead;
        gs[20].0 = 0xbeef;
        let m = target(&gs, 100, 100);
        assert_eq!(walk(&m, ALLGS, &offsets()).unwrap().len(), 98);
        for g in gs.iter_mut().step_by(4) {
            g.0 = 0x77;
        }
        let m = target(&gs, 100, 100);
        assert!(walk(&m, ALLGS, &offsets()).is_err());
    }

    #[test]
    fn unreadable_header_is_an_error() {
        let m = Fake::default();
        assert_eq!(
            walk(&m, ALLGS, &offsets()),
            Err(WalkError::Unreadable(ALLGS))
        );
    }
}
