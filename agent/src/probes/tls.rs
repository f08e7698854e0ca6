//! Where a process's OpenSSL is: the `libssl.so*` it has mapped, or its own executable
//! when that exports the SSL functions (OpenSSL linked in statically, as node does).

use std::path::PathBuf;

/// The symbols the TLS programs are attached to, with the program at the entry of each.
/// `tls_ret` goes on the return of all four. `SSL_read`/`SSL_write` are required; the
/// `_ex` variants (OpenSSL >= 1.1.1) are attached where they exist.
pub const TLS_ENTRIES: &[(&str, &str, bool)] = &[
    ("tls_read_enter", "SSL_read", true),
    ("tls_read_ex_enter", "SSL_read_ex", false),
    ("tls_write_enter", "SSL_write", true),
    ("tls_write_ex_enter", "SSL_write_ex", false),
];

/// The uretprobe shared by every entry above.
pub const TLS_RET: &str = "tls_ret";

/// Calls that tell which socket an `SSL*` uses before data moves: (entry program,
/// return program or "", symbol). Optional: without them, a first request read by the
/// handshake itself has no socket yet and is dropped (counted).
pub const TLS_SOCKET_HINTS: &[(&str, &str, &str)] = &[
    ("tls_set_fd", "", "SSL_set_fd"),
    (
        "tls_handshake_enter",
        "tls_handshake_ret",
        "SSL_do_handshake",
    ),
];

/// Every TLS program in the object.
pub const TLS_PROGRAMS: &[&str] = &[
    "tls_read_enter",
    "tls_read_ex_enter",
    "tls_write_enter",
    "tls_write_ex_enter",
    TLS_RET,
    "tls_set_fd",
    "tls_handshake_enter",
    "tls_handshake_ret",
];

/// A process's OpenSSL, as a path the agent can open (through `/proc/PID/root`, so a
/// process in another mount namespace is reached too) and the name to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslLibrary {
    pub path: PathBuf,
    pub name: String,
}

/// The first `libssl.so*` mapping in a `/proc/PID/maps` text.
pub fn libssl_in_maps(maps: &str) -> Option<&str> {
    maps.lines().find_map(|line| {
        // address perms offset dev inode path: the path is the 6th field and may hold
        // spaces, so take the rest of the line after the inode.
        let mut rest = line;
        for _ in 0..5 {
            rest = rest.trim_start().split_once(char::is_whitespace)?.1;
        }
        let path = rest.trim();
        let file = path.rsplit('/').next()?;
        (path.starts_with('/') && file.starts_with("libssl.so")).then_some(path)
    })
}

/// Whether an ELF file's dynamic symbol table defines `SSL_read` and `SSL_write`.
pub fn exports_ssl(path: &std::path::Path) -> bool {
    use object::{Object, ObjectSymbol};
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: a read-only private mapping; the file being changed under us can only make
    // the symbol lookup fail, which is the answer "no".
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return false;
    };
    let Ok(obj) = object::File::parse(&*map) else {
        return false;
    };
    let mut found = (false, false);
    for sym in obj.dynamic_symbols() {
        if sym.is_undefined() {
            continue;
        }
        match sym.name() {
            Ok("SSL_read") => found.0 = true,
            Ok("SSL_write") => found.1 = true,
            _ => {}
        }
    }
    found == (true, true)
}

/// Finds the OpenSSL a process uses, if any. `with_exe`: also look for the SSL symbols
/// in its executable (parsing it is the costly part, and an executable does not change,
/// so rechecks of a running process look at its mappings only).
pub fn find(pid: u32, with_exe: bool) -> Option<SslLibrary> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    if let Some(lib) = libssl_in_maps(&maps) {
        return Some(SslLibrary {
            path: PathBuf::from(format!("/proc/{pid}/root{lib}")),
            name: lib.rsplit('/').next().unwrap_or(lib).to_string(),
        });
    }
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    (with_exe && exports_ssl(&exe)).then(|| SslLibrary {
        name: std::fs::read_link(&exe)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "executable".into()),
        path: exe,
    })
}

