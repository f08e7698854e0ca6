//! Resource attributes of one traced process: service.name, process.*, host.name, its
//! container and Kubernetes pod, and whatever OTEL_RESOURCE_ATTRIBUTES adds.
//!
//! Split in two on purpose: [`ResourceConfig`] is read from the agent's environment once at
//! startup (the user's intent, the same for every process), and [`Resource::for_process`]
//! combines it with what `/proc` (and the pod metadata cache, [`crate::kube`]) says about
//! one process ([`Detected`]). Both halves have a pure core
//! ([`ResourceConfig::from_values`], [`Resource::from_detected`]) so they are tested without
//! touching the real environment, `/proc` or a cluster.

use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::{kube::PodView, span::Value};

/// `OTEL_SERVICE_NAME`: the service.name of every traced process (wins over
/// `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `OTEL_RESOURCE_ATTRIBUTES`: `key1=value1,key2=value2`, values percent-encoded (the W3C
/// Baggage format the OpenTelemetry spec prescribes).
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";

/// Value of `telemetry.sdk.name`: the spans are produced by periscope, not by an SDK inside
/// the traced process.
pub const SDK_NAME: &str = "periscope";
/// Value of `telemetry.sdk.version`.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The resource of one traced process. Shared (Arc) by every span and metric it emits.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub pid: u32,
    pub service_name: String,
    /// Ordered key/value pairs, service.name first, exported as string attributes
    /// (except `process.pid`, which exporters send as an integer as semconv requires).
    pub attributes: Vec<(String, String)>,
}

/// What the agent's environment says about every resource, read once at startup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceConfig {
    /// `OTEL_SERVICE_NAME`, or `service.name` from `OTEL_RESOURCE_ATTRIBUTES`.
    pub service_name: Option<String>,
    /// Every well-formed pair of `OTEL_RESOURCE_ATTRIBUTES`, decoded, in order (later
    /// duplicates replace earlier ones).
    pub attributes: Vec<(String, String)>,
    /// The node's host name (empty when unknown; then `host.name` is not set).
    pub host_name: String,
}

/// The result of parsing a `k=v,k=v` list: the good pairs, and the malformed items verbatim.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KeyValueList {
    pub pairs: Vec<(String, String)>,
    pub malformed: Vec<String>,
}

/// Parses the list format shared by `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_EXPORTER_OTLP_HEADERS`:
/// comma-separated `key=value` items, surrounding whitespace trimmed, key and value
/// percent-decoded. Empty items are ignored; an item without `=`, with an empty key or with
/// an invalid UTF-8 percent-sequence is reported in `malformed` (the spec would discard the
/// whole variable; keeping the good pairs loses less and the caller still warns).
pub fn parse_key_value_list(s: &str) -> KeyValueList {
    let mut out = KeyValueList::default();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let decoded = item.split_once('=').and_then(|(k, v)| {
            let k = percent_decode_str(k.trim()).decode_utf8().ok()?;
            let v = percent_decode_str(v.trim()).decode_utf8().ok()?;
            (!k.is_empty()).then(|| (k.into_owned(), v.into_owned()))
        });
        match decoded {
            Some(pair) => out.pairs.push(pair),
            None => out.malformed.push(item.to_owned()),
        }
    }
    out
}

impl ResourceConfig {
    /// Reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and the host name. Malformed
    /// attribute pairs are skipped with one warning.
    pub fn from_env() -> ResourceConfig {
        let service = std::env::var(OTEL_SERVICE_NAME).ok();
        let attrs = std::env::var(OTEL_RESOURCE_ATTRIBUTES).ok();
        let (cfg, malformed) =
            ResourceConfig::from_values(service.as_deref(), attrs.as_deref(), host_name());
        if !malformed.is_empty() {
            tracing::warn!(
                "ignoring malformed {OTEL_RESOURCE_ATTRIBUTES} entries (expected key=value): {}",
                malformed.join(", ")
            );
        }
        cfg
    }

    /// The pure core of [`ResourceConfig::from_env`]: takes the variables' values, returns the
    /// config and the malformed `OTEL_RESOURCE_ATTRIBUTES` items (for the caller to warn about).
    pub fn from_values(
        otel_service_name: Option<&str>,
        otel_resource_attributes: Option<&str>,
        host_name: String,
    ) -> (ResourceConfig, Vec<String>) {
        let list = otel_resource_attributes
            .map(parse_key_value_list)
            .unwrap_or_default();
        let mut attributes: Vec<(String, String)> = Vec::with_capacity(list.pairs.len());
        for (k, v) in list.pairs {
            upsert(&mut attributes, k, v);
        }
        let service_name = otel_service_name
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
                    .filter(|v| !v.is_empty())
            });
        let cfg = ResourceConfig {
            service_name,
            attributes,
            host_name,
        };
        (cfg, list.malformed)
    }
}

