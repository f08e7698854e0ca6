//! What a pod says about its processes: the few fields of the Kubernetes pod object the
//! agent uses, decoded from a `PodList`, and the OpenTelemetry resource attributes derived
//! from them.
//!
//! The rules follow the OpenTelemetry semantic conventions for Kubernetes
//! (<https://opentelemetry.io/docs/specs/semconv/non-normative/k8s-attributes/>):
//! `resource.opentelemetry.io/*` annotations become resource attributes; `service.name` is
//! the first of the annotation, the well-known `app.kubernetes.io/instance` and
//! `app.kubernetes.io/name` labels (opt-in, as the conventions ask), the Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, CronJob and Job names, the pod name, the container
//! name; `service.namespace` is the annotation or the pod's namespace.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Annotation prefix the conventions reserve for resource attributes.
pub const ANNOTATION_PREFIX: &str = "resource.opentelemetry.io/";
/// The label the Deployment controller puts on its ReplicaSets' pods; the ReplicaSet is
/// named `<deployment>-<this hash>`.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Well-known labels (opt-in for service attributes).
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";

/// Annotation-derived attributes kept per pod, and the longest value kept: annotations are
/// user input, and every span of the pod carries them.
const MAX_ANNOTATION_ATTRIBUTES: usize = 32;
const MAX_VALUE_LEN: usize = 256;

// ---------------------------------------------------------------------------------------
// The API objects (only the fields used; serde skips the rest)

/// `GET /api/v1/pods` answers a `PodList`.
#[derive(Debug, Default, Deserialize)]
pub struct PodList {
    #[serde(default)]
    pub items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    /// The managing controller (at most one owner has it).
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default)]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    pub init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    pub ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default)]
    pub name: String,
    /// `<runtime>://<id>`; absent until the container was created. (The API spells it
    /// `containerID`, which camelCase renaming would not produce.)
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
}

// ---------------------------------------------------------------------------------------
// What the agent keeps per pod

/// The workload a pod belongs to, from its controller owner reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub deployment: Option<String>,
    pub replicaset: Option<String>,
    pub statefulset: Option<String>,
    pub daemonset: Option<String>,
    pub cronjob: Option<String>,
    pub job: Option<String>,
}

impl Workload {
    /// The attributes, in the conventions' ancestor-to-descendant order (which is also the
    /// order `service.name` picks from).
    fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("k8s.deployment.name", &self.deployment),
            ("k8s.replicaset.name", &self.replicaset),
            ("k8s.statefulset.name", &self.statefulset),
            ("k8s.daemonset.name", &self.daemonset),
            ("k8s.cronjob.name", &self.cronjob),
            ("k8s.job.name", &self.job),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }
}

/// One pod, reduced to what its resource attributes need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub node_name: String,
    pub workload: Workload,
    /// `resource.opentelemetry.io/<key>` annotations as `(<key>, value)`, sorted by key.
    pub annotations: Vec<(String, String)>,
    pub label_instance: Option<String>,
    pub label_name: Option<String>,
    pub label_version: Option<String>,
    /// `(container id without its runtime scheme, container name)` of every container
    /// that has an id (app, init and ephemeral containers).
    pub containers: Vec<(String, String)>,
}

/// `containerd://3f2a…` -> `3f2a…`. The runtimes' schemes (`containerd`, `docker`,
/// `cri-o`, …) differ; the cgroup path holds the bare id.
pub fn strip_runtime_scheme(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// The Deployment that made ReplicaSet `rs`: its name minus `-<pod-template-hash>`, when
/// the pod's hash label says the ReplicaSet is one of a Deployment's (a bare ReplicaSet's
/// pods carry no such label unless someone set it by hand).
pub fn deployment_of_replicaset<'a>(
    rs: &'a str,
    pod_template_hash: Option<&str>,
) -> Option<&'a str> {
    let hash = pod_template_hash.filter(|h| !h.is_empty())?;
    rs.strip_suffix(hash)?
        .strip_suffix('-')
        .filter(|d| !d.is_empty())
}

