//! Export configuration: which outputs run, and for OTLP where and how to send.
//!
//! Every setting resolves as command-line flag > signal-specific env var > generic env var >
//! default, following the OpenTelemetry exporter spec
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>) and the batch span
//! processor's env vars (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>).
//! Resolution is a pure function of the flags and an env lookup so it is tested without
//! touching the process environment; values are validated here, once, so that a bad value is
//! one clear line at startup instead of a failure on the first export.
//!
//! The transport settings (endpoint, protocol, headers, timeout, TLS) are resolved by one
//! function, [`resolve_otlp`], for all three signals: each signal only names its own env
//! vars and URL path ([`Signal`]), so traces, metrics and logs accept exactly the same values.
//! TLS files are named here but read when an exporter starts (`super::tls`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

use crate::resource::parse_key_value_list;

/// Base URL for all signals. http/protobuf appends `/v1/traces`; gRPC uses it as-is.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// Traces URL, used as-is for both protocols (wins over `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `grpc` or `http/protobuf` for all signals.
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// `grpc` or `http/protobuf` for traces (wins over `OTEL_EXPORTER_OTLP_PROTOCOL`).
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// `key=value,key=value` (values percent-encoded) sent with every export.
pub const OTEL_EXPORTER_OTLP_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// Like `OTEL_EXPORTER_OTLP_HEADERS`, for traces only (wins on the same key).
pub const OTEL_EXPORTER_OTLP_TRACES_HEADERS: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// Per-export timeout in milliseconds.
pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
/// Per-export timeout for traces in milliseconds (wins over `OTEL_EXPORTER_OTLP_TIMEOUT`).
pub const OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
/// PEM bundle of the CA certificates an https:// endpoint's certificate is checked against,
/// instead of the platform's roots. Ignored for http://.
pub const OTEL_EXPORTER_OTLP_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";
/// Like `OTEL_EXPORTER_OTLP_CERTIFICATE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE";
/// mTLS: the client's private key, PEM (PKCS#8, PKCS#1 or SEC1). Needs the client certificate.
pub const OTEL_EXPORTER_OTLP_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_CLIENT_KEY";
/// Like `OTEL_EXPORTER_OTLP_CLIENT_KEY`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY";
/// mTLS: the client's certificate chain, PEM, leaf first. Needs the client key.
pub const OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE";
/// Like `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: &str =
    "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE";
/// gRPC only, and only for an endpoint written without a scheme (`collector:4317`): `true`
/// (any case) means plaintext, anything else TLS. An `http://` or `https://` scheme always
/// wins, and http/protobuf always follows its URL's scheme (the spec's rules).
pub const OTEL_EXPORTER_OTLP_INSECURE: &str = "OTEL_EXPORTER_OTLP_INSECURE";
/// Like `OTEL_EXPORTER_OTLP_INSECURE`, for traces only (wins over it).
pub const OTEL_EXPORTER_OTLP_TRACES_INSECURE: &str = "OTEL_EXPORTER_OTLP_TRACES_INSECURE";
/// Longest time a span waits for its batch to fill, in milliseconds.
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// Most spans in one export request.
pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
/// Most spans waiting per output; beyond that new spans are dropped and counted.
pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";

/// Flag names used in error messages; `main` must declare its flags with these names.
pub mod flag {
    pub const OTLP_ENDPOINT: &str = "--otlp-endpoint";
    pub const OTLP_PROTOCOL: &str = "--otlp-protocol";
    pub const OTLP_HEADERS: &str = "--otlp-headers";
    pub const OTLP_TIMEOUT: &str = "--otlp-timeout-ms";
    pub const OTLP_CERTIFICATE: &str = "--otlp-certificate";
    pub const OTLP_CLIENT_KEY: &str = "--otlp-client-key";
    pub const OTLP_CLIENT_CERTIFICATE: &str = "--otlp-client-certificate";
}

/// Default http/protobuf traces URL (the spec's).
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// Default gRPC endpoint (the spec's).
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// The spec's default per-export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Shorter than the spec's 5 s: the agent sees requests seconds after they happen anyway,
/// and a live demo or a test should not wait 5 s for its spans.
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(500);
pub const DEFAULT_MAX_EXPORT_BATCH_SIZE: usize = 512;
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;

/// A configuration value that cannot be used. Displays as one line naming its source.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {setting} `{value}`: {reason}")]
    Invalid {
        /// The flag or env var the value came from.
        setting: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(source: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: source,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// OTLP transport. The spec's default is `http/protobuf`, and so is ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    #[default]
    HttpProtobuf,
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err("http/json is not supported; use grpc or http/protobuf".into()),
            _ => Err("expected grpc or http/protobuf".into()),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Where and how one OTLP signal is sent. Only constructible validated: the endpoint is an
/// http:// or https:// URL, headers are valid HTTP headers, the timeout is non-zero.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    endpoint: String,
    https: bool,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    timeout: Duration,
    tls: TlsConfig,
}

/// A file a TLS setting names, and the flag or env var that named it (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    pub setting: &'static str,
}

