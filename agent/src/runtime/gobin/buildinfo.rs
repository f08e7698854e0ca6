//! Go build info: the `\xff Go buildinf:` blob the linker writes into `.go.buildinfo` (what
//! `go version -m` prints).
//!
//! Two layouts exist (src/debug/buildinfo/buildinfo.go): before Go 1.18 the 32-byte header is
//! followed by two pointers to Go string headers (version, module info); since 1.18 flag bit 1
//! ("version inline") says the two strings follow the header as uvarint-length-prefixed bytes.
//! The module info string is wrapped in 16-byte sentinels (src/cmd/go/internal/modload/build.go).

use std::fmt;

use super::elf::{ElfInfo, le_u64};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const FLAG_BIG_ENDIAN: u8 = 0x1;
const FLAG_VERSION_INLINE: u8 = 0x2;

/// A Go release as recorded in the build info (`go1.21.13`, `go1.25.0 X:nocoverageredesign`,
/// `devel go1.24-abcdef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The string exactly as stored, e.g. `go1.21.13`.
    pub raw: String,
}

impl GoVersion {
    pub fn parse(raw: &str) -> Option<GoVersion> {
        let i = raw.find("go1.")?;
        let rest = &raw[i + 2..];
        // "go1.21rc2" / "go1.24-abcdef" have no patch number: only the leading run of digits
        // and dots counts.
        let end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let mut nums = rest[..end].split('.').map(|s| s.parse::<u32>().ok());
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(GoVersion {
            major,
            minor,
            patch,
            raw: raw.to_owned(),
        })
    }

    /// `(major, minor)` for comparisons such as `v.at_least(1, 26)`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One module line of the build info (`mod`, `dep`, or the `=>` replacement under either).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub path: String,
    pub version: String,
    pub sum: Option<String>,
    pub replace: Option<Box<Module>>,
}

/// What `go version -m` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// E.g. `go1.21.13`.
    pub go_version: String,
    /// Package path of the main package (`path` line), e.g. `github.com/prometheus/prometheus/cmd/prometheus`.
    pub path: Option<String>,
    /// The main module (`mod` line).
    pub main: Option<Module>,
    /// Dependencies (`dep` lines).
    pub deps: Vec<Module>,
    /// `build` settings such as `CGO_ENABLED=1`, `-ldflags=...`, `vcs.revision=...`.
    pub settings: Vec<(String, String)>,
}

/// Locates and parses the build info; `None` when the binary has none (not Go, or damaged).
pub(super) fn read(elf: &ElfInfo, data: &[u8]) -> Option<BuildInfo> {
    let blob = match elf.section(".go.buildinfo") {
        Some(s) => elf.section_data(data, s)?,
        // No section headers: the blob is 16-byte aligned at the start of the writable
        // data segment's Go part; scan writable segments for the magic.
        None => elf.segments.iter().filter(|s| !s.is_exec()).find_map(|s| {
            let start = usize::try_from(s.offset).ok()?;
            let seg = data.get(start..start.checked_add(usize::try_from(s.filesz).ok()?)?)?;
            // 16-byte aligned in memory, whatever the segment's own alignment.
            let first = (16 - (s.vaddr % 16) as usize) % 16;
            let at = (first..seg.len().saturating_sub(32))
                .step_by(16)
                .find(|&i| seg[i..].starts_with(MAGIC))?;
            Some(&seg[at..])
        })?,
    };
    parse(elf, data, blob)
}

fn parse(elf: &ElfInfo, data: &[u8], blob: &[u8]) -> Option<BuildInfo> {
    if blob.len() < 32 || !blob.starts_with(MAGIC) {
        return None;
    }
    let ptr_size = blob[14];
    let flags = blob[15];
    let (version, modinfo) = if flags & FLAG_VERSION_INLINE != 0 {
        let (v, n) = varint_string(&blob[32..])?;
        let (m, _) = varint_string(&blob[32 + n..])?;
        (v.to_vec(), m.to_vec())
    } else {
        if ptr_size != 8 || flags & FLAG_BIG_ENDIAN != 0 {
            return None;
        }
        let read_string = |ptr_va: u64| -> Option<Vec<u8>> {
            let hdr = elf.read_va(data, ptr_va, 16)?;
            let (str_va, len) = (le_u64(hdr, 0)?, le_u64(hdr, 8)?);
            if len == 0 {
                return Some(Vec::new());
            }
            Some(
                elf.read_va(data, str_va, usize::try_from(len).ok()?)?
                    .to_vec(),
            )
        };
        let v = read_string(le_u64(blob, 16)?)?;
        let m = read_string(le_u64(blob, 24)?).unwrap_or_default();
        (v, m)
    };
    let go_version = String::from_utf8(version).ok()?;
    if !go_version.starts_with("go") && !go_version.starts_with("devel") {
        return None;
    }
    let mut info = BuildInfo {
        go_version,
        path: None,
        main: None,
        deps: Vec::new(),
        settings: Vec::new(),
    };
    parse_modinfo(&mut info, strip_sentinels(&modinfo));
    Some(info)
}

