//! Issue 15: every `go_*` series a client_golang program shows about itself, the agent
//! shows from outside, read from the program's memory.
//!
//! The program is built from Debian's client_golang sources (1.14, GOPATH mode) with each
//! Go version CI installs, plain, stripped and cgo. It allocates a known 12.5 MiB it keeps,
//! forces a GC and then holds still; the test scrapes the program's own /metrics and the
//! agent's back to back. Counts must be equal (GC cycles, pause total, lookups); the gauges
//! and byte counters may differ by what the program's own scrape allocates between the two
//! reads (client_golang builds its answer on the heap), bounded here at 256 KiB.
//! Debian's prometheus (Go 1.19) is checked too, with the agent read before and after.
//!
//! Goroutines: the program parks exactly [`PARKED`] goroutines, so between scrapes it has
//! those plus main; while it answers its own scrape, up to five more (the connection's
//! goroutine, net/http's background reader, and client_golang's Gather: one worker per
//! collector, two here, and the goroutine that closes their channel). The agent's
//! go_goroutines (read as runtime.NumGoroutine computes it) must be exactly the idle
//! count, and the program's at most [`SCRAPE_GOROUTINES`] above it (46 seen with Go
//! 1.21; 47, six above, once with Go 1.27 in CI: the bound is a margin over what was
//! seen, the exact check is the agent's).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::harness::{self, Agent, Process, TempDir, free_port, go_toolchains};

/// Goroutines the program may run on top of the idle ones while it answers its own
/// scrape (see the module docs).
const SCRAPE_GOROUTINES: f64 = 8.0;

const PROGRAM: &str = r#"package main

import (
	"net/http"
	"os"
	"runtime"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var keep [][]byte

func main() {
	for i := 0; i < 200; i++ {
		keep = append(keep, make([]byte, 64<<10))
	}
	park := make(chan struct{})
	for i := 0; i < 40; i++ {
		go func() { <-park }()
	}
	runtime.GC()
	http.Handle("/metrics", promhttp.Handler())
	http.ListenAndServe(os.Args[1], nil)
}
"#;

/// Goroutines the program parks (see PROGRAM).
const PARKED: f64 = 40.0;

const GOPATH_DEBIAN: &str = "/usr/share/gocode";

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_string())
}

/// `name{labels other than the agent's service labels}` -> value, for `go_*` samples.
fn go_samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("go_")) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        let kept: Vec<&str> = labels
            .split(',')
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("service_name=")
                    && !l.starts_with("service_instance_id=")
            })
            .collect();
        let key = if kept.is_empty() {
            name.to_string()
        } else {
            format!("{name}{{{}}}", kept.join(","))
        };
        if let Ok(v) = value.parse::<f64>() {
            out.insert(key, v);
        }
    }
    out
}

fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE go_"))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (format!("go_{n}"), t.to_string()))
        .collect()
}

