//! The session against real HTTP/2 traffic: frames written by the `h2` crate (client
//! and server talking over an in-memory pipe, each write recorded as one "syscall"),
//! plus hand-built frames for what `h2` never sends (padding, priority, push).
//!
//! Central properties: however the recorded writes are split into chunks, the
//! exchanges are the same; with gaps, every exchange handed out is exactly right and
//! the rest are counted, never guessed.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use bytes::Bytes;
use periscope_common::{MAX_HEAD, MAX_TAIL};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

use super::*;

/// Writes in the order they happened: (from the client, bytes).
type Writes = Vec<(bool, Vec<u8>)>;
type Log = Arc<Mutex<Writes>>;

/// One end of the pipe; records what it writes.
struct Tap {
    io: DuplexStream,
    from_client: bool,
    log: Log,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            let from_client = self.from_client;
            self.log
                .lock()
                .unwrap()
                .push((from_client, buf[..n].to_vec()));
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request the test client sends and how the test server answers it.
#[derive(Clone, Debug)]
struct Call {
    method: &'static str,
    path: String,
    /// Extra request headers (name, value).
    headers: Vec<(String, String)>,
    req_body: Vec<u8>,
    status: u16,
    resp_body: Vec<u8>,
    /// Response trailers (gRPC status); `trailers_only`: the trailers are the only
    /// response header block (END_STREAM on it).
    trailers: Vec<(String, String)>,
    trailers_only: bool,
}

impl Call {
    fn get(path: &str, status: u16, body_len: usize) -> Self {
        Call {
            method: "GET",
            path: path.to_string(),
            headers: vec![],
            req_body: vec![],
            status,
            resp_body: vec![b'x'; body_len],
            trailers: vec![],
            trailers_only: false,
        }
    }

    fn grpc(method: &str, msgs_in: &[usize], msgs_out: &[usize], code: u32) -> Self {
        let frame = |sizes: &[usize]| {
            let mut b = Vec::new();
            for &n in sizes {
                b.push(0);
                b.extend_from_slice(&(n as u32).to_be_bytes());
                b.extend(std::iter::repeat_n(7u8, n));
            }
            b
        };
        Call {
            method: "POST",
            path: format!("/grpc.health.v1.Health/{method}"),
            headers: vec![
                ("content-type".into(), "application/grpc".into()),
                ("te".into(), "trailers".into()),
            ],
            req_body: frame(msgs_in),
            status: 200,
            resp_body: frame(msgs_out),
            trailers: vec![("grpc-status".into(), code.to_string())],
            trailers_only: msgs_out.is_empty() && code != 0,
        }
    }
}

/// Runs `calls` over one real h2 connection (all concurrently), returns the writes.
fn record(calls: Vec<Call>) -> Vec<(bool, Vec<u8>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log: Log = Arc::default();
    let (a, b) = tokio::io::duplex(1 << 20);
    let client_io = Tap {
        io: a,
        from_client: true,
        log: log.clone(),
    };
    let server_io = Tap {
        io: b,
        from_client: false,
        log: log.clone(),
    };
    let by_path: std::collections::HashMap<String, Call> =
        calls.iter().map(|c| (c.path.clone(), c.clone())).collect();
    rt.block_on(async move {
        let server = tokio::spawn(async move {
            let mut conn = h2::server::handshake(server_io).await.unwrap();
            while let Some(r) = conn.accept().await {
                let (req, mut respond) = r.unwrap();
                let call = by_path[req.uri().path_and_query().unwrap().as_str()].clone();
                tokio::spawn(async move {
                    let mut body = req.into_body();
                    while let Some(d) = body.data().await {
                        let d = d.unwrap();
                        body.flow_control().release_capacity(d.len()).unwrap();
                    }
                    let trailers = {
                        let mut h = http::HeaderMap::new();
                        for (k, v) in &call.trailers {
                            h.insert(
                                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                v.parse().unwrap(),
                            );
                        }
                        h
                    };
                    let mut resp = http::Response::builder().status(call.status);
                    if call.trailers_only {
                        for (k, v) in &call.trailers {
                            resp = resp.header(k.as_str(), v.as_str());
                        }
                        respond.send_response(resp.body(()).unwrap(), true).unwrap();
                        return;
                    }
                    let no_body = call.resp_body.is_empty() && call.trailers.is_empty();
                    let mut send = respond
                        .send_response(resp.body(()).unwrap(), no_body)
                        .unwrap();
                    if no_body {
                        return;
                    }
                    if !call.resp_body.is_empty() {
                        send.send_data(
                            Bytes::from(call.resp_body.clone()),
                            call.trailers.is_empty(),
                        )
                        .unwrap();
                    }
                    if !call.trailers.is_empty() {
                        send.send_trailers(trailers).unwrap();
                    }
                });
            }
        });
        let (client, conn) = h2::client::handshake(client_io).await.unwrap();
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut waits = Vec::new();
        for call in calls {
            let mut client = client.clone().ready().await.unwrap();
            let mut req = http::Request::builder()
                .method(call.method)
                .uri(format!("http://example.test{}", call.path));
            for (k, v) in &call.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let no_body = call.req_body.is_empty();
            let (resp, mut send) = client.send_request(req.body(()).unwrap(), no_body).unwrap();
            if !no_body {
                send.send_data(Bytes::from(call.req_body.clone()), true)
                    .unwrap();
            }
            waits.push(tokio::spawn(async move {
                let resp = resp.await.unwrap();
                let mut body = resp.into_body();
                while let Some(d) = body.data().await {
                    let d = d.unwrap();
                    body.flow_control().release_capacity(d.len()).unwrap();
                }
                let _ = body.trailers().await;
            }));
        }
        for w in waits {
            w.await.unwrap();
        }
        drop(client);
        // Give the server its last writes, then stop.
        tokio::task::yield_now().await;
        conn_task.abort();
        server.abort();
    });
    std::mem::take(&mut *log.lock().unwrap())
}

/// What an exchange must be, timestamps aside.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Seen {
    method: String,
    path: String,
    status: u16,
    req_body: u64,
    resp_body: u64,
    host: Option<String>,
    grpc: Option<GrpcInfo>,
}

