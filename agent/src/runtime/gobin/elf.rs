//! The little of ELF that Go binary analysis needs: segments (to turn virtual addresses into
//! file offsets), a handful of section headers, `.symtab` lookups and `R_*_RELATIVE` addends.
//!
//! Everything borrows from the mapped file; the only allocations are the segment and section
//! lists (a few dozen entries). Symbol and relocation tables are re-read on each lookup
//! instead of being indexed, because the agent asks for a handful of symbols once per binary
//! and an index of a large `.symtab` would cost more memory than the lookups cost time.

use object::LittleEndian as LE;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Rela, SectionHeader, Sym};

use super::GoBinError;

type Header = elf::FileHeader64<LE>;

/// CPU architecture of the binary; only these two are recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86-64: fully supported.
    Amd64,
    /// AArch64: symbols, lines and build info work; RET decoding is not implemented.
    Arm64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    /// Size in memory (`p_memsz`): includes the zero-filled tail (.bss, .noptrbss).
    pub memsz: u64,
    pub flags: u32,
}

impl Segment {
    pub fn is_exec(&self) -> bool {
        self.flags & elf::PF_X.0 != 0
    }
    pub fn is_write(&self) -> bool {
        self.flags & elf::PF_W.0 != 0
    }
}

#[derive(Debug, Clone)]
pub(super) struct Section {
    pub name: String,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub flags: u64,
    pub nobits: bool,
}

impl Section {
    /// `SHF_COMPRESSED` (ELF gABI compressed debug section, `Elf64_Chdr` prefix).
    pub fn is_compressed(&self) -> bool {
        self.flags & elf::SHF_COMPRESSED.0 != 0
    }
}

#[derive(Debug)]
pub(super) struct ElfInfo {
    pub arch: Arch,
    /// `ET_DYN`: position-independent executable (or shared object).
    pub is_dyn: bool,
    pub segments: Vec<Segment>,
    pub sections: Vec<Section>,
}

fn header(data: &[u8]) -> Result<&Header, GoBinError> {
    if data.len() < 20 || &data[..4] != b"\x7fELF" {
        return Err(GoBinError::NotElf);
    }
    // e_ident[EI_CLASS] == ELFCLASS64, e_ident[EI_DATA] == ELFDATA2LSB
    if data[4] != 2 || data[5] != 1 {
        return Err(GoBinError::Unsupported(
            "only 64-bit little-endian ELF is supported".into(),
        ));
    }
    Header::parse(data).map_err(|e| GoBinError::Malformed(format!("elf header: {e}")))
}

impl ElfInfo {
    pub fn parse(data: &[u8]) -> Result<Self, GoBinError> {
        let hdr = header(data)?;
        let arch = match hdr.e_machine(LE) {
            elf::EM_X86_64 => Arch::Amd64,
            elf::EM_AARCH64 => Arch::Arm64,
            other => {
                return Err(GoBinError::Unsupported(format!(
                    "elf machine {other} (only x86-64 and aarch64)"
                )));
            }
        };
        let malformed =
            |what: &str, e: object::read::Error| GoBinError::Malformed(format!("elf {what}: {e}"));
        let segments = hdr
            .program_headers(LE, data)
            .map_err(|e| malformed("program headers", e))?
            .iter()
            .filter(|p| p.p_type(LE) == elf::PT_LOAD)
            .map(|p| Segment {
                vaddr: p.p_vaddr(LE),
                offset: p.p_offset(LE),
                filesz: p.p_filesz(LE),
                memsz: p.p_memsz(LE),
                flags: p.p_flags(LE).0,
            })
            .collect();
        // A binary run through `sstrip` has no section headers; that is not an error, the
        // fallbacks (symbol-free moduledata and pclntab scans) cover it.
        let sections = match hdr.sections(LE, data) {
            Ok(table) => table
                .iter()
                .map(|s| Section {
                    name: String::from_utf8_lossy(table.section_name(LE, s).unwrap_or_default())
                        .into_owned(),
                    addr: s.sh_addr(LE),
                    offset: s.sh_offset(LE),
                    size: s.sh_size(LE),
                    flags: s.sh_flags(LE).0,
                    nobits: s.sh_type(LE) == elf::SHT_NOBITS,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(ElfInfo {
            arch,
            is_dyn: hdr.e_type(LE) == elf::ET_DYN,
            segments,
            sections,
        })
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File bytes of a section (never for `SHT_NOBITS`).
    pub fn section_data<'a>(&self, data: &'a [u8], s: &Section) -> Option<&'a [u8]> {
        if s.nobits {
            return None;
        }
        let start = usize::try_from(s.offset).ok()?;
        let end = start.checked_add(usize::try_from(s.size).ok()?)?;
        data.get(start..end)
    }

    /// The loadable segment whose file-backed part contains `va`.
    pub fn segment_for(&self, va: u64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| va >= s.vaddr && va - s.vaddr < s.filesz)
    }

    /// Whether `va..va+len` lies in writable, non-executable data of the image (.data, .bss,
    /// .noptrdata, .noptrbss...): from the section headers when there are any, else from the
    /// writable loadable segments (memory size, so zero-filled .bss counts).
    pub fn is_writable_data(&self, va: u64, len: u64) -> bool {
        let Some(end) = va.checked_add(len) else {
            return false;
        };
        let inside = |start: u64, size: u64| va >= start && end <= start.saturating_add(size);
        if !self.sections.is_empty() {
            let want = elf::SHF_ALLOC.0 | elf::SHF_WRITE.0;
            return self.sections.iter().any(|s| {
                s.flags & want == want
                    && s.flags & elf::SHF_EXECINSTR.0 == 0
                    && inside(s.addr, s.size)
            });
        }
        self.segments
            .iter()
            .any(|s| s.is_write() && !s.is_exec() && inside(s.vaddr, s.memsz))
    }

    pub fn va_to_offset(&self, va: u64) -> Option<u64> {
        let s = self.segment_for(va)?;
        Some(va - s.vaddr + s.offset)
    }

    pub fn offset_to_va(&self, off: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| off >= s.offset && off - s.offset < s.filesz)
            .map(|s| off - s.offset + s.vaddr)
    }

