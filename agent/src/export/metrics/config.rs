//! Metrics export configuration: where and how often the registry is sent, and with which
//! temporality.
//!
//! Same rules as the trace exporter's config (`super::super::config`): every setting
//! resolves as command-line flag > metrics-specific env var > generic env var > default
//! (<https://opentelemetry.io/docs/specs/otel/protocol/exporter/>), resolution is a pure
//! function of the flags and an env lookup, and a bad value is one line naming its source.
//! The transport half (URL, protocol, headers, timeout, TLS) goes through the resolver every
//! signal shares ([`resolve_otlp`]); only the metrics env var names and path are here.

use std::str::FromStr;
use std::time::Duration;

use crate::export::config::{
    ConfigError, ExportFlags, OtlpConfig, OtlpFlags, Signal, resolve_otlp,
};

/// Metrics URL, used as-is for both protocols (wins over `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT";
/// `grpc` or `http/protobuf` for metrics (wins over `OTEL_EXPORTER_OTLP_PROTOCOL`).
pub const OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL";
/// Like `OTEL_EXPORTER_OTLP_HEADERS`, for metrics only (wins on the same key).
pub const OTEL_EXPORTER_OTLP_METRICS_HEADERS: &str = "OTEL_EXPORTER_OTLP_METRICS_HEADERS";
/// Per-export timeout for metrics in milliseconds (wins over `OTEL_EXPORTER_OTLP_TIMEOUT`).
pub const OTEL_EXPORTER_OTLP_METRICS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT";
/// CA bundle for metrics (wins over `OTEL_EXPORTER_OTLP_CERTIFICATE`).
pub const OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE";
/// mTLS key for metrics (wins over `OTEL_EXPORTER_OTLP_CLIENT_KEY`).
pub const OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY";
/// mTLS certificate for metrics (wins over `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`).
pub const OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE: &str =
    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE";
/// Plaintext for a scheme-less gRPC endpoint (wins over `OTEL_EXPORTER_OTLP_INSECURE`).
pub const OTEL_EXPORTER_OTLP_METRICS_INSECURE: &str = "OTEL_EXPORTER_OTLP_METRICS_INSECURE";
/// `cumulative` (default), `delta` or `lowmemory`, case-insensitive.
pub const OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE: &str =
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
/// Time between two exports, in milliseconds.
pub const OTEL_METRIC_EXPORT_INTERVAL: &str = "OTEL_METRIC_EXPORT_INTERVAL";
/// Comma-separated exporter names; when set without `otlp` (e.g. `none`, or only
/// `prometheus`), no OTLP metrics are sent even though an OTLP endpoint is configured.
pub const OTEL_METRICS_EXPORTER: &str = "OTEL_METRICS_EXPORTER";

/// Flag names used in error messages; `main` must declare its flags with these names (the
/// shared OTLP flags are in [`crate::export::config::flag`]).
pub mod flag {
    pub const METRICS_INTERVAL: &str = "--otlp-metrics-interval-ms";
}

/// The spec's default export interval.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(60);

/// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`, as the OTLP exporter spec defines it
/// (<https://opentelemetry.io/docs/specs/otel/metrics/sdk_exporters/otlp/#additional-environment-variable-configuration>).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TemporalityPreference {
    /// Every instrument cumulative.
    #[default]
    Cumulative,
    /// Counters and histograms delta (we have no up-down counters).
    Delta,
    /// Synchronous counters and histograms delta, asynchronous counters cumulative. Our
    /// overflow counters are read from the registry at collection time, as an observable
    /// counter would be, so here only the HTTP histograms are delta.
    LowMemory,
}

impl TemporalityPreference {
    /// Whether the HTTP histograms are exported as deltas.
    pub fn histograms_delta(self) -> bool {
        matches!(self, Self::Delta | Self::LowMemory)
    }

    /// Whether the overflow counters are exported as deltas.
    pub fn counters_delta(self) -> bool {
        self == Self::Delta
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cumulative => "cumulative",
            Self::Delta => "delta",
            Self::LowMemory => "lowmemory",
        }
    }
}

