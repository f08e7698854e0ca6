//! Shared by the export unit tests: sample spans, a capturable writer, and a scriptable
//! OTLP/HTTP collector small enough to reply with any status or not at all (the real
//! receiver for end-to-end tests lives in the periscope-e2e crate).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::resource::{Resource, ResourceConfig};
use crate::span::{Span, SpanKind, SpanStatus, Value};

pub(crate) fn resource(pid: u32, name: &str) -> Arc<Resource> {
    let cfg = ResourceConfig {
        service_name: Some(name.into()),
        attributes: vec![("deployment.environment".into(), "test".into())],
        host_name: "node".into(),
    };
    let exe = std::path::Path::new("/usr/bin/app");
    Arc::new(Resource::from_parts(pid, Some(exe), None, &cfg))
}

/// A server span with every field set; `n` varies the ids.
pub(crate) fn sample_span(resource: Arc<Resource>, n: u8) -> Span {
    Span {
        trace_id: [n; 16],
        span_id: [n.wrapping_add(1); 8],
        parent_span_id: [n.wrapping_add(2); 8],
        trace_state: "vendor=x".into(),
        flags: 1,
        kind: SpanKind::Server,
        name: "GET /users/{id}".into(),
        start_unix_ns: 1_700_000_000_000_000_000,
        end_unix_ns: 1_700_000_000_001_234_000,
        status: SpanStatus::Error,
        attributes: vec![
            ("http.request.method", Value::Str("GET".into())),
            ("http.response.status_code", Value::Int(500)),
        ],
        resource,
    }
}

/// A `Write` whose bytes the test can read back.
#[derive(Clone, Default)]
pub(crate) struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How the fake collector answers one request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reply {
    /// This HTTP status, with an optional `Retry-After` in seconds.
    Status(u16, Option<u64>),
    /// Read the request, never answer.
    Hang,
}

/// An OTLP/HTTP collector on 127.0.0.1 speaking just enough HTTP/1.1 for reqwest: answers
/// scripted replies in order, then `default`.
#[derive(Clone)]
pub(crate) struct FakeCollector {
    pub base_url: String,
    state: Arc<Mutex<CollectorState>>,
}

struct CollectorState {
    script: VecDeque<Reply>,
    default: Reply,
    /// Every request received, with the status it got (`None` = hung).
    requests: Vec<(ExportTraceServiceRequest, Option<u16>)>,
}

impl FakeCollector {
    pub async fn start(default: Reply) -> FakeCollector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(CollectorState {
            script: VecDeque::new(),
            default,
            requests: Vec::new(),
        }));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, st.clone()));
            }
        });
        FakeCollector { base_url, state }
    }

    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.base_url)
    }

    pub fn script(&self, replies: &[Reply]) {
        self.state.lock().unwrap().script.extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// Number of export requests received.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// Span counts of the requests answered with 2xx, in arrival order.
    pub fn accepted_batches(&self) -> Vec<usize> {
        let st = self.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|(_, status)| status.is_some_and(|s| (200..300).contains(&s)))
            .map(|(req, _)| {
                req.resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum()
            })
            .collect()
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<CollectorState>>) {
    let mut buf = Vec::new();
    loop {
        // Headers.
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < header_end + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..header_end + len).skip(header_end).collect();
        let req = ExportTraceServiceRequest::decode(&body[..]).expect("protobuf body");
        let reply = {
            let mut st = state.lock().unwrap();
            let reply = st.script.pop_front().unwrap_or(st.default);
            let status = match reply {
                Reply::Status(code, _) => Some(code),
                Reply::Hang => None,
            };
            st.requests.push((req, status));
            reply
        };
        match reply {
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Status(code, retry_after) => {
                let retry = retry_after
                    .map(|s| format!("retry-after: {s}\r\n"))
                    .unwrap_or_default();
                let resp = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\n{retry}\r\n");
                if conn.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }
}
