//! OTLP traces: the conversion of [`Span`]s into an `ExportTraceServiceRequest`, and the two
//! transports that send one (gRPC via tonic, HTTP/protobuf via reqwest), over http:// or
//! https:// (TLS material from `super::tls`). The client setup is shared with the metrics and
//! logs exporters.
//!
//! Batching, retries and drop accounting are not here but in the pipeline (`super`): a
//! transport performs exactly one attempt and classifies its failure as retryable or not,
//! following <https://opentelemetry.io/docs/specs/otlp/#failures>.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{
    self as proto, ResourceSpans, ScopeSpans, span, status,
};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

use super::config::OtlpConfig;
use super::tls::{TlsError, TlsMaterial};
use crate::resource::{Resource, SDK_NAME, SDK_VERSION};
use crate::span::{Span, SpanKind, SpanStatus, Value};

/// Instrumentation scope of every span: the spans are made by periscope.
pub const SCOPE_NAME: &str = SDK_NAME;
pub const SCOPE_VERSION: &str = SDK_VERSION;
const USER_AGENT: &str = concat!("periscope/", env!("CARGO_PKG_VERSION"));

/// OTLP span flags bits 8 and 9: whether the parent is known to be remote, and whether it is.
pub(super) const FLAG_HAS_IS_REMOTE: u32 = proto::SpanFlags::ContextHasIsRemoteMask as u32;
pub(super) const FLAG_IS_REMOTE: u32 = proto::SpanFlags::ContextIsRemoteMask as u32;

