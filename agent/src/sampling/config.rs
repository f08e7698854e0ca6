//! Sampler configuration from the OpenTelemetry environment variables, plus Periscope's
//! adaptive mode.
//!
//! Resolution is a pure function of an env lookup, so it is tested without touching the
//! process environment. Unlike the OTel SDK spec, which asks SDKs to log and ignore an
//! unparsable `OTEL_TRACES_SAMPLER_ARG` or unknown `OTEL_TRACES_SAMPLER`, a bad value is
//! a one-line error at startup: an agent that silently samples differently from what was
//! asked is worse than one that refuses to start. As the spec says, an empty value
//! counts as unset and sampler names are case-insensitive.

use std::fmt;

use super::ratio::Ratio;

/// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on` (default),
/// `parentbased_always_off`, `parentbased_traceidratio`, or `periscope_adaptive`.
pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
/// For the ratio samplers, the probability in `[0, 1]` (default 1.0). For
/// `periscope_adaptive`, the most ordinary spans kept per second per service (a
/// positive integer, default [`DEFAULT_MAX_SPANS_PER_SECOND`]). Ignored by the others.
pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
/// For `periscope_adaptive`: spans lasting at least this many milliseconds are always
/// kept (positive integer, default [`DEFAULT_SLOW_THRESHOLD_MS`]). Validated whatever
/// the sampler, used only by `periscope_adaptive`.
pub const PERISCOPE_SLOW_THRESHOLD_MS: &str = "PERISCOPE_SLOW_THRESHOLD_MS";

/// Sampler name of Periscope's adaptive mode.
pub const PERISCOPE_ADAPTIVE: &str = "periscope_adaptive";
pub const DEFAULT_MAX_SPANS_PER_SECOND: u32 = 100;
pub const DEFAULT_SLOW_THRESHOLD_MS: u64 = 1000;

const KNOWN: &str = "always_on, always_off, traceidratio, parentbased_always_on, \
                     parentbased_always_off, parentbased_traceidratio, periscope_adaptive";

/// A sampler setting that cannot be used. Displays as one line naming the variable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {var} `{value}`: {reason}")]
pub struct SamplerConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// What a root span (no parent) gets under `ParentBased`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(Ratio),
}

/// Periscope's adaptive mode; see the parent module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdaptiveConfig {
    /// Most ordinary (not error, not slow) spans kept per second, per service.
    pub max_spans_per_second: u32,
    /// Spans at least this long are always kept.
    pub slow_threshold_ns: u64,
}

impl Default for AdaptiveConfig {
    fn default() -> AdaptiveConfig {
        AdaptiveConfig {
            max_spans_per_second: DEFAULT_MAX_SPANS_PER_SECOND,
            slow_threshold_ns: DEFAULT_SLOW_THRESHOLD_MS * 1_000_000,
        }
    }
}

/// Which sampler runs. The OTel ones behave as the SDK spec says
/// (<https://opentelemetry.io/docs/specs/otel/trace/sdk/#built-in-samplers>); `ParentBased`
/// uses the spec's default delegates (a sampled parent, local or remote, means keep; an
/// unsampled one means drop).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(Ratio),
    ParentBased(RootSampler),
    Adaptive(AdaptiveConfig),
}

/// `ParentBased{root=AlwaysOnSampler}`, the spec's default.
impl Default for SamplerConfig {
    fn default() -> SamplerConfig {
        SamplerConfig::ParentBased(RootSampler::AlwaysOn)
    }
}