impl Resource {
    /// The resource of process `pid`, reading its executable from `/proc/PID/exe` (falling back
    /// to `/proc/PID/comm` when the link is unreadable, e.g. the process already exited).
    pub fn for_process(pid: u32, cfg: &ResourceConfig) -> Resource {
        Self::for_process_from(pid, pid, cfg)
    }

    /// The resource of `pid`, read from `source`'s procfs entries: a forked child runs
    /// its parent's program until it execs, and a short-lived child (a server forking
    /// per connection) is often gone before its own entries can be read.
    pub fn for_process_from(pid: u32, source: u32, cfg: &ResourceConfig) -> Resource {
        let exe = std::fs::read_link(format!("/proc/{source}/exe")).ok();
        let comm = if exe.is_none() {
            std::fs::read_to_string(format!("/proc/{source}/comm")).ok()
        } else {
            None
        };
        // Container and pod identity from the cgroup path (Kubernetes, Docker, Podman),
        // names from the pod metadata cache when it runs (it never waits here: a pod it
        // does not know yet is filled in later, see `crate::kube`).
        let ids = std::fs::read_to_string(format!("/proc/{source}/cgroup"))
            .map(|cgroup| container_attributes(&cgroup))
            .unwrap_or_default();
        let id = |key: &str| ids.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
        let pod = crate::kube::installed().and_then(|m| {
            m.lookup(
                source,
                id("k8s.pod.uid"),
                id("container.id"),
                process_age(source),
            )
        });
        let detected = Detected::new(&ids, pod.as_ref());
        Resource::from_detected(pid, exe.as_deref(), comm.as_deref(), cfg, &detected)
    }

    /// [`Resource::from_detected`] with nothing detected besides the executable.
    pub fn from_parts(
        pid: u32,
        exe: Option<&Path>,
        comm: Option<&str>,
        cfg: &ResourceConfig,
    ) -> Resource {
        Resource::from_detected(pid, exe, comm, cfg, &Detected::default())
    }

    /// The pure core of [`Resource::for_process`]. Attribute order: service.name, the
    /// process and host attributes, the container and pod ones, then
    /// `OTEL_RESOURCE_ATTRIBUTES` pairs — which replace a detected attribute of the same key
    /// (the user knows better, e.g. `host.name` in a container). service.name: the user's,
    /// else the pod's, else the executable name.
    pub fn from_detected(
        pid: u32,
        exe: Option<&Path>,
        comm: Option<&str>,
        cfg: &ResourceConfig,
        detected: &Detected,
    ) -> Resource {
        // A replaced or deleted binary reads as "/usr/bin/app (deleted)".
        let exe: Option<PathBuf> = exe.map(|p| {
            let s = p.to_string_lossy();
            PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
        });
        let exe_name = exe
            .as_deref()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| comm.map(|c| c.trim_end_matches('\n').to_owned()))
            .filter(|n| !n.is_empty());
        let service_name = cfg
            .service_name
            .clone()
            .or_else(|| detected.service_name.clone().filter(|n| !n.is_empty()))
            .or_else(|| exe_name.clone())
            .unwrap_or_else(|| format!("unknown_service:pid{pid}"));

        let mut attributes = vec![
            ("service.name".to_owned(), service_name.clone()),
            ("telemetry.sdk.name".to_owned(), SDK_NAME.to_owned()),
            ("telemetry.sdk.version".to_owned(), SDK_VERSION.to_owned()),
            ("process.pid".to_owned(), pid.to_string()),
        ];
        if let Some(name) = &exe_name {
            attributes.push(("process.executable.name".to_owned(), name.clone()));
        }
        if let Some(path) = &exe {
            let path = path.to_string_lossy().into_owned();
            attributes.push(("process.executable.path".to_owned(), path));
        }
        if !cfg.host_name.is_empty() {
            attributes.push(("host.name".to_owned(), cfg.host_name.clone()));
        }
        for (k, v) in &detected.attributes {
            if !attributes.iter().any(|(key, _)| key == k) {
                attributes.push((k.clone(), v.clone()));
            }
        }
        for (k, v) in &cfg.attributes {
            // service.name was settled above (OTEL_SERVICE_NAME wins over it).
            if k != "service.name" {
                upsert(&mut attributes, k.clone(), v.clone());
            }
        }
        Resource {
            pid,
            service_name,
            attributes,
        }
    }

    /// The attributes as exporters send them: `process.pid` as an integer (its semconv type),
    /// everything else as a string.
    pub fn typed_attributes(&self) -> impl Iterator<Item = (&str, Value)> + '_ {
        self.attributes.iter().map(|(k, v)| {
            let value = match (k.as_str(), v.parse::<i64>()) {
                ("process.pid", Ok(n)) => Value::Int(n),
                _ => Value::Str(v.clone()),
            };
            (k.as_str(), value)
        })
    }

    /// The value of one attribute.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// What the node says about a process besides its executable: its container (from the
