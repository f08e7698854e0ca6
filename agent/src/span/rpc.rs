//! What HTTP/2 and gRPC add to a span built from an exchange (see [`super::build`]):
//! the protocol version, and for gRPC the RPC semantic conventions (v1.37 attribute
//! names: `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, the ones
//! gRPC dashboards and Beyla-style agents use).

use super::{Span, SpanKind, SpanStatus, Value};
use crate::h2::GrpcInfo;

/// `package.Service` and `Method` of a gRPC path `/package.Service/Method`.
pub fn grpc_method(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// Whether a gRPC status is an error for a span of this kind (OTel gRPC conventions):
/// a client fails on any status but OK; a server only on the codes that mean the
/// server broke (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
/// DATA_LOSS), not on the ones that answer a bad request (NOT_FOUND, ...). A stream
/// that ended without a status failed on both sides.
pub fn grpc_is_error(kind: SpanKind, status: Option<u32>) -> bool {
    match (kind, status) {
        (_, None) => true,
        (SpanKind::Client, Some(s)) => s != 0,
        (SpanKind::Server, Some(s)) => matches!(s, 2 | 4 | 12 | 13 | 14 | 15),
    }
}

/// Names of the gRPC status codes (for `error.type`).
pub fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

fn set(span: &mut Span, key: &'static str, v: Value) {
    match span.attributes.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = v,
        None => span.attributes.push((key, v)),
    }
}

/// Turns a span built by [`super::build::build`] from an HTTP/2 exchange into what it
/// is: HTTP/2, and for gRPC an RPC span named `package.Service/Method` whose status
/// follows the gRPC status, not the HTTP one. Returns whether the span is an error.
pub fn apply_h2(span: &mut Span, path: &str, grpc: Option<&GrpcInfo>) -> bool {
    set(span, "network.protocol.version", Value::Static("2"));
    let Some(g) = grpc else {
        return span.status == SpanStatus::Error;
    };
    let Some((service, method)) = grpc_method(path) else {
        return span.status == SpanStatus::Error;
    };
    span.name = format!("{service}/{method}");
    set(span, "rpc.system", Value::Static("grpc"));
    set(span, "rpc.service", Value::Str(service.to_string()));
    set(span, "rpc.method", Value::Str(method.to_string()));
    if let Some(s) = g.status {
        set(span, "rpc.grpc.status_code", Value::Int(s as i64));
    }
    if let Some(n) = g.request_messages {
        set(
            span,
            "periscope.grpc.request_messages",
            Value::Int(n as i64),
        );
    }
    if let Some(n) = g.response_messages {
        set(
            span,
            "periscope.grpc.response_messages",
            Value::Int(n as i64),
        );
    }
    let error = grpc_is_error(span.kind, g.status);
    span.attributes.retain(|(k, _)| *k != "error.type");
    if error {
        let t = g.status.map_or("no_status", grpc_code_name);
        span.attributes.push(("error.type", Value::Str(t.into())));
    }
    span.status = if error {
        SpanStatus::Error
    } else {
        SpanStatus::Unset
    };
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths() {
        assert_eq!(
            grpc_method("/grpc.health.v1.Health/Check"),
            Some(("grpc.health.v1.Health", "Check"))
        );
        assert_eq!(grpc_method("/a/b/c"), None);
        assert_eq!(grpc_method("/a"), None);
    }

    #[test]
    fn grpc_status_per_side() {
        // NOT_FOUND is the caller's problem: an error for the client only.
        assert!(grpc_is_error(SpanKind::Client, Some(5)));
        assert!(!grpc_is_error(SpanKind::Server, Some(5)));
        assert!(grpc_is_error(SpanKind::Server, Some(13)));
        assert!(!grpc_is_error(SpanKind::Client, Some(0)));
        assert!(grpc_is_error(SpanKind::Server, None));
    }
}
