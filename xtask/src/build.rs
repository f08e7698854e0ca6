//! `cargo xtask build`: the kernel object first, then the agent that embeds it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::tools::{self, BpfToolchain};

const BPF_TARGET: &str = "bpfel-unknown-none";

/// Builds the eBPF object and copies it to target/bpf/periscope.bpf.o.
pub fn build_ebpf() -> Result<PathBuf> {
    let root = tools::repo_root();
    let toolchain = tools::bpf_toolchain()?;
    let linker = tools::bpf_linker()?;
    let target_dir = root.join("target/ebpf");
    let mut cmd = match &toolchain {
        BpfToolchain::Debian { cargo, rustc } => {
            let mut c = Command::new(cargo);
            c.env("RUSTC", rustc).env("RUSTC_BOOTSTRAP", "1");
            c.args(["build", "--release", "--target", BPF_TARGET]);
            c
        }
        BpfToolchain::RustupNightly => {
            let mut c = Command::new("cargo");
            c.args([
                "+nightly",
                "build",
                "--release",
                "--target",
                BPF_TARGET,
                "-Z",
                "build-std=core",
            ]);
            c
        }
    };
    cmd.current_dir(root.join("ebpf"))
        .arg("--target-dir")
        .arg(&target_dir)
        // A global RUSTFLAGS would replace the per-target flags below.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env(
            "CARGO_TARGET_BPFEL_UNKNOWN_NONE_RUSTFLAGS",
            "-C debuginfo=2 -C link-arg=--btf",
        );
    eprintln!("xtask: building eBPF programs ({})", toolchain.describe());
    tools::run(&mut cmd).context("building the eBPF programs")?;
    let built = target_dir.join(BPF_TARGET).join("release/periscope");
    let dest = root.join("target/bpf/periscope.bpf.o");
    std::fs::create_dir_all(dest.parent().unwrap())?;
    // Copy only when changed so the agent's build script does not rerun needlessly.
    let new = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    if std::fs::read(&dest).ok().as_deref() != Some(&new[..]) {
        std::fs::write(&dest, &new)?;
    }
    Ok(dest)
}

/// Builds the eBPF object and the agent (release), returning the agent's path.
pub fn build_all() -> Result<PathBuf> {
    let obj = build_ebpf()?;
    let root = tools::repo_root();
    eprintln!("xtask: building the agent");
    tools::run(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "periscope",
                "--bin",
                "periscope",
            ])
            .env("PERISCOPE_EBPF_OBJECT", &obj),
    )?;
    let bin = root.join("target/release/periscope");
    split_debuginfo(&bin)?;
    Ok(bin)
}

/// Ships the binary without its debug info (85 MB with it, most of it DWARF line tables),
/// keeping that in `periscope.debug` beside it, linked by `.gnu_debuglink` so gdb and
/// addr2line still find it — as distributions ship `-dbgsym` packages. Symbols stay in the
/// binary, so a panic's backtrace still names functions.
fn split_debuginfo(bin: &Path) -> Result<()> {
    let debug = bin.with_extension("debug");
    let has_debug = object_has_debug_info(bin)?;
    if !has_debug {
        // Already split (cargo left the binary as it was): nothing to do.
        return Ok(());
    }
    tools::run(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(bin)
            .arg(&debug),
    )
    .context("objcopy --only-keep-debug (binutils)")?;
    let stripped = bin.with_extension("stripped");
    tools::run(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(bin)
            .arg(&stripped),
    )
    .context("objcopy --strip-debug (binutils)")?;
    // A rename, not a write in place: target/release/periscope is a hard link to cargo's
    // own copy under deps/, which must keep its debug info for the next incremental link.
    std::fs::rename(&stripped, bin)?;
    eprintln!(
        "xtask: {} is {} MB without debug info ({} MB of it in {})",
        bin.display(),
        std::fs::metadata(bin)?.len() >> 20,
        std::fs::metadata(&debug)?.len() >> 20,
        debug.display()
    );
    Ok(())
}

/// True when the ELF file has a `.debug_info` section.
fn object_has_debug_info(path: &Path) -> Result<bool> {
    let out = Command::new("objdump")
        .arg("-h")
        .arg(path)
        .output()
        .context("objdump -h (binutils)")?;
    Ok(String::from_utf8_lossy(&out.stdout).contains(".debug_info"))
}
