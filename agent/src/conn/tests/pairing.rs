//! Pairing of requests with responses on one connection, including answers written
//! before the request's body was read, and what happens when pairing is lost.

use periscope_common::ConnCloseEvent;

use super::*;

const POST: &[u8] =
    b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\n";
const BODY: &[u8] = b"x=1";
const R405: &[u8] = b"HTTP/1.1 405 Not Allowed\r\nContent-Length: 4\r\n\r\nnope";
const R200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn server() -> (Run, u32) {
    let mut r = Run::new();
    let pid = std::process::id();
    r.t.add_process(pid);
    r.open(accept(pid, 7, 41_000, 1));
    (r, pid)
}

/// (method, path, status) of each span, in emission order.
fn lines(r: &Run) -> Vec<(String, String, i64)> {
    r.spans
        .iter()
        .map(|s| {
            let get = |k: &str| match s.attr(k) {
                Some(Value::Int(i)) => i.to_string(),
                Some(v) => v.as_str().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            let status = match s.attr("http.response.status_code") {
                Some(Value::Int(i)) => *i,
                _ => 0,
            };
            (get("http.request.method"), get("url.path"), status)
        })
        .collect()
}

fn close(r: &mut Run, pid: u32, ts: u64) {
    let ev = ConnCloseEvent {
        header: hdr(EventKind::ConnClose, pid, pid, ts),
        fd: 7,
        _pad: 0,
    };
    let spans = &mut r.spans;
    r.t.handle(Event::ConnClose(ev), &mut |s| spans.push(s));
}

fn line(m: &str, p: &str, status: i64) -> (String, String, i64) {
    (m.to_string(), p.to_string(), status)
}

/// Finding (issue 11): on one keep-alive connection, two POSTs answered 405 before
/// their bodies were read, then a GET: the second POST carried 200 and the GET the
/// next response's status.
#[test]
fn nginx_405_keepalive_status_shift() {
    let (mut r, pid) = server();
    let mut ts = 10;
    let mut next = || {
        ts += 10;
        ts
    };
    for _ in 0..2 {
        r.data(pid, pid, 7, DIR_INGRESS, next(), POST);
        r.data(pid, pid, 7, DIR_EGRESS, next(), R405);
        // The body is read (discarded) after the answer.
        r.data(pid, pid, 7, DIR_INGRESS, next(), BODY);
    }
    r.data(pid, pid, 7, DIR_INGRESS, next(), &req("/"));
    r.data(pid, pid, 7, DIR_EGRESS, next(), R200);
    assert_eq!(
        lines(&r),
        [
            line("POST", "/index.html", 405),
            line("POST", "/index.html", 405),
            line("GET", "/", 200),
        ]
    );
    let st = r.t.stats();
    assert_eq!((st.responses_without_request, st.unpaired_desync), (0, 0));
}

/// Finding (issue 11): on fresh connections every POST answered before its body was
/// read gave no span.
#[test]
fn nginx_post_fresh_connection_no_span() {
    let (mut r, pid) = server();
    r.data(pid, pid, 7, DIR_INGRESS, 10, POST);
    r.data(pid, pid, 7, DIR_EGRESS, 20, R405);
    r.data(pid, pid, 7, DIR_INGRESS, 30, BODY);
    close(&mut r, pid, 40);
    assert_eq!(lines(&r), [line("POST", "/index.html", 405)]);
    // The request's size is what was read, the whole body here.
    assert_eq!(
        r.spans[0].attr("http.request.body.size"),
        Some(&Value::Int(3))
    );
}

/// An early error (413, 417, ...) and a close without ever reading the body: the
/// exchange is what the server did, and its span says so.
#[test]
fn early_error_then_close_without_reading_the_body() {
    let (mut r, pid) = server();
    let head = b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
    r.data(pid, pid, 7, DIR_INGRESS, 10, head);
    r.data(
        pid,
        pid,
        7,
        DIR_EGRESS,
        20,
        b"HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    close(&mut r, pid, 30);
    assert_eq!(lines(&r), [line("PUT", "/up", 413)]);
    assert_eq!(r.t.stats().requests_without_response, 0);
}

/// lighttpd answers a chunked upload after reading part of it, then discards the rest
/// unread (recvfrom with MSG_TRUNC: a byte count, whose chunk-size lines the parser
/// cannot follow) and closes: the exchange is what the server did, and nothing after it
/// pairs on that connection.
#[test]
fn body_discarded_after_an_early_answer() {
    let (mut r, pid) = server();
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\nxx";
    r.data(pid, pid, 7, DIR_INGRESS, 10, head);
    r.data(pid, pid, 7, DIR_EGRESS, 20, R200);
    r.count_only(pid, 7, DIR_INGRESS, 30, 100_000);
    close(&mut r, pid, 40);
    assert_eq!(lines(&r), [line("POST", "/up", 200)]);
    assert_eq!(r.t.stats().requests_without_response, 0);
}

/// 100-continue: the interim answer is no answer; the final one pairs after the body.
#[test]
fn expect_continue_pairs_the_final_response() {
    let (mut r, pid) = server();
    r.data(
        pid,
        pid,
        7,
        DIR_INGRESS,
        10,
        b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
    );
    r.data(
        pid,
        pid,
        7,
        DIR_EGRESS,
        20,
        b"HTTP/1.1 100 Continue\r\n\r\n",
    );
    r.data(pid, pid, 7, DIR_INGRESS, 30, BODY);
    r.data(pid, pid, 7, DIR_EGRESS, 40, R200);
    r.data(pid, pid, 7, DIR_INGRESS, 50, &req("/b"));
    r.data(pid, pid, 7, DIR_EGRESS, 60, R405);
    assert_eq!(lines(&r), [line("POST", "/a", 200), line("GET", "/b", 405)]);
}

/// Pipelined requests whose bytes were not all captured: the count of requests is
/// lost, so nothing after the loss is paired (and every response is counted), instead
/// of pairing responses with the wrong requests.
#[test]
fn lost_request_boundaries_pair_nothing_and_count_every_response() {
    let (mut r, pid) = server();
    r.data(pid, pid, 7, DIR_INGRESS, 10, &req("/first"));
    r.data(pid, pid, 7, DIR_EGRESS, 20, R200);
    // Three pipelined requests in one read of which only the first bytes were captured.
    let mut three = Vec::new();
    for p in ["/a", "/b", "/c"] {
        three.extend(req(p));
    }
    let head = &three[..20];
    let ev = DataEvent {
        header: hdr(EventKind::Data, pid, pid, 30),
        fd: 7,
        direction: DIR_INGRESS,
        total_len: three.len() as u64,
        head_len: head.len() as u32,
        tail_len: 0,
        syscall: 1,
        class: 0,
    };
    let spans = &mut r.spans;
    r.t.handle(
        Event::Data {
            ev,
            head,
            tail: &[],
        },
        &mut |s| spans.push(s),
    );
    for ts in [40, 50, 60] {
        r.data(pid, pid, 7, DIR_EGRESS, ts, R405);
    }
    r.data(pid, pid, 7, DIR_INGRESS, 70, &req("/later"));
    r.data(pid, pid, 7, DIR_EGRESS, 80, R200);
    assert_eq!(lines(&r), [line("GET", "/first", 200)]);
    close(&mut r, pid, 90);
    assert_eq!(lines(&r).len(), 1);
    // Four responses were seen after the loss, two requests: the larger is counted.
    assert_eq!(r.t.stats().unpaired_desync, 4);
    // The gap cut the header section of the first of the three: that is the cause.
    let mut want = [0; DesyncCause::ALL.len()];
    want[DesyncCause::HeaderGap as usize] = 4;
    assert_eq!(r.t.stats().unpaired_desync_by_cause, want);
}

/// Finding (issue 11, Go 1.21 conformance with client aborts): an HTTP/1.0 response
/// without Content-Length is delimited by the close; the client reset the connection
/// after the status line, the server's later writes failed (uncaptured), and the span
/// said 12000 body bytes where the server had written 15000. A close cannot tell an
/// orderly end from a reset: the span claims no response size.
#[test]
fn close_delimited_response_cut_by_client_reset() {
    let (mut r, pid) = server();
    r.data(
        pid,
        pid,
        7,
        DIR_INGRESS,
        10,
        b"GET /stream HTTP/1.0\r\nHost: x\r\n\r\n",
    );
    r.data(pid, pid, 7, DIR_EGRESS, 20, b"HTTP/1.0 200 OK\r\n\r\n");
    let part = vec![b's'; 3000];
    for i in 0..4 {
        r.data(pid, pid, 7, DIR_EGRESS, 30 + i, &part);
    }
    // The fifth write failed with EPIPE: the capture reports nothing of it.
    close(&mut r, pid, 40);
    assert_eq!(lines(&r), [line("GET", "/stream", 200)]);
    assert_eq!(r.spans[0].attr("http.response.body.size"), None);
    let st = r.t.stats();
    assert_eq!(st.responses_ended_by_close, 1);
    assert_eq!(st.requests_without_response, 0);
}

/// Finding (issue 11, apache2 prefork conformance with client aborts): a client that
/// reset the connection halfway through a request's header section left an exchange
/// apache logged, with no span and no counted reason.
#[test]
fn request_head_cut_by_client_reset_is_counted() {
    let (mut r, pid) = server();
    r.data(
        pid,
        pid,
        7,
        DIR_INGRESS,
        10,
        b"GET /index.html?r7=1 HTTP/1.1\r\nHost: x\r\nUser-Ag",
    );
    close(&mut r, pid, 20);
    assert!(r.spans.is_empty());
    assert_eq!(r.t.stats().requests_without_response, 1);
}
