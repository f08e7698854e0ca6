//! Turning a request/response pair seen on one connection into a [`Span`] with
//! OpenTelemetry semantic-convention attributes (HTTP semconv v1.23+ stable names).

use std::{net::SocketAddr, sync::Arc};

use super::{
    Span, SpanKind, SpanStatus, Value,
    context::{new_span_id, new_trace_id, parse_traceparent},
};
use crate::{
    http::{Message, MessageKind},
    resource::Resource,
};

/// What the connection knows about its two ends.
#[derive(Clone, Copy, Debug, Default)]
pub struct Endpoints {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// The connection is TLS: its spans say `https`.
    pub tls: bool,
}

const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
];

/// Replaces every query value by `REDACTED`, keeping keys (they carry the shape, values
/// carry tokens and personal data). A component without `=` is all value (`?<token>` is
/// how some APIs pass a key or a signed-link secret), so it is redacted whole; empty
/// components stay empty.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) => format!("{k}=REDACTED"),
            None if pair.is_empty() => String::new(),
            None => "REDACTED".to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Splits a request target into path and query. Absolute-form targets
/// (`http://host/path`, used towards proxies) keep only their path.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = match target.find("://") {
        Some(i) => {
            let rest = &target[i + 3..];
            rest.find('/').map_or("/", |p| &rest[p..])
        }
        None => target,
    };
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// `host[:port]` of a Host header (IPv6 literals in brackets).
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, tail)) = rest.split_once(']') {
            return (h, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// Identity of a span, decided before it is built (sampling needs the trace id).
#[derive(Clone, Debug)]
pub struct Ids {
    pub trace_id: super::TraceId,
    pub span_id: super::SpanId,
    /// All zero for a root span.
    pub parent_span_id: super::SpanId,
    pub flags: u8,
    pub trace_state: String,
}

impl Ids {
    /// A server span joins the trace of a valid incoming `traceparent`; anything else
    /// starts a new trace.
    pub fn for_request(kind: SpanKind, req: &Message) -> Self {
        let parent = match kind {
            SpanKind::Server => req.traceparent.as_deref().and_then(parse_traceparent),
            SpanKind::Client => None,
        };
        match parent {
            Some(tp) => Ids {
                trace_id: tp.trace_id,
                span_id: new_span_id(),
                parent_span_id: tp.parent_id,
                flags: tp.flags,
                trace_state: req.tracestate.clone().unwrap_or_default(),
            },
            None => Ids {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                parent_span_id: [0; 8],
                flags: 0,
                trace_state: String::new(),
            },
        }
    }

    /// A new span's identity in this one's trace, with this one as its parent.
    pub fn child(&self) -> Self {
        Ids {
            trace_id: self.trace_id,
            span_id: new_span_id(),
            parent_span_id: self.span_id,
            flags: self.flags,
            trace_state: self.trace_state.clone(),
        }
    }

    pub fn has_parent(&self) -> bool {
        self.parent_span_id != [0; 8]
    }
}

/// Normalized `http.request.method`: known methods as sent, anything else `_OTHER`.
pub fn method_name(method: &str) -> &str {
    if KNOWN_METHODS.contains(&method) {
        method
    } else {
        "_OTHER"
    }
}

/// Whether the exchange is an error per the HTTP semconv: 5xx for servers (4xx are the
/// client's fault), 4xx and 5xx for clients.
pub fn is_error(kind: SpanKind, status: u16) -> bool {
    match kind {
        SpanKind::Server => status >= 500,
        SpanKind::Client => status >= 400,
    }
}

/// `error.type` of a failed connect, from its errno (0: the caller closed the socket
/// while it was still connecting, which is how clients time out).
pub fn connect_error_type(errno: i32) -> &'static str {
    match errno {
        0 | 110 => "timeout",
        111 => "connection_refused",
        104 => "connection_reset",
        113 => "host_unreachable",
        101 => "network_unreachable",
        99 => "address_not_available",
        1 | 13 => "permission_denied",
        _ => "connect_error",
    }
}

/// An address as its attribute text. IPv4 (nearly every span) is written digit by
/// digit: `Ipv4Addr`'s `Display` goes through the formatter's padding support, and was
/// a twentieth of the agent's CPU at saturation (two per span).
pub fn ip_string(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                if o >= 100 {
                    s.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    s.push(char::from(b'0' + o / 10 % 10));
                }
                s.push(char::from(b'0' + o % 10));
            }
            s
        }
        std::net::IpAddr::V6(_) => ip.to_string(),
    }
}