impl FromStr for TemporalityPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cumulative" => Ok(Self::Cumulative),
            "delta" => Ok(Self::Delta),
            "lowmemory" => Ok(Self::LowMemory),
            _ => Err("expected cumulative, delta or lowmemory".into()),
        }
    }
}

/// What the command line says about metrics export; `None` = not given (fall back to the
/// env). The OTLP fields are the same flags the trace exporter reads, less the TLS files:
/// `main` resolves from [`ExportFlags`] ([`MetricsExportConfig::from_export_flags_and_env`]),
/// which has them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsExportFlags {
    /// Base URL like `OTEL_EXPORTER_OTLP_ENDPOINT`; for http/protobuf `/v1/metrics` is
    /// appended (a trailing `/v1/traces` or `/v1/metrics` is replaced, so one
    /// `--otlp-endpoint` serves both signals).
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    /// `key=value,...` like `OTEL_EXPORTER_OTLP_HEADERS`; merged over the env headers.
    pub otlp_headers: Option<String>,
    pub otlp_timeout: Option<Duration>,
    /// Overrides `OTEL_METRIC_EXPORT_INTERVAL`.
    pub export_interval: Option<Duration>,
}

impl MetricsExportFlags {
    fn otlp(&self) -> OtlpFlags<'_> {
        OtlpFlags {
            endpoint: self.otlp_endpoint.as_deref(),
            protocol: self.otlp_protocol.as_deref(),
            headers: self.otlp_headers.as_deref(),
            timeout: self.otlp_timeout,
            ..OtlpFlags::default()
        }
    }
}

/// Drops the TLS file flags: see [`MetricsExportFlags`].
impl From<&ExportFlags> for MetricsExportFlags {
    fn from(f: &ExportFlags) -> Self {
        MetricsExportFlags {
            otlp_endpoint: f.otlp_endpoint.clone(),
            otlp_protocol: f.otlp_protocol.clone(),
            otlp_headers: f.otlp_headers.clone(),
            otlp_timeout: f.otlp_timeout,
            export_interval: None,
        }
    }
}

/// A validated metrics export configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsExportConfig {
    /// Endpoint (the final URL: `…/v1/metrics` for http/protobuf, the base URL for gRPC),
    /// protocol, headers and per-export timeout.
    pub otlp: OtlpConfig,
    pub interval: Duration,
    pub temporality: TemporalityPreference,
}

impl MetricsExportConfig {
    /// A config with the defaults (60 s, cumulative) for an already validated transport.
    pub fn new(otlp: OtlpConfig) -> MetricsExportConfig {
        MetricsExportConfig {
            otlp,
            interval: DEFAULT_EXPORT_INTERVAL,
            temporality: TemporalityPreference::default(),
        }
    }

    /// Resolves flags over the process environment.
    pub fn from_flags_and_env(
        flags: &MetricsExportFlags,
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        MetricsExportConfig::resolve(flags, |k| std::env::var(k).ok())
    }

    /// Resolves the shared OTLP flags (TLS files included) over the process environment,
    /// with the interval from `OTEL_METRIC_EXPORT_INTERVAL`.
    pub fn from_export_flags_and_env(
        flags: &ExportFlags,
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        MetricsExportConfig::resolve_export_flags(flags, |k| std::env::var(k).ok())
    }

    /// Like [`MetricsExportConfig::resolve`], from the shared OTLP flags.
    pub fn resolve_export_flags(
        flags: &ExportFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        MetricsExportConfig::resolve_with(&flags.otlp(), None, env)
    }

    /// Resolves flags over `env` (a lookup such as `std::env::var(k).ok()`). Enabled when an
    /// endpoint is given by flag, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` — the same rule as traces — unless
    /// `OTEL_METRICS_EXPORTER` is set and does not name `otlp`.
    pub fn resolve(
        flags: &MetricsExportFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        MetricsExportConfig::resolve_with(&flags.otlp(), flags.export_interval, env)
    }

