//! Userspace analysis of a Go executable: everything the agent must know about a Go program
//! before it can put uprobes on it, read from the file alone.
//!
//! - [`GoBinary::build_info`]: Go version and modules (`.go.buildinfo`), as `go version -m`.
//! - Functions from the pclntab (works stripped): [`GoBinary::find_function`],
//!   [`GoBinary::func_for_pc`], [`GoBinary::functions`], and source positions
//!   [`GoBinary::file_line`] / [`GoBinary::creation_site`] (for `g.gopc`).
//! - [`GoBinary::ret_offsets`]: file offsets of every RET of a function, for return-side
//!   uprobes (uretprobes break Go; see `disasm.rs`).
//! - [`GoBinary::offsets`]: field offsets of runtime structs (`g.goid`, `m.procid`, ...), from
//!   DWARF when present, else from the checked-in per-version table (`offsets.rs`, generated
//!   by `xtask/src/gooffsets.rs`).
//!
//! Addresses are link-time virtual addresses ("va") as in the ELF file. uprobes attach by file
//! offset ([`GoBinary::file_offset`]); in a running process a va maps to `va + bias`, where
//! the bias is 0 for non-PIE executables and, for PIE, the mapping start of the segment minus
//! its page-aligned `p_vaddr` (see /proc/PID/maps).
//!
//! Memory: the file is memory-mapped and read in place. The only index built is the name
//! hash table (16 bytes per function, built on first name lookup, which `open` does to verify
//! runtime.text); DWARF is inflated one compilation unit at a time and only on request.
//!
//! Split by format: `elf` (segments, sections, symbols, relocations), `buildinfo`, `pclntab`,
//! `text` (pclntab/moduledata location and runtime.text), `disasm` (RETs), `dwarf` (struct
//! layouts), `offsets` (the generated table).

mod buildinfo;
mod disasm;
mod dwarf;
mod elf;
mod fields;
mod offsets;
mod pclntab;
mod text;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;

pub use buildinfo::{BuildInfo, GoVersion, Module};
pub use disasm::FuncExits;
pub use dwarf::StructLayout;
pub use elf::Arch;
pub use text::TextSource;

use elf::ElfInfo;
use fields::OFFSET_FIELDS;
use pclntab::Pclntab;

/// Why a binary cannot be analysed. Messages are one line, lowercase.
#[derive(Debug, thiserror::Error)]
pub enum GoBinError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not an ELF file")]
    NotElf,
    #[error("not a Go binary (no Go build info or pclntab)")]
    NotGo,
    #[error("unsupported binary: {0}")]
    Unsupported(String),
    #[error("malformed Go binary: {0}")]
    Malformed(String),
    #[error(
        "cannot verify runtime.text: no candidate ({0}) puts a stack-check prologue at runtime.main, newproc1, gcStart or mallocgc"
    )]
    TextUnverified(String),
    #[error("cannot decode {func} at {addr:#x}: invalid instruction")]
    Decode { func: String, addr: u64 },
    #[error("function {0} is outside the file's mapped text")]
    NoCode(String),
    #[error("dwarf: {0}")]
    Dwarf(String),
    #[error("no runtime struct offsets for Go {version}: {why}")]
    NoOffsets { version: String, why: String },
}

/// A Go function from the pclntab. `entry` and `end` are virtual addresses; `end` is the next
/// function's entry (so it includes alignment padding).
///
/// Names are as the pclntab stores them, which is not always unique: an assembly function
/// called from Go has an ABIInternal wrapper of the same name, and a Go function called from
/// assembly has an ABI0 wrapper of the same name. `.symtab` calls the ABI0 one of the pair
/// `NAME.abi0`, and so does [`GoBinary::find_function`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Func<'a> {
    pub name: &'a str,
    pub entry: u64,
    pub end: u64,
    /// Implemented in assembly (`abi.FuncFlagAsm`).
    pub is_asm: bool,
    index: u32,
}

