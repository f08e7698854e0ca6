//! Go heap and GC statistics read from a running program's memory, computed as the program
//! would compute them itself, so the agent's `go_memstats_*` agree with client_golang's.
//!
//! client_golang (>= 1.12 on Go >= 1.17) fills its `go_memstats_*` from runtime/metrics,
//! not from `runtime.ReadMemStats` (which stops the world); runtime/metrics in turn sums
//! the runtime's consistent heap statistics (`memstats.heapStats`, three generations of
//! per-P deltas) and reads a few system counters, without flushing the Ps' allocation
//! caches. Those are plain words in the runtime's globals, so reading them through
//! /proc/PID/mem gives the same numbers with no cost to the program: no probe, no stop.
//! The definitions follow src/runtime/metrics.go (heapStatsAggregate, sysStatsAggregate,
//! the `/memory/classes/...` metrics) and mgcpacer.go (heapGoalInternal,
//! memoryLimitHeapGoal), identical from Go 1.21 to 1.27; GC counts and pauses follow
//! runtime/debug.ReadGCStats (readGCStats_m), which client_golang's
//! go_gc_duration_seconds uses.
//!
//! The read is not atomic: the program keeps running between the words. Each counter is
//! exact at the moment it is read; derived values mix moments microseconds apart (as the
//! program's own runtime/metrics read does across its aggregates).

use std::{fs::File, os::unix::fs::FileExt};

use super::gobin::{GoBinary, GoOffsets, RuntimeGlobals};

/// `runtime.memstats.pause_ns` has this many slots (a ring indexed by `numgc`).
const PAUSE_RING: u64 = 256;
/// Go's memory limit when none is set (`math.MaxInt64`).
pub const NO_MEMORY_LIMIT: u64 = i64::MAX as u64;

/// Everything needed to read one process's statistics; built once at attach.
#[derive(Debug, Clone)]
pub struct MemReader {
    memstats: u64,
    gc_controller: u64,
    mheap: u64,
    allp: Option<u64>,
    /// `runtime.sched` and `runtime.allgs`, with the scheduler layout: goroutine and
    /// thread counts (`None` when any is unknown; the heap statistics do not need them).
    sched: Option<(u64, u64, SchedLayout)>,
    o: Layout,
    size_classes: Vec<u32>,
}

/// Where the counts behind `runtime.NumGoroutine` and the thread count live.
#[derive(Debug, Clone)]
struct SchedLayout {
    /// `sched.ngsys` (int32): live system goroutines.
    ngsys: u64,
    /// `sched.mnext` and `sched.nmfreed` (int64): Ms created and Ms freed.
    mnext: u64,
    nmfreed: u64,
    /// int32 sizes of the global free lists, from the start of `sched`.
    sched_free: Vec<u64>,
    /// int32 size of a P's free list, from the start of the `p`.
    p_free: u64,
}

impl SchedLayout {
    fn new(o: &GoOffsets) -> Option<SchedLayout> {
        let u = |v: Option<u32>| v.map(u64::from);
        let gfree = u(o.sched_gfree)?;
        let p_gfree = u(o.p_gfree)?;
        // Go < 1.25: one count `n` per free list struct; >= 1.25: each gList carries
        // its `size` (sched.gFree has two lists, with and without stacks).
        let (sched_free, p_free) = match (u(o.sched_gfree_n), u(o.p_gfree_n), u(o.glist_size)) {
            (Some(n), Some(pn), _) => (vec![gfree + n], p_gfree + pn),
            (None, None, Some(size)) => (
                vec![
                    gfree + u(o.sched_gfree_stack)? + size,
                    gfree + u(o.sched_gfree_nostack)? + size,
                ],
                p_gfree + size,
            ),
            _ => return None,
        };
        Some(SchedLayout {
            ngsys: u(o.sched_ngsys)?,
            mnext: u(o.sched_mnext)?,
            nmfreed: u(o.sched_nmfreed)?,
            sched_free,
            p_free,
        })
    }
}

/// Most Ps whose free lists are read (GOMAXPROCS beyond it is not seen in practice; a
/// bigger `allp` length is taken as a bad read and yields no count).
const MAX_PROCS: u64 = 4096;

