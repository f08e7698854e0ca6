//! Where the pclntab and the module data are, and what `runtime.text` is.
//!
//! Every function address in the pclntab is an offset from `runtime.text`, which is not
//! always the start of `.text`: an external linker (cgo) puts C start-up code first, so Go's
//! text begins later (0x100 bytes in the binaries we build here). The runtime itself takes it
//! from `runtime.firstmoduledata.text`; Go 1.18–1.25 also copy it into the pclntab header
//! (`textStart`), Go 1.26 dropped that copy and moved the module data into its own
//! `.go.module` section (src/cmd/link/internal/ld/data.go).
//!
//! Each candidate value is checked against machine code: the entry of a few runtime
//! functions that always grow the stack must start with the stack-bound check the compiler
//! emits (src/cmd/internal/obj/x86/obj6.go `stacksplit`, obj/arm64/obj7.go). A wrong base
//! lands mid-function and fails the check, so a binary we cannot verify is rejected rather
//! than probed at wrong addresses.

use super::elf::{Arch, ElfInfo, le_u64};
use super::pclntab::Pclntab;

/// How `runtime.text` was determined (for diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSource {
    /// `pcHeader.textStart` (Go 1.18–1.25).
    PclntabHeader,
    /// `moduledata.text` (the runtime's own source of truth).
    ModuleData,
    /// The `runtime.text` symbol in `.symtab`.
    Symbol,
    /// Start of the `.text` section (right for internally linked binaries only).
    TextSection,
}

/// Word index of `text` in `runtime.moduledata`: pcHeader, five slices (funcnametab, cutab,
/// filetab, pctab, pclntable), ftab slice, findfunctab, minpc, maxpc — unchanged 1.18–1.27.
const MODULEDATA_TEXT_WORD: u64 = 1 + 5 * 3 + 3 + 1 + 2;
/// Word index of the `pclntable` slice (pointer, then length).
const MODULEDATA_PCLNTABLE_WORD: u64 = 1 + 4 * 3;

/// Functions that always have a stack-split prologue in every supported Go version.
pub(super) const PROLOGUE_WITNESSES: &[&str] = &[
    "runtime.main",
    "runtime.newproc1",
    "runtime.gcStart",
    "runtime.mallocgc",
];

/// Finds the pclntab: section name, then symbols, then module data, then a scan.
pub(super) fn find_pclntab(elf: &ElfInfo, data: &[u8]) -> Result<Pclntab, String> {
    let mut why = String::from("no .gopclntab section");
    let at = |va: u64, len: Option<u64>| -> Result<Pclntab, &'static str> {
        let off = elf.va_to_offset(va).ok_or("pclntab address not in file")?;
        let mut tab = elf
            .read_va_to_segment_end(data, va)
            .ok_or("pclntab address not in file")?;
        if let Some(len) = len.and_then(|l| usize::try_from(l).ok()) {
            tab = &tab[..len.min(tab.len())];
        }
        Pclntab::parse(tab, va, off as usize)
    };
    // Internal linking names it `.gopclntab`; internally linked PIE `.data.rel.ro.gopclntab`.
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.section(name) {
            let Some(tab) = elf.section_data(data, s) else {
                continue;
            };
            match Pclntab::parse(tab, s.addr, s.offset as usize) {
                Ok(t) => return Ok(t),
                Err(e) => why = format!("{name}: {e}"),
            }
        }
    }
    // Externally linked PIE merges it into .data.rel.ro; the symbols survive unless stripped.
    if let Some((va, _)) = elf.symbol(data, "runtime.pclntab") {
        let len = elf
            .symbol(data, "runtime.epclntab")
            .and_then(|(end, _)| end.checked_sub(va));
        match at(va, len) {
            Ok(t) => return Ok(t),
            Err(e) => why = format!("runtime.pclntab: {e}"),
        }
    }
    for md in moduledata_hints(elf, data) {
        if let Some(va) = elf.read_ptr(data, md) {
            if let Ok(t) = at(va, pclntab_len_from_moduledata(elf, data, md, va)) {
                return Ok(t);
            }
        }
    }
    // Stripped and without telling section names: look for the header itself.
    for seg in elf.segments.iter().filter(|s| !s.is_exec()) {
        let Some(region) = elf.read_va(data, seg.vaddr, seg.filesz as usize) else {
            continue;
        };
        if let Some(t) = super::pclntab::scan(region, seg.vaddr, seg.offset as usize) {
            return Ok(t);
        }
    }
    Err(why)
}

/// Module data addresses that need no scan: the symbol, then Go 1.26+'s `.go.module`.
fn moduledata_hints(elf: &ElfInfo, data: &[u8]) -> Vec<u64> {
    let mut v = Vec::new();
    if let Some((va, _)) = elf.symbol(data, "runtime.firstmoduledata") {
        v.push(va);
    }
    if let Some(s) = elf.section(".go.module") {
        v.push(s.addr);
    }
    v
}

