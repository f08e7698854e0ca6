//! Tracker tests over synthetic kernel events (the kernel boundary is faked here; the
//! e2e suites in tests/ drive the real one).

use std::{net::Ipv4Addr, sync::Arc};

use periscope_common::{
    AF_INET, ConnOpenEvent, DIR_EGRESS, DIR_INGRESS, DataEvent, EventHeader, EventKind,
    GoConnEvent, NO_FD, ROLE_CLIENT, ROLE_SERVER,
};

use super::*;
use crate::{
    metrics::Metrics,
    resource::ResourceConfig,
    route::RouteConfig,
    sampling::{Sampler, SamplerConfig},
    span::{Span, SpanKind, SpanStatus, Value},
};

fn tracker() -> (Tracker, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let (resource, _) = ResourceConfig::from_values(Some("svc"), None, "host".into());
    let t = Tracker::new(TrackerConfig {
        resource,
        routes: RouteConfig::default(),
        sampler: Sampler::new(SamplerConfig::default()),
        metrics: metrics.clone(),
    });
    (t, metrics)
}

fn hdr(kind: EventKind, pid: u32, tid: u32, ts: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        _pad: 0,
        ts_ns: ts,
        pid_tgid: ((pid as u64) << 32) | tid as u64,
    }
}

fn localhost() -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&Ipv4Addr::LOCALHOST.octets());
    a
}

/// A client socket of `pid` from 127.0.0.1:`local` to 127.0.0.1:`server`.
fn connect(pid: u32, fd: u32, local: u16, server: u16, ts: u64) -> ConnOpenEvent {
    ConnOpenEvent {
        header: hdr(EventKind::ConnOpen, pid, pid, ts),
        fd,
        role: ROLE_CLIENT,
        listen_fd: NO_FD,
        family: AF_INET,
        peer_port: server,
        peer_addr: localhost(),
        local_family: AF_INET,
        local_port: local,
        error: 0,
        local_addr: localhost(),
        start_ns: 0,
    }
}

/// A server socket of `pid` accepted from 127.0.0.1:`peer`.
fn accept(pid: u32, fd: u32, peer: u16, ts: u64) -> ConnOpenEvent {
    ConnOpenEvent {
        header: hdr(EventKind::ConnOpen, pid, pid, ts),
        fd,
        role: ROLE_SERVER,
        listen_fd: NO_FD,
        family: AF_INET,
        peer_port: peer,
        peer_addr: localhost(),
        local_family: 0,
        local_port: 0,
        error: 0,
        local_addr: [0; 16],
        start_ns: 0,
    }
}

struct Run {
    t: Tracker,
    spans: Vec<Span>,
}

impl Run {
    fn new() -> Self {
        Run {
            t: tracker().0,
            spans: Vec::new(),
        }
    }

    fn open(&mut self, ev: ConnOpenEvent) {
        let spans = &mut self.spans;
        self.t.handle(Event::ConnOpen(ev), &mut |s| spans.push(s));
    }

    fn data(&mut self, pid: u32, tid: u32, fd: u32, dir: u32, ts: u64, bytes: &[u8]) {
        let ev = DataEvent {
            header: hdr(EventKind::Data, pid, tid, ts),
            fd,
            direction: dir,
            total_len: bytes.len() as u64,
            head_len: bytes.len() as u32,
            tail_len: 0,
            syscall: 1,
            class: 0,
        };
        let spans = &mut self.spans;
        self.t.handle(
            Event::Data {
                ev,
                head: bytes,
                tail: &[],
            },
            &mut |s| spans.push(s),
        );
    }

    /// A syscall that moved `total` bytes of which nothing was captured (a receive with
    /// `MSG_TRUNC`, or body the kernel's framing skipped).
    fn count_only(&mut self, pid: u32, fd: u32, dir: u32, ts: u64, total: u64) {
        let ev = DataEvent {
            header: hdr(EventKind::Data, pid, pid, ts),
            fd,
            direction: dir,
            total_len: total,
            head_len: 0,
            tail_len: 0,
            syscall: periscope_common::SYS_RECVFROM,
            class: 0,
        };
        let spans = &mut self.spans;
        self.t.handle(
            Event::Data {
                ev,
                head: &[],
                tail: &[],
            },
            &mut |s| spans.push(s),
        );
    }

    /// One request from client socket `(pid, fd)` `c` to server socket `s`, both
    /// traced, as the four syscalls moving it (thread id = pid).
    fn exchange(&mut self, c: (u32, u32), s: (u32, u32), ts: u64, path: &str, resp: &[u8]) {
        self.data(c.0, c.0, c.1, DIR_EGRESS, ts, &req(path));
        self.data(s.0, s.0, s.1, DIR_INGRESS, ts + 1, &req(path));
        self.data(s.0, s.0, s.1, DIR_EGRESS, ts + 2, resp);
        self.data(c.0, c.0, c.1, DIR_INGRESS, ts + 3, resp);
    }

