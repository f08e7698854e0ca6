//! OTLP traces written straight from [`Span`]s to protobuf bytes.
//!
//! The generated `opentelemetry-proto` types own every string and id, so sending a batch
//! through them copied each span once more (ids into `Vec`s, every attribute key and
//! value into a `String`), encoded that copy, then freed it: a quarter of the agent's
//! CPU under load (perf, nginx at saturation). There is no crate that encodes borrowed
//! data into OTLP, so the few messages a trace request needs are written here by hand
//! with prost's varint and key helpers. The bytes are an `ExportTraceServiceRequest`
//! exactly as the generated types would encode it (the tests decode them with those
//! types and compare with [`super::otlp::to_request`], which stays the reference).
//!
//! Field numbers are from opentelemetry-proto's `trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::otlp::{FLAG_HAS_IS_REMOTE, FLAG_IS_REMOTE, SCOPE_NAME, SCOPE_VERSION};
use crate::resource::Resource;
use crate::span::{Span, SpanKind, SpanStatus, Value};

/// An encoded `ExportTraceServiceRequest` (the message's fields, no length prefix):
/// what the trace exporter sends over gRPC and HTTP. Cheap to clone (retries).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedTraces {
    pub bytes: Bytes,
}

impl prost::Message for EncodedTraces {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.bytes);
    }

    /// Never decoded by the agent; a decode skips every field.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.bytes.len()
    }

    fn clear(&mut self) {
        self.bytes = Bytes::new();
    }
}

/// Length of a length-delimited field `tag` whose content is `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_delimited_head(tag: u32, len: usize, buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(tag: u32, v: &[u8], buf: &mut Vec<u8>) {
    put_delimited_head(tag, v.len(), buf);
    buf.put_slice(v);
}

/// `AnyValue` content: string_value = 1, int_value = 3 (a oneof: written even when
/// empty or zero).
fn any_value_len(v: &Value) -> usize {
    match v {
        Value::Str(s) => delimited_len(1, s.len()),
        Value::Static(s) => delimited_len(1, s.len()),
        Value::Int(i) => key_len(3) + encoded_len_varint(*i as u64),
    }
}

/// `KeyValue` content: key = 1, value = 2.
fn key_value_len(key: &str, v: &Value) -> usize {
    let key = if key.is_empty() {
        0
    } else {
        delimited_len(1, key.len())
    };
    key + delimited_len(2, any_value_len(v))
}

fn put_key_value(tag: u32, key: &str, v: &Value, buf: &mut Vec<u8>) {
    put_delimited_head(tag, key_value_len(key, v), buf);
    if !key.is_empty() {
        put_bytes(1, key.as_bytes(), buf);
    }
    put_delimited_head(2, any_value_len(v), buf);
    match v {
        Value::Str(s) => put_bytes(1, s.as_bytes(), buf),
        Value::Static(s) => put_bytes(1, s.as_bytes(), buf),
        Value::Int(i) => {
            encode_key(3, WireType::Varint, buf);
            encode_varint(*i as u64, buf);
        }
    }
}

/// The OTLP flags of a span: its W3C flags, and whether its parent is remote (a server
/// span's parent is always in another process: an incoming traceparent, or the client
/// span the agent joined it to; a client span's parent is a server span of its own).
pub(super) fn span_flags(s: &Span) -> u32 {
    let remote = if s.parent_span_id != [0; 8] && s.kind == SpanKind::Server {
        FLAG_IS_REMOTE
    } else {
        0
    };
    u32::from(s.flags) | FLAG_HAS_IS_REMOTE | remote
}

fn kind_number(k: SpanKind) -> u64 {
    // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3.
    match k {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    }
}

/// `Status` content of an error span: code = 3 (STATUS_CODE_ERROR = 2), no message.
const ERROR_STATUS_LEN: usize = 2;

