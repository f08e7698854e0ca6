//! Struct layouts (`runtime.g`, `runtime.m`, ...) from the binary's own DWARF.
//!
//! Go compresses its debug sections (zlib, `SHF_COMPRESSED` or the older `.zdebug_*`), and a
//! large program's `.debug_info` inflates to tens of megabytes. To stay within the agent's
//! memory budget the section is inflated as a stream, one compilation unit at a time, and
//! only the units that can hold the wanted types are kept long enough to parse: Go's linker
//! emits every Go type, whatever its package (`runtime.g`, `net/http.conn`, ...), into the
//! `runtime` compilation unit (checked for 1.19–1.27, internal and external linking; the
//! linker splits a large package into several units of the same name), so a pass parses
//! the `runtime` units alone; a type not in them is not in the program. Only when no unit
//! is recognisably `runtime` does a second pass parse every unit (peak memory then is the
//! largest unit). A program that does not link a wanted package (net/http) therefore costs
//! one pass, not two.

use std::collections::BTreeMap;
use std::io::{self, Read};

use flate2::read::ZlibDecoder;
use gimli::{AttributeValue, DebugAbbrev, DebugAbbrevOffset, DebugInfo, DebugStr, LittleEndian};

use super::GoBinError;
use super::elf::{ElfInfo, le_u32, le_u64};

/// Members of one struct type: `name -> byte offset`, and the struct's size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StructLayout {
    pub size: Option<u64>,
    pub members: BTreeMap<String, u64>,
}

fn dwarf_err(e: impl std::fmt::Display) -> GoBinError {
    GoBinError::Dwarf(e.to_string())
}

/// A debug section's contents as a stream, inflating it if it is compressed.
fn open_section<'a>(
    elf: &ElfInfo,
    data: &'a [u8],
    name: &str,
) -> Result<Option<Box<dyn Read + 'a>>, GoBinError> {
    let (sec, gnu) = match elf.section(name) {
        Some(s) => (s, false),
        None => match elf.section(&name.replacen(".debug_", ".zdebug_", 1)) {
            Some(s) => (s, true),
            None => return Ok(None),
        },
    };
    let raw = elf
        .section_data(data, sec)
        .ok_or_else(|| dwarf_err(format!("{name} is outside the file")))?;
    if gnu {
        // "ZLIB" + big-endian u64 size + zlib stream.
        if raw.len() < 12 || &raw[..4] != b"ZLIB" {
            return Err(dwarf_err(format!("{name}: bad .zdebug header")));
        }
        return Ok(Some(Box::new(ZlibDecoder::new(&raw[12..]))));
    }
    if sec.is_compressed() {
        // Elf64_Chdr: ch_type u32, reserved u32, ch_size u64, ch_addralign u64.
        let ch_type = le_u32(raw, 0).ok_or_else(|| dwarf_err("truncated Elf64_Chdr"))?;
        if ch_type != object::elf::ELFCOMPRESS_ZLIB.0 {
            return Err(dwarf_err(format!(
                "{name}: unsupported compression type {ch_type}"
            )));
        }
        let _size = le_u64(raw, 8);
        return Ok(Some(Box::new(ZlibDecoder::new(
            raw.get(24..).unwrap_or(&[]),
        ))));
    }
    Ok(Some(Box::new(raw)))
}

fn read_small_section(elf: &ElfInfo, data: &[u8], name: &str) -> Result<Vec<u8>, GoBinError> {
    let mut buf = Vec::new();
    if let Some(mut r) = open_section(elf, data, name)? {
        r.read_to_end(&mut buf).map_err(dwarf_err)?;
    }
    Ok(buf)
}