/// mTLS: the client's private key and certificate chain, both PEM; always both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    pub key: TlsFile,
    pub certificate: TlsFile,
}

/// The TLS settings of one exporter, used only when its endpoint is https://. The files are
/// read when the exporter starts (`export::tls`), not here: a bad file costs that
/// exporter's data (dropped and counted, one error line), not the whole run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA bundle trusted instead of the platform's roots.
    pub certificate: Option<TlsFile>,
    pub client: Option<ClientIdentity>,
}

impl OtlpConfig {
    /// `endpoint` is the final URL: for http/protobuf the full signal URL (e.g.
    /// `http://collector:4318/v1/traces`), for gRPC the server's base URL.
    pub fn new(endpoint: &str, protocol: Protocol) -> Result<OtlpConfig, ConfigError> {
        OtlpConfig::with_source(endpoint, protocol, flag::OTLP_ENDPOINT)
    }

    fn with_source(
        endpoint: &str,
        protocol: Protocol,
        source: &'static str,
    ) -> Result<OtlpConfig, ConfigError> {
        let url =
            Url::parse(endpoint.trim()).map_err(|e| invalid(source, endpoint, e.to_string()))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(invalid(
                    source,
                    endpoint,
                    format!(
                        "scheme `{other}://` is not supported, expected an http:// or https:// URL"
                    ),
                ));
            }
        };
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(source, endpoint, "missing host"));
        }
        Ok(OtlpConfig {
            endpoint: endpoint.trim().to_owned(),
            https,
            protocol,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            tls: TlsConfig::default(),
        })
    }

    /// Sets the CA bundle and client identity used when the endpoint is https://.
    pub fn with_tls(mut self, tls: TlsConfig) -> OtlpConfig {
        self.tls = tls;
        self
    }

    /// Adds headers (gRPC metadata) sent with every export; names are lowercased.
    pub fn with_headers(
        mut self,
        headers: impl IntoIterator<Item = (String, String)>,
    ) -> Result<OtlpConfig, ConfigError> {
        for (k, v) in headers {
            self.add_header(k, v, flag::OTLP_HEADERS)?;
        }
        Ok(self)
    }

    /// Sets the per-export timeout (must be non-zero).
    pub fn with_timeout(mut self, timeout: Duration) -> Result<OtlpConfig, ConfigError> {
        if timeout.is_zero() {
            return Err(invalid(flag::OTLP_TIMEOUT, "0", "must be greater than 0"));
        }
        self.timeout = timeout;
        Ok(self)
    }

    fn add_header(
        &mut self,
        k: String,
        v: String,
        source: &'static str,
    ) -> Result<(), ConfigError> {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| invalid(source, &k, "not a valid header name"))?;
        HeaderValue::from_str(&v).map_err(|_| {
            invalid(
                source,
                &format!("{k}=…"),
                "header value is not valid visible ASCII",
            )
        })?;
        let name = name.as_str().to_owned();
        match self.headers.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = v,
            None => self.headers.push((name, v)),
        }
        Ok(())
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// Lowercase names, in order, later duplicates already merged.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Whether the endpoint is https:// (only then is [`OtlpConfig::tls`] used).
    pub fn is_https(&self) -> bool {
        self.https
    }
    pub fn tls(&self) -> &TlsConfig {
        &self.tls
    }
}

/// Batching and queueing, shared by every output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// A batch is exported when it is this old, even if not full.
    pub schedule_delay: Duration,
    /// ... or as soon as it holds this many spans.
    pub max_export_batch_size: usize,
    /// Capacity of each output's queue; a full queue drops (and counts) new spans.
    pub max_queue_size: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            schedule_delay: DEFAULT_SCHEDULE_DELAY,
            max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
        }
    }
}

/// Console output formats; both may run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConsoleFormat {
    /// One human-readable line per span.
    Text,
    /// One JSON object per line.
    Json,
}

/// Every output the export stage runs. Several may be active at once; each gets its own
/// queue so that a slow one (an OTLP backend that is down) never holds back another.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportConfig {
    pub otlp: Option<OtlpConfig>,
    /// Console outputs, to stdout (duplicates are ignored).
    pub console: Vec<ConsoleFormat>,
    pub batch: BatchConfig,
}

