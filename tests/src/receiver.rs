//! A real OTLP receiver, in process, for end-to-end tests: gRPC (tonic's generated
//! TraceService, MetricsService and LogsService servers) and HTTP (`POST /v1/traces`,
//! `/v1/metrics`, `/v1/logs`; protobuf, or JSON when the request says
//! `Content-Type: application/json`), each on its own loopback port — in plaintext
//! ([`Receiver::start`]) or both over TLS ([`Receiver::start_tls`]) with certificates made at
//! test time ([`TestPki`]), optionally requiring a client certificate (mTLS).
//!
//! The API is synchronous — the servers run on a tokio runtime on a background thread — so
//! tests stay plain `#[test]` functions that start the agent as a process, then wait here for
//! what it sent. Everything received is kept in arrival order; dropping the [`Receiver`]
//! stops the servers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::{Span, span, status};
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};

use crate::harness::TempDir;

/// How a request reached the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The `--otlp-protocol` / `OTEL_EXPORTER_OTLP_PROTOCOL` value for this protocol.
    pub fn flag(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// One received span with the resource and scope it was sent under.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub protocol: Protocol,
    /// Resource attributes, values rendered as strings (see [`render`]).
    pub resource: BTreeMap<String, String>,
    pub scope_name: String,
    pub scope_version: String,
    pub span: Span,
}

impl ReceivedSpan {
    /// A span attribute rendered as a string (`"200"` for an int).
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.span.attributes, key)
    }

    /// A resource attribute.
    pub fn resource_attr(&self, key: &str) -> Option<&str> {
        self.resource.get(key).map(String::as_str)
    }

    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn kind(&self) -> span::SpanKind {
        span::SpanKind::try_from(self.span.kind).unwrap_or(span::SpanKind::Unspecified)
    }

    pub fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == status::StatusCode::Error as i32)
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Empty for a root span.
    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    pub fn is_root(&self) -> bool {
        self.span.parent_span_id.iter().all(|&b| b == 0)
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(
            self.span
                .end_time_unix_nano
                .saturating_sub(self.span.start_time_unix_nano),
        )
    }
}