/// cgroup path) and, with Kubernetes metadata on, its pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Detected {
    /// `container.id`, `k8s.pod.uid`, then the pod's attributes (see
    /// [`crate::kube::PodMeta::attributes`]).
    pub attributes: Vec<(String, String)>,
    /// service.name the pod implies, used when the user set none.
    pub service_name: Option<String>,
}

impl Detected {
    /// From the ids of [`container_attributes`] and the pod they lead to.
    pub fn new(ids: &[(&str, String)], pod: Option<&PodView>) -> Detected {
        let mut d = Detected {
            attributes: ids
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            service_name: None,
        };
        if let Some(v) = pod {
            let container = v.container.as_deref();
            for (k, val) in v.pod.attributes(container, v.well_known_labels) {
                if !d.attributes.iter().any(|(key, _)| *key == k) {
                    d.attributes.push((k, val));
                }
            }
            d.service_name =
                Some(v.pod.service_name(container, v.well_known_labels)).filter(|n| !n.is_empty());
        }
        d
    }
}

impl ResourceConfig {
    /// Applies `KEY=VALUE` resource attributes given as flags, over the environment's
    /// (`service.name` sets the service name). Returns the first malformed item.
    pub fn apply_flags(&mut self, items: &[String]) -> Result<(), String> {
        for item in items {
            let Some((k, v)) = item.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                return Err(item.clone());
            };
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            if k == "service.name" {
                self.service_name = Some(v.clone());
            }
            upsert(&mut self.attributes, k, v);
        }
        Ok(())
    }
}

fn upsert(attrs: &mut Vec<(String, String)>, k: String, v: String) {
    match attrs.iter_mut().find(|(key, _)| *key == k) {
        Some(slot) => slot.1 = v,
        None => attrs.push((k, v)),
    }
}

/// How long ago process `pid` started: /proc/uptime minus its /proc/PID/stat start time
/// (in USER_HZ ticks, 100 on every Linux ABI the agent runs on).
fn process_age(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, _, start_ticks, _, _) = crate::runtime::process::parse_stat(&stat)?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    std::time::Duration::try_from_secs_f64(uptime - start_ticks as f64 / 100.0).ok()
}

