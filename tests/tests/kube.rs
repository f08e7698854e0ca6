//! Kubernetes pod metadata on spans, end to end: everything is real except the API server.
//!
//! A real `python3 -m http.server` is moved into a real cgroup shaped like a pod's
//! container (`kubepods.slice/…-pod<uid>.slice/cri-containerd-<id>.scope`), the real agent
//! traces it with `--kube-metadata on` against a fake API server over HTTPS (a CA made at
//! test time, trusted through `--kube-ca-file`, a bearer token from `--kube-token-file`),
//! and the spans a real OTLP receiver gets must carry the pod's names and the service name
//! the OpenTelemetry conventions derive from it. When the API is down, the agent says so
//! once, keeps exporting spans, and fills the pod attributes in when the API comes back.
//!
//! ```text
//! PERISCOPE_BIN=$PWD/target/release/periscope cargo test -p periscope-e2e --test kube -- --test-threads=1
//! ```

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use periscope_e2e::client::{self, Request};
use periscope_e2e::harness::{self, Agent, Process, Server, TempDir, free_port};
use periscope_e2e::kubeapi::{FakeKubeApi, KubeCredentials, PodCgroup, unique_pod_ids};
use periscope_e2e::receiver::{Protocol, ReceivedSpan, Receiver, find};
use serde_json::{Value, json};

const NODE: &str = "e2e-node-1";
const SPAN_TIMEOUT: Duration = Duration::from_secs(20);

/// Sets `metadata.<field>` (labels, annotations) of a [`pod`].
fn with(mut pod: Value, field: &str, value: Value) -> Value {
    pod["metadata"][field] = value;
    pod
}

/// A pod object as the API server returns it (the fields the agent reads, plus some it
/// must skip), without labels or annotations (see [`with`]).
fn pod(
    name: &str,
    namespace: &str,
    uid: &str,
    node: &str,
    owner: Option<(&str, &str)>,
    containers: &[(&str, &str)],
) -> Value {
    let owners: Vec<Value> = owner
        .map(|(kind, name)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": name,
                   "uid": "b7d3c0de-0000-4000-8000-000000000001", "controller": true,
                   "blockOwnerDeletion": true})
        })
        .into_iter()
        .collect();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(cname, id)| {
            json!({"name": cname, "ready": true, "restartCount": 0,
                   "state": {"running": {"startedAt": "2025-05-12T09:14:06Z"}},
                   "image": "docker.io/library/python:3.12",
                   "containerID": format!("containerd://{id}")})
        })
        .collect();
    let specs: Vec<Value> = containers
        .iter()
        .map(|(cname, _)| json!({"name": cname, "image": "python:3.12"}))
        .collect();
    json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "resourceVersion": "4711", "creationTimestamp": "2025-05-12T09:14:03Z",
            "labels": {}, "annotations": {}, "ownerReferences": owners,
            "managedFields": [{"manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {}}],
        },
        "spec": {"nodeName": node, "containers": specs, "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIP": "10.244.1.23", "containerStatuses": statuses},
    })
}

/// A target server inside a pod-shaped cgroup. Field order: the server stops before the
/// cgroup is removed.
struct PodServer {
    server: Server,
    _cgroup: PodCgroup,
    uid: String,
    container_id: String,
}

fn start_pod_server() -> PodServer {
    let (uid, container_id) = unique_pod_ids();
    let server = harness::start_python_http_server();
    let cgroup = PodCgroup::create(&uid, &container_id);
    cgroup.add(server.pid());
    let shown = std::fs::read_to_string(format!("/proc/{}/cgroup", server.pid())).unwrap();
    assert!(
        shown.contains(&format!("0::{}", cgroup.path())),
        "the server is not in {}:\n{shown}",
        cgroup.path()
    );
    PodServer {
        server,
        _cgroup: cgroup,
        uid,
        container_id,
    }
}

fn agent_args(pid: u32, recv: &Receiver, api_url: &str, creds: &KubeCredentials) -> Vec<String> {
    agent_args_for("--pid", pid.into(), recv, api_url, creds)
}

