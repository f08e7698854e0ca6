//! Model-based property tests of pairing on one server connection.
//!
//! A reference model of HTTP/1.1 exchanges (requests with or without bodies, chunked
//! or not; answers written after the body, before it (early errors), or after a
//! `100 Continue`; HEAD, 204, 304; pipelined groups) says which spans must come out.
//! The bytes of both directions are interleaved the way a server moves them and cut
//! into syscalls, then captured like the kernel does (first 2048 and last 64 bytes of
//! each syscall, the rest a gap).
//!
//! * Fully captured (every syscall within the head): the spans are exactly the model's.
//! * With gaps: every span is one of the model's, exact (method, path, status, both
//!   body sizes), none twice; if an exchange has no span, the tracker counted a loss
//!   (the count itself is a lower bound, see the test).

use periscope_common::{ConnCloseEvent, MAX_HEAD, MAX_TAIL};
use proptest::prelude::*;

use super::*;

#[derive(Clone, Debug)]
enum When {
    /// The answer follows the whole request.
    After,
    /// The answer is written before the body is read (an early error).
    Early,
    /// `Expect: 100-continue`: interim answer, body, final answer.
    Continue,
}

#[derive(Clone, Debug)]
struct X {
    method: &'static str,
    body: usize,
    chunked: bool,
    status: u16,
    resp_body: usize,
    resp_chunked: bool,
    when: When,
    /// Read together with the following requests before any is answered.
    pipelined: bool,
}

fn x() -> impl Strategy<Value = X> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE"]),
        prop_oneof![Just(0usize), 1usize..100, 100usize..30_000],
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 405, 413, 500]),
        prop_oneof![Just(0usize), 1usize..200, 200usize..40_000],
        any::<bool>(),
        0u8..4,
        any::<bool>(),
    )
        .prop_map(
            |(method, body, chunked, status, resp_body, resp_chunked, when, pipelined)| {
                let body = if matches!(method, "GET" | "HEAD" | "DELETE") {
                    0
                } else {
                    body
                };
                let when = match (when, body > 0) {
                    (1, true) => When::Early,
                    (2, true) => When::Continue,
                    _ => When::After,
                };
                let pipelined = pipelined && matches!(when, When::After);
                X {
                    method,
                    body,
                    chunked,
                    status,
                    resp_body,
                    resp_chunked,
                    when,
                    pipelined,
                }
            },
        )
}

fn letters(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26])
        .collect()
}

fn chunked_body(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in letters(n).chunks(7000) {
        out.extend(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend(c);
        out.extend(b"\r\n");
    }
    out.extend(b"0\r\n\r\n");
    out
}

impl X {
    fn request(&self, i: usize) -> (Vec<u8>, Vec<u8>) {
        let mut h = format!("{} /x{i} HTTP/1.1\r\nHost: h\r\n", self.method);
        let body = if self.body == 0 {
            Vec::new()
        } else if self.chunked {
            h.push_str("Transfer-Encoding: chunked\r\n");
            chunked_body(self.body)
        } else {
            h.push_str(&format!("Content-Length: {}\r\n", self.body));
            letters(self.body)
        };
        if matches!(self.when, When::Continue) {
            h.push_str("Expect: 100-continue\r\n");
        }
        h.push_str("\r\n");
        (h.into_bytes(), body)
    }

    fn response(&self) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {} X\r\n", self.status).into_bytes();
        let bodiless = self.method == "HEAD" || self.status == 204 || self.status == 304;
        let body = if self.resp_chunked && !bodiless {
            r.extend(b"Transfer-Encoding: chunked\r\n");
            chunked_body(self.resp_body)
        } else {
            if self.status != 204 {
                r.extend(format!("Content-Length: {}\r\n", self.resp_body).as_bytes());
            }
            if bodiless {
                Vec::new()
            } else {
                letters(self.resp_body)
            }
        };
        r.extend(b"\r\n");
        r.extend(&body);
        r
    }

    /// What the span must say: method, path, status, request and response body bytes.
    fn expected(&self, i: usize) -> (String, String, i64, i64, i64) {
        let req_body = self.request(i).1.len() as i64;
        let resp = self.response();
        let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (
            self.method.to_string(),
            format!("/x{i}"),
            i64::from(self.status),
            req_body,
            (resp.len() - head_end) as i64,
        )
    }
}

/// The syscalls of the server, in order: (ingress?, bytes).
fn syscalls(xs: &[X]) -> Vec<(bool, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let x = &xs[i];
        let (h, b) = x.request(i);
        match x.when {
            When::After if x.pipelined => {
                // This request and the following pipelined ones arrive in one read.
                let mut j = i;
                let mut bytes = Vec::new();
                while j < xs.len() && (j == i || xs[j - 1].pipelined) {
                    if !matches!(xs[j].when, When::After) {
                        break;
                    }
                    let (h, b) = xs[j].request(j);
                    bytes.extend(h);
                    bytes.extend(b);
                    j += 1;
                }
                out.push((true, bytes));
                for (k, x) in xs.iter().enumerate().take(j).skip(i) {
                    let _ = k;
                    out.push((false, x.response()));
                }
                i = j;
                continue;
            }
            When::After => {
                let mut all = h;
                all.extend(b);
                out.push((true, all));
                out.push((false, x.response()));
            }
            When::Early => {
                out.push((true, h));
                out.push((false, x.response()));
                out.push((true, b));
            }
            When::Continue => {
                out.push((true, h));
                out.push((false, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()));
                out.push((true, b));
                out.push((false, x.response()));
            }
        }
        i += 1;
    }
    out
}