/// The node's host name: the kernel's UTS name as the agent sees it (what gethostname(2)
/// returns, read from procfs so that no `unsafe` is needed outside the kernel boundary),
/// falling back to /etc/hostname.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(service: Option<&str>, attrs: Option<&str>) -> ResourceConfig {
        ResourceConfig::from_values(service, attrs, "node-1".into()).0
    }

    #[test]
    fn parses_and_percent_decodes_pairs() {
        let list = parse_key_value_list(
            " deployment.environment=prod , team=a%2Cb%3Dc, empty= ,note=caf%C3%A9 ,,",
        );
        assert_eq!(
            list.pairs,
            vec![
                ("deployment.environment".into(), "prod".into()),
                ("team".into(), "a,b=c".into()),
                ("empty".into(), "".into()),
                ("note".into(), "café".into()),
            ]
        );
        assert!(list.malformed.is_empty());
    }

    #[test]
    fn malformed_pairs_are_skipped_and_reported() {
        let list = parse_key_value_list("good=1,novalue,=nokey,bad=%FF,also=2");
        assert_eq!(
            list.pairs,
            vec![("good".into(), "1".into()), ("also".into(), "2".into())]
        );
        assert_eq!(list.malformed, vec!["novalue", "=nokey", "bad=%FF"]);
        let (_, malformed) = ResourceConfig::from_values(None, Some("a=1,oops"), String::new());
        assert_eq!(malformed, vec!["oops"]);
    }

    #[test]
    fn service_name_precedence() {
        let exe = Path::new("/usr/sbin/nginx");
        let r = |c: &ResourceConfig| Resource::from_parts(7, Some(exe), None, c).service_name;
        assert_eq!(
            r(&cfg(Some("checkout"), Some("service.name=attr"))),
            "checkout"
        );
        assert_eq!(r(&cfg(None, Some("service.name=attr"))), "attr");
        assert_eq!(r(&cfg(Some("  "), Some("x=1"))), "nginx");
        assert_eq!(r(&cfg(None, None)), "nginx");
        // No exe link: comm; nothing at all: the spec's unknown_service fallback.
        let c = cfg(None, None);
        assert_eq!(
            Resource::from_parts(7, None, Some("gunicorn\n"), &c).service_name,
            "gunicorn"
        );
        assert_eq!(
            Resource::from_parts(7, None, None, &c).service_name,
            "unknown_service:pid7"
        );
    }

    #[test]
    fn detected_attributes_and_user_overrides() {
        let c = cfg(
            Some("api"),
            Some("service.name=ignored,host.name=pod-a,k8s.namespace.name=shop"),
        );
        let r = Resource::from_parts(42, Some(Path::new("/app/server (deleted)")), None, &c);
        assert_eq!(r.pid, 42);
        let expected: Vec<(String, String)> = [
            ("service.name", "api"),
            ("telemetry.sdk.name", "periscope"),
            ("telemetry.sdk.version", SDK_VERSION),
            ("process.pid", "42"),
            ("process.executable.name", "server"),
            ("process.executable.path", "/app/server"),
            ("host.name", "pod-a"),
            ("k8s.namespace.name", "shop"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(r.attributes, expected);
        assert_eq!(r.get("host.name"), Some("pod-a"));
        let typed: Vec<_> = r.typed_attributes().collect();
        assert_eq!(typed[3], ("process.pid", Value::Int(42)));
        assert_eq!(
            typed[4],
            ("process.executable.name", Value::Str("server".into()))
        );
    }

    fn pod_view(annotations: &[(&str, &str)], container: Option<&str>) -> PodView {
        use crate::kube::pod::Workload;
        PodView {
            pod: std::sync::Arc::new(crate::kube::PodMeta {
                uid: "0a1b2c3d-4e5f-6789-abcd-ef0123456789".into(),
                name: "checkout-7d9f8b6c5d-x2x9z".into(),
                namespace: "shop".into(),
                node_name: "node-1".into(),
                workload: Workload {
                    deployment: Some("checkout".into()),
                    replicaset: Some("checkout-7d9f8b6c5d".into()),
                    ..Workload::default()
                },
                annotations: annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                label_name: Some("checkout-svc".into()),
                ..crate::kube::PodMeta::default()
            }),
            container: container.map(str::to_owned),
            well_known_labels: false,
        }
    }

    #[test]
    fn kubernetes_service_name_precedence() {
        let exe = Path::new("/usr/bin/python3.11");
        let ids = vec![
            ("container.id", "3f2a".repeat(16)),
            ("k8s.pod.uid", "0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
        ];
        let name = |c: &ResourceConfig, d: &Detected| {
            Resource::from_detected(7, Some(exe), None, c, d).service_name
        };
        let plain = pod_view(&[], Some("app"));
        let annotated = pod_view(&[("service.name", "payments")], Some("app"));
        // The user's service.name (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, flag) wins.
        let d = Detected::new(&ids, Some(&annotated));
        assert_eq!(name(&cfg(Some("mine"), None), &d), "mine");
        assert_eq!(name(&cfg(None, Some("service.name=attr")), &d), "attr");
        // Then the pod annotation, then the workload (labels are opt-in).
        assert_eq!(name(&cfg(None, None), &d), "payments");
        let d = Detected::new(&ids, Some(&plain));
        assert_eq!(name(&cfg(None, None), &d), "checkout");
        let mut labelled = plain.clone();
        labelled.well_known_labels = true;
        let d = Detected::new(&ids, Some(&labelled));
        assert_eq!(name(&cfg(None, None), &d), "checkout-svc");
        // No pod metadata (off, or not known yet): the executable.
        let d = Detected::new(&ids, None);
        assert_eq!(name(&cfg(None, None), &d), "python3.11");
    }

    #[test]
    fn kubernetes_attributes_and_user_overrides() {
        let ids = vec![
            ("container.id", "3f2a".repeat(16)),
            ("k8s.pod.uid", "0a1b2c3d-4e5f-6789-abcd-ef0123456789".into()),
        ];
        let view = pod_view(&[("deployment.environment.name", "prod")], Some("app"));
        let d = Detected::new(&ids, Some(&view));
        let c = cfg(None, Some("service.namespace=team-a,k8s.node.name=node-1"));
        let r = Resource::from_detected(9, Some(Path::new("/app/server")), None, &c, &d);
        let keys: Vec<&str> = r.attributes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "telemetry.sdk.name",
                "telemetry.sdk.version",
                "process.pid",
                "process.executable.name",
                "process.executable.path",
                "host.name",
                "container.id",
                "k8s.pod.uid",
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.container.name",
                "k8s.node.name",
                "k8s.deployment.name",
                "k8s.replicaset.name",
                "service.namespace",
                "deployment.environment.name",
            ]
        );
        assert_eq!(r.get("k8s.container.name"), Some("app"));
        // OTEL_RESOURCE_ATTRIBUTES replaces a detected value.
        assert_eq!(r.get("service.namespace"), Some("team-a"));
        assert_eq!(r.get("k8s.pod.uid"), Some(ids[1].1.as_str()));
        // Unknown container: no k8s.container.name, the rest is there.
        let d = Detected::new(&ids, Some(&pod_view(&[], None)));
        assert!(!d.attributes.iter().any(|(k, _)| k == "k8s.container.name"));
        assert!(d.attributes.iter().any(|(k, _)| k == "k8s.pod.name"));
    }

    #[test]
    fn for_process_reads_our_own_proc_entry() {
        let pid = std::process::id();
        let r = Resource::for_process(pid, &ResourceConfig::default());
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy();
        assert_eq!(r.service_name, name);
        assert_eq!(r.get("process.pid"), Some(pid.to_string().as_str()));
        assert!(!host_name().is_empty());
        let age = process_age(pid).unwrap();
        assert!(age < std::time::Duration::from_secs(24 * 3600), "{age:?}");
        assert_eq!(process_age(u32::MAX), None);
    }
}