/// The CLIENT span of a connect that failed: no request was sent, so there is no
/// method or URL; it is named `connect` and says where to and why.
pub fn connect_failure(
    peer: SocketAddr,
    local: Option<SocketAddr>,
    errno: i32,
    ids: Ids,
    resource: &Arc<Resource>,
    start_unix_ns: u64,
    end_unix_ns: u64,
) -> Span {
    let mut attributes: Vec<(&'static str, Value)> = vec![
        ("error.type", Value::Str(connect_error_type(errno).into())),
        ("server.address", Value::Str(ip_string(peer.ip()))),
        ("server.port", Value::Int(peer.port() as i64)),
        ("network.peer.address", Value::Str(ip_string(peer.ip()))),
        ("network.peer.port", Value::Int(peer.port() as i64)),
        ("network.transport", Value::Str("tcp".into())),
    ];
    if let Some(l) = local {
        attributes.push(("network.local.port", Value::Int(l.port() as i64)));
    }
    Span {
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        parent_span_id: ids.parent_span_id,
        trace_state: ids.trace_state,
        flags: ids.flags,
        kind: SpanKind::Client,
        name: "connect".into(),
        start_unix_ns,
        end_unix_ns,
        status: SpanStatus::Error,
        attributes,
        resource: resource.clone(),
    }
}