/// `Span` content, in the fields periscope sets: trace_id = 1, span_id = 2,
/// trace_state = 3, parent_span_id = 4, name = 5, kind = 6, start = 7 and end = 8
/// (fixed64), attributes = 9, status = 15, flags = 16 (fixed32). Empty and zero
/// fields are left out, as proto3 encoders do.
fn span_len(s: &Span) -> usize {
    let mut n = delimited_len(1, s.trace_id.len()) + delimited_len(2, s.span_id.len());
    if !s.trace_state.is_empty() {
        n += delimited_len(3, s.trace_state.len());
    }
    if s.parent_span_id != [0; 8] {
        n += delimited_len(4, s.parent_span_id.len());
    }
    if !s.name.is_empty() {
        n += delimited_len(5, s.name.len());
    }
    n += key_len(6) + encoded_len_varint(kind_number(s.kind));
    if s.start_unix_ns != 0 {
        n += key_len(7) + 8;
    }
    if s.end_unix_ns != 0 {
        n += key_len(8) + 8;
    }
    for (k, v) in &s.attributes {
        n += delimited_len(9, key_value_len(k, v));
    }
    if s.status == SpanStatus::Error {
        n += delimited_len(15, ERROR_STATUS_LEN);
    }
    n + key_len(16) + 4
}

fn put_span(s: &Span, len: usize, buf: &mut Vec<u8>) {
    // ScopeSpans.spans = 2.
    put_delimited_head(2, len, buf);
    put_bytes(1, &s.trace_id, buf);
    put_bytes(2, &s.span_id, buf);
    if !s.trace_state.is_empty() {
        put_bytes(3, s.trace_state.as_bytes(), buf);
    }
    if s.parent_span_id != [0; 8] {
        put_bytes(4, &s.parent_span_id, buf);
    }
    if !s.name.is_empty() {
        put_bytes(5, s.name.as_bytes(), buf);
    }
    encode_key(6, WireType::Varint, buf);
    encode_varint(kind_number(s.kind), buf);
    if s.start_unix_ns != 0 {
        encode_key(7, WireType::SixtyFourBit, buf);
        buf.put_u64_le(s.start_unix_ns);
    }
    if s.end_unix_ns != 0 {
        encode_key(8, WireType::SixtyFourBit, buf);
        buf.put_u64_le(s.end_unix_ns);
    }
    for (k, v) in &s.attributes {
        put_key_value(9, k, v, buf);
    }
    if s.status == SpanStatus::Error {
        put_delimited_head(15, ERROR_STATUS_LEN, buf);
        encode_key(3, WireType::Varint, buf);
        encode_varint(2, buf);
    }
    encode_key(16, WireType::ThirtyTwoBit, buf);
    buf.put_u32_le(span_flags(s));
}

/// `InstrumentationScope` content: name = 1, version = 2.
fn scope_len() -> usize {
    delimited_len(1, SCOPE_NAME.len()) + delimited_len(2, SCOPE_VERSION.len())
}

