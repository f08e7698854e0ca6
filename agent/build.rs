//! Embeds the kernel object built by `cargo xtask build` into the agent binary.
//!
//! The eBPF crate needs its own toolchain setup (bpfel target, bpf-linker), which xtask
//! drives; this script only picks up the result. Without it (a plain `cargo build` or
//! `cargo clippy`) an empty object is embedded and the agent refuses to start with a
//! one-line error that says how to build it properly.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("periscope.bpf.o");
    println!("cargo:rerun-if-env-changed=PERISCOPE_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let src = env::var_os("PERISCOPE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpf/periscope.bpf.o"));
    println!("cargo:rerun-if-changed={}", src.display());
    match fs::read(&src) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object {} not found; the agent will not start. Build with `cargo xtask build`.",
                src.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
