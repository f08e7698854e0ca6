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
#[derive(Clone, Debug)]
pub enum Value {
    Str(String),
    /// A string known at compile time (a method, a scheme, a protocol version): no
    /// allocation per span. Equal to a `Str` of the same text.
    Static(&'static str),
    Int(i64),
}

impl Value {
    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Static(s) => Some(s),
            Value::Int(_) => None,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a == b,
            (a, b) => a.as_str().is_some() && a.as_str() == b.as_str(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::Value;

    #[test]
    fn static_and_owned_strings_are_one_value() {
        assert_eq!(Value::Static("GET"), Value::Str("GET".into()));
        assert_eq!(Value::Str("GET".into()), Value::Static("GET"));
        assert_ne!(Value::Static("GET"), Value::Static("PUT"));
        assert_ne!(Value::Static("1"), Value::Int(1));
        assert_eq!(Value::Int(7), Value::Int(7));
        assert_eq!(Value::Static("1.1").as_str(), Some("1.1"));
        assert_eq!(Value::Int(1).as_str(), None);
    }
}