fn agent_args_for(
    selector: &str,
    value: u64,
    recv: &Receiver,
    api_url: &str,
    creds: &KubeCredentials,
) -> Vec<String> {
    [
        selector,
        &value.to_string(),
        "--otlp-endpoint",
        &recv.endpoint(Protocol::HttpProtobuf),
        "--kube-metadata",
        "on",
        "--kube-api-url",
        api_url,
        "--kube-ca-file",
        creds.ca_file().to_str().unwrap(),
        "--kube-token-file",
        creds.token_file().to_str().unwrap(),
        "--kube-node-name",
        NODE,
        "--status-interval",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn get(server: &Server, path: &str) {
    get_at(server.addr, path);
}

fn get_at(addr: SocketAddr, path: &str) {
    let x = client::send(addr, &Request::get(path).expect(200));
    assert_eq!(x.status, 200);
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("WARN")).collect()
}

fn describe(s: &ReceivedSpan) -> String {
    format!(
        "{} service.name={:?} k8s.pod.name={:?}",
        s.name(),
        s.resource_attr("service.name"),
        s.resource_attr("k8s.pod.name")
    )
}

#[test]
fn spans_carry_pod_metadata_from_the_kubernetes_api() {
    harness::require_root();
    let _serial = harness::serial();
    let target = start_pod_server();
    let creds = KubeCredentials::new();
    let api = FakeKubeApi::start(&creds, 0);
    let (other_uid, other_cid) = unique_pod_ids();
    api.set_pods(vec![
        // The traced process's pod: a Deployment's ReplicaSet, an app container and a
        // sidecar.
        with(
            with(
                pod(
                    "checkout-7d9f8b6c5d-x2x9z",
                    "shop",
                    &target.uid,
                    NODE,
                    Some(("ReplicaSet", "checkout-7d9f8b6c5d")),
                    &[
                        ("app", target.container_id.as_str()),
                        ("envoy", &"e".repeat(64)),
                    ],
                ),
                "labels",
                json!({"pod-template-hash": "7d9f8b6c5d", "app.kubernetes.io/name": "checkout-label"}),
            ),
            "annotations",
            json!({"resource.opentelemetry.io/deployment.environment.name": "staging",
                   "kubectl.kubernetes.io/restartedAt": "2025-05-12T09:13:58Z"}),
        ),
        // Another pod of this node, and one of another node (the agent asks for its node
        // only).
        pod(
            "redis-0",
            "shop",
            &other_uid,
            NODE,
            Some(("StatefulSet", "redis")),
            &[("redis", other_cid.as_str())],
        ),
        pod(
            "elsewhere-0",
            "shop",
            "99999999-9999-4999-8999-999999999999",
            "e2e-node-2",
            None,
            &[],
        ),
    ]);
    let recv = Receiver::start();
    let agent = Agent::start(agent_args(target.server.pid(), &recv, &api.url(), &creds));
    for path in ["/", "/hello.txt", "/sub/file.txt"] {
        get(&target.server, path);
    }
    let spans = recv.wait_for_spans(3, SPAN_TIMEOUT);
    assert!(spans.len() >= 3, "{} spans arrived", spans.len());
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    let expect = [
        ("service.name", "checkout"),
        ("service.namespace", "shop"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-7d9f8b6c5d-x2x9z"),
        ("k8s.pod.uid", target.uid.as_str()),
        ("k8s.container.name", "app"),
        ("k8s.node.name", NODE),
        ("k8s.replicaset.name", "checkout-7d9f8b6c5d"),
        ("k8s.deployment.name", "checkout"),
        ("container.id", target.container_id.as_str()),
        ("deployment.environment.name", "staging"),
    ];
    for s in &spans {
        for (k, v) in expect {
            assert_eq!(s.resource_attr(k), Some(v), "{k} of {}", describe(s));
        }
        // Not a StatefulSet; the labels are opt-in; the process keeps its own attributes.
        assert_eq!(s.resource_attr("k8s.statefulset.name"), None);
        let pid = target.server.pid().to_string();
        assert_eq!(s.resource_attr("process.pid"), Some(pid.as_str()));
    }
    // The agent asked for its node's pods, with its token, and nothing went wrong.
    assert!(api.lists() >= 1);
    assert_eq!(api.unauthorized(), 0);
    assert!(
        api.selectors()
            .iter()
            .all(|s| s == &format!("spec.nodeName={NODE}")),
        "{:?}",
        api.selectors()
    );
    assert!(
        warnings(&exit.stderr).is_empty(),
        "warnings:\n{}",
        exit.stderr
    );
    assert!(
        exit.stderr
            .contains(&format!("Kubernetes metadata: 2 pods on node {NODE}")),
        "{}",
        exit.stderr
    );
}

#[test]
fn api_down_costs_one_warning_and_metadata_fills_in_when_it_returns() {
    harness::require_root();
    let _serial = harness::serial();
    let target = start_pod_server();
    let creds = KubeCredentials::new();
    // Nothing listens there yet.
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let recv = Receiver::start();
    let agent = Agent::start(agent_args(target.server.pid(), &recv, &url, &creds));

    // Spans flow without the pod's names: service.name is the executable's.
    get(&target.server, "/hello.txt");
    let is_before = |s: &ReceivedSpan| s.attr("url.path").as_deref() == Some("/hello.txt");
    let before = recv
        .wait_for_span(SPAN_TIMEOUT, is_before)
        .into_iter()
        .find(is_before)
        .expect("a span while the API is down");
    let exe = harness::exe_name(target.server.pid());
    assert_eq!(before.resource_attr("service.name"), Some(exe.as_str()));
    assert_eq!(before.resource_attr("k8s.pod.name"), None);
    // What the cgroup says is there regardless.
    assert_eq!(
        before.resource_attr("k8s.pod.uid"),
        Some(target.uid.as_str())
    );
    assert_eq!(
        before.resource_attr("container.id"),
        Some(target.container_id.as_str())
    );

    // Let a few retries fail: still one warning.
    std::thread::sleep(Duration::from_secs(4));
    let stderr = agent.output().stderr();
    let warned = warnings(&stderr);
    assert_eq!(warned.len(), 1, "expected one warning:\n{stderr}");
    assert!(
        warned[0].contains("Kubernetes") && warned[0].contains(&format!("127.0.0.1:{port}")),
        "{}",
        warned[0]
    );

    // The API comes up with the pod (a StatefulSet's, named by annotation).
    let api = FakeKubeApi::start(&creds, port);
    api.set_pods(vec![with(
        pod(
            "cart-0",
            "store",
            &target.uid,
            NODE,
            Some(("StatefulSet", "cart")),
            &[("server", target.container_id.as_str())],
        ),
        "annotations",
        json!({"resource.opentelemetry.io/service.name": "cart-api"}),
    )]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        get(&target.server, "/sub/file.txt");
        let found = recv.spans().into_iter().find(|s| {
            s.attr("url.path").as_deref() == Some("/sub/file.txt")
                && s.resource_attr("k8s.pod.name").is_some()
        });
        if let Some(s) = found {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no span with pod metadata after the API came back; lists={}\n{}",
            api.lists(),
            agent.output().stderr()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(after.resource_attr("service.name"), Some("cart-api"));
    assert_eq!(after.resource_attr("k8s.pod.name"), Some("cart-0"));
    assert_eq!(after.resource_attr("k8s.namespace.name"), Some("store"));
    assert_eq!(after.resource_attr("k8s.statefulset.name"), Some("cart"));
    assert_eq!(after.resource_attr("k8s.container.name"), Some("server"));
    assert_eq!(after.resource_attr("service.namespace"), Some("store"));

    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert_eq!(warnings(&exit.stderr).len(), 1, "{}", exit.stderr);
    assert!(
        exit.stderr.contains("Kubernetes API reachable again"),
        "{}",
        exit.stderr
    );
    assert_eq!(api.unauthorized(), 0);
}

#[test]
fn a_pod_started_after_the_agent_is_named_from_its_first_span_and_metric() {
    harness::require_root();
    let _serial = harness::serial();
    let (uid, container_id) = unique_pod_ids();
    let cgroup = PodCgroup::create(&uid, &container_id);
    let creds = KubeCredentials::new();
    let api = FakeKubeApi::start(&creds, 0);
    let recv = Receiver::start();
    let port = free_port();
    // Discovery by port: the server is traced from the moment it binds.
    let agent = Agent::start_with_env(
        agent_args_for("--port", port.into(), &recv, &api.url(), &creds),
        &[("OTEL_METRIC_EXPORT_INTERVAL", "500")],
    );
    assert!(
        api.lists() >= 1,
        "the agent listed the (empty) node at startup"
    );
    // The pod is created after that list; its container starts right after.
    let pod_name = "orders-5c9d8f7b6-k2j4q";
    api.set_pods(vec![with(
        pod(
            pod_name,
            "shop",
            &uid,
            NODE,
            Some(("ReplicaSet", "orders-5c9d8f7b6")),
            &[("web", container_id.as_str())],
        ),
        "labels",
        json!({"pod-template-hash": "5c9d8f7b6"}),
    )]);
    let root = TempDir::new("kube-pod-root");
    std::fs::write(root.path().join("hello.txt"), "hello\n").unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "echo $$ > {} && exec {} -u -m http.server --bind 127.0.0.1 --directory {} {port}",
        cgroup.procs_file().display(),
        harness::python3().display(),
        root.path().display()
    ));
    let mut server = Process::spawn("python-in-pod", cmd);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    server.wait_for_port(addr, harness::SERVER_READY_TIMEOUT);
    let pid = server.pid().to_string();

    // Requests from the moment the agent traces it (one that was accepted before the
    // agent attached and finished before it looked at the open sockets is not seen).
    let traced = format!("tracing PID {pid} ");
    let deadline = Instant::now() + SPAN_TIMEOUT;
    while !agent.output().stderr().contains(&traced) {
        assert!(Instant::now() < deadline, "{}", agent.output().stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    get_at(addr, "/hello.txt");
    let spans = recv.wait_for_spans(1, SPAN_TIMEOUT);
    let first = spans.first().expect("a span");
    assert_eq!(first.resource_attr("process.pid"), Some(pid.as_str()));
    for (k, v) in [
        ("service.name", "orders"),
        ("k8s.pod.name", pod_name),
        ("k8s.deployment.name", "orders"),
        ("k8s.container.name", "web"),
        ("container.id", container_id.as_str()),
    ] {
        assert_eq!(
            first.resource_attr(k),
            Some(v),
            "{k} of {}",
            describe(first)
        );
    }
    // Metrics keep the resource the process got when it was attached: the same one.
    let deadline = Instant::now() + SPAN_TIMEOUT;
    let ours = loop {
        let ours: Vec<_> = recv
            .metrics()
            .into_iter()
            .filter_map(|rm| rm.resource)
            .filter(|r| find(&r.attributes, "process.pid").as_deref() == Some(pid.as_str()))
            .collect();
        if !ours.is_empty() || Instant::now() > deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(!ours.is_empty(), "no metrics for PID {pid}");
    for r in &ours {
        assert_eq!(
            find(&r.attributes, "service.name").as_deref(),
            Some("orders")
        );
        assert_eq!(
            find(&r.attributes, "k8s.pod.name").as_deref(),
            Some(pod_name)
        );
    }
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(warnings(&exit.stderr).is_empty(), "{}", exit.stderr);
    drop(server);
}

/// Settings that cannot work are one `periscope: error:` line before anything loads.
#[test]
fn kube_settings_that_cannot_work_are_one_clear_line() {
    harness::require_root();
    let me = std::process::id().to_string();
    let creds = KubeCredentials::new();
    let dir = TempDir::new("kube-config");
    let run = |args: &[&str]| {
        let out = Command::new(harness::agent_bin())
            .args(["--pid", &me])
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("NODE_NAME")
            .output()
            .expect("run periscope");
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected:\n{stderr}");
        assert!(lines[0].starts_with("periscope: error: "), "{stderr}");
        lines[0].to_string()
    };
    let line = run(&["--kube-metadata", "on"]);
    assert!(line.contains("--kube-api-url"), "{line}");
    let line = run(&[
        "--kube-metadata",
        "on",
        "--kube-api-url",
        "https://127.0.0.1:1",
    ]);
    assert!(line.contains("--kube-node-name"), "{line}");
    let ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&ca, "hello\n").unwrap();
    let line = run(&[
        "--kube-api-url",
        "https://127.0.0.1:1",
        "--kube-node-name",
        "n",
        "--kube-metadata",
        "on",
        "--kube-ca-file",
        ca.to_str().unwrap(),
        "--kube-token-file",
        creds.token_file().to_str().unwrap(),
    ]);
    assert!(line.contains("not-a-ca.pem"), "{line}");
    let file = dir.path().join("p.toml");
    std::fs::write(&file, "kube-metadata = \"maybe\"\n").unwrap();
    let line = run(&["--config", file.to_str().unwrap()]);
    assert!(
        line.contains("kube-metadata") && line.contains("maybe"),
        "{line}"
    );
}
