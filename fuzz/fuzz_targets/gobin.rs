//! The Go binary readers (ELF, build info, pclntab, module data, DWARF, RET-site
//! disassembly) on a real Go binary with fuzzer-chosen bytes overwritten: the shape of a
//! corrupted or hostile target. `PERISCOPE_FUZZ_GOBIN` names the binary (`cargo xtask
//! fuzz` builds a small one); without it the target fuzzes whole files, which mostly
//! exercises the ELF header checks.
//!
//! Oracle: no panic, no hang, bounded memory (libFuzzer's -rss_limit_mb and -timeout).
#![no_main]

use std::{io::Write, sync::OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use periscope::runtime::gobin::GoBinary;

#[derive(Arbitrary, Debug)]
struct Input {
    /// (where, what): offsets are taken modulo the file's length; a patch near a
    /// structure's start is the interesting case, so some offsets land relative to the
    /// pclntab and build info (the low bit of `base` picks which).
    patches: Vec<(u8, u32, Vec<u8>)>,
}

fn seed() -> &'static Vec<u8> {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        std::env::var_os("PERISCOPE_FUZZ_GOBIN")
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_default()
    })
}

/// File offsets of the structures worth hitting: section starts.
fn anchors() -> &'static Vec<usize> {
    static ANCHORS: OnceLock<Vec<usize>> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        let s = seed();
        let mut v = vec![0usize];
        for magic in [
            &b"\xff Go buildinf:"[..],
            &[0xf1, 0xff, 0xff, 0xff, 0, 0][..],
            &[0xf0, 0xff, 0xff, 0xff, 0, 0][..],
        ] {
            if let Some(i) = s.windows(magic.len()).position(|w| w == magic) {
                v.push(i);
            }
        }
        v
    })
}

fuzz_target!(|input: Input| {
    let mut file = seed().clone();
    if file.is_empty() {
        return;
    }
    for (base, off, bytes) in input.patches.iter().take(16) {
        let anchors = anchors();
        let start = anchors[*base as usize % anchors.len()];
        let at = (start + (*off as usize % 4096)) % file.len();
        let end = (at + bytes.len()).min(file.len());
        file[at..end].copy_from_slice(&bytes[..end - at]);
    }
    let dir = std::env::temp_dir();
    let path = dir.join(format!("periscope-fuzz-gobin-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&file).unwrap();
    drop(f);
    let Ok(bin) = GoBinary::open(&path) else {
        return;
    };
    let _ = bin.build_info();
    let _ = bin.go_version();
    let _ = bin.offsets();
    let _ = bin.allgs_address();
    let _ = bin.allgs_address_from_code();
    for name in [
        "runtime.allgadd",
        "runtime.newproc1",
        "runtime.gcMarkTermination",
        "net/http.(*conn).serve",
        "main.main",
    ] {
        if let Some(f) = bin.find_function(name) {
            let _ = bin.exits(&f);
            let _ = bin.ret_offsets(&f);
            let _ = bin.file_line(f.entry);
        }
    }
    for f in bin.functions().take(64) {
        let _ = bin.file_line(f.entry);
        let _ = bin.code(&f);
    }
});
