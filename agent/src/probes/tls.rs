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

#[cfg(test)]
mod tests {
    use super::*;

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
