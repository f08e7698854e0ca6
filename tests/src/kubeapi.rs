//! A stand-in for the one part of a Kubernetes cluster the agent talks to, and the one
//! part of a node it reads: an HTTPS API server that lists pods, and a cgroup shaped the
//! way the kubelet and containerd shape them.
//!
//! - [`KubeCredentials`]: a CA, a server certificate for 127.0.0.1 signed by it (made at
//!   test time with rcgen) and a service account token, as files the agent is pointed at
//!   (`--kube-ca-file`, `--kube-token-file`). Separate from the server so a test can start
//!   the agent before the API is up.
//! - [`FakeKubeApi`]: `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>` over rustls,
//!   answering the pods the test set for that node, 401 without the bearer token, 404 for
//!   anything else; it counts what it answered.
//! - [`PodCgroup`]: a real cgroup v2 directory
//!   `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`
//!   to move a real process into, so its `/proc/PID/cgroup` is what it would be in a pod.
//!   Dropping it moves the processes back and removes the directories.

use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{harness::TempDir, receiver::TestPki};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// CA and server certificate (a [`TestPki`]) and the service-account token, as files.
pub struct KubeCredentials {
    pki: TestPki,
    dir: TempDir,
    pub token: String,
}

impl KubeCredentials {
    pub fn new() -> KubeCredentials {
        let dir = TempDir::new("kube-credentials");
        let token = format!("e2e-token-{}", unique_hex(16));
        fs::write(dir.path().join("token"), format!("{token}\n")).expect("write token");
        KubeCredentials {
            pki: TestPki::new(),
            dir,
            token,
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.pki.ca_file()
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }
}

impl Default for KubeCredentials {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
struct ApiState {
    /// Pod objects (JSON), each with its spec.nodeName.
    pods: Vec<serde_json::Value>,
    /// Lists answered with 200.
    lists: usize,
    /// Requests refused for a missing or wrong token.
    unauthorized: usize,
    /// Field selectors asked for, in order.
    selectors: Vec<String>,
}

/// The fake API server; stops on drop.
pub struct FakeKubeApi {
    addr: SocketAddr,
    state: Arc<Mutex<ApiState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubeApi {
    /// Serves HTTPS on 127.0.0.1:`port` (0 = any free port) with `creds`.
    pub fn start(creds: &KubeCredentials, port: u16) -> FakeKubeApi {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(creds.pki.server_config(b"http/1.1", false));
        let state = Arc::new(Mutex::new(ApiState::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let token = creds.token.clone();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let serve = async move {
                        loop {
                            let Ok((tcp, _)) = listener.accept().await else {
                                continue;
                            };
                            let (acceptor, st, token) =
                                (acceptor.clone(), st.clone(), token.clone());
                            tokio::spawn(async move {
                                // A failed handshake (e.g. a client that does not trust the
                                // CA) just ends the connection.
                                let Ok(tls) = acceptor.accept(tcp).await else {
                                    return;
                                };
                                let service = hyper::service::service_fn(move |req| {
                                    let (st, token) = (st.clone(), token.clone());
                                    async move { Ok::<_, Infallible>(handle(req, &st, &token)) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await;
                            });
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("spawn fake API thread");
        FakeKubeApi {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The pods the API knows (of any node; lists are filtered by the selector).
    pub fn set_pods(&self, pods: Vec<serde_json::Value>) {
        self.state.lock().unwrap().pods = pods;
    }

    /// Pod lists answered with 200.
    pub fn lists(&self) -> usize {
        self.state.lock().unwrap().lists
    }

    /// Requests answered 401.
    pub fn unauthorized(&self) -> usize {
        self.state.lock().unwrap().unauthorized
    }

    /// `fieldSelector` values of the pod lists asked for.
    pub fn selectors(&self) -> Vec<String> {
        self.state.lock().unwrap().selectors.clone()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `%3D` -> `=` and friends (enough for field selectors).
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = (b[i] == b'%' && i + 2 < b.len())
            .then(|| Some(hex(b[i + 1])? * 16 + hex(b[i + 2])?))
            .flatten();
        match (decoded, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Kubernetes `Status` object, as the API server sends with errors.
fn status(code: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": reason, "code": code.as_u16(),
    });
    reply(code, body.to_string())
}

fn handle(req: Request<Incoming>, st: &Mutex<ApiState>, token: &str) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {token}")) {
        st.lock().unwrap().unauthorized += 1;
        return status(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if req.method() != hyper::Method::GET || req.uri().path() != "/api/v1/pods" {
        return status(StatusCode::NOT_FOUND, "NotFound");
    }
    let selector = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("fieldSelector="))
        .map(percent_decode)
        .unwrap_or_default();
    let node = selector.strip_prefix("spec.nodeName=").unwrap_or("");
    let mut s = st.lock().unwrap();
    s.selectors.push(selector.clone());
    s.lists += 1;
    let items: Vec<&serde_json::Value> = s
        .pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].as_str() == Some(node))
        .collect();
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": (1000 + s.lists).to_string()},
        "items": items,
    });
    reply(StatusCode::OK, list.to_string())
}

// ---------------------------------------------------------------------------------------
// Ids and cgroups

/// `n` hex digits that differ between calls and test processes.
pub fn unique_hex(n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < n {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    out.truncate(n);
    out
}

/// A fresh pod uid (UUID v4 shape) and container id (64 hex digits).
pub fn unique_pod_ids() -> (String, String) {
    let h = unique_hex(32);
    let uid = format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    );
    (uid, unique_hex(64))
}

/// The cgroup v2 mount: `/sys/fs/cgroup` (unified) or `/sys/fs/cgroup/unified` (hybrid).
pub fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").is_file() && p.join("cgroup.controllers").is_file())
        .expect("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

/// The cgroup v2 path of `pid` (the `0::` line), relative to the hierarchy's root.
pub fn cgroup2_path(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/")
        .to_string()
}

/// A pod's container cgroup, made the way the kubelet (systemd driver) and containerd
/// name them. Dropping it moves its processes back where they came from.
pub struct PodCgroup {
    root: PathBuf,
    /// Directories created, outermost first.
    created: Vec<PathBuf>,
    leaf: PathBuf,
    /// (pid, the cgroup it came from).
    moved: Mutex<Vec<(u32, String)>>,
}

impl PodCgroup {
    pub fn create(pod_uid: &str, container_id: &str) -> PodCgroup {
        let root = cgroup2_root();
        let slice = format!("kubepods-burstable-pod{}.slice", pod_uid.replace('-', "_"));
        let rel = [
            "kubepods.slice".to_string(),
            "kubepods-burstable.slice".to_string(),
            slice,
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut created = Vec::new();
        let mut dir = root.clone();
        for part in rel {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        PodCgroup {
            root,
            created,
            leaf: dir,
            moved: Mutex::new(Vec::new()),
        }
    }

    /// The cgroup path as `/proc/PID/cgroup` shows it (`/kubepods.slice/…`).
    pub fn path(&self) -> String {
        format!("/{}", self.leaf.strip_prefix(&self.root).unwrap().display())
    }

    /// The `cgroup.procs` file: a process that writes its pid there moves itself in.
    pub fn procs_file(&self) -> PathBuf {
        self.leaf.join("cgroup.procs")
    }

    /// Moves `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        let from = cgroup2_path(pid);
        write_procs(&self.leaf, pid)
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.leaf.display()));
        self.moved.lock().unwrap().push((pid, from));
    }
}

fn write_procs(dir: &Path, pid: u32) -> std::io::Result<()> {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let moved = std::mem::take(&mut *self.moved.lock().unwrap());
        let still: Vec<u32> = fs::read_to_string(self.leaf.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for pid in still {
            let back = moved
                .iter()
                .find(|(p, _)| *p == pid)
                .map(|(_, from)| self.root.join(from.trim_start_matches('/')))
                .filter(|d| d.is_dir())
                .unwrap_or_else(|| self.root.clone());
            let _ = write_procs(&back, pid).or_else(|_| write_procs(&self.root, pid));
        }
        for dir in self.created.iter().rev() {
            // A process that is exiting may leave the cgroup busy for a moment.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}
