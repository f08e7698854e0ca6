//! `cargo xtask bench`: overhead of tracing, measured side by side in one run.
//!
//! For each server (the sample Go service, goroutine churn, Go crypto/tls, a grpc-go
//! unary server in h2c and over TLS, nginx plain, over TLS and in HTTP/2 cleartext) a
//! load generator (wrk; h2load for HTTP/2; the gRPC test program's load mode) drives it
//! at saturation with and without the agent attached, alternating, and we report
//! throughput and p99 as ratios, the agent's CPU time per request, its peak RSS and the
//! events it lost. The agent exports over OTLP/HTTP to a local sink that acknowledges
//! without decoding, so the whole pipeline (parse, build, batch, encode, send) is in the
//! measurement.
//!
//! Kernel side: BPF run-time statistics are switched on for the run (`BPF_ENABLE_STATS`,
//! held as an fd, so they switch off again when the bench ends, whatever happens), and
//! each traced run reports the agent's programs' run time per request, summed from
//! `run_time_ns` / `run_cnt` in `/proc/AGENT/fdinfo` of its program fds.

use std::{
    collections::BTreeMap,
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
    /// NaN where the load generator does not report it (h2load).
    p99_ms: f64,
    requests: u64,
}

/// What drives a server at saturation.
enum Load<'a> {
    /// wrk (HTTP/1.1): `-t2 -c64`, an optional Lua script.
    Wrk {
        url: &'a str,
        script: Option<&'a std::path::Path>,
    },
    /// h2load (HTTP/2, h2c or by ALPN): 2 threads, 64 connections, 10 streams each.
    H2load { url: &'a str },
    /// The gRPC test program's load mode (grpc-go unary calls): 64 goroutines over 2
    /// connections, over TLS when `tls`.
    Grpc {
        bin: &'a std::path::Path,
        addr: &'a str,
        tls: bool,
    },
}

impl Load<'_> {
    fn run(&self) -> Result<WrkResult> {
        match self {
            Load::Wrk { url, script } => wrk(url, *script),
            Load::H2load { url } => h2load(url),
            Load::Grpc { bin, addr, tls } => grpc_load(bin, addr, *tls),
        }
    }
}