/// Offsets of the Go struct fields the agent reads, in bytes from the struct start.
/// Field names follow the Go source (src/runtime/runtime2.go, mstats.go, mgcpacer.go;
/// src/net/http/server.go, transport.go; src/net/fd_posix.go; src/internal/poll/fd_unix.go).
/// How each is read from DWARF: `fields.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoOffsets {
    /// `runtime.g.goid` (uint64).
    pub g_goid: u32,
    /// `runtime.g.m` (*m).
    pub g_m: u32,
    /// `runtime.g.atomicstatus` (uint32; `atomic.Uint32` since 1.20).
    pub g_atomicstatus: u32,
    /// `runtime.g.gopc`: pc of the `go` statement that created the goroutine.
    pub g_gopc: u32,
    /// `runtime.g.startpc`: pc of the goroutine function.
    pub g_startpc: u32,
    /// `runtime.g.parentGoid` (Go >= 1.21).
    pub g_parent_goid: Option<u32>,
    /// `runtime.m.procid`: the thread id.
    pub m_procid: u32,
    /// `runtime.m.curg`: the user goroutine running on this m.
    pub m_curg: u32,
    /// `runtime.mstats.numgc` (`runtime.memstats` is of this type).
    pub mstats_numgc: u32,
    /// `runtime.mstats.pause_ns` ([256]uint64 ring of GC pause durations).
    pub mstats_pause_ns: u32,
    /// `runtime.mstats.last_gc_unix`.
    pub mstats_last_gc_unix: u32,
    /// `runtime.gcControllerState.heapLive` (`runtime.gcController` is of this type).
    pub gc_controller_heap_live: u32,
    /// Heap, GC-pacer and allocator fields for the memory statistics (`gomem.rs`);
    /// named `<struct>_<member>` after fields.rs (`hsd` = `runtime.heapStatsDelta`,
    /// `gcc` = `runtime.gcControllerState`, `chs` = `runtime.consistentHeapStats`).
    pub mstats_pause_total_ns: Option<u32>,
    pub mstats_pause_end: Option<u32>,
    pub mstats_numforcedgc: Option<u32>,
    pub mstats_last_gc_nanotime: Option<u32>,
    pub mstats_heap_stats: Option<u32>,
    pub mstats_stacks_sys: Option<u32>,
    pub mstats_mspan_sys: Option<u32>,
    pub mstats_mcache_sys: Option<u32>,
    pub mstats_buckhash_sys: Option<u32>,
    pub mstats_gc_misc_sys: Option<u32>,
    pub mstats_other_sys: Option<u32>,
    pub chs_stats: Option<u32>,
    pub hsd_committed: Option<u32>,
    pub hsd_released: Option<u32>,
    pub hsd_in_heap: Option<u32>,
    pub hsd_in_stacks: Option<u32>,
    pub hsd_in_work_bufs: Option<u32>,
    pub hsd_in_ptr_scalar_bits: Option<u32>,
    pub hsd_tiny_alloc_count: Option<u32>,
    pub hsd_large_alloc: Option<u32>,
    pub hsd_large_alloc_count: Option<u32>,
    pub hsd_small_alloc_count: Option<u32>,
    pub hsd_large_free: Option<u32>,
    pub hsd_large_free_count: Option<u32>,
    pub hsd_small_free_count: Option<u32>,
    pub gcc_gc_percent: Option<u32>,
    pub gcc_memory_limit: Option<u32>,
    pub gcc_heap_marked: Option<u32>,
    pub gcc_heap_in_use: Option<u32>,
    pub gcc_heap_free: Option<u32>,
    pub gcc_heap_released: Option<u32>,
    pub gcc_total_alloc: Option<u32>,
    pub gcc_total_free: Option<u32>,
    pub gcc_mapped_ready: Option<u32>,
    pub gcc_gc_percent_heap_goal: Option<u32>,
    pub gcc_sweep_dist_min_trigger: Option<u32>,
    pub gcc_triggered: Option<u32>,
    pub gcc_heap_scan: Option<u32>,
    pub gcc_last_heap_goal: Option<u32>,
    pub mheap_sweepgen: Option<u32>,
    pub mheap_pages_in_use: Option<u32>,
    pub mheap_pages_swept: Option<u32>,
    pub mheap_pages_swept_basis: Option<u32>,
    pub mheap_sweep_heap_live_basis: Option<u32>,
    pub mheap_sweep_pages_per_byte: Option<u32>,
    pub mheap_reclaim_index: Option<u32>,
    pub mheap_reclaim_credit: Option<u32>,
    pub mheap_spanalloc: Option<u32>,
    pub mheap_cachealloc: Option<u32>,
    pub fixalloc_inuse: Option<u32>,
    /// Scheduler fields for the goroutine and thread counts (`gomem.rs`): `runtime.schedt`
    /// members; `sched_gfree_n` / `p_gfree_n` (Go < 1.25) and `sched_gfree_stack`,
    /// `sched_gfree_nostack`, `glist_size` (Go >= 1.25) are inside `gFree`.
    pub sched_lock: Option<u32>,
    pub sched_mnext: Option<u32>,
    pub sched_nmfreed: Option<u32>,
    pub sched_nmidle: Option<u32>,
    pub sched_nmidlelocked: Option<u32>,
    pub sched_nmsys: Option<u32>,
    pub sched_ngsys: Option<u32>,
    pub sched_gfree: Option<u32>,
    pub sched_gfree_n: Option<u32>,
    pub sched_gfree_stack: Option<u32>,
    pub sched_gfree_nostack: Option<u32>,
    pub p_gfree: Option<u32>,
    pub p_gfree_n: Option<u32>,
    pub glist_size: Option<u32>,
    /// `net/http.conn.rwc`: the server connection's `net.Conn` (an interface: itab, data).
    /// This and the three below can be `None` when read from the DWARF of a program that
    /// does not link net/http; table rows have them for every release.
    pub http_conn_rwc: Option<u32>,
    /// `net/http.persistConn.conn`: a client connection's `net.Conn`.
    pub persist_conn_conn: Option<u32>,
    /// `net.netFD.pfd` (an `internal/poll.FD`), in the netFD a `*net.TCPConn` points to.
    pub netfd_pfd: Option<u32>,
    /// `internal/poll.FD.Sysfd` (int): the socket's file descriptor.
    pub poll_fd_sysfd: Option<u32>,
}

/// Where [`GoBinary::offsets_with_source`] found the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetsSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The checked-in table row for this `(major, minor)` release.
    Table { major: u32, minor: u32 },
}

impl GoOffsets {
    /// The checked-in offsets for a Go release (by major.minor; struct layouts do not change
    /// in patch releases).
    pub fn for_version(v: &GoVersion) -> Option<GoOffsets> {
        offsets::TABLE
            .iter()
            .find(|(mm, _, _)| *mm == (v.major, v.minor))
            .map(|(_, _, o)| *o)
    }

    /// The Go releases the table covers, as `(major, minor)`.
    pub fn table_versions() -> impl Iterator<Item = (u32, u32)> {
        offsets::TABLE.iter().map(|(mm, _, _)| *mm)
    }