fn seen(x: &H2Exchange) -> Seen {
    let (method, path) = match &x.req.kind {
        MessageKind::Request { method, target } => (method.to_string(), target.clone()),
        _ => unreachable!(),
    };
    Seen {
        method,
        path,
        status: x.resp.status().unwrap(),
        req_body: x.req.body_bytes,
        resp_body: x.resp.body_bytes,
        host: x.req.host.clone(),
        grpc: x.grpc.clone(),
    }
}

fn expected(calls: &[Call]) -> Vec<Seen> {
    let mut v: Vec<Seen> = calls
        .iter()
        .map(|c| {
            let grpc = c.headers.iter().any(|(k, _)| k == "content-type").then(|| {
                let count = |b: &[u8]| {
                    let mut n = 0;
                    let mut i = 0;
                    while i < b.len() {
                        let len = u32::from_be_bytes(b[i + 1..i + 5].try_into().unwrap()) as usize;
                        i += 5 + len;
                        n += 1;
                    }
                    n
                };
                GrpcInfo {
                    status: c.trailers[0].1.parse().ok(),
                    message: None,
                    request_messages: Some(count(&c.req_body)),
                    response_messages: Some(count(&c.resp_body)),
                }
            });
            Seen {
                method: c.method.to_string(),
                path: c.path.clone(),
                status: c.status,
                req_body: c.req_body.len() as u64,
                resp_body: c.resp_body.len() as u64,
                host: Some("example.test".into()),
                grpc,
            }
        })
        .collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Feeds writes as given: each one a chunk, whole.
fn run(writes: &[(bool, Vec<u8>)]) -> (Vec<H2Exchange>, H2Stats) {
    let mut s = Session::new();
    let mut out = Vec::new();
    for (i, (from_client, w)) in writes.iter().enumerate() {
        s.feed(*from_client, &Chunk::full(i as u64 + 1, w), &mut out);
    }
    s.close();
    (out, s.stats())
}

fn sorted(out: &[H2Exchange]) -> Vec<Seen> {
    let mut v: Vec<Seen> = out.iter().map(seen).collect();
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

fn mixed_calls() -> Vec<Call> {
    let mut calls = vec![
        Call::get("/a", 200, 10),
        Call::get("/b?q=1", 404, 0),
        Call::get("/c", 200, 3000),
        Call::grpc("Check", &[2], &[2], 0),
        Call::grpc("Watch", &[0, 3], &[1, 40, 2], 0),
        Call::grpc("Missing", &[2], &[], 5),
    ];
    // Same header repeated (indexed from the dynamic table the second time).
    let mut again = Call::get("/a2", 200, 1);
    again.headers = vec![("x-tenant".into(), "acme".into())];
    let mut again2 = again.clone();
    again2.path = "/a3".into();
    calls.push(again);
    calls.push(again2);
    calls
}

#[test]
fn real_h2_exchanges_match() {
    let calls = mixed_calls();
    let writes = record(calls.clone());
    let (out, st) = run(&writes);
    assert_eq!(sorted(&out), expected(&calls));
    assert_eq!(st.streams, calls.len() as u64);
    assert_eq!(st.exchanges, calls.len() as u64);
    assert_eq!(st.blind, 0);
    // The client's HEADERS come before the server's answer, on odd stream ids.
    assert!(out.iter().all(|x| x.stream_id % 2 == 1));
    assert!(out.iter().all(|x| x.req.start_ns <= x.resp.end_ns));
}

#[test]
fn grpc_trailers_only_and_trailers() {
    let calls = vec![
        Call::grpc("Check", &[2], &[2], 0),
        Call::grpc("Nope", &[2], &[], 5),
    ];
    let (out, _) = run(&record(calls));
    let by = |p: &str| out.iter().find(|x| seen(x).path.ends_with(p)).unwrap();
    assert_eq!(by("Check").grpc.as_ref().unwrap().status, Some(0));
    assert_eq!(by("Nope").grpc.as_ref().unwrap().status, Some(5));
    assert_eq!(by("Nope").grpc.as_ref().unwrap().response_messages, Some(0));
}

/// A header block larger than the peer's max frame size goes on in CONTINUATION
/// frames; many distinct large values overflow the 4 KiB dynamic table (eviction), and
/// later requests index what is left.
#[test]
fn continuation_and_dynamic_table_eviction() {
    let mut calls = Vec::new();
    let mut big = Call::get("/big", 200, 5);
    big.headers = vec![("x-big".into(), "v".repeat(40_000))];
    calls.push(big);
    for i in 0..30 {
        let mut c = Call::get(&format!("/e{i:02}"), 200, i);
        c.headers = vec![(format!("x-h{}", i % 7), format!("{i}-{}", "y".repeat(700)))];
        calls.push(c);
    }
    let writes = record(calls.clone());
    // h2 wrote at least one CONTINUATION frame.
    let client: Vec<u8> = writes
        .iter()
        .filter(|w| w.0)
        .flat_map(|w| w.1.clone())
        .collect();
    assert!(frame_types(&client[PREFACE.len()..]).contains(&CONTINUATION));
    let (out, st) = run(&writes);
    assert_eq!(sorted(&out), expected(&calls));
    assert_eq!(st.blind, 0);
}

fn frame_types(mut b: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    while b.len() >= 9 {
        let len = u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize;
        v.push(b[3]);
        b = &b[(9 + len).min(b.len())..];
    }
    v
}

/// Turns writes into kernel-like chunks: each write split at the given points into
/// several syscalls, each captured as head + tail of at most `head_cap`/`MAX_TAIL`.
fn chunks(
    writes: &[(bool, Vec<u8>)],
    cuts: &[usize],
    head_cap: usize,
) -> Vec<(bool, u64, Vec<u8>, Vec<u8>)> {
    let mut v = Vec::new();
    let mut k = 0;
    for (from_client, w) in writes {
        let mut rest: &[u8] = w;
        while !rest.is_empty() {
            let cut = cuts.get(k).copied().unwrap_or(usize::MAX);
            k += 1;
            let n = cut.clamp(1, rest.len());
            let piece = &rest[..n];
            rest = &rest[n..];
            let head = piece[..piece.len().min(head_cap)].to_vec();
            let tail_len = (piece.len() - head.len()).min(MAX_TAIL);
            let tail = piece[piece.len() - tail_len..].to_vec();
            v.push((*from_client, piece.len() as u64, head, tail));
        }
    }
    v
}

fn run_chunks(ch: &[(bool, u64, Vec<u8>, Vec<u8>)]) -> (Vec<H2Exchange>, H2Stats) {
    let mut s = Session::new();
    let mut out = Vec::new();
    for (i, (from_client, total, head, tail)) in ch.iter().enumerate() {
        s.feed(
            *from_client,
            &Chunk::captured(i as u64 + 1, *total, head, tail),
            &mut out,
        );
    }
    s.close();
    (out, s.stats())
}

fn recorded() -> &'static (Vec<Call>, Vec<(bool, Vec<u8>)>) {
    static R: std::sync::OnceLock<(Vec<Call>, Writes)> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let mut calls = mixed_calls();
        calls.push(Call::get("/large", 200, 9000));
        let mut post = Call::get("/post", 201, 4);
        post.method = "POST";
        post.req_body = vec![b'p'; 5000];
        calls.push(post);
        // gRPC messages larger than a small DATA payload: counted from their prefixes.
        calls.push(Call::grpc("Large", &[2000], &[3000], 0));
        let w = record(calls.clone());
        (calls, w)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the writes are split into syscalls (all captured whole), the exchanges
    /// are the same.
    #[test]
    fn split_invariant(cuts in proptest::collection::vec(1usize..200, 0..400)) {
        let (calls, writes) = recorded();
        let (out, st) = run_chunks(&chunks(writes, &cuts, usize::MAX));
        prop_assert_eq!(sorted(&out), expected(calls));
        prop_assert_eq!(st.blind, 0);
    }

    /// With the kernel's capture (a head and a tail per syscall, the middle a gap),
    /// every exchange handed out is exactly right; what is not handed out is counted
    /// (or hidden entirely in a gap); nothing is guessed.
    #[test]
    fn gaps_never_give_wrong_exchanges(
        cuts in proptest::collection::vec(1usize..12_000, 0..60),
        head_cap in prop_oneof![Just(MAX_HEAD), 9usize..600],
    ) {
        let (calls, writes) = recorded();
        let (out, st) = run_chunks(&chunks(writes, &cuts, head_cap));
        let truth = expected(calls);
        for x in sorted(&out) {
            // gRPC message counts may be unknown after a gap, never wrong.
            let t = truth.iter().find(|t| t.path == x.path).expect("a real path");
            let mut x2 = x.clone();
            if let (Some(g), Some(tg)) = (x2.grpc.as_mut(), t.grpc.as_ref()) {
                if g.request_messages.is_none() { g.request_messages = tg.request_messages; }
                if g.response_messages.is_none() { g.response_messages = tg.response_messages; }
            }
            prop_assert_eq!(&x2, t);
        }
        let unplaced = st.unplaced_gap + st.unplaced_close + st.unplaced_malformed
            + st.unplaced_reset + st.unplaced_over_limit;
        prop_assert!(out.len() as u64 + unplaced <= calls.len() as u64);
        prop_assert_eq!(st.unplaced_malformed, 0);
    }
}

/// The kernel's capture of one large write: 2 KiB head, 64 B tail. Several frames in
/// the gap hide their boundaries: the session goes blind and counts the open streams.
#[test]
fn truncated_multi_frame_write_goes_blind_and_counts() {
    let mut calls = Vec::new();
    for i in 0..20 {
        let mut c = Call::get(&format!("/t{i:02}"), 200, 1);
        c.headers = vec![("x-pad".into(), format!("{i}{}", "z".repeat(300)))];
        calls.push(c);
    }
    let writes = record(calls.clone());
    // Merge all the client's writes into one syscall (a writev of many frames).
    let client: Vec<u8> = writes
        .iter()
        .filter(|w| w.0)
        .flat_map(|w| w.1.clone())
        .collect();
    assert!(client.len() > MAX_HEAD + MAX_TAIL);
    let mut s = Session::new();
    let mut out = Vec::new();
    s.feed(
        true,
        &Chunk::captured(
            1,
            client.len() as u64,
            &client[..MAX_HEAD],
            &client[client.len() - MAX_TAIL..],
        ),
        &mut out,
    );
    for (i, (fc, w)) in writes.iter().enumerate().filter(|w| !w.1.0) {
        s.feed(*fc, &Chunk::full(i as u64 + 2, w), &mut out);
    }
    s.close();
    let st = s.stats();
    assert!(out.is_empty(), "nothing decoded after the loss: {out:?}");
    assert_eq!(st.blind, 1);
    assert!(st.unplaced_gap >= 1);
    assert!(st.unplaced_gap <= calls.len() as u64);
}

// Hand-built frames, for what `h2` never writes.

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn hpack(enc: &mut loona_hpack::Encoder<'_>, fields: &[(&str, &str)]) -> Vec<u8> {
    enc.encode(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
}

#[test]
fn padding_priority_push_and_reset() {
    let mut ce = loona_hpack::Encoder::new();
    let mut se = loona_hpack::Encoder::new();
    let req = hpack(
        &mut ce,
        &[
            (":method", "GET"),
            (":path", "/p"),
            (":scheme", "http"),
            (":authority", "h"),
        ],
    );
    // HEADERS with PADDED and PRIORITY: pad length, dependency + weight, block, padding.
    let mut p = vec![3u8];
    p.extend_from_slice(&[0, 0, 0, 0, 16]);
    p.extend_from_slice(&req);
    p.extend_from_slice(&[0, 0, 0]);
    let mut client = PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[]));
    client.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG,
        1,
        &p,
    ));
    let req3 = hpack(
        &mut ce,
        &[(":method", "GET"), (":path", "/reset"), (":scheme", "http")],
    );
    client.extend(frame(HEADERS, END_STREAM | END_HEADERS, 3, &req3));

    let mut server = frame(SETTINGS, 0, 0, &[]);
    // A push promise on stream 1 (its block changes the server's dynamic table).
    let mut pp = 2u32.to_be_bytes().to_vec();
    pp.extend(hpack(
        &mut se,
        &[(":method", "GET"), (":path", "/pushed"), ("x-pushed", "1")],
    ));
    server.extend(frame(PUSH_PROMISE, END_HEADERS, 1, &pp));
    let resp = hpack(&mut se, &[(":status", "200"), ("x-pushed", "1")]);
    server.extend(frame(HEADERS, END_HEADERS, 1, &resp));
    // DATA with 5 bytes of data and 4 of padding.
    let mut d = vec![4u8];
    d.extend_from_slice(b"hello");
    d.extend_from_slice(&[0; 4]);
    server.extend(frame(DATA, END_STREAM | PADDED, 1, &d));
    // Stream 3 is reset before any response.
    server.extend(frame(RST_STREAM, 0, 3, &8u32.to_be_bytes()));
    server.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 0]));

    let mut s = Session::new();
    let mut out = Vec::new();
    s.feed(true, &Chunk::full(1, &client), &mut out);
    s.feed(false, &Chunk::full(2, &server), &mut out);
    s.close();
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.stream_id, 1);
    assert_eq!(x.resp.status(), Some(200));
    assert_eq!(x.resp.body_bytes, 5);
    assert_eq!(x.req.host.as_deref(), Some("h"));
    let st = s.stats();
    assert_eq!((st.unplaced_reset, st.unplaced_close, st.blind), (1, 0, 0));
}

