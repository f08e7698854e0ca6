//! Console output: one line per span, as readable text (what a person watching the agent, or
//! a demo, looks at) or as JSON (what `jq` and log shippers read).

use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::resource::Resource;
use crate::span::{Span, SpanKind, SpanStatus, Value};

/// One text line, without the newline:
///
/// ```text
/// 12:34:56.789Z SERVER GET /users/{id} 200 1.234ms service=api pid=42 client=10.0.0.7:51234 trace=4bf9… span=00f0… parent=-
/// ```
///
/// Time of day (UTC) of the span start, kind, name (a route-less name gets the path), status
/// code (`500 ERROR` when the span is an error, `-` without a response), duration, then
/// `key=value` fields: service, pid, the peer (`client=` for server spans, `server=` for
/// client spans) and the full ids so a trace can be looked up in a backend.
pub fn format_text(s: &Span) -> String {
    let mut line = String::with_capacity(192);
    let _ = write!(line, "{} ", time_of_day(s.start_unix_ns));
    line.push_str(match s.kind {
        SpanKind::Server => "SERVER ",
        SpanKind::Client => "CLIENT ",
    });
    line.push_str(&s.name);
    // A route-less name is only the method; the path says more. (No let-chains: MSRV 1.87.)
    match s.attr("url.path").and_then(Value::as_str) {
        Some(path) if !s.name.contains(' ') => {
            let _ = write!(line, " {path}");
        }
        _ => {}
    }
    match s.attr("http.response.status_code") {
        Some(code) => {
            let _ = write!(line, " {}", render(code));
        }
        None => line.push_str(" -"),
    }
    if s.status == SpanStatus::Error {
        line.push_str(" ERROR");
    }
    let _ = write!(
        line,
        " {}",
        duration(s.end_unix_ns.saturating_sub(s.start_unix_ns))
    );
    let _ = write!(line, " service={}", quoted(&s.resource.service_name));
    let _ = write!(line, " pid={}", s.resource.pid);
    let peer = match s.kind {
        SpanKind::Server => (
            "client",
            address(
                s,
                &["client.address", "network.peer.address"],
                &["client.port", "network.peer.port"],
            ),
        ),
        SpanKind::Client => (
            "server",
            address(
                s,
                &["server.address", "network.peer.address"],
                &["server.port", "network.peer.port"],
            ),
        ),
    };
    if let (key, Some(addr)) = peer {
        let _ = write!(line, " {key}={}", quoted(&addr));
    }
    let _ = write!(line, " trace={} span={}", hex(&s.trace_id), hex(&s.span_id));
    if s.parent_span_id == [0; 8] {
        line.push_str(" parent=-");
    } else {
        let _ = write!(line, " parent={}", hex(&s.parent_span_id));
    }
    line
}

/// One JSON object, without the newline. Fields, in this order: `trace_id`, `span_id`,
/// `parent_span_id` (hex; `null` for a root), `trace_flags`, `trace_state`, `name`, `kind`
/// (`SERVER`/`CLIENT`), `start_unix_ns`, `end_unix_ns`, `duration_ms`, `status`
/// (`UNSET`/`ERROR`), `attributes` and `resource` (objects; ints stay numbers).
pub fn format_json(s: &Span) -> String {
    let parent = (s.parent_span_id != [0; 8]).then(|| hex(&s.parent_span_id));
    let line = JsonSpan {
        trace_id: hex(&s.trace_id),
        span_id: hex(&s.span_id),
        parent_span_id: parent,
        trace_flags: s.flags,
        trace_state: &s.trace_state,
        name: &s.name,
        kind: match s.kind {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
        },
        start_unix_ns: s.start_unix_ns,
        end_unix_ns: s.end_unix_ns,
        duration_ms: s.end_unix_ns.saturating_sub(s.start_unix_ns) as f64 / 1e6,
        status: match s.status {
            SpanStatus::Unset => "UNSET",
            SpanStatus::Error => "ERROR",
        },
        attributes: Attributes(&s.attributes),
        resource: ResourceAttributes(&s.resource),
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

#[derive(Serialize)]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    trace_flags: u8,
    trace_state: &'a str,
    name: &'a str,
    kind: &'static str,
    start_unix_ns: u64,
    end_unix_ns: u64,
    duration_ms: f64,
    status: &'static str,
    attributes: Attributes<'a>,
    resource: ResourceAttributes<'a>,
}

/// Attributes as a JSON object in their stable order (serde_json's `Map` would sort them).
struct Attributes<'a>(&'a [(&'static str, Value)]);

impl Serialize for Attributes<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            map.serialize_entry(k, &JsonValue(v))?;
        }
        map.end()
    }
}

struct ResourceAttributes<'a>(&'a Resource);

impl Serialize for ResourceAttributes<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut map = ser.serialize_map(Some(self.0.attributes.len()))?;
        for (k, v) in self.0.typed_attributes() {
            map.serialize_entry(k, &JsonValue(&v))?;
        }
        map.end()
    }
}