    /// `len` file-backed bytes at `va`, all within one segment.
    pub fn read_va<'a>(&self, data: &'a [u8], va: u64, len: usize) -> Option<&'a [u8]> {
        let s = self.segment_for(va)?;
        if (len as u64) > s.filesz - (va - s.vaddr) {
            return None;
        }
        let start = usize::try_from(va - s.vaddr + s.offset).ok()?;
        data.get(start..start.checked_add(len)?)
    }

    /// Everything from `va` to the end of its segment's file-backed part.
    pub fn read_va_to_segment_end<'a>(&self, data: &'a [u8], va: u64) -> Option<&'a [u8]> {
        let s = self.segment_for(va)?;
        let len = usize::try_from(s.filesz - (va - s.vaddr)).ok()?;
        self.read_va(data, va, len)
    }

    /// A pointer-sized word stored at `va`. Position-independent binaries may leave the slot
    /// zero and carry the value as the addend of an `R_*_RELATIVE` relocation (both Go's
    /// internal linker and GNU ld write the addend into the slot too, but nothing requires it).
    pub fn read_ptr(&self, data: &[u8], va: u64) -> Option<u64> {
        let v = le_u64(self.read_va(data, va, 8)?, 0)?;
        if v == 0 && self.is_dyn {
            if let Some(addend) = self.relative_reloc_at(data, va) {
                return Some(addend);
            }
        }
        Some(v)
    }

    fn relative_type(&self) -> elf::RelocationType {
        match self.arch {
            Arch::Amd64 => elf::R_X86_64_RELATIVE,
            Arch::Arm64 => elf::R_AARCH64_RELATIVE,
        }
    }

    fn relas<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a elf::Rela64<LE>> + 'a {
        let tables: Vec<&'a [elf::Rela64<LE>]> = header(data)
            .ok()
            .and_then(|h| h.sections(LE, data).ok())
            .map(|t| {
                t.iter()
                    .filter(|s| s.sh_type(LE) == elf::SHT_RELA)
                    .filter_map(|s| s.data_as_array::<elf::Rela64<LE>, _>(LE, data).ok())
                    .collect()
            })
            .unwrap_or_default();
        tables.into_iter().flatten()
    }

    pub fn relative_reloc_at(&self, data: &[u8], va: u64) -> Option<u64> {
        let ty = self.relative_type();
        self.relas(data)
            .find(|r| r.r_offset(LE) == va && r.r_type(LE, false) == ty)
            .map(|r| r.r_addend(LE) as u64)
    }

    /// Addresses of slots whose `R_*_RELATIVE` addend is `addend`.
    pub fn relative_relocs_with_addend(&self, data: &[u8], addend: u64) -> Vec<u64> {
        let ty = self.relative_type();
        self.relas(data)
            .filter(|r| r.r_addend(LE) as u64 == addend && r.r_type(LE, false) == ty)
            .map(|r| r.r_offset(LE))
            .collect()
    }

    /// Value and size of a `.symtab` symbol (absent in stripped binaries).
    pub fn symbol(&self, data: &[u8], name: &str) -> Option<(u64, u64)> {
        let hdr = header(data).ok()?;
        let sections = hdr.sections(LE, data).ok()?;
        let symtab = sections.symbols(LE, data, elf::SHT_SYMTAB).ok()?;
        let strings = symtab.strings();
        symtab
            .iter()
            .find(|s| s.name(LE, strings).ok() == Some(name.as_bytes()))
            .map(|s| (s.st_value(LE), s.st_size(LE)))
    }

    pub fn has_symtab(&self) -> bool {
        self.sections.iter().any(|s| s.name == ".symtab")
    }
}

pub(super) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(super) fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The NUL-terminated string at `off`.
pub(super) fn cstr(b: &[u8], off: usize) -> Option<&[u8]> {
    let rest = b.get(off..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    Some(&rest[..n])
}