/// A gap inside one DATA frame's payload keeps the framing: the byte count stays
/// exact, and so does the gRPC message count when the gap is inside one message.
#[test]
fn gap_inside_data_keeps_framing() {
    let mut ce = loona_hpack::Encoder::new();
    let mut se = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &hpack(
            &mut ce,
            &[
                (":method", "POST"),
                (":path", "/pkg.Svc/Get"),
                ("content-type", "application/grpc"),
            ],
        ),
    ));
    let mut msg = vec![0u8];
    msg.extend_from_slice(&5000u32.to_be_bytes());
    msg.extend(std::iter::repeat_n(1u8, 5000));
    let mut server = frame(
        HEADERS,
        END_HEADERS,
        1,
        &hpack(&mut se, &[(":status", "200")]),
    );
    let data = frame(DATA, 0, 1, &msg);
    let trailers = frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        1,
        &hpack(&mut se, &[("grpc-status", "0")]),
    );
    let mut s = Session::new();
    let mut out = Vec::new();
    s.feed(true, &Chunk::full(1, &client), &mut out);
    s.feed(false, &Chunk::full(2, &server), &mut out);
    // The DATA frame as the kernel captures it: 2 KiB head, 64 B tail.
    s.feed(
        false,
        &Chunk::captured(
            3,
            data.len() as u64,
            &data[..MAX_HEAD],
            &data[data.len() - MAX_TAIL..],
        ),
        &mut out,
    );
    server.clear();
    s.feed(false, &Chunk::full(4, &trailers), &mut out);
    assert_eq!(out.len(), 1);
    let g = out[0].grpc.as_ref().unwrap();
    assert_eq!(out[0].resp.body_bytes, 5005);
    assert_eq!((g.status, g.response_messages), (Some(0), Some(1)));
}