/// The CronJob that made Job `job`: the CronJob controller names its Jobs
/// `<cronjob>-<scheduled time in minutes since the epoch>`, so a suffix of 8 digits
/// (minutes in years 2008 to 2160) is taken as that. A Job named like `backup-20240101`
/// by hand would be misread; the pod itself carries nothing better.
pub fn cronjob_of_job(job: &str) -> Option<&str> {
    let (prefix, suffix) = job.rsplit_once('-')?;
    (suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_digit()) && !prefix.is_empty())
        .then_some(prefix)
}

/// The workload from the owner references: the controller owner (or the first one when
/// none is marked), then what its kind and name imply. Kinds outside the conventions
/// (a static pod's Node, custom controllers) give nothing.
pub fn workload(owners: &[OwnerReference], labels: &BTreeMap<String, String>) -> Workload {
    let mut w = Workload::default();
    let Some(owner) = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
    else {
        return w;
    };
    let name = Some(owner.name.clone()).filter(|n| !n.is_empty());
    match owner.kind.as_str() {
        "ReplicaSet" => {
            w.deployment = deployment_of_replicaset(
                &owner.name,
                labels.get(POD_TEMPLATE_HASH).map(String::as_str),
            )
            .map(str::to_owned);
            w.replicaset = name;
        }
        "StatefulSet" => w.statefulset = name,
        "DaemonSet" => w.daemonset = name,
        "Job" => {
            w.cronjob = cronjob_of_job(&owner.name).map(str::to_owned);
            w.job = name;
        }
        // A Deployment or CronJob never owns a pod directly, but a custom controller
        // might name one as its owner kind.
        "Deployment" => w.deployment = name,
        "CronJob" => w.cronjob = name,
        _ => {}
    }
    w
}

fn bounded(v: &str) -> String {
    if v.len() <= MAX_VALUE_LEN {
        return v.to_owned();
    }
    let mut end = MAX_VALUE_LEN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_owned()
}

impl PodMeta {
    /// Keeps what the resource needs from an API pod; `None` for objects without a uid.
    pub fn from_pod(pod: &Pod) -> Option<PodMeta> {
        let m = &pod.metadata;
        if m.uid.is_empty() {
            return None;
        }
        let annotations = m
            .annotations
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ANNOTATION_PREFIX)?;
                (!key.is_empty()).then(|| (key.to_owned(), bounded(v)))
            })
            .take(MAX_ANNOTATION_ATTRIBUTES)
            .collect();
        let label = |k: &str| {
            m.labels
                .get(k)
                .filter(|v| !v.is_empty())
                .map(|v| bounded(v))
        };
        let s = &pod.status;
        let containers = s
            .container_statuses
            .iter()
            .chain(&s.init_container_statuses)
            .chain(&s.ephemeral_container_statuses)
            .filter_map(|c| {
                let id = strip_runtime_scheme(c.container_id.as_deref()?);
                (!id.is_empty()).then(|| (id.to_owned(), c.name.clone()))
            })
            .collect();
        Some(PodMeta {
            uid: m.uid.clone(),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            node_name: pod.spec.node_name.clone(),
            workload: workload(&m.owner_references, &m.labels),
            annotations,
            label_instance: label(LABEL_INSTANCE),
            label_name: label(LABEL_NAME),
            label_version: label(LABEL_VERSION),
            containers,
        })
    }

    /// The name of the container with id `container_id` (bare or with its scheme).
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        let id = strip_runtime_scheme(container_id);
        self.containers
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, n)| n.as_str())
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// `service.name` as the conventions compute it; `labels` opts into the well-known
    /// `app.kubernetes.io/*` labels.
    pub fn service_name(&self, container: Option<&str>, labels: bool) -> String {
        let from_labels = labels
            .then(|| {
                self.label_instance
                    .as_deref()
                    .or(self.label_name.as_deref())
            })
            .flatten();
        self.annotation("service.name")
            .or(from_labels)
            .or_else(|| self.workload.attributes().next().map(|(_, v)| v))
            .or(Some(self.name.as_str()).filter(|n| !n.is_empty()))
            .or(container)
            .unwrap_or_default()
            .to_owned()
    }

    /// The resource attributes of a process in container `container` of this pod, in
    /// this order: the k8s.* attributes, `service.namespace` (and `service.version` from
    /// the label when `labels`), then the `resource.opentelemetry.io/*` annotations that
    /// name other attributes. `service.name` is not among them (see
    /// [`PodMeta::service_name`]); neither is `service.instance.id`: the agent keeps its
    /// per-process default, because processes of one container would otherwise share
    /// one instance id and their metric series would collide.
    pub fn attributes(&self, container: Option<&str>, labels: bool) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: &str| {
            if !v.is_empty() && !out.iter().any(|(key, _)| key == k) {
                out.push((k.to_owned(), v.to_owned()));
            }
        };
        push("k8s.namespace.name", &self.namespace);
        push("k8s.pod.name", &self.name);
        push("k8s.pod.uid", &self.uid);
        if let Some(c) = container {
            push("k8s.container.name", c);
        }
        push("k8s.node.name", &self.node_name);
        for (k, v) in self.workload.attributes() {
            push(k, v);
        }
        push(
            "service.namespace",
            self.annotation("service.namespace")
                .unwrap_or(&self.namespace),
        );
        if let Some(v) = self
            .annotation("service.version")
            .or(labels.then_some(self.label_version.as_deref()).flatten())
        {
            push("service.version", v);
        }
        for (k, v) in &self.annotations {
            if !matches!(k.as_str(), "service.name" | "service.instance.id") {
                push(k, v);
            }
        }
        out
    }
}

