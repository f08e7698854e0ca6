//! The two OTLP metrics transports: gRPC (tonic's `MetricsServiceClient`) and HTTP/protobuf
//! (`POST …/v1/metrics` via reqwest). One attempt per call, failures classified by the
//! trace exporter's [`ExportError`] so both signals retry and report alike.
//!
//! The client setup and the HTTP POST are shared with the trace and logs exporters
//! (`export::otlp`); only the service types differ.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use crate::export::config::{OtlpConfig, Protocol};
use crate::export::otlp::{
    ExportError, grpc_channel, grpc_error, grpc_request, http_client, post_protobuf,
};

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
                    match client
                        .export(grpc_request(req.clone(), metadata, timeout))
                        .await
                    {
                        Ok(resp) => Ok(rejected(resp.get_ref())),
                        Err(status) => Err(grpc_error(&endpoint, &status)),
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
