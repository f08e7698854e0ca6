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
    ("http_conn_rwc", "net/http.conn", "rwc", false),
    ("persist_conn_conn", "net/http.persistConn", "conn", false),
    ("netfd_pfd", "net.netFD", "pfd", false),
    ("poll_fd_sysfd", "internal/poll.FD", "Sysfd", false),
];