/// An attribute value as a string: strings as-is, ints/doubles/bools in decimal, bytes in
/// hex, arrays and maps in a JSON-like form.
pub fn render(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|kv| {
                    format!(
                        "{}={}",
                        kv.key,
                        kv.value.as_ref().map(render).unwrap_or_default()
                    )
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// The value of `key` among OTLP attributes, rendered as a string.
pub fn find(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref().map(render).unwrap_or_default())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    metrics: Vec<ResourceMetrics>,
    logs: Vec<ResourceLogs>,
    /// Headers (gRPC: metadata) of every export call, per protocol, in arrival order.
    headers: Vec<(Protocol, BTreeMap<String, String>)>,
    unavailable: bool,
    /// How long every export waits before it is answered (a slow backend).
    delay: Duration,
    /// TLS handshakes that failed (TLS receivers only), per port.
    tls_failures: Vec<Protocol>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Notified on every request received.
    arrived: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide what was received from the others.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits as long as the receiver plays slow ([`Receiver::set_delay`]).
    async fn stall(&self) {
        let delay = self.lock().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Records one export call; false if the receiver plays unavailable.
    fn accept(&self, protocol: Protocol, headers: &hyper::HeaderMap) -> bool {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut st = self.lock();
        st.headers.push((protocol, headers));
        let ok = !st.unavailable;
        drop(st);
        self.arrived.notify_all();
        ok
    }

    fn traces(&self, protocol: Protocol, req: ExportTraceServiceRequest) {
        let mut st = self.lock();
        for rs in req.resource_spans {
            let resource: BTreeMap<String, String> = rs
                .resource
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value.as_ref().map(render).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.unwrap_or_default();
                for span in ss.spans {
                    st.spans.push(ReceivedSpan {
                        protocol,
                        resource: resource.clone(),
                        scope_name: scope.name.clone(),
                        scope_version: scope.version.clone(),
                        span,
                    });
                }
            }
        }
        drop(st);
        self.arrived.notify_all();
    }

    fn metrics(&self, req: ExportMetricsServiceRequest) {
        self.lock().metrics.extend(req.resource_metrics);
        self.arrived.notify_all();
    }

    fn tls_failed(&self, protocol: Protocol) {
        self.lock().tls_failures.push(protocol);
        self.arrived.notify_all();
    }

    fn logs(&self, req: ExportLogsServiceRequest) {
        self.lock().logs.extend(req.resource_logs);
        self.arrived.notify_all();
    }

    /// Waits until `done` holds or `timeout` passes; returns the state either way.
    fn wait(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let end = Instant::now() + timeout;
        let mut st = self.lock();
        while !done(&st) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .arrived
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st
    }
}

/// A CA made at test time, a server certificate it signed for 127.0.0.1 and `localhost`,
/// and a client certificate it signed (for mTLS). The CA and the client's certificate and
/// key are written as PEM files for the agent (`--otlp-certificate`, …); the directory is
/// removed on drop.
pub struct TestPki {
    dir: TempDir,
    server_cert: CertificateDer<'static>,
    server_key: Vec<u8>,
    ca: CertificateDer<'static>,
}

impl TestPki {
    pub fn new() -> TestPki {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = TempDir::new("otlp-pki");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: another TestPki's CA is then an unknown issuer, as a wrong CA
        // file usually is, rather than a namesake whose signature does not verify.
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!("periscope-e2e OTLP CA {}-{n}", std::process::id()),
        );
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");

        let server_key = KeyPair::generate().expect("server key");
        let mut server =
            CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
        server
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        server
            .distinguished_name
            .push(DnType::CommonName, "otlp-receiver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server
            .signed_by(&server_key, &ca)
            .expect("server certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client =
            CertificateParams::new(vec!["periscope".to_string()]).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, "periscope-agent");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client
            .signed_by(&client_key, &ca)
            .expect("client certificate");

        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem)
                .unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write("ca.pem", ca.pem());
        write("client.pem", client.pem());
        write("client.key", client_key.serialize_pem());
        TestPki {
            server_cert: server.der().clone(),
            server_key: server_key.serialize_der(),
            ca: ca.der().clone(),
            dir,
        }
    }

    /// The CA, PEM: what the agent must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// A rustls server config with the server certificate, advertising `alpn`; with
    /// `mtls`, clients must present a certificate signed by the CA.
    pub fn server_config(&self, alpn: &[u8], mtls: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if mtls {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.clone()).expect("CA as a root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut cfg = builder
            .with_single_cert(
                vec![self.server_cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
            )
            .expect("server TLS config");
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(cfg)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether a TLS receiver asks for a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// mTLS: a client without a certificate signed by the [`TestPki`] CA is refused.
    Required,
}

/// A running receiver; see the module docs.
pub struct Receiver {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Server TLS configs for the gRPC and HTTP ports.
struct ServerTls {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

impl Receiver {
    /// Binds 127.0.0.1 on two free ports and starts serving. Panics if it cannot (a test
    /// environment without loopback networking cannot run these tests anyway).
    pub fn start() -> Receiver {
        Receiver::start_with(None, (0, 0))
    }

    /// Like [`Receiver::start`], on the given gRPC and HTTP ports of 127.0.0.1: a backend
    /// that comes back where it was (after the first one was dropped).
    pub fn start_on(grpc_port: u16, http_port: u16) -> Receiver {
        Receiver::start_with(None, (grpc_port, http_port))
    }

    /// The (gRPC, HTTP) ports, for [`Receiver::start_on`].
    pub fn ports(&self) -> (u16, u16) {
        (self.grpc_addr.port(), self.http_addr.port())
    }

    /// Like [`Receiver::start`], both ports over TLS with `pki`'s server certificate
    /// (endpoints are `https://`). A failed handshake (a client that does not trust the CA,
    /// or without the client certificate mTLS asks for) ends that connection and is counted
    /// ([`Receiver::tls_failures`]).
    pub fn start_tls(pki: &TestPki, client_auth: ClientAuth) -> Receiver {
        let mtls = client_auth == ClientAuth::Required;
        Receiver::start_with(
            Some(ServerTls {
                grpc: pki.server_config(b"h2", mtls),
                http: pki.server_config(b"http/1.1", mtls),
            }),
            (0, 0),
        )
    }

    fn start_with(tls: Option<ServerTls>, ports: (u16, u16)) -> Receiver {
        let bind = |port: u16| {
            let l = std::net::TcpListener::bind(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
            l.set_nonblocking(true).expect("set_nonblocking");
            l
        };
        let (grpc, http) = (bind(ports.0), bind(ports.1));
        let grpc_addr = grpc.local_addr().expect("local_addr");
        let http_addr = http.local_addr().expect("local_addr");
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sh = shared.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                rt.block_on(async move {
                    let grpc = tokio::net::TcpListener::from_std(grpc).expect("tokio listener");
                    let http = tokio::net::TcpListener::from_std(http).expect("tokio listener");
                    match tls {
                        None => {
                            tokio::spawn(serve_grpc(grpc, sh.clone()));
                            tokio::spawn(serve_http(http, sh));
                        }
                        Some(tls) => {
                            tokio::spawn(serve_grpc_tls(grpc, tls.grpc, sh.clone()));
                            tokio::spawn(serve_http_tls(http, tls.http, sh));
                        }
                    }
                    let _ = stopped.await;
                });
            })
            .expect("spawn receiver thread");
        Receiver {
            grpc_addr,
            http_addr,
            scheme,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Base URL for `p`, e.g. `http://127.0.0.1:40123` (`https://` for a TLS receiver; HTTP
    /// paths are `/v1/traces` etc.).
    pub fn endpoint(&self, p: Protocol) -> String {
        match p {
            Protocol::Grpc => format!("{}://{}", self.scheme, self.grpc_addr),
            Protocol::HttpProtobuf => format!("{}://{}", self.scheme, self.http_addr),
        }
    }

    /// Failed TLS handshakes on `p`'s port so far.
    pub fn tls_failures(&self, p: Protocol) -> usize {
        self.shared
            .lock()
            .tls_failures
            .iter()
            .filter(|q| **q == p)
            .count()
    }

    /// Returns as soon as `n` TLS handshakes failed on `p`'s port, or at `timeout`; returns
    /// the count either way.
    pub fn wait_for_tls_failures(&self, p: Protocol, n: usize, timeout: Duration) -> usize {
        self.shared
            .wait(timeout, |st| {
                st.tls_failures.iter().filter(|q| **q == p).count() >= n
            })
            .tls_failures
            .iter()
            .filter(|q| **q == p)
            .count()
    }

    /// Every span received so far, flattened, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Returns as soon as at least `n` spans arrived, or at `timeout` with what there is.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ReceivedSpan> {
        self.shared
            .wait(timeout, |st| st.spans.len() >= n)
            .spans
            .clone()
    }

    /// Returns as soon as a span satisfying `pred` arrived (or at `timeout`), with all spans.
    pub fn wait_for_span(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&ReceivedSpan) -> bool,
    ) -> Vec<ReceivedSpan> {
        self.shared
            .wait(timeout, |st| st.spans.iter().any(&mut pred))
            .spans
            .clone()
    }

    pub fn metrics(&self) -> Vec<ResourceMetrics> {
        self.shared.lock().metrics.clone()
    }

    /// Returns as soon as at least `n` `ResourceMetrics` arrived, or at `timeout`.
    pub fn wait_for_metrics(&self, n: usize, timeout: Duration) -> Vec<ResourceMetrics> {
        self.shared
            .wait(timeout, |st| st.metrics.len() >= n)
            .metrics
            .clone()
    }

    pub fn logs(&self) -> Vec<ResourceLogs> {
        self.shared.lock().logs.clone()
    }

    /// Export calls received over `p` (all signals, including refused ones).
    pub fn requests(&self, p: Protocol) -> usize {
        self.shared
            .lock()
            .headers
            .iter()
            .filter(|(q, _)| *q == p)
            .count()
    }

    /// The headers (for gRPC: the metadata, plus HTTP/2 headers like `content-type`) of each
    /// export call received over `p`, in arrival order; names are lowercase.
    pub fn request_headers(&self, p: Protocol) -> Vec<BTreeMap<String, String>> {
        let st = self.shared.lock();
        st.headers
            .iter()
            .filter(|(q, _)| *q == p)
            .map(|(_, h)| h.clone())
            .collect()
    }

    /// While on, every export is refused as a backend outage would be: gRPC `UNAVAILABLE`,
    /// HTTP `503` with `Retry-After: 1`. Refused requests are counted, their data dropped.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.lock().unavailable = on;
    }

    /// Every export received from now on is answered `delay` late (then accepted as
    /// usual): a slow or overloaded backend. `Duration::ZERO` ends it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.lock().delay = delay;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Grpc(Arc<Shared>);

fn unavailable() -> tonic::Status {
    tonic::Status::unavailable("receiver set unavailable by the test")
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.stall().await;
        if !self
            .0
            .accept(Protocol::Grpc, &req.metadata().clone().into_headers())
        {
            return Err(unavailable());
        }
        self.0.traces(Protocol::Grpc, req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.stall().await;
        if !self
            .0
            .accept(Protocol::Grpc, &req.metadata().clone().into_headers())
        {
            return Err(unavailable());
        }
        self.0.metrics(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.stall().await;
        if !self
            .0
            .accept(Protocol::Grpc, &req.metadata().clone().into_headers())
        {
            return Err(unavailable());
        }
        self.0.logs(req.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn serve_grpc(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let result = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Grpc(shared.clone())))
        .add_service(MetricsServiceServer::new(Grpc(shared.clone())))
        .add_service(LogsServiceServer::new(Grpc(shared)))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await;
    if let Err(e) = result {
        eprintln!("otlp receiver: gRPC server stopped: {e}");
    }
}

/// gRPC over TLS: the handshake here (so that failures are counted), then tonic's server
/// on the decrypted streams.
async fn serve_grpc_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
) {
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >(16);
    let sh = shared.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, tx, sh) = (acceptor.clone(), tx.clone(), sh.clone());
            // One task per handshake: a client that stalls holds back no other.
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Err(_) => sh.tls_failed(Protocol::Grpc),
                }
            });
        }
    });
    let result = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Grpc(shared.clone())))
        .add_service(MetricsServiceServer::new(Grpc(shared.clone())))
        .add_service(LogsServiceServer::new(Grpc(shared)))
        .serve_with_incoming(ReceiverStream::new(rx))
        .await;
    if let Err(e) = result {
        eprintln!("otlp receiver: gRPC/TLS server stopped: {e}");
    }
}

