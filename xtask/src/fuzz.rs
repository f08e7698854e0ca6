//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` (cargo fuzz, on the nightly
//! toolchain rustup has here) and runs each from its checked-in seed corpus, for a time
//! or a number of executions, then prints executions and corpus size per target.
//!
//! The checked-in corpus (`fuzz/corpus/<target>`) is only read; what a run discovers goes
//! to `target/fuzz/corpus/<target>`, so a run never dirties the tree. A crash leaves its
//! input under `fuzz/artifacts/<target>` and fails the command.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::tools;

pub const TARGETS: &[&str] = &["http_stream", "tracker_events", "gobin", "frame", "h2"];
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// How long each target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Seconds(u64),
    Runs(u64),
}

/// cargo-fuzz from PATH, else built once into .tools.
fn cargo_fuzz() -> Result<PathBuf> {
    let local = tools::tools_dir().join("bin/cargo-fuzz");
    if local.exists() {
        return Ok(local);
    }
    eprintln!(
        "xtask: building cargo-fuzz {CARGO_FUZZ_VERSION} into {} (about 2 min, once)",
        tools::tools_dir().display()
    );
    tools::run(
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked", "--version"])
            .arg(CARGO_FUZZ_VERSION)
            .arg("--root")
            .arg(tools::tools_dir()),
    )?;
    Ok(local)
}

/// A small stripped Go program, for the `gobin` target to corrupt.
fn go_seed(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/fuzz/goserver-seed");
    if out.exists() {
        return Ok(out);
    }
    let go = tools::go_toolchains(&["1.25"])?;
    let (_, go) = &go[0];
    std::fs::create_dir_all(out.parent().unwrap())?;
    tools::run(
        Command::new(go)
            .current_dir(root.join("tests/programs/goserver"))
            .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
            .arg(&out)
            .arg(".")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", tools::go_cache()),
    )
    .context("building the Go seed binary for the gobin fuzz target")?;
    Ok(out)
}

pub fn fuzz(budget: Budget) -> Result<()> {
    let root = tools::repo_root();
    let cargo_fuzz = cargo_fuzz()?;
    let seed = go_seed(&root)?;
    let obj = root.join("target/bpf/periscope.bpf.o");
    let fuzz_cmd = |sub: &str| {
        let mut c = Command::new("cargo");
        // rustup's nightly: cargo-fuzz needs -Z flags for its coverage instrumentation.
        c.current_dir(root.join("fuzz"))
            .arg("+nightly")
            .arg("fuzz")
            .arg(sub)
            .args(["--sanitizer", "none"])
            .env("PATH", path_with(&cargo_fuzz))
            .env("CARGO_TARGET_DIR", root.join("target/fuzz/build"))
            .env("PERISCOPE_EBPF_OBJECT", &obj)
            .env("PERISCOPE_FUZZ_GOBIN", &seed)
            .env_remove("RUSTFLAGS");
        c
    };
    eprintln!("xtask: building the fuzz targets (nightly, coverage-instrumented)");
    tools::run(&mut fuzz_cmd("build"))?;
    let mut rows = Vec::new();
    for target in TARGETS {
        let seeds = root.join("fuzz/corpus").join(target);
        let work = root.join("target/fuzz/corpus").join(target);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&seeds)?;
        let mut cmd = fuzz_cmd("run");
        cmd.arg(target).arg(&work).arg(&seeds).arg("--");
        match budget {
            Budget::Seconds(s) => cmd.arg(format!("-max_total_time={s}")),
            Budget::Runs(n) => cmd.arg(format!("-runs={n}")),
        };
        cmd.args([
            "-rss_limit_mb=1024",
            "-timeout=10",
            "-max_len=16384",
            "-print_final_stats=1",
        ]);
        if *target != "gobin" {
            cmd.arg(format!(
                "-dict={}",
                root.join("fuzz/dict/http.dict").display()
            ));
        }
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            eprintln!("{}", tail(&stderr, 6000));
            bail!("fuzz target {target} failed (its input is under fuzz/artifacts/{target})");
        }
        let runs = stat(&stderr, "stat::number_of_executed_units:").unwrap_or(0);
        let peak = stat(&stderr, "stat::peak_rss_mb:").unwrap_or(0);
        let corpus = std::fs::read_dir(&work)?.count();
        rows.push((target, runs, corpus, peak, start.elapsed().as_secs()));
    }
    eprintln!("xtask: fuzz results (libFuzzer, --sanitizer none)");
    eprintln!(
        "  {:<16} {:>12} {:>8} {:>9} {:>6}",
        "target", "executions", "corpus", "peak MiB", "secs"
    );
    for (t, runs, corpus, peak, secs) in rows {
        eprintln!("  {t:<16} {runs:>12} {corpus:>8} {peak:>9} {secs:>6}");
    }
    Ok(())
}

fn stat(stderr: &str, key: &str) -> Option<u64> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().ok()))?
}

fn path_with(cargo_fuzz: &Path) -> String {
    format!(
        "{}:{}",
        cargo_fuzz.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
