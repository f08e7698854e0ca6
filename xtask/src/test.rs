//! `cargo xtask test`: unit tests, then the end-to-end suite against real programs.
//!
//! The end-to-end suite loads the real eBPF programs, so it needs root; it also needs
//! nginx, python3 and Go toolchains, which are installed here when missing.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{build, tools};

/// Go versions the end-to-end suite builds its Go targets with.
pub const GO_VERSIONS: &[&str] = &["1.21", "1.23", "1.25", "1.27"];

pub fn prerequisites() -> Result<(std::path::PathBuf, String)> {
    tools::apt_install(
        &[
            "nginx",
            "curl",
            "python3",
            "python3-venv",
            "gcc",
            "libc6-dev",
            "prometheus",
            "yamllint",
            "strace",
            // systemd-analyze for the deploy checks; busybox httpd serves each connection
            // from a forked child on dup2'ed fds 0/1 (inetd-style).
            "systemd",
            "busybox",
            // client_golang sources for GOPATH builds: the truth for go_* series.
            "golang-github-prometheus-client-golang-dev",
            // grpc-go sources (1.33) for GOPATH builds: a gRPC server and client in Go.
            "golang-google-grpc-dev",
            // Debian's Go 1.19 (prometheus is built with it): the Go binary unit tests
            // check offsets and runtime globals found from code against its builds too.
            "golang-1.19-go",
            // More servers for the conformance suite, each checked against its own
            // access log (apache2 event and prefork, lighttpd, gunicorn, node http).
            "apache2",
            "lighttpd",
            "gunicorn",
            "nodejs",
            // h2load and nghttp: HTTP/2 load and clients for the h2 suite.
            "nghttp2-client",
        ],
        "real servers, clients and metrics consumers (promtool, Prometheus) the end-to-end tests use",
    )?;
    let go = tools::go_toolchains(GO_VERSIONS)?;
    let go_env = go
        .iter()
        .map(|(v, p)| format!("{v}={}", p.display()))
        .collect::<Vec<_>>()
        .join(",");
    // grpcio's standard health service: a gRPC server and client with no code generation.
    tools::pip_venv(
        "grpc",
        &["grpcio==1.85.*", "grpcio-health-checking==1.85.*"],
        "the gRPC server and client of the h2 end-to-end tests",
    )?;
    let agent = build::build_all()?;
    Ok((agent, go_env))
}

pub fn test(filter: Option<String>) -> Result<()> {
    if !tools::is_root() {
        bail!(
            "the test suite loads eBPF programs and must run as root: `sudo -E cargo xtask test` (or run `cargo test` for unit tests only)"
        );
    }
    let (agent, go_env) = prerequisites()?;
    let root = tools::repo_root();
    let obj = root.join("target/bpf/periscope.bpf.o");
    eprintln!("xtask: unit tests");
    tools::run(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["test", "--workspace", "--exclude", "periscope-e2e"])
            .env("PERISCOPE_EBPF_OBJECT", &obj),
    )?;
    eprintln!("xtask: end-to-end tests (real eBPF, real servers)");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(&root)
        // Every test binary runs even after one fails: CI then shows all failures.
        .args(["test", "-p", "periscope-e2e", "--no-fail-fast", "--"])
        .arg("--test-threads=1")
        .env("PERISCOPE_EBPF_OBJECT", &obj)
        .env("PERISCOPE_BIN", &agent)
        .env("PERISCOPE_GO_TOOLCHAINS", &go_env)
        .env(
            "PERISCOPE_GRPC_PYTHON",
            tools::tools_dir().join("grpc/bin/python"),
        );
    if let Some(f) = &filter {
        cmd.arg(f);
    }
    tools::run(&mut cmd)?;
    if filter.as_deref().is_none_or(|f| f.contains("kernel")) {
        eprintln!("xtask: kernel matrix (Debian 6.1 and 6.12 under qemu)");
        let go = tools::go_toolchains(GO_VERSIONS)?;
        crate::kernels::run_all(&agent, &go, None)?;
    }
    if filter.as_deref().is_none_or(|f| f.contains("fuzz")) {
        // A short run per target from the checked-in corpus: a regression of a fixed
        // crash, or a new one close to the seeds, fails CI. Long runs: `cargo xtask fuzz`.
        eprintln!("xtask: fuzz targets, 15 s each");
        crate::fuzz::fuzz(crate::fuzz::Budget::Seconds(15))?;
    }
    Ok(())
}
