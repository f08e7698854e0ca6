//! Export configuration: which outputs run, and for OTLP where and how to send.
//!
//! Every setting resolves as command-line flag > signal-specific env var > generic env var >
//! default, following the OpenTelemetry exporter spec
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>) and the batch span
//! processor's env vars (<https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/>).
//! Resolution is a pure function of the flags and an env lookup so it is tested without
//! touching the process environment; values are validated here, once, so that a bad value is
//! one clear line at startup instead of a failure on the first export.

use std::fmt;
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
    #[error(
        "OTLP endpoint `{0}` uses https://, but TLS is not built into periscope yet; \
         use an http:// endpoint (e.g. a collector on the node)"
    )]
    TlsUnsupported(String),
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

/// Where and how OTLP traces are sent. Only constructible validated: the endpoint is an
/// http:// URL, headers are valid HTTP headers, the timeout is non-zero.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    endpoint: String,
    protocol: Protocol,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl OtlpConfig {
    /// `traces_endpoint` is the final URL: for http/protobuf the full traces URL (e.g.
    /// `http://collector:4318/v1/traces`), for gRPC the server's base URL.
    pub fn new(traces_endpoint: &str, protocol: Protocol) -> Result<OtlpConfig, ConfigError> {
        OtlpConfig::with_source(traces_endpoint, protocol, flag::OTLP_ENDPOINT)
    }

    fn with_source(
        endpoint: &str,
        protocol: Protocol,
        source: &'static str,
    ) -> Result<OtlpConfig, ConfigError> {
        let url =
            Url::parse(endpoint.trim()).map_err(|e| invalid(source, endpoint, e.to_string()))?;
        match url.scheme() {
            "http" => {}
            "https" => return Err(ConfigError::TlsUnsupported(endpoint.to_owned())),
            other => {
                return Err(invalid(
                    source,
                    endpoint,
                    format!(
                        "scheme `{other}://` is not supported, expected an http://host:port URL"
                    ),
                ));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(source, endpoint, "missing host"));
        }
        Ok(OtlpConfig {
            endpoint: endpoint.trim().to_owned(),
            protocol,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        })
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
    /// Base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`; for http/protobuf `/v1/traces` is
    /// appended unless the path already ends with it.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    /// `key=value,...` like `OTEL_EXPORTER_OTLP_HEADERS`; merged over the env headers.
    pub otlp_headers: Option<String>,
    pub otlp_timeout: Option<Duration>,
    pub console: Vec<ConsoleFormat>,
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
            otlp: resolve_otlp(flags, &env)?,
            console,
            batch: resolve_batch(&env)?,
        })
    }

    /// No output configured: every span would be dropped.
    pub fn is_empty(&self) -> bool {
        self.otlp.is_none() && self.console.is_empty()
    }
}

fn resolve_otlp(
    flags: &ExportFlags,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, ConfigError> {
    let traces_env = env(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
    let base_env = env(OTEL_EXPORTER_OTLP_ENDPOINT);
    if flags.otlp_endpoint.is_none() && traces_env.is_none() && base_env.is_none() {
        return Ok(None);
    }

    // First one set wins: flag, traces env, generic env.
    let protocol = [
        (flag::OTLP_PROTOCOL, flags.otlp_protocol.clone()),
        (
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            env(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL),
        ),
        (
            OTEL_EXPORTER_OTLP_PROTOCOL,
            env(OTEL_EXPORTER_OTLP_PROTOCOL),
        ),
    ]
    .into_iter()
    .find_map(|(source, value)| value.map(|v| (source, v)));
    let protocol = match protocol {
        Some((source, value)) => value
            .parse()
            .map_err(|reason: String| invalid(source, &value, reason))?,
        None => Protocol::default(),
    };

    let mut cfg = match (&flags.otlp_endpoint, traces_env, base_env) {
        (Some(url), _, _) => {
            // Forgiving: `--otlp-endpoint http://c:4318/v1/traces` means what it says.
            let url = match protocol {
                Protocol::HttpProtobuf if !url.trim_end_matches('/').ends_with("/v1/traces") => {
                    append_traces_path(url)
                }
                _ => url.clone(),
            };
            OtlpConfig::with_source(&url, protocol, flag::OTLP_ENDPOINT)?
        }
        (None, Some(url), _) => {
            OtlpConfig::with_source(&url, protocol, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)?
        }
        (None, None, Some(base)) => {
            let url = match protocol {
                Protocol::HttpProtobuf => append_traces_path(&base),
                Protocol::Grpc => base,
            };
            OtlpConfig::with_source(&url, protocol, OTEL_EXPORTER_OTLP_ENDPOINT)?
        }
        (None, None, None) => unreachable!("checked above"),
    };

    // Headers: generic env, then traces env, then the flag; later wins per key.
    let sources = [
        (OTEL_EXPORTER_OTLP_HEADERS, env(OTEL_EXPORTER_OTLP_HEADERS)),
        (
            OTEL_EXPORTER_OTLP_TRACES_HEADERS,
            env(OTEL_EXPORTER_OTLP_TRACES_HEADERS),
        ),
        (flag::OTLP_HEADERS, flags.otlp_headers.clone()),
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

    let timeout = match flags.otlp_timeout {
        Some(t) if t.is_zero() => {
            return Err(invalid(flag::OTLP_TIMEOUT, "0", "must be greater than 0"));
        }
        Some(t) => t,
        None => {
            let ms = match env_ms(env, OTEL_EXPORTER_OTLP_TRACES_TIMEOUT)? {
                Some(ms) => Some(ms),
                None => env_ms(env, OTEL_EXPORTER_OTLP_TIMEOUT)?,
            };
            ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
        }
    };
    cfg.timeout = timeout;
    Ok(Some(cfg))
}

/// `base` + `/v1/traces`, with exactly one slash between them (the spec's rule).
fn append_traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim().trim_end_matches('/'))
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
        other => other,
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
                "invalid OTEL_EXPORTER_OTLP_ENDPOINT `collector:4318/v1/traces`: scheme `collector://` is not supported, expected an http://host:port URL",
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
                &[(OTEL_EXPORTER_OTLP_ENDPOINT, "https://c:4318")],
                "OTLP endpoint `https://c:4318/v1/traces` uses https://, but TLS is not built into periscope yet; use an http:// endpoint (e.g. a collector on the node)",
            ),
        ];
        for (vars, want) in cases {
            let err = resolve(&ExportFlags::default(), vars)
                .unwrap_err()
                .to_string();
            assert_eq!(&err, want);
            assert!(!err.contains('\n'));
        }
        let err = resolve(&endpoint_flag("https://c:4317"), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::TlsUnsupported(_)));
        let err = OtlpConfig::new("http://c:1", Protocol::Grpc)
            .unwrap()
            .with_timeout(Duration::ZERO);
        assert_eq!(
            err.unwrap_err().to_string(),
            "invalid --otlp-timeout-ms `0`: must be greater than 0"
        );
    }
}