    fn go(&mut self, kind: EventKind, pid: u32, fd: u32, goid: u64, parent: u64) {
        let ev = GoConnEvent {
            header: hdr(kind, pid, pid, 0),
            goid,
            parent_goid: parent,
            fd,
            _pad: 0,
        };
        let spans = &mut self.spans;
        let e = match kind {
            EventKind::GoHttpServe => Event::GoHttpServe(ev),
            _ => Event::GoHttpRoundTrip(ev),
        };
        self.t.handle(e, &mut |s| spans.push(s));
    }

    fn find(&self, kind: SpanKind, path: &str) -> &Span {
        self.spans
            .iter()
            .find(|s| {
                s.kind == kind
                    && match (
                        s.attr("url.path").and_then(Value::as_str),
                        s.attr("url.full").and_then(Value::as_str),
                    ) {
                        (Some(p), _) => p == path,
                        (_, Some(u)) => u.ends_with(path),
                        _ => false,
                    }
            })
            .unwrap_or_else(|| panic!("no {kind:?} span for {path} in {:#?}", self.spans))
    }
}

fn req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: backend\r\n\r\n").into_bytes()
}

const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn server_span_is_child_of_the_traced_client_that_sent_it() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    r.open(connect(a, 5, 40_000, 8080, 1));
    r.open(accept(b, 7, 40_000, 2));
    // Keep-alive: three requests on one connection, each paired with its own.
    for (i, path) in ["/one", "/two", "/three"].iter().enumerate() {
        r.exchange((a, 5), (b, 7), 10 + i as u64 * 10, path, RESP);
    }
    assert_eq!(r.spans.len(), 6);
    for path in ["/one", "/two", "/three"] {
        let c = r.find(SpanKind::Client, path).clone();
        let s = r.find(SpanKind::Server, path);
        assert_eq!(s.trace_id, c.trace_id, "{path}");
        assert_eq!(s.parent_span_id, c.span_id, "{path}");
    }
    assert_eq!(r.t.stats().joined, 3);
}

#[test]
fn no_join_without_a_traced_client_end_or_with_a_different_request() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    // Client on local port 40001; the server's peer is port 40002: another socket.
    r.open(connect(a, 5, 40_001, 8080, 1));
    r.open(accept(b, 7, 40_002, 2));
    r.exchange((a, 5), (b, 7), 10, "/x", RESP);
    let s = r.find(SpanKind::Server, "/x");
    assert_eq!(s.parent_span_id, [0; 8]);
    // Same socket pair, but the bytes disagree: never join on the count alone.
    r.open(connect(a, 6, 40_003, 8080, 20));
    r.open(accept(b, 8, 40_003, 21));
    r.data(a, a, 6, DIR_EGRESS, 30, &req("/y"));
    r.data(b, b, 8, DIR_INGRESS, 31, &req("/z"));
    r.data(b, b, 8, DIR_EGRESS, 32, RESP);
    r.data(a, a, 6, DIR_INGRESS, 33, RESP);
    assert_eq!(r.find(SpanKind::Server, "/z").parent_span_id, [0; 8]);
    assert_eq!(r.t.stats().joined, 0);
}

#[test]
fn go_client_calls_are_children_of_the_goroutine_serving_the_request() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    r.t.disable_thread_context(p);
    r.open(accept(p, 7, 50_000, 1));
    r.go(EventKind::GoHttpServe, p, 7, 42, 1);
    r.data(p, 100, 7, DIR_INGRESS, 10, &req("/front"));
    // The handler (goroutine 42) calls out; bytes move on other threads.
    r.open(connect(p, 9, 50_001, 9090, 11));
    r.go(EventKind::GoHttpRoundTrip, p, 9, 42, 1);
    r.data(p, 101, 9, DIR_EGRESS, 12, &req("/direct"));
    r.data(p, 102, 9, DIR_INGRESS, 13, RESP);
    // A goroutine the handler spawned (parentGoid 42) calls out on the same socket.
    r.go(EventKind::GoHttpRoundTrip, p, 9, 77, 42);
    r.data(p, 103, 9, DIR_EGRESS, 14, &req("/spawned"));
    r.data(p, 102, 9, DIR_INGRESS, 15, RESP);
    // A goroutine unrelated to any request: a root.
    r.go(EventKind::GoHttpRoundTrip, p, 9, 500, 3);
    r.data(p, 103, 9, DIR_EGRESS, 16, &req("/background"));
    r.data(p, 102, 9, DIR_INGRESS, 17, RESP);
    r.data(p, 100, 7, DIR_EGRESS, 18, RESP);
    let server = r.find(SpanKind::Server, "/front").clone();
    for path in ["/direct", "/spawned"] {
        let c = r.find(SpanKind::Client, path);
        assert_eq!(c.parent_span_id, server.span_id, "{path}");
        assert_eq!(c.trace_id, server.trace_id, "{path}");
    }
    let bg = r.find(SpanKind::Client, "/background");
    assert_eq!(bg.parent_span_id, [0; 8]);
    assert_ne!(bg.trace_id, server.trace_id);
}