    fn resolve_with(
        otlp_flags: &OtlpFlags<'_>,
        export_interval: Option<Duration>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        // Unset and empty mean the same thing for env vars.
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());

        if let Some(exporters) = env(OTEL_METRICS_EXPORTER) {
            let mut otlp = false;
            for name in exporters.split(',').map(str::trim) {
                match name {
                    "otlp" => otlp = true,
                    "none" | "prometheus" | "console" | "" => {}
                    _ => {
                        return Err(invalid(
                            OTEL_METRICS_EXPORTER,
                            &exporters,
                            "expected a list of otlp, prometheus, console or none",
                        ));
                    }
                }
            }
            if !otlp {
                return Ok(None);
            }
        }

        let Some(otlp) = resolve_otlp(&METRICS_SIGNAL, otlp_flags, &env)? else {
            return Ok(None);
        };

        let interval = match export_interval {
            Some(t) if t.is_zero() => {
                return Err(invalid(
                    flag::METRICS_INTERVAL,
                    "0",
                    "must be greater than 0",
                ));
            }
            Some(t) => t,
            None => env_ms(&env, OTEL_METRIC_EXPORT_INTERVAL)?
                .map_or(DEFAULT_EXPORT_INTERVAL, Duration::from_millis),
        };

        let temporality = match env(OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE) {
            Some(v) => v.parse().map_err(|reason: String| {
                invalid(
                    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE,
                    &v,
                    reason,
                )
            })?,
            None => TemporalityPreference::default(),
        };

        Ok(Some(MetricsExportConfig {
            otlp,
            interval,
            temporality,
        }))
    }
}

const METRICS_SIGNAL: Signal = Signal {
    endpoint: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    protocol: OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    headers: OTEL_EXPORTER_OTLP_METRICS_HEADERS,
    timeout: OTEL_EXPORTER_OTLP_METRICS_TIMEOUT,
    certificate: OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE,
    client_key: OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY,
    client_certificate: OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE,
    insecure: OTEL_EXPORTER_OTLP_METRICS_INSECURE,
    path: "/v1/metrics",
};