/// Builds the span of one exchange. `route` is the low-cardinality `http.route` when
/// known; `mono_to_unix` converts kernel timestamps.
#[allow(clippy::too_many_arguments)]
pub fn build(
    kind: SpanKind,
    req: &Message,
    resp: &Message,
    ends: Endpoints,
    route: Option<&str>,
    ids: Ids,
    resource: &Arc<Resource>,
    mono_to_unix: impl Fn(u64) -> u64,
) -> Span {
    let (method, target) = match &req.kind {
        MessageKind::Request { method, target } => (method.as_str(), target.as_str()),
        MessageKind::Response { .. } => ("_OTHER", "/"),
    };
    let status = match resp.kind {
        MessageKind::Response { status, .. } => status,
        MessageKind::Request { .. } => 0,
    };
    let known_method: Option<&'static str> = KNOWN_METHODS.iter().copied().find(|m| *m == method);
    let known = known_method.is_some();
    let method_attr: &'static str = known_method.unwrap_or("_OTHER");
    let (path, query) = split_target(target);

    let mut attributes: Vec<(&'static str, Value)> = Vec::with_capacity(16);
    let mut push = |k: &'static str, v: Value| attributes.push((k, v));
    push("http.request.method", Value::Static(method_attr));
    if !known {
        push(
            "http.request.method_original",
            Value::Str(method.to_string()),
        );
    }
    push("http.response.status_code", Value::Int(status as i64));
    push(
        "network.protocol.version",
        Value::Static(if req.version_minor == 0 { "1.0" } else { "1.1" }),
    );
    let host = req.host.as_deref().map(split_host);
    let scheme = if ends.tls { "https" } else { "http" };
    match kind {
        SpanKind::Server => {
            push("url.scheme", Value::Static(scheme));
            push("url.path", Value::Str(path.to_string()));
            if let Some(r) = route {
                push("http.route", Value::Str(r.to_string()));
            }
            if let Some(q) = query {
                push("url.query", Value::Str(redact_query(q)));
            }
            // server.*: the name the client addressed (Host), the port it connected to.
            let server_addr = host
                .map(|(h, _)| h.to_string())
                .or_else(|| ends.local.map(|a| ip_string(a.ip())));
            if let Some(a) = server_addr {
                push("server.address", Value::Str(a));
            }
            if let Some(p) = ends.local.map(|a| a.port()).or(host.and_then(|(_, p)| p)) {
                push("server.port", Value::Int(p as i64));
            }
            if let Some(peer) = ends.peer {
                let ip = ip_string(peer.ip());
                push("client.address", Value::Str(ip.clone()));
                push("client.port", Value::Int(peer.port() as i64));
                push("network.peer.address", Value::Str(ip));
                push("network.peer.port", Value::Int(peer.port() as i64));
            }
        }
        SpanKind::Client => {
            let authority = req
                .host
                .clone()
                .or_else(|| ends.peer.map(|a| a.to_string()))
                .unwrap_or_default();
            let full = match query {
                Some(q) => format!("{scheme}://{authority}{path}?{}", redact_query(q)),
                None => format!("{scheme}://{authority}{path}"),
            };
            push("url.full", Value::Str(full));
            if let Some((h, p)) = host {
                push("server.address", Value::Str(h.to_string()));
                if let Some(p) = p.or(ends.peer.map(|a| a.port())) {
                    push("server.port", Value::Int(p as i64));
                }
            } else if let Some(peer) = ends.peer {
                push("server.address", Value::Str(ip_string(peer.ip())));
                push("server.port", Value::Int(peer.port() as i64));
            }
            if let Some(peer) = ends.peer {
                push("network.peer.address", Value::Str(ip_string(peer.ip())));
                push("network.peer.port", Value::Int(peer.port() as i64));
            }
        }
    }
    if let Some(ua) = &req.user_agent {
        push("user_agent.original", Value::Str(ua.clone()));
    }
    if req.body_bytes > 0 {
        push("http.request.body.size", Value::Int(req.body_bytes as i64));
    }
    if !resp.size_unknown {
        push(
            "http.response.body.size",
            Value::Int(resp.body_bytes as i64),
        );
    }
    let error = is_error(kind, status);
    if error {
        push("error.type", Value::Str(status.to_string()));
    }

    let (start, end) = match kind {
        // Server: first request byte read .. last response byte written.
        SpanKind::Server => (req.start_ns, resp.end_ns),
        // Client: first request byte written .. last response byte read.
        SpanKind::Client => (req.start_ns, resp.end_ns),
    };
    let name = match route {
        Some(r) => format!("{method_attr} {r}"),
        None => method_attr.to_string(),
    };
    Span {
        trace_id: ids.trace_id,
        span_id: ids.span_id,
        parent_span_id: ids.parent_span_id,
        trace_state: ids.trace_state,
        flags: ids.flags,
        kind,
        name,
        start_unix_ns: mono_to_unix(start),
        end_unix_ns: mono_to_unix(end.max(start)),
        status: if error {
            SpanStatus::Error
        } else {
            SpanStatus::Unset
        },
        attributes,
        resource: resource.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_strings_are_display_strings() {
        let mut x: u32 = 0x9e37_79b9;
        let mut ips: Vec<std::net::IpAddr> = vec![
            [0, 0, 0, 0].into(),
            [255, 255, 255, 255].into(),
            [127, 0, 0, 1].into(),
            [10, 100, 9, 99].into(),
            "::1".parse().unwrap(),
            "fe80::1:2".parse().unwrap(),
        ];
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            ips.push(std::net::Ipv4Addr::from(x).into());
        }
        for ip in ips {
            assert_eq!(ip_string(ip), ip.to_string());
        }
    }

    #[test]
    fn redacts_query_values_keeps_keys() {
        assert_eq!(
            redact_query("a=1&token=secret&flag"),
            "a=REDACTED&token=REDACTED&REDACTED"
        );
    }

    #[test]
    fn splits_targets() {
        assert_eq!(split_target("/a/b?x=1"), ("/a/b", Some("x=1")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(split_target("http://h:1/p?q"), ("/p", Some("q")));
        assert_eq!(split_target("http://h:1"), ("/", None));
        assert_eq!(split_target("*"), ("*", None));
    }

    #[test]
    fn splits_hosts() {
        assert_eq!(split_host("example.com:8080"), ("example.com", Some(8080)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("[::1]"), ("::1", None));
    }
}
