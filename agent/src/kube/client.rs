//! Where the Kubernetes API is and how to talk to it: the settings (flags, the in-cluster
//! environment, the service account files) resolved into one [`KubeConfig`], and the one
//! request the agent makes — list the pods of this node.
//!
//! In-cluster defaults are those of client-go's `rest.InClusterConfig`:
//! `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the service account's CA
//! bundle and token under `/var/run/secrets/kubernetes.io/serviceaccount/`. The token is
//! read again for every request, because projected service account tokens rotate (the
//! kubelet rewrites the file, by default hourly).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::Url;
use thiserror::Error;

use super::pod::{self, PodMeta};

/// Set by the kubelet in every container: the API server's Service address and port.
pub const ENV_SERVICE_HOST: &str = "KUBERNETES_SERVICE_HOST";
pub const ENV_SERVICE_PORT: &str = "KUBERNETES_SERVICE_PORT";
/// This node's name, from the downward API (`fieldRef: spec.nodeName`).
pub const ENV_NODE_NAME: &str = "NODE_NAME";
pub const DEFAULT_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// Largest pod list accepted. A node runs 110 pods by default and a few hundred at most;
/// their full JSON (managed fields included) is a few MiB.
pub const MAX_BODY_BYTES: usize = 64 << 20;
/// Pods kept; beyond it the rest of the list is ignored.
pub const MAX_PODS: usize = 10_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// `--kube-metadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// On when running in a pod (`KUBERNETES_SERVICE_HOST` is set) or `--kube-api-url` is given.
    #[default]
    Auto,
    /// Always; a setting that cannot work (no API server, node name or CA) is an error.
    On,
    /// Never: only what the cgroup path says (container.id, k8s.pod.uid).
    Off,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.trim() {
            "auto" => Ok(Mode::Auto),
            "on" => Ok(Mode::On),
            "off" => Ok(Mode::Off),
            other => Err(format!("expected auto, on or off, not {other:?}")),
        }
    }
}

/// The `--kube-*` flags (already merged with their config-file keys).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubeFlags {
    pub mode: Option<Mode>,
    pub api_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub node_name: Option<String>,
    /// Name services after the well-known `app.kubernetes.io/*` labels too.
    pub well_known_labels: bool,
}

/// Everything needed to list this node's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeConfig {
    pub api_url: Url,
    /// CA bundle the server certificate must chain to (https only).
    pub ca_file: Option<PathBuf>,
    /// Bearer token, sent over https only. `None`: send none (e.g. `kubectl proxy`).
    pub token_file: Option<PathBuf>,
    pub node_name: String,
    pub well_known_labels: bool,
}

#[derive(Debug, Error, PartialEq)]
pub enum KubeConfigError {
    #[error(
        "--kube-metadata on: no Kubernetes API server (not in a pod: {ENV_SERVICE_HOST} is unset); set --kube-api-url"
    )]
    NoApiServer,
    #[error(
        "Kubernetes metadata needs this node's name: set --kube-node-name or {ENV_NODE_NAME} (downward API fieldRef spec.nodeName)"
    )]
    NoNodeName,
    #[error("invalid --kube-api-url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("Kubernetes API CA file {0}: not found (set --kube-ca-file)")]
    NoCaFile(PathBuf),
    #[error("Kubernetes API token file {0}: not found")]
    NoTokenFile(PathBuf),
}

impl KubeConfig {
    /// Resolves the flags against the environment (`env` reads a variable) and the file
    /// system. `Ok(None)`: metadata is off (or `auto` outside a cluster).
    pub fn resolve(
        flags: &KubeFlags,
        env: impl Fn(&str) -> Option<String>,
        exists: impl Fn(&Path) -> bool,
    ) -> Result<Option<KubeConfig>, KubeConfigError> {
        let env = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mode = flags.mode.unwrap_or_default();
        if mode == Mode::Off {
            return Ok(None);
        }
        let url = match (&flags.api_url, env(ENV_SERVICE_HOST)) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Some(host)) => {
                let port = env(ENV_SERVICE_PORT).unwrap_or_else(|| "443".into());
                // An IPv6 service address needs brackets in a URL.
                if host.contains(':') && !host.starts_with('[') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
            (None, None) if mode == Mode::Auto => return Ok(None),
            (None, None) => return Err(KubeConfigError::NoApiServer),
        };
        let bad = |reason: &str| KubeConfigError::BadUrl {
            url: url.clone(),
            reason: reason.to_owned(),
        };
        let api_url = Url::parse(&url).map_err(|e| bad(&e.to_string()))?;
        let https = match api_url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(bad("expected an https:// (or http://) URL")),
        };
        if api_url.host_str().is_none_or(str::is_empty) {
            return Err(bad("missing host"));
        }
        let node_name = flags
            .node_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .or_else(|| env(ENV_NODE_NAME))
            .ok_or(KubeConfigError::NoNodeName)?;
        let ca_file = if https {
            let f = flags
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE));
            if !exists(&f) {
                return Err(KubeConfigError::NoCaFile(f));
            }
            Some(f)
        } else {
            None
        };
        // The default token file may be missing (automountServiceAccountToken: false, a
        // proxy that authenticates): then no token is sent. One named explicitly must exist.
        let token_file = match &flags.token_file {
            Some(f) if !exists(f) => return Err(KubeConfigError::NoTokenFile(f.clone())),
            Some(f) => Some(f.clone()),
            None => Some(PathBuf::from(DEFAULT_TOKEN_FILE)).filter(|f| exists(f)),
        };
        Ok(Some(KubeConfig {
            api_url,
            ca_file,
            token_file: if https { token_file } else { None },
            node_name,
            well_known_labels: flags.well_known_labels,
        }))
    }

    /// `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`: this node's pods, from any
    /// namespace (the API server answers it from its watch cache).
    pub fn pods_url(&self) -> Url {
        let mut url = self.api_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/api/v1/pods"));
        url.query_pairs_mut().clear().append_pair(
            "fieldSelector",
            &format!("spec.nodeName={}", self.node_name),
        );
        url
    }
}