#[test]
fn stream_limit_is_counted() {
    let mut ce = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    for i in 0..(MAX_STREAMS as u32 + 10) {
        let b = hpack(&mut ce, &[(":method", "GET"), (":path", "/s")]);
        client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &b));
    }
    let mut s = Session::new();
    let mut out = Vec::new();
    s.feed(true, &Chunk::full(1, &client), &mut out);
    s.close();
    let st = s.stats();
    assert_eq!(st.unplaced_over_limit, 10);
    assert_eq!(st.unplaced_close, MAX_STREAMS as u64);
}

#[test]
fn not_a_preface_is_malformed() {
    let mut s = Session::new();
    let mut out = Vec::new();
    s.feed(true, &Chunk::full(1, b"GET / HTTP/1.1\r\n\r\n"), &mut out);
    assert!(s.is_blind());
}

/// A gRPC call whose stream is reset after its response began, before any trailers
/// (a cancelled server-streaming call, a refused one): its status is what gRPC's HTTP/2
/// mapping makes of the RST_STREAM code; with trailers first, the trailers say.
#[test]
fn grpc_status_of_a_reset_stream() {
    let mut ce = loona_hpack::Encoder::new();
    let mut se = loona_hpack::Encoder::new();
    let mut client = PREFACE.to_vec();
    client.extend(frame(SETTINGS, 0, 0, &[]));
    for stream in [1u32, 3, 5] {
        let req = hpack(
            &mut ce,
            &[
                (":method", "POST"),
                (":path", "/grpc.health.v1.Health/Watch"),
                (":scheme", "http"),
                ("content-type", "application/grpc"),
            ],
        );
        client.extend(frame(HEADERS, END_HEADERS, stream, &req));
        client.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
    }
    let mut server = frame(SETTINGS, 0, 0, &[]);
    for stream in [1u32, 3, 5] {
        let resp = hpack(
            &mut se,
            &[(":status", "200"), ("content-type", "application/grpc")],
        );
        server.extend(frame(HEADERS, END_HEADERS, stream, &resp));
        server.extend(frame(DATA, 0, stream, &[0, 0, 0, 0, 2, 8, 1]));
    }
    // Stream 5 ends with trailers (OK) before a late reset.
    let trailers = hpack(&mut se, &[("grpc-status", "0")]);
    server.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &trailers));
    let mut resets = frame(RST_STREAM, 0, 1, &8u32.to_be_bytes());
    resets.extend(frame(RST_STREAM, 0, 3, &7u32.to_be_bytes()));
    resets.extend(frame(RST_STREAM, 0, 5, &8u32.to_be_bytes()));
    let (out, _) = run(&[(true, client), (false, server), (true, resets)]);
    let status = |id: u32| {
        let x = out.iter().find(|x| x.stream_id == id).expect("stream");
        x.grpc.as_ref().expect("gRPC").status
    };
    assert_eq!(out.len(), 3);
    assert_eq!(status(1), Some(1), "CANCEL is CANCELLED");
    assert_eq!(status(3), Some(14), "REFUSED_STREAM is UNAVAILABLE");
    assert_eq!(status(5), Some(0), "trailers first");
}