/// The offsets [`MemReader`] needs, all present.
#[derive(Debug, Clone, Copy)]
struct Layout {
    numgc: u64,
    pause_ns: u64,
    pause_total_ns: u64,
    last_gc_unix: u64,
    stacks_sys: u64,
    mspan_sys: u64,
    mcache_sys: u64,
    buckhash_sys: u64,
    gc_misc_sys: u64,
    other_sys: u64,
    /// `memstats.heapStats.stats[0]`, from the start of `memstats`.
    heap_stats: u64,
    /// Size of one `heapStatsDelta`.
    delta_size: u64,
    committed: u64,
    released: u64,
    in_heap: u64,
    in_stacks: u64,
    in_work_bufs: u64,
    in_ptr_scalar_bits: Option<u64>,
    tiny_alloc_count: u64,
    large_alloc: u64,
    large_alloc_count: u64,
    small_alloc_count: u64,
    large_free: u64,
    large_free_count: u64,
    small_free_count: u64,
    classes: usize,
    gc_percent: u64,
    memory_limit: u64,
    heap_marked: u64,
    heap_free: u64,
    total_alloc: u64,
    total_free: u64,
    mapped_ready: u64,
    gc_percent_heap_goal: u64,
    sweep_dist_min_trigger: u64,
    triggered: u64,
    spanalloc_inuse: u64,
    cachealloc_inuse: u64,
    /// Bytes of `gcController` to read (past its last field used).
    gcc_len: u64,
    /// The memory-limit heap goal's headroom, in percent of the goal (Go >= 1.21), else 0:
    /// Go 1.19 keeps a fixed 1 MiB (`memoryLimitHeapGoalHeadroom`).
    limit_headroom_percent: u64,
}

impl Layout {
    fn new(o: &GoOffsets) -> Option<Layout> {
        let u = |v: Option<u32>| v.map(u64::from);
        let small_alloc_count = u(o.hsd_small_alloc_count)?;
        let large_free = u(o.hsd_large_free)?;
        let small_free_count = u(o.hsd_small_free_count)?;
        let classes = usize::try_from(large_free.checked_sub(small_alloc_count)? / 8).ok()?;
        let inuse = u(o.fixalloc_inuse)?;
        Some(Layout {
            numgc: u64::from(o.mstats_numgc),
            pause_ns: u64::from(o.mstats_pause_ns),
            pause_total_ns: u(o.mstats_pause_total_ns)?,
            last_gc_unix: u64::from(o.mstats_last_gc_unix),
            stacks_sys: u(o.mstats_stacks_sys)?,
            mspan_sys: u(o.mstats_mspan_sys)?,
            mcache_sys: u(o.mstats_mcache_sys)?,
            buckhash_sys: u(o.mstats_buckhash_sys)?,
            gc_misc_sys: u(o.mstats_gc_misc_sys)?,
            other_sys: u(o.mstats_other_sys)?,
            heap_stats: u(o.mstats_heap_stats)? + u(o.chs_stats)?,
            // smallFreeCount is the last field and the struct is a multiple of 8 bytes.
            delta_size: small_free_count + 8 * classes as u64,
            committed: u(o.hsd_committed)?,
            released: u(o.hsd_released)?,
            in_heap: u(o.hsd_in_heap)?,
            in_stacks: u(o.hsd_in_stacks)?,
            in_work_bufs: u(o.hsd_in_work_bufs)?,
            in_ptr_scalar_bits: u(o.hsd_in_ptr_scalar_bits),
            tiny_alloc_count: u(o.hsd_tiny_alloc_count)?,
            large_alloc: u(o.hsd_large_alloc)?,
            large_alloc_count: u(o.hsd_large_alloc_count)?,
            small_alloc_count,
            large_free,
            large_free_count: u(o.hsd_large_free_count)?,
            small_free_count,
            classes,
            gc_percent: u(o.gcc_gc_percent)?,
            memory_limit: u(o.gcc_memory_limit)?,
            heap_marked: u(o.gcc_heap_marked)?,
            heap_free: u(o.gcc_heap_free)?,
            total_alloc: u(o.gcc_total_alloc)?,
            total_free: u(o.gcc_total_free)?,
            mapped_ready: u(o.gcc_mapped_ready)?,
            gc_percent_heap_goal: u(o.gcc_gc_percent_heap_goal)?,
            sweep_dist_min_trigger: u(o.gcc_sweep_dist_min_trigger)?,
            triggered: u(o.gcc_triggered)?,
            spanalloc_inuse: u(o.mheap_spanalloc)? + inuse,
            cachealloc_inuse: u(o.mheap_cachealloc)? + inuse,
            gcc_len: [
                o.gcc_gc_percent,
                o.gcc_memory_limit,
                o.gcc_heap_marked,
                o.gcc_heap_free,
                o.gcc_total_alloc,
                o.gcc_total_free,
                o.gcc_mapped_ready,
                o.gcc_gc_percent_heap_goal,
                o.gcc_sweep_dist_min_trigger,
                o.gcc_triggered,
            ]
            .into_iter()
            .flatten()
            .max()
            .map(u64::from)?
                + 8,
            limit_headroom_percent: 3,
        })
    }
}

