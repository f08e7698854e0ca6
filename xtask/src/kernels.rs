//! `cargo xtask kernels`: the agent on other kernels, booted under qemu.
//!
//! Production runs kernels this CI host does not (Debian 12 / Amazon Linux 2023 / EKS
//! and GKE nodes run 6.1; Debian's backports 6.12), and tracepoint record layouts,
//! verifiers and helpers differ between them. So Debian's cloud kernels are fetched
//! from the archive (`apt-get download`, no install), booted with software emulation
//! (`-enable-kvm` hangs here) from an initramfs holding busybox, the stripped agent
//! with its shared libraries and real servers: `gotruth` (tests/programs) built with
//! two Go toolchains, one stripped, and busybox httpd. The guest's init runs
//! `periscope doctor`, the agent against the servers, exactly [`REQUESTS`] requests to
//! each, scrapes the agent's Prometheus endpoint, asks each Go server for its own
//! goroutine count, and prints everything between `@@BEGIN name` / `@@END name`
//! markers on the serial console. This side parses that and asserts. The cloud
//! kernels have no 9p, hence the initramfs.
//!
//! The guest can never hang CI: a watchdog in init powers off after
//! [`GUEST_TIMEOUT_S`], `panic=-1` reboots a dying kernel and `-no-reboot` turns that
//! into a qemu exit, and qemu itself is killed after [`HOST_TIMEOUT_S`].

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::tools;

/// Debian kernel lines booted here: (label, apt package name regex). The newest
/// package of each line in the archive is used.
pub const KERNELS: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"),
    (
        "6.12",
        r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
    ),
];

/// Requests sent to each server in the guest.
pub const REQUESTS: usize = 5;
/// Go toolchains the guest's servers are built with: (version, stripped).
const GO_BUILDS: &[(&str, bool)] = &[("1.21", false), ("1.27", true)];
const GUEST_TIMEOUT_S: u64 = 240;
const HOST_TIMEOUT_S: u64 = 300;

pub fn kernels(filter: Option<&str>) -> Result<()> {
    if !tools::is_root() {
        bail!(
            "`cargo xtask kernels` installs qemu and runs as root: `sudo -E cargo xtask kernels`"
        );
    }
    let agent = crate::build::build_all()?;
    let go = tools::go_toolchains(&GO_BUILDS.iter().map(|g| g.0).collect::<Vec<_>>())?;
    run_all(&agent, &go, filter)
}

/// Boots every kernel in [`KERNELS`] (those whose label contains `filter`) with the
/// agent at `agent` and asserts; fails with every kernel's problems.
pub fn run_all(agent: &Path, go: &[(String, PathBuf)], filter: Option<&str>) -> Result<()> {
    // Either busybox package will do (other tests install the dynamic one; the two
    // conflict, so never swap one for the other): its libraries are copied along.
    let busybox = if installed("busybox") {
        "busybox"
    } else {
        "busybox-static"
    };
    tools::apt_install(
        &["qemu-system-x86", busybox, "cpio", "binutils"],
        "qemu, busybox and cpio to boot other kernels with the agent in an initramfs",
    )?;
    let work = tools::repo_root().join("target/kernels");
    fs::create_dir_all(&work)?;
    let initrd = build_initramfs(&work, agent, go)?;
    let mut failures = Vec::new();
    for &(label, pattern) in KERNELS {
        if filter.is_some_and(|f| !label.contains(f)) {
            continue;
        }
        let vmlinuz = fetch_kernel(pattern)?;
        eprintln!(
            "xtask: kernel {label}: booting {} under qemu",
            vmlinuz.display()
        );
        let started = Instant::now();
        let log = work.join(format!("console-{label}.txt"));
        let console = boot(&vmlinuz, &initrd, &log)?;
        if let Some(f) = formats(&console) {
            fs::write(work.join(format!("formats-{label}.txt")), f)?;
        }
        let problems = check_guest(&console);
        eprintln!(
            "xtask: kernel {label}: {} in {:.0} s (console: {})",
            if problems.is_empty() { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64(),
            log.display()
        );
        for p in &problems {
            eprintln!("xtask:   {p}");
        }
        if !problems.is_empty() {
            failures.push(format!("{label}: {}", problems.join("; ")));
        }
    }
    if !failures.is_empty() {
        bail!("kernel matrix failed: {}", failures.join(" | "));
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// The newest package matching `pattern`, downloaded and unpacked once into
/// .tools/kernels/<package>/vmlinuz.
fn fetch_kernel(pattern: &str) -> Result<PathBuf> {
    let search = || -> Result<Option<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()
            .context("running apt-cache")?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        names.sort_by_key(|n| version_key(n));
        Ok(names.pop())
    };
    let pkg = match search()? {
        Some(p) => p,
        None => {
            tools::run(Command::new("apt-get").args(["update", "-qq"]))?;
            search()?
                .with_context(|| format!("no package matching {pattern} in the apt archive"))?
        }
    };
    let dir = tools::tools_dir().join("kernels").join(&pkg);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    fs::create_dir_all(&dir)?;
    eprintln!("xtask: downloading {pkg} (kernel image only, no install)");
    let download = || {
        tools::run(
            Command::new("apt-get")
                // Root downloads into a root-owned directory: no _apt sandbox warning.
                .args(["download", "-qq", "-o", "APT::Sandbox::User=root", &pkg])
                .current_dir(&dir),
        )
    };
    download().or_else(|e| {
        eprintln!("xtask: apt-get download failed ({e}); updating lists and retrying once");
        tools::run(Command::new("apt-get").args(["update", "-qq"]))?;
        download()
    })?;
    let deb = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    // Only the kernel image: the package's modules are not needed (everything the
    // agent uses is built in) and are ten times larger.
    tools::run(Command::new("sh").current_dir(&dir).arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x --wildcards './boot/vmlinuz-*' && mv boot/vmlinuz-* vmlinuz && rmdir boot && rm -f '{}'",
        deb.display(),
        deb.display()
    )))?;
    Ok(vmlinuz)
}