/// Encodes one request, one `ResourceSpans` per process (spans sharing an
/// `Arc<Resource>`, or equal resources) in order of first appearance, as
/// [`super::otlp::to_request`] groups them.
pub fn encode(spans: &[Span]) -> EncodedTraces {
    let mut groups: Vec<(&Arc<Resource>, Vec<usize>)> = Vec::new();
    // Fast path by pointer: the span stage shares one Arc per process.
    let mut by_ptr: HashMap<*const Resource, usize> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let g = *by_ptr.entry(Arc::as_ptr(&s.resource)).or_insert_with(|| {
            match groups.iter().position(|(r, _)| ***r == *s.resource) {
                Some(g) => g,
                None => {
                    groups.push((&s.resource, Vec::new()));
                    groups.len() - 1
                }
            }
        });
        groups[g].1.push(i);
    }
    let lens: Vec<usize> = spans.iter().map(span_len).collect();
    let mut buf = Vec::with_capacity(lens.iter().sum::<usize>() + 64 * spans.len() + 1024);
    for (resource, members) in groups {
        let attrs: Vec<(&str, Value)> = resource.typed_attributes().collect();
        let resource_len: usize = attrs
            .iter()
            .map(|(k, v)| delimited_len(1, key_value_len(k, v)))
            .sum();
        let scope_spans_len = delimited_len(1, scope_len())
            + members
                .iter()
                .map(|&i| delimited_len(2, lens[i]))
                .sum::<usize>();
        let resource_spans_len = delimited_len(1, resource_len) + delimited_len(2, scope_spans_len);
        // ExportTraceServiceRequest.resource_spans = 1.
        put_delimited_head(1, resource_spans_len, &mut buf);
        // ResourceSpans.resource = 1: Resource.attributes = 1.
        put_delimited_head(1, resource_len, &mut buf);
        for (k, v) in &attrs {
            put_key_value(1, k, v, &mut buf);
        }
        // ResourceSpans.scope_spans = 2: scope = 1, spans = 2.
        put_delimited_head(2, scope_spans_len, &mut buf);
        put_delimited_head(1, scope_len(), &mut buf);
        put_bytes(1, SCOPE_NAME.as_bytes(), &mut buf);
        put_bytes(2, SCOPE_VERSION.as_bytes(), &mut buf);
        for &i in &members {
            put_span(&spans[i], lens[i], &mut buf);
        }
    }
    EncodedTraces {
        bytes: Bytes::from(buf),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::export::otlp::to_request;
    use crate::export::test_support::{resource, sample_span};

    fn decoded(e: &EncodedTraces) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(&e.bytes[..]).expect("valid protobuf")
    }

    #[test]
    fn same_request_as_the_generated_types() {
        let a = resource(10, "a");
        let b = resource(20, "b");
        let a_copy = Arc::new((*a).clone());
        let mut root = sample_span(b.clone(), 5);
        root.parent_span_id = [0; 8];
        root.status = SpanStatus::Unset;
        root.trace_state.clear();
        root.kind = SpanKind::Client;
        let spans = [
            sample_span(a.clone(), 1),
            sample_span(b.clone(), 2),
            sample_span(a.clone(), 3),
            sample_span(a_copy, 4),
            root,
        ];
        let e = encode(&spans);
        assert_eq!(decoded(&e), to_request(&spans));
        // And byte for byte as prost writes it, but for field order within a span
        // (prost writes `flags` where the .proto declares it): the lengths agree.
        assert_eq!(e.bytes.len(), to_request(&spans).encoded_len());
        assert_eq!(encode(&[]).bytes.len(), 0);
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            ".{0,300}".prop_map(Value::Str),
            proptest::sample::select(&["GET", "1.1", "https", "", "_OTHER"][..])
                .prop_map(Value::Static),
            any::<i64>().prop_map(Value::Int),
        ]
    }

    const KEYS: &[&str] = &["http.request.method", "url.path", "server.port", "x"];

    proptest! {
        /// Any span the agent can build encodes as the generated types would.
        #[test]
        fn any_span_round_trips(
            ids in any::<([u8; 16], [u8; 8], [u8; 8])>(),
            flags in any::<u8>(),
            server in any::<bool>(),
            error in any::<bool>(),
            name in ".{0,200}",
            state in "[a-z=,]{0,40}",
            times in any::<(u64, u64)>(),
            attrs in proptest::collection::vec((0..KEYS.len(), value()), 0..20),
            pids in proptest::collection::vec(1u32..4, 1..6),
        ) {
            let resources: Vec<_> = (1..4).map(|p| resource(p, "svc")).collect();
            let spans: Vec<Span> = pids
                .iter()
                .map(|&p| {
                    let mut s = sample_span(resources[p as usize - 1].clone(), p as u8);
                    s.trace_id = ids.0;
                    s.span_id = ids.1;
                    s.parent_span_id = ids.2;
                    s.flags = flags;
                    s.kind = if server { SpanKind::Server } else { SpanKind::Client };
                    s.status = if error { SpanStatus::Error } else { SpanStatus::Unset };
                    s.name = name.clone();
                    s.trace_state = state.clone();
                    (s.start_unix_ns, s.end_unix_ns) = times;
                    s.attributes = attrs.iter().map(|(k, v)| (KEYS[*k], v.clone())).collect();
                    s
                })
                .collect();
            let e = encode(&spans);
            prop_assert_eq!(decoded(&e), to_request(&spans));
            prop_assert_eq!(e.bytes.len(), to_request(&spans).encoded_len());
        }
    }
}
