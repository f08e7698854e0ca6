//! The Go 1.18+ pc/line table ("pclntab"): function entries and names, and the pc-value
//! tables that map a pc to its file and line. Works on stripped binaries, which is why the
//! agent uses it instead of `.symtab`/DWARF.
//!
//! Layout (src/runtime/symtab.go, `pcHeader`, `_func`, `functab`, `pcvalue`):
//! ```text
//! pcHeader: magic u32 | pad u8 u8 | minLC u8 | ptrSize u8 | nfunc | nfiles | textStart* |
//!           funcnameOffset | cuOffset | filetabOffset | pctabOffset | pclnOffset  (words)
//! pclntable (at pclnOffset): functab[nfunc+1] {entryoff u32, funcoff u32}, then _func records
//! _func: entryOff u32 | nameOff i32 | args | deferreturn | pcsp | pcfile | pcln | npcdata |
//!        cuOffset | (1.20+: startLine) | funcID | flag | _ | nfuncdata | pcdata... | funcdata...
//! ```
//! `*` textStart is filled for 1.18–1.25; Go 1.26 stopped writing it (the slot stays, zero),
//! so runtime.text then comes from the module data (see `text.rs`). All function addresses
//! are stored as u32 offsets from runtime.text; this module works in those offsets only.

use super::buildinfo::uvarint;
use super::elf::{cstr, le_u32, le_u64};

/// Go 1.18–1.19.
pub(super) const MAGIC_118: u32 = 0xffff_fff0;
/// Go 1.20 and later.
pub(super) const MAGIC_120: u32 = 0xffff_fff1;

/// Size of the header words we use: magic..pclnOffset with 8-byte words.
const HEADER_LEN: usize = 8 + 8 * 8;

/// Offsets into the `_func` record that are the same from Go 1.18 to 1.27.
const FUNC_NAMEOFF: usize = 4;
const FUNC_PCFILE: usize = 20;
const FUNC_PCLN: usize = 24;
const FUNC_CUOFFSET: usize = 32;
/// Through `nfuncdata`: `cuOffset`, (1.20+: `startLine` i32), `funcID`, `flag`, pad,
/// `nfuncdata`; so `flag` is at 37 for 1.18–1.19 and 41 later.
const FUNC_MIN_LEN: usize = 44;

#[derive(Debug, Clone)]
pub(super) struct Pclntab {
    pub magic: u32,
    /// Virtual address of the pcHeader.
    pub va: u64,
    /// File offset of the pcHeader and the length of the table in the file.
    pub file_off: usize,
    pub len: usize,
    pub min_lc: u8,
    pub nfunc: u32,
    pub funcname: usize,
    pub cu: usize,
    pub filetab: usize,
    pub pctab: usize,
    pub pcln: usize,
}

/// The fields of one `_func` record the analysis needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct FuncRec {
    pub entry_off: u32,
    pub name_off: u32,
    pub pcfile: u32,
    pub pcln: u32,
    pub cu_offset: u32,
    /// `abi.FuncFlag` bits.
    pub flag: u8,
}

/// `abi.FuncFlagAsm` (same bit in 1.19's `funcFlag_ASM`): implemented in assembly.
pub(super) const FUNC_FLAG_ASM: u8 = 1 << 2;