/// Waits until the program at `addr` answers its /metrics, `secs` at most.
fn wait_up(addr: SocketAddr, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while get(addr, "/metrics").is_none() {
        assert!(Instant::now() < deadline, "{what}: program not up");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The agent tracing `pid`, with its Prometheus endpoint on a free loopback port.
fn agent_for(pid: u32) -> (Agent, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = Agent::start([
        "--pid".to_string(),
        pid.to_string(),
        "--prometheus".into(),
        addr.to_string(),
    ]);
    (agent, addr)
}

/// Families whose `# TYPE` differs from the program's (or that the agent lacks).
fn type_mismatches(
    theirs: &BTreeMap<String, String>,
    mine: &BTreeMap<String, String>,
) -> Vec<String> {
    theirs
        .iter()
        .filter(|(name, t)| mine.get(*name) != Some(*t))
        .map(|(name, t)| format!("{name}: type {:?}, program {t}", mine.get(name)))
        .collect()
}

#[test]
fn client_golang_go_series_match_from_outside() {
    harness::require_root();
    if !std::path::Path::new(GOPATH_DEBIAN)
        .join("src/github.com/prometheus/client_golang")
        .exists()
    {
        eprintln!(
            "SKIPPED: apt-get install golang-github-prometheus-client-golang-dev (client_golang sources)"
        );
        return;
    }
    let _serial = harness::serial();
    let toolchains = go_toolchains();
    assert!(
        !toolchains.is_empty(),
        "no Go toolchains configured (PERISCOPE_GO_TOOLCHAINS)"
    );
    // Every version, plain (DWARF), stripped (the checked-in offsets, globals found from
    // code) and cgo (externally linked, with .symtab).
    let mut runs = Vec::new();
    for tc in &toolchains {
        for flavor in ["plain", "stripped", "cgo"] {
            runs.push((tc.clone(), flavor));
        }
    }
    for (tc, flavor) in runs {
        let dir = TempDir::new("go-memstats");
        let src = dir.path().join("src/cgprog");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("main.go"), PROGRAM).unwrap();
        let bin = dir.path().join("cgprog");
        let out = Command::new(&tc.go)
            .current_dir(&src)
            .arg("build")
            .args(match flavor {
                "stripped" => vec!["-ldflags=-s -w"],
                "cgo" => vec!["-ldflags=-linkmode=external"],
                _ => vec![],
            })
            .arg("-o")
            .arg(&bin)
            .arg(".")
            .env("GO111MODULE", "off")
            .env(
                "GOPATH",
                format!("{}:{GOPATH_DEBIAN}", dir.path().display()),
            )
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("GOCACHE", harness::go_cache())
            .env("CGO_ENABLED", if flavor == "cgo" { "1" } else { "0" })
            .output()
            .expect("run go build");
        assert!(
            out.status.success(),
            "Go {}: GOPATH build with client_golang failed: {}",
            tc.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let prog_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(&bin);
        cmd.arg(prog_addr.to_string());
        let prog = Process::spawn("cgprog", cmd);
        wait_up(prog_addr, 20, &format!("Go {}", tc.version));
        let (_agent, agent_addr) = agent_for(prog.pid());
        // Wait until the agent publishes the statistics, then compare. The agent's numbers
        // are read at one moment between two of the program's own scrapes: twice its
        // publishing period after the previous scrape, and before the current one. The
        // program runs in between (its own scrape allocates, and can grow the heap by a
        // 4 MiB chunk, all of it counted released), so each agent value must lie within
        // the tolerance of the range the two scrapes span, not of one of them.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut warm = false;
        let mut before = BTreeMap::new();
        let (mine, theirs, agent_text) = loop {
            thread::sleep(Duration::from_millis(2500));
            let theirs_text = get(prog_addr, "/metrics").expect("program /metrics");
            let agent_text = get(agent_addr, "/metrics").unwrap_or_default();
            let (theirs, mine) = (go_samples(&theirs_text), go_samples(&agent_text));
            // The second round after the agent has the statistics: the program's first
            // scrapes grow its allocator (spans, stacks); later ones reuse them.
            if mine.contains_key("go_memstats_alloc_bytes") {
                if warm {
                    break (mine, theirs, agent_text);
                }
                warm = true;
            }
            before = theirs;
            assert!(
                Instant::now() < deadline,
                "Go {}: agent never showed go_memstats_alloc_bytes:\n{}",
                tc.version,
                harness::tail(&agent_text, 3000)
            );
        };
        let (their_types, my_types) = (
            types(&get(prog_addr, "/metrics").unwrap()),
            types(&agent_text),
        );
        let mut errors = Vec::new();
        for (key, want) in &theirs {
            let Some(got) = mine.get(key) else {
                errors.push(format!("{key}: missing (program: {want})"));
                continue;
            };
            if key == "go_goroutines" {
                // Idle: the parked ones and main; the program counts its scrape's too.
                if *got != PARKED + 1.0 || !(0.0..=SCRAPE_GOROUTINES).contains(&(want - got)) {
                    errors.push(format!(
                        "{key}: agent {got}, program {want} (want agent {}, program {} to {})",
                        PARKED + 1.0,
                        PARKED + 1.0,
                        PARKED + 1.0 + SCRAPE_GOROUTINES
                    ));
                }
                continue;
            }
            if key == "go_threads" {
                // Ms are not freed here (no LockOSThread), but the program's scrape may
                // start one (a goroutine blocked in a syscall hands its P to a new M)
                // after the agent's last read.
                if !(0.0..=1.0).contains(&(want - got)) {
                    errors.push(format!("{key}: agent {got}, program {want} (0 or 1 more)"));
                }
                continue;
            }
            let exact = key.starts_with("go_gc_duration_seconds")
                || key.contains("lookups")
                || key.starts_with("go_info")
                || key.contains("last_gc");
            let tol = if exact {
                want.abs() * 1e-9
            } else if key.contains("mspan") || key.contains("mcache") {
                // Allocator metadata: a scrape can take a few spans.
                32.0 * 1024.0
            } else if key.contains("stack_") {
                // Serving the program's own scrape can take a goroutine stack.
                64.0 * 1024.0
            } else if key.contains("heap_idle")
                || key.contains("heap_inuse")
                || key.contains("heap_released")
            {
                // The background scavenger releases pages between the two reads.
                1024.0 * 1024.0
            } else if key.contains("objects") || key.contains("mallocs") || key.contains("frees") {
                4096.0
            } else {
                256.0 * 1024.0
            };
            let earlier = before.get(key).copied().unwrap_or(*want);
            let (lo, hi) = (earlier.min(*want), earlier.max(*want));
            if *got < lo - tol || *got > hi + tol {
                errors.push(format!(
                    "{key}: agent {got}, program {earlier} then {want} (tolerance {tol})"
                ));
            }
        }
        errors.extend(type_mismatches(&their_types, &my_types));
        assert!(
            errors.is_empty(),
            "Go {} {flavor}: agent vs client_golang:\n{}",
            tc.version,
            errors.join("\n")
        );
        eprintln!(
            "Go {} {flavor}: {} go_* samples agree (GC cycles {}, goroutines {} / {}, threads {} / {})",
            tc.version,
            theirs.len(),
            theirs.get("go_gc_duration_seconds_count").unwrap_or(&0.0),
            mine.get("go_goroutines").unwrap_or(&0.0),
            theirs.get("go_goroutines").unwrap_or(&0.0),
            mine.get("go_threads").unwrap_or(&0.0),
            theirs.get("go_threads").unwrap_or(&0.0)
        );
    }
}

/// Debian's prometheus (2.42, Go 1.19, stripped, client_golang 1.14 inside): a busy Go
/// program nobody here wrote or built. Its heap moves between any two reads, so the agent
/// is read before and after the program's own scrape (the second read after the agent's
/// next publication, so it was taken after the scrape): every counter the program shows
/// lies between the agent's two values, every gauge within a margin of them, and every
/// series the program has, the agent has, with the same type.
#[test]
fn debian_prometheus_go1_19_series_match_from_outside() {
    harness::require_root();
    let prometheus = std::path::Path::new("/usr/bin/prometheus");
    if !prometheus.exists() {
        eprintln!("SKIPPED: apt-get install prometheus (Debian's, built with Go 1.19)");
        return;
    }
    let _serial = harness::serial();
    let dir = TempDir::new("prometheus");
    let config = dir.path().join("prometheus.yml");
    // Evaluating and scraping nothing: the program's own work is its TSDB's housekeeping.
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    let prog_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prog_addr}"))
        .arg("--log.level=warn");
    let prog = Process::spawn("prometheus", cmd);
    wait_up(prog_addr, 30, "prometheus");
    let version = get(prog_addr, "/metrics")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("go_info{"))
        .map(str::to_string)
        .unwrap_or_default();
    let (_agent, agent_addr) = agent_for(prog.pid());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(agent_addr, "/metrics")
        .unwrap_or_default()
        .contains("go_memstats_alloc_bytes ")
    {
        assert!(
            Instant::now() < deadline,
            "the agent never showed go_memstats_alloc_bytes for prometheus ({version})"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // A few rounds: the program's first scrapes grow its allocator and start goroutines.
    let mut last_errors = Vec::new();
    for round in 0..3 {
        let before = go_samples(&get(agent_addr, "/metrics").expect("agent /metrics"));
        let theirs_text = get(prog_addr, "/metrics").expect("prometheus /metrics");
        // Twice the agent's publishing period: its next values were read after the scrape.
        thread::sleep(Duration::from_millis(2500));
        let after_text = get(agent_addr, "/metrics").expect("agent /metrics");
        let after = go_samples(&after_text);
        let theirs = go_samples(&theirs_text);
        let (their_types, my_types) = (types(&theirs_text), types(&after_text));
        let mut errors = Vec::new();
        for (key, want) in &theirs {
            let (Some(a), Some(b)) = (before.get(key), after.get(key)) else {
                errors.push(format!("{key}: missing (program: {want})"));
                continue;
            };
            let (lo, hi) = (a.min(*b), a.max(*b));
            let counter = key.ends_with("_total")
                || key.ends_with("_count")
                || key.ends_with("_sum")
                || key.contains("lookups");
            let (below, above) = if counter || key.starts_with("go_info") {
                (0.0, 0.0)
            } else if key.starts_with("go_gc_duration_seconds{") {
                // Quantiles of the last pauses: equal to one of the agent's reads.
                if want == a || want == b {
                    continue;
                }
                (0.0, 0.0)
            } else if key == "go_goroutines" {
                // The program counts the goroutines serving its own scrape.
                (0.0, SCRAPE_GOROUTINES)
            } else if key == "go_threads" {
                (0.0, 1.0)
            } else if key.contains("last_gc") {
                (0.0, 0.0)
            } else if key.contains("objects") {
                (4096.0, 4096.0)
            } else {
                // What serving the scrape allocates (client_golang builds it on the heap)
                // and what the scavenger releases meanwhile.
                (1024.0 * 1024.0, 1024.0 * 1024.0)
            };
            if *want < lo - below || *want > hi + above {
                errors.push(format!(
                    "{key}: program {want}, agent {a} before and {b} after (margin -{below}/+{above})"
                ));
            }
        }
        errors.extend(type_mismatches(&their_types, &my_types));
        if errors.is_empty() {
            eprintln!(
                "prometheus ({version}): round {round}: {} go_* samples agree (GC cycles {}, goroutines {}, heap {})",
                theirs.len(),
                theirs.get("go_gc_duration_seconds_count").unwrap_or(&0.0),
                theirs.get("go_goroutines").unwrap_or(&0.0),
                theirs.get("go_memstats_heap_alloc_bytes").unwrap_or(&0.0),
            );
            return;
        }
        last_errors = errors;
    }
    panic!(
        "prometheus ({version}): agent vs its own client_golang, 3 rounds:\n{}",
        last_errors.join("\n")
    );
}
