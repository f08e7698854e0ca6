//! One OTLP transport for the three signals: gRPC (tonic's generated service client)
//! or HTTP/protobuf (`POST …/v1/{traces,metrics,logs}` via reqwest). One attempt per
//! call, bounded by the export timeout (also announced to a gRPC server); failures are
//! classified as [`ExportError`]s so every signal retries and reports alike. Only the
//! service types differ between signals: [`Service`] names them.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use super::config::{OtlpConfig, Protocol};
use super::otlp::{
    ExportError, grpc_channel, grpc_error, grpc_request, http_client, post_protobuf,
};
use super::trace_wire::EncodedTraces;

/// An OTLP collector service, one per signal: what differs between the signals is the
/// messages, the gRPC client and how a partial success counts what was rejected.
pub trait Service {
    type Request: Message + Clone + Send + Sync + 'static;
    type Response: Message + Default;
    type Client: Clone + Debug + Send;

    fn client(channel: Channel) -> Self::Client;

    fn call(
        client: &mut Self::Client,
        request: tonic::Request<Self::Request>,
    ) -> impl Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send;

    /// Items (spans, data points, log records) the backend refused in a partial success.
    fn rejected(response: &Self::Response) -> u64;
}

/// `Service` for one signal: its request and response messages, its generated gRPC
/// client, and the partial-success field that counts what was rejected.
macro_rules! otlp_service {
    ($name:ident, $client:ident, $request:ident, $response:ident, $rejected:ident) => {
        #[derive(Debug)]
        pub enum $name {}

        impl Service for $name {
            type Request = $request;
            type Response = $response;
            type Client = $client<Channel>;

            fn client(channel: Channel) -> Self::Client {
                $client::new(channel)
            }

            fn call(
                client: &mut Self::Client,
                request: tonic::Request<Self::Request>,
            ) -> impl Future<Output = Result<tonic::Response<Self::Response>, tonic::Status>> + Send
            {
                client.export(request)
            }

            fn rejected(response: &Self::Response) -> u64 {
                response
                    .partial_success
                    .as_ref()
                    .map_or(0, |p| u64::try_from(p.$rejected).unwrap_or(0))
            }
        }
    };
}

/// Traces go out as bytes encoded straight from the spans ([`EncodedTraces`]), so their
/// gRPC call is the generated client's, made with tonic's generic client.
#[derive(Debug)]
pub enum Traces {}

impl Service for Traces {
    type Request = EncodedTraces;
    type Response = ExportTraceServiceResponse;
    type Client = tonic::client::Grpc<Channel>;

    fn client(channel: Channel) -> Self::Client {
        tonic::client::Grpc::new(channel)
    }

    async fn call(
        client: &mut Self::Client,
        mut request: tonic::Request<Self::Request>,
    ) -> Result<tonic::Response<Self::Response>, tonic::Status> {
        client
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        request.extensions_mut().insert(tonic::GrpcMethod::new(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            "Export",
        ));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        let codec = tonic_prost::ProstCodec::<EncodedTraces, ExportTraceServiceResponse>::default();
        client.unary(request, path, codec).await
    }

    fn rejected(response: &Self::Response) -> u64 {
        response
            .partial_success
            .as_ref()
            .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
    }
}
otlp_service!(
    Metrics,
    MetricsServiceClient,
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    rejected_data_points
);
otlp_service!(
    Logs,
    LogsServiceClient,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    rejected_log_records
);

/// One OTLP connection (gRPC) or client (HTTP) for signal `S`. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Transport<S: Service> {
    Grpc {
        endpoint: String,
        client: S::Client,
        metadata: MetadataMap,
    },
    Http {
        endpoint: String,
        client: reqwest::Client,
    },
}

pub type TraceTransport = Transport<Traces>;
pub type MetricsTransport = Transport<Metrics>;
pub type LogsTransport = Transport<Logs>;

impl<S: Service> Transport<S> {
    /// Creates the client. Nothing connects yet (the gRPC channel connects lazily and
    /// reconnects on its own); must run inside a tokio runtime.
    pub fn new(cfg: &OtlpConfig) -> Result<Self, ExportError> {
        let endpoint = cfg.endpoint().to_owned();
        Ok(match cfg.protocol() {
            Protocol::Grpc => {
                let (channel, metadata) = grpc_channel(cfg)?;
                Transport::Grpc {
                    endpoint,
                    client: S::client(channel),
                    metadata,
                }
            }
            Protocol::HttpProtobuf => Transport::Http {
                endpoint,
                client: http_client(cfg)?,
            },
        })
    }

    pub fn endpoint(&self) -> &str {
        match self {
            Transport::Grpc { endpoint, .. } | Transport::Http { endpoint, .. } => endpoint,
        }
    }

    /// One export attempt, bounded by `timeout`. Returns what the backend rejected in a
    /// partial success.
    pub async fn export(
        &mut self,
        req: &S::Request,
        timeout: Duration,
    ) -> Result<u64, ExportError> {
        let endpoint = self.endpoint().to_owned();
        let attempt = async {
            match self {
                Transport::Grpc {
                    client, metadata, ..
                } => match S::call(client, grpc_request(req.clone(), metadata, timeout)).await {
                    Ok(resp) => Ok(S::rejected(resp.get_ref())),
                    Err(status) => Err(grpc_error(&endpoint, &status)),
                },
                Transport::Http { client, .. } => {
                    let body =
                        post_protobuf(client, req.encode_to_vec(), timeout, &endpoint).await?;
                    // A body we cannot decode (empty, or JSON from a lenient server) still
                    // means success.
                    Ok(S::rejected(&S::Response::decode(body).unwrap_or_default()))
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::Timeout { endpoint, timeout }),
        }
    }
}