#[test]
fn a_finished_request_is_no_longer_a_goroutines_context() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    r.t.disable_thread_context(p);
    r.open(accept(p, 7, 50_000, 1));
    r.go(EventKind::GoHttpServe, p, 7, 42, 1);
    r.data(p, 100, 7, DIR_INGRESS, 10, &req("/front"));
    r.data(p, 100, 7, DIR_EGRESS, 11, RESP);
    r.open(connect(p, 9, 50_001, 9090, 12));
    r.go(EventKind::GoHttpRoundTrip, p, 9, 42, 1);
    r.data(p, 101, 9, DIR_EGRESS, 13, &req("/late"));
    r.data(p, 102, 9, DIR_INGRESS, 14, RESP);
    assert_eq!(r.find(SpanKind::Client, "/late").parent_span_id, [0; 8]);
}

#[test]
fn failed_connect_is_an_error_client_span_under_the_serving_thread() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    r.open(accept(p, 7, 50_000, 1));
    r.data(p, 300, 7, DIR_INGRESS, 10, &req("/call"));
    let mut fail = connect(p, 9, 50_001, 9, 20);
    fail.header = hdr(EventKind::ConnFail, p, 300, 25);
    fail.error = 111;
    fail.start_ns = 20;
    let spans = &mut r.spans;
    r.t.handle(Event::ConnFail(fail), &mut |s| spans.push(s));
    r.data(
        p,
        300,
        7,
        DIR_EGRESS,
        30,
        b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    );
    let server = r.find(SpanKind::Server, "/call").clone();
    let c = r
        .spans
        .iter()
        .find(|s| s.name == "connect")
        .expect("connect span");
    assert_eq!(c.kind, SpanKind::Client);
    assert_eq!(c.status, SpanStatus::Error);
    assert_eq!(
        c.attr("error.type"),
        Some(&Value::Str("connection_refused".into()))
    );
    assert_eq!(c.attr("server.port"), Some(&Value::Int(9)));
    assert_eq!(c.parent_span_id, server.span_id);
    assert_eq!(c.end_unix_ns - c.start_unix_ns, 5);
    assert_eq!(r.t.stats().connect_failures, 1);
}

#[test]
fn joined_calls_feed_the_service_graph() {
    let (t, metrics) = tracker();
    let mut r = Run {
        t,
        spans: Vec::new(),
    };
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    r.open(connect(a, 5, 40_000, 8080, 1));
    r.open(accept(b, 7, 40_000, 2));
    for i in 0..4u64 {
        let resp: &[u8] = if i == 0 {
            b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
        } else {
            RESP
        };
        r.exchange((a, 5), (b, 7), 10 + i * 10, "/e", resp);
    }
    let (edges, overflow) = metrics.edges();
    assert_eq!(overflow, 0);
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].stats.requests, 4);
    assert_eq!(edges[0].stats.failed, 1);
    assert_eq!(edges[0].stats.server_seconds.count, 4);
}

#[test]
fn an_event_loop_thread_turns_thread_context_off_instead_of_guessing() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    // One thread reads two requests on two connections before answering either.
    r.open(accept(p, 7, 50_000, 1));
    r.open(accept(p, 8, 50_001, 2));
    r.data(p, 300, 7, DIR_INGRESS, 10, &req("/a"));
    r.data(p, 300, 8, DIR_INGRESS, 11, &req("/b"));
    r.open(connect(p, 9, 50_002, 9090, 12));
    r.data(p, 300, 9, DIR_EGRESS, 13, &req("/upstream"));
    r.data(p, 300, 9, DIR_INGRESS, 14, RESP);
    r.data(p, 300, 7, DIR_EGRESS, 15, RESP);
    r.data(p, 300, 8, DIR_EGRESS, 16, RESP);
    assert_eq!(r.find(SpanKind::Client, "/upstream").parent_span_id, [0; 8]);
    assert_eq!(r.t.stats().event_loop_processes, 1);
}

