//! The Go struct fields the agent reads, in one list for both DWARF readers: the agent's
//! (`GoOffsets::from_layouts` in mod.rs) and the table generator's
//! (xtask/src/gooffsets.rs includes this file with `#[path]`, so it must stay plain data
//! with no imports).
//!
//! Struct names are as Go's DWARF spells them: the full import path, then the type
//! name (`runtime.g`, `net/http.conn`, `internal/poll.FD`).

/// `(GoOffsets field, struct, member, required)`. A field that is not required is an
/// `Option<u32>` in `GoOffsets`: absent from some Go releases (`g.parentGoid` before 1.21)
/// or from some programs (the net/http and net types are only in programs that link them).
pub(super) const OFFSET_FIELDS: &[(&str, &str, &str, bool)] = &[
    ("g_goid", "runtime.g", "goid", true),
    ("g_m", "runtime.g", "m", true),
    ("g_atomicstatus", "runtime.g", "atomicstatus", true),
    ("g_gopc", "runtime.g", "gopc", true),
    ("g_startpc", "runtime.g", "startpc", true),
    ("g_parent_goid", "runtime.g", "parentGoid", false),
    ("m_procid", "runtime.m", "procid", true),
    ("m_curg", "runtime.m", "curg", true),
    ("mstats_numgc", "runtime.mstats", "numgc", true),
    ("mstats_pause_ns", "runtime.mstats", "pause_ns", true),
    (
        "mstats_last_gc_unix",
        "runtime.mstats",
        "last_gc_unix",
        true,
    ),
    (
        "gc_controller_heap_live",
        "runtime.gcControllerState",
        "heapLive",
        true,
    ),
    // Heap statistics as runtime/metrics computes them (src/runtime/metrics.go:
    // heapStatsAggregate, sysStatsAggregate) and the GC pacer's heap goal
    // (mgcpacer.go: heapGoalInternal). Optional: not needed for goroutines and probes,
    // and memory statistics are simply not exported when one is missing.
    (
        "mstats_pause_total_ns",
        "runtime.mstats",
        "pause_total_ns",
        false,
    ),
    ("mstats_pause_end", "runtime.mstats", "pause_end", false),
    ("mstats_numforcedgc", "runtime.mstats", "numforcedgc", false),
    (
        "mstats_last_gc_nanotime",
        "runtime.mstats",
        "last_gc_nanotime",
        false,
    ),
    ("mstats_heap_stats", "runtime.mstats", "heapStats", false),
    ("mstats_stacks_sys", "runtime.mstats", "stacks_sys", false),
    ("mstats_mspan_sys", "runtime.mstats", "mspan_sys", false),
    ("mstats_mcache_sys", "runtime.mstats", "mcache_sys", false),
    (
        "mstats_buckhash_sys",
        "runtime.mstats",
        "buckhash_sys",
        false,
    ),
    ("mstats_gc_misc_sys", "runtime.mstats", "gcMiscSys", false),
    ("mstats_other_sys", "runtime.mstats", "other_sys", false),
    ("chs_stats", "runtime.consistentHeapStats", "stats", false),
    (
        "hsd_committed",
        "runtime.heapStatsDelta",
        "committed",
        false,
    ),
    ("hsd_released", "runtime.heapStatsDelta", "released", false),
    ("hsd_in_heap", "runtime.heapStatsDelta", "inHeap", false),
    ("hsd_in_stacks", "runtime.heapStatsDelta", "inStacks", false),
    (
        "hsd_in_work_bufs",
        "runtime.heapStatsDelta",
        "inWorkBufs",
        false,
    ),
    (
        "hsd_in_ptr_scalar_bits",
        "runtime.heapStatsDelta",
        "inPtrScalarBits",
        false,
    ),
    (
        "hsd_tiny_alloc_count",
        "runtime.heapStatsDelta",
        "tinyAllocCount",
        false,
    ),
    (
        "hsd_large_alloc",
        "runtime.heapStatsDelta",
        "largeAlloc",
        false,
    ),
    (
        "hsd_large_alloc_count",
        "runtime.heapStatsDelta",
        "largeAllocCount",
        false,
    ),
    (
        "hsd_small_alloc_count",
        "runtime.heapStatsDelta",
        "smallAllocCount",
        false,
    ),
    (
        "hsd_large_free",
        "runtime.heapStatsDelta",
        "largeFree",
        false,
    ),
    (
        "hsd_large_free_count",
        "runtime.heapStatsDelta",
        "largeFreeCount",
        false,
    ),
    (
        "hsd_small_free_count",
        "runtime.heapStatsDelta",
        "smallFreeCount",
        false,
    ),
    (
        "gcc_gc_percent",
        "runtime.gcControllerState",
        "gcPercent",
        false,
    ),
    (
        "gcc_memory_limit",
        "runtime.gcControllerState",
        "memoryLimit",
        false,
    ),
    (
        "gcc_heap_marked",
        "runtime.gcControllerState",
        "heapMarked",
        false,
    ),
    (
        "gcc_heap_in_use",
        "runtime.gcControllerState",
        "heapInUse",
        false,
    ),
    (
        "gcc_heap_free",
        "runtime.gcControllerState",
        "heapFree",
        false,
    ),
    (
        "gcc_heap_released",
        "runtime.gcControllerState",
        "heapReleased",
        false,
    ),
    (
        "gcc_total_alloc",
        "runtime.gcControllerState",
        "totalAlloc",
        false,
    ),
    (
        "gcc_total_free",
        "runtime.gcControllerState",
        "totalFree",
        false,
    ),
    (
        "gcc_mapped_ready",
        "runtime.gcControllerState",
        "mappedReady",
        false,
    ),
    (
        "gcc_gc_percent_heap_goal",
        "runtime.gcControllerState",
        "gcPercentHeapGoal",
        false,
    ),
    (
        "gcc_sweep_dist_min_trigger",
        "runtime.gcControllerState",
        "sweepDistMinTrigger",
        false,
    ),
    (
        "gcc_triggered",
        "runtime.gcControllerState",
        "triggered",
        false,
    ),
    (
        "gcc_heap_scan",
        "runtime.gcControllerState",
        "heapScan",
        false,
    ),
    (
        "gcc_last_heap_goal",
        "runtime.gcControllerState",
        "lastHeapGoal",
        false,
    ),
    ("mheap_sweepgen", "runtime.mheap", "sweepgen", false),
    ("mheap_pages_in_use", "runtime.mheap", "pagesInUse", false),
    ("mheap_pages_swept", "runtime.mheap", "pagesSwept", false),
    (
        "mheap_pages_swept_basis",
        "runtime.mheap",
        "pagesSweptBasis",
        false,
    ),
    (
        "mheap_sweep_heap_live_basis",
        "runtime.mheap",
        "sweepHeapLiveBasis",
        false,
    ),
    (
        "mheap_sweep_pages_per_byte",
        "runtime.mheap",
        "sweepPagesPerByte",
        false,
    ),
    (
        "mheap_reclaim_index",
        "runtime.mheap",
        "reclaimIndex",
        false,
    ),
    (
        "mheap_reclaim_credit",
        "runtime.mheap",
        "reclaimCredit",
        false,
    ),
    ("mheap_spanalloc", "runtime.mheap", "spanalloc", false),
    ("mheap_cachealloc", "runtime.mheap", "cachealloc", false),
    ("fixalloc_inuse", "runtime.fixalloc", "inuse", false),
    // The scheduler counts behind runtime.NumGoroutine (proc.go: gcount = allglen minus
    // the free lists' sizes minus ngsys) and the thread count (mcount = mnext - nmfreed,
    // the length of allm that runtime.ThreadCreateProfile walks). The free lists' counts
    // sit in anonymous structs, which Go's DWARF names by their spelled-out type; their
    // shape changed in Go 1.25 (a `size` in each gList instead of one `n`).
    ("sched_lock", "runtime.schedt", "lock", false),
    ("sched_mnext", "runtime.schedt", "mnext", false),
    ("sched_nmfreed", "runtime.schedt", "nmfreed", false),
    ("sched_nmidle", "runtime.schedt", "nmidle", false),
    (
        "sched_nmidlelocked",
        "runtime.schedt",
        "nmidlelocked",
        false,
    ),
    ("sched_nmsys", "runtime.schedt", "nmsys", false),
    ("sched_ngsys", "runtime.schedt", "ngsys", false),
    ("sched_gfree", "runtime.schedt", "gFree", false),
    (
        "sched_gfree_n",
        "struct { runtime.lock runtime.mutex; runtime.stack runtime.gList; runtime.noStack runtime.gList; runtime.n int32 }",
        "n",
        false,
    ),
    (
        "sched_gfree_stack",
        "struct { runtime.lock runtime.mutex; runtime.stack runtime.gList; runtime.noStack runtime.gList }",
        "stack",
        false,
    ),
    (
        "sched_gfree_nostack",
        "struct { runtime.lock runtime.mutex; runtime.stack runtime.gList; runtime.noStack runtime.gList }",
        "noStack",
        false,
    ),
    ("p_gfree", "runtime.p", "gFree", false),
    (
        "p_gfree_n",
        "struct { runtime.gList; runtime.n int32 }",
        "n",
        false,
    ),
    ("glist_size", "runtime.gList", "size", false),
    ("http_conn_rwc", "net/http.conn", "rwc", false),
    ("persist_conn_conn", "net/http.persistConn", "conn", false),
    ("netfd_pfd", "net.netFD", "pfd", false),
    ("poll_fd_sysfd", "internal/poll.FD", "Sysfd", false),
];