/// `container.id` and `k8s.pod.uid` from the text of /proc/PID/cgroup. Container
/// runtimes name the process's cgroup after the container (64 hex digits, wrapped as
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, or bare), and the
/// kubelet puts it under a `pod<uid>` directory (dashes become underscores in systemd
/// slice names).
pub fn container_attributes(cgroup: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    // The unified (v2) line `0::/path` first, then any v1 line.
    let mut paths: Vec<&str> = cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    paths.sort_by_key(|p| !p.contains("kubepods") && !p.contains("docker"));
    for path in paths {
        let segments: Vec<&str> = path.split('/').collect();
        let container = segments.iter().rev().find_map(|seg| {
            let core = seg.trim_end_matches(".scope");
            let id = core.rsplit(['-', ':']).next().unwrap_or(core);
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        });
        let pod = segments.iter().find_map(|seg| {
            let seg = seg.trim_end_matches(".slice");
            let at = seg.rfind("pod")?;
            let uid = seg[at + 3..].replace('_', "-");
            (uid.len() == 36 && uid.bytes().filter(|&b| b == b'-').count() == 4).then_some(uid)
        });
        if let Some(c) = container {
            out.push(("container.id", c));
            if let Some(p) = pod {
                out.push(("k8s.pod.uid", p));
            }
            break;
        }
    }
    out
}

#[cfg(test)]
mod cgroup_tests {
    use super::container_attributes;

    const ID: &str = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";

    #[test]
    fn kubernetes_systemd_cgroup_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_4e5f_6789_abcd_ef0123456789.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            container_attributes(&text),
            vec![
                ("container.id", ID.to_string()),
                (
                    "k8s.pod.uid",
                    "0a1b2c3d-4e5f-6789-abcd-ef0123456789".to_string()
                )
            ]
        );
    }

    #[test]
    fn kubernetes_cgroupfs_v1_and_docker() {
        let v1 = format!(
            "12:memory:/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n11:cpu:/kubepods/besteffort/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/{ID}\n"
        );
        let attrs = container_attributes(&v1);
        assert_eq!(attrs[0], ("container.id", ID.to_string()));
        assert_eq!(attrs[1].1, "0a1b2c3d-4e5f-6789-abcd-ef0123456789");
        let docker = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(
            container_attributes(&docker),
            vec![("container.id", ID.to_string())]
        );
    }

    #[test]
    fn plain_host_processes_have_none() {
        assert!(container_attributes("0::/user.slice/user-0.slice/session-1.scope\n").is_empty());
        assert!(container_attributes("0::/\n").is_empty());
        assert!(container_attributes("").is_empty());
    }
}