#[test]
fn a_thread_per_request_server_keeps_its_context_across_keep_alive_and_dropped_requests() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    // A request whose client went away unanswered must not block the thread's next one.
    r.open(accept(p, 7, 50_000, 1));
    r.data(p, 300, 7, DIR_INGRESS, 2, &req("/gone"));
    let spans = &mut r.spans;
    r.t.handle(
        Event::ConnClose(periscope_common::ConnCloseEvent {
            header: hdr(EventKind::ConnClose, p, 300, 3),
            fd: 7,
            _pad: 0,
        }),
        &mut |s| spans.push(s),
    );
    r.open(accept(p, 8, 50_001, 4));
    for (i, path) in ["/a", "/b"].iter().enumerate() {
        let ts = 10 + i as u64 * 10;
        r.data(p, 300, 8, DIR_INGRESS, ts, &req(path));
        r.open(connect(p, 20 + i as u32, 50_010 + i as u16, 9090, ts + 1));
        let up = format!("/up{path}");
        r.data(p, 300, 20 + i as u32, DIR_EGRESS, ts + 2, &req(&up));
        r.data(p, 300, 20 + i as u32, DIR_INGRESS, ts + 3, RESP);
        r.data(p, 300, 8, DIR_EGRESS, ts + 4, RESP);
    }
    for path in ["/a", "/b"] {
        let server = r.find(SpanKind::Server, path).clone();
        let c = r.find(SpanKind::Client, &format!("/up{path}"));
        assert_eq!(c.parent_span_id, server.span_id, "{path}");
    }
    assert_eq!(r.t.stats().event_loop_processes, 0);
}

#[test]
fn grandchildren_of_a_handler_find_it_through_recorded_creations() {
    let mut r = Run::new();
    let p = std::process::id();
    r.t.add_process(p);
    r.t.disable_thread_context(p);
    // With --go-goroutine-events: 42 (handler) created 77, which created 99.
    for (goid, parent) in [(77u64, 42u64), (99, 77)] {
        r.t.goroutine_created(&periscope_common::GoroutineEvent {
            header: hdr(EventKind::GoroutineCreate, p, p, 1),
            goid,
            parent_goid: parent,
            gopc: 0,
            startpc: 0,
        });
    }
    r.open(accept(p, 7, 50_000, 1));
    r.go(EventKind::GoHttpServe, p, 7, 42, 1);
    r.data(p, 100, 7, DIR_INGRESS, 10, &req("/front"));
    r.open(connect(p, 9, 50_001, 9090, 11));
    // The probe reports 99 and its creator 77; 77 serves nothing, 42 does.
    r.go(EventKind::GoHttpRoundTrip, p, 9, 99, 77);
    r.data(p, 101, 9, DIR_EGRESS, 12, &req("/deep"));
    r.data(p, 102, 9, DIR_INGRESS, 13, RESP);
    r.data(p, 100, 7, DIR_EGRESS, 14, RESP);
    let server = r.find(SpanKind::Server, "/front").clone();
    assert_eq!(
        r.find(SpanKind::Client, "/deep").parent_span_id,
        server.span_id
    );
    // Once 77 exits its link is forgotten: no stale lineage.
    r.t.goroutine_exited(&periscope_common::GoroutineEvent {
        header: hdr(EventKind::GoroutineExit, p, p, 20),
        goid: 77,
        ..Default::default()
    });
    assert!(!r.t.go_parents.contains_key(&(p, 77)));
}

#[test]
fn a_service_port_in_front_of_the_target_port_still_joins() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    // The client dialed port 80 (a Service); the server listens on 8080 behind it.
    r.open(connect(a, 5, 40_000, 80, 1));
    let mut acc = accept(b, 7, 40_000, 2);
    acc.listen_fd = NO_FD;
    r.open(acc);
    if let Some(c) = r.t.conns.get_mut(&(b, 7)) {
        c.ends.local = Some("127.0.0.1:8080".parse().unwrap());
    }
    r.exchange((a, 5), (b, 7), 10, "/svc", RESP);
    let c = r.find(SpanKind::Client, "/svc").clone();
    assert_eq!(r.find(SpanKind::Server, "/svc").parent_span_id, c.span_id);
}

mod model;
mod pairing;

