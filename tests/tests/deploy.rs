//! Deployment artifacts and `periscope doctor`, checked on this machine.
//!
//! There is no cluster, no kubectl and no container engine here, so nothing is applied or
//! built; instead:
//! - the doctor runs for real (root), and again in child processes holding exactly the
//!   capabilities the DaemonSet and the systemd unit grant;
//! - the real agent traces a real server under those same two capability sets, and under
//!   the unit's system-call allow list (checked with strace);
//! - every Kubernetes manifest is parsed and cross-checked (selectors, volumes, names,
//!   ports, capabilities — identical to the unit's); `yamllint` runs;
//! - the systemd unit passes `systemd-analyze verify` and `security` (when installed);
//! - the Containerfile copies every workspace member and runs `cargo xtask build`;
//! - `promtool check rules` / `test rules` pass; every PromQL name in the dashboard and the
//!   rules is in dashboards/METRICS.txt and vice versa, the dashboard's queries parse
//!   (promtool), and every [emitted] name is served by the real agent's /metrics.
//!
//! Tests that load eBPF need root and take the e2e serial lock.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::harness::{
    self, Agent, Process, READY_MARKER, TempDir, free_port, start_python_http_server,
};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

// ---------------------------------------------------------------------------------------
// helpers

fn repo() -> PathBuf {
    harness::workspace_root()
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails loudly when a checker is missing: skipping would let the check pass unrun.
fn require_tool(program: &str, package: &str) {
    assert!(
        have(program),
        "{program} is missing: install Debian package {package} (`cargo xtask test` does)"
    );
}

/// `a.b.0.c` into a YAML tree (`Yaml::BadValue` when absent).
fn at<'a>(y: &'a Yaml, path: &str) -> &'a Yaml {
    path.split('.')
        .fold(y, |y, key| match key.parse::<usize>() {
            Ok(i) => &y[i],
            Err(_) => &y[key],
        })
}

fn str_at<'a>(y: &'a Yaml, path: &str) -> &'a str {
    at(y, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path}: expected a string in {y:?}"))
}

fn vec_at<'a>(y: &'a Yaml, path: &str) -> &'a Vec<Yaml> {
    at(y, path)
        .as_vec()
        .unwrap_or_else(|| panic!("{path}: expected a list"))
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        other => format!("{other:?}"),
                    };
                    (k.as_str().unwrap_or_default().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every document of every `*.yaml` under deploy/kubernetes, with its file.
fn manifests() -> Vec<(String, Yaml)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    let root = repo().join("deploy/kubernetes");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no manifests under {}", root.display());
    let mut docs = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(repo()).unwrap().display().to_string();
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel}: invalid YAML: {e}"));
        for d in parsed {
            if !matches!(d, Yaml::Null) {
                docs.push((rel.clone(), d));
            }
        }
    }
    docs
}

fn find<'a>(docs: &'a [(String, Yaml)], kind: &str, name: &str) -> Option<&'a Yaml> {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
}

fn daemonset(docs: &[(String, Yaml)]) -> &Yaml {
    let ds: Vec<_> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some("DaemonSet"))
        .collect();
    assert_eq!(ds.len(), 1, "exactly one DaemonSet");
    &ds[0].1
}

/// The DaemonSet container's added capabilities ("BPF", ...).
fn daemonset_caps() -> BTreeSet<String> {
    let docs = manifests();
    let c = at(daemonset(&docs), "spec.template.spec.containers.0");
    vec_at(c, "securityContext.capabilities.add")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// `[Section] Key=Value` pairs of a unit file (a key may repeat).
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        } else {
            panic!("periscope.service: unparsable line {line:?}");
        }
    }
    out
}

fn unit_value(entries: &[(String, String, String)], section: &str, key: &str) -> String {
    let vals: Vec<_> = entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.clone())
        .collect();
    assert_eq!(
        vals.len(),
        1,
        "[{section}] {key}= set exactly once, got {vals:?}"
    );
    vals[0].clone()
}