async fn serve_http_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(_) => return shared.tls_failed(Protocol::HttpProtobuf),
            };
            let service = hyper::service::service_fn(move |req| handle_http(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve_http(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle_http(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type HttpResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Decodes a request body as protobuf or, for `application/json`, as OTLP/JSON.
fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    json: bool,
    body: &[u8],
) -> Result<T, String> {
    if json {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    } else {
        T::decode(body).map_err(|e| e.to_string())
    }
}

/// The (empty) success response in the request's encoding.
fn ok<T: Message + serde::Serialize + Default>(json: bool) -> HttpResponse {
    if json {
        let body = serde_json::to_vec(&T::default()).unwrap_or_default();
        reply(StatusCode::OK, "application/json", body)
    } else {
        reply(
            StatusCode::OK,
            "application/x-protobuf",
            T::default().encode_to_vec(),
        )
    }
}

async fn handle_http(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<HttpResponse, Infallible> {
    let path = req.uri().path().to_owned();
    if !matches!(path.as_str(), "/v1/traces" | "/v1/metrics" | "/v1/logs") {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown OTLP path\n",
        ));
    }
    if req.method() != Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST only\n",
        ));
    }
    if req.headers().contains_key(hyper::header::CONTENT_ENCODING) {
        return Ok(reply(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            "compression is not supported\n",
        ));
    }
    let json = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("{e}\n"),
            ));
        }
    };
    shared.stall().await;
    if !shared.accept(Protocol::HttpProtobuf, &headers) {
        let mut resp = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "unavailable\n",
        );
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
        return Ok(resp);
    }
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"));
    Ok(match path.as_str() {
        "/v1/traces" => match decode::<ExportTraceServiceRequest>(json, &body) {
            Ok(r) => {
                shared.traces(Protocol::HttpProtobuf, r);
                ok::<ExportTraceServiceResponse>(json)
            }
            Err(e) => bad(e),
        },
        "/v1/metrics" => match decode::<ExportMetricsServiceRequest>(json, &body) {
            Ok(r) => {
                shared.metrics(r);
                ok::<ExportMetricsServiceResponse>(json)
            }
            Err(e) => bad(e),
        },
        _ => match decode::<ExportLogsServiceRequest>(json, &body) {
            Ok(r) => {
                shared.logs(r);
                ok::<ExportLogsServiceResponse>(json)
            }
            Err(e) => bad(e),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON path, which the agent never uses, checked by hand: OTLP/JSON ids are hex.
    #[test]
    fn accepts_otlp_json_over_http() {
        let r = Receiver::start();
        let body = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]},
            "scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10",
            "spanId":"0102030405060708","name":"GET","kind":2,"startTimeUnixNano":"1","endTimeUnixNano":"3",
            "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;
        let addr = r
            .endpoint(Protocol::HttpProtobuf)
            .trim_start_matches("http://")
            .to_owned();
        let resp = post(&addr, "/v1/traces", "application/json", body.as_bytes());
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let spans = r.wait_for_spans(1, Duration::from_secs(5));
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.trace_id_hex(), "0102030405060708090a0b0c0d0e0f10");
        assert_eq!(s.attr("http.response.status_code").as_deref(), Some("200"));
        assert_eq!(s.resource_attr("service.name"), Some("svc"));
        assert_eq!(s.kind(), span::SpanKind::Server);
        assert_eq!(s.duration(), Duration::from_nanos(2));
        assert!(s.is_root());
        assert_eq!(r.requests(Protocol::HttpProtobuf), 1);

        r.set_unavailable(true);
        let resp = post(&addr, "/v1/traces", "application/x-protobuf", &[]);
        assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
        assert_eq!(
            post(&addr, "/nope", "application/x-protobuf", &[])[..12],
            *"HTTP/1.1 404"
        );
    }

    fn post(addr: &str, path: &str, content_type: &str, body: &[u8]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}