/// Orders package names by the numbers in them (6.1.0-9 < 6.1.0-10).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// The Go servers in the guest: (file name, Go version).
fn go_servers() -> Vec<(String, &'static str)> {
    GO_BUILDS
        .iter()
        .map(|&(v, stripped)| {
            (
                format!("gotruth-{v}{}", if stripped { "-stripped" } else { "" }),
                v,
            )
        })
        .collect()
}

fn build_initramfs(work: &Path, agent: &Path, go: &[(String, PathBuf)]) -> Result<PathBuf> {
    let root = work.join("initramfs");
    if root.exists() {
        fs::remove_dir_all(&root)?;
    }
    for d in ["bin", "proc", "sys", "dev", "tmp", "www", "etc"] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).context("copying /bin/busybox")?;
    tools::run(
        Command::new("strip")
            .arg("-o")
            .arg(root.join("bin/periscope"))
            .arg(agent),
    )?;
    copy_libraries(Path::new("/bin/busybox"), &root)?;
    copy_libraries(agent, &root)?;
    let src = tools::repo_root().join("tests/programs/gotruth");
    for ((name, version), &(_, stripped)) in go_servers().iter().zip(GO_BUILDS) {
        let go_bin = &go
            .iter()
            .find(|(v, _)| v == version)
            .with_context(|| format!("no Go {version} toolchain"))?
            .1;
        let cache = tools::tools_dir().join("go").join(version);
        let mut cmd = Command::new(go_bin);
        cmd.current_dir(&src)
            .args(["build", "-trimpath", "-o"])
            .arg(root.join("bin").join(name));
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        cmd.arg(".")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOWORK", "off")
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", tools::go_cache())
            .env("GOPATH", cache.join("gopath"))
            .env("GOENV", "off");
        tools::run(&mut cmd).with_context(|| format!("building {name}"))?;
    }
    fs::write(root.join("www/index.html"), "hello from busybox httpd\n")?;
    let tracepoints = tracepoints_used();
    fs::write(root.join("etc/tracepoints"), tracepoints.join("\n") + "\n")?;
    let init = root.join("init");
    fs::write(&init, init_script())?;
    tools::run(Command::new("chmod").arg("+x").arg(&init))?;
    let initrd = work.join("initrd.gz");
    tools::run(Command::new("sh").current_dir(&root).arg("-c").arg(format!(
        "ln -sf busybox bin/sh && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
        initrd.display()
    )))?;
    Ok(initrd)
}