struct JsonValue<'a>(&'a Value);

impl Serialize for JsonValue<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Str(s) => ser.serialize_str(s),
            Value::Static(s) => ser.serialize_str(s),
            Value::Int(i) => ser.serialize_i64(*i),
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn render(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Static(s) => (*s).to_owned(),
        Value::Int(i) => i.to_string(),
    }
}

/// `addr:port` from the first present address and port attributes; IPv6 in brackets.
fn address(s: &Span, addr_keys: &[&str], port_keys: &[&str]) -> Option<String> {
    let addr = addr_keys.iter().find_map(|k| s.attr(k)).map(render)?;
    let port = port_keys.iter().find_map(|k| s.attr(k)).map(render);
    Some(match port {
        Some(p) if addr.contains(':') => format!("[{addr}]:{p}"),
        Some(p) => format!("{addr}:{p}"),
        None => addr,
    })
}

/// Values with spaces or quotes are quoted so that `key=value` fields stay splittable.
fn quoted(v: &str) -> String {
    if v.is_empty() || v.contains([' ', '"', '=']) {
        format!("{v:?}")
    } else {
        v.to_owned()
    }
}

/// `0.042ms`, `1.234ms`, `812.500ms`, then seconds: `3.210s`.
fn duration(ns: u64) -> String {
    if ns < 1_000_000_000 {
        format!("{:.3}ms", ns as f64 / 1e6)
    } else {
        format!("{:.3}s", ns as f64 / 1e9)
    }
}

/// `HH:MM:SS.mmmZ` (UTC) of a Unix timestamp in nanoseconds.
fn time_of_day(unix_ns: u64) -> String {
    let ms = (unix_ns / 1_000_000) % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{resource, sample_span};

    #[test]
    fn text_line_for_a_server_span() {
        let mut s = sample_span(resource(42, "api"), 1);
        s.status = SpanStatus::Unset;
        s.attributes
            .push(("client.address", Value::Str("10.0.0.7".into())));
        s.attributes.push(("client.port", Value::Int(51234)));
        s.attributes[1].1 = Value::Int(200);
        assert_eq!(
            format_text(&s),
            "22:13:20.000Z SERVER GET /users/{id} 200 1.234ms service=api pid=42 \
             client=10.0.0.7:51234 trace=01010101010101010101010101010101 \
             span=0202020202020202 parent=0303030303030303"
        );
    }

    #[test]
    fn text_line_for_a_failed_routeless_client_root() {
        let mut s = sample_span(resource(7, "my app"), 1);
        s.kind = SpanKind::Client;
        s.name = "POST".into();
        s.parent_span_id = [0; 8];
        s.end_unix_ns = s.start_unix_ns + 2_500_000_000;
        s.attributes = vec![
            ("url.path", Value::Str("/pay".into())),
            ("http.response.status_code", Value::Int(503)),
            ("server.address", Value::Str("::1".into())),
            ("server.port", Value::Int(8080)),
        ];
        let line = format_text(&s);
        assert!(
            line.starts_with(
                "22:13:20.000Z CLIENT POST /pay 503 ERROR 2.500s service=\"my app\" pid=7 server=[::1]:8080 trace="
            ),
            "{line}"
        );
        assert!(line.ends_with(" parent=-"), "{line}");
        s.attributes.clear();
        assert!(format_text(&s).contains(" POST - ERROR 2.500s service="));
    }

    #[test]
    fn json_line_has_every_field() {
        let s = sample_span(resource(42, "api"), 1);
        let v: serde_json::Value = serde_json::from_str(&format_json(&s)).unwrap();
        assert_eq!(v["trace_id"], "01010101010101010101010101010101");
        assert_eq!(v["span_id"], "0202020202020202");
        assert_eq!(v["parent_span_id"], "0303030303030303");
        assert_eq!(v["trace_flags"], 1);
        assert_eq!(v["trace_state"], "vendor=x");
        assert_eq!(v["name"], "GET /users/{id}");
        assert_eq!(v["kind"], "SERVER");
        assert_eq!(v["start_unix_ns"], 1_700_000_000_000_000_000u64);
        assert_eq!(v["end_unix_ns"], 1_700_000_000_001_234_000u64);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["status"], "ERROR");
        assert_eq!(v["attributes"]["http.request.method"], "GET");
        assert_eq!(v["attributes"]["http.response.status_code"], 500);
        assert_eq!(v["resource"]["service.name"], "api");
        assert_eq!(v["resource"]["process.pid"], 42);
        let line = format_json(&s);
        assert!(!line.contains('\n'));
        assert!(line.starts_with("{\"trace_id\":"), "field order is stable");
        let mut root = s.clone();
        root.parent_span_id = [0; 8];
        let v: serde_json::Value = serde_json::from_str(&format_json(&root)).unwrap();
        assert!(v["parent_span_id"].is_null());
    }
}