/// Why memory statistics are not available for a binary (one line, for the attach log).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemError {
    #[error("struct offsets for heap statistics unknown for this Go version")]
    Offsets,
    #[error("runtime global {0} not found")]
    Global(&'static str),
    #[error("allocator size classes not found")]
    SizeClasses,
}

/// A process's Go heap, GC and scheduler settings at one read, with the meaning
/// client_golang gives the `runtime.MemStats` fields it exports (from runtime/metrics).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GoMemStats {
    /// `Alloc` = `HeapAlloc`: bytes of live heap objects (`/memory/classes/heap/objects`).
    pub heap_alloc: u64,
    /// `TotalAlloc`: cumulative bytes allocated (`/gc/heap/allocs:bytes`).
    pub total_alloc: u64,
    /// `Sys` (`/memory/classes/total`).
    pub sys: u64,
    /// `Mallocs`: objects allocated, tiny allocations included.
    pub mallocs: u64,
    /// `Frees`: objects freed, tiny allocations included.
    pub frees: u64,
    pub heap_sys: u64,
    pub heap_idle: u64,
    pub heap_inuse: u64,
    pub heap_released: u64,
    pub heap_objects: u64,
    pub stack_inuse: u64,
    pub stack_sys: u64,
    pub mspan_inuse: u64,
    pub mspan_sys: u64,
    pub mcache_inuse: u64,
    pub mcache_sys: u64,
    pub buck_hash_sys: u64,
    pub gc_sys: u64,
    pub other_sys: u64,
    /// `NextGC`: the heap goal (`/gc/heap/goal:bytes`).
    pub next_gc: u64,
    /// Unix time of the last GC, ns (0: none yet).
    pub last_gc_unix_ns: u64,
    /// Completed GC cycles since the process started (`NumGC`).
    pub num_gc: u64,
    /// Sum of all stop-the-world pauses since start, ns (`PauseTotalNs`).
    pub pause_total_ns: u64,
    /// min, 25%, 50%, 75%, max of the last (up to) 256 pauses, ns, as
    /// runtime/debug.ReadGCStats computes its `PauseQuantiles` (all 0 before the first GC).
    pub pause_quantiles_ns: [u64; 5],
    /// GOGC (negative: off).
    pub gogc: i64,
    /// GOMEMLIMIT, bytes ([`NO_MEMORY_LIMIT`] when not set).
    pub memory_limit: u64,
    /// GOMAXPROCS (`len(allp)`), when `allp` was found.
    pub gomaxprocs: Option<u64>,
    /// `runtime.NumGoroutine()`: goroutines that exist, system goroutines excluded,
    /// computed as the runtime's gcount does, when `sched` and `allgs` were found.
    pub goroutines: Option<i64>,
    /// Threads (Ms) the runtime has created and not yet freed: mcount, which is the
    /// length of `allm` that client_golang's go_threads counts via
    /// runtime.ThreadCreateProfile (the two differ only inside an exiting M's mexit).
    pub threads: Option<u64>,
}

impl MemReader {
    /// Prepares reading a process of `bin` (link-time addresses; `bias` is added at read).
    pub fn new(bin: &GoBinary, o: &GoOffsets) -> Result<MemReader, MemError> {
        let mut layout = Layout::new(o).ok_or(MemError::Offsets)?;
        if !bin.go_version().is_some_and(|v| v.at_least(1, 21)) {
            layout.limit_headroom_percent = 0;
        }
        let RuntimeGlobals {
            memstats,
            gc_controller,
            mheap,
            allp,
            sched,
            allgs,
        } = bin.runtime_globals(o);
        let sched = match (sched, allgs, SchedLayout::new(o)) {
            (Some(s), Some(g), Some(l)) => Some((s, g, l)),
            _ => None,
        };
        Ok(MemReader {
            sched,
            memstats: memstats.ok_or(MemError::Global("runtime.memstats"))?,
            gc_controller: gc_controller.ok_or(MemError::Global("runtime.gcController"))?,
            mheap: mheap.ok_or(MemError::Global("runtime.mheap_"))?,
            allp,
            size_classes: bin
                .size_classes(layout.classes)
                .ok_or(MemError::SizeClasses)?,
            o: layout,
        })
    }