/// Reads as many bytes as available up to `buf.len()`; returns how many.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Layouts of the named struct types, or `None` if the binary has no `.debug_info`.
/// A name missing from the map was not found in the DWARF.
pub(super) fn struct_layouts(
    elf: &ElfInfo,
    data: &[u8],
    wanted: &[&str],
) -> Result<Option<BTreeMap<String, StructLayout>>, GoBinError> {
    if open_section(elf, data, ".debug_info")?.is_none() {
        return Ok(None);
    }
    let abbrev_bytes = read_small_section(elf, data, ".debug_abbrev")?;
    let str_bytes = read_small_section(elf, data, ".debug_str")?;
    let ctx = Ctx {
        abbrev: DebugAbbrev::new(&abbrev_bytes, LittleEndian),
        strs: DebugStr::new(&str_bytes, LittleEndian),
        wanted,
    };
    let mut found = BTreeMap::new();
    for scope in [Scope::RuntimeUnit, Scope::AllUnits] {
        let Some(mut info) = open_section(elf, data, ".debug_info")? else {
            break;
        };
        let runtime_seen = ctx.pass(&mut *info, scope, &mut found)?;
        if runtime_seen || found.len() == wanted.len() {
            break;
        }
    }
    Ok(Some(found))
}

/// Which compilation units a pass parses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The units named `runtime` (the linker splits a large package into several units
    /// of the same name; the types are in one of them).
    RuntimeUnit,
    /// Every unit (a fallback for binaries whose runtime unit cannot be told apart).
    AllUnits,
}

/// [`struct_layouts`] parsing every unit, for tests of the fallback.
#[cfg(test)]
pub(super) fn struct_layouts_all_units(
    elf: &ElfInfo,
    data: &[u8],
    wanted: &[&str],
) -> Result<BTreeMap<String, StructLayout>, GoBinError> {
    let abbrev_bytes = read_small_section(elf, data, ".debug_abbrev")?;
    let str_bytes = read_small_section(elf, data, ".debug_str")?;
    let ctx = Ctx {
        abbrev: DebugAbbrev::new(&abbrev_bytes, LittleEndian),
        strs: DebugStr::new(&str_bytes, LittleEndian),
        wanted,
    };
    let mut found = BTreeMap::new();
    if let Some(mut info) = open_section(elf, data, ".debug_info")? {
        ctx.pass(&mut *info, Scope::AllUnits, &mut found)?;
    }
    Ok(found)
}

struct Ctx<'a> {
    abbrev: DebugAbbrev<gimli::EndianSlice<'a, LittleEndian>>,
    strs: DebugStr<gimli::EndianSlice<'a, LittleEndian>>,
    wanted: &'a [&'a str],
}

