//! `cargo xtask bench`: overhead of tracing, measured side by side in one run.
//!
//! For each server (the sample Go service, nginx) wrk drives it at saturation with and
//! without the agent attached, alternating, and we report throughput and p99 as ratios,
//! the agent's CPU time per request, its peak RSS and the events it lost. The agent
//! exports over OTLP/HTTP to a local sink that acknowledges without decoding, so the
//! whole pipeline (parse, build, batch, encode, send) is in the measurement.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{build, demo, tools};

const WRK_SECS: u32 = 8;
const ROUNDS: usize = 2;

struct WrkResult {
    rps: f64,
    p99_ms: f64,
    requests: u64,
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

fn wrk(url: &str) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{WRK_SECS}s"), "--latency", url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = None;
    let mut p99 = None;
    let mut requests = None;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().ok();
        } else if let Some(v) = l.strip_prefix("99%") {
            p99 = parse_duration_ms(v.trim());
        } else if l.contains("requests in") {
            requests = l.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    match (rps, p99, requests) {
        (Some(rps), Some(p99_ms), Some(requests)) => Ok(WrkResult {
            rps,
            p99_ms,
            requests,
        }),
        _ => bail!("could not parse wrk output:\n{text}"),
    }
}

/// An OTLP/HTTP endpoint that reads each request and answers 200 with an empty
/// ExportTraceServiceResponse, without decoding: the backend's cost stays out of the
/// numbers while the agent does all of its own work.
fn start_sink() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
                    if reader.get_mut().write_all(resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the comm.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Traced {
    wrk: WrkResult,
    cpu_us_per_req: f64,
    rss_mib: f64,
    lost: u64,
    spans: u64,
}

fn traced_run(agent: &std::path::Path, pid: u32, url: &str, sink: u16) -> Result<Traced> {
    let mut proc = Command::new(agent)
        .args(["--pid", &pid.to_string(), "--status-interval", "0"])
        .args(["--otlp-endpoint", &format!("http://127.0.0.1:{sink}")])
        .args(["--otlp-protocol", "http/protobuf"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let apid = proc.id();
    let mut stderr = BufReader::new(proc.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("periscope: ready") {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("agent exited before it was ready");
        }
    }
    let t0 = cpu_ticks(apid);
    let w = wrk(url)?;
    // Let the agent drain and export what wrk caused before reading its CPU time.
    thread::sleep(Duration::from_millis(1500));
    let t1 = cpu_ticks(apid);
    let rss = vm_hwm_kib(apid);
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(apid as i32, libc::SIGINT) };
    let mut rest = String::new();
    stderr.read_to_string(&mut rest)?;
    proc.wait()?;
    let field = |name: &str| -> u64 {
        rest.split_whitespace()
            .filter_map(|t| t.strip_prefix(name))
            .last()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ on Linux
    Ok(Traced {
        cpu_us_per_req: (t1 - t0) as f64 / hz * 1e6 / w.requests.max(1) as f64,
        rss_mib: rss as f64 / 1024.0,
        lost: field("lost="),
        spans: field("spans="),
        wrk: w,
    })
}

fn bench_server(name: &str, agent: &std::path::Path, pid: u32, url: &str, sink: u16) -> Result<()> {
    let mut base = Vec::new();
    let mut traced = Vec::new();
    for _ in 0..ROUNDS {
        base.push(wrk(url)?);
        traced.push(traced_run(agent, pid, url, sink)?);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let b_rps = mean(&base.iter().map(|w| w.rps).collect::<Vec<_>>());
    let t_rps = mean(&traced.iter().map(|t| t.wrk.rps).collect::<Vec<_>>());
    let b_p99 = mean(&base.iter().map(|w| w.p99_ms).collect::<Vec<_>>());
    let t_p99 = mean(&traced.iter().map(|t| t.wrk.p99_ms).collect::<Vec<_>>());
    let cpu = mean(&traced.iter().map(|t| t.cpu_us_per_req).collect::<Vec<_>>());
    let rss = traced.iter().map(|t| t.rss_mib).fold(0.0, f64::max);
    let lost: u64 = traced.iter().map(|t| t.lost).sum();
    let reqs: u64 = traced.iter().map(|t| t.wrk.requests).sum();
    let spans: u64 = traced.iter().map(|t| t.spans).sum();
    println!("{name}:");
    println!(
        "  throughput  untraced {b_rps:>9.0} req/s   traced {t_rps:>9.0} req/s   ratio {:.3}",
        t_rps / b_rps
    );
    println!(
        "  p99         untraced {b_p99:>9.2} ms      traced {t_p99:>9.2} ms      ratio {:.3}",
        t_p99 / b_p99
    );
    println!(
        "  agent CPU   {cpu:.2} us/request   peak RSS {rss:.1} MiB   lost events {lost}   spans {spans} for {reqs} requests"
    );
    Ok(())
}

pub fn bench() -> Result<()> {
    if !tools::is_root() {
        bail!(
            "the benchmark loads eBPF programs and must run as root: `sudo -E cargo xtask bench`"
        );
    }
    tools::apt_install(
        &["wrk", "nginx"],
        "load generator and a reference server for the benchmark",
    )?;
    let agent = build::build_all()?;
    let go = tools::go_toolchains(&["1.25"])?;
    let dir = tools::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let server = dir.join("goserver");
    demo::build_goserver(&go[0].1, &server, "")?;
    let sink = start_sink()?;
    println!(
        "periscope bench: wrk -t2 -c64 -d{WRK_SECS}s, {ROUNDS} alternating rounds per mode, {} cores",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let (mut go_child, addr) = demo::start_goserver(&server)?;
    let r = bench_server(
        &format!("Go net/http (Go {}) GET /", go[0].0),
        &agent,
        go_child.id(),
        &format!("http://{addr}/"),
        sink,
    );
    let _ = go_child.kill();
    let _ = go_child.wait();
    r?;

    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }} }}\n",
        d = nginx_dir.display()
    );
    std::fs::write(nginx_dir.join("nginx.conf"), conf)?;
    let mut nginx = Command::new("nginx")
        .args(["-c"])
        .arg(nginx_dir.join("nginx.conf"))
        .spawn()
        .context("starting nginx")?;
    let url = format!("http://127.0.0.1:{port}/");
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let r = bench_server(
        "nginx (1 worker) return 200",
        &agent,
        nginx.id(),
        &url,
        sink,
    );
    let _ = nginx.kill();
    let _ = nginx.wait();
    r
}