/// An HTTP/2 frame (9-byte header, payload).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend_from_slice(&[kind, flags]);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// A HEADERS frame with END_HEADERS (and END_STREAM when `end`), literal fields only so
/// that each encoding is independent of the ones before it.
fn h2_headers(stream: u32, end: bool, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (k, v) in fields {
        // Literal header field without indexing, new name (RFC 7541 6.2.2).
        block.push(0);
        block.push(k.len() as u8);
        block.extend_from_slice(k.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    h2_frame(1, 0x4 | if end { 0x1 } else { 0 }, stream, &block)
}

/// h2 streams join across processes by connection and stream id: the server's span of
/// stream 1 is the child of the client's span of stream 1, and so for stream 3, sent
/// before stream 1's answer; a server stream whose path differs from the client's
/// stream of that id joins nothing.
#[test]
fn h2_server_stream_is_child_of_the_traced_client_stream() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    r.open(connect(a, 5, 40_000, 8443, 1));
    r.open(accept(b, 7, 40_000, 2));
    let mut hello = crate::h2::PREFACE.to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    let get = |stream: u32, path: &str| {
        h2_headers(
            stream,
            true,
            &[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", path),
                (":authority", "backend"),
            ],
        )
    };
    let ok = |stream: u32| {
        let mut v = h2_headers(stream, false, &[(":status", "200")]);
        v.extend(h2_frame(0, 1, stream, b"ok"));
        v
    };
    let mut first = hello.clone();
    first.extend(get(1, "/one"));
    // The client opens streams 1 and 3 (and 5, which the server reads as another
    // path: bytes the two ends disagree on never join).
    r.data(a, a, 5, DIR_EGRESS, 10, &first);
    r.data(b, b, 7, DIR_INGRESS, 11, &first);
    r.data(b, b, 7, DIR_EGRESS, 12, &h2_frame(4, 0, 0, &[]));
    r.data(a, a, 5, DIR_INGRESS, 13, &h2_frame(4, 0, 0, &[]));
    r.data(a, a, 5, DIR_EGRESS, 20, &get(3, "/two"));
    r.data(b, b, 7, DIR_INGRESS, 21, &get(3, "/two"));
    r.data(a, a, 5, DIR_EGRESS, 22, &get(5, "/three"));
    r.data(b, b, 7, DIR_INGRESS, 23, &get(5, "/other"));
    for (i, stream) in [3u32, 1, 5].into_iter().enumerate() {
        let ts = 30 + 10 * i as u64;
        r.data(b, b, 7, DIR_EGRESS, ts, &ok(stream));
        r.data(a, a, 5, DIR_INGRESS, ts + 1, &ok(stream));
    }
    assert_eq!(r.spans.len(), 6, "{:#?}", r.spans);
    for path in ["/one", "/two"] {
        let c = r.find(SpanKind::Client, path).clone();
        let s = r.find(SpanKind::Server, path);
        assert_eq!(s.trace_id, c.trace_id, "{path}");
        assert_eq!(s.parent_span_id, c.span_id, "{path}");
    }
    let c = r.find(SpanKind::Client, "/three").clone();
    let s = r.find(SpanKind::Server, "/other");
    assert_ne!(s.trace_id, c.trace_id);
    assert_eq!(s.parent_span_id, [0; 8]);
    assert_eq!(r.t.stats().joined, 2);
}

/// A server-streaming call the client cancels (RST_STREAM) and whose connection it then
/// closes, all before the server reads the reset: the server's span still joins the
/// client's, from what the closed connection left.
#[test]
fn h2_stream_reset_and_closed_by_the_client_still_joins() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    r.open(connect(a, 5, 40_002, 8443, 1));
    r.open(accept(b, 7, 40_002, 2));
    let mut first = crate::h2::PREFACE.to_vec();
    first.extend(h2_frame(4, 0, 0, &[]));
    first.extend(h2_headers(
        1,
        true,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Watch"),
            ("content-type", "application/grpc"),
        ],
    ));
    let mut answer = h2_frame(4, 0, 0, &[]);
    answer.extend(h2_headers(
        1,
        false,
        &[(":status", "200"), ("content-type", "application/grpc")],
    ));
    answer.extend(h2_frame(0, 0, 1, &[0, 0, 0, 0, 2, 8, 1]));
    let reset = h2_frame(3, 0, 1, &8u32.to_be_bytes());
    r.data(a, a, 5, DIR_EGRESS, 10, &first);
    r.data(b, b, 7, DIR_INGRESS, 11, &first);
    r.data(b, b, 7, DIR_EGRESS, 12, &answer);
    r.data(a, a, 5, DIR_INGRESS, 13, &answer);
    r.data(a, a, 5, DIR_EGRESS, 14, &reset);
    let spans = &mut r.spans;
    r.t.handle(
        Event::ConnClose(periscope_common::ConnCloseEvent {
            header: hdr(EventKind::ConnClose, a, a, 15),
            fd: 5,
            _pad: 0,
        }),
        &mut |s| spans.push(s),
    );
    r.data(b, b, 7, DIR_INGRESS, 16, &reset);
    let path = "/grpc.health.v1.Health/Watch";
    let c = r.find(SpanKind::Client, path).clone();
    let s = r
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Server)
        .expect("server span");
    assert_eq!(s.trace_id, c.trace_id);
    assert_eq!(s.parent_span_id, c.span_id);
    assert_eq!(r.t.stats().joined, 1);
}

