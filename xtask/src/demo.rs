//! `cargo xtask demo`: build everything, start two sample Go HTTP services (a frontend
//! that calls a backend) with some traffic, attach the agent, and show their spans —
//! one trace across both processes — and a few of its metrics (no backend needed).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{build, tools};

/// Builds the sample Go service (tests/programs/goserver) with the given Go.
pub fn build_goserver(go: &std::path::Path, out: &std::path::Path, ldflags: &str) -> Result<()> {
    build_go_program(go, "goserver", out, ldflags)
}

/// Builds tests/programs/<program> with the given Go, offline, statically.
pub fn build_go_program(
    go: &std::path::Path,
    program: &str,
    out: &std::path::Path,
    ldflags: &str,
) -> Result<()> {
    build_go_dir(
        go,
        &tools::repo_root().join("tests/programs").join(program),
        out,
        ldflags,
    )
}

/// Builds the Go program in `dir` with the given Go, offline, statically. A directory
/// without `go.mod` is built in GOPATH mode against Debian's Go library sources
/// (/usr/share/gocode: grpc-go from golang-google-grpc-dev).
pub fn build_go_dir(
    go: &std::path::Path,
    dir: &std::path::Path,
    out: &std::path::Path,
    ldflags: &str,
) -> Result<()> {
    let mut cmd = Command::new(go);
    cmd.current_dir(dir)
        .args(["build", "-o"])
        .arg(out)
        .arg(format!("-ldflags={ldflags}"))
        .arg(".")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", tools::tools_dir().join("gocache"));
    if dir.join("go.mod").is_file() {
        cmd.env("GOFLAGS", "-mod=mod");
    } else {
        cmd.env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode");
    }
    tools::run(&mut cmd)
}

/// Starts the Go service and returns it with its address.
pub fn start_goserver(bin: &std::path::Path) -> Result<(std::process::Child, String)> {
    start_announced(bin, &["-addr", "127.0.0.1:0"])
}

/// Starts one of our test programs that prints "listening on ADDR" first, and returns it
/// with that address.
pub fn start_announced(
    bin: &std::path::Path,
    args: &[&str],
) -> Result<(std::process::Child, String)> {
    start_announced_with(bin, args, &[])
}

/// [`start_announced`] with extra environment variables.
pub fn start_announced_with(
    bin: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(std::process::Child, String)> {
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line from {}: {line:?}", bin.display()))?
        .to_string();
    Ok((child, addr))
}

/// One keep-alive request; returns the status code.
pub fn request(conn: &mut TcpStream, method: &str, path: &str, extra: &str) -> Result<u16> {
    // One write per request: several small writes would meet Nagle and delayed ACKs,
    // and the spans would faithfully show the resulting 40 ms stalls.
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: demo.local\r\nUser-Agent: periscope-demo/1.0\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    conn.write_all(req.as_bytes())?;
    // Read the header section, then the body by Content-Length (the sample service
    // always sends it except on /stream, which the demo does not call).
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            bail!("connection closed");
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head.split_whitespace().nth(1).unwrap_or("0").parse()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    if method != "HEAD" {
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body)?;
    }
    Ok(status)
}

pub fn demo() -> Result<()> {
    if !tools::is_root() {
        bail!("the demo loads eBPF programs and must run as root: `sudo -E cargo xtask demo`");
    }
    let agent = build::build_all()?;
    let go = tools::go_toolchains(&["1.25"])?;
    let dir = tools::repo_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    eprintln!("xtask: building the sample Go service with Go {}", go[0].0);
    // One program, two executables: the service name comes from the executable.
    let frontend_bin = dir.join("frontend");
    let backend_bin = dir.join("backend");
    build_goserver(&go[0].1, &frontend_bin, "-s -w")?;
    std::fs::copy(&frontend_bin, &backend_bin)?;
    let (mut backend, backend_addr) = start_goserver(&backend_bin)?;
    let (mut child, addr) = start_goserver(&frontend_bin)?;
    eprintln!(
        "xtask: sample Go services: frontend (pid {}) on {addr}, backend (pid {}) on {backend_addr}",
        child.id(),
        backend.id()
    );
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?
    };

    let mut agent_proc = Command::new(&agent)
        .args([
            "--pid",
            &child.id().to_string(),
            "--pid",
            &backend.id().to_string(),
            "--console",
            "--prometheus",
            &metrics_addr.to_string(),
            "--duration",
            "12",
            "--status-interval",
            "5",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    // Wait for the agent's ready line, echoing its stderr.
    let stderr = agent_proc.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("periscope: ready") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .context("the agent did not become ready")?;

    let done = Arc::new(AtomicBool::new(false));
    let traffic = {
        let done = done.clone();
        let to_backend = format!("/proxy?url=http://{backend_addr}/users/7");
        thread::spawn(move || -> Result<()> {
            let paths = [
                ("GET", to_backend.as_str(), ""),
                ("GET", "/", ""),
                ("GET", "/users/42?token=secret", ""),
                ("GET", "/missing", ""),
                ("GET", "/error", ""),
                ("POST", "/echo", ""),
                ("GET", "/slow?ms=20", ""),
                (
                    "GET",
                    "/",
                    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
                ),
            ];
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                let mut conn = TcpStream::connect(&addr)?;
                for _ in 0..3 {
                    let (m, p, h) = paths[i % paths.len()];
                    request(&mut conn, m, p, h)?;
                    i += 1;
                }
                thread::sleep(Duration::from_millis(300));
            }
            Ok(())
        })
    };
    // Shortly before the agent's 12 s are up, show some of what it serves to Prometheus.
    thread::sleep(Duration::from_secs(10));
    match scrape(&metrics_addr.to_string()) {
        Ok(text) => {
            eprintln!("xtask: a few series from http://{metrics_addr}/metrics:");
            for line in text.lines().filter(|l| {
                !l.starts_with('#')
                    && (l.starts_with("http_server_request_duration_seconds_count")
                        || l.starts_with("http_client_request_duration_seconds_count")
                        || l.starts_with("go_goroutines")
                        || l.starts_with("go_threads")
                        || l.starts_with("traces_service_graph_request_total"))
            }) {
                eprintln!("  {line}");
            }
        }
        Err(e) => eprintln!("xtask: could not scrape the agent's metrics: {e:#}"),
    }
    let status = agent_proc.wait()?;
    done.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    for c in [&mut child, &mut backend] {
        let _ = c.kill();
        let _ = c.wait();
    }
    if !status.success() {
        bail!("the agent exited with {status}");
    }
    eprintln!(
        "xtask: demo done — above: one SERVER span per request (the /proxy ones with a CLIENT child in the frontend and a SERVER grandchild in the backend, one trace), metrics, then the agent's summary"
    );
    Ok(())
}

/// GET /metrics over plain HTTP/1.0.
fn scrape(addr: &str) -> Result<String> {
    let mut conn = TcpStream::connect(addr)?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: demo\r\n\r\n")?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map_or(out.clone(), |(_, b)| b.to_string()))
}