/// Where a library's OpenSSL probes go, as file offsets (what uprobes attach by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslSites {
    /// (entry program, offset, required): `tls_ret` goes on each offset as well.
    pub data: Vec<(&'static str, u64, bool)>,
    /// (entry program, return program or "", offset), from [`TLS_SOCKET_HINTS`].
    pub hints: Vec<(&'static str, &'static str, u64)>,
    /// The data probes are on the internal functions that `SSL_read`/`SSL_read_ex` and
    /// `SSL_write`/`SSL_write_ex` share (see [`sites`]).
    pub internal: bool,
}

/// The probes' offsets in an OpenSSL library (or an executable that exports it).
///
/// The uretprobe of each data call has to sit on a function's entry, where the kernel
/// traps and, unless the first instruction is one it emulates, single-steps (see
/// [`super::nostep`]): about 11 µs per call on a KVM guest. OpenSSL's `SSL_read` starts
/// with `sub $0x18,%rsp`; it and `SSL_read_ex` are thin wrappers that call the same
/// internal `ssl_read_internal(s, buf, num, &readbytes)`, whose first instruction is a
/// `push`. So when `SSL_read_ex` hands its arguments unchanged to a call (its signature
/// is then the callee's), `SSL_read` calls the same function, and that function starts
/// with an emulated instruction, the `_ex` entry program and the uretprobe go there
/// instead: one trap per call, none single-stepped, and both calls still seen. Likewise
/// for writes. Otherwise, each exported call is probed as before. Either way a leading
/// `endbr64` is stepped over when what follows is emulated.
pub fn sites(path: &std::path::Path) -> Result<SslSites, String> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // SAFETY: a read-only private mapping; a file changed under us can only give wrong
    // bytes, which the decoding below treats like any other code it does not accept.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
    let obj = object::File::parse(&*map).map_err(|e| e.to_string())?;
    let wanted =
        |n: &str| TLS_ENTRIES.iter().any(|e| e.1 == n) || TLS_SOCKET_HINTS.iter().any(|h| h.2 == n);
    let mut syms: std::collections::HashMap<&str, (u64, u64)> = Default::default();
    for sym in obj.dynamic_symbols() {
        if let Ok(name) = sym.name()
            && !sym.is_undefined()
            && wanted(name)
        {
            syms.insert(name, (sym.address(), sym.size()));
        }
    }
    // (file offset, bytes from there to the end of its segment's file image)
    let locate = |va: u64| -> Option<(u64, &[u8])> {
        obj.segments().find_map(|seg| {
            let (off, size) = seg.file_range();
            let rel = va.checked_sub(seg.address())?;
            (rel < size).then(|| {
                let start = usize::try_from(off + rel).ok()?;
                let end = usize::try_from(off + size).ok()?;
                Some((off + rel, map.get(start..end)?))
            })?
        })
    };
    let x86 = obj.architecture() == object::Architecture::X86_64;
    // The code of a function at `va` of `size` bytes (64 when the symbol has no size).
    let code = |va: u64, size: u64| -> Option<&[u8]> {
        let (_, bytes) = locate(va)?;
        let len = usize::try_from(if size == 0 { 64 } else { size }).ok()?;
        Some(&bytes[..len.min(bytes.len())])
    };
    let entry_offset = |va: u64| -> Option<u64> {
        let at = match code(va, 16) {
            Some(c) if x86 => super::nostep::c_entry(c, va),
            _ => va,
        };
        Some(locate(at)?.0)
    };
    let mut out = SslSites {
        data: Vec::new(),
        hints: Vec::new(),
        internal: false,
    };
    for pair in TLS_ENTRIES.chunks(2) {
        let [(plain_prog, plain, plain_req), (ex_prog, ex, _)] = pair else {
            return Err("TLS_ENTRIES holds pairs".into());
        };
        let shared = x86
            .then(|| {
                let (ex_va, ex_size) = *syms.get(ex)?;
                let (plain_va, plain_size) = *syms.get(plain)?;
                let callee = super::nostep::pass_through_call(code(ex_va, ex_size)?, ex_va)?;
                let calls = super::nostep::calls(code(plain_va, plain_size)?, plain_va, callee);
                let head = code(callee, 16)?;
                let at = super::nostep::c_entry(head, callee);
                let rel = usize::try_from(at - callee).ok()?;
                (calls && super::nostep::emulated(head.get(rel..)?))
                    .then(|| locate(at).map(|l| l.0))?
            })
            .flatten();
        if let Some(off) = shared {
            out.data.push((ex_prog, off, true));
            out.internal = true;
            continue;
        }
        for (prog, name, required) in [(plain_prog, plain, *plain_req), (ex_prog, ex, false)] {
            match syms.get(name).and_then(|&(va, _)| entry_offset(va)) {
                Some(off) => out.data.push((prog, off, required)),
                None if required => return Err(format!("{name} not found")),
                None => {}
            }
        }
    }
    for &(entry, ret, name) in TLS_SOCKET_HINTS {
        if let Some(off) = syms.get(name).and_then(|&(va, _)| entry_offset(va)) {
            out.hints.push((entry, ret, off));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's OpenSSL 3 (a library nobody here built): `SSL_read` starts with
    /// `sub $0x18,%rsp`, so the data probes must move to the internal calls, one for
    /// reads and one for writes, each starting with an instruction the kernel emulates.
    #[test]
    fn system_openssl_is_probed_where_nothing_is_single_stepped() {
        let lib = std::path::Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if !lib.exists() || !cfg!(target_arch = "x86_64") {
            eprintln!("SKIPPED: no {}", lib.display());
            return;
        }
        let s = sites(lib).unwrap();
        assert!(s.internal, "{s:?}");
        let progs: Vec<&str> = s.data.iter().map(|d| d.0).collect();
        assert_eq!(progs, ["tls_read_ex_enter", "tls_write_ex_enter"], "{s:?}");
        assert_ne!(s.data[0].1, s.data[1].1);
        let bytes = std::fs::read(lib).unwrap();
        for &(prog, off, required) in &s.data {
            assert!(required);
            let at = usize::try_from(off).unwrap();
            assert!(
                super::super::nostep::emulated(&bytes[at..]),
                "{prog} at {off:#x}: {:02x?}",
                &bytes[at..at + 4]
            );
        }
        let hints: Vec<&str> = s.hints.iter().map(|h| h.0).collect();
        assert_eq!(hints, ["tls_set_fd", "tls_handshake_enter"]);
    }

    #[test]
    fn a_file_without_openssl_has_no_sites() {
        let exe = std::env::current_exe().unwrap();
        assert!(sites(&exe).is_err());
        assert!(sites(std::path::Path::new("/nonexistent/libssl.so.3")).is_err());
    }

    #[test]
    fn libssl_found_in_maps() {
        let maps = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 131 /usr/bin/python3.11
7f1c2a000000-7f1c2a05b000 r--p 00000000 08:01 2211 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f1c2a200000-7f1c2a21f000 r--p 00000000 08:01 2212 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f1c2a400000-7f1c2a401000 rw-p 00000000 00:00 0 
7ffd1c000000-7ffd1c021000 rw-p 00000000 00:00 0                          [stack]
";
        assert_eq!(
            libssl_in_maps(maps),
            Some("/usr/lib/x86_64-linux-gnu/libssl.so.3")
        );
        assert_eq!(
            libssl_in_maps("7f00-7f01 r-xp 0 08:01 5 /opt/my app/lib/libssl.so.1.1\n"),
            Some("/opt/my app/lib/libssl.so.1.1")
        );
    }

    #[test]
    fn no_libssl_no_match() {
        let maps = "\
7f1c2a000000-7f1c2a05b000 r--p 00000000 08:01 2211 /usr/lib/x86_64-linux-gnu/libcrypto.so.3
7f1c2a200000-7f1c2a21f000 r--p 00000000 08:01 2212 /usr/lib/libssl_helper.txt
7f1c2a400000-7f1c2a401000 rw-p 00000000 00:00 0 
";
        assert_eq!(libssl_in_maps(maps), None);
        assert_eq!(libssl_in_maps(""), None);
    }

    #[test]
    fn the_agent_itself_exports_no_ssl() {
        assert!(!exports_ssl(std::path::Path::new("/proc/self/exe")));
        assert!(!exports_ssl(std::path::Path::new("/nonexistent")));
    }
}