/// h2c by Upgrade (RFC 7540 §3.2), both ends traced: the HTTP/1.1 request that asks is
/// answered on stream 1 as HTTP/2 (one span per end, joined, protocol version 2, its
/// status and body size from the HTTP/2 frames), the streams after it as for prior
/// knowledge. The server writes its `101` and first frames in one write (the client
/// reads them in two), so the bytes after the `101` must reach the HTTP/2 session.
#[test]
fn h2c_upgrade_answers_the_asking_request_on_stream_1() {
    let mut r = Run::new();
    let (a, b) = (std::process::id(), 1);
    r.t.add_process(a);
    r.t.add_process(b);
    r.open(connect(a, 5, 40_004, 8080, 1));
    r.open(accept(b, 7, 40_004, 2));
    let ask = b"GET /up HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let switch = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
    let mut frames = h2_frame(4, 0, 0, &[]);
    frames.extend(h2_headers(1, false, &[(":status", "404")]));
    frames.extend(h2_frame(0, 1, 1, b"nothing"));
    let mut written = switch.to_vec();
    written.extend(&frames);
    let mut preface = crate::h2::PREFACE.to_vec();
    preface.extend(h2_frame(4, 0, 0, &[]));
    preface.extend(h2_headers(
        3,
        true,
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/next"),
            (":authority", "backend"),
        ],
    ));
    let mut next = h2_headers(3, false, &[(":status", "200")]);
    next.extend(h2_frame(0, 1, 3, b"ok"));
    r.data(a, a, 5, DIR_EGRESS, 10, ask);
    r.data(b, b, 7, DIR_INGRESS, 11, ask);
    r.data(b, b, 7, DIR_EGRESS, 12, &written);
    r.data(a, a, 5, DIR_INGRESS, 13, switch);
    r.data(a, a, 5, DIR_INGRESS, 14, &frames);
    r.data(a, a, 5, DIR_EGRESS, 15, &preface);
    r.data(b, b, 7, DIR_INGRESS, 16, &preface);
    r.data(b, b, 7, DIR_EGRESS, 17, &next);
    r.data(a, a, 5, DIR_INGRESS, 18, &next);
    assert_eq!(r.spans.len(), 4, "{:#?}", r.spans);
    for (path, status, body) in [("/up", 404, 7), ("/next", 200, 2)] {
        let c = r.find(SpanKind::Client, path).clone();
        let s = r.find(SpanKind::Server, path);
        assert_eq!(s.trace_id, c.trace_id, "{path}");
        assert_eq!(s.parent_span_id, c.span_id, "{path}");
        for span in [&c, s] {
            assert_eq!(
                span.attr("http.response.status_code"),
                Some(&Value::Int(status)),
                "{path}"
            );
            assert_eq!(
                span.attr("network.protocol.version"),
                Some(&Value::Str("2".into())),
                "{path}"
            );
            assert_eq!(
                span.attr("http.response.body.size"),
                Some(&Value::Int(body)),
                "{path}"
            );
        }
    }
    let stats = r.t.stats();
    assert_eq!((stats.h2_upgrades, stats.h2_conns), (2, 2));
    assert_eq!(stats.sockets_muted + r.t.take_mutes().count() as u64, 0);
}

/// A `101` to another protocol (WebSocket), or one granting h2c to a request that did
/// not ask for it, is not HTTP/2: the connection goes passthrough as before.
#[test]
fn upgrade_to_anything_else_is_not_http2() {
    for (ask, grant) in [
        ("websocket", "websocket"),
        ("websocket", "h2c"),
        ("h2c", "websocket"),
    ] {
        let mut r = Run::new();
        let b = 1;
        r.t.add_process(b);
        r.open(accept(b, 7, 40_006, 2));
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: {ask}\r\n\r\n"
        );
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {grant}\r\n\r\n"
        );
        let mut written = resp.into_bytes();
        written.extend(h2_frame(4, 0, 0, &[]));
        r.data(b, b, 7, DIR_INGRESS, 10, req.as_bytes());
        r.data(b, b, 7, DIR_EGRESS, 11, &written);
        assert_eq!(r.t.stats().h2_upgrades, 0, "{ask} -> {grant}");
        assert_eq!(r.spans.len(), 1, "{ask} -> {grant}: {:#?}", r.spans);
        assert_eq!(
            r.spans[0].attr("http.response.status_code"),
            Some(&Value::Int(101))
        );
    }
}