fn feed(r: &mut Run, pid: u32, ts: u64, ingress: bool, total: &[u8], captured: bool) {
    let (head, tail) = if captured || total.len() <= MAX_HEAD {
        (total, &[][..])
    } else {
        let t = (total.len() - MAX_HEAD).min(MAX_TAIL);
        (&total[..MAX_HEAD], &total[total.len() - t..])
    };
    let ev = DataEvent {
        header: hdr(EventKind::Data, pid, pid, ts),
        fd: 7,
        direction: if ingress { DIR_INGRESS } else { DIR_EGRESS },
        total_len: total.len() as u64,
        head_len: head.len() as u32,
        tail_len: tail.len() as u32,
        syscall: 1,
        class: 0,
    };
    let spans = &mut r.spans;
    r.t.handle(Event::Data { ev, head, tail }, &mut |s| spans.push(s));
}

/// Runs the model's syscalls, each cut into pieces of at most `max_piece` bytes (the
/// cut points drawn from `cuts`), and returns the tracker.
fn run_model(xs: &[X], cuts: &[usize], max_piece: usize) -> Run {
    let mut r = Run::new();
    let pid = std::process::id();
    r.t.add_process(pid);
    r.open(accept(pid, 7, 42_000, 1));
    let mut ts = 10;
    let mut c = 0;
    for (ingress, bytes) in syscalls(xs) {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let want = 1 + cuts[c % cuts.len()] % max_piece;
            c += 1;
            let n = want.min(rest.len());
            ts += 10;
            feed(&mut r, pid, ts, ingress, &rest[..n], false);
            rest = &rest[n..];
        }
    }
    let ev = ConnCloseEvent {
        header: hdr(EventKind::ConnClose, pid, pid, ts + 10),
        fd: 7,
        _pad: 0,
    };
    let spans = &mut r.spans;
    r.t.handle(Event::ConnClose(ev), &mut |s| spans.push(s));
    r
}

fn got(r: &Run) -> Vec<(String, String, i64, i64, i64)> {
    r.spans
        .iter()
        .map(|s| {
            let str_of = |k: &str| {
                s.attr(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let int_of = |k: &str| match s.attr(k) {
                Some(Value::Int(i)) => *i,
                _ => 0,
            };
            (
                str_of("http.request.method"),
                str_of("url.path"),
                int_of("http.response.status_code"),
                int_of("http.request.body.size"),
                int_of("http.response.body.size"),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every syscall captured whole: the spans are the model's, in answer order.
    #[test]
    fn pairing_matches_the_model_when_fully_captured(
        xs in prop::collection::vec(x(), 1..12),
        cuts in prop::collection::vec(0usize..5000, 1..40),
    ) {
        let r = run_model(&xs, &cuts, MAX_HEAD);
        let want: Vec<_> = xs.iter().enumerate().map(|(i, x)| x.expected(i)).collect();
        prop_assert_eq!(got(&r), want);
        let st = r.t.stats();
        prop_assert_eq!(st.unpaired_desync + st.responses_without_request, 0);
    }

    /// Both directions interleaved, cut anywhere, captured like the kernel (gaps):
    /// a span is exact or absent, and every absent one is counted.
    #[test]
    fn pairing_with_gaps_is_sound_and_counts_what_it_drops(
        xs in prop::collection::vec(x(), 1..12),
        cuts in prop::collection::vec(0usize..20_000, 1..40),
    ) {
        let r = run_model(&xs, &cuts, 20_000);
        let want: Vec<_> = xs.iter().enumerate().map(|(i, x)| x.expected(i)).collect();
        let spans = got(&r);
        let mut seen = std::collections::HashSet::new();
        for s in &spans {
            let i: usize = s.1.trim_start_matches("/x").parse().unwrap();
            prop_assert!(seen.insert(i), "two spans for /x{}", i);
            prop_assert_eq!(s, &want[i], "span of /x{} differs from the model", i);
        }
        let st = r.t.stats();
        let counted = st.unpaired_desync + st.responses_without_request + st.requests_without_response;
        // Never silent: a connection that lost exchanges says so. The count is a lower
        // bound: messages wholly inside gaps, or swallowed as another's body once the
        // request kinds are unknown, cannot always be counted one by one.
        prop_assert!(
            spans.len() == xs.len() || counted > 0,
            "{} exchanges without a span, none counted", xs.len() - spans.len()
        );
    }
}
