//! Puts ring-buffer records back in time order before they are applied.
//!
//! The ring holds records in the order the kernel reserved them, which is not always
//! the order things happened: a client's write is stamped when the write began, but
//! its record is reserved when the write returns, and by then the server (another
//! process, another CPU) may have read the bytes and reserved its own record. Joining
//! the two ends of one connection (cross-process traces) needs the client's request
//! applied first, so records wait here for [`HOLD_NS`] and are released sorted by
//! their timestamp (ties keep ring order).
//!
//! Memory is bounded: past [`MAX_BYTES`] held, the oldest records are released early
//! (counted in [`Reorder::forced`]); they are only applied out of order if an older
//! record is still to come.
//!
//! Each record is copied in once. Released records leave their bytes in the arena as
//! dead space, and the arena is compacted only once the dead bytes outweigh the live
//! ones, so a record is moved at most once more on average (compacting at every
//! release moved each held record again at every release: a sixth of the agent's CPU
//! at saturation).

/// How long a record is held before it is applied. Longer than the time a thread can
/// be kept off a CPU between moving bytes and returning from the syscall on a busy
/// machine, short enough not to delay spans noticeably.
pub const HOLD_NS: u64 = 25_000_000;
/// Most record bytes held at once.
pub const MAX_BYTES: usize = 32 << 20;

/// Offset of `ts_ns` in every record (see `periscope_common::EventHeader`).
const TS_OFFSET: usize = 8;

#[derive(Clone, Copy, Debug)]
struct Entry {
    ts_ns: u64,
    seq: u64,
    start: usize,
    len: usize,
}

/// A time-ordered holding area for raw records.
#[derive(Default)]
pub struct Reorder {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    sorted: bool,
    next_seq: u64,
    /// Records released before their hold time because the buffer was full.
    pub forced: u64,
    /// Records released with a timestamp older than one already released.
    pub late: u64,
    released_ts: u64,
    spare: Vec<u8>,
    /// Bytes of released records still in `arena`.
    dead: usize,
}