fn pclntab_len_from_moduledata(elf: &ElfInfo, data: &[u8], md: u64, pcln_va: u64) -> Option<u64> {
    let ptr = elf.read_ptr(data, md + 8 * MODULEDATA_PCLNTABLE_WORD)?;
    let len = le_u64(
        elf.read_va(data, md + 8 * (MODULEDATA_PCLNTABLE_WORD + 1), 8)?,
        0,
    )?;
    ptr.checked_add(len)?.checked_sub(pcln_va)
}

/// Finds `runtime.firstmoduledata`: a structure whose first word points at the pcHeader and
/// whose second is `funcnametab`'s data pointer.
pub(super) fn find_moduledata(elf: &ElfInfo, data: &[u8], t: &Pclntab) -> Option<u64> {
    let funcnametab = t.va + t.funcname as u64;
    let is_md = |md: u64| {
        elf.read_ptr(data, md) == Some(t.va) && elf.read_ptr(data, md + 8) == Some(funcnametab)
    };
    if let Some(md) = moduledata_hints(elf, data)
        .into_iter()
        .find(|&md| is_md(md))
    {
        return Some(md);
    }
    let want = t.va.to_le_bytes();
    for seg in elf.segments.iter().filter(|s| s.is_write()) {
        let Some(region) = elf.read_va(data, seg.vaddr, seg.filesz as usize) else {
            continue;
        };
        let first = (8 - (seg.vaddr % 8) as usize) % 8;
        let hit = region
            .get(first..)
            .unwrap_or_default()
            .chunks_exact(8)
            .enumerate()
            .filter(|(_, w)| *w == want)
            .map(|(i, _)| seg.vaddr + (first + 8 * i) as u64)
            .find(|&md| is_md(md));
        if hit.is_some() {
            return hit;
        }
    }
    // A PIE whose linker left relocated slots zero: the addends still say where they are.
    elf.relative_relocs_with_addend(data, t.va)
        .into_iter()
        .find(|&md| is_md(md))
}

/// Candidate values for runtime.text, most authoritative first.
pub(super) fn text_candidates(
    elf: &ElfInfo,
    data: &[u8],
    t: &Pclntab,
    moduledata: Option<u64>,
) -> Vec<(u64, TextSource)> {
    let mut c = Vec::new();
    // Header word 3 (magic/pad/minLC/ptrSize, nfunc, nfiles, textStart).
    if let Some(v) = elf.read_ptr(data, t.va + 24).filter(|&v| v != 0) {
        c.push((v, TextSource::PclntabHeader));
    }
    if let Some(v) = moduledata
        .and_then(|md| elf.read_ptr(data, md + 8 * MODULEDATA_TEXT_WORD))
        .filter(|&v| v != 0)
    {
        c.push((v, TextSource::ModuleData));
    }
    if let Some((v, _)) = elf.symbol(data, "runtime.text") {
        c.push((v, TextSource::Symbol));
    }
    if let Some(s) = elf.section(".text") {
        c.push((s.addr, TextSource::TextSection));
    }
    let mut seen = Vec::new();
    c.retain(|(v, _)| {
        let new = !seen.contains(v);
        seen.push(*v);
        new
    });
    c
}

/// Does `code` (bytes at a function entry) start with Go's stack-bound check?
pub(super) fn has_stack_check(arch: Arch, code: &[u8]) -> bool {
    match arch {
        Arch::Amd64 => {
            // cmp rsp, [r14+0x10|0x18]  (g in R14, ABIInternal, Go >= 1.17)
            let cmp_rsp = |b: &[u8]| matches!(b, [0x49, 0x3b, 0x66, 0x10 | 0x18, ..]);
            // lea r12, [rsp-framesize]; cmp r12, [r14+0x10|0x18]  (large frames)
            let cmp_r12 = |b: &[u8]| matches!(b, [0x4d, 0x3b, 0x66, 0x10 | 0x18, ..]);
            // mov rcx, fs:[-8]  (ABI0 / Go < 1.17 g load)
            let tls =
                |b: &[u8]| b.starts_with(&[0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff]);
            cmp_rsp(code)
                || tls(code)
                || (code.starts_with(&[0x4c, 0x8d, 0x64, 0x24])
                    && cmp_r12(code.get(5..).unwrap_or(&[])))
                || (code.starts_with(&[0x4c, 0x8d, 0xa4, 0x24])
                    && cmp_r12(code.get(8..).unwrap_or(&[])))
        }
        Arch::Arm64 => {
            // ldr x16, [x28, #16|#24] (g in R28) within the first three instructions; larger
            // frames compute sp - framesize first.
            code.chunks_exact(4).take(3).any(|w| {
                let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                w == 0xf940_0b90 || w == 0xf940_0f90
            })
        }
    }
}