/// A connection older than the agent, in the middle of HTTP/2 (no preface, no open
/// event): no span is made from headers decoded against an unknown table, and each
/// stream that starts from then on is counted once, whichever end's frames show it.
/// Body bytes of an HTTP/1 connection joined mid-stream are not taken for frames.
#[test]
fn h2_joined_mid_stream_counts_its_streams() {
    let mut r = Run::new();
    let b = 1;
    r.t.add_process(b);
    let get = |stream: u32| {
        h2_headers(
            stream,
            true,
            &[(":method", "GET"), (":path", "/x"), (":authority", "a")],
        )
    };
    let ok = |stream: u32| {
        let mut v = h2_headers(stream, false, &[(":status", "200")]);
        v.extend(h2_frame(0, 1, stream, b"ok"));
        v
    };
    // The end of a DATA frame whose start came before the agent: not a frame start,
    // so it is not taken (nor parsed) as HTTP/2 yet.
    r.data(b, b, 9, DIR_INGRESS, 10, b"tail of a body");
    let mut first = h2_frame(8, 0, 0, &[0, 0, 1, 0]);
    first.extend(get(7));
    r.data(b, b, 9, DIR_INGRESS, 11, &first);
    r.data(b, b, 9, DIR_EGRESS, 12, &ok(7));
    r.data(b, b, 9, DIR_EGRESS, 13, &ok(5));
    r.data(b, b, 9, DIR_INGRESS, 14, &get(9));
    r.data(b, b, 9, DIR_EGRESS, 15, &ok(9));
    let spans = &mut r.spans;
    r.t.handle(
        Event::ConnClose(periscope_common::ConnCloseEvent {
            header: hdr(EventKind::ConnClose, b, b, 16),
            fd: 9,
            _pad: 0,
        }),
        &mut |s| spans.push(s),
    );
    assert!(r.spans.is_empty(), "{:#?}", r.spans);
    let st = r.t.stats();
    assert_eq!((st.h2_conns, st.h2_mid_stream), (1, 1));
    // Streams 7 and 9 started in view; 5 (answered late) began before.
    assert_eq!(st.h2.unplaced_mid_stream, 2);

    // An HTTP/1 connection joined mid-body, then a request: HTTP/1 as before.
    r.data(b, b, 11, DIR_INGRESS, 20, b"name=value&x=1");
    r.data(b, b, 11, DIR_INGRESS, 21, &req("/after"));
    r.data(b, b, 11, DIR_EGRESS, 22, RESP);
    assert_eq!(r.t.stats().h2_mid_stream, 1);
}

/// A grpc-go stream opening (`(*http2Client).NewStream` entry) by goroutine `goid` of `pid`, method `m`.
fn grpc_call(r: &mut Run, pid: u32, ts: u64, goid: u64, parent: u64, m: &str) {
    let mut method = [0; periscope_common::GO_RPC_METHOD_CAP];
    method[..m.len()].copy_from_slice(m.as_bytes());
    let ev = periscope_common::GoRpcCallEvent {
        header: hdr(EventKind::GoGrpcCall, pid, pid, ts),
        goid,
        parent_goid: parent,
        method_len: m.len() as u32,
        _pad: 0,
        method,
    };
    let spans = &mut r.spans;
    r.t.handle(Event::GoGrpcCall(Box::new(ev)), &mut |s| spans.push(s));
}

