//! Spans as the agent builds them: one per HTTP request/response pair, independent of
//! how they are exported (OTLP, console). Timestamps are wall-clock nanoseconds since
//! the Unix epoch, already converted from the kernel's monotonic clock.

use std::sync::Arc;

use crate::resource::Resource;

/// 16-byte W3C trace id.
pub type TraceId = [u8; 16];
/// 8-byte W3C span id.
pub type SpanId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanStatus {
    Unset,
    Error,
}

/// An attribute value, as OTLP's AnyValue subset we need.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
}

#[derive(Clone, Debug)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// All zero when the span is a root.
    pub parent_span_id: SpanId,
    /// W3C tracestate received with the request, passed through verbatim.
    pub trace_state: String,
    /// W3C trace flags (bit 0 = sampled).
    pub flags: u8,
    pub kind: SpanKind,
    /// `{method} {route}` or `{method}`.
    pub name: String,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub status: SpanStatus,
    /// Semantic-convention attributes (http.request.method, url.path, …), in a stable order.
    pub attributes: Vec<(&'static str, Value)>,
    /// The traced process this span belongs to (service.name, process.pid, …).
    pub resource: Arc<Resource>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

pub mod build;
pub mod context;
pub mod rpc;