/// Copies the shared libraries of `binary` (from ldd) to the same paths under `root`.
fn copy_libraries(binary: &Path, root: &Path) -> Result<()> {
    let ldd = Command::new("ldd").arg(binary).output()?;
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = match line.split("=>").nth(1) {
            Some(rest) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let dest = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().expect("absolute path"))?;
        fs::copy(path, &dest).with_context(|| format!("copying {path}"))?;
    }
    Ok(())
}

/// `category/name` of every tracepoint in the agent's probe table (for the format
/// fixtures the guest prints).
fn tracepoints_used() -> Vec<String> {
    let src =
        fs::read_to_string(tools::repo_root().join("agent/src/probes/mod.rs")).unwrap_or_default();
    let table = src
        .split("pub const PROBES")
        .nth(1)
        .and_then(|t| t.split("];").next())
        .unwrap_or("");
    let strings: Vec<&str> = table.split('"').skip(1).step_by(2).collect();
    let mut out: Vec<String> = strings
        .chunks(4)
        .filter(|c| c.len() == 4)
        .map(|c| format!("{}/{}", c[1], c[2]))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn init_script() -> String {
    let servers = go_servers();
    let mut s = format!(
        r#"#!/bin/sh
# Periscope's kernel-matrix guest (generated by xtask/src/kernels.rs).
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
ip link set lo up
# Whatever happens below, the VM ends.
(sleep {GUEST_TIMEOUT_S}; echo "@@TIMEOUT"; poweroff -f) &
N={REQUESTS}
begin() {{ echo "@@BEGIN $1"; }}
end() {{ echo "@@END $1"; }}
wait_http() {{
  i=0
  until wget -q -O /dev/null "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -gt 300 ] && echo "@@NOTUP $1" && return 1; sleep 0.2
  done
}}
begin uname; uname -r; end uname
begin formats
while read tp; do echo "=== $tp"; cat /sys/kernel/tracing/events/$tp/format; done < /etc/tracepoints
end formats
begin doctor
periscope doctor --json 2>/tmp/doctor.err
RC=$?
end doctor
echo "@@RC doctor $RC"
begin doctor-stderr; cat /tmp/doctor.err; end doctor-stderr
httpd -f -p 127.0.0.1:8080 -h /www &
HTTPD=$!
echo "@@PID httpd $HTTPD"
"#
    );
    for (i, (name, _)) in servers.iter().enumerate() {
        let port = 8081 + i;
        // Blocked goroutines before it listens, a different number per server, so
        // that go_goroutines is checked against a count the agent has to read from
        // the runtime, not the handful every idle server has.
        let preload = 20 + 15 * i;
        s += &format!(
            "{name} -addr 127.0.0.1:{port} -preload {preload} >/tmp/{name}.out 2>&1 &\necho \"@@PID {name} $!\"\nP{i}=$!\n"
        );
    }
    s += "wait_http http://127.0.0.1:8080/index.html\n";
    for (i, _) in servers.iter().enumerate() {
        s += &format!("wait_http http://127.0.0.1:{}/\n", 8081 + i);
    }
    let pids: String = (0..servers.len())
        .map(|i| format!(" --pid $P{i}"))
        .collect();
    s += &format!(
        r#"PERISCOPE_LOG=${{PERISCOPE_LOG:-warn,periscope=info}} periscope --pid $HTTPD{pids} --console json --prometheus 127.0.0.1:9464 --duration 600 >/tmp/spans.json 2>/tmp/agent.err &
AGENT=$!
i=0
until grep -q "ready" /tmp/agent.err; do
  i=$((i+1)); [ $i -gt 600 ] && echo "@@NOTREADY" && break; sleep 0.2
done
# Let the Go probes attach and the first goroutine sample land.
sleep 2
for i in $(seq $N); do wget -q -O /dev/null http://127.0.0.1:8080/index.html; done
"#
    );
    // A thread of each Go server exits first while the process lives on: the agent
    // must keep tracing it (kernels without sched_process_exit's group_dead).
    for (i, (name, _)) in servers.iter().enumerate() {
        s += &format!(
            "begin threadexit-{name}; wget -q -O - --post-data= http://127.0.0.1:{}/threadexit; echo; end threadexit-{name}\n",
            8081 + i
        );
    }
    for (i, _) in servers.iter().enumerate() {
        s += &format!(
            "for i in $(seq $N); do wget -q -O /dev/null http://127.0.0.1:{}/; done\n",
            8081 + i
        );
    }
    // The goroutine sample is taken twice a second: let one land after the last
    // request, then take the agent's view between two of the program's own reports.
    s += "sleep 2\n";
    for (i, (name, _)) in servers.iter().enumerate() {
        s += &format!(
            "begin truth-{name}; wget -q -O - http://127.0.0.1:{}/truth; echo; end truth-{name}\n",
            8081 + i
        );
    }
    s += "sleep 1.5\nbegin metrics; wget -q -O - http://127.0.0.1:9464/metrics; end metrics\n";
    s += r#"kill -INT $AGENT
wait $AGENT
echo "@@RC agent $?"
begin spans; cat /tmp/spans.json; end spans
begin agent-stderr; cat /tmp/agent.err; end agent-stderr
echo "@@DONE"
poweroff -f
"#;
    s
}

/// Boots `vmlinuz` with `initrd`, the serial console going to `log` as it comes;
/// returns the console (CR stripped).
fn boot(vmlinuz: &Path, initrd: &Path, log: &Path) -> Result<String> {
    let console = fs::File::create(log)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-cpu",
            "max",
            "-m",
            "2048",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + Duration::from_secs(HOST_TIMEOUT_S);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            eprintln!("xtask: the guest ran past {HOST_TIMEOUT_S} s; killing qemu");
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = fs::read(log)?;
    Ok(String::from_utf8_lossy(&out).replace('\r', ""))
}

/// The text between `@@BEGIN name` and `@@END name`.
pub fn section<'a>(console: &'a str, name: &str) -> Option<&'a str> {
    let begin = format!("@@BEGIN {name}\n");
    let start = console.find(&begin)? + begin.len();
    let end = console[start..].find(&format!("@@END {name}"))? + start;
    Some(&console[start..end])
}