impl Pclntab {
    /// Parses and sanity-checks a pcHeader at the start of `tab` (which may extend past the
    /// table's end; the header's offsets bound what is used). Returns why it is not one.
    pub fn parse(tab: &[u8], va: u64, file_off: usize) -> Result<Pclntab, &'static str> {
        if tab.len() < HEADER_LEN {
            return Err("pclntab header truncated");
        }
        let magic = le_u32(tab, 0).ok_or("truncated")?;
        if magic != MAGIC_118 && magic != MAGIC_120 {
            return Err("unknown pclntab magic (Go older than 1.18?)");
        }
        let (pad1, pad2, min_lc, ptr_size) = (tab[4], tab[5], tab[6], tab[7]);
        if pad1 != 0 || pad2 != 0 || !matches!(min_lc, 1 | 2 | 4) {
            return Err("bad pclntab header");
        }
        if ptr_size != 8 {
            return Err("only 64-bit pclntab is supported");
        }
        let word = |i: usize| le_u64(tab, 8 + 8 * i).unwrap_or(u64::MAX);
        let nfunc = word(0);
        let small = |v: u64| usize::try_from(v).ok().filter(|&v| v < tab.len());
        let funcname = small(word(3)).ok_or("bad funcname offset")?;
        let cu = small(word(4)).ok_or("bad cutab offset")?;
        let filetab = small(word(5)).ok_or("bad filetab offset")?;
        let pctab = small(word(6)).ok_or("bad pctab offset")?;
        let pcln = small(word(7)).ok_or("bad pclntable offset")?;
        if nfunc == 0 || nfunc > 50_000_000 {
            return Err("implausible function count");
        }
        if !(HEADER_LEN <= funcname
            && funcname <= cu
            && cu <= filetab
            && filetab <= pctab
            && pctab <= pcln)
        {
            return Err("pclntab sub-tables out of order");
        }
        let nfunc = nfunc as u32;
        let functab_end = pcln + (nfunc as usize + 1) * 8;
        if functab_end > tab.len() {
            return Err("functab truncated");
        }
        let t = Pclntab {
            magic,
            va,
            file_off,
            len: tab.len(),
            min_lc,
            nfunc,
            funcname,
            cu,
            filetab,
            pctab,
            pcln,
        };
        // The functab must be sorted; spot-check its ends and the first record.
        let first = t.functab(tab, 0).ok_or("functab truncated")?;
        let last = t.functab(tab, nfunc as usize).ok_or("functab truncated")?;
        if first.0 > last.0 {
            return Err("functab not sorted");
        }
        let rec = t.func(tab, 0).ok_or("first _func record out of range")?;
        if rec.entry_off != first.0 {
            return Err("_func entry does not match functab");
        }
        Ok(t)
    }

    /// Functab slot `i` (`0..=nfunc`; slot `nfunc` is the end-of-text sentinel):
    /// (entry offset from runtime.text, _func offset from the pclntable start).
    pub fn functab(&self, tab: &[u8], i: usize) -> Option<(u32, u32)> {
        let at = self.pcln + i * 8;
        Some((le_u32(tab, at)?, le_u32(tab, at + 4)?))
    }

    pub fn func(&self, tab: &[u8], i: usize) -> Option<FuncRec> {
        if i >= self.nfunc as usize {
            return None;
        }
        let (_, funcoff) = self.functab(tab, i)?;
        let at = self.pcln.checked_add(funcoff as usize)?;
        let rec = tab.get(at..at.checked_add(FUNC_MIN_LEN)?)?;
        Some(FuncRec {
            entry_off: le_u32(rec, 0)?,
            name_off: le_u32(rec, FUNC_NAMEOFF)?,
            pcfile: le_u32(rec, FUNC_PCFILE)?,
            pcln: le_u32(rec, FUNC_PCLN)?,
            cu_offset: le_u32(rec, FUNC_CUOFFSET)?,
            flag: rec[if self.magic == MAGIC_118 { 37 } else { 41 }],
        })
    }

    /// Entry offset of function `i` and of the next function (its exclusive end).
    pub fn bounds(&self, tab: &[u8], i: usize) -> Option<(u32, u32)> {
        Some((self.functab(tab, i)?.0, self.functab(tab, i + 1)?.0))
    }

    pub fn name<'a>(&self, tab: &'a [u8], name_off: u32) -> Option<&'a [u8]> {
        cstr(tab, self.funcname.checked_add(name_off as usize)?)
    }

    /// Index of the function containing text offset `off`, by binary search of the functab.
    pub fn find(&self, tab: &[u8], off: u64) -> Option<usize> {
        let n = self.nfunc as usize;
        let (first, _) = self.functab(tab, 0)?;
        let (end, _) = self.functab(tab, n)?;
        if off < u64::from(first) || off >= u64::from(end) {
            return None;
        }
        // Largest i with entry(i) <= off.
        let (mut lo, mut hi) = (0usize, n);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if u64::from(self.functab(tab, mid)?.0) <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The value of pc-value table `table` (an offset into pctab) at text offset `target`,
    /// for a function starting at text offset `entry` (runtime `pcvalue`/`step`).
    pub fn pcvalue(&self, tab: &[u8], table: u32, entry: u64, target: u64) -> Option<i32> {
        if table == 0 {
            return None;
        }
        let mut p = tab.get(self.pctab.checked_add(table as usize)?..)?;
        let mut val: i32 = -1;
        let mut pc = entry;
        let mut first = true;
        loop {
            let (uv, n) = uvarint(p)?;
            if uv == 0 && !first {
                return None;
            }
            first = false;
            p = &p[n..];
            let uv = uv as u32;
            // Zig-zag: -(uv & 1) ^ (uv >> 1).
            let delta = ((uv >> 1) as i32) ^ -((uv & 1) as i32);
            val = val.wrapping_add(delta);
            let (pcdelta, n) = uvarint(p)?;
            p = &p[n..];
            pc = pc.checked_add(pcdelta.checked_mul(u64::from(self.min_lc))?)?;
            if target < pc {
                return Some(val);
            }
        }
    }

    /// Name of file number `fileno` of the compilation unit at `cu_offset`.
    pub fn file_name<'a>(&self, tab: &'a [u8], cu_offset: u32, fileno: i32) -> Option<&'a [u8]> {
        if cu_offset == u32::MAX || fileno < 0 {
            return None;
        }
        let idx = (cu_offset as usize).checked_add(fileno as usize)?;
        let off = le_u32(tab, self.cu.checked_add(idx.checked_mul(4)?)?)?;
        if off == u32::MAX {
            return None;
        }
        cstr(tab, self.filetab.checked_add(off as usize)?)
    }
}