impl SamplerConfig {
    /// Reads [`OTEL_TRACES_SAMPLER`], [`OTEL_TRACES_SAMPLER_ARG`] and
    /// [`PERISCOPE_SLOW_THRESHOLD_MS`] through `env` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<SamplerConfig, SamplerConfigError> {
        let get = |var: &str| {
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let arg = get(OTEL_TRACES_SAMPLER_ARG);
        let slow_ms = match get(PERISCOPE_SLOW_THRESHOLD_MS) {
            None => DEFAULT_SLOW_THRESHOLD_MS,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) if (1..=u64::MAX / 1_000_000).contains(&ms) => ms,
                _ => {
                    return Err(invalid(
                        PERISCOPE_SLOW_THRESHOLD_MS,
                        &v,
                        "expected a positive number of milliseconds",
                    ));
                }
            },
        };
        let ratio = || -> Result<Ratio, SamplerConfigError> {
            let Some(v) = &arg else { return Ok(Ratio::ONE) };
            v.parse::<f64>().ok().and_then(Ratio::new).ok_or_else(|| {
                invalid(
                    OTEL_TRACES_SAMPLER_ARG,
                    v,
                    "expected a probability between 0 and 1, e.g. 0.25",
                )
            })
        };
        let Some(name) = get(OTEL_TRACES_SAMPLER) else {
            return Ok(SamplerConfig::default());
        };
        Ok(match name.to_ascii_lowercase().as_str() {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
            "parentbased_always_on" => SamplerConfig::ParentBased(RootSampler::AlwaysOn),
            "parentbased_always_off" => SamplerConfig::ParentBased(RootSampler::AlwaysOff),
            "parentbased_traceidratio" => {
                SamplerConfig::ParentBased(RootSampler::TraceIdRatio(ratio()?))
            }
            PERISCOPE_ADAPTIVE => {
                let max_spans_per_second = match &arg {
                    None => DEFAULT_MAX_SPANS_PER_SECOND,
                    Some(v) => match v.parse::<u32>() {
                        Ok(n) if n > 0 => n,
                        _ => {
                            return Err(invalid(
                                OTEL_TRACES_SAMPLER_ARG,
                                v,
                                "periscope_adaptive expects a positive whole number of spans per second per service",
                            ));
                        }
                    },
                };
                SamplerConfig::Adaptive(AdaptiveConfig {
                    max_spans_per_second,
                    slow_threshold_ns: slow_ms * 1_000_000,
                })
            }
            "jaeger_remote" | "parentbased_jaeger_remote" | "xray" => {
                return Err(invalid(
                    OTEL_TRACES_SAMPLER,
                    &name,
                    format!("not supported by periscope; use one of {KNOWN}"),
                ));
            }
            _ => {
                return Err(invalid(
                    OTEL_TRACES_SAMPLER,
                    &name,
                    format!("expected one of {KNOWN}"),
                ));
            }
        })
    }
}

fn invalid(var: &'static str, value: &str, reason: impl Into<String>) -> SamplerConfigError {
    SamplerConfigError {
        var,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// The spec's sampler descriptions (`GetDescription`), e.g.
/// `ParentBased{root=TraceIdRatioBased{0.25}}`, for the startup log.
impl fmt::Display for SamplerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn root(f: &mut fmt::Formatter<'_>, r: &RootSampler) -> fmt::Result {
            match r {
                RootSampler::AlwaysOn => f.write_str("AlwaysOnSampler"),
                RootSampler::AlwaysOff => f.write_str("AlwaysOffSampler"),
                RootSampler::TraceIdRatio(r) => {
                    write!(f, "TraceIdRatioBased{{{}}}", r.probability())
                }
            }
        }
        match self {
            SamplerConfig::AlwaysOn => root(f, &RootSampler::AlwaysOn),
            SamplerConfig::AlwaysOff => root(f, &RootSampler::AlwaysOff),
            SamplerConfig::TraceIdRatio(r) => root(f, &RootSampler::TraceIdRatio(*r)),
            SamplerConfig::ParentBased(r) => {
                f.write_str("ParentBased{root=")?;
                root(f, r)?;
                f.write_str("}")
            }
            SamplerConfig::Adaptive(a) => write!(
                f,
                "PeriscopeAdaptive{{max_spans_per_second={},slow_threshold_ms={}}}",
                a.max_spans_per_second,
                a.slow_threshold_ns / 1_000_000
            ),
        }
    }
}