/// h2load for [`WRK_SECS`]: its "finished in" line (req/s) and "requests:" line (done).
fn h2load(url: &str) -> Result<WrkResult> {
    let out = Command::new("h2load")
        .args(["-t2", "-c64", "-m10", "-D", &WRK_SECS.to_string(), url])
        .output()
        .context("running h2load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rps = None;
    let mut requests = None;
    for l in text.lines().map(str::trim) {
        if let Some(rest) = l.strip_prefix("finished in ") {
            rps = rest
                .split(", ")
                .nth(1)
                .and_then(|v| v.strip_suffix(" req/s"))
                .and_then(|v| v.parse().ok());
        } else if let Some(rest) = l.strip_prefix("requests: ") {
            requests = rest
                .split(", ")
                .find_map(|p| p.strip_suffix(" succeeded"))
                .and_then(|v| v.parse().ok());
        }
    }
    match (rps, requests) {
        (Some(rps), Some(requests)) => Ok(WrkResult {
            rps,
            p99_ms: f64::NAN,
            requests,
        }),
        _ => bail!("could not parse h2load output:\n{text}"),
    }
}

/// The gRPC program's "requests N rps R p99_ms P" line.
fn grpc_load(bin: &std::path::Path, addr: &str, tls: bool) -> Result<WrkResult> {
    let out = Command::new(bin)
        .args(["load", addr, &WRK_SECS.to_string(), "64"])
        .env("GOGRPC_TLS", if tls { "1" } else { "0" })
        .output()
        .context("running the gRPC load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = text.split_whitespace().collect();
    match f[..] {
        ["requests", n, "rps", r, "p99_ms", p] => Ok(WrkResult {
            rps: r.parse()?,
            p99_ms: p.parse()?,
            requests: n.parse()?,
        }),
        _ => bail!(
            "could not parse the gRPC load output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
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

fn wrk(url: &str, script: Option<&std::path::Path>) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{WRK_SECS}s"), "--latency"]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
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

/// Keeps BPF run-time statistics on while it lives (the kernel counts holders, so this
/// does not switch off what someone else switched on). None when the kernel refuses.
fn enable_bpf_stats() -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // union bpf_attr's enable_stats: { __u32 type }, BPF_STATS_RUN_TIME = 0; the rest zero.
    let fd = bpf(BPF_ENABLE_STATS, &[0u8; 16]);
    // SAFETY: a fresh fd owned by nobody else.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// bpf(2) with the first 16 bytes of a `union bpf_attr` (all the commands used here
/// need): its result, or -1.
fn bpf(cmd: libc::c_long, attr: &[u8; 16]) -> libc::c_long {
    // SAFETY: bpf(2) reads `attr` (size given); what it writes goes where `attr` points,
    // to buffers the caller keeps alive.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    }
}

/// The name of BPF program `fd` of process `pid` (its copy taken with pidfd_getfd, then
/// BPF_OBJ_GET_INFO_BY_FD): fdinfo gives run time and count but not the name.
fn prog_name(pidfd: &std::os::fd::OwnedFd, fd: i32) -> Option<String> {
    use std::os::fd::AsRawFd;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: pidfd_getfd(2) on a pidfd we own; returns a new fd or -1.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return None;
    }
    // SAFETY: a fresh fd owned by nobody else.
    let copy =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy as i32) };
    // struct bpf_prog_info up to and past `name[16]` at offset 64.
    let mut info = [0u8; 128];
    // union bpf_attr's info: { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; }.
    let mut attr = [0u8; 16];
    attr[..4].copy_from_slice(&(copy.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // The kernel writes at most info_len bytes to `info`.
    if bpf(BPF_OBJ_GET_INFO_BY_FD, &attr) != 0 {
        return None;
    }
    let name = &info[64..80];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// (run_time_ns, run_cnt) of each BPF program process `pid` holds fds of, by name
/// (programs of one name, such as one uprobe program attached per process, summed).
fn bpf_prog_stats(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut by_name = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return by_name;
    };
    // SAFETY: pidfd_open(2) returns a new fd or -1 (then names read "?").
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh fd owned by nobody else.
    let pidfd = (pidfd >= 0).then(|| unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32)
    });
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let num = fd.file_name().to_string_lossy().into_owned();
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{num}")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let name = num
            .parse()
            .ok()
            .and_then(|n| prog_name(pidfd.as_ref()?, n))
            .unwrap_or_else(|| "?".to_string());
        let e = by_name.entry(name).or_insert((0, 0));
        e.0 += field("run_time_ns:");
        e.1 += field("run_cnt:");
    }
    by_name
}

/// Per-program (ns, runs) per request between two snapshots, costliest first.
fn per_request(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    requests: u64,
) -> Vec<(String, f64, f64)> {
    let n = requests.max(1) as f64;
    let mut v: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(name, &(ns, runs))| {
            let (ns0, runs0) = before.get(name).copied().unwrap_or((0, 0));
            (
                name.clone(),
                ns.saturating_sub(ns0) as f64 / n,
                runs.saturating_sub(runs0) as f64 / n,
            )
        })
        .filter(|(_, ns, _)| *ns > 0.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v
}

struct Traced {
    wrk: WrkResult,
    /// Kernel-side: the agent's BPF programs by name, with their run time and runs per
    /// request (none when BPF stats could not be enabled), costliest first.
    bpf_programs: Vec<(String, f64, f64)>,
    cpu_us_per_req: f64,
    /// Peak RSS from ready to the end of the load.
    rss_mib: f64,
    /// Peak RSS while loading (before ready).
    start_rss_mib: f64,
    lost: u64,
    spans: u64,
    /// Spans the OTLP exporter delivered (fewer than `spans` when sampling).
    exported: u64,
}

impl Traced {
    /// The agent's kernel programs, all together: (ns, runs) per request.
    fn bpf_total(&self) -> (f64, f64) {
        self.bpf_programs
            .iter()
            .fold((0.0, 0.0), |(ns, runs), p| (ns + p.1, runs + p.2))
    }
}

fn traced_run(
    agent: &std::path::Path,
    mode: &Mode<'_>,
    pid: u32,
    load: &Load<'_>,
    sink: u16,
) -> Result<Traced> {
    // The idle process an `elsewhere` run traces instead of the server.
    let mut idle = match mode.elsewhere {
        true => Some(Command::new("sleep").arg("3600").spawn()?),
        false => None,
    };
    let pid = idle.as_ref().map_or(pid, |c| c.id());
    let r = traced_run_on(agent, mode, pid, load, sink);
    if let Some(c) = idle.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    r
}

fn traced_run_on(
    agent: &std::path::Path,
    mode: &Mode<'_>,
    pid: u32,
    load: &Load<'_>,
    sink: u16,
) -> Result<Traced> {
    let mut proc = Command::new(agent)
        .args(["--pid", &pid.to_string(), "--status-interval", "0"])
        .args(mode.agent_args.unwrap_or_default())
        .envs(mode.env.iter().copied())
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
    // Loading parses the kernel's BTF and the eBPF object, a peak that is freed before
    // the agent says ready: reported apart, and the high-water mark reset
    // (`clear_refs` 5) so that the peak under load is the agent's own.
    let start_rss = vm_hwm_kib(apid);
    let _ = std::fs::write(format!("/proc/{apid}/clear_refs"), "5");
    let t0 = cpu_ticks(apid);
    let k0 = bpf_prog_stats(apid);
    let w = load.run()?;
    let k1 = bpf_prog_stats(apid);
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
            .rev()
            .find_map(|t| t.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let hz = 100.0; // USER_HZ on Linux
    Ok(Traced {
        cpu_us_per_req: (t1 - t0) as f64 / hz * 1e6 / w.requests.max(1) as f64,
        bpf_programs: per_request(&k0, &k1, w.requests),
        rss_mib: rss as f64 / 1024.0,
        start_rss_mib: start_rss as f64 / 1024.0,
        lost: field("lost="),
        spans: field("spans="),
        exported: field("otlp_exported="),
        wrk: w,
    })
}

/// nginx plain also with the event ring at its former size (16 MiB, 4 now): what the
/// smaller ring saves in RSS, and whether it loses events at saturation.
const RING_MODES: [Mode<'static>; 5] = [
    UNTRACED_TRACED[0],
    UNTRACED_TRACED[1],
    Mode::traced("traced, 16 MiB ring", &["--ring-buffer-mib", "16"]),
    SAMPLED,
    ELSEWHERE,
];

/// One way of running the server: untraced, or traced with these extra agent flags.
#[derive(Clone, Copy)]
struct Mode<'a> {
    name: &'a str,
    agent_args: Option<&'a [&'a str]>,
    /// Extra environment for the agent (OTEL_* settings).
    env: &'a [(&'a str, &'a str)],
    /// The agent traces another, idle process instead of the server: what the server
    /// pays for the kernel programs' filter alone (issue 12 asks for >= 0.98).
    elsewhere: bool,
}