/// Builds one request with the generated types (what the exporter sends is
/// [`super::trace_wire::encode`]'s, the same bytes without the copy), grouping spans into one `ResourceSpans` per process (spans sharing an
/// `Arc<Resource>`, or equal resources), in order of first appearance.
pub fn to_request(spans: &[Span]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(&Arc<Resource>, Vec<proto::Span>)> = Vec::new();
    // Fast path by pointer: the span stage shares one Arc per process.
    let mut by_ptr: HashMap<*const Resource, usize> = HashMap::new();
    for s in spans {
        let idx = *by_ptr.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            match groups.iter().position(|(r, _)| ***r == *s.resource) {
                Some(i) => i,
                None => {
                    groups.push((&s.resource, Vec::new()));
                    groups.len() - 1
                }
            }
        });
        groups[idx].1.push(span_to_proto(s));
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(resource, spans)| ResourceSpans {
                resource: Some(resource_to_proto(resource)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: SCOPE_VERSION.to_owned(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

pub fn resource_to_proto(r: &Resource) -> ProtoResource {
    ProtoResource {
        attributes: r
            .typed_attributes()
            .map(|(k, v)| key_value(k, &v))
            .collect(),
        ..Default::default()
    }
}

pub fn span_to_proto(s: &Span) -> proto::Span {
    let has_parent = s.parent_span_id != [0; 8];
    proto::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: if has_parent {
            s.parent_span_id.to_vec()
        } else {
            Vec::new()
        },
        flags: super::trace_wire::span_flags(s),
        name: s.name.clone(),
        kind: match s.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: match s.status {
            SpanStatus::Unset => None,
            SpanStatus::Error => Some(proto::Status {
                message: String::new(),
                code: status::StatusCode::Error as i32,
            }),
        },
        ..Default::default()
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.clone()),
        Value::Static(s) => any_value::Value::StringValue((*s).to_owned()),
        Value::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// One failed export attempt, as one line.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("gRPC export to {endpoint} failed: {code:?}: {message}")]
    Grpc {
        endpoint: String,
        code: tonic::Code,
        message: String,
    },
    #[error("HTTP export to {endpoint} failed: {status}")]
    HttpStatus {
        endpoint: String,
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("HTTP export to {endpoint} failed: {reason}")]
    Http { endpoint: String, reason: String },
    #[error("export to {endpoint} timed out after {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("cannot create the OTLP client for {endpoint}: {reason}")]
    Client { endpoint: String, reason: String },
    /// A CA bundle or client identity that cannot be used (not a handshake failure: those
    /// are [`ExportError::Grpc`] / [`ExportError::Http`], retried like an outage).
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl ExportError {
    /// Whether trying again may succeed, per the OTLP spec's lists of retryable gRPC codes
    /// and HTTP statuses. Transport errors (refused, reset, timed out) are retryable.
    pub fn is_retryable(&self) -> bool {
        use tonic::Code;
        match self {
            ExportError::Grpc { code, .. } => matches!(
                code,
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            ExportError::HttpStatus { status, .. } => {
                matches!(status.as_u16(), 429 | 502 | 503 | 504)
            }
            ExportError::Http { .. } | ExportError::Timeout { .. } => true,
            ExportError::Client { .. } | ExportError::Tls(_) => false,
        }
    }

    /// The server's `Retry-After` (seconds form only), when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ExportError::HttpStatus { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What the backend said about an accepted request.
/// One export call's request: the configured headers as metadata, and the timeout
/// announced to the server. Shared by the trace, metrics and logs transports.
pub(crate) fn grpc_request<T>(
    msg: T,
    metadata: &MetadataMap,
    timeout: Duration,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(timeout);
    request
}

/// A failed gRPC export call as an [`ExportError`] (retry classification by code).
pub(crate) fn grpc_error(endpoint: &str, status: &tonic::Status) -> ExportError {
    // A status with a source was made on our side from a transport failure (refused,
    // reset, a connection that broke mid-call), which tonic sometimes codes as Unknown or
    // Internal: the server never answered, so it is an outage like UNAVAILABLE.
    let code = match status.code() {
        tonic::Code::Unknown | tonic::Code::Internal
            if std::error::Error::source(status).is_some() =>
        {
            tonic::Code::Unavailable
        }
        code => code,
    };
    ExportError::Grpc {
        endpoint: endpoint.to_owned(),
        code,
        message: grpc_message(status),
    }
}

/// tonic puts the transport error (refused, reset) in the status' source, not its message.
pub(crate) fn grpc_message(status: &tonic::Status) -> String {
    let message = status.message().to_owned();
    with_tls_hint(match std::error::Error::source(status) {
        Some(src) if message.is_empty() => error_chain(src),
        Some(src) if !message.contains(&root_cause(src)) => {
            format!("{message}: {}", root_cause(src))
        }
        _ => message,
    })
}

/// rustls says "invalid peer certificate: UnknownIssuer"; say what to check as well.
fn with_tls_hint(reason: String) -> String {
    if reason.contains("invalid peer certificate") {
        format!(
            "{reason} (the server's certificate does not verify against the trusted CAs: \
             see --otlp-certificate / OTEL_EXPORTER_OTLP_CERTIFICATE)"
        )
    } else {
        reason
    }
}

/// A lazily connecting gRPC channel for `cfg` and the metadata (headers) to send on every
/// call. Must run inside a tokio runtime. Shared by the trace, metrics and logs transports.
pub(crate) fn grpc_channel(cfg: &OtlpConfig) -> Result<(Channel, MetadataMap), ExportError> {
    let endpoint = cfg.endpoint().to_owned();
    let client_err = |reason: String| ExportError::Client {
        endpoint: endpoint.clone(),
        reason,
    };
    let mut channel = Endpoint::from_shared(endpoint.clone())
        .and_then(|e| e.user_agent(USER_AGENT))
        .map_err(|e| client_err(e.to_string()))?
        .timeout(cfg.timeout())
        .connect_timeout(cfg.timeout());
    if cfg.is_https() {
        let tls = TlsMaterial::load(cfg.tls())?;
        channel = channel
            .tls_config(tls.tonic_config(&tls_domain(&endpoint), cfg.timeout()))
            .map_err(|e| client_err(error_chain(&e)))?;
    }
    let channel = channel.connect_lazy();
    let mut metadata = MetadataMap::new();
    for (k, v) in cfg.headers() {
        let key = AsciiMetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| client_err(format!("header `{k}` is not valid gRPC metadata")))?;
        let value = AsciiMetadataValue::try_from(v.as_str())
            .map_err(|_| client_err(format!("header `{k}` has an invalid value")))?;
        metadata.insert(key, value);
    }
    Ok((channel, metadata))
}

/// The name the server's certificate must be valid for: the URL's host, an IPv6 address
/// without its brackets (tonic would take `[::1]` as a DNS name).
fn tls_domain(endpoint: &str) -> String {
    let url = reqwest::Url::parse(endpoint).ok();
    let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// An HTTP client sending `cfg`'s headers on every request. Shared by the trace, metrics and
/// logs transports.
pub(crate) fn http_client(cfg: &OtlpConfig) -> Result<reqwest::Client, ExportError> {
    let client_err = |reason: String| ExportError::Client {
        endpoint: cfg.endpoint().to_owned(),
        reason,
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in cfg.headers() {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| client_err(e.to_string()))?;
        let value =
            reqwest::header::HeaderValue::from_str(v).map_err(|e| client_err(e.to_string()))?;
        headers.insert(name, value);
    }
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .timeout(cfg.timeout())
        .connect_timeout(cfg.timeout());
    if cfg.is_https() {
        builder = builder.use_preconfigured_tls(TlsMaterial::load(cfg.tls())?.rustls_config());
    }
    builder.build().map_err(|e| client_err(error_chain(&e)))
}

/// Logs, as one line, why an exporter has no client; `disabled` says what that costs. A TLS
/// file problem is the same for every signal that uses the file, so it is logged once, not
/// once per signal.
pub(crate) fn report_client_error(disabled: &str, e: &ExportError) {
    match e {
        ExportError::Tls(tls) => {
            if super::first_report(&tls.to_string()) {
                tracing::error!(
                    "{tls}; OTLP export that uses it is disabled, its data dropped and counted"
                );
            }
        }
        _ => tracing::error!("{disabled}: {e}"),
    }
}

/// `POST`s one protobuf-encoded request; returns the response body of a 2xx (which may
/// be empty or undecodable: still a success). Shared by the trace, metrics and logs transports.
pub(crate) async fn post_protobuf(
    client: &reqwest::Client,
    body: Vec<u8>,
    timeout: Duration,
    endpoint: &str,
) -> Result<bytes::Bytes, ExportError> {
    let http_err = |e: reqwest::Error| {
        if e.is_timeout() {
            ExportError::Timeout {
                endpoint: endpoint.to_owned(),
                timeout,
            }
        } else {
            ExportError::Http {
                endpoint: endpoint.to_owned(),
                reason: with_tls_hint(root_cause(&e)),
            }
        }
    };
    let resp = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body)
        .timeout(timeout)
        .send()
        .await
        .map_err(http_err)?;
    let status = resp.status();
    if !status.is_success() {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(ExportError::HttpStatus {
            endpoint: endpoint.to_owned(),
            status,
            retry_after,
        });
    }
    Ok(resp.bytes().await.unwrap_or_default())
}

/// The innermost error: "Connection refused (os error 111)" rather than reqwest's
/// "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e;
    while let Some(next) = cur.source() {
        parts.push(next.to_string());
        cur = next;
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{resource, sample_span};
    use prost::Message;

    #[test]
    fn converts_every_field() {
        let s = sample_span(resource(10, "api"), 1);
        let p = span_to_proto(&s);
        assert_eq!(p.trace_id, vec![1; 16]);
        assert_eq!(p.span_id, vec![2; 8]);
        assert_eq!(p.parent_span_id, vec![3; 8]);
        assert_eq!(p.trace_state, "vendor=x");
        assert_eq!(p.flags, 0x301, "sampled, parent known to be remote");
        assert_eq!(p.name, "GET /users/{id}");
        assert_eq!(p.kind, span::SpanKind::Server as i32);
        assert_eq!(p.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(p.end_time_unix_nano, 1_700_000_000_001_234_000);
        assert_eq!(p.status.unwrap().code, status::StatusCode::Error as i32);
        assert_eq!(
            p.attributes[0],
            key_value("http.request.method", &Value::Str("GET".into()))
        );
        assert_eq!(
            p.attributes[1].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(500))
        );
    }

    #[test]
    fn root_and_client_spans() {
        let mut s = sample_span(resource(10, "api"), 1);
        s.parent_span_id = [0; 8];
        s.status = SpanStatus::Unset;
        s.flags = 0;
        let p = span_to_proto(&s);
        assert!(p.parent_span_id.is_empty(), "roots have an empty parent id");
        assert_eq!(p.status, None);
        assert_eq!(p.flags, 0x100, "not sampled, no remote parent");
        s.kind = SpanKind::Client;
        s.parent_span_id = [9; 8];
        let p = span_to_proto(&s);
        assert_eq!(p.kind, span::SpanKind::Client as i32);
        assert_eq!(p.flags, 0x100, "a client span's parent is local");
    }

    #[test]
    fn groups_spans_per_process() {
        let a = resource(10, "a");
        let b = resource(20, "b");
        let a_copy = Arc::new((*a).clone());
        let spans = [
            sample_span(a.clone(), 1),
            sample_span(b.clone(), 2),
            sample_span(a.clone(), 3),
            sample_span(a_copy, 4),
        ];
        let req = to_request(&spans);
        assert_eq!(req.resource_spans.len(), 2);
        let rs = &req.resource_spans[0];
        let ids: Vec<u8> = rs.scope_spans[0]
            .spans
            .iter()
            .map(|s| s.trace_id[0])
            .collect();
        assert_eq!(ids, vec![1, 3, 4]);
        let scope = rs.scope_spans[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("periscope", SDK_VERSION)
        );
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(attrs[0], key_value("service.name", &Value::Str("a".into())));
        let pid = attrs.iter().find(|kv| kv.key == "process.pid").unwrap();
        assert_eq!(
            pid.value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(10))
        );
        assert_eq!(req.resource_spans[1].scope_spans[0].spans.len(), 1);
        // The request round-trips through protobuf.
        let bytes = req.encode_to_vec();
        assert_eq!(ExportTraceServiceRequest::decode(&bytes[..]).unwrap(), req);
    }

    #[test]
    fn retry_classification() {
        let grpc = |code| ExportError::Grpc {
            endpoint: "e".into(),
            code,
            message: String::new(),
        };
        assert!(grpc(tonic::Code::Unavailable).is_retryable());
        assert!(!grpc(tonic::Code::InvalidArgument).is_retryable());
        assert!(!grpc(tonic::Code::Unauthenticated).is_retryable());
        let http = |s: u16| ExportError::HttpStatus {
            endpoint: "e".into(),
            status: reqwest::StatusCode::from_u16(s).unwrap(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(http(503).is_retryable() && http(429).is_retryable());
        assert!(!http(400).is_retryable() && !http(401).is_retryable());
        assert_eq!(http(429).retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            http(503).to_string(),
            "HTTP export to e failed: 503 Service Unavailable"
        );
    }
}