    fn from_layouts(l: &BTreeMap<String, StructLayout>) -> Option<GoOffsets> {
        let get = |field: &str| -> Option<Option<u32>> {
            let (_, s, m, required) = OFFSET_FIELDS.iter().find(|f| f.0 == field)?;
            let v = l
                .get(*s)
                .and_then(|s| s.members.get(*m))
                .and_then(|&v| u32::try_from(v).ok());
            match (v, required) {
                (None, true) => None,
                (v, _) => Some(v),
            }
        };
        Some(GoOffsets {
            g_goid: get("g_goid")??,
            g_m: get("g_m")??,
            g_atomicstatus: get("g_atomicstatus")??,
            g_gopc: get("g_gopc")??,
            g_startpc: get("g_startpc")??,
            g_parent_goid: get("g_parent_goid")?,
            m_procid: get("m_procid")??,
            m_curg: get("m_curg")??,
            mstats_numgc: get("mstats_numgc")??,
            mstats_pause_ns: get("mstats_pause_ns")??,
            mstats_last_gc_unix: get("mstats_last_gc_unix")??,
            gc_controller_heap_live: get("gc_controller_heap_live")??,
            mstats_pause_total_ns: get("mstats_pause_total_ns")?,
            mstats_pause_end: get("mstats_pause_end")?,
            mstats_numforcedgc: get("mstats_numforcedgc")?,
            mstats_last_gc_nanotime: get("mstats_last_gc_nanotime")?,
            mstats_heap_stats: get("mstats_heap_stats")?,
            mstats_stacks_sys: get("mstats_stacks_sys")?,
            mstats_mspan_sys: get("mstats_mspan_sys")?,
            mstats_mcache_sys: get("mstats_mcache_sys")?,
            mstats_buckhash_sys: get("mstats_buckhash_sys")?,
            mstats_gc_misc_sys: get("mstats_gc_misc_sys")?,
            mstats_other_sys: get("mstats_other_sys")?,
            chs_stats: get("chs_stats")?,
            hsd_committed: get("hsd_committed")?,
            hsd_released: get("hsd_released")?,
            hsd_in_heap: get("hsd_in_heap")?,
            hsd_in_stacks: get("hsd_in_stacks")?,
            hsd_in_work_bufs: get("hsd_in_work_bufs")?,
            hsd_in_ptr_scalar_bits: get("hsd_in_ptr_scalar_bits")?,
            hsd_tiny_alloc_count: get("hsd_tiny_alloc_count")?,
            hsd_large_alloc: get("hsd_large_alloc")?,
            hsd_large_alloc_count: get("hsd_large_alloc_count")?,
            hsd_small_alloc_count: get("hsd_small_alloc_count")?,
            hsd_large_free: get("hsd_large_free")?,
            hsd_large_free_count: get("hsd_large_free_count")?,
            hsd_small_free_count: get("hsd_small_free_count")?,
            gcc_gc_percent: get("gcc_gc_percent")?,
            gcc_memory_limit: get("gcc_memory_limit")?,
            gcc_heap_marked: get("gcc_heap_marked")?,
            gcc_heap_in_use: get("gcc_heap_in_use")?,
            gcc_heap_free: get("gcc_heap_free")?,
            gcc_heap_released: get("gcc_heap_released")?,
            gcc_total_alloc: get("gcc_total_alloc")?,
            gcc_total_free: get("gcc_total_free")?,
            gcc_mapped_ready: get("gcc_mapped_ready")?,
            gcc_gc_percent_heap_goal: get("gcc_gc_percent_heap_goal")?,
            gcc_sweep_dist_min_trigger: get("gcc_sweep_dist_min_trigger")?,
            gcc_triggered: get("gcc_triggered")?,
            gcc_heap_scan: get("gcc_heap_scan")?,
            gcc_last_heap_goal: get("gcc_last_heap_goal")?,
            mheap_sweepgen: get("mheap_sweepgen")?,
            mheap_pages_in_use: get("mheap_pages_in_use")?,
            mheap_pages_swept: get("mheap_pages_swept")?,
            mheap_pages_swept_basis: get("mheap_pages_swept_basis")?,
            mheap_sweep_heap_live_basis: get("mheap_sweep_heap_live_basis")?,
            mheap_sweep_pages_per_byte: get("mheap_sweep_pages_per_byte")?,
            mheap_reclaim_index: get("mheap_reclaim_index")?,
            mheap_reclaim_credit: get("mheap_reclaim_credit")?,
            mheap_spanalloc: get("mheap_spanalloc")?,
            mheap_cachealloc: get("mheap_cachealloc")?,
            fixalloc_inuse: get("fixalloc_inuse")?,
            sched_lock: get("sched_lock")?,
            sched_mnext: get("sched_mnext")?,
            sched_nmfreed: get("sched_nmfreed")?,
            sched_nmidle: get("sched_nmidle")?,
            sched_nmidlelocked: get("sched_nmidlelocked")?,
            sched_nmsys: get("sched_nmsys")?,
            sched_ngsys: get("sched_ngsys")?,
            sched_gfree: get("sched_gfree")?,
            sched_gfree_n: get("sched_gfree_n")?,
            sched_gfree_stack: get("sched_gfree_stack")?,
            sched_gfree_nostack: get("sched_gfree_nostack")?,
            p_gfree: get("p_gfree")?,
            p_gfree_n: get("p_gfree_n")?,
            glist_size: get("glist_size")?,
            http_conn_rwc: get("http_conn_rwc")?,
            persist_conn_conn: get("persist_conn_conn")?,
            netfd_pfd: get("netfd_pfd")?,
            poll_fd_sysfd: get("poll_fd_sysfd")?,
        })
    }
}