/// Scans `region` (8-byte aligned, at file offset `file_off`, virtual address `va`) for a
/// pcHeader that parses; used when neither section names nor symbols say where it is.
pub(super) fn scan(region: &[u8], va: u64, file_off: usize) -> Option<Pclntab> {
    let m118 = MAGIC_118.to_le_bytes();
    let m120 = MAGIC_120.to_le_bytes();
    let first = (8 - (va % 8) as usize) % 8;
    (first..region.len().saturating_sub(HEADER_LEN))
        .step_by(8)
        .filter(|&i| {
            let head = &region[i..i + 4];
            (head == m118 || head == m120) && region[i + 4] == 0 && region[i + 5] == 0
        })
        .find_map(|i| Pclntab::parse(&region[i..], va + i as u64, file_off + i).ok())
}

#[cfg(test)]
mod unit {
    use super::*;

    fn table_with(pctab: &[u8]) -> (Pclntab, Vec<u8>) {
        let mut tab = vec![0u8; 16];
        tab.extend_from_slice(pctab);
        let t = Pclntab {
            magic: MAGIC_120,
            va: 0,
            file_off: 0,
            len: tab.len(),
            min_lc: 1,
            nfunc: 0,
            funcname: 0,
            cu: 0,
            filetab: 0,
            pctab: 0,
            pcln: 0,
        };
        (t, tab)
    }

    #[test]
    fn pcvalue_steps() {
        // value 10 for [0,4), 12 for [4,0x84), 11 for [0x84,0x85), end.
        // uvdelta 22 -> +11 from -1 = 10; pcdelta 4.
        // uvdelta 4 -> +2 = 12; pcdelta 0x80 (varint 0x80 0x01).
        // uvdelta 1 -> -1 = 11; pcdelta 1. Then 0 terminates.
        let (t, tab) = table_with(&[22, 4, 4, 0x80, 0x01, 1, 1, 0]);
        assert_eq!(t.magic, MAGIC_120);
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x100), Some(10));
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x103), Some(10));
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x104), Some(12));
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x183), Some(12));
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x184), Some(11));
        assert_eq!(t.pcvalue(&tab, 16, 0x100, 0x185), None);
    }

    #[test]
    fn pcvalue_truncated_is_none() {
        let (t, tab) = table_with(&[22, 0x80]);
        assert_eq!(t.pcvalue(&tab, 16, 0, 100), None);
        assert_eq!(t.pcvalue(&tab, 999, 0, 0), None);
    }

    #[test]
    fn garbage_headers_rejected() {
        assert!(Pclntab::parse(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8], 0, 0).is_err());
        let mut h = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        h.extend_from_slice(&[0xff; 64]);
        assert!(Pclntab::parse(&h, 0, 0).is_err());
        assert!(scan(&h, 0, 0).is_none());
    }
}