    /// Reads the statistics of the process whose memory is `mem` (/proc/PID/mem), its
    /// executable loaded at `bias`. `None` when a read fails (the process exited).
    pub fn read(&self, mem: &File, bias: u64) -> Option<GoMemStats> {
        let o = &self.o;
        let ms = self.memstats + bias;
        let gcc = self.gc_controller + bias;
        // memstats up to the end of the pause ring and numgc in one read; the three heap
        // statistics generations in a second one.
        let ms_len = o
            .numgc
            .max(o.pause_ns + 8 * PAUSE_RING)
            .max(o.pause_total_ns)
            + 8;
        let msb = read(mem, ms, ms_len)?;
        let hsb = read(mem, ms + o.heap_stats, 3 * o.delta_size)?;
        let gcb = read(mem, gcc, o.gcc_len)?;
        let u = |b: &[u8], off: u64| -> u64 {
            let i = off as usize;
            b.get(i..i + 8)
                .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        };
        let u32_at = |b: &[u8], off: u64| -> u64 {
            let i = off as usize;
            b.get(i..i + 4).map_or(0, |s| {
                u64::from(u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
            })
        };
        // consistentHeapStats.unsafeRead: the sum of the three generations.
        let delta = |off: u64| -> u64 {
            (0..3).fold(0u64, |acc, g| {
                acc.wrapping_add(u(&hsb, g * o.delta_size + off))
            })
        };
        let committed = delta(o.committed);
        let released = delta(o.released);
        let in_heap = delta(o.in_heap);
        let in_stacks = delta(o.in_stacks);
        let in_work_bufs = delta(o.in_work_bufs);
        let in_ptr_scalar_bits = o.in_ptr_scalar_bits.map_or(0, delta);
        let tiny = delta(o.tiny_alloc_count);
        let (mut allocs, mut frees) = (delta(o.large_alloc_count), delta(o.large_free_count));
        let (mut allocated, mut freed) = (delta(o.large_alloc), delta(o.large_free));
        for (i, &size) in self.size_classes.iter().enumerate() {
            let na = delta(o.small_alloc_count + 8 * i as u64);
            let nf = delta(o.small_free_count + 8 * i as u64);
            allocs = allocs.wrapping_add(na);
            frees = frees.wrapping_add(nf);
            allocated = allocated.wrapping_add(na.wrapping_mul(u64::from(size)));
            freed = freed.wrapping_add(nf.wrapping_mul(u64::from(size)));
        }
        let in_objects = allocated.wrapping_sub(freed);
        let stacks_sys = u(&msb, o.stacks_sys);
        let mspan_sys = u(&msb, o.mspan_sys);
        let mcache_sys = u(&msb, o.mcache_sys);
        let buckhash_sys = u(&msb, o.buckhash_sys);
        let gc_misc_sys = u(&msb, o.gc_misc_sys);
        let other_sys = u(&msb, o.other_sys);
        let mheap = self.mheap + bias;
        let mspan_inuse = read_u64(mem, mheap + o.spanalloc_inuse)?;
        let mcache_inuse = read_u64(mem, mheap + o.cachealloc_inuse)?;
        let heap_free = committed
            .wrapping_sub(in_heap)
            .wrapping_sub(in_stacks)
            .wrapping_sub(in_work_bufs)
            .wrapping_sub(in_ptr_scalar_bits);

        let num_gc = u32_at(&msb, o.numgc);
        let ring: Vec<u64> = (0..num_gc.min(PAUSE_RING))
            .map(|i| u(&msb, o.pause_ns + 8 * ((num_gc - 1 - i) % PAUSE_RING)))
            .collect();
        let gomaxprocs = match self.allp {
            Some(a) => Some(read_u64(mem, a + bias + 8)?),
            None => None,
        };
        let (goroutines, threads) = match &self.sched {
            Some((sched, allgs, l)) => self.read_sched(mem, bias, *sched, *allgs, l),
            None => (None, None),
        };
        let gc_percent = u32_at(&gcb, o.gc_percent) as u32 as i32;
        Some(GoMemStats {
            heap_alloc: in_objects,
            total_alloc: allocated,
            sys: committed
                .wrapping_add(released)
                .wrapping_add(stacks_sys)
                .wrapping_add(mspan_sys)
                .wrapping_add(mcache_sys)
                .wrapping_add(buckhash_sys)
                .wrapping_add(gc_misc_sys)
                .wrapping_add(other_sys),
            mallocs: allocs.wrapping_add(tiny),
            frees: frees.wrapping_add(tiny),
            heap_sys: in_heap.wrapping_add(released).wrapping_add(heap_free),
            heap_idle: released.wrapping_add(heap_free),
            heap_inuse: in_heap,
            heap_released: released,
            heap_objects: allocs.wrapping_sub(frees),
            stack_inuse: in_stacks,
            stack_sys: in_stacks.wrapping_add(stacks_sys),
            mspan_inuse,
            mspan_sys,
            mcache_inuse,
            mcache_sys,
            buck_hash_sys: buckhash_sys,
            gc_sys: in_work_bufs
                .wrapping_add(in_ptr_scalar_bits)
                .wrapping_add(gc_misc_sys),
            other_sys,
            next_gc: heap_goal(&gcb, o, &u),
            last_gc_unix_ns: u(&msb, o.last_gc_unix),
            num_gc,
            pause_total_ns: u(&msb, o.pause_total_ns),
            pause_quantiles_ns: pause_quantiles(ring),
            gogc: i64::from(gc_percent),
            memory_limit: u(&gcb, o.memory_limit),
            gomaxprocs,
            goroutines,
            threads,
        })
    }

    /// runtime.gcount (proc.go, Go 1.21-1.27): `allglen` minus the goroutines on the
    /// global and per-P free lists minus the system goroutines, at least 1; and mcount:
    /// `sched.mnext - sched.nmfreed`. The words are read one after another while the
    /// program runs, as gcount itself reads them without a lock.
    fn read_sched(
        &self,
        mem: &File,
        bias: u64,
        sched: u64,
        allgs: u64,
        l: &SchedLayout,
    ) -> (Option<i64>, Option<u64>) {
        let i32_at = |b: &[u8], off: u64| -> i64 {
            let i = off as usize;
            b.get(i..i + 4).map_or(0, |s| {
                i64::from(i32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
            })
        };
        let len = l
            .sched_free
            .iter()
            .copied()
            .chain([l.ngsys, l.mnext, l.nmfreed])
            .max()
            .unwrap_or(0)
            + 8;
        let Some(sb) = read(mem, sched + bias, len) else {
            return (None, None);
        };
        let word = |off: u64| -> i64 {
            let i = off as usize;
            sb.get(i..i + 8)
                .map_or(0, |s| i64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
        };
        let threads = u64::try_from(word(l.mnext).wrapping_sub(word(l.nmfreed)) as i32).ok();
        let goroutines = (|| {
            // allglen is stored right after each append to allgs, so len(allgs) is it.
            let allglen = read_u64(mem, allgs + bias + 8)?;
            let mut n = (allglen as i32 as i64) - i32_at(&sb, l.ngsys);
            for &off in &l.sched_free {
                n -= i32_at(&sb, off);
            }
            let allp = self.allp? + bias;
            let (ptr, np) = (read_u64(mem, allp)?, read_u64(mem, allp + 8)?);
            if np > MAX_PROCS {
                return None;
            }
            let ps = read(mem, ptr, np * 8)?;
            for p in ps.chunks_exact(8) {
                let p = u64::from_le_bytes(p.try_into().ok()?);
                let mut b = [0u8; 4];
                mem.read_exact_at(&mut b, p + l.p_free).ok()?;
                n -= i64::from(i32::from_le_bytes(b));
            }
            Some(n.max(1))
        })();
        (goroutines, threads)
    }
}

/// `gcControllerState.heapGoal` (mgcpacer.go, the same from Go 1.19 to 1.27 but for the
/// memory-limit goal's headroom).
fn heap_goal(gcb: &[u8], o: &Layout, u: &dyn Fn(&[u8], u64) -> u64) -> u64 {
    let mut goal = u(gcb, o.gc_percent_heap_goal);
    let limit_goal = memory_limit_heap_goal(
        u(gcb, o.memory_limit),
        u(gcb, o.heap_free),
        u(gcb, o.total_alloc).wrapping_sub(u(gcb, o.total_free)),
        u(gcb, o.mapped_ready),
        u(gcb, o.heap_marked),
        o.limit_headroom_percent,
    );
    if limit_goal < goal {
        return limit_goal;
    }
    goal = goal.max(u(gcb, o.sweep_dist_min_trigger));
    // minRunway: the goal stays at least 64 KiB past the point the cycle triggered.
    let triggered = u(gcb, o.triggered);
    if triggered != u64::MAX && goal < triggered.wrapping_add(64 << 10) {
        goal = triggered + (64 << 10);
    }
    goal
}

/// `gcControllerState.memoryLimitHeapGoal`; its headroom is `headroom_percent` of the goal
/// and at least 1 MiB (Go >= 1.21: 3 %; Go 1.19: 0, a fixed 1 MiB).
fn memory_limit_heap_goal(
    limit: u64,
    heap_free: u64,
    heap_alloc: u64,
    mapped_ready: u64,
    heap_marked: u64,
    headroom_percent: u64,
) -> u64 {
    if heap_free.saturating_add(heap_alloc) > mapped_ready {
        // A torn read (the runtime retries here); no limit-based goal this time.
        return u64::MAX;
    }
    let non_heap = mapped_ready - heap_free - heap_alloc;
    let overage = mapped_ready.saturating_sub(limit);
    if non_heap.saturating_add(overage) >= limit {
        return heap_marked;
    }
    let goal = limit - (non_heap + overage);
    let headroom = (goal / 100 * headroom_percent).max(1 << 20);
    let goal = if goal < headroom || goal - headroom < headroom {
        headroom
    } else {
        goal - headroom
    };
    goal.max(heap_marked)
}

/// `runtime/debug.ReadGCStats`' `PauseQuantiles` of length 5 over the pause history.
fn pause_quantiles(mut pauses: Vec<u64>) -> [u64; 5] {
    if pauses.is_empty() {
        return [0; 5];
    }
    pauses.sort_unstable();
    let n = pauses.len();
    let mut q = [0u64; 5];
    for (i, v) in q.iter_mut().enumerate().take(4) {
        *v = pauses[n * i / 4];
    }
    q[4] = pauses[n - 1];
    q
}

fn read(mem: &File, addr: u64, len: u64) -> Option<Vec<u8>> {
    let mut b = vec![0u8; usize::try_from(len).ok()?];
    mem.read_exact_at(&mut b, addr).ok()?;
    Some(b)
}

fn read_u64(mem: &File, addr: u64) -> Option<u64> {
    let mut b = [0u8; 8];
    mem.read_exact_at(&mut b, addr).ok()?;
    Some(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_as_read_gc_stats() {
        assert_eq!(pause_quantiles(vec![]), [0; 5]);
        assert_eq!(pause_quantiles(vec![5]), [5; 5]);
        // n=5: indexes 0, 1, 2, 3 (5*i/4) and the max.
        assert_eq!(
            pause_quantiles(vec![50, 10, 40, 20, 30]),
            [10, 20, 30, 40, 50]
        );
        assert_eq!(pause_quantiles(vec![3, 1]), [1, 1, 3, 3, 3]);
    }

    #[test]
    fn limit_goal_without_limit_is_far_away() {
        let g = memory_limit_heap_goal(NO_MEMORY_LIMIT, 1 << 20, 4 << 20, 8 << 20, 2 << 20, 3);
        assert!(g > 1 << 60);
    }

    #[test]
    fn limit_goal_keeps_headroom() {
        // 100 MiB limit, 10 MiB of non-heap memory: 90 MiB minus 3% headroom.
        let mib = 1u64 << 20;
        let g = memory_limit_heap_goal(100 * mib, 0, 20 * mib, 30 * mib, 5 * mib, 3);
        let goal = 90 * mib;
        assert_eq!(g, goal - goal / 100 * 3);
        // Go 1.19: a fixed 1 MiB.
        let g = memory_limit_heap_goal(100 * mib, 0, 20 * mib, 30 * mib, 5 * mib, 0);
        assert_eq!(g, goal - mib);
        // Over the limit already: the goal falls back to the marked heap.
        assert_eq!(
            memory_limit_heap_goal(10 * mib, 0, 20 * mib, 40 * mib, 5 * mib, 3),
            5 * mib
        );
    }
}