/// The unit's AmbientCapabilities ("CAP_BPF", ...).
fn unit_caps() -> BTreeSet<String> {
    let e = unit_entries(&read("deploy/systemd/periscope.service"));
    unit_value(&e, "Service", "AmbientCapabilities")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Capabilities this process may hand out (its bounding set), lowercase without `cap_`.
fn own_bounding_set() -> BTreeSet<String> {
    const NAMES: [(u32, &str); 6] = [
        (2, "dac_read_search"),
        (19, "sys_ptrace"),
        (21, "sys_admin"),
        (24, "sys_resource"),
        (38, "perfmon"),
        (39, "bpf"),
    ];
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap();
    NAMES
        .iter()
        .filter(|(bit, _)| bnd & (1 << bit) != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// setpriv capability list ("+bpf,+perfmon") for names like "BPF" / "CAP_BPF", keeping
/// only those this machine can grant at all (this VM's bounding set lacks
/// CAP_SYS_RESOURCE, which Linux >= 5.11 does not need).
fn setpriv_caps(names: &BTreeSet<String>) -> String {
    let own = own_bounding_set();
    let mut out = Vec::new();
    for n in names {
        let n = n.trim_start_matches("CAP_").to_ascii_lowercase();
        if own.contains(&n) {
            out.push(format!("+{n}"));
        } else {
            eprintln!(
                "note: this machine cannot grant CAP_{} at all; left out",
                n.to_uppercase()
            );
        }
    }
    out.join(",")
}

/// setpriv arguments reproducing the DaemonSet's container: uid 0, only the added
/// capabilities (bounding set), no inheritable ones, no_new_privs.
fn daemonset_setpriv() -> Vec<String> {
    let caps = setpriv_caps(&daemonset_caps());
    vec![
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,{caps}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// setpriv arguments reproducing the systemd unit: an unprivileged user (nobody) with
/// the unit's capabilities as ambient capabilities, NoNewPrivileges.
fn systemd_setpriv() -> Vec<String> {
    let caps = setpriv_caps(&unit_caps());
    vec![
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set=-all,{caps}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

fn require_setpriv() {
    assert!(
        have("setpriv"),
        "setpriv (util-linux) is needed to reproduce the deployments' capability sets"
    );
}

/// Whether `pid` (our child) has exited (zombie or gone).
fn exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

// ---------------------------------------------------------------------------------------
// periscope doctor

const CHILD_ENV: &str = "PERISCOPE_DOCTOR_CHILD";
const BEGIN: &str = "-----BEGIN DOCTOR REPORT-----";
const END: &str = "-----END DOCTOR REPORT-----";

fn checks_by_id(v: &Value) -> BTreeMap<String, Value> {
    v["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn status_of(checks: &BTreeMap<String, Value>, id: &str) -> String {
    checks
        .get(id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .get("status")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

/// Invariants of any report: stable ids, a fix exactly on warn/fail, fail only on
/// required checks, `ready` iff nothing failed.
fn assert_well_formed(v: &Value) {
    let checks = checks_by_id(v);
    for id in [
        "kernel",
        "btf",
        "tracefs",
        "bpffs",
        "lockdown",
        "privileges",
        "pid_namespace",
        "perf_event_paranoid",
        "unprivileged_bpf_disabled",
        "memlock",
        "ringbuf",
        "tracepoint",
        "raw_tracepoint",
        "tp_btf",
        "uprobe",
        "uretprobe",
        "kprobe",
        "fentry",
        "probe_write_user",
        "agent_programs",
        "capture",
    ] {
        assert!(checks.contains_key(id), "missing check {id}: {v:#}");
    }
    let mut any_fail = false;
    for c in checks.values() {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "info", "warn", "fail"].contains(&status), "{c}");
        assert_eq!(
            c.get("fix").is_some(),
            status == "warn" || status == "fail",
            "a fix line exactly for warn/fail: {c}"
        );
        if status == "fail" {
            any_fail = true;
            assert_eq!(c["required"], true, "only required checks fail: {c}");
        }
    }
    assert_eq!(v["ready"], !any_fail, "{v:#}");
}

/// Not a test by itself: the body of the child process the capability tests start.
#[test]
#[ignore = "helper: run by doctor_with_* in a child process with reduced capabilities"]
fn doctor_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let opts = periscope::doctor::Options {
        format: periscope::doctor::Format::Json,
        ..Default::default()
    };
    let mut out = Vec::new();
    periscope::doctor::run(&mut out, &opts).unwrap();
    println!("{BEGIN}\n{}\n{END}", String::from_utf8(out).unwrap());
}

/// Runs [`doctor_child`] under `setpriv <args>`; returns its JSON report.
fn doctor_as(setpriv: &[String]) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setpriv")
        .args(setpriv)
        .arg(&exe)
        .args([
            "--exact",
            "doctor_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .split_once(BEGIN)
        .and_then(|(_, r)| r.split_once(END))
        .map(|(j, _)| j.trim())
        .unwrap_or_else(|| {
            panic!(
                "doctor child printed no report ({}):\nstdout:\n{stdout}\nstderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(json).unwrap_or_else(|e| panic!("doctor JSON: {e}\n{json}"))
}

#[test]
fn doctor_on_this_host() {
    harness::require_root();
    let _serial = harness::serial();
    let securityfs_before = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(" securityfs ");

    let mut out = Vec::new();
    let report = periscope::doctor::run(&mut out, &periscope::doctor::Options::default()).unwrap();
    let table = String::from_utf8(out).unwrap();
    println!("{table}");
    let v: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_well_formed(&v);
    let c = checks_by_id(&v);

    // Root on a kernel this project supports: everything required works.
    assert!(report.ready, "{table}");
    assert_eq!(report.exit_code(), 0);
    assert!(
        table.contains("ready: every required check passed"),
        "{table}"
    );
    for id in [
        "kernel",
        "tracefs",
        "privileges",
        "ringbuf",
        "tracepoint",
        "uprobe",
    ] {
        assert_eq!(status_of(&c, id), "ok", "{id}: {table}");
    }
    // The experiments triggered their hooks and saw them run.
    for id in ["tracepoint", "uprobe"] {
        let d = c[id]["detail"].as_str().unwrap();
        assert!(d.contains("ran ") && !d.contains("ran 0x"), "{id}: {d}");
    }
    // What the kernel offers decides the optional rows.
    let kprobe_pmu = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
    assert_eq!(status_of(&c, "kprobe") == "ok", kprobe_pmu, "{table}");
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    assert_eq!(status_of(&c, "btf") == "ok", btf, "{table}");
    let sock = ["inet_sock_set_state", "inet_sk_error_report"]
        .iter()
        .all(|t| {
            Path::new("/sys/kernel/tracing/events/sock")
                .join(t)
                .exists()
        });
    assert_eq!(status_of(&c, "sock-tracepoints") == "ok", sock, "{table}");
    assert_ne!(status_of(&c, "lockdown"), "fail", "{table}");
    // The agent's own programs load, unless this build embeds none.
    assert!(
        ["ok", "warn"].contains(&status_of(&c, "agent_programs").as_str()),
        "{table}"
    );
    // securityfs mounted only for the check: the host is left as found.
    let securityfs_after = fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .contains(" securityfs ");
    assert_eq!(
        securityfs_before, securityfs_after,
        "securityfs mount state changed"
    );
}

#[test]
fn doctor_with_daemonset_capabilities() {
    harness::require_root();
    require_setpriv();
    let _serial = harness::serial();
    let v = doctor_as(&daemonset_setpriv());
    assert_well_formed(&v);
    let c = checks_by_id(&v);
    eprintln!("{v:#}");
    assert_eq!(
        v["ready"], true,
        "the DaemonSet's capabilities are not enough: {v:#}"
    );
    assert_eq!(status_of(&c, "privileges"), "ok", "{v:#}");
    assert_eq!(status_of(&c, "agent_programs"), "ok", "{v:#}");
    assert_eq!(status_of(&c, "capture"), "ok", "{v:#}");
    // Without CAP_SYS_ADMIN securityfs cannot be mounted: lockdown is either readable
    // (host mounted securityfs) or unknown — never a failure.
    assert_ne!(status_of(&c, "lockdown"), "fail");
}

#[test]
fn doctor_with_systemd_capabilities() {
    harness::require_root();
    require_setpriv();
    let _serial = harness::serial();
    let v = doctor_as(&systemd_setpriv());
    assert_well_formed(&v);
    let c = checks_by_id(&v);
    eprintln!("{v:#}");
    assert_eq!(
        v["ready"], true,
        "the unit's capabilities are not enough: {v:#}"
    );
    assert!(
        c["privileges"]["detail"]
            .as_str()
            .unwrap()
            .starts_with("euid 65534"),
        "{v:#}"
    );
    assert_eq!(status_of(&c, "agent_programs"), "ok", "{v:#}");
}

/// Why the deployments grant CAP_SYS_ADMIN: without it (CAP_BPF + CAP_PERFMON only),
/// uprobes are refused on kernels with commit ba677dbe (Linux 6.16, 2025 stable kernels)
/// and the doctor must say so; on older kernels they work and the doctor says ok.
#[test]
fn doctor_explains_uprobes_need_sys_admin() {
    harness::require_root();
    require_setpriv();
    let _serial = harness::serial();
    let mut caps = daemonset_caps();
    caps.remove("SYS_ADMIN");
    let v = doctor_as(&[
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,{}", setpriv_caps(&caps)),
        "--".into(),
    ]);
    assert_well_formed(&v);
    let c = checks_by_id(&v);
    assert!(
        c["privileges"]["detail"]
            .as_str()
            .unwrap()
            .contains("missing CAP_SYS_ADMIN"),
        "{v:#}"
    );
    assert_eq!(status_of(&c, "tracepoint"), "ok", "{v:#}");
    match status_of(&c, "uprobe").as_str() {
        "ok" => eprintln!("this kernel still allows uprobes with CAP_PERFMON"),
        "fail" => {
            let u = &c["uprobe"];
            eprintln!("{u:#}");
            assert!(
                u["detail"].as_str().unwrap().contains("Permission denied"),
                "{u}"
            );
            assert!(u["fix"].as_str().unwrap().contains("CAP_SYS_ADMIN"), "{u}");
            assert_eq!(v["ready"], false);
        }
        other => panic!("uprobe {other}: {v:#}"),
    }
}

// ---------------------------------------------------------------------------------------
// the real agent under the deployments' privileges

/// Starts the agent (under `prefix`, e.g. setpriv) on a python server, sends two requests,
/// waits for their spans and for the agent to exit after `--duration`.
fn agent_traces_with(prefix: &[String]) {
    let mut server = start_python_http_server();
    let mut cmd = Command::new(prefix.first().expect("a wrapper program"));
    cmd.args(&prefix[1..])
        .arg(harness::agent_bin())
        .args(["--pid", &server.pid().to_string()])
        .args(["--duration", "12", "--console", "text"]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    let mut agent = Process::spawn("periscope-confined", cmd);
    let deadline = Instant::now() + harness::AGENT_READY_TIMEOUT;
    while !agent.output().stderr().contains(READY_MARKER) {
        agent.assert_running();
        assert!(
            Instant::now() < deadline,
            "agent not ready: {}",
            agent.output().stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http_get(server.addr, "/hello.txt").0, 200);
    assert_eq!(http_get(server.addr, "/missing").0, 404);
    agent.wait_for_stdout_line(Duration::from_secs(20), |l| l.contains("/missing"));
    agent.wait_for_stdout_line(Duration::from_secs(5), |l| l.contains("/hello.txt"));
    let deadline = Instant::now() + Duration::from_secs(40);
    while !exited(agent.pid()) {
        assert!(
            Instant::now() < deadline,
            "agent did not exit after --duration"
        );
        thread::sleep(Duration::from_millis(100));
    }
    server.process.assert_running();
}

#[test]
fn agent_runs_with_daemonset_capabilities() {
    harness::require_root();
    require_setpriv();
    let _serial = harness::serial();
    let mut prefix = vec!["setpriv".to_string()];
    prefix.extend(daemonset_setpriv());
    agent_traces_with(&prefix);
}

/// Expands a `SystemCallFilter=` value (groups via `systemd-analyze syscall-filter`).
fn expand_syscall_filter(filter: &str) -> BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.starts_with('@') {
            current = Some(line.trim().to_string());
            groups.entry(line.trim().to_string()).or_default();
        } else if let Some(g) = &current {
            let l = line.trim();
            if !l.is_empty() && !l.starts_with('#') {
                groups.get_mut(g).unwrap().push(l.to_string());
            }
        }
    }
    fn expand(name: &str, groups: &BTreeMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        if name.starts_with('@') {
            for m in groups
                .get(name)
                .unwrap_or_else(|| panic!("unknown group {name}"))
            {
                expand(m, groups, out);
            }
        } else {
            out.insert(name.to_string());
        }
    }
    let mut allowed = BTreeSet::new();
    for item in filter.split_whitespace() {
        expand(item, &groups, &mut allowed);
    }
    allowed
}

#[test]
fn agent_runs_with_systemd_unit_capabilities_and_syscall_filter() {
    harness::require_root();
    require_setpriv();
    let _serial = harness::serial();
    let mut prefix = vec!["setpriv".to_string()];
    prefix.extend(systemd_setpriv());
    let trace = TempDir::new("strace");
    let trace_file = trace.path().join("agent.strace");
    // Both are installed by `cargo xtask test` (strace, systemd): a check that quietly
    // skips when they are missing would pass on a machine that never ran it.
    require_tool("strace", "strace");
    require_tool("systemd-analyze", "systemd");
    let mut p = vec![
        "strace".to_string(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        trace_file.display().to_string(),
    ];
    p.extend(prefix);
    prefix = p;
    agent_traces_with(&prefix);
    let entries = unit_entries(&read("deploy/systemd/periscope.service"));
    let allowed = expand_syscall_filter(&unit_value(&entries, "Service", "SystemCallFilter"));
    let used: BTreeSet<String> = fs::read_to_string(&trace_file)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1.trim_start();
            let name = rest.split('(').next()?;
            (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .then(|| name.to_string())
        })
        .collect();
    assert!(
        used.contains("bpf") && used.contains("perf_event_open"),
        "{used:?}"
    );
    let denied: Vec<_> = used.difference(&allowed).collect();
    assert!(
        denied.is_empty(),
        "the agent made system calls the unit's SystemCallFilter= denies: {denied:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes manifests

/// Kinds we ship and the apiVersion each must use.
const KINDS: [(&str, &str); 9] = [
    ("Namespace", "v1"),
    ("ServiceAccount", "v1"),
    ("ConfigMap", "v1"),
    ("ClusterRole", "rbac.authorization.k8s.io/v1"),
    ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ("PriorityClass", "scheduling.k8s.io/v1"),
    ("DaemonSet", "apps/v1"),
    ("PodMonitor", "monitoring.coreos.com/v1"),
    ("Kustomization", "kustomize.config.k8s.io/v1beta1"),
];
const CLUSTER_SCOPED: [&str; 4] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
];
/// Linux capability names as Kubernetes spells them (no CAP_ prefix).
const LINUX_CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let docs = manifests();
    let namespace = "periscope";

    // Every document: known kind, right apiVersion, a name, the namespace when namespaced.
    for (file, d) in &docs {
        let kind = str_at(d, "kind");
        let api = KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("{file}: unexpected kind {kind}"))
            .1;
        assert_eq!(str_at(d, "apiVersion"), api, "{file}: {kind}");
        if kind == "Kustomization" {
            continue;
        }
        let name = str_at(d, "metadata.name");
        assert!(!name.is_empty(), "{file}: empty metadata.name");
        if CLUSTER_SCOPED.contains(&kind) {
            assert!(
                at(d, "metadata.namespace").is_badvalue(),
                "{file}: {kind} is cluster-scoped"
            );
        } else {
            assert_eq!(
                str_at(d, "metadata.namespace"),
                namespace,
                "{file}: {kind}/{name}"
            );
        }
    }
    assert!(find(&docs, "Namespace", namespace).is_some());

    // kustomization.yaml lists every manifest outside optional/, and only existing files.
    let kust = docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some("Kustomization"))
        .map(|(_, d)| d)
        .expect("kustomization.yaml");
    let listed: BTreeSet<String> = vec_at(kust, "resources")
        .iter()
        .map(|r| format!("deploy/kubernetes/{}", r.as_str().unwrap()))
        .collect();
    let shipped: BTreeSet<String> = docs
        .iter()
        .map(|(f, _)| f.clone())
        .filter(|f| !f.contains("/optional/") && !f.ends_with("kustomization.yaml"))
        .collect();
    assert_eq!(listed, shipped, "kustomization resources vs manifests");

    // RBAC: read-only access to pods, bound to our ServiceAccount.
    let role = find(&docs, "ClusterRole", "periscope").expect("ClusterRole periscope");
    for rule in vec_at(role, "rules") {
        for v in vec_at(rule, "verbs") {
            assert!(
                ["get", "list", "watch"].contains(&v.as_str().unwrap()),
                "ClusterRole grants {v:?}"
            );
        }
        for r in vec_at(rule, "resources") {
            assert_eq!(r.as_str(), Some("pods"), "ClusterRole reaches beyond pods");
        }
    }
    let binding = find(&docs, "ClusterRoleBinding", "periscope").expect("ClusterRoleBinding");
    assert_eq!(str_at(binding, "roleRef.kind"), "ClusterRole");
    assert!(find(&docs, "ClusterRole", str_at(binding, "roleRef.name")).is_some());
    let subject = at(binding, "subjects.0");
    assert_eq!(str_at(subject, "kind"), "ServiceAccount");
    assert_eq!(str_at(subject, "namespace"), namespace);
    assert!(find(&docs, "ServiceAccount", str_at(subject, "name")).is_some());

    // The DaemonSet.
    let ds = daemonset(&docs);
    let spec = at(ds, "spec.template.spec");
    let selector = string_map(at(ds, "spec.selector.matchLabels"));
    let labels = string_map(at(ds, "spec.template.metadata.labels"));
    assert!(!selector.is_empty(), "empty selector");
    for (k, v) in &selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "selector {k}={v} not in the pod template labels"
        );
    }
    assert_eq!(at(spec, "hostPID").as_bool(), Some(true), "hostPID");
    assert_ne!(at(spec, "hostNetwork").as_bool(), Some(true), "hostNetwork");
    assert!(find(&docs, "ServiceAccount", str_at(spec, "serviceAccountName")).is_some());
    assert!(find(&docs, "PriorityClass", str_at(spec, "priorityClassName")).is_some());
    assert!(
        vec_at(spec, "tolerations")
            .iter()
            .any(|t| t["operator"].as_str() == Some("Exists") && t["key"].is_badvalue()),
        "a toleration for every taint"
    );

    let containers = vec_at(spec, "containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let cname = str_at(c, "name");
    let image = str_at(c, "image");
    assert!(
        image.contains(':') && !image.ends_with(":latest"),
        "pin the image: {image}"
    );
    assert!(
        at(c, "command").is_badvalue(),
        "the image's ENTRYPOINT is the agent"
    );
    let args: Vec<&str> = vec_at(c, "args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["--prometheus", "0.0.0.0:9464"],
        "node-wide mode, no --pid"
    );

    // Environment: the downward API, the collector, the ConfigMap.
    let env = vec_at(c, "env");
    let env_names: BTreeSet<&str> = env.iter().map(|e| str_at(e, "name")).collect();
    let node = env
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME");
    assert_eq!(
        str_at(node, "valueFrom.fieldRef.fieldPath"),
        "spec.nodeName"
    );
    for e in env {
        if let Some(v) = e["value"].as_str() {
            // $(VAR) only expands variables defined earlier in the list.
            for var in v
                .split("$(")
                .skip(1)
                .filter_map(|r| r.split_once(')'))
                .map(|(n, _)| n)
            {
                assert!(env_names.contains(var), "env refers to undefined $({var})");
            }
        }
    }
    let cm_name = str_at(c, "envFrom.0.configMapRef.name");
    let cm = find(&docs, "ConfigMap", cm_name).expect("the ConfigMap envFrom names");
    let data = string_map(at(cm, "data"));
    assert!(data["OTEL_EXPORTER_OTLP_ENDPOINT"].starts_with("http://"));
    assert_eq!(data["OTEL_EXPORTER_OTLP_PROTOCOL"], "grpc");
    assert!(
        !data.contains_key("OTEL_SERVICE_NAME"),
        "would rename every service"
    );

    // Ports, probes, scrape annotations agree.
    let port = &vec_at(c, "ports")[0];
    let port_name = str_at(port, "name");
    let port_no = at(port, "containerPort").as_i64().unwrap();
    assert!(
        args[1].ends_with(&format!(":{port_no}")),
        "--prometheus vs containerPort"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        let p = at(c, &format!("{probe}.httpGet.port"));
        assert!(
            p.as_str() == Some(port_name) || p.as_i64() == Some(port_no),
            "{probe} targets another port"
        );
    }
    let ann = string_map(at(ds, "spec.template.metadata.annotations"));
    assert_eq!(ann["prometheus.io/port"], port_no.to_string());
    assert_eq!(
        ann[&format!("container.apparmor.security.beta.kubernetes.io/{cname}")],
        "unconfined"
    );

    // Resources: requests, a memory limit.
    for r in ["requests.cpu", "requests.memory", "limits.memory"] {
        assert!(
            at(c, &format!("resources.{r}")).as_str().is_some(),
            "resources.{r}"
        );
    }

    // Security context: narrow capabilities, not privileged.
    let sc = at(c, "securityContext");
    assert_ne!(at(sc, "privileged").as_bool(), Some(true));
    assert_eq!(at(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    let drop: Vec<_> = vec_at(sc, "capabilities.drop")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(drop, ["ALL"]);
    let add = daemonset_caps();
    for cap in &add {
        assert!(
            LINUX_CAPS.contains(&cap.as_str()),
            "unknown capability {cap}"
        );
    }
    // SYS_ADMIN: uprobes need it on current kernels (doctor_explains_uprobes_need_sys_admin).
    let expected: BTreeSet<String> = [
        "BPF",
        "PERFMON",
        "SYS_ADMIN",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "SYS_RESOURCE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(add, expected);
    // The API refuses allowPrivilegeEscalation: false with CAP_SYS_ADMIN added.
    if add.contains("SYS_ADMIN") {
        assert_ne!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    }
    assert_eq!(str_at(sc, "seccompProfile.type"), "Unconfined");

    // Volumes: every mount has a volume, every volume is mounted, tracefs read-only.
    let volumes: BTreeMap<&str, &Yaml> = vec_at(spec, "volumes")
        .iter()
        .map(|v| (str_at(v, "name"), v))
        .collect();
    let mounts = vec_at(c, "volumeMounts");
    let mounted: BTreeSet<&str> = mounts.iter().map(|m| str_at(m, "name")).collect();
    for m in &mounted {
        assert!(volumes.contains_key(m), "volumeMount {m} has no volume");
    }
    for v in volumes.keys() {
        assert!(mounted.contains(v), "volume {v} is never mounted");
    }
    let tracefs = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/sys/kernel/tracing"))
        .expect("tracefs mount");
    assert_eq!(at(tracefs, "readOnly").as_bool(), Some(true));
    assert_eq!(
        str_at(volumes[str_at(tracefs, "name")], "hostPath.path"),
        "/sys/kernel/tracing"
    );

    // The optional PodMonitor selects these pods on this port.
    if let Some(pm) = find(&docs, "PodMonitor", "periscope") {
        for (k, v) in string_map(at(pm, "spec.selector.matchLabels")) {
            assert_eq!(labels.get(&k), Some(&v), "PodMonitor selector {k}");
        }
        assert_eq!(str_at(pm, "spec.podMetricsEndpoints.0.port"), port_name);
    }

    require_tool("yamllint", "yamllint");
    {
        let out = Command::new("yamllint")
            .args([
                "-d",
                "{extends: default, rules: {line-length: disable, document-start: disable, comments: {min-spaces-from-content: 1}}}",
                "-f",
                "parsable",
            ])
            .arg(repo().join("deploy"))
            .arg(repo().join("dashboards/prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "yamllint:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn systemd_unit_matches_the_daemonset_and_passes_systemd_analyze() {
    let text = read("deploy/systemd/periscope.service");
    let e = unit_entries(&text);
    for section in ["Unit", "Service", "Install"] {
        assert!(e.iter().any(|(s, _, _)| s == section), "[{section}]");
    }
    let exec = unit_value(&e, "Service", "ExecStart");
    assert!(exec.starts_with("/usr/local/bin/periscope "), "{exec}");
    assert!(exec.contains("$PERISCOPE_ARGS"), "{exec}");
    assert_eq!(
        unit_value(&e, "Service", "EnvironmentFile"),
        "/etc/periscope/env"
    );
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(unit_value(&e, "Service", key), want, "{key}=");
    }
    assert_eq!(unit_value(&e, "Install", "WantedBy"), "multi-user.target");

    // Same capabilities as the DaemonSet, bounding set == ambient set, no SYS_ADMIN.
    let ambient = unit_caps();
    let bounding: BTreeSet<String> = unit_value(&e, "Service", "CapabilityBoundingSet")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ambient, bounding);
    let ds: BTreeSet<String> = daemonset_caps()
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    assert_eq!(
        ambient, ds,
        "systemd unit and DaemonSet grant different capabilities"
    );
    let filter = unit_value(&e, "Service", "SystemCallFilter");
    for call in ["bpf", "perf_event_open"] {
        assert!(
            filter.split_whitespace().any(|w| w == call),
            "SystemCallFilter lacks {call}"
        );
    }

    // An unprivileged user that sysusers creates; the env file sets what ExecStart uses.
    let user = unit_value(&e, "Service", "User");
    assert_ne!(user, "root");
    let sysusers = read("deploy/systemd/periscope.sysusers.conf");
    assert!(
        sysusers
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["u", user.as_str()])),
        "sysusers.conf does not create {user}"
    );
    let env = read("deploy/systemd/periscope.env");
    let env_keys: BTreeSet<&str> = env
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    for k in [
        "PERISCOPE_ARGS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        assert!(env_keys.contains(k), "periscope.env lacks {k}");
    }

    require_tool("systemd-analyze", "systemd");
    // verify needs ExecStart's binary to exist: point it at one that does.
    let dir = TempDir::new("systemd");
    let unit = dir.path().join("periscope.service");
    fs::write(&unit, text.replace("/usr/local/bin/periscope", "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let msgs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && msgs.trim().is_empty(),
        "systemd-analyze verify:\n{msgs}"
    );
    // Exposure on systemd's 0-100 scale (printed as 0.0-10.0): stay at "OK" or better.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=40", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall line)");
    eprintln!("{overall}");
    assert!(
        out.status.success(),
        "systemd-analyze security above 4.0:\n{report}"
    );
}

#[test]
fn containerfile_builds_what_xtask_builds() {
    let cf = read("deploy/Containerfile");
    let lines: Vec<&str> = cf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage: build + runtime");
    assert!(froms[0].ends_with(" AS build"), "{}", froms[0]);
    assert!(
        cf.contains("cargo xtask build"),
        "builds with cargo xtask build"
    );
    // Every workspace member (and the excluded eBPF crate) is copied into the build.
    let manifest = read("Cargo.toml");
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("workspace members");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    let copied: BTreeSet<&str> = lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().skip(1).collect();
            parts[..parts.len() - 1].to_vec()
        })
        .collect();
    for need in members
        .iter()
        .copied()
        .chain(["ebpf", "Cargo.toml", "Cargo.lock", ".cargo"])
    {
        assert!(copied.contains(need), "Containerfile does not COPY {need}");
    }
    for src in &copied {
        assert!(
            repo().join(src).exists(),
            "Containerfile copies missing {src}"
        );
    }
    // The runtime stage runs the agent binary the build stage produced.
    let from_build = lines
        .iter()
        .find(|l| l.starts_with("COPY --from=build"))
        .expect("COPY --from=build");
    let dest = from_build.split_whitespace().last().unwrap();
    let entry = lines
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entry.contains(&format!("\"{dest}\"")), "{entry} vs {dest}");
    assert!(cf.contains("EXPOSE 9464"));
}

// ---------------------------------------------------------------------------------------
// dashboards and alerts

/// `[emitted]` and `[pending]` names of dashboards/METRICS.txt.
fn listed_metrics() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut emitted = BTreeSet::new();
    let mut pending = BTreeSet::new();
    let mut section = "";
    for line in read("dashboards/METRICS.txt").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "[emitted]" || line == "[pending]" {
            section = line;
            continue;
        }
        let set = match section {
            "[emitted]" => &mut emitted,
            "[pending]" => &mut pending,
            _ => panic!("METRICS.txt: {line} before a [section]"),
        };
        assert!(
            set.insert(line.to_string()),
            "METRICS.txt lists {line} twice"
        );
    }
    assert!(emitted.is_disjoint(&pending));
    (emitted, pending)
}

/// Removes `open ... close` spans (nesting-aware), e.g. label matchers and ranges.
fn strip_delimited(s: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for ch in s.chars() {
        if ch == open {
            depth += 1;
        } else if ch == close && depth > 0 {
            depth -= 1;
        } else if depth == 0 {
            out.push(ch);
        }
    }
    out
}

/// Metric names a PromQL expression selects (Grafana variables allowed).
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // String literals first (they may contain anything), then matchers and ranges.
    let mut s = String::new();
    let mut quote = None;
    let mut escaped = false;
    for ch in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
            }
            None if ch == '"' || ch == '\'' || ch == '`' => quote = Some(ch),
            None => s.push(ch),
        }
    }
    let s = strip_delimited(&strip_delimited(&s, '{', '}'), '[', ']');
    const CLAUSES: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Operators and aggregations (which may take `by (...)` before their parenthesis).
    const KEYWORDS: [&str; 22] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    let chars: Vec<char> = s.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_ident = (c.is_ascii_alphabetic() || c == '_' || c == ':')
            && (i == 0
                || !(chars[i - 1].is_ascii_alphanumeric()
                    || chars[i - 1] == '$'
                    || chars[i - 1] == '.'));
        if !starts_ident {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut j = i;
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        let next = chars.get(j).copied();
        if CLAUSES.contains(&word.as_str()) {
            // Skip the label list of a grouping/matching clause.
            if next == Some('(') {
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                i = j + 1;
            }
            continue;
        }
        if next == Some('(') || KEYWORDS.contains(&word.as_str()) {
            continue; // function call or keyword
        }
        names.insert(word);
    }
    names
}

#[test]
fn promql_name_extraction() {
    let n = promql_metric_names(
        r#"sum by (service_name, le) (rate(a_bucket{x=~"5..", y="}{"}[$__rate_interval])) / on (job) group_left(v) b offset 5m > bool 0.5 and c"#,
    );
    assert_eq!(
        n,
        ["a_bucket", "b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(
        promql_metric_names("label_values(target_info, service_name)"),
        ["target_info", "service_name"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        "label_values is special-cased by the caller"
    );
}

/// PromQL expressions of the dashboard: panel targets and variable queries.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            // label_values(METRIC, LABEL): only the metric is a series name.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.split_once(','))
                .map(|(m, _)| m.trim().to_string())
                .unwrap_or_else(|| q.to_string());
            out.push((format!("variable {}", v["name"]), inner));
        }
    }
    out
}

fn rule_exprs() -> Vec<(String, String)> {
    let docs = YamlLoader::load_from_str(&read("dashboards/prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    for g in vec_at(&docs[0], "groups") {
        for r in vec_at(g, "rules") {
            out.push((
                str_at(r, "alert").to_string(),
                str_at(r, "expr").to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_valid_and_uses_only_listed_metrics() {
    let dash: Value = serde_json::from_str(&read("dashboards/grafana/periscope.json"))
        .expect("periscope.json is JSON");
    assert!(dash["schemaVersion"].as_i64().unwrap() >= 36);
    assert!(!dash["uid"].as_str().unwrap().is_empty());
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds_var["query"], "prometheus");
    let ds_ref = format!("${{{}}}", ds_var["name"].as_str().unwrap());
    assert!(
        vars.iter().any(|v| v["name"] == "service"),
        "a service variable"
    );

    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate panel id {}",
            p["id"]
        );
        let g = &p["gridPos"];
        assert!(
            g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24,
            "{}",
            p["title"]
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], ds_ref.as_str(), "{}", p["title"]);
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(t["datasource"]["uid"], ds_ref.as_str(), "{}", p["title"]);
            }
        }
    }
    // Server-side panels filter by the service variable.
    for (title, expr) in dashboard_exprs(&dash) {
        if expr.contains("http_server_") {
            assert!(
                expr.contains(r#"service_name=~"$service""#),
                "{title}: {expr}"
            );
        }
    }

    // Names: used == listed.
    let (emitted, pending) = listed_metrics();
    let listed: BTreeSet<String> = emitted.union(&pending).cloned().collect();
    let mut used = BTreeSet::new();
    for (what, expr) in dashboard_exprs(&dash).into_iter().chain(rule_exprs()) {
        for name in promql_metric_names(&expr) {
            assert!(
                listed.contains(&name),
                "{what}: {name} is not in dashboards/METRICS.txt"
            );
            used.insert(name);
        }
    }
    let unused: Vec<_> = listed.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "METRICS.txt lists names nothing uses: {unused:?}"
    );
    // The names the brief asked for are there.
    for n in [
        "go_goroutines",
        "go_threads",
        "go_gc_duration_seconds",
        "periscope_go_goroutines_by_site",
        "periscope_events_lost_total",
        "periscope_spans_dropped_total",
        "periscope_parse_errors_total",
        "periscope_export_queue_depth",
    ] {
        assert!(used.contains(n), "{n} not used");
    }

    // Every dashboard query parses as PromQL: promtool checks them as recording rules
    // once Grafana's variables are replaced by values.
    let dir = TempDir::new("dashboard-promql");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_exprs(&dash).iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$service", ".*")
            .replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let file = dir.path().join("dashboard.rules.yml");
    fs::write(&file, rules).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dashboard PromQL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool() -> &'static str {
    assert!(
        have("promtool"),
        "promtool not found: `apt-get install prometheus` (cargo xtask test installs it)"
    );
    "promtool"
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo().join("dashboards/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new(promtool())
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
        assert!(text.contains("SUCCESS"), "{text}");
    }
    // Every alert has a test that shows it firing.
    let tests = read("dashboards/prometheus/alerts_test.yml");
    for (alert, _) in rule_exprs() {
        assert!(
            tests.contains(&format!("alertname: {alert}")),
            "no test for {alert}"
        );
    }
}

/// Sample names (`name{...} value`) of a text exposition.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn listed_metrics_are_served_by_the_real_agent() {
    harness::require_root();
    assert!(have("python3"), "python3 is needed for the client process");
    let _serial = harness::serial();
    let server = start_python_http_server();
    // A traced client: waits for a go file, then calls the server (client metrics).
    let dir = TempDir::new("metrics-client");
    let go = dir.path().join("go");
    let script = format!(
        "import os, time, urllib.request, urllib.error\n\
         while not os.path.exists({go:?}): time.sleep(0.05)\n\
         for p in ['/hello.txt', '/missing', '/data.bin']:\n\
         \x20   try: urllib.request.urlopen('http://{addr}' + p).read()\n\
         \x20   except urllib.error.HTTPError: pass\n\
         print('done', flush=True)\n\
         time.sleep(120)\n",
        go = go.display().to_string(),
        addr = server.addr,
    );
    let mut client_cmd = Command::new("python3");
    client_cmd.args(["-u", "-c", &script]);
    let mut client = Process::spawn("metrics-client", client_cmd);
    let port = free_port();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--pid".to_string(),
        client.pid().to_string(),
        "--prometheus".to_string(),
        metrics_addr.to_string(),
    ]);
    fs::write(&go, "").unwrap();
    client.wait_for_stdout_line(Duration::from_secs(20), |l| l == "done");

    let (emitted, _) = listed_metrics();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = http_get(metrics_addr, "/metrics");
        let served = sample_names(&text);
        let missing: Vec<_> = emitted.iter().filter(|n| !served.contains(*n)).collect();
        if status == 200 && missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "[emitted] names of dashboards/METRICS.txt not on /metrics: {missing:?}\n{}",
            harness::tail(&text, 3000)
        );
        thread::sleep(Duration::from_millis(500));
    }
}