proptest! {
    /// What a connection joined mid-stream is taken for: a run of whole frames is
    /// HTTP/2 (also when the capture stops inside the last one); HTTP/1 start lines
    /// and text bodies never are.
    #[test]
    fn frames_are_told_from_http1_when_joined_mid_stream(
        frames in prop::collection::vec(
            (prop::sample::select(vec![DATA, HEADERS, RST_STREAM, SETTINGS, PING, WINDOW_UPDATE]),
             0u8..=255, 1u32..1000, prop::collection::vec(any::<u8>(), 0..300)),
            1..6),
        cut in 0usize..2000,
        text in "[ -~\r\n]{9,400}",
    ) {
        let mut bytes = Vec::new();
        for (kind, flags, stream, payload) in &frames {
            let stream = if matches!(*kind, SETTINGS | PING) { 0 } else { *stream };
            bytes.extend(frame(*kind, *flags, stream, payload));
        }
        prop_assert!(looks_like_frames(&bytes, bytes.len() as u64));
        // Captured in part: the rest of the last frame is in the gap.
        let head = &bytes[..(9 + cut).min(bytes.len())];
        prop_assert!(looks_like_frames(head, bytes.len() as u64));
        // One byte too many or too few for the frames to tile a whole chunk.
        prop_assert!(!looks_like_frames(&bytes[..bytes.len() - 1], bytes.len() as u64 - 1));
        for http1 in [
            format!("GET /{text} HTTP/1.1\r\nHost: a\r\n\r\n"),
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}", text.len()),
            text.clone(),
        ] {
            prop_assert!(!looks_like_frames(http1.as_bytes(), http1.len() as u64), "{:?}", http1);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the writes are split into syscalls and iovecs, the chunks the kernel's
    /// HTTP/2 framing makes of them give exactly the exchanges of the whole bytes, with
    /// the large DATA payloads never copied.
    #[test]
    fn kernel_h2_framing_gives_every_exchange(
        cuts in proptest::collection::vec(1usize..6000, 0..200),
        iov_cuts in proptest::collection::vec(16usize..3000, 1..8),
    ) {
        use periscope_common::h2frame::{H2Pos, H2_MAX_STEPS};
        let (calls, writes) = recorded();
        let mut pos = [H2Pos::start(true), H2Pos::start(false)];
        let mut session = Session::new();
        let mut out = Vec::new();
        let (mut copied, mut total_bytes) = (0u64, 0u64);
        let mut k = 0;
        for (from_client, w) in writes {
            let mut rest: &[u8] = w;
            while !rest.is_empty() {
                let n = cuts.get(k).copied().unwrap_or(usize::MAX).clamp(1, rest.len());
                k += 1;
                let sys = &rest[..n];
                rest = &rest[n..];
                // The syscall's iovecs.
                let mut pieces = Vec::new();
                let mut r = sys;
                let mut j = k;
                while !r.is_empty() {
                    let m = iov_cuts[j % iov_cuts.len()].clamp(1, r.len());
                    j += 1;
                    pieces.push(&r[..m]);
                    r = &r[m..];
                }
                let d = usize::from(!from_client);
                let (chunks, cut, steps) =
                    periscope_common::h2frame::user::syscall(&mut pos[d], &pieces);
                prop_assert!(steps < H2_MAX_STEPS && cut.lost == 0);
                for (head, total) in &chunks {
                    copied += head.len() as u64;
                    total_bytes += total;
                    session.feed(*from_client, &Chunk::captured(1, *total, head, &[]), &mut out);
                }
            }
        }
        session.close();
        prop_assert_eq!(sorted(&out), expected(calls));
        prop_assert_eq!(session.stats().blind, 0);
        // The 9000- and 5000-byte bodies and the large gRPC messages went uncopied.
        prop_assert!(copied + 18_000 <= total_bytes, "copied {} of {}", copied, total_bytes);
    }
}