/// What the command line says about export; `None` = not given (fall back to the env).
/// Field <-> flag: see [`flag`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportFlags {
    /// Base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`; for http/protobuf the signal's path
    /// (`/v1/traces`, …) is appended, replacing one written for another signal.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    /// `key=value,...` like `OTEL_EXPORTER_OTLP_HEADERS`; merged over the env headers.
    pub otlp_headers: Option<String>,
    pub otlp_timeout: Option<Duration>,
    /// Like `OTEL_EXPORTER_OTLP_CERTIFICATE`, for every signal.
    pub otlp_certificate: Option<PathBuf>,
    /// Like `OTEL_EXPORTER_OTLP_CLIENT_KEY`, for every signal.
    pub otlp_client_key: Option<PathBuf>,
    /// Like `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, for every signal.
    pub otlp_client_certificate: Option<PathBuf>,
    pub console: Vec<ConsoleFormat>,
}

impl ExportFlags {
    /// The OTLP transport flags, which every signal shares.
    pub(crate) fn otlp(&self) -> OtlpFlags<'_> {
        OtlpFlags {
            endpoint: self.otlp_endpoint.as_deref(),
            protocol: self.otlp_protocol.as_deref(),
            headers: self.otlp_headers.as_deref(),
            timeout: self.otlp_timeout,
            certificate: self.otlp_certificate.as_deref(),
            client_key: self.otlp_client_key.as_deref(),
            client_certificate: self.otlp_client_certificate.as_deref(),
        }
    }
}

impl ExportConfig {
    /// Resolves flags over the process environment.
    pub fn from_flags_and_env(flags: &ExportFlags) -> Result<ExportConfig, ConfigError> {
        ExportConfig::resolve(flags, |k| std::env::var(k).ok())
    }