/// grpc-go writes a call's stream from its own writer goroutine: the goroutine that
/// made the call is known only from the call's probe. A client stream is the child of
/// the server span that goroutine (or its creator) serves when exactly one recorded
/// call of its method could have opened it, also when a traced server fixed the client
/// stream's identity first; two concurrent calls of one method, a call too old and a
/// stream with no call give no parent, and once the two concurrent calls' streams are
/// both seen, a later call of that method is linked again.
#[test]
fn grpc_client_streams_are_children_of_the_calling_goroutines_request() {
    let mut r = Run::new();
    let (p, b) = (std::process::id(), 1);
    r.t.add_process(p);
    r.t.add_process(b);
    r.t.disable_thread_context(p);
    // Two HTTP/1 requests served by goroutines 42 and 43.
    r.open(accept(p, 7, 50_000, 1));
    r.go(EventKind::GoHttpServe, p, 7, 42, 1);
    r.data(p, 100, 7, DIR_INGRESS, 10, &req("/front"));
    r.open(accept(p, 8, 50_010, 2));
    r.go(EventKind::GoHttpServe, p, 8, 43, 1);
    r.data(p, 100, 8, DIR_INGRESS, 11, &req("/front2"));
    // The gRPC client connection, its server traced too (process b).
    r.open(connect(p, 9, 50_001, 9090, 12));
    r.open(accept(b, 5, 50_001, 13));
    let call = |stream: u32, method: &str| {
        h2_headers(
            stream,
            true,
            &[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", method),
                ("content-type", "application/grpc"),
            ],
        )
    };
    let answer = |stream: u32| {
        let mut v = h2_headers(
            stream,
            false,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
        v.extend(h2_frame(0, 0, stream, &[0, 0, 0, 0, 0]));
        v.extend(h2_headers(stream, true, &[("grpc-status", "0")]));
        v
    };
    let ms = 1_000_000;
    // Goroutine 77, created by 42, calls A: stream 1, which the traced server reads
    // (fixing the client stream's identity) before the client reads the answer.
    grpc_call(&mut r, p, 14 * ms, 77, 42, "/pkg.Svc/A");
    grpc_call(&mut r, p, 14 * ms + 1, 77, 42, "/pkg.Svc/A"); // the probe again (stack growth)
    let mut first = crate::h2::PREFACE.to_vec();
    first.extend(h2_frame(4, 0, 0, &[]));
    first.extend(call(1, "/pkg.Svc/A"));
    r.data(p, 101, 9, DIR_EGRESS, 15 * ms, &first);
    r.data(b, b, 5, DIR_INGRESS, 16 * ms, &first);
    let mut back = h2_frame(4, 0, 0, &[]);
    back.extend(answer(1));
    r.data(b, b, 5, DIR_EGRESS, 17 * ms, &back);
    r.data(p, 102, 9, DIR_INGRESS, 18 * ms, &back);
    // Goroutines 42 and 43 both call B: streams 3 and 5 could be either's.
    grpc_call(&mut r, p, 20 * ms, 42, 1, "/pkg.Svc/B");
    grpc_call(&mut r, p, 21 * ms, 43, 1, "/pkg.Svc/B");
    r.data(p, 101, 9, DIR_EGRESS, 22 * ms, &call(3, "/pkg.Svc/B"));
    r.data(p, 101, 9, DIR_EGRESS, 23 * ms, &call(5, "/pkg.Svc/B"));
    r.data(p, 102, 9, DIR_INGRESS, 24 * ms, &answer(3));
    r.data(p, 102, 9, DIR_INGRESS, 25 * ms, &answer(5));
    // Two streams for the two waiting openings: both have theirs, so a later opening
    // of B (goroutine 78, created by 42) is its stream's only candidate.
    grpc_call(&mut r, p, 26 * ms, 78, 42, "/pkg.Svc/B");
    r.data(p, 101, 9, DIR_EGRESS, 27 * ms, &call(7, "/pkg.Svc/B"));
    r.data(p, 102, 9, DIR_INGRESS, 28 * ms, &answer(7));
    // Goroutine 43 calls C, whose stream starts 6 s later: too old to be its call.
    grpc_call(&mut r, p, 29 * ms, 43, 1, "/pkg.Svc/C");
    r.data(p, 101, 9, DIR_EGRESS, 6_026 * ms, &call(9, "/pkg.Svc/C"));
    r.data(p, 102, 9, DIR_INGRESS, 6_027 * ms, &answer(9));
    // D: no call recorded (another gRPC library, say).
    r.data(p, 101, 9, DIR_EGRESS, 6_028 * ms, &call(11, "/pkg.Svc/D"));
    r.data(p, 102, 9, DIR_INGRESS, 6_029 * ms, &answer(11));
    r.data(p, 100, 7, DIR_EGRESS, 6_030 * ms, RESP);
    r.data(p, 100, 8, DIR_EGRESS, 6_031 * ms, RESP);

    let front = r.find(SpanKind::Server, "/front").clone();
    let a: Vec<&Span> = r
        .spans
        .iter()
        .filter(|s| s.name.contains("pkg.Svc/A"))
        .collect();
    assert_eq!(a.len(), 2, "{:#?}", r.spans);
    let client_a = a.iter().find(|s| s.kind == SpanKind::Client).unwrap();
    let server_a = a.iter().find(|s| s.kind == SpanKind::Server).unwrap();
    assert_eq!(client_a.trace_id, front.trace_id);
    assert_eq!(client_a.parent_span_id, front.span_id);
    assert_eq!(server_a.parent_span_id, client_a.span_id);
    let clients = |m: &str| -> Vec<&Span> {
        r.spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client && s.name.contains(m))
            .collect()
    };
    let b = clients("pkg.Svc/B");
    assert_eq!(b.len(), 3, "{:#?}", r.spans);
    let parented: Vec<&&Span> = b.iter().filter(|s| s.parent_span_id != [0; 8]).collect();
    assert_eq!(parented.len(), 1, "{b:#?}");
    assert_eq!(parented[0].parent_span_id, front.span_id);
    for m in ["pkg.Svc/C", "pkg.Svc/D"] {
        let spans = clients(m);
        assert_eq!(spans.len(), 1, "{m}: {:#?}", r.spans);
        assert_eq!(spans[0].parent_span_id, [0; 8], "{m}");
        assert_ne!(spans[0].trace_id, front.trace_id, "{m}");
    }
    let st = r.t.stats();
    assert_eq!(st.grpc_calls_linked, 2);
    assert_eq!(st.grpc_calls_ambiguous, 2);
}
