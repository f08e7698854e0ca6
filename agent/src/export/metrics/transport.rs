//! The two OTLP metrics transports: gRPC (tonic's `MetricsServiceClient`) and HTTP/protobuf
//! (`POST …/v1/metrics` via reqwest). One attempt per call, failures classified by the
//! trace exporter's [`ExportError`] so both signals retry and report alike. The client
//! builders and the HTTP POST are `pub(crate)`: the logs exporter (`export::logs`) uses them.
//!
//! This mirrors `export::otlp::Transport`, which is typed to the trace service; the
//! private helpers it uses (`USER_AGENT`, `grpc_message`, `root_cause`) have minimal local
//! twins here. Making that transport generic over the
//! signal would let this file go.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};

use crate::export::config::{OtlpConfig, Protocol};
use crate::export::otlp::ExportError;

/// Same value as the trace exporter's (private) user agent.
const USER_AGENT: &str = concat!("periscope/", env!("CARGO_PKG_VERSION"));

/// One OTLP metrics connection (gRPC) or client (HTTP). Cheap to clone.
#[derive(Clone, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per exporter, created once and never moved on a hot path"
)]
pub enum MetricsTransport {
    Grpc {
        endpoint: String,
        client: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        endpoint: String,
        client: reqwest::Client,
    },
}

impl MetricsTransport {
    /// Creates the client. Nothing connects yet (the gRPC channel connects lazily and
    /// reconnects on its own); must run inside a tokio runtime.
    pub fn new(cfg: &OtlpConfig) -> Result<MetricsTransport, ExportError> {
        let endpoint = cfg.endpoint().to_owned();
        Ok(match cfg.protocol() {
            Protocol::Grpc => {
                let (channel, metadata) = grpc_channel(cfg)?;
                MetricsTransport::Grpc {
                    endpoint,
                    client: MetricsServiceClient::new(channel),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => MetricsTransport::Http {
                endpoint,
                client: http_client(cfg)?,
            },
        })
    }

    pub fn endpoint(&self) -> &str {
        match self {
            MetricsTransport::Grpc { endpoint, .. } | MetricsTransport::Http { endpoint, .. } => {
                endpoint
            }
        }
    }

    /// One export attempt, bounded by `timeout` (also announced to a gRPC server). Returns
    /// the data points the backend rejected in a partial success.
    pub async fn export(
        &mut self,
        req: &ExportMetricsServiceRequest,
        timeout: Duration,
    ) -> Result<u64, ExportError> {
        let endpoint = self.endpoint().to_owned();
        let attempt = async {
            match self {
                MetricsTransport::Grpc {
                    client, metadata, ..
                } => {
                    let mut request = tonic::Request::new(req.clone());
                    *request.metadata_mut() = metadata.clone();
                    request.set_timeout(timeout);
                    match client.export(request).await {
                        Ok(resp) => Ok(rejected(resp.get_ref())),
                        Err(status) => Err(ExportError::Grpc {
                            endpoint: endpoint.clone(),
                            code: status.code(),
                            message: grpc_message(&status),
                        }),
                    }
                }
                MetricsTransport::Http { client, .. } => {
                    export_http(client, req, timeout, &endpoint).await
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::Timeout { endpoint, timeout }),
        }
    }
}

async fn export_http(
    client: &reqwest::Client,
    req: &ExportMetricsServiceRequest,
    timeout: Duration,
    endpoint: &str,
) -> Result<u64, ExportError> {
    let body = post_protobuf(client, req.encode_to_vec(), timeout, endpoint).await?;
    // A body we cannot decode (empty, or JSON from a lenient server) still means success.
    let resp = ExportMetricsServiceResponse::decode(body).unwrap_or_default();
    Ok(rejected(&resp))
}

fn rejected(resp: &ExportMetricsServiceResponse) -> u64 {
    resp.partial_success
        .as_ref()
        .map_or(0, |p| u64::try_from(p.rejected_data_points).unwrap_or(0))
}

/// A lazily connecting gRPC channel for `cfg` and the metadata (headers) to send on every
/// call. Must run inside a tokio runtime. Shared by the metrics and logs transports.
pub(crate) fn grpc_channel(cfg: &OtlpConfig) -> Result<(Channel, MetadataMap), ExportError> {
    let endpoint = cfg.endpoint().to_owned();
    let client_err = |reason: String| ExportError::Client {
        endpoint: endpoint.clone(),
        reason,
    };
    let channel = Endpoint::from_shared(endpoint.clone())
        .and_then(|e| e.user_agent(USER_AGENT))
        .map_err(|e| client_err(e.to_string()))?
        .timeout(cfg.timeout())
        .connect_timeout(cfg.timeout())
        .connect_lazy();
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

/// An HTTP client sending `cfg`'s headers on every request. Shared by the metrics and logs
/// transports.
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
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .timeout(cfg.timeout())
        .connect_timeout(cfg.timeout())
        .build()
        .map_err(|e| client_err(root_cause(&e)))
}

/// `POST`s one protobuf-encoded request; returns the response body of a 2xx (which may
/// be empty or undecodable: still a success). Shared by the metrics and logs transports.
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
                reason: root_cause(&e),
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

// Minimal local twins of private helpers of `export::otlp` (see the module docs).

/// tonic puts the transport error (refused, reset) in the status' source, not its message.
pub(crate) fn grpc_message(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(src) if status.message().is_empty() => root_cause(src),
        _ => status.message().to_owned(),
    }
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