impl Reorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held (of records not yet released).
    pub fn bytes(&self) -> usize {
        self.arena.len() - self.dead
    }

    /// Copies one record in. Records too short to carry a timestamp sort first (they
    /// fail to decode anyway, and are then counted by the caller).
    pub fn push(&mut self, record: &[u8]) {
        let ts_ns = record
            .get(TS_OFFSET..TS_OFFSET + 8)
            .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")));
        if let Some(last) = self.entries.last()
            && (last.ts_ns, last.seq) > (ts_ns, self.next_seq)
        {
            self.sorted = false;
        }
        self.entries.push(Entry {
            ts_ns,
            seq: self.next_seq,
            start: self.arena.len(),
            len: record.len(),
        });
        self.next_seq += 1;
        self.arena.extend_from_slice(record);
    }

    /// Hands every record stamped at or before `now_ns - HOLD_NS` to `f`, oldest first;
    /// with `all`, every record held. Also releases the oldest records while more than
    /// [`MAX_BYTES`] are held.
    pub fn release(&mut self, now_ns: u64, all: bool, mut f: impl FnMut(&[u8])) {
        if self.entries.is_empty() {
            return;
        }
        if !self.sorted {
            self.entries.sort_unstable_by_key(|e| (e.ts_ns, e.seq));
            self.sorted = true;
        }
        let watermark = now_ns.saturating_sub(HOLD_NS);
        let mut n = if all {
            self.entries.len()
        } else {
            self.entries.partition_point(|e| e.ts_ns <= watermark)
        };
        // Over the byte budget: release from the oldest until under it.
        let mut held: usize = self.entries[n..].iter().map(|e| e.len).sum();
        while held > MAX_BYTES && n < self.entries.len() {
            held -= self.entries[n].len;
            n += 1;
            self.forced += 1;
        }
        if n == 0 {
            return;
        }
        for e in &self.entries[..n] {
            if e.ts_ns < self.released_ts {
                self.late += 1;
            }
            self.released_ts = self.released_ts.max(e.ts_ns);
            self.dead += e.len;
            f(&self.arena[e.start..e.start + e.len]);
        }
        self.entries.drain(..n);
        if self.entries.is_empty() {
            self.arena.clear();
            self.dead = 0;
        } else if self.dead > self.arena.len() - self.dead {
            // More dead than live: compact what is left into the spare arena, in
            // sorted order.
            let mut arena = std::mem::take(&mut self.spare);
            arena.clear();
            for e in &mut self.entries {
                let start = arena.len();
                arena.extend_from_slice(&self.arena[e.start..e.start + e.len]);
                e.start = start;
            }
            self.spare = std::mem::replace(&mut self.arena, arena);
            self.dead = 0;
        }
        // Do not keep a huge allocation after a burst.
        if self.spare.capacity() > 4 * MAX_BYTES / 8 {
            self.spare = Vec::new();
        }
        if self.arena.is_empty() && self.arena.capacity() > 4 * MAX_BYTES / 8 {
            self.arena = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts: u64, tag: u8) -> Vec<u8> {
        let mut r = vec![0u8; 24];
        r[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&ts.to_ne_bytes());
        r.push(tag);
        r
    }

    fn tags(r: &mut Reorder, now: u64, all: bool) -> Vec<u8> {
        let mut out = Vec::new();
        r.release(now, all, |b| out.push(*b.last().unwrap()));
        out
    }

    #[test]
    fn releases_in_time_order_after_the_hold() {
        let mut r = Reorder::new();
        r.push(&rec(1_000, 1));
        r.push(&rec(500, 2)); // reserved later, happened earlier
        r.push(&rec(1_000, 3)); // tie: ring order
        r.push(&rec(HOLD_NS + 10_000, 4));
        assert!(tags(&mut r, HOLD_NS, false).is_empty());
        assert_eq!(r.len(), 4);
        assert_eq!(tags(&mut r, HOLD_NS + 1_000, false), vec![2, 1, 3]);
        assert_eq!(r.len(), 1);
        r.push(&rec(HOLD_NS + 5_000, 5));
        assert_eq!(tags(&mut r, 2 * HOLD_NS + 20_000, false), vec![5, 4]);
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
        assert_eq!(r.late, 0);
    }

    #[test]
    fn all_releases_everything_and_late_records_are_counted() {
        let mut r = Reorder::new();
        r.push(&rec(10, 1));
        assert_eq!(tags(&mut r, HOLD_NS + 10, false), vec![1]);
        r.push(&rec(5, 2));
        r.push(&rec(u64::MAX / 2, 3));
        assert_eq!(tags(&mut r, 0, true), vec![2, 3]);
        assert_eq!(r.late, 1);
    }

    /// Records pushed and released in many small steps (dead bytes piling up, arenas
    /// compacted now and then) all come out once, whole, in time order.
    #[test]
    fn interleaved_pushes_and_releases_keep_every_record_whole() {
        let mut r = Reorder::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut now = 20_000_000u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += 1_000_000;
            // Stamped up to 20 ms in the past: out of ring order.
            let ts = now - x % 20_000_000;
            let mut b = vec![0u8; 24 + (x % 300) as usize];
            b[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&ts.to_ne_bytes());
            b[16..24].copy_from_slice(&i.to_ne_bytes());
            for (j, v) in b[24..].iter_mut().enumerate() {
                *v = (i as usize + j) as u8;
            }
            r.push(&b);
            if i % 3 == 0 {
                r.release(now, false, |rec| {
                    let ts = u64::from_ne_bytes(rec[8..16].try_into().unwrap());
                    out.push((ts, rec.to_vec()));
                });
                assert!(
                    r.arena.len() <= 2 * r.bytes() + 400,
                    "dead bytes stay bounded"
                );
            }
        }
        r.release(0, true, |rec| {
            let ts = u64::from_ne_bytes(rec[8..16].try_into().unwrap());
            out.push((ts, rec.to_vec()));
        });
        assert_eq!(out.len(), 20_000);
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "time order");
        let mut seen = vec![false; 20_000];
        for (_, rec) in &out {
            let i = u64::from_ne_bytes(rec[16..24].try_into().unwrap()) as usize;
            assert!(!seen[i], "record {i} twice");
            seen[i] = true;
            for (j, v) in rec[24..].iter().enumerate() {
                assert_eq!(*v, (i + j) as u8, "record {i} byte {j}");
            }
        }
        assert_eq!((r.late, r.bytes()), (0, 0));
    }

    #[test]
    fn byte_budget_forces_the_oldest_out() {
        let mut r = Reorder::new();
        let big = vec![0u8; MAX_BYTES / 4];
        for i in 0..6u64 {
            let mut b = big.clone();
            b[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&(1_000 + i).to_ne_bytes());
            r.push(&b);
        }
        let mut n = 0;
        r.release(0, false, |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(r.forced, 2);
        assert!(r.bytes() <= MAX_BYTES);
    }

    #[test]
    fn short_records_do_not_panic() {
        let mut r = Reorder::new();
        r.push(&[1, 2, 3]);
        let mut got = Vec::new();
        r.release(HOLD_NS, false, |b| got.push(b.to_vec()));
        assert_eq!(got, vec![vec![1, 2, 3]]);
    }
}