/// An opened Go executable. Cheap to keep around: a file mapping plus small indexes.
pub struct GoBinary {
    path: PathBuf,
    map: Mmap,
    elf: ElfInfo,
    build_info: Option<BuildInfo>,
    version: Option<GoVersion>,
    pcln: Pclntab,
    moduledata: Option<u64>,
    text: u64,
    text_source: TextSource,
    /// `(fnv1a(name), function index)`, sorted; built on first name lookup.
    names: OnceLock<Vec<(u64, u32)>>,
}

impl std::fmt::Debug for GoBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoBinary")
            .field("path", &self.path)
            .field("arch", &self.elf.arch)
            .field("version", &self.version.as_ref().map(|v| v.raw.as_str()))
            .field("functions", &self.pcln.nfunc)
            .field("runtime_text", &format_args!("{:#x}", self.text))
            .field("text_source", &self.text_source)
            .finish()
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &c| {
        (h ^ u64::from(c)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl GoBinary {
    /// Maps and analyses `path`. Fails with [`GoBinError::NotGo`] for other executables.
    pub fn open(path: impl AsRef<Path>) -> Result<GoBinary, GoBinError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GoBinError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        if file.metadata().map_err(io)?.len() < 64 {
            return Err(GoBinError::NotElf);
        }
        // SAFETY: the mapping is read-only and private. A file that is executing cannot be
        // written (ETXTBSY) and deployments replace binaries by rename (a new inode), so the
        // bytes do not change under us; truncation by a third party would raise SIGBUS, the
        // same risk every ELF tool that maps its input takes.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::from_map(path, map)
    }

    fn from_map(path: PathBuf, map: Mmap) -> Result<GoBinary, GoBinError> {
        let data: &[u8] = &map;
        let elf = ElfInfo::parse(data)?;
        let build_info = buildinfo::read(&elf, data);
        let version = build_info
            .as_ref()
            .and_then(|b| GoVersion::parse(&b.go_version));
        if let Some(v) = &version {
            if !v.at_least(1, 18) {
                return Err(GoBinError::Unsupported(format!(
                    "{} (pclntab formats before Go 1.18 are not supported)",
                    v.raw
                )));
            }
        }
        let go_hints = build_info.is_some()
            || elf.sections.is_empty()
            || elf.sections.iter().any(|s| {
                matches!(
                    s.name.as_str(),
                    ".gopclntab" | ".data.rel.ro.gopclntab" | ".note.go.buildid" | ".go.module"
                )
            });
        if !go_hints {
            return Err(GoBinError::NotGo);
        }
        let pcln = match text::find_pclntab(&elf, data) {
            Ok(t) => t,
            Err(_) if build_info.is_none() => return Err(GoBinError::NotGo),
            Err(why) => return Err(GoBinError::Malformed(format!("pclntab: {why}"))),
        };
        let moduledata = text::find_moduledata(&elf, data, &pcln);
        let candidates = text::text_candidates(&elf, data, &pcln, moduledata);
        let mut bin = GoBinary {
            path,
            elf,
            build_info,
            version,
            pcln,
            moduledata,
            text: 0,
            text_source: TextSource::TextSection,
            names: OnceLock::new(),
            map,
        };
        let witnesses: Vec<u32> = text::PROLOGUE_WITNESSES
            .iter()
            .filter_map(|n| bin.find_index(n))
            .filter_map(|i| bin.pcln.functab(bin.tab(), i as usize).map(|e| e.0))
            .collect();
        let verified = candidates.iter().find(|(base, _)| {
            witnesses.iter().any(|&off| {
                bin.elf
                    .read_va(bin.data(), base + u64::from(off), 12)
                    .is_some_and(|code| text::has_stack_check(bin.elf.arch, code))
            })
        });
        match verified {
            Some(&(base, source)) => {
                bin.text = base;
                bin.text_source = source;
                Ok(bin)
            }
            None => Err(GoBinError::TextUnverified(
                candidates
                    .iter()
                    .map(|(v, s)| format!("{v:#x} from {s:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    fn data(&self) -> &[u8] {
        &self.map
    }

    /// The pclntab bytes (header at index 0).
    fn tab(&self) -> &[u8] {
        &self.map[self.pcln.file_off..self.pcln.file_off + self.pcln.len]
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn arch(&self) -> Arch {
        self.elf.arch
    }

    /// Build info, if the binary carries it (all Go >= 1.13 binaries do).
    pub fn build_info(&self) -> Option<&BuildInfo> {
        self.build_info.as_ref()
    }

    pub fn go_version(&self) -> Option<&GoVersion> {
        self.version.as_ref()
    }

    /// Path of the main module (`mod` line of the build info).
    pub fn main_module(&self) -> Option<&str> {
        self.build_info
            .as_ref()?
            .main
            .as_ref()
            .map(|m| m.path.as_str())
    }

    /// Position-independent executable (`ET_DYN`): load addresses differ from file vas.
    pub fn is_pie(&self) -> bool {
        self.elf.is_dyn
    }

    /// Whether the binary still has `.symtab` (not built with `-ldflags=-s`).
    pub fn has_symtab(&self) -> bool {
        self.elf.has_symtab()
    }

    /// `runtime.text`, the base of all pclntab function offsets.
    pub fn runtime_text(&self) -> u64 {
        self.text
    }

    pub fn text_source(&self) -> TextSource {
        self.text_source
    }

    /// Address of the pclntab header.
    pub fn pclntab_addr(&self) -> u64 {
        self.pcln.va
    }

    /// Address of `runtime.firstmoduledata`, if found.
    pub fn moduledata_addr(&self) -> Option<u64> {
        self.moduledata
    }

    pub fn function_count(&self) -> usize {
        self.pcln.nfunc as usize
    }

    fn func_at(&self, i: usize) -> Option<Func<'_>> {
        let tab = self.tab();
        let (start, end) = self.pcln.bounds(tab, i)?;
        let rec = self.pcln.func(tab, i)?;
        let name = self
            .pcln
            .name(tab, rec.name_off)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("");
        Some(Func {
            name,
            entry: self.text + u64::from(start),
            end: self.text + u64::from(end),
            is_asm: rec.flag & pclntab::FUNC_FLAG_ASM != 0,
            index: i as u32,
        })
    }

    /// All functions in address order.
    pub fn functions(&self) -> impl Iterator<Item = Func<'_>> + '_ {
        (0..self.pcln.nfunc as usize).filter_map(move |i| self.func_at(i))
    }

    fn name_index(&self) -> &[(u64, u32)] {
        self.names.get_or_init(|| {
            let tab = self.tab();
            let mut v: Vec<(u64, u32)> = (0..self.pcln.nfunc)
                .filter_map(|i| {
                    let rec = self.pcln.func(tab, i as usize)?;
                    Some((fnv1a(self.pcln.name(tab, rec.name_off)?), i))
                })
                .collect();
            v.sort_unstable();
            v.shrink_to_fit();
            v
        })
    }

    /// Indexes and records of all functions named exactly `name`, in address order.
    fn named(&self, name: &str) -> Vec<(u32, pclntab::FuncRec)> {
        let idx = self.name_index();
        let h = fnv1a(name.as_bytes());
        let tab = self.tab();
        let first = idx.partition_point(|e| e.0 < h);
        idx[first..]
            .iter()
            .take_while(|e| e.0 == h)
            .filter_map(|e| Some((e.1, self.pcln.func(tab, e.1 as usize)?)))
            .filter(|(_, r)| self.pcln.name(tab, r.name_off) == Some(name.as_bytes()))
            .collect()
    }

    /// Which of two same-named functions is the ABI0 one: the assembly body (whose Go-callable
    /// twin is an ABIInternal wrapper), else the `<autogenerated>` ABI0 wrapper of a Go
    /// function that assembly calls.
    fn abi0_of(&self, all: &[(u32, pclntab::FuncRec)]) -> Option<usize> {
        if all.len() < 2 {
            return None;
        }
        let tab = self.tab();
        let generated = |r: &pclntab::FuncRec| {
            let entry = u64::from(r.entry_off);
            self.pcln
                .pcvalue(tab, r.pcfile, entry, entry)
                .and_then(|f| self.pcln.file_name(tab, r.cu_offset, f))
                == Some(&b"<autogenerated>"[..])
        };
        all.iter()
            .position(|(_, r)| r.flag & pclntab::FUNC_FLAG_ASM != 0)
            .or_else(|| all.iter().position(|(_, r)| generated(r)))
    }

    fn find_index(&self, name: &str) -> Option<u32> {
        let all = self.named(name);
        if all.is_empty() {
            let base = name.strip_suffix(".abi0")?;
            let all = self.named(base);
            return self.abi0_of(&all).map(|i| all[i].0);
        }
        let abi0 = self.abi0_of(&all);
        (0..all.len()).find(|&i| Some(i) != abi0).map(|i| all[i].0)
    }

    /// A function by its full Go name, e.g. `runtime.newproc1`, `main.main`,
    /// `net/http.(*conn).serve`. Where the pclntab has an ABI0/ABIInternal pair of that name,
    /// `NAME` is the ABIInternal one (what Go code calls) and `NAME.abi0` the other, as in
    /// `.symtab`.
    pub fn find_function(&self, name: &str) -> Option<Func<'_>> {
        self.func_at(self.find_index(name)? as usize)
    }

    /// The function containing `pc` (a va).
    pub fn func_for_pc(&self, pc: u64) -> Option<Func<'_>> {
        let off = pc.checked_sub(self.text)?;
        self.func_at(self.pcln.find(self.tab(), off)?)
    }

    /// Source file and line of the instruction at `pc` (innermost inlined position, as the
    /// Go runtime reports it).
    pub fn file_line(&self, pc: u64) -> Option<(String, u32)> {
        let tab = self.tab();
        let off = pc.checked_sub(self.text)?;
        let i = self.pcln.find(tab, off)?;
        let rec = self.pcln.func(tab, i)?;
        let entry = u64::from(rec.entry_off);
        let fileno = self.pcln.pcvalue(tab, rec.pcfile, entry, off)?;
        let line = self.pcln.pcvalue(tab, rec.pcln, entry, off)?;
        let file = self.pcln.file_name(tab, rec.cu_offset, fileno)?;
        Some((
            String::from_utf8_lossy(file).into_owned(),
            u32::try_from(line).ok()?,
        ))
    }

    /// Where a goroutine was created, from its `g.gopc` (or runtime.newproc1's `callerpc`):
    /// that is a return address, so like the runtime's `printcreatedby` this looks up the
    /// preceding instruction.
    pub fn creation_site(&self, gopc: u64) -> Option<(String, u32)> {
        let f = self.func_for_pc(gopc)?;
        let q = if self.elf.arch == Arch::Arm64 { 4 } else { 1 };
        self.file_line(if gopc > f.entry { gopc - q } else { gopc })
    }

    /// Machine code of a function (`entry..end`).
    pub fn code(&self, f: &Func<'_>) -> Option<&[u8]> {
        self.elf
            .read_va(self.data(), f.entry, usize::try_from(f.end - f.entry).ok()?)
    }

    /// RETs and tail-call jumps of a function, as vas (amd64 only).
    pub fn exits(&self, f: &Func<'_>) -> Result<FuncExits, GoBinError> {
        if self.elf.arch != Arch::Amd64 {
            return Err(GoBinError::Unsupported(format!(
                "return sites on {:?} (only amd64 code is decoded)",
                self.elf.arch
            )));
        }
        let code = self
            .code(f)
            .ok_or_else(|| GoBinError::NoCode(f.name.into()))?;
        disasm::exits_amd64(code, f.entry).map_err(|addr| GoBinError::Decode {
            func: f.name.into(),
            addr,
        })
    }

    /// File offset for an entry probe on `f`: the entry, or on amd64 the first instruction
    /// after Go's stack check when the kernel runs a probe there without single-stepping
    /// and the program sees the same registers (see [`crate::probes::nostep::go_entry`]).
    /// Assembly functions keep their entry: they follow no calling convention.
    pub fn entry_probe_offset(&self, f: &Func<'_>) -> Option<u64> {
        let va = match self.code(f) {
            Some(code) if self.elf.arch == Arch::Amd64 && !f.is_asm => {
                crate::probes::nostep::go_entry(code, f.entry)
            }
            _ => f.entry,
        };
        self.file_offset(va)
    }

    /// File offsets of every RET in `f`, for uprobes attached by offset. Tail-call jumps out
    /// of the function are not included (see [`GoBinary::exits`]).
    pub fn ret_offsets(&self, f: &Func<'_>) -> Result<Vec<u64>, GoBinError> {
        self.exits(f)?
            .rets
            .iter()
            .map(|&va| {
                self.file_offset(va)
                    .ok_or_else(|| GoBinError::NoCode(f.name.into()))
            })
            .collect()
    }

    /// Return addresses of the direct `CALL`s from `f` to `callee` (amd64): the pcs a callee
    /// sees as its caller pc. E.g. the calls to `runtime.newproc` in a function are its `go`
    /// statements, and `creation_site` of each gives the statement's line.
    pub fn call_sites(&self, f: &Func<'_>, callee: &Func<'_>) -> Result<Vec<u64>, GoBinError> {
        if self.elf.arch != Arch::Amd64 {
            return Err(GoBinError::Unsupported(format!(
                "call sites on {:?} (only amd64 code is decoded)",
                self.elf.arch
            )));
        }
        let code = self
            .code(f)
            .ok_or_else(|| GoBinError::NoCode(f.name.into()))?;
        Ok(disasm::calls_to(code, f.entry, callee.entry))
    }

    /// File offset of a va (what uprobes attach by), if the va is file-backed.
    pub fn file_offset(&self, va: u64) -> Option<u64> {
        self.elf.va_to_offset(va)
    }

    /// The va stored at a file offset, if it is inside a loadable segment.
    pub fn va_for_file_offset(&self, off: u64) -> Option<u64> {
        self.elf.offset_to_va(off)
    }

    /// `len` file bytes at `va`.
    pub fn bytes_at(&self, va: u64, len: usize) -> Option<&[u8]> {
        self.elf.read_va(self.data(), va, len)
    }

    /// Value of a `.symtab` symbol (globals such as `runtime.memstats`); `None` if stripped.
    pub fn symbol_address(&self, name: &str) -> Option<u64> {
        self.elf.symbol(self.data(), name).map(|s| s.0)
    }

    /// Link-time va of the `runtime.allgs` slice header (`[]*g`: ptr, len, cap; add the load
    /// bias for PIE): from `.symtab` when present, else from the machine code of
    /// `runtime.allgadd` (see [`GoBinary::allgs_address_from_code`]), so stripped binaries
    /// work too. `None` when neither finds it (e.g. stripped arm64 binaries).
    pub fn allgs_address(&self) -> Option<u64> {
        self.symbol_address("runtime.allgs")
            .or_else(|| self.allgs_address_from_code())
    }

    /// `runtime.allgs` found without symbols (amd64 only). `runtime.allgadd` does
    /// `allgs = append(allgs, gp)`, which compiles to RIP-relative 8-byte loads of
    /// `allgs`, `allgs+8`, `allgs+16` and stores back to them (checked in Go 1.21–1.27).
    /// The answer is the unique address `A` such that `A` is stored to, `A`, `A+8` and
    /// `A+16` are all accessed, and `A..A+24` lies in writable data (.data/.bss/...);
    /// `None` if there is no such address or more than one.
    pub fn allgs_address_from_code(&self) -> Option<u64> {
        if self.elf.arch != Arch::Amd64 {
            return None;
        }
        let f = self.find_function("runtime.allgadd")?;
        let refs = disasm::rip_refs_amd64(self.code(&f)?, f.entry).ok()?;
        let mut found = disasm::appended_slice_headers(&refs)
            .into_iter()
            .filter(|&a| self.elf.is_writable_data(a, 24));
        match (found.next(), found.next()) {
            (Some(a), None) => Some(a),
            _ => None,
        }
    }

    /// Layouts of the named struct types from DWARF (`None`: no DWARF in the binary).
    pub fn struct_layouts(
        &self,
        names: &[&str],
    ) -> Result<Option<BTreeMap<String, StructLayout>>, GoBinError> {
        dwarf::struct_layouts(&self.elf, self.data(), names)
    }

    /// Runtime struct offsets from this binary's DWARF; `Ok(None)` without DWARF.
    pub fn offsets_from_dwarf(&self) -> Result<Option<GoOffsets>, GoBinError> {
        let mut structs: Vec<&str> = OFFSET_FIELDS.iter().map(|f| f.1).collect();
        structs.dedup();
        let Some(layouts) = self.struct_layouts(&structs)? else {
            return Ok(None);
        };
        GoOffsets::from_layouts(&layouts).map(Some).ok_or_else(|| {
            let missing: Vec<String> = OFFSET_FIELDS
                .iter()
                .filter(|(_, s, m, req)| {
                    *req && layouts.get(*s).and_then(|l| l.members.get(*m)).is_none()
                })
                .map(|(_, s, m, _)| format!("{s}.{m}"))
                .collect();
            GoBinError::Dwarf(format!("missing {}", missing.join(", ")))
        })
    }

    /// Runtime struct offsets: DWARF first, else the table for this Go minor version.
    pub fn offsets(&self) -> Result<GoOffsets, GoBinError> {
        self.offsets_with_source().map(|(o, _)| o)
    }

    /// [`GoBinary::offsets`], and where they came from (for logs and `periscope doctor`).
    pub fn offsets_with_source(&self) -> Result<(GoOffsets, OffsetsSource), GoBinError> {
        let dwarf_why = match self.offsets_from_dwarf() {
            Ok(Some(o)) => return Ok((o, OffsetsSource::Dwarf)),
            Ok(None) => "no DWARF".to_owned(),
            Err(e) => e.to_string(),
        };
        let version = self.version.as_ref().ok_or_else(|| GoBinError::NoOffsets {
            version: "(unknown)".into(),
            why: format!("{dwarf_why} and no build info"),
        })?;
        let source = OffsetsSource::Table {
            major: version.major,
            minor: version.minor,
        };
        GoOffsets::for_version(version)
            .map(|o| (o, source))
            .ok_or_else(|| GoBinError::NoOffsets {
                version: version.raw.clone(),
                why: format!("{dwarf_why} and the table has no go1.{}", version.minor),
            })
    }
}

/// Link-time addresses (add the load bias for PIE) of the runtime globals the memory
/// statistics read; see [`GoBinary::runtime_globals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeGlobals {
    /// `runtime.memstats` (`runtime.mstats`).
    pub memstats: Option<u64>,
    /// `runtime.gcController` (`runtime.gcControllerState`).
    pub gc_controller: Option<u64>,
    /// `runtime.mheap_` (`runtime.mheap`).
    pub mheap: Option<u64>,
    /// `runtime.allp` (`[]*p`; its length is GOMAXPROCS).
    pub allp: Option<u64>,
    /// `runtime.sched` (`runtime.schedt`): goroutine free lists and thread counts.
    pub sched: Option<u64>,
    /// `runtime.allgs` (`[]*g`; its length is `allglen`).
    pub allgs: Option<u64>,
}

impl GoBinary {
    /// The runtime globals behind the memory statistics found without symbols, from the
    /// machine code of runtime functions that every Go program has and that touch them
    /// (see [`GoBinary::global_from_fields`]; checked against `.symtab` in Go 1.19, 1.21–1.27).
    pub fn runtime_globals_from_code(&self, o: &GoOffsets) -> RuntimeGlobals {
        // Checked against .symtab in Go 1.19 and 1.21-1.27 (gobin tests; 1.20 has no
        // toolchain here, and a stripped 1.20 binary has no offsets table row either).
        // Older releases touch other fields: no address beats a wrong one.
        if !self.version.as_ref().is_some_and(|v| v.at_least(1, 19)) {
            return RuntimeGlobals::default();
        }
        let memstats_fields: Vec<u32> = [
            Some(o.mstats_last_gc_unix),
            o.mstats_pause_total_ns,
            Some(o.mstats_pause_ns),
            o.mstats_pause_end,
            Some(o.mstats_numgc),
            o.mstats_numforcedgc,
            o.mstats_last_gc_nanotime,
        ]
        .into_iter()
        .flatten()
        .collect();
        // (*mheap).allocSpan updates the pacer's view of mapped memory: memoryLimit,
        // heapInUse, heapReleased, heapFree and mappedReady (1.19, 1.21-1.27). gcMarkTermination
        // touches more gcController fields but also dense runs of other globals, which
        // outvote it.
        let gcc_fields: Vec<u32> = [
            o.gcc_memory_limit,
            o.gcc_heap_in_use,
            o.gcc_heap_free,
            o.gcc_heap_released,
            o.gcc_total_alloc,
            o.gcc_total_free,
            o.gcc_mapped_ready,
        ]
        .into_iter()
        .flatten()
        .collect();
        // gcSweep touches mheap_.lock, sweepgen, pagesSwept and reclaimCredit (1.19, 1.21-1.27).
        // The fields between them sit 8 bytes apart, so with them every shifted address
        // would collect nearly as many votes; these four do not line up when shifted.
        let mheap_fields: Vec<u32> = [
            Some(0), // mheap.lock
            o.mheap_sweepgen,
            o.mheap_pages_swept,
            o.mheap_reclaim_credit,
        ]
        .into_iter()
        .flatten()
        .collect();
        // checkdead reads sched.lock, nmidle, nmidlelocked, nmsys and (mcount, inlined)
        // mnext and nmfreed (1.19, 1.21-1.27); it is on every program's exit and idle paths.
        let sched_fields: Vec<u32> = [
            o.sched_lock,
            o.sched_mnext,
            o.sched_nmfreed,
            o.sched_nmidle,
            o.sched_nmidlelocked,
            o.sched_nmsys,
        ]
        .into_iter()
        .flatten()
        .collect();
        RuntimeGlobals {
            sched: self.global_from_fields(&["runtime.checkdead"], &sched_fields, 4),
            allgs: self.allgs_address_from_code(),
            memstats: self.global_from_fields(&["runtime.gcMarkTermination"], &memstats_fields, 4),
            gc_controller: self.global_from_fields(&["runtime.(*mheap).allocSpan"], &gcc_fields, 4),
            mheap: self.global_from_fields(&["runtime.gcSweep"], &mheap_fields, 4),
            allp: self.allp_from_code(),
        }
    }

    /// The runtime globals behind the memory statistics: from `.symtab` when present, else
    /// from code ([`GoBinary::runtime_globals_from_code`]).
    pub fn runtime_globals(&self, o: &GoOffsets) -> RuntimeGlobals {
        let code = self.runtime_globals_from_code(o);
        RuntimeGlobals {
            memstats: self.symbol_address("runtime.memstats").or(code.memstats),
            gc_controller: self
                .symbol_address("runtime.gcController")
                .or(code.gc_controller),
            mheap: self.symbol_address("runtime.mheap_").or(code.mheap),
            allp: self.symbol_address("runtime.allp").or(code.allp),
            sched: self.symbol_address("runtime.sched").or(code.sched),
            allgs: self.allgs_address(),
        }
    }

    /// A global struct found from the code of `funcs` (amd64), knowing the offsets of some
    /// of its fields: every RIP-relative operand `t` proposes `t - off` as the struct's
    /// address for each field offset `off`; the address proposed by the most distinct
    /// fields wins, if at least `min_fields` agree, no other address does as well, and the
    /// struct lies in writable data. A global's fields are reached as `global+off(SB)`,
    /// so the true address collects one vote per field the code touches, while chance
    /// agreements between unrelated operands stay at one or two.
    pub fn global_from_fields(
        &self,
        funcs: &[&str],
        fields: &[u32],
        min_fields: u32,
    ) -> Option<u64> {
        if self.elf.arch != Arch::Amd64 || fields.is_empty() || fields.len() > 64 {
            return None;
        }
        let mut targets = std::collections::BTreeSet::new();
        for name in funcs {
            let f = self.find_function(name)?;
            let refs = disasm::rip_refs_amd64(self.code(&f)?, f.entry).ok()?;
            targets.extend(refs.iter().map(|r| r.target));
        }
        let mut votes: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        for &t in &targets {
            for (i, &off) in fields.iter().enumerate() {
                if let Some(base) = t.checked_sub(u64::from(off)) {
                    *votes.entry(base).or_default() |= 1 << i;
                }
            }
        }
        let span = u64::from(fields.iter().copied().max().unwrap_or(0)) + 8;
        let mut ranked: Vec<(u32, u64)> = votes
            .into_iter()
            .map(|(base, mask)| (mask.count_ones(), base))
            .filter(|&(n, base)| n >= min_fields && self.elf.is_writable_data(base, span))
            .collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        match ranked.as_slice() {
            [(n, base), rest @ ..] if rest.first().is_none_or(|r| r.0 < *n) => Some(*base),
            _ => None,
        }
    }

    /// `runtime.allp` without symbols (amd64): `runtime.gcMarkTinyAllocs` ranges over it
    /// (`for _, p := range allp`), which loads the slice's pointer and length with two
    /// 8-byte RIP-relative reads at `A` and `A+8` and touches no other slice (checked in
    /// Go 1.21–1.27). The unique such `A` in writable data, or `None`.
    pub fn allp_from_code(&self) -> Option<u64> {
        if self.elf.arch != Arch::Amd64 {
            return None;
        }
        let f = self.find_function("runtime.gcMarkTinyAllocs")?;
        let refs = disasm::rip_refs_amd64(self.code(&f)?, f.entry).ok()?;
        let reads: std::collections::BTreeSet<u64> = refs
            .iter()
            .filter(|r| r.kind == disasm::RipUse::Read && r.size == 8)
            .map(|r| r.target)
            .collect();
        let mut found = reads
            .iter()
            .copied()
            .filter(|a| reads.contains(&(a + 8)) && self.elf.is_writable_data(*a, 24));
        match (found.next(), found.next()) {
            (Some(a), None) => Some(a),
            _ => None,
        }
    }

    /// The allocator's object size per size class (`runtime.class_to_size`, since Go 1.24
    /// `internal/runtime/gc.SizeClassToSize`, a `[n]uint16`), `n` entries: from `.symtab`,
    /// else found in the binary's writable data by its fixed start (class 0 is
    /// unused, then 8, 16, 24, 32, 48 bytes) and checked to rise strictly to 32 KiB.
    pub fn size_classes(&self, n: usize) -> Option<Vec<u32>> {
        let parse = |b: &[u8]| -> Option<Vec<u32>> {
            let v: Vec<u32> = b
                .chunks_exact(2)
                .take(n)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            let ok = v.len() == n
                && v[0] == 0
                && v.windows(2).skip(1).all(|w| w[0] < w[1])
                && v.last() == Some(&32768);
            ok.then_some(v)
        };
        for sym in [
            "runtime.class_to_size",
            "internal/runtime/gc.SizeClassToSize",
        ] {
            if let Some(a) = self.symbol_address(sym) {
                return parse(self.bytes_at(a, n * 2)?);
            }
        }
        let prefix: Vec<u8> = [0u16, 8, 16, 24, 32, 48]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let data = self.data();
        let mut found = None;
        // The table is a package-level variable (.noptrdata, writable, in 1.21-1.27), so
        // only writable segments are searched: the read-only one holds the pclntab and is
        // most of a big binary.
        for s in self
            .elf
            .segments
            .iter()
            .filter(|s| s.is_write() && !s.is_exec())
        {
            let start = usize::try_from(s.offset).ok()?;
            let end = start.checked_add(usize::try_from(s.filesz).ok()?)?;
            let bytes = data.get(start..end)?;
            for at in memchr::memmem::find_iter(bytes, &prefix) {
                if at % 2 != 0 {
                    continue;
                }
                if let Some(v) = bytes.get(at..).and_then(parse) {
                    if found.as_ref().is_some_and(|f| f != &v) {
                        return None;
                    }
                    found = Some(v);
                }
            }
        }
        found
    }
}
