//! The configuration file (`--config FILE`, TOML): every command-line flag has a key of
//! the same name (`otlp-endpoint = "…"`, `exe = ["nginx"]`). Precedence, highest first:
//! flag, environment variable (the OTEL_* ones), file, built-in default. Unknown keys are
//! an error that names the key, so a typo never silently does nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Every flag, as a file key. Lists accept one value or an array.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    #[serde(default)]
    pub pid: Vec<u32>,
    #[serde(default)]
    pub exe: Vec<String>,
    #[serde(default)]
    pub port: Vec<u16>,
    pub min_process_age: Option<u64>,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    pub otlp_headers: Option<String>,
    pub otlp_certificate: Option<PathBuf>,
    pub otlp_client_key: Option<PathBuf>,
    pub otlp_client_certificate: Option<PathBuf>,
    /// "text" or "json".
    pub console: Option<String>,
    pub duration: Option<f64>,
    pub no_follow_forks: Option<bool>,
    pub no_go_runtime: Option<bool>,
    pub go_goroutine_events: Option<bool>,
    pub status_interval: Option<u64>,
    pub prometheus: Option<String>,
    #[serde(default)]
    pub route: Vec<String>,
    #[serde(default)]
    pub resource_attribute: Vec<String>,
    pub max_routes: Option<usize>,
    pub ring_buffer_mib: Option<u32>,
    pub leak_window: Option<f64>,
    pub leak_min_growth: Option<i64>,
    pub top_sites: Option<usize>,
    /// "auto", "on" or "off".
    pub kube_metadata: Option<String>,
    pub kube_api_url: Option<String>,
    pub kube_ca_file: Option<PathBuf>,
    pub kube_token_file: Option<PathBuf>,
    pub kube_node_name: Option<String>,
    pub kube_well_known_labels: Option<bool>,
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigFileError> {
        toml::from_str(text).map_err(|e| ConfigFileError::Parse {
            path: path.to_path_buf(),
            // toml's Display spans several lines (a source excerpt); keep one.
            message: e.message().replace('\n', " "),
        })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// flag > env > file: the file's value is used only when neither the flag nor any of
/// the environment variables that back it are set.
pub fn layered<T>(flag: Option<T>, env_vars: &[&str], file: Option<T>) -> Option<T> {
    let env_set = env_vars
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()));
    flag.or(if env_set { None } else { file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key() {
        let c = FileConfig::parse(
            r#"
            pid = [1, 2]
            exe = ["nginx", "*/python3*"]
            port = [8080]
            min-process-age = 250
            otlp-endpoint = "http://collector:4317"
            otlp-protocol = "grpc"
            otlp-headers = "api-key=secret"
            otlp-certificate = "/etc/otlp/ca.pem"
            otlp-client-key = "/etc/otlp/client.key"
            otlp-client-certificate = "/etc/otlp/client.pem"
            console = "json"
            duration = 1.5
            no-follow-forks = true
            status-interval = 0
            prometheus = "0.0.0.0:9464"
            route = ["/api/users/{id}"]
            max-routes = 100
            ring-buffer-mib = 8
            kube-metadata = "on"
            kube-api-url = "https://10.96.0.1:443"
            kube-ca-file = "/etc/kube/ca.crt"
            kube-token-file = "/etc/kube/token"
            kube-node-name = "node-1"
            kube-well-known-labels = true
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.pid, vec![1, 2]);
        assert_eq!(c.exe.len(), 2);
        assert_eq!(c.otlp_protocol.as_deref(), Some("grpc"));
        assert_eq!(
            c.otlp_certificate.as_deref(),
            Some(Path::new("/etc/otlp/ca.pem"))
        );
        assert_eq!(
            c.otlp_client_key.as_deref(),
            Some(Path::new("/etc/otlp/client.key"))
        );
        assert_eq!(
            c.otlp_client_certificate.as_deref(),
            Some(Path::new("/etc/otlp/client.pem"))
        );
        assert_eq!(c.max_routes, Some(100));
        assert_eq!(c.ring_buffer_mib, Some(8));
        assert_eq!(c.no_follow_forks, Some(true));
        assert_eq!(c.kube_metadata.as_deref(), Some("on"));
        assert_eq!(
            c.kube_ca_file.as_deref(),
            Some(Path::new("/etc/kube/ca.crt"))
        );
        assert_eq!(c.kube_node_name.as_deref(), Some("node-1"));
        assert_eq!(c.kube_well_known_labels, Some(true));
    }

    #[test]
    fn unknown_keys_are_named_in_one_line() {
        let e = FileConfig::parse("otlp-endpiont = \"x\"\n", Path::new("/etc/periscope.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("otlp-endpiont"), "{e}");
        assert!(e.contains("/etc/periscope.toml"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(FileConfig::parse("port = \"eighty\"", Path::new("x")).is_err());
    }

    #[test]
    fn precedence_flag_env_file() {
        assert_eq!(layered(Some(1), &[], Some(2)), Some(1));
        assert_eq!(layered(None, &[], Some(2)), Some(2));
        assert_eq!(layered::<i32>(None, &[], None), None);
        // An env var that is set hides the file value (the env var itself is read later).
        assert_eq!(layered(None, &["PATH"], Some(2)), None);
        assert_eq!(
            layered(None, &["PERISCOPE_SURELY_UNSET_VAR"], Some(2)),
            Some(2)
        );
    }
}