fn varint_string(b: &[u8]) -> Option<(&[u8], usize)> {
    let (len, n) = uvarint(b)?;
    let len = usize::try_from(len).ok()?;
    Some((b.get(n..n.checked_add(len)?)?, n + len))
}

pub(super) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &c) in b.iter().enumerate().take(10) {
        v |= u64::from(c & 0x7f) << (7 * i);
        if c & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn strip_sentinels(m: &[u8]) -> &[u8] {
    if m.len() >= 33 && m[m.len() - 17] == b'\n' {
        &m[16..m.len() - 16]
    } else {
        m
    }
}

fn parse_modinfo(info: &mut BuildInfo, m: &[u8]) {
    let text = String::from_utf8_lossy(m);
    let module = |f: &[&str]| Module {
        path: f.first().copied().unwrap_or_default().to_owned(),
        version: f.get(1).copied().unwrap_or_default().to_owned(),
        sum: f.get(2).map(|s| (*s).to_owned()),
        replace: None,
    };
    // Which module a following `=>` line replaces: None, the main module, or the last dep.
    let mut last_is_main = None;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["path", p, ..] => info.path = Some((*p).to_owned()),
            ["mod", rest @ ..] => {
                info.main = Some(module(rest));
                last_is_main = Some(true);
            }
            ["dep", rest @ ..] => {
                info.deps.push(module(rest));
                last_is_main = Some(false);
            }
            ["=>", rest @ ..] => {
                let target = match last_is_main {
                    Some(true) => info.main.as_mut(),
                    Some(false) => info.deps.last_mut(),
                    None => None,
                };
                if let Some(t) = target {
                    t.replace = Some(Box::new(module(rest)));
                }
            }
            ["build", kv, ..] => {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                info.settings.push((k.to_owned(), v.to_owned()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn versions() {
        let v = GoVersion::parse("go1.21.13").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 13));
        let v = GoVersion::parse("go1.25.0 X:nocoverageredesign").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 25, 0));
        let v = GoVersion::parse("go1.21rc2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 21, 0));
        let v = GoVersion::parse("devel go1.24-abcdef Tue").unwrap();
        assert_eq!((v.major, v.minor), (1, 24));
        assert!(GoVersion::parse("gcc").is_none());
        assert!(v.at_least(1, 24) && !v.at_least(1, 25));
    }

    #[test]
    fn modinfo_lines() {
        let mut info = BuildInfo {
            go_version: "go1.21.0".into(),
            path: None,
            main: None,
            deps: vec![],
            settings: vec![],
        };
        let m = "path\texample.com/x/cmd\nmod\texample.com/x\t(devel)\t\n\
                 dep\tgolang.org/x/sys\tv0.1.0\th1:abc=\n=>\t../sys\t(devel)\t\n\
                 build\t-ldflags=-s -w\nbuild\tCGO_ENABLED=0\n";
        parse_modinfo(&mut info, m.as_bytes());
        assert_eq!(info.path.as_deref(), Some("example.com/x/cmd"));
        assert_eq!(info.main.as_ref().unwrap().path, "example.com/x");
        assert_eq!(info.deps.len(), 1);
        assert_eq!(info.deps[0].replace.as_ref().unwrap().path, "../sys");
        assert_eq!(
            info.settings[0],
            ("-ldflags".to_owned(), "-s -w".to_owned())
        );
    }

    #[test]
    fn sentinels() {
        let mut m = vec![b'x'; 16];
        m.extend_from_slice(b"path\ta\n");
        m.extend_from_slice(&[b'y'; 16]);
        assert_eq!(strip_sentinels(&m), b"path\ta\n");
        assert_eq!(strip_sentinels(b"short"), b"short");
    }
}