/// One failed refresh. Displays as one line.
#[derive(Debug, Error)]
pub enum KubeError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad CA bundle {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{url}: {reason}")]
    Request { url: String, reason: String },
    #[error("{url}: HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: pod list larger than {MAX_BODY_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: not a pod list: {source}")]
    Parse {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// An HTTP client for one API server.
pub struct Client {
    cfg: KubeConfig,
    http: reqwest::Client,
}

/// The innermost cause: "Connection refused (os error 111)", "invalid peer certificate:
/// UnknownIssuer", rather than reqwest's "error sending request for url (…)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

impl Client {
    /// Builds the client; reads the CA bundle (once: it is the cluster's, it does not rotate
    /// while the pod lives).
    pub fn new(cfg: KubeConfig) -> Result<Client, KubeError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("periscope/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|source| KubeError::Read {
                path: path.clone(),
                source,
            })?;
            let ca = |reason: String| KubeError::Ca {
                path: path.clone(),
                reason,
            };
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca(root_cause(&e)))?;
            if certs.is_empty() {
                return Err(ca("no PEM certificate in it".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder.build().map_err(|e| KubeError::Request {
            url: cfg.api_url.to_string(),
            reason: root_cause(&e),
        })?;
        Ok(Client { cfg, http })
    }

    pub fn config(&self) -> &KubeConfig {
        &self.cfg
    }

    /// Lists this node's pods.
    pub async fn list_pods(&self) -> Result<Vec<PodMeta>, KubeError> {
        let url = self.cfg.pods_url();
        let url_s = url.to_string();
        let mut req = self.http.get(url).header("Accept", "application/json");
        if let Some(path) = &self.cfg.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| KubeError::Read {
                path: path.clone(),
                source,
            })?;
            req = req.bearer_auth(token.trim());
        }
        let request_err = |e: reqwest::Error| KubeError::Request {
            url: url_s.clone(),
            reason: root_cause(&e),
        };
        let mut resp = req.send().await.map_err(request_err)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let hint = match status {
                401 => " (token rejected)",
                403 => " (the service account may not list pods: see deploy/kubernetes/rbac.yaml)",
                _ => "",
            };
            return Err(KubeError::Status {
                url: url_s,
                status,
                hint,
            });
        }
        let mut body = Vec::with_capacity(
            resp.content_length()
                .map_or(64 << 10, |n| n as usize)
                .min(MAX_BODY_BYTES),
        );
        while let Some(chunk) = resp.chunk().await.map_err(request_err)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(KubeError::TooLarge { url: url_s });
            }
            body.extend_from_slice(&chunk);
        }
        pod::parse_pod_list(&body, MAX_PODS)
            .map_err(|source| KubeError::Parse { url: url_s, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }
    const IN_CLUSTER: [(&str, &str); 3] = [
        (ENV_SERVICE_HOST, "10.96.0.1"),
        (ENV_SERVICE_PORT, "443"),
        (ENV_NODE_NAME, "node-1"),
    ];
    fn all_exist(_: &Path) -> bool {
        true
    }

    #[test]
    fn auto_is_on_in_a_pod_and_off_elsewhere() {
        let flags = KubeFlags::default();
        let c = KubeConfig::resolve(&flags, env(&IN_CLUSTER), all_exist)
            .unwrap()
            .unwrap();
        assert_eq!(c.api_url.as_str(), "https://10.96.0.1/");
        assert_eq!(c.ca_file.as_deref(), Some(Path::new(DEFAULT_CA_FILE)));
        assert_eq!(c.token_file.as_deref(), Some(Path::new(DEFAULT_TOKEN_FILE)));
        assert_eq!(c.node_name, "node-1");
        assert_eq!(
            c.pods_url().as_str(),
            "https://10.96.0.1/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"
        );
        // Not in a pod: auto is off, on is an error.
        assert_eq!(KubeConfig::resolve(&flags, env(&[]), all_exist), Ok(None));
        let on = KubeFlags {
            mode: Some(Mode::On),
            ..KubeFlags::default()
        };
        assert_eq!(
            KubeConfig::resolve(&on, env(&[]), all_exist),
            Err(KubeConfigError::NoApiServer)
        );
        let off = KubeFlags {
            mode: Some(Mode::Off),
            ..KubeFlags::default()
        };
        assert_eq!(
            KubeConfig::resolve(&off, env(&IN_CLUSTER), all_exist),
            Ok(None)
        );
    }

    #[test]
    fn flags_override_the_in_cluster_defaults() {
        let flags = KubeFlags {
            api_url: Some("https://127.0.0.1:6443/prefix/".into()),
            ca_file: Some("/tmp/ca.pem".into()),
            token_file: Some("/tmp/token".into()),
            node_name: Some("kind-worker".into()),
            ..KubeFlags::default()
        };
        let c = KubeConfig::resolve(&flags, env(&IN_CLUSTER), all_exist)
            .unwrap()
            .unwrap();
        assert_eq!(
            c.pods_url().as_str(),
            "https://127.0.0.1:6443/prefix/api/v1/pods?fieldSelector=spec.nodeName%3Dkind-worker"
        );
        assert_eq!(c.ca_file.as_deref(), Some(Path::new("/tmp/ca.pem")));
        assert_eq!(c.token_file.as_deref(), Some(Path::new("/tmp/token")));
        // IPv6 service address; default port.
        let v6 = [(ENV_SERVICE_HOST, "fd00::1"), (ENV_NODE_NAME, "n")];
        let c = KubeConfig::resolve(&KubeFlags::default(), env(&v6), all_exist)
            .unwrap()
            .unwrap();
        assert_eq!(c.api_url.as_str(), "https://[fd00::1]/");
    }

    #[test]
    fn plain_http_sends_no_token_and_needs_no_ca() {
        let flags = KubeFlags {
            api_url: Some("http://127.0.0.1:8001".into()),
            node_name: Some("n".into()),
            ..KubeFlags::default()
        };
        let c = KubeConfig::resolve(&flags, env(&[]), all_exist)
            .unwrap()
            .unwrap();
        assert_eq!((c.ca_file, c.token_file), (None, None));
    }

    #[test]
    fn errors_are_one_line_and_name_the_fix() {
        let no_node = [(ENV_SERVICE_HOST, "10.96.0.1")];
        let e = KubeConfig::resolve(&KubeFlags::default(), env(&no_node), all_exist).unwrap_err();
        assert_eq!(e, KubeConfigError::NoNodeName);
        assert!(e.to_string().contains("--kube-node-name"));
        let e =
            KubeConfig::resolve(&KubeFlags::default(), env(&IN_CLUSTER), |_| false).unwrap_err();
        assert_eq!(e, KubeConfigError::NoCaFile(DEFAULT_CA_FILE.into()));
        let bad = |url: &str| {
            let flags = KubeFlags {
                api_url: Some(url.into()),
                node_name: Some("n".into()),
                ..KubeFlags::default()
            };
            KubeConfig::resolve(&flags, env(&[]), all_exist).unwrap_err()
        };
        assert!(matches!(bad("ftp://x"), KubeConfigError::BadUrl { .. }));
        assert!(matches!(bad("not a url"), KubeConfigError::BadUrl { .. }));
        // A missing default token is fine (none is sent); a named one must exist.
        let c = KubeConfig::resolve(&KubeFlags::default(), env(&IN_CLUSTER), |p| {
            p != Path::new(DEFAULT_TOKEN_FILE)
        })
        .unwrap()
        .unwrap();
        assert_eq!(c.token_file, None);
        let flags = KubeFlags {
            token_file: Some("/nope".into()),
            ..KubeFlags::default()
        };
        let e =
            KubeConfig::resolve(&flags, env(&IN_CLUSTER), |p| p != Path::new("/nope")).unwrap_err();
        assert_eq!(e, KubeConfigError::NoTokenFile("/nope".into()));
        for e in [
            KubeConfigError::NoApiServer,
            KubeConfigError::NoNodeName,
            KubeConfigError::NoCaFile("/x".into()),
        ] {
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn mode_parses_like_the_flag() {
        assert_eq!("auto".parse(), Ok(Mode::Auto));
        assert_eq!(" on ".parse(), Ok(Mode::On));
        assert_eq!("off".parse(), Ok(Mode::Off));
        assert!("yes".parse::<Mode>().is_err());
    }
}