/// Decodes a `PodList` and keeps its pods' metadata (at most `max` pods).
pub fn parse_pod_list(body: &[u8], max: usize) -> Result<Vec<PodMeta>, serde_json::Error> {
    let list: PodList = serde_json::from_slice(body)?;
    Ok(list
        .items
        .iter()
        .filter_map(PodMeta::from_pod)
        .take(max)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `kubectl get pods -o json` of one node: a Deployment pod with a sidecar and an
    /// init container, a StatefulSet, a DaemonSet, a CronJob's Job, a static pod, and a
    /// pod whose containers have not started yet. Trimmed of nothing the agent skips
    /// (managedFields, volumes, conditions stay in, to show they are ignored).
    const POD_LIST: &str = include_str!("testdata/pod_list.json");

    fn pods() -> Vec<PodMeta> {
        parse_pod_list(POD_LIST.as_bytes(), 100).unwrap()
    }

    fn pod(name: &str) -> PodMeta {
        pods().into_iter().find(|p| p.name == name).unwrap()
    }

    fn attrs(p: &PodMeta, container: Option<&str>, labels: bool) -> BTreeMap<String, String> {
        p.attributes(container, labels).into_iter().collect()
    }

    #[test]
    fn parses_a_realistic_pod_list() {
        let pods = pods();
        assert_eq!(pods.len(), 6);
        let p = pod("checkout-7d9f8b6c5d-x2x9z");
        assert_eq!(p.uid, "0a1b2c3d-4e5f-6789-abcd-ef0123456789");
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.node_name, "node-1");
        assert_eq!(
            p.workload,
            Workload {
                deployment: Some("checkout".into()),
                replicaset: Some("checkout-7d9f8b6c5d".into()),
                ..Workload::default()
            }
        );
        // App, sidecar and the init container, each by its bare id.
        assert_eq!(p.containers.len(), 3);
        assert_eq!(
            p.container_name("3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"),
            Some("app")
        );
        assert_eq!(
            p.container_name(
                "containerd://9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
            ),
            Some("envoy")
        );
        assert_eq!(
            p.container_name("1111111111111111111111111111111111111111111111111111111111111111"),
            Some("migrate")
        );
        assert_eq!(p.container_name("nope"), None);
        // Only the resource.opentelemetry.io/ annotations are kept.
        assert_eq!(
            p.annotations,
            vec![("deployment.environment.name".into(), "prod".into())]
        );
        assert_eq!(p.label_name.as_deref(), Some("checkout-svc"));
        // Not started yet: known pod, no container ids.
        assert!(pod("pending-job-abc").containers.is_empty());
    }

    #[test]
    fn container_id_schemes() {
        let id = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708";
        for scheme in ["containerd", "docker", "cri-o", "crio"] {
            assert_eq!(strip_runtime_scheme(&format!("{scheme}://{id}")), id);
        }
        assert_eq!(strip_runtime_scheme(id), id);
        assert_eq!(strip_runtime_scheme(""), "");
        let p = pod("redis-0");
        // cri-o in this list.
        assert_eq!(
            p.container_name("2222222222222222222222222222222222222222222222222222222222222222"),
            Some("redis")
        );
    }

    #[test]
    fn owner_to_workload_rules() {
        let owner = |kind: &str, name: &str| OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
        };
        let hash = |h: &str| BTreeMap::from([(POD_TEMPLATE_HASH.to_string(), h.to_string())]);
        let none = BTreeMap::new();
        // ReplicaSet of a Deployment: the name minus -<pod-template-hash>.
        let w = workload(
            &[owner("ReplicaSet", "web-api-5f7b9c8d4")],
            &hash("5f7b9c8d4"),
        );
        assert_eq!(w.deployment.as_deref(), Some("web-api"));
        assert_eq!(w.replicaset.as_deref(), Some("web-api-5f7b9c8d4"));
        // A bare ReplicaSet (no hash label, or one that does not match): no Deployment.
        let w = workload(&[owner("ReplicaSet", "web-api-5f7b9c8d4")], &none);
        assert_eq!(w.deployment, None);
        let w = workload(&[owner("ReplicaSet", "frontend")], &hash("5f7b9c8d4"));
        assert_eq!(w.deployment, None);
        assert_eq!(deployment_of_replicaset("-abc", Some("abc")), None);
        assert_eq!(deployment_of_replicaset("xabc", Some("abc")), None);
        assert_eq!(deployment_of_replicaset("x-abc", Some("")), None);
        // StatefulSet, DaemonSet.
        let w = workload(&[owner("StatefulSet", "redis")], &none);
        assert_eq!(w.statefulset.as_deref(), Some("redis"));
        let w = workload(&[owner("DaemonSet", "fluent-bit")], &none);
        assert_eq!(w.daemonset.as_deref(), Some("fluent-bit"));
        // Job of a CronJob (8-digit scheduled-minute suffix), and a plain Job.
        let w = workload(&[owner("Job", "nightly-report-29012345")], &none);
        assert_eq!(w.cronjob.as_deref(), Some("nightly-report"));
        assert_eq!(w.job.as_deref(), Some("nightly-report-29012345"));
        let w = workload(&[owner("Job", "db-migrate")], &none);
        assert_eq!((w.cronjob, w.job.as_deref()), (None, Some("db-migrate")));
        assert_eq!(cronjob_of_job("x-1234567"), None);
        assert_eq!(cronjob_of_job("x-123456789"), None);
        assert_eq!(cronjob_of_job("-12345678"), None);
        // Static pods (owner: the Node) and custom kinds: nothing.
        assert_eq!(
            workload(&[owner("Node", "node-1")], &none),
            Workload::default()
        );
        assert_eq!(
            workload(&[owner("Rollout", "x")], &none),
            Workload::default()
        );
        assert_eq!(workload(&[], &none), Workload::default());
        // The controller owner wins over others listed first.
        let mut other = owner("ConfigMap", "cm");
        other.controller = None;
        let w = workload(&[other, owner("DaemonSet", "ds")], &none);
        assert_eq!(w.daemonset.as_deref(), Some("ds"));
    }

    #[test]
    fn service_name_precedence() {
        let p = pod("checkout-7d9f8b6c5d-x2x9z");
        // Labels are opt-in; without them the Deployment names the service.
        assert_eq!(p.service_name(Some("app"), false), "checkout");
        assert_eq!(p.service_name(Some("app"), true), "checkout-svc");
        let mut p2 = p.clone();
        p2.label_instance = Some("checkout-eu".into());
        assert_eq!(p2.service_name(Some("app"), true), "checkout-eu");
        // The annotation beats everything.
        p2.annotations
            .push(("service.name".into(), "payments".into()));
        assert_eq!(p2.service_name(Some("app"), true), "payments");
        assert_eq!(p2.service_name(None, false), "payments");
        // Ancestor before descendant: CronJob before Job.
        assert_eq!(
            pod("report-29012345-q7v2k").service_name(None, false),
            "report"
        );
        assert_eq!(pod("redis-0").service_name(None, false), "redis");
        assert_eq!(
            pod("node-exporter-abcde").service_name(None, false),
            "node-exporter"
        );
        // No owner: the pod name, then the container name.
        let st = pod("kube-apiserver-node-1");
        assert_eq!(
            st.service_name(Some("kube-apiserver"), false),
            "kube-apiserver-node-1"
        );
        let mut anon = st.clone();
        anon.name.clear();
        assert_eq!(anon.service_name(Some("c"), false), "c");
        assert_eq!(anon.service_name(None, false), "");
    }

    #[test]
    fn resource_attributes_of_a_container() {
        let p = pod("checkout-7d9f8b6c5d-x2x9z");
        let list = p.attributes(Some("app"), false);
        let keys: Vec<&str> = list.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "k8s.namespace.name",
                "k8s.pod.name",
                "k8s.pod.uid",
                "k8s.container.name",
                "k8s.node.name",
                "k8s.deployment.name",
                "k8s.replicaset.name",
                "service.namespace",
                "deployment.environment.name",
            ]
        );
        let a = attrs(&p, Some("app"), false);
        assert_eq!(a["k8s.container.name"], "app");
        assert_eq!(a["service.namespace"], "shop");
        assert_eq!(a["deployment.environment.name"], "prod");
        // service.version only from the annotation, or the label when opted in.
        assert!(!a.contains_key("service.version"));
        assert_eq!(attrs(&p, Some("app"), true)["service.version"], "1.4.2");
        // Annotations override service.namespace / service.version, never add
        // service.instance.id; unknown container: no k8s.container.name.
        let mut p2 = p.clone();
        p2.annotations = vec![
            ("service.instance.id".into(), "x".into()),
            ("service.namespace".into(), "payments".into()),
            ("service.version".into(), "2.0".into()),
        ];
        let a = attrs(&p2, None, true);
        assert_eq!(a["service.namespace"], "payments");
        assert_eq!(a["service.version"], "2.0");
        assert!(!a.contains_key("service.instance.id"));
        assert!(!a.contains_key("k8s.container.name"));
        let cj = attrs(&pod("report-29012345-q7v2k"), Some("report"), false);
        assert_eq!(cj["k8s.cronjob.name"], "report");
        assert_eq!(cj["k8s.job.name"], "report-29012345");
    }

    #[test]
    fn bounded_sizes() {
        let long = "é".repeat(MAX_VALUE_LEN);
        let b = bounded(&long);
        assert!(b.len() <= MAX_VALUE_LEN && b.chars().all(|c| c == 'é'));
        let mut pod = Pod::default();
        pod.metadata.uid = "u".into();
        for i in 0..100 {
            pod.metadata
                .annotations
                .insert(format!("{ANNOTATION_PREFIX}k{i:03}"), "v".into());
        }
        let m = PodMeta::from_pod(&pod).unwrap();
        assert_eq!(m.annotations.len(), MAX_ANNOTATION_ATTRIBUTES);
        // No uid: not a pod we can match.
        assert_eq!(PodMeta::from_pod(&Pod::default()), None);
        let body = format!(
            "{{\"items\":[{}]}}",
            [r#"{"metadata":{"uid":"u"}}"#; 10].join(",")
        );
        assert_eq!(parse_pod_list(body.as_bytes(), 3).unwrap().len(), 3);
        assert!(parse_pod_list(b"{\"items\": 5}", 3).is_err());
        assert!(parse_pod_list(b"<html>", 3).is_err());
    }
}