impl<'a> Mode<'a> {
    const fn untraced() -> Self {
        Mode {
            name: "untraced",
            agent_args: None,
            env: &[],
            elsewhere: false,
        }
    }

    const fn traced(name: &'a str, agent_args: &'a [&'a str]) -> Self {
        Mode {
            name,
            agent_args: Some(agent_args),
            env: &[],
            elsewhere: false,
        }
    }
}

/// The agent tracing an idle process while the server runs untraced beside it.
const ELSEWHERE: Mode<'static> = Mode {
    elsewhere: true,
    ..Mode::traced("untraced, agent on another", &[])
};

/// Traced, every span still built but only a tenth sampled (head sampling by trace id).
const SAMPLED: Mode<'static> = Mode {
    env: &[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
    ],
    ..Mode::traced("traced, traceidratio 0.1", &[])
};

/// Without the agent, and with it as users run it (every probe).
const UNTRACED_TRACED: [Mode<'static>; 2] = [Mode::untraced(), Mode::traced("traced", &[])];

fn bench_server(
    name: &str,
    agent: &std::path::Path,
    pid: u32,
    load: &Load<'_>,
    modes: &[Mode<'_>],
    sink: u16,
) -> Result<()> {
    // PERISCOPE_BENCH_ONLY=<text>: only the loads whose name holds it (for a focused
    // before/after; the whole bench is what the numbers of record come from).
    if let Some(only) = std::env::var_os("PERISCOPE_BENCH_ONLY")
        && !name.contains(only.to_string_lossy().as_ref())
    {
        return Ok(());
    }
    // Rounds alternate the modes so drift (thermal, page cache) hits them alike.
    let mut runs: Vec<Vec<(WrkResult, Option<Traced>)>> =
        modes.iter().map(|_| Vec::new()).collect();
    for _ in 0..ROUNDS {
        for (i, m) in modes.iter().enumerate() {
            runs[i].push(match m.agent_args {
                None => (load.run()?, None),
                Some(_) => {
                    let t = traced_run(agent, m, pid, load, sink)?;
                    let w = WrkResult {
                        rps: t.wrk.rps,
                        p99_ms: t.wrk.p99_ms,
                        requests: t.wrk.requests,
                    };
                    (w, Some(t))
                }
            });
        }
    }
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let base_rps = mean(runs[0].iter().map(|r| r.0.rps).collect());
    let base_p99 = mean(runs[0].iter().map(|r| r.0.p99_ms).collect());
    println!("{name}:");
    for (m, r) in modes.iter().zip(&runs) {
        let rps = mean(r.iter().map(|x| x.0.rps).collect());
        let p99 = mean(r.iter().map(|x| x.0.p99_ms).collect());
        print!("  {:<26} {rps:>9.0} req/s (x{:.3})", m.name, rps / base_rps);
        if p99.is_nan() {
            print!("   p99 n/a (h2load)");
        } else {
            print!("   p99 {p99:>7.2} ms (x{:.3})", p99 / base_p99);
        }
        let traced: Vec<&Traced> = r.iter().filter_map(|x| x.1.as_ref()).collect();
        if !traced.is_empty() {
            let cpu = mean(traced.iter().map(|t| t.cpu_us_per_req).collect());
            let rss = traced.iter().map(|t| t.rss_mib).fold(0.0, f64::max);
            let start_rss = traced.iter().map(|t| t.start_rss_mib).fold(0.0, f64::max);
            let lost: u64 = traced.iter().map(|t| t.lost).sum();
            let reqs: u64 = r.iter().map(|x| x.0.requests).sum();
            let spans: u64 = traced.iter().map(|t| t.spans).sum();
            let exported: u64 = traced.iter().map(|t| t.exported).sum();
            let bpf_ns = mean(traced.iter().map(|t| t.bpf_total().0).collect());
            let bpf_runs = mean(traced.iter().map(|t| t.bpf_total().1).collect());
            print!(
                "   agent {cpu:.2} us/req, peak RSS {rss:.1} MiB ({start_rss:.1} loading), lost {lost}, {spans} spans ({exported} exported) / {reqs} requests"
            );
            print!("   kernel {bpf_ns:.0} ns/req in {bpf_runs:.1} program runs/req");
            // Where the kernel time goes (the last round's split): the costliest programs.
            if let Some(last) = traced.last() {
                let top: Vec<String> = last
                    .bpf_programs
                    .iter()
                    .take(5)
                    .map(|(name, ns, runs)| format!("{name} {ns:.0} ns/{runs:.1}"))
                    .collect();
                if !top.is_empty() {
                    print!("\n  {:<26} kernel by program: {}", "", top.join(", "));
                }
            }
        }
        println!();
    }
    Ok(())
}

pub fn bench() -> Result<()> {
    if !tools::is_root() {
        bail!(
            "the benchmark loads eBPF programs and must run as root: `sudo -E cargo xtask bench`"
        );
    }
    tools::apt_install(
        &["wrk", "nginx", "nghttp2-client", "golang-google-grpc-dev"],
        "load generators (wrk, h2load), a reference server and grpc-go's sources for the benchmark",
    )?;
    // Another build of the agent (say main's, for a side-by-side with a branch), or this tree's.
    let agent = match std::env::var_os("PERISCOPE_BENCH_AGENT") {
        Some(p) => std::path::PathBuf::from(p),
        None => build::build_all()?,
    };
    println!("periscope bench: agent {}", agent.display());
    let go = tools::go_toolchains(&["1.25"])?;
    let dir = tools::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let server = dir.join("goserver");
    demo::build_goserver(&go[0].1, &server, "")?;
    let sink = start_sink()?;
    let stats = enable_bpf_stats();
    if stats.is_none() {
        println!("periscope bench: BPF run-time stats unavailable, kernel ns/req will read 0");
    }
    println!(
        "periscope bench: wrk -t2 -c64 -d{WRK_SECS}s, {ROUNDS} alternating rounds per mode, {} cores",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    let go_modes = [
        Mode::untraced(),
        Mode::traced("traced, HTTP only", &["--no-go-runtime"]),
        Mode::traced("traced, + Go probes only", &["--no-go-runtime-memory"]),
        Mode::traced("traced, + Go runtime", &[]),
        Mode::traced("traced, + goroutine events", &["--go-goroutine-events"]),
        SAMPLED,
        ELSEWHERE,
    ];
    let (mut go_child, addr) = demo::start_goserver(&server)?;
    let r = bench_server(
        &format!("Go net/http (Go {}) GET /", go[0].0),
        &agent,
        go_child.id(),
        &Load::Wrk {
            url: &format!("http://{addr}/"),
            script: None,
        },
        &go_modes,
        sink,
    );
    let _ = go_child.kill();
    let _ = go_child.wait();
    r?;

    // Goroutine churn: every request starts 100 goroutines that exit at once.
    let truth = dir.join("gotruth");
    demo::build_go_program(&go[0].1, "gotruth", &truth, "")?;
    let script = dir.join("post.lua");
    std::fs::write(&script, "wrk.method = \"POST\"\n")?;
    let (mut truth_child, addr) = demo::start_goserver(&truth)?;
    let r = bench_server(
        "Go goroutine churn (POST /churn?n=100)",
        &agent,
        truth_child.id(),
        &Load::Wrk {
            url: &format!("http://{addr}/churn?n=100"),
            script: Some(&script),
        },
        &go_modes,
        sink,
    );
    let _ = truth_child.kill();
    let _ = truth_child.wait();
    r?;

    attach_times(&agent, &go[0].1, &dir)?;

    // HTTPS: the Go TLS test server (crypto/tls, HTTP/1.1), GET of a 5-byte body.
    let gotls = dir.join("gotls");
    demo::build_go_program(&go[0].1, "gotls", &gotls, "")?;
    let (mut gotls_child, addr) = demo::start_announced(&gotls, &["server", "/dev/null", "none"])?;
    let r = bench_server(
        &format!("Go crypto/tls (Go {}) GET /?size=5", go[0].0),
        &agent,
        gotls_child.id(),
        &Load::Wrk {
            url: &format!("https://{addr}/?size=5"),
            script: None,
        },
        // All probes: the Go TLS ones come with the Go runtime probes.
        &UNTRACED_TRACED,
        sink,
    );
    let _ = gotls_child.kill();
    let _ = gotls_child.wait();
    r?;

    // gRPC: a grpc-go 1.33 unary server (Debian's sources), Health/Check at saturation.
    let gogrpc = dir.join("gogrpc");
    demo::build_go_program(&go[0].1, "gogrpc", &gogrpc, "")?;
    for tls in [false, true] {
        let (mut grpc_child, addr) = demo::start_announced_with(
            &gogrpc,
            &["server", "/dev/null"],
            &[("GOGRPC_TLS", if tls { "1" } else { "0" })],
        )?;
        let r = bench_server(
            &format!(
                "grpc-go 1.33 (Go {}) unary Health/Check{}",
                go[0].0,
                if tls { " over TLS" } else { "" }
            ),
            &agent,
            grpc_child.id(),
            &Load::Grpc {
                bin: &gogrpc,
                addr: &addr,
                tls,
            },
            &UNTRACED_TRACED,
            sink,
        );
        let _ = grpc_child.kill();
        let _ = grpc_child.wait();
        r?;
    }

    let nginx_dir = dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let tls_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // HTTP/2 cleartext; nginx closes a connection after keepalive_requests (1000) streams
    // and h2load does not reconnect, so the limit is lifted.
    let h2c_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    tools::run(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(nginx_dir.join("key.pem"))
            .arg("-out")
            .arg(nginx_dir.join("cert.pem"))
            .stderr(Stdio::null()),
    )?;
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }}\n\
         server {{ listen 127.0.0.1:{tls_port} ssl; ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;\n\
         location / {{ return 200 \"hello\\n\"; }} }}\n\
         server {{ listen 127.0.0.1:{h2c_port} http2; keepalive_requests 100000000; location / {{ return 200 \"hello\\n\"; }} }} }}\n",
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
        &Load::Wrk {
            url: &url,
            script: None,
        },
        &RING_MODES,
        sink,
    )
    .and_then(|()| {
        bench_server(
            "nginx (1 worker) over TLS (OpenSSL 3) return 200",
            &agent,
            nginx.id(),
            &Load::Wrk {
                url: &format!("https://127.0.0.1:{tls_port}/"),
                script: None,
            },
            &UNTRACED_TRACED,
            sink,
        )
    })
    .and_then(|()| {
        // Uploads in tiny chunks: each request's body is 4096 chunk-size lines, which
        // the kernel's request framing follows (and elides) in nginx's reads.
        let script = nginx_dir.join("chunked.lua");
        std::fs::write(
            &script,
            "local req\n\
             function init(args)\n\
             \x20 local parts = {}\n\
             \x20 for i = 1, 4096 do parts[#parts + 1] = \"10\\r\\n0123456789abcdef\\r\\n\" end\n\
             \x20 parts[#parts + 1] = \"0\\r\\n\\r\\n\"\n\
             \x20 req = \"POST /up HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n\" .. table.concat(parts)\n\
             end\n\
             function request() return req end\n",
        )?;
        bench_server(
            "nginx (1 worker) POST of 64 KiB in 16-byte chunks, return 200",
            &agent,
            nginx.id(),
            &Load::Wrk {
                url: &url,
                script: Some(&script),
            },
            &UNTRACED_TRACED,
            sink,
        )
    })
    .and_then(|()| {
        bench_server(
            "nginx (1 worker) HTTP/2 cleartext (h2load, 10 streams per connection) return 200",
            &agent,
            nginx.id(),
            &Load::H2load {
                url: &format!("http://127.0.0.1:{h2c_port}/"),
            },
            &UNTRACED_TRACED,
            sink,
        )
    });
    let _ = nginx.kill();
    let _ = nginx.wait();
    r
}

/// Bytes of data the padded Go service embeds, to make its stripped binary larger than
/// 150 MiB (issue 15: attach on such a binary stays under a second).
const PAD_BYTES: usize = 160 << 20;

/// How long the agent takes to attach its Go runtime probes (read the binary, find the
/// functions and globals, attach, read the goroutines alive), as it reports it, on the
/// stripped sample service, the same service padded past 150 MiB with embedded data, and
/// Debian's prometheus (a real 50 MB stripped Go 1.19 program with far more functions).
/// What dominates is the function table (pclntab) and the few functions disassembled;
/// the padding shows that nothing reads the whole file.
fn attach_times(
    agent: &std::path::Path,
    go: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    let plain = dir.join("goserver-stripped");
    demo::build_goserver(go, &plain, "-s -w")?;
    // A copy of the service's sources with one more file embedding the padding.
    let src = dir.join("padded-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src)?;
    for e in std::fs::read_dir(tools::repo_root().join("tests/programs/goserver"))? {
        let e = e?;
        std::fs::copy(e.path(), src.join(e.file_name()))?;
    }
    // Not compressible and not all alike, as real data is.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let pad: Vec<u8> = (0..PAD_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("pad.bin"), pad)?;
    std::fs::write(
        src.join("pad.go"),
        "package main\n\nimport _ \"embed\"\n\n//go:embed pad.bin\nvar pad string\n\n\
         func init() {\n\tif len(pad) == 1 {\n\t\tprintln(pad)\n\t}\n}\n",
    )?;
    let padded = dir.join("goserver-padded");
    demo::build_go_dir(go, &src, &padded, "-s -w")?;
    println!("Go runtime attach (as the agent reports it; 3 attaches each):");
    for bin in [&plain, &padded] {
        let (mut child, _addr) = demo::start_goserver(bin)?;
        let r = attach_ms(agent, child.id());
        let _ = child.kill();
        let _ = child.wait();
        report_attach(bin, r?);
    }
    let prometheus = std::path::Path::new("/usr/bin/prometheus");
    if prometheus.exists() {
        let data = dir.join("prometheus-data");
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stderr(Stdio::null())
            .spawn()
            .context("starting prometheus")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let r = attach_ms(agent, child.id());
        let _ = child.kill();
        let _ = child.wait();
        report_attach(prometheus, r?);
    }
    Ok(())
}

fn report_attach(bin: &std::path::Path, ms: Vec<u64>) {
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "  {:<40} {:>6.1} MiB   attach {} ms",
        bin.file_name().unwrap_or_default().to_string_lossy(),
        size as f64 / (1 << 20) as f64,
        ms.iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    );
}

/// Starts the agent on `pid` three times and returns the attach time it logs each time.
fn attach_ms(agent: &std::path::Path, pid: u32) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for _ in 0..3 {
        let mut proc = Command::new(agent)
            .args(["--pid", &pid.to_string(), "--status-interval", "0"])
            .env("PERISCOPE_LOG", "warn,periscope=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stderr = BufReader::new(proc.stderr.take().unwrap());
        let mut line = String::new();
        let ms = loop {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                bail!("agent exited before attaching to PID {pid}'s Go runtime");
            }
            if line.contains("runtime probes attached") {
                break line
                    .split(" in ")
                    .nth(1)
                    .and_then(|t| t.split(" ms").next())
                    .and_then(|v| v.parse::<u64>().ok())
                    .with_context(|| format!("no attach time in {line:?}"))?;
            }
        };
        out.push(ms);
        // SAFETY: kill(2) on the child we spawned.
        unsafe { libc::kill(proc.id() as i32, libc::SIGINT) };
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        proc.wait()?;
    }
    Ok(out)
}