/// The value of a `@@KEY name value` line.
fn marker<'a>(console: &'a str, key: &str, name: &str) -> Option<&'a str> {
    let prefix = format!("@@{key} {name} ");
    console
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::trim)
}

/// Everything wrong with one guest run (empty = it passed).
pub fn check_guest(console: &str) -> Vec<String> {
    let mut p = Vec::new();
    if !console.contains("@@DONE") {
        p.push(if console.contains("@@TIMEOUT") {
            "the guest timed out".to_string()
        } else {
            "the guest did not finish (see the console log)".to_string()
        });
    }
    // doctor: exit 0, and the agent_programs row lists every program's result.
    match marker(console, "RC", "doctor") {
        Some("0") => {}
        rc => p.push(format!("doctor exited {rc:?}, not 0")),
    }
    match section(console, "doctor").map(serde_json::from_str::<serde_json::Value>) {
        Some(Ok(v)) => {
            let checks = v["checks"].as_array().cloned().unwrap_or_default();
            for c in &checks {
                if c["status"] == "fail" {
                    p.push(format!("doctor: {} failed: {}", c["id"], c["detail"]));
                }
            }
            match checks.iter().find(|c| c["id"] == "agent_programs") {
                Some(c) => eprintln!("xtask:   agent_programs: {}", c["detail"]),
                None => p.push("doctor has no agent_programs row".into()),
            }
        }
        Some(Err(e)) => p.push(format!("doctor --json is not JSON: {e}")),
        None => p.push("no doctor output".into()),
    }
    match marker(console, "RC", "agent") {
        Some("0") => {}
        rc => p.push(format!(
            "agent exited {rc:?}, not 0: {}",
            section(console, "agent-stderr").unwrap_or("").trim()
        )),
    }
    let stderr = section(console, "agent-stderr").unwrap_or("");
    // Spans: exactly REQUESTS per server on its path, GET, 200; and one /truth per Go
    // server.
    let spans: Vec<serde_json::Value> = section(console, "spans")
        .unwrap_or("")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let pid_of = |name: &str| marker(console, "PID", name).map(str::to_string);
    let count = |pid: &Option<String>, method: &str, path: &str| {
        spans
            .iter()
            .filter(|s| {
                s["kind"] == "SERVER"
                    && pid.as_deref().is_some_and(|pid| {
                        s["resource"]["process.pid"]
                            .as_u64()
                            .is_some_and(|v| v.to_string() == pid)
                            || s["resource"]["process.pid"].as_str() == Some(pid)
                    })
                    && s["attributes"]["url.path"] == path
                    && s["attributes"]["http.request.method"] == method
                    && s["attributes"]["http.response.status_code"] == 200
            })
            .count()
    };
    // busybox httpd serves each connection in a forked child (fds 0/1 after dup2): its
    // spans carry the children's PIDs, so they are matched by executable and port.
    let httpd = spans
        .iter()
        .filter(|s| {
            s["kind"] == "SERVER"
                && s["resource"]["process.executable.name"] == "busybox"
                && s["attributes"]["server.port"] == 8080
                && s["attributes"]["url.path"] == "/index.html"
                && s["attributes"]["http.request.method"] == "GET"
                && s["attributes"]["http.response.status_code"] == 200
        })
        .count();
    if httpd != REQUESTS {
        p.push(format!(
            "httpd: {httpd} SERVER spans GET /index.html 200 from busybox children, expected {REQUESTS}"
        ));
    }
    let mut expect = Vec::new();
    for (name, _) in go_servers() {
        expect.push((name.clone(), "POST", "/threadexit", 1));
        expect.push((name.clone(), "GET", "/", REQUESTS));
        expect.push((name, "GET", "/truth", 1));
    }
    for (name, method, path, n) in &expect {
        let got = count(&pid_of(name), method, path);
        if got != *n {
            p.push(format!(
                "{name}: {got} SERVER spans {method} {path} 200, expected {n}"
            ));
        }
    }
    // Go: a thread exited (so the case is really tested), runtime probes attached,
    // and go_goroutines is the program's own count.
    let metrics = section(console, "metrics").unwrap_or("");
    for (name, _) in go_servers() {
        let threads: Option<serde_json::Value> = section(console, &format!("threadexit-{name}"))
            .and_then(|t| serde_json::from_str(t.trim()).ok());
        if threads.as_ref().map(|t| t["exited"].as_bool()) != Some(Some(true)) {
            p.push(format!(
                "{name}: /threadexit did not end a thread: {}",
                threads.map(|t| t.to_string()).unwrap_or_default()
            ));
        }
        let pid = pid_of(&name).unwrap_or_default();
        if !stderr
            .lines()
            .any(|l| l.contains(&format!("PID {pid}: Go")) && l.contains("runtime probes attached"))
        {
            p.push(format!(
                "{name}: no \"runtime probes attached\" line from the agent"
            ));
        }
        let truth: Option<serde_json::Value> = section(console, &format!("truth-{name}"))
            .and_then(|t| serde_json::from_str(t.trim()).ok());
        let Some(idle) = truth.as_ref().and_then(|t| t["goroutines_idle"].as_i64()) else {
            p.push(format!("{name}: no /truth answer"));
            continue;
        };
        let reported = metrics
            .lines()
            .filter(|l| l.starts_with("go_goroutines{"))
            .find(|l| l.contains(&format!("service_name=\"{name}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        match reported {
            Some(g) if (g - idle as f64).abs() <= 1.0 => {}
            Some(g) => p.push(format!(
                "{name}: go_goroutines is {g}, the program has {idle} with no request in flight"
            )),
            None => p.push(format!("{name}: no go_goroutines series")),
        }
    }
    for l in stderr
        .lines()
        .filter(|l| l.contains("warning") || l.contains("error"))
    {
        eprintln!("xtask:   agent said: {l}");
    }
    p
}

/// The tracepoint formats the guest printed, in the fixture layout of
/// agent/src/probes/testdata (sections `=== category/name`).
pub fn formats(console: &str) -> Option<String> {
    let s = section(console, "formats")?;
    let mut out = BTreeMap::new();
    for part in s.split("=== ").skip(1) {
        let (name, body) = part.split_once('\n')?;
        out.insert(name.trim().to_string(), body.to_string());
    }
    Some(
        out.iter()
            .map(|(k, v)| format!("=== {k}\n{v}"))
            .collect::<String>(),
    )
}