fn invalid(setting: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A positive number of milliseconds, `None` when unset.
fn env_ms(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
) -> Result<Option<u64>, ConfigError> {
    let Some(v) = env(var) else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(invalid(
            var,
            &v,
            "expected a positive number of milliseconds",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::config::{
        OTEL_EXPORTER_OTLP_CERTIFICATE, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS,
        OTEL_EXPORTER_OTLP_INSECURE, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TIMEOUT,
        Protocol,
    };

    fn resolve(
        flags: &MetricsExportFlags,
        vars: &[(&str, &str)],
    ) -> Result<Option<MetricsExportConfig>, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        MetricsExportConfig::resolve(flags, |k| {
            vars.iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        })
    }

    fn enabled(flags: &MetricsExportFlags, vars: &[(&str, &str)]) -> MetricsExportConfig {
        resolve(flags, vars)
            .unwrap()
            .expect("metrics export enabled")
    }

    fn endpoint_flag(url: &str) -> MetricsExportFlags {
        MetricsExportFlags {
            otlp_endpoint: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn disabled_without_endpoint_and_defaults_otherwise() {
        let none = resolve(
            &MetricsExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
                (OTEL_METRIC_EXPORT_INTERVAL, "5"),
                (OTEL_EXPORTER_OTLP_ENDPOINT, "  "),
            ],
        );
        assert_eq!(none, Ok(None));
        let c = enabled(
            &MetricsExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318")],
        );
        assert_eq!(c.otlp.protocol(), Protocol::HttpProtobuf);
        assert_eq!(c.otlp.endpoint(), "http://c:4318/v1/metrics");
        assert_eq!(c.otlp.timeout(), Duration::from_secs(10));
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.temporality, TemporalityPreference::Cumulative);
        assert!(c.otlp.headers().is_empty());
    }

    #[test]
    fn endpoint_rules_per_protocol() {
        let c = enabled(
            &MetricsExportFlags::default(),
            &[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318/prefix/")],
        );
        assert_eq!(c.otlp.endpoint(), "http://c:4318/prefix/v1/metrics");
        let c = enabled(
            &MetricsExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4317"),
                (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
            ],
        );
        assert_eq!(
            (c.otlp.protocol(), c.otlp.endpoint()),
            (Protocol::Grpc, "http://c:4317")
        );
        // The metrics endpoint is used as-is, for either protocol, and wins.
        for proto in ["grpc", "http/protobuf"] {
            let c = enabled(
                &MetricsExportFlags::default(),
                &[
                    (OTEL_EXPORTER_OTLP_ENDPOINT, "http://a:1"),
                    (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "http://b:2/custom"),
                    (OTEL_EXPORTER_OTLP_PROTOCOL, proto),
                ],
            );
            assert_eq!(c.otlp.endpoint(), "http://b:2/custom");
        }
        // The flag is a base URL; a signal path written for traces is replaced.
        for url in [
            "http://c:4318",
            "http://c:4318/",
            "http://c:4318/v1/traces",
            "http://c:4318/v1/metrics/",
        ] {
            let c = enabled(&endpoint_flag(url), &[]);
            assert_eq!(c.otlp.endpoint(), "http://c:4318/v1/metrics", "{url}");
        }
        let mut grpc = endpoint_flag("http://c:4317");
        grpc.otlp_protocol = Some("grpc".into());
        assert_eq!(enabled(&grpc, &[]).otlp.endpoint(), "http://c:4317");
    }

    #[test]
    fn flag_beats_metrics_env_beats_generic_env() {
        let env = [
            (
                OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
                "http://env:1/v1/metrics",
            ),
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://generic:1"),
            (OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf"),
            (OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "grpc"),
            (OTEL_EXPORTER_OTLP_HEADERS, "x-token=generic,x-a=1"),
            (OTEL_EXPORTER_OTLP_METRICS_HEADERS, "x-token=metrics,x-b=2"),
            (OTEL_EXPORTER_OTLP_TIMEOUT, "100"),
            (OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, "250"),
            (OTEL_METRIC_EXPORT_INTERVAL, "1500"),
        ];
        // Env only: the metrics-specific values win.
        let c = enabled(&MetricsExportFlags::default(), &env);
        assert_eq!(
            (c.otlp.protocol(), c.otlp.endpoint()),
            (Protocol::Grpc, "http://env:1/v1/metrics")
        );
        let h = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            c.otlp.headers(),
            h(&[("x-token", "metrics"), ("x-a", "1"), ("x-b", "2")])
        );
        assert_eq!(c.otlp.timeout(), Duration::from_millis(250));
        assert_eq!(c.interval, Duration::from_millis(1500));

        // Only the generic timeout.
        let c = enabled(
            &MetricsExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "http://g:1"),
                (OTEL_EXPORTER_OTLP_TIMEOUT, "100"),
            ],
        );
        assert_eq!(c.otlp.timeout(), Duration::from_millis(100));

        // Flags win over everything.
        let flags = MetricsExportFlags {
            otlp_endpoint: Some("http://flag:4318".into()),
            otlp_protocol: Some("http/protobuf".into()),
            otlp_headers: Some("x-token=flag".into()),
            otlp_timeout: Some(Duration::from_secs(2)),
            export_interval: Some(Duration::from_millis(20)),
        };
        let c = enabled(&flags, &env);
        assert_eq!(
            (c.otlp.protocol(), c.otlp.endpoint()),
            (Protocol::HttpProtobuf, "http://flag:4318/v1/metrics")
        );
        assert_eq!(
            c.otlp.headers(),
            h(&[("x-token", "flag"), ("x-a", "1"), ("x-b", "2")])
        );
        assert_eq!(c.otlp.timeout(), Duration::from_secs(2));
        assert_eq!(c.interval, Duration::from_millis(20));
    }

    #[test]
    fn shared_flags_carry_over_from_the_trace_flags() {
        let f = ExportFlags {
            otlp_endpoint: Some("http://c:4317".into()),
            otlp_protocol: Some("grpc".into()),
            otlp_headers: Some("a=b".into()),
            otlp_timeout: Some(Duration::from_secs(3)),
            otlp_certificate: Some("/ca.pem".into()),
            ..Default::default()
        };
        let m = MetricsExportFlags::from(&f);
        assert_eq!(m.otlp_endpoint.as_deref(), Some("http://c:4317"));
        assert_eq!(m.otlp_protocol.as_deref(), Some("grpc"));
        assert_eq!(m.otlp_headers.as_deref(), Some("a=b"));
        assert_eq!(m.otlp_timeout, Some(Duration::from_secs(3)));
        assert_eq!(m.export_interval, None);
    }

    #[test]
    fn metrics_tls_variables_win_over_the_generic_ones() {
        let c = enabled(
            &MetricsExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
                (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
                (OTEL_EXPORTER_OTLP_INSECURE, "false"),
                (OTEL_EXPORTER_OTLP_METRICS_INSECURE, "true"),
                (OTEL_EXPORTER_OTLP_CERTIFICATE, "/all/ca.pem"),
                (OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE, "/metrics/ca.pem"),
            ],
        );
        assert_eq!(c.otlp.endpoint(), "http://collector:4317");
        let ca = c.otlp.tls().certificate.as_ref().unwrap();
        assert_eq!(
            (ca.path.to_str(), ca.setting),
            (
                Some("/metrics/ca.pem"),
                OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE
            )
        );
        // Without the metrics variables: TLS (insecure is false), the generic CA.
        let c = enabled(
            &MetricsExportFlags::default(),
            &[
                (OTEL_EXPORTER_OTLP_ENDPOINT, "collector:4317"),
                (OTEL_EXPORTER_OTLP_PROTOCOL, "grpc"),
                (OTEL_EXPORTER_OTLP_CERTIFICATE, "/all/ca.pem"),
            ],
        );
        assert_eq!(c.otlp.endpoint(), "https://collector:4317");
        assert!(c.otlp.is_https());
        assert_eq!(
            c.otlp.tls().certificate.as_ref().unwrap().setting,
            OTEL_EXPORTER_OTLP_CERTIFICATE
        );
    }

    #[test]
    fn temporality_preference_is_case_insensitive() {
        let base = (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318");
        for (value, want) in [
            ("cumulative", TemporalityPreference::Cumulative),
            ("Delta", TemporalityPreference::Delta),
            (" LOWMEMORY ", TemporalityPreference::LowMemory),
            ("LowMemory", TemporalityPreference::LowMemory),
        ] {
            let c = enabled(
                &MetricsExportFlags::default(),
                &[
                    base,
                    (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, value),
                ],
            );
            assert_eq!(c.temporality, want, "{value}");
        }
        use TemporalityPreference::*;
        assert!(!Cumulative.histograms_delta() && !Cumulative.counters_delta());
        assert!(Delta.histograms_delta() && Delta.counters_delta());
        assert!(LowMemory.histograms_delta() && !LowMemory.counters_delta());
    }

    #[test]
    fn otel_metrics_exporter_can_turn_otlp_off() {
        let endpoint = (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318");
        for off in ["none", "prometheus", "console, prometheus"] {
            let got = resolve(
                &endpoint_flag("http://c:1"),
                &[endpoint, (OTEL_METRICS_EXPORTER, off)],
            );
            assert_eq!(got, Ok(None), "{off}");
        }
        for on in ["otlp", "prometheus,otlp"] {
            let got = resolve(
                &MetricsExportFlags::default(),
                &[endpoint, (OTEL_METRICS_EXPORTER, on)],
            );
            assert!(got.unwrap().is_some(), "{on}");
        }
    }

    #[test]
    fn bad_values_are_one_clear_line() {
        let endpoint = (OTEL_EXPORTER_OTLP_ENDPOINT, "http://c:4318");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    endpoint,
                    (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE, "both"),
                ],
                "invalid OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE `both`: expected cumulative, delta or lowmemory",
            ),
            (
                &[endpoint, (OTEL_METRIC_EXPORT_INTERVAL, "10s")],
                "invalid OTEL_METRIC_EXPORT_INTERVAL `10s`: expected a positive number of milliseconds",
            ),
            (
                &[endpoint, (OTEL_METRIC_EXPORT_INTERVAL, "0")],
                "invalid OTEL_METRIC_EXPORT_INTERVAL `0`: expected a positive number of milliseconds",
            ),
            (
                &[endpoint, (OTEL_EXPORTER_OTLP_METRICS_TIMEOUT, "-1")],
                "invalid OTEL_EXPORTER_OTLP_METRICS_TIMEOUT `-1`: expected a positive number of milliseconds",
            ),
            (
                &[endpoint, (OTEL_EXPORTER_OTLP_METRICS_PROTOCOL, "http/json")],
                "invalid OTEL_EXPORTER_OTLP_METRICS_PROTOCOL `http/json`: http/json is not supported; use grpc or http/protobuf",
            ),
            (
                &[(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, "collector:4318")],
                "invalid OTEL_EXPORTER_OTLP_METRICS_ENDPOINT `collector:4318`: scheme `collector://` is not supported, expected an http:// or https:// URL",
            ),
            (
                &[(OTEL_EXPORTER_OTLP_ENDPOINT, "not a url")],
                "invalid OTEL_EXPORTER_OTLP_ENDPOINT `not a url/v1/metrics`: relative URL without a base",
            ),
            (
                &[endpoint, (OTEL_EXPORTER_OTLP_METRICS_HEADERS, "a=1,oops")],
                "invalid OTEL_EXPORTER_OTLP_METRICS_HEADERS `oops`: expected key=value (values percent-encoded)",
            ),
            (
                &[endpoint, (OTEL_EXPORTER_OTLP_HEADERS, "bad header=1")],
                "invalid OTEL_EXPORTER_OTLP_HEADERS `bad header`: not a valid header name",
            ),
            (
                &[endpoint, (OTEL_METRICS_EXPORTER, "otlp,statsd")],
                "invalid OTEL_METRICS_EXPORTER `otlp,statsd`: expected a list of otlp, prometheus, console or none",
            ),
            (
                &[endpoint, (OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY, "/k.pem")],
                "invalid OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY `/k.pem`: mTLS needs a client certificate too",
            ),
        ];
        for (vars, want) in cases {
            let err = resolve(&MetricsExportFlags::default(), vars)
                .unwrap_err()
                .to_string();
            assert_eq!(&err, want);
            assert!(!err.contains('\n'));
        }
        let flags = MetricsExportFlags {
            export_interval: Some(Duration::ZERO),
            ..endpoint_flag("http://c:1")
        };
        assert_eq!(
            resolve(&flags, &[]).unwrap_err().to_string(),
            "invalid --otlp-metrics-interval-ms `0`: must be greater than 0"
        );
        let flags = MetricsExportFlags {
            otlp_timeout: Some(Duration::ZERO),
            ..endpoint_flag("http://c:1")
        };
        assert_eq!(
            resolve(&flags, &[]).unwrap_err().to_string(),
            "invalid --otlp-timeout-ms `0`: must be greater than 0"
        );
        let flags = MetricsExportFlags {
            otlp_protocol: Some("udp".into()),
            ..endpoint_flag("http://c:1")
        };
        assert_eq!(
            resolve(&flags, &[]).unwrap_err().to_string(),
            "invalid --otlp-protocol `udp`: expected grpc or http/protobuf"
        );
    }
}