    /// Resolves flags over `env` (a lookup such as `std::env::var(k).ok()`). OTLP is enabled
    /// when an endpoint is given by flag, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`. No default output is added: `main` decides what runs
    /// when nothing is configured (the console, per the design).
    pub fn resolve(
        flags: &ExportFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ExportConfig, ConfigError> {
        // Unset and empty mean the same thing for env vars.
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let mut console = Vec::new();
        for f in &flags.console {
            if !console.contains(f) {
                console.push(*f);
            }
        }
        Ok(ExportConfig {
            otlp: resolve_otlp(&TRACES, &flags.otlp(), &env)?,
            console,
            batch: resolve_batch(&env)?,
        })
    }

    /// No output configured: every span would be dropped.
    pub fn is_empty(&self) -> bool {
        self.otlp.is_none() && self.console.is_empty()
    }
}

/// The env vars and URL path of one OTLP signal, for [`resolve_otlp`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signal {
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`: used as-is.
    pub endpoint: &'static str,
    pub protocol: &'static str,
    pub headers: &'static str,
    pub timeout: &'static str,
    pub certificate: &'static str,
    pub client_key: &'static str,
    pub client_certificate: &'static str,
    pub insecure: &'static str,
    /// Appended to a base URL for http/protobuf, e.g. `/v1/traces`.
    pub path: &'static str,
}

pub(crate) const TRACES: Signal = Signal {
    endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    headers: OTEL_EXPORTER_OTLP_TRACES_HEADERS,
    timeout: OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    certificate: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE,
    client_key: OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY,
    client_certificate: OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE,
    insecure: OTEL_EXPORTER_OTLP_TRACES_INSECURE,
    path: "/v1/traces",
};

/// The OTLP transport flags, as [`resolve_otlp`] reads them; `None` = not given.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct OtlpFlags<'a> {
    pub endpoint: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub headers: Option<&'a str>,
    pub timeout: Option<Duration>,
    pub certificate: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
    pub client_certificate: Option<&'a Path>,
}

/// The transport settings of one signal: flag > signal env var > generic env var >
/// default, per setting. `None` when no endpoint is given anywhere. `env` must already map
/// empty values to `None`. Every signal resolves through here, so all of them agree.
pub(crate) fn resolve_otlp(
    signal: &Signal,
    flags: &OtlpFlags<'_>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, ConfigError> {
    let signal_env = env(signal.endpoint);
    let base_env = env(OTEL_EXPORTER_OTLP_ENDPOINT);
    if flags.endpoint.is_none() && signal_env.is_none() && base_env.is_none() {
        return Ok(None);
    }

    let protocol = first_set([
        (flag::OTLP_PROTOCOL, flags.protocol.map(str::to_owned)),
        (signal.protocol, env(signal.protocol)),
        (
            OTEL_EXPORTER_OTLP_PROTOCOL,
            env(OTEL_EXPORTER_OTLP_PROTOCOL),
        ),
    ]);
    let protocol: Protocol = match protocol {
        Some((source, value)) => value
            .parse()
            .map_err(|reason: String| invalid(source, &value, reason))?,
        None => Protocol::default(),
    };

    let (source, url) = match (flags.endpoint, signal_env, base_env) {
        (Some(url), _, _) => (
            flag::OTLP_ENDPOINT,
            base_to_signal(url, protocol, signal.path),
        ),
        (None, Some(url), _) => (signal.endpoint, url),
        (None, None, Some(base)) => {
            let url = match protocol {
                Protocol::HttpProtobuf => append_path(&base, signal.path),
                Protocol::Grpc => base,
            };
            (OTEL_EXPORTER_OTLP_ENDPOINT, url)
        }
        (None, None, None) => unreachable!("checked above"),
    };
    let mut cfg = if protocol == Protocol::Grpc && !url.contains("://") {
        // The spec lets a gRPC endpoint be a bare `host:port`; the insecure setting then
        // says plaintext or TLS (TLS by default). A written scheme always wins over it.
        let insecure = match env_bool(env, signal.insecure) {
            Some(b) => b,
            None => env_bool(env, OTEL_EXPORTER_OTLP_INSECURE).unwrap_or(false),
        };
        let scheme = if insecure { "http" } else { "https" };
        let with_scheme = format!("{scheme}://{}", url.trim());
        OtlpConfig::with_source(&with_scheme, protocol, source).map_err(|e| match e {
            // Name the value as the user wrote it.
            ConfigError::Invalid {
                setting, reason, ..
            } => invalid(setting, &url, reason),
        })?
    } else {
        OtlpConfig::with_source(&url, protocol, source)?
    };

    // Headers: generic env, then signal env, then the flag; later wins per key.
    let sources = [
        (OTEL_EXPORTER_OTLP_HEADERS, env(OTEL_EXPORTER_OTLP_HEADERS)),
        (signal.headers, env(signal.headers)),
        (flag::OTLP_HEADERS, flags.headers.map(str::to_owned)),
    ];
    for (source, value) in sources {
        let Some(value) = value else { continue };
        let list = parse_key_value_list(&value);
        if let Some(bad) = list.malformed.first() {
            return Err(invalid(
                source,
                bad,
                "expected key=value (values percent-encoded)",
            ));
        }
        for (k, v) in list.pairs {
            cfg.add_header(k, v, source)?;
        }
    }

    let timeout = match flags.timeout {
        Some(t) => t,
        None => match env_ms(env, signal.timeout)? {
            Some(ms) => Duration::from_millis(ms),
            None => env_ms(env, OTEL_EXPORTER_OTLP_TIMEOUT)?
                .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        },
    };
    let cfg = cfg.with_timeout(timeout)?;

    // TLS files: flag > signal env > generic env, each on its own. Not read here.
    let tls_file = |flag_value: Option<&Path>, flag_name, signal_var, generic_var| {
        let env_path = |var| env(var).map(|v| PathBuf::from(v.trim()));
        match flag_value {
            Some(p) => Some((flag_name, p.to_path_buf())),
            None => env_path(signal_var)
                .map(|p| (signal_var, p))
                .or_else(|| env_path(generic_var).map(|p| (generic_var, p))),
        }
        .map(|(setting, path)| TlsFile { path, setting })
    };
    let certificate = tls_file(
        flags.certificate,
        flag::OTLP_CERTIFICATE,
        signal.certificate,
        OTEL_EXPORTER_OTLP_CERTIFICATE,
    );
    let key = tls_file(
        flags.client_key,
        flag::OTLP_CLIENT_KEY,
        signal.client_key,
        OTEL_EXPORTER_OTLP_CLIENT_KEY,
    );
    let client_certificate = tls_file(
        flags.client_certificate,
        flag::OTLP_CLIENT_CERTIFICATE,
        signal.client_certificate,
        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE,
    );
    let client = match (key, client_certificate) {
        (Some(key), Some(certificate)) => Some(ClientIdentity { key, certificate }),
        (None, None) => None,
        // A half-configured identity is a configuration mistake, found without reading
        // anything: one line at startup.
        (Some(half), None) | (None, Some(half)) => {
            let missing = if half.setting == flag::OTLP_CLIENT_KEY
                || half.setting == signal.client_key
                || half.setting == OTEL_EXPORTER_OTLP_CLIENT_KEY
            {
                "a client certificate"
            } else {
                "a client key"
            };
            return Err(invalid(
                half.setting,
                &half.path.display().to_string(),
                format!("mTLS needs {missing} too"),
            ));
        }
    };
    Ok(Some(cfg.with_tls(TlsConfig {
        certificate,
        client,
    })))
}

fn first_set<const N: usize>(
    candidates: [(&'static str, Option<String>); N],
) -> Option<(&'static str, String)> {
    candidates
        .into_iter()
        .find_map(|(source, value)| value.map(|v| (source, v)))
}

/// The flag is a base URL shared by every signal: for http/protobuf the signal's path goes
/// on the end, replacing a signal path the user may have written for another signal.
fn base_to_signal(url: &str, protocol: Protocol, path: &str) -> String {
    match protocol {
        Protocol::Grpc => url.to_owned(),
        Protocol::HttpProtobuf => {
            let trimmed = url.trim().trim_end_matches('/');
            let base = ["/v1/traces", "/v1/metrics", "/v1/logs"]
                .into_iter()
                .find_map(|p| trimmed.strip_suffix(p))
                .unwrap_or(trimmed);
            append_path(base, path)
        }
    }
}

/// `base` + `path`, with exactly one slash between them (the spec's rule).
fn append_path(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim().trim_end_matches('/'))
}

/// A boolean env var as the spec reads them: `true` in any case is true, anything else
/// false — with a warning (once) unless it is `false`. `None` when unset.
fn env_bool(env: &impl Fn(&str) -> Option<String>, var: &'static str) -> Option<bool> {
    let v = env(var)?;
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            let msg = format!("{var}={v:?} is neither true nor false; taken as false");
            if super::first_report(&msg) {
                tracing::warn!("{msg}");
            }
            Some(false)
        }
    }
}

/// A positive integer env var, `None` when unset.
fn env_u64(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    let Some(v) = env(var) else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(0) => Err(invalid(var, &v, "must be greater than 0")),
        Ok(n) => Ok(Some(n)),
        Err(_) => Err(invalid(var, &v, "expected a positive integer")),
    }
}

fn env_ms(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    env_u64(env, var).map_err(|e| match e {
        ConfigError::Invalid { setting, value, .. } => invalid(
            setting,
            &value,
            "expected a positive number of milliseconds",
        ),
    })
}

fn env_usize(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<usize>, ConfigError> {
    Ok(env_u64(env, var)?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
}

fn resolve_batch(env: &impl Fn(&str) -> Option<String>) -> Result<BatchConfig, ConfigError> {
    let d = BatchConfig::default();
    let batch = BatchConfig {
        schedule_delay: env_ms(env, OTEL_BSP_SCHEDULE_DELAY)?
            .map_or(d.schedule_delay, Duration::from_millis),
        max_export_batch_size: env_usize(env, OTEL_BSP_MAX_EXPORT_BATCH_SIZE)?
            .unwrap_or(d.max_export_batch_size),
        max_queue_size: env_usize(env, OTEL_BSP_MAX_QUEUE_SIZE)?.unwrap_or(d.max_queue_size),
    };
    if batch.max_export_batch_size > batch.max_queue_size {
        return Err(invalid(
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
            &batch.max_export_batch_size.to_string(),
            format!(
                "must not exceed {OTEL_BSP_MAX_QUEUE_SIZE} ({})",
                batch.max_queue_size
            ),
        ));
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &ExportFlags, vars: &[(&str, &str)]) -> Result<ExportConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportConfig::resolve(flags, |k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    }

    fn otlp(flags: &ExportFlags, vars: &[(&str, &str)]) -> OtlpConfig {
        resolve(flags, vars).unwrap().otlp.expect("otlp enabled")
    }

    fn endpoint_flag(url: &str) -> ExportFlags {
        ExportFlags {
            otlp_endpoint: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_configured_means_no_otlp_and_defaults() {
        let cfg = resolve(
            &ExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_PROTOCOL, "grpc")],
        )
        .unwrap();
        assert_eq!(cfg.otlp, None);
        assert!(cfg.is_empty());
        assert_eq!(cfg.batch, BatchConfig::default());
        assert_eq!(cfg.batch.schedule_delay, Duration::from_millis(500));
        // Empty env vars count as unset.
        let cfg = resolve(
            &ExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, " ")],
        )
        .unwrap();
        assert_eq!(cfg.otlp, None);
    }

    #[test]
    fn endpoint_rules_per_protocol() {
        // http/protobuf is the default; the generic endpoint gets /v1/traces appended.
        let c = otlp(
            &ExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318/")],
        );
        assert_eq!(c.protocol(), Protocol::HttpProtobuf);
        assert_eq!(c.endpoint(), "http://c:4318/v1/traces");
        let c = otlp(
            &ExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318/prefix")],
        );
        assert_eq!(c.endpoint(), "http://c:4318/prefix/v1/traces");
        // gRPC uses the base URL.
        let c = otlp(
            &ExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4317"),
                (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
            ],
        );
        assert_eq!(
            (c.protocol(), c.endpoint()),
            (Protocol::Grpc, "http://c:4317")
        );
        // The traces endpoint is used as-is and wins over the generic one.
        let c = otlp(
            &ExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://a:1"),
                (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://b:2/custom"),
            ],
        );
        assert_eq!(c.endpoint(), "http://b:2/custom");
    }

    #[test]
    fn flags_win_over_env() {
        let flags = ExportFlags {
            otlp_endpoint: Some("http://flag:4317".into()),
            otlp_protocol: Some("grpc".into()),
            otlp_headers: Some("x-token=flag".into()),
            otlp_timeout: Some(Duration::from_secs(2)),
            console: vec![
                ConsoleFormat::Json,
                ConsoleFormat::Text,
                ConsoleFormat::Json,
            ],
            ..Default::default()
        };
        let cfg = resolve(
            &flags,
            &[
                (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "http://env:1/v1/traces"),
                (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "http/protobuf"),
                (OTEL_EXPORTER_OTLP_HEADERS, "x-token=env,x-other=1"),
                (OTEL_EXPORTER_OTLP_TIMEOUT, "500"),
            ],
        )
        .unwrap();
        let c = cfg.otlp.unwrap();
        assert_eq!(
            (c.protocol(), c.endpoint()),
            (Protocol::Grpc, "http://flag:4317")
        );
        assert_eq!(
            c.headers(),
            [
                ("x-token".to_string(), "flag".to_string()),
                ("x-other".to_string(), "1".to_string())
            ]
        );
        assert_eq!(c.timeout(), Duration::from_secs(2));
        assert_eq!(cfg.console, vec![ConsoleFormat::Json, ConsoleFormat::Text]);
        // The http flag gets /v1/traces unless it is already there.
        assert_eq!(
            otlp(&endpoint_flag("http://c:4318"), &[]).endpoint(),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            otlp(&endpoint_flag("http://c:4318/v1/traces"), &[]).endpoint(),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn signal_specific_env_wins_over_generic() {
        let c = otlp(
            &ExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4317"),
                (OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"),
                (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "grpc"),
                (
                    OTEL_EXPORTER_OTLP_HEADERS,
                    "Authorization=Basic%20abc,x-a=1",
                ),
                (OTEL_EXPORTER_OTLP_TRACES_HEADERS, "x-a=2"),
                (OTEL_EXPORTER_OTLP_TIMEOUT, "100"),
                (OTEL_EXPORTER_OTLP_TRACES_TIMEOUT, "250"),
            ],
        );
        assert_eq!(c.protocol(), Protocol::Grpc);
        assert_eq!(
            c.headers(),
            [
                ("authorization".to_string(), "Basic abc".to_string()),
                ("x-a".to_string(), "2".to_string())
            ]
        );
        assert_eq!(c.timeout(), Duration::from_millis(250));
    }

    #[test]
    fn batch_settings_from_env() {
        let cfg = resolve(
            &ExportFlags::default(),
            &[
                (OTEL_BSP_SCHEDULE_DELAY, "50"),
                (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, "10"),
                (OTEL_BSP_MAX_QUEUE_SIZE, "100"),
            ],
        )
        .unwrap();
        assert_eq!(
            cfg.batch,
            BatchConfig {
                schedule_delay: Duration::from_millis(50),
                max_export_batch_size: 10,
                max_queue_size: 100
            }
        );
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c"),
                    (OTEL_EXPORTER_OTLP_PROTOCOL, "http/json"),
                ],
                "invalid OTEL_EXPORTER_OTLP_PROTOCOL `http/json`: http/json is not supported; use grpc or http/protobuf",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c"),
                    (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, "udp"),
                ],
                "invalid OTEL_EXPORTER_OTLP_TRACES_PROTOCOL `udp`: expected grpc or http/protobuf",
            ),
            (
                &[(OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4318")],
                "invalid OTEL_EXPORTER_OTLP_ENDPOINT `collector:4318/v1/traces`: scheme `collector://` is not supported, expected an http:// or https:// URL",
            ),
            (
                &[(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "not a url")],
                "invalid OTEL_EXPORTER_OTLP_TRACES_ENDPOINT `not a url`: relative URL without a base",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c"),
                    (OTEL_EXPORTER_OTLP_TIMEOUT, "10s"),
                ],
                "invalid OTEL_EXPORTER_OTLP_TIMEOUT `10s`: expected a positive number of milliseconds",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c"),
                    (OTEL_EXPORTER_OTLP_HEADERS, "a=1,oops"),
                ],
                "invalid OTEL_EXPORTER_OTLP_HEADERS `oops`: expected key=value (values percent-encoded)",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c"),
                    (OTEL_EXPORTER_OTLP_HEADERS, "bad header=1"),
                ],
                "invalid OTEL_EXPORTER_OTLP_HEADERS `bad header`: not a valid header name",
            ),
            (
                &[(OTEL_BSP_MAX_QUEUE_SIZE, "0")],
                "invalid OTEL_BSP_MAX_QUEUE_SIZE `0`: must be greater than 0",
            ),
            (
                &[(OTEL_BSP_MAX_QUEUE_SIZE, "10")],
                "invalid OTEL_BSP_MAX_EXPORT_BATCH_SIZE `512`: must not exceed OTEL_BSP_MAX_QUEUE_SIZE (10)",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "https://c:4318"),
                    (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, "/c.pem"),
                ],
                "invalid OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE `/c.pem`: mTLS needs a client key too",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "c:4317"),
                    (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
                    (OTEL_EXPORTER_OTLP_INSECURE, "true"),
                    (OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, "/k.pem"),
                ],
                "invalid OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY `/k.pem`: mTLS needs a client certificate too",
            ),
            (
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "not a url"),
                    (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
                ],
                "invalid OTEL_EXPORTER_OTLP_ENDPOINT `not a url`: invalid international domain name",
            ),
        ];
        for (vars, want) in cases {
            let err = resolve(&ExportFlags::default(), vars)
                .unwrap_err()
                .to_string();
            assert_eq!(&err, want);
            assert!(!err.contains('\n'));
        }
        let flags = ExportFlags {
            otlp_client_key: Some("/k.pem".into()),
            ..endpoint_flag("https://c:4317")
        };
        assert_eq!(
            resolve(&flags, &[]).unwrap_err().to_string(),
            "invalid --otlp-client-key `/k.pem`: mTLS needs a client certificate too"
        );
        let err = OtlpConfig::new("http://c:1", Protocol::Grpc)
            .unwrap()
            .with_timeout(Duration::ZERO);
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid --otlp-timeout-ms `0`: must be greater than 0"
        );
    }

    fn tls_file(path: &str, setting: &'static str) -> Option<TlsFile> {
        Some(TlsFile {
            path: path.into(),
            setting,
        })
    }

    #[test]
    fn https_endpoints_for_both_protocols() {
        let c = otlp(
            &ExportFlags::default(),
            &[(
                OTEL_EXPORTER_OTLP_ENDPOINT,
                "https://collector.example:4318",
            )],
        );
        assert_eq!(c.endpoint(), "https://collector.example:4318/v1/traces");
        assert!(c.is_https());
        assert_eq!(
            c.tls(),
            &TlsConfig::default(),
            "platform roots, no client cert"
        );
        let c = otlp(
            &ExportFlags {
                otlp_protocol: Some("grpc".into()),
                ..endpoint_flag("https://[::1]:4317")
            },
            &[],
        );
        assert_eq!(c.endpoint(), "https://[::1]:4317");
        assert!(c.is_https());
        assert!(!otlp(&endpoint_flag("http://c:4318"), &[]).is_https());
    }

    #[test]
    fn tls_files_flag_beats_traces_env_beats_generic_env() {
        let https = (OTEL_EXPORTER_OTLP_ENDPOINT, "https://c:4318");
        let generic = [
            https,
            (OTEL_EXPORTER_OTLP_CERTIFICATE, "/generic/ca.pem"),
            (OTEL_EXPORTER_OTLP_CLIENT_KEY, "/generic/client.key"),
            (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, "/generic/client.pem"),
        ];
        let c = otlp(&ExportFlags::default(), &generic);
        assert_eq!(
            c.tls(),
            &TlsConfig {
                certificate: tls_file("/generic/ca.pem", OTEL_EXPORTER_OTLP_CERTIFICATE),
                client: Some(ClientIdentity {
                    key: tls_file("/generic/client.key", OTEL_EXPORTER_OTLP_CLIENT_KEY).unwrap(),
                    certificate: tls_file(
                        "/generic/client.pem",
                        OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE
                    )
                    .unwrap(),
                }),
            }
        );

        // Each file on its own: the traces CA wins, the generic client identity stays.
        let mut vars = generic.to_vec();
        vars.push((OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, " /traces/ca.pem "));
        let c = otlp(&ExportFlags::default(), &vars);
        assert_eq!(
            c.tls().certificate,
            tls_file("/traces/ca.pem", OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE)
        );
        assert_eq!(
            c.tls().client.as_ref().unwrap().key.setting,
            OTEL_EXPORTER_OTLP_CLIENT_KEY
        );

        // Flags beat both.
        let flags = ExportFlags {
            otlp_certificate: Some("/flag/ca.pem".into()),
            otlp_client_key: Some("/flag/client.key".into()),
            otlp_client_certificate: Some("/flag/client.pem".into()),
            ..Default::default()
        };
        vars.push((OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, "/traces/client.key"));
        let c = otlp(&flags, &vars);
        assert_eq!(
            c.tls().certificate,
            tls_file("/flag/ca.pem", flag::OTLP_CERTIFICATE)
        );
        let id = c.tls().client.as_ref().unwrap();
        assert_eq!(
            (&id.key, &id.certificate),
            (
                &tls_file("/flag/client.key", flag::OTLP_CLIENT_KEY).unwrap(),
                &tls_file("/flag/client.pem", flag::OTLP_CLIENT_CERTIFICATE).unwrap()
            )
        );

        // Empty means unset.
        let c = otlp(
            &ExportFlags::default(),
            &[https, (OTEL_EXPORTER_OTLP_CERTIFICATE, "")],
        );
        assert_eq!(c.tls().certificate, None);
    }

    #[test]
    fn per_signal_tls_overrides_apply_to_their_signal_only() {
        use crate::export::logs::{
            LogsExportConfig, OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE,
            OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY,
        };
        use crate::export::metrics::MetricsExportConfig;
        use crate::export::metrics::config::OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE;
        let vars: Vec<(String, String)> = [
            (OTEL_EXPORTER_OTLP_ENDPOINT, "https://c:4318"),
            (OTEL_EXPORTER_OTLP_CERTIFICATE, "/all/ca.pem"),
            (OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, "/metrics/ca.pem"),
            (OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY, "/logs/client.key"),
            (
                OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE,
                "/logs/client.pem",
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let env = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let flags = ExportFlags::default();
        let traces = ExportConfig::resolve(&flags, env).unwrap().otlp.unwrap();
        let metrics = MetricsExportConfig::resolve_export_flags(&flags, env)
            .unwrap()
            .unwrap()
            .otlp;
        let logs = LogsExportConfig::resolve(&flags, env)
            .unwrap()
            .unwrap()
            .otlp;
        let ca = |c: &OtlpConfig| c.tls().certificate.clone().unwrap().path;
        assert_eq!(ca(&traces), Path::new("/all/ca.pem"));
        assert_eq!(ca(&metrics), Path::new("/metrics/ca.pem"));
        assert_eq!(ca(&logs), Path::new("/all/ca.pem"));
        assert_eq!(traces.tls().client, None);
        assert_eq!(metrics.tls().client, None);
        assert_eq!(
            logs.tls().client.as_ref().unwrap().key.path,
            Path::new("/logs/client.key")
        );
        // The certificate flag reaches every signal, over every env var.
        let flags = ExportFlags {
            otlp_certificate: Some("/flag/ca.pem".into()),
            ..Default::default()
        };
        let metrics = MetricsExportConfig::resolve_export_flags(&flags, env)
            .unwrap()
            .unwrap()
            .otlp;
        assert_eq!(ca(&metrics), Path::new("/flag/ca.pem"));
        let logs = LogsExportConfig::resolve(&flags, env)
            .unwrap()
            .unwrap()
            .otlp;
        assert_eq!(ca(&logs), Path::new("/flag/ca.pem"));
    }

    #[test]
    fn insecure_only_decides_for_scheme_less_grpc_endpoints() {
        let grpc = (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc");
        let endpoint = |vars: &[(&str, &str)]| {
            let mut all = vec![grpc];
            all.extend_from_slice(vars);
            otlp(&ExportFlags::default(), &all).endpoint().to_owned()
        };
        // No scheme: TLS unless insecure is true (any case).
        assert_eq!(
            endpoint(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317")]),
            "https://collector:4317"
        );
        for yes in ["true", "TRUE", " True "] {
            assert_eq!(
                endpoint(&[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
                    (OTEL_EXPORTER_OTLP_INSECURE, yes),
                ]),
                "http://collector:4317",
                "{yes}"
            );
        }
        // Only "true" is true (the spec's booleans): anything else is false.
        for no in ["false", "1", "yes", "on"] {
            assert_eq!(
                endpoint(&[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "127.0.0.1:4317"),
                    (OTEL_EXPORTER_OTLP_INSECURE, no),
                ]),
                "https://127.0.0.1:4317",
                "{no}"
            );
        }
        // The traces variable wins over the generic one, either way.
        assert_eq!(
            endpoint(&[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
                (OTEL_EXPORTER_OTLP_INSECURE, "true"),
                (OTEL_EXPORTER_OTLP_TRACES_INSECURE, "false"),
            ]),
            "https://collector:4317"
        );
        assert_eq!(
            endpoint(&[
                (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "collector:4317"),
                (OTEL_EXPORTER_OTLP_TRACES_INSECURE, "true"),
            ]),
            "http://collector:4317"
        );
        // The flag too is an endpoint insecure applies to.
        let c = otlp(
            &ExportFlags {
                otlp_protocol: Some("grpc".into()),
                ..endpoint_flag("collector:4317")
            },
            &[(OTEL_EXPORTER_OTLP_INSECURE, "true")],
        );
        assert_eq!(c.endpoint(), "http://collector:4317");
        // A written scheme wins over insecure, both ways.
        assert_eq!(
            endpoint(&[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "https://collector:4317"),
                (OTEL_EXPORTER_OTLP_INSECURE, "true"),
            ]),
            "https://collector:4317"
        );
        assert_eq!(
            endpoint(&[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://collector:4317"),
                (OTEL_EXPORTER_OTLP_INSECURE, "false"),
            ]),
            "http://collector:4317"
        );
        // http/protobuf always follows its URL: insecure changes nothing, and a URL without
        // a scheme stays an error.
        let c = otlp(
            &ExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "https://c:4318"),
                (OTEL_EXPORTER_OTLP_INSECURE, "true"),
            ],
        );
        assert!(c.is_https());
        let err = resolve(
            &ExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "c:4318"),
                (OTEL_EXPORTER_OTLP_INSECURE, "true"),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("scheme `c://`"), "{err}");
    }
}