impl Ctx<'_> {
    /// One sequential pass over `.debug_info`. Returns whether the `runtime` unit was
    /// among the units parsed.
    fn pass(
        &self,
        info: &mut dyn Read,
        scope: Scope,
        found: &mut BTreeMap<String, StructLayout>,
    ) -> Result<bool, GoBinError> {
        let mut unit = Vec::new();
        let mut runtime_seen = false;
        loop {
            let mut len = [0u8; 4];
            match read_full(info, &mut len).map_err(dwarf_err)? {
                0 => return Ok(runtime_seen),
                4 => {}
                _ => return Err(dwarf_err("truncated .debug_info")),
            }
            let unit_length = u32::from_le_bytes(len);
            if unit_length >= 0xffff_fff0 {
                // 64-bit DWARF (or reserved): neither Go nor gcc emits it by default.
                return Err(dwarf_err("64-bit DWARF is not supported"));
            }
            let body_len = unit_length as usize;
            // Read just the unit header and the root DIE's first attribute to learn the
            // unit's name; keep reading only if the unit is of interest.
            let head_len = body_len.min(256);
            unit.clear();
            unit.extend_from_slice(&len);
            unit.resize(4 + head_len, 0);
            if read_full(info, &mut unit[4..]).map_err(dwarf_err)? != head_len {
                return Err(dwarf_err("truncated .debug_info"));
            }
            let rest = (body_len - head_len) as u64;
            let is_runtime = self.unit_name(&unit).as_deref() == Some(&b"runtime"[..]);
            runtime_seen |= is_runtime;
            if scope == Scope::RuntimeUnit && !is_runtime {
                io::copy(&mut info.take(rest), &mut io::sink()).map_err(dwarf_err)?;
                continue;
            }
            let start = unit.len();
            unit.resize(start + rest as usize, 0);
            if read_full(info, &mut unit[start..]).map_err(dwarf_err)? != rest as usize {
                return Err(dwarf_err("truncated .debug_info"));
            }
            self.scan_unit(&unit, found)?;
            if found.len() == self.wanted.len() {
                return Ok(runtime_seen);
            }
        }
    }

    /// Name of a unit from the first bytes of it, if its root DIE starts with a
    /// `DW_AT_name` of form `DW_FORM_string` (as Go's linker writes it).
    fn unit_name(&self, head: &[u8]) -> Option<Vec<u8>> {
        let version = u16::from_le_bytes([*head.get(4)?, *head.get(5)?]);
        let (abbrev_off, die_at) = match version {
            2..=4 => (le_u32(head, 6)?, 11),
            5 => (le_u32(head, 8)?, 12),
            _ => return None,
        };
        let abbrevs = self
            .abbrev
            .abbreviations(DebugAbbrevOffset(abbrev_off as usize))
            .ok()?;
        let (code, n) = super::buildinfo::uvarint(head.get(die_at..)?)?;
        let first = *abbrevs.get(code)?.attributes().first()?;
        if first.name() != gimli::DW_AT_name || first.form() != gimli::DW_FORM_string {
            return None;
        }
        super::elf::cstr(head, die_at + n).map(<[u8]>::to_vec)
    }

    fn scan_unit(
        &self,
        unit: &[u8],
        found: &mut BTreeMap<String, StructLayout>,
    ) -> Result<(), GoBinError> {
        let info = DebugInfo::new(unit, LittleEndian);
        let Some(header) = info.units().next().map_err(dwarf_err)? else {
            return Ok(());
        };
        let abbrevs = header.abbreviations(&self.abbrev).map_err(dwarf_err)?;
        let mut cursor = header.entries(&abbrevs);
        let mut depth: isize = 0;
        // (name, depth) of the wanted struct whose members are being collected.
        let mut current: Option<(String, isize)> = None;
        while let Some((delta, e)) = cursor.next_dfs().map_err(dwarf_err)? {
            depth += delta;
            if let Some((_, d)) = &current {
                if depth <= *d {
                    current = None;
                }
            }
            match (e.tag(), &current) {
                (gimli::DW_TAG_structure_type, None) => {
                    let Some(name) = self.name(e)? else { continue };
                    if self.wanted.iter().any(|w| w.as_bytes() == name.as_slice())
                        && !found.contains_key(std::str::from_utf8(&name).unwrap_or(""))
                    {
                        let name = String::from_utf8_lossy(&name).into_owned();
                        let size = e
                            .attr_value(gimli::DW_AT_byte_size)
                            .map_err(dwarf_err)?
                            .and_then(|v| v.udata_value());
                        found.insert(
                            name.clone(),
                            StructLayout {
                                size,
                                members: BTreeMap::new(),
                            },
                        );
                        if e.has_children() {
                            current = Some((name, depth));
                        }
                    }
                }
                (gimli::DW_TAG_member, Some((s, d))) if depth == d + 1 => {
                    let Some(name) = self.name(e)? else { continue };
                    let off = match e
                        .attr_value(gimli::DW_AT_data_member_location)
                        .map_err(dwarf_err)?
                    {
                        Some(AttributeValue::Sdata(v)) => u64::try_from(v).ok(),
                        Some(v) => v.udata_value(),
                        None => None,
                    };
                    if let (Some(off), Some(layout)) = (off, found.get_mut(s)) {
                        layout
                            .members
                            .insert(String::from_utf8_lossy(&name).into_owned(), off);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn name(
        &self,
        e: &gimli::DebuggingInformationEntry<'_, '_, gimli::EndianSlice<'_, LittleEndian>>,
    ) -> Result<Option<Vec<u8>>, GoBinError> {
        Ok(match e.attr_value(gimli::DW_AT_name).map_err(dwarf_err)? {
            Some(AttributeValue::String(s)) => Some(s.slice().to_vec()),
            Some(AttributeValue::DebugStrRef(o)) => {
                self.strs.get_str(o).ok().map(|s| s.slice().to_vec())
            }
            _ => None,
        })
    }
}
