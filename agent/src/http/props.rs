//! Property tests of the HTTP parser.
//!
//! A generator builds a valid sequence of requests or responses *and* the messages the
//! parser must emit for it (an independent model, not the parser run on the whole
//! stream). Then:
//!
//! * `split_invariance_*`: fully captured and cut anywhere into any number of chunks
//!   (empty ones included), the stream yields exactly the model's messages, every field
//!   and both timestamps included, with no parse error, resync or truncation.
//! * `captured_like_the_kernel_*`: cut into chunks (at random points and at some message
//!   starts) that are captured like the kernel does (first 2048 bytes, last 64), two
//!   things hold whatever the cut:
//!
//!   - *soundness*: the messages emitted are a subsequence of the model's; each one
//!     not marked `truncated` is exact (every field, both timestamps), a truncated one
//!     has the right start timestamp and method/status (and a prefix of the target);
//!     no parse error is ever reported on valid input.
//!   - *completeness*: a message that starts a chunk and whose header section lies in
//!     that chunk's captured head is always emitted (for requests: if its method is a
//!     known one), exactly when its body is not chunked (`Content-Length`, none, close
//!     delimited), and at least as a compatible truncated message when it is.
//!
//!   Soundness rests on one assumption, which the generator keeps: bodies and header
//!   values hold nothing the parser takes for a message start or for the end of a
//!   chunked body once it lost sync (no upper case letters, no `0` in bodies).
//! * `arbitrary_bytes_never_panic`, `mutated_streams_never_panic`: random or corrupted
//!   input with random cuts and random capture never panics, and the line buffer and
//!   the request queue stay under their caps.

use periscope_common::{MAX_HEAD, MAX_TAIL};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

use super::*;

const CLOSE_TS: u64 = 999_999;

/// Body alphabet of the captured-stream properties: no upper case (so nothing looks like
/// a request line or `HTTP/1.`), no `0` (so nothing looks like a last chunk).
const SAFE: &[u8] = b"abcdefghijklmnopqrstuvwxyz123456789 \r\n:;";

/// Byte strings that look like framing, for bodies of the split-invariance property:
/// a parser that let a body byte influence framing would fail.
const SNIPPETS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"GET / HTTP/1.1\r\n",
    b"0\r\n\r\n",
    b"\r\n",
    b"\r\n\r\n",
    b"Content-Length: 5\r\n",
    b"\n",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Anything a valid stream may carry.
    Adversarial,
    /// What the captured-stream property assumes (see module docs).
    Safe,
}

/// `len` pseudo-random bytes from a seed: cheap for large bodies.
fn bytes_from(seed: u64, len: usize, alphabet: Option<&[u8]>) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match alphabet {
                Some(a) => a[(x % a.len() as u64) as usize],
                None => (x >> 24) as u8,
            }
        })
        .collect()
}

fn blob(mode: Mode, min: usize, max: usize) -> BoxedStrategy<Vec<u8>> {
    let random = |a: Option<&'static [u8]>| {
        (min..=max, any::<u64>()).prop_map(move |(n, seed)| bytes_from(seed, n, a))
    };
    match mode {
        Mode::Safe => random(Some(SAFE)).boxed(),
        Mode::Adversarial => prop_oneof![
            random(None),
            vec(select(SNIPPETS), 0..6).prop_map(move |v| {
                let mut b = v.concat();
                b.resize(b.len().max(min), b'x');
                b
            }),
        ]
        .boxed(),
    }
}

// ---- header fields ----------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Field {
    name: &'static str,
    case: u8,
    before: &'static str,
    value: String,
    after: &'static str,
}

impl Field {
    fn name(&self) -> String {
        match self.case {
            0 => self.name.to_owned(),
            1 => self.name.to_ascii_lowercase(),
            _ => self.name.to_ascii_uppercase(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "{}:{}{}{}\r\n",
                self.name(),
                self.before,
                self.value,
                self.after
            )
            .as_bytes(),
        );
    }

    fn trimmed(&self) -> &str {
        self.value.trim_matches([' ', '\t'])
    }
}

const NAMES: &[&str] = &[
    "Host",
    "User-Agent",
    "traceparent",
    "tracestate",
    "Content-Type",
    "Connection",
    "Expect",
    "Upgrade",
    "Accept",
    "X-Request-Id",
];

fn value(mode: Mode) -> BoxedStrategy<String> {
    let common = prop_oneof![
        6 => "[a-z1-9 ;=/._-]{0,40}",
        1 => "[a-z]{500,600}",
        1 => select(&["close", "keep-alive", "Keep-Alive, upgrade", "upgrade", "100-continue", "100-Continue", "h2c", "websocket, H2C"][..])
            .prop_map(str::to_owned),
    ];
    match mode {
        Mode::Safe => common.boxed(),
        Mode::Adversarial => prop_oneof![3 => common, 1 => "[ -~]{0,60}"].boxed(),
    }
}

fn field(mode: Mode) -> impl Strategy<Value = Field> {
    (
        select(NAMES),
        0..3u8,
        select(&["", " ", "  ", "\t"][..]),
        value(mode),
        select(&["", " ", "\t "][..]),
    )
        .prop_map(|(name, case, before, value, after)| Field {
            name,
            case,
            before,
            value,
            after,
        })
}

/// What the model expects from a list of fields (framing fields excluded).
fn apply_fields(m: &mut Message, fields: &[Field]) {
    let cap = |s: &str| s[..s.len().min(MAX_VALUE)].to_owned();
    let (mut close, mut keep_alive) = (false, false);
    for f in fields {
        let v = f.trimmed();
        let slot = match f.name.to_ascii_lowercase().as_str() {
            "host" => &mut m.host,
            "user-agent" => &mut m.user_agent,
            "traceparent" => &mut m.traceparent,
            "tracestate" => &mut m.tracestate,
            "content-type" => &mut m.content_type,
            "connection" => {
                for t in v.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                    close |= t.eq_ignore_ascii_case("close");
                    keep_alive |= t.eq_ignore_ascii_case("keep-alive");
                }
                continue;
            }
            "expect" => {
                m.expect_continue |= v.eq_ignore_ascii_case("100-continue");
                continue;
            }
            "upgrade" => {
                m.upgrade_h2c |= v
                    .split(',')
                    .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case("h2c"));
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(cap(v));
        }
    }
    m.connection_close = close || (m.version_minor == 0 && !keep_alive);
}

// ---- bodies ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ChunkedBody {
    te: &'static str,
    /// (data, leading zeros of the size, upper-case hex, extension)
    chunks: Vec<(Vec<u8>, u8, bool, &'static str)>,
    last_zeros: u8,
    last_ext: &'static str,
    trailers: Vec<(&'static str, String)>,
}

#[derive(Clone, Debug)]
enum Body {
    Empty { cl_zero: bool },
    Length(Vec<u8>),
    Chunked(ChunkedBody),
}

const EXTS: &[&str] = &["", "", ";a=b", ";x", ";q=\"v v\"", " ;sp=1"];

fn body(mode: Mode, max_len: usize, max_chunk: usize) -> impl Strategy<Value = Body> {
    let chunked = (
        select(&["chunked", "Chunked", "gzip, chunked"][..]),
        vec(
            (
                blob(mode, 1, max_chunk),
                0..3u8,
                any::<bool>(),
                select(EXTS),
            ),
            0..4,
        ),
        0..3u8,
        select(EXTS),
        vec(
            (select(&["X-Trailer", "Checksum"][..]), "[a-z1-9]{0,10}"),
            0..3,
        ),
    )
        .prop_map(|(te, chunks, last_zeros, last_ext, trailers)| {
            Body::Chunked(ChunkedBody {
                te,
                chunks,
                last_zeros,
                last_ext,
                trailers,
            })
        });
    prop_oneof![
        any::<bool>().prop_map(|cl_zero| Body::Empty { cl_zero }),
        blob(mode, 0, max_len).prop_map(Body::Length),
        chunked,
    ]
}

impl Body {
    /// Adds the framing field to the header section and the model; returns the body.
    fn frame(&self, head: &mut Vec<u8>, m: &mut Message) -> Vec<u8> {
        match self {
            Body::Empty { cl_zero } => {
                if *cl_zero {
                    head.extend_from_slice(b"Content-Length: 0\r\n");
                    m.content_length = Some(0);
                }
                Vec::new()
            }
            Body::Length(b) => {
                head.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
                m.content_length = Some(b.len() as u64);
                b.clone()
            }
            Body::Chunked(c) => {
                head.extend_from_slice(format!("Transfer-Encoding: {}\r\n", c.te).as_bytes());
                m.chunked = true;
                let mut out = Vec::new();
                for (data, zeros, upper, ext) in &c.chunks {
                    let size = if *upper {
                        format!("{:X}", data.len())
                    } else {
                        format!("{:x}", data.len())
                    };
                    let zeros = "0".repeat(usize::from(*zeros));
                    out.extend_from_slice(format!("{zeros}{size}{ext}\r\n").as_bytes());
                    out.extend_from_slice(data);
                    out.extend_from_slice(b"\r\n");
                }
                let zeros = "0".repeat(usize::from(c.last_zeros) + 1);
                out.extend_from_slice(format!("{zeros}{}\r\n", c.last_ext).as_bytes());
                for (name, value) in &c.trailers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out
            }
        }
    }
}

// ---- messages -------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Req {
    method: &'static str,
    target: String,
    minor: u8,
    fields: Vec<Field>,
    body: Body,
}

const METHODS: &[&str] = &[
    "GET",
    "POST",
    "PUT",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "HEAD",
    "X_CUSTOM-M",
];
const KNOWN: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"];

fn req(mode: Mode, max_len: usize, max_chunk: usize) -> impl Strategy<Value = Req> {
    (
        select(METHODS),
        prop_oneof![
            10 => "/[a-zA-Z0-9/?=&._~%-]{0,60}",
            1 => Just("*".to_owned()),
            1 => "/[a-z]{1000,1500}",
        ],
        prop_oneof![1 => Just(0u8), 4 => Just(1u8)],
        vec(field(mode), 0..6),
        body(mode, max_len, max_chunk),
    )
        .prop_map(|(method, target, minor, fields, body)| Req {
            method,
            target,
            minor,
            fields,
            body,
        })
}

#[derive(Clone, Debug)]
struct Resp {
    interim: Option<(u16, Vec<Field>)>,
    status: u16,
    reason: String,
    /// `HTTP/1.1 200\r\n`: no space before an empty reason.
    bare: bool,
    minor: u8,
    fields: Vec<Field>,
    body: Body,
    /// Answers a HEAD request (pushed to the parser).
    head: bool,
}

const STATUSES: &[u16] = &[200, 201, 202, 204, 206, 301, 302, 304, 400, 404, 500, 503];

fn resp(
    mode: Mode,
    max_len: usize,
    max_chunk: usize,
    allow_head: bool,
) -> impl Strategy<Value = Resp> {
    let reason = match mode {
        Mode::Safe => "[a-z ]{0,20}".boxed(),
        Mode::Adversarial => "[A-Za-z ]{0,20}".boxed(),
    };
    (
        proptest::option::weighted(
            0.2,
            (select(&[100u16, 102, 103][..]), vec(field(mode), 0..2)),
        ),
        select(STATUSES),
        reason,
        any::<bool>(),
        prop_oneof![1 => Just(0u8), 4 => Just(1u8)],
        vec(field(mode), 0..6),
        body(mode, max_len, max_chunk),
        any::<bool>().prop_map(move |h| h && allow_head),
    )
        .prop_map(
            |(interim, status, reason, bare, minor, fields, body, head)| Resp {
                interim,
                status,
                reason,
                bare,
                minor,
                fields,
                body,
                head,
            },
        )
}

/// How a response stream ends.
#[derive(Clone, Debug)]
enum Last {
    Nothing,
    /// A final response without length: its body runs until `close`.
    CloseDelimited(Vec<Field>, Vec<u8>),
    /// `101 Switching Protocols`, then bytes of another protocol.
    Upgrade(Vec<u8>),
}

fn last(mode: Mode, max_len: usize) -> impl Strategy<Value = Last> {
    prop_oneof![
        2 => Just(Last::Nothing),
        1 => (vec(field(mode), 0..4), blob(mode, 0, max_len)).prop_map(|(f, b)| Last::CloseDelimited(f, b)),
        1 => blob(mode, 0, max_len).prop_map(Last::Upgrade),
    ]
}

/// One expected message and where it sits in the stream.
#[derive(Clone, Debug)]
struct Exp {
    /// The message, timestamps 0.
    msg: Message,
    /// First byte, interim responses included.
    first: usize,
    /// First byte of the message itself.
    start: usize,
    /// End of its header section.
    header_end: usize,
    /// One past its last byte.
    end: usize,
    close_delimited: bool,
    chunked_body: bool,
    known_method: bool,
}

#[derive(Debug, Default)]
struct Built {
    stream: Vec<u8>,
    exp: Vec<Exp>,
    /// `push_request` arguments, in order.
    pushes: Vec<bool>,
}

fn base(kind: MessageKind, minor: u8) -> Message {
    Message {
        kind,
        version_minor: minor,
        start_ns: 0,
        end_ns: 0,
        header_bytes: 0,
        body_bytes: 0,
        host: None,
        user_agent: None,
        traceparent: None,
        tracestate: None,
        content_type: None,
        content_length: None,
        chunked: false,
        connection_close: false,
        expect_continue: false,
        upgrade_h2c: false,
        truncated: false,
        size_unknown: false,
    }
}

fn method_of(s: &str) -> Method {
    match s {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_owned()),
    }
}

impl Built {
    /// Appends one message (`head` is its header section without the final CRLF) and
    /// returns its record, for the caller to set the flags.
    fn push(&mut self, first: usize, mut head: Vec<u8>, mut msg: Message, body: &[u8]) -> &mut Exp {
        head.extend_from_slice(b"\r\n");
        let start = self.stream.len();
        msg.header_bytes = head.len() as u64;
        msg.body_bytes = body.len() as u64;
        self.stream.extend_from_slice(&head);
        let header_end = self.stream.len();
        self.stream.extend_from_slice(body);
        let end = self.stream.len();
        self.exp.push(Exp {
            msg,
            first,
            start,
            header_end,
            end,
            close_delimited: false,
            chunked_body: false,
            known_method: true,
        });
        self.exp.last_mut().expect("just pushed")
    }

    fn requests(reqs: &[Req]) -> Built {
        let mut b = Built::default();
        for r in reqs {
            let kind = MessageKind::Request {
                method: method_of(r.method),
                target: r.target[..r.target.len().min(MAX_TARGET)].to_owned(),
            };
            let mut m = base(kind, r.minor);
            let mut head = format!("{} {} HTTP/1.{}\r\n", r.method, r.target, r.minor).into_bytes();
            r.fields.iter().for_each(|f| f.encode(&mut head));
            apply_fields(&mut m, &r.fields);
            let body = r.body.frame(&mut head, &mut m);
            let first = b.stream.len();
            let e = b.push(first, head, m, &body);
            e.chunked_body = matches!(r.body, Body::Chunked(_));
            e.known_method = KNOWN.contains(&r.method);
        }
        b
    }

    fn responses(resps: &[Resp], last: &Last) -> Built {
        let mut b = Built::default();
        for r in resps {
            let first = b.stream.len();
            if let Some((status, fields)) = &r.interim {
                let mut head = format!("HTTP/1.1 {status} Interim\r\n").into_bytes();
                fields.iter().for_each(|f| f.encode(&mut head));
                head.extend_from_slice(b"\r\n");
                b.stream.extend_from_slice(&head);
            }
            let reason = r.reason.trim_matches(' ');
            let kind = MessageKind::Response {
                status: r.status,
                reason: (!reason.is_empty()).then(|| reason.to_owned()),
            };
            let mut m = base(kind, r.minor);
            let mut head = if r.bare && reason.is_empty() {
                format!("HTTP/1.{} {}\r\n", r.minor, r.status)
            } else {
                format!("HTTP/1.{} {} {}\r\n", r.minor, r.status, r.reason)
            }
            .into_bytes();
            r.fields.iter().for_each(|f| f.encode(&mut head));
            apply_fields(&mut m, &r.fields);
            let bodyless = r.head || r.status == 204 || r.status == 304;
            // A final response without any length would run until close.
            let framing = match &r.body {
                Body::Empty { .. } if !bodyless => Body::Empty { cl_zero: true },
                other => other.clone(),
            };
            let mut body = framing.frame(&mut head, &mut m);
            if bodyless {
                body.clear();
            }
            b.push(first, head, m, &body).chunked_body =
                !bodyless && matches!(r.body, Body::Chunked(_));
            b.pushes.push(r.head);
        }
        let first = b.stream.len();
        match last {
            Last::Nothing => {}
            Last::CloseDelimited(fields, body) => {
                let kind = MessageKind::Response {
                    status: 200,
                    reason: Some("OK".into()),
                };
                let mut m = base(kind, 1);
                let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
                fields.iter().for_each(|f| f.encode(&mut head));
                apply_fields(&mut m, fields);
                b.push(first, head, m, body).close_delimited = true;
                b.pushes.push(false);
            }
            Last::Upgrade(after) => {
                let kind = MessageKind::Response {
                    status: 101,
                    reason: Some("Switching Protocols".into()),
                };
                let mut m = base(kind, 1);
                let fields = [Field {
                    name: "Connection",
                    case: 0,
                    before: " ",
                    value: "Upgrade".into(),
                    after: "",
                }];
                let mut head =
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".to_vec();
                fields.iter().for_each(|f| f.encode(&mut head));
                apply_fields(&mut m, &fields);
                b.push(first, head, m, &[]);
                b.stream.extend_from_slice(after);
                b.pushes.push(false);
            }
        }
        b
    }
}

// ---- running --------------------------------------------------------------------------

/// Chunk boundaries `0 = b0 <= b1 <= ... <= bk = len` from random cut points.
fn bounds(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut b: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    b.push(0);
    b.push(len);
    b.sort_unstable();
    b
}

fn ts_of_chunk(i: usize) -> u64 {
    1000 + i as u64
}

/// Timestamp of the chunk holding byte `offset`.
fn ts_at(bounds: &[usize], offset: usize) -> u64 {
    let i = bounds
        .windows(2)
        .position(|w| w[0] <= offset && offset < w[1])
        .expect("offset inside the stream");
    ts_of_chunk(i)
}

impl Exp {
    fn with_ts(&self, bounds: &[usize]) -> Message {
        let mut m = self.msg.clone();
        m.start_ns = ts_at(bounds, self.start);
        m.size_unknown = self.close_delimited;
        m.end_ns = if self.close_delimited {
            CLOSE_TS
        } else {
            ts_at(bounds, self.end - 1)
        };
        m
    }
}

/// A chunk captured like the kernel does it.
fn kernel(ts: u64, data: &[u8]) -> Chunk<'_> {
    let head = &data[..data.len().min(MAX_HEAD)];
    let tail_len = data.len().saturating_sub(MAX_HEAD).min(MAX_TAIL);
    Chunk::captured(ts, data.len() as u64, head, &data[data.len() - tail_len..])
}

fn run(
    dir: Direction,
    built: &Built,
    bounds: &[usize],
    captured: bool,
) -> (Vec<Message>, StreamParser) {
    let mut p = StreamParser::new(dir);
    built.pushes.iter().for_each(|&h| p.push_request(h));
    let mut out = Vec::new();
    for (i, w) in bounds.windows(2).enumerate() {
        let data = &built.stream[w[0]..w[1]];
        let chunk = if captured {
            kernel(ts_of_chunk(i), data)
        } else {
            Chunk::full(ts_of_chunk(i), data)
        };
        p.feed(&chunk, &mut out);
        assert!(p.buffered_bytes() <= MAX_LINE);
    }
    p.close(CLOSE_TS, &mut out);
    (out, p)
}

fn check_exact(dir: Direction, built: &Built, cuts: &[Index]) -> Result<(), TestCaseError> {
    let b = bounds(cuts, built.stream.len());
    let expected: Vec<Message> = built.exp.iter().map(|e| e.with_ts(&b)).collect();
    let (out, p) = run(dir, built, &b, false);
    prop_assert_eq!(&out, &expected, "bounds {:?}", b);
    let st = p.stats();
    prop_assert_eq!((st.parse_errors, st.resyncs, st.truncated), (0, 0, 0));
    prop_assert_eq!(st.messages, expected.len() as u64);
    Ok(())
}

/// A truncated message is compatible with an expected one when what it claims to know
/// about the message's start agrees.
fn compatible(o: &Message, e: &Message) -> bool {
    if !o.truncated {
        return o == e;
    }
    o.start_ns == e.start_ns
        && match (&o.kind, &e.kind) {
            (
                MessageKind::Request {
                    method: om,
                    target: ot,
                },
                MessageKind::Request {
                    method: em,
                    target: et,
                },
            ) => om == em && et.starts_with(ot.as_str()),
            (
                MessageKind::Response { status: os, .. },
                MessageKind::Response { status: es, .. },
            ) => os == es,
            _ => false,
        }
}

/// `aligned` adds cuts at message starts (where a client or server usually starts a
/// write), so that the completeness half of the property has messages to check.
fn check_captured(
    dir: Direction,
    built: &Built,
    cuts: &[Index],
    aligned: &[Index],
) -> Result<(), TestCaseError> {
    let mut b = bounds(cuts, built.stream.len());
    if !built.exp.is_empty() {
        b.extend(
            aligned
                .iter()
                .map(|i| built.exp[i.index(built.exp.len())].first),
        );
        b.sort_unstable();
    }
    let expected: Vec<Message> = built.exp.iter().map(|e| e.with_ts(&b)).collect();
    let (out, p) = run(dir, built, &b, true);

    // Soundness: a subsequence of the expected messages, each compatible.
    let mut j = 0;
    for o in &out {
        while j < expected.len() && !compatible(o, &expected[j]) {
            j += 1;
        }
        prop_assert!(
            j < expected.len(),
            "unexpected message {:?}\nbounds {:?}\nexpected {:#?}",
            o,
            b,
            expected
        );
        j += 1;
    }
    prop_assert_eq!(p.stats().parse_errors, 0, "bounds {:?}", b);

    // Completeness for messages that start a chunk with their header section captured.
    for (e, want) in built.exp.iter().zip(&expected) {
        let Some(i) = b.windows(2).position(|w| w[0] == e.first && w[1] > w[0]) else {
            continue;
        };
        let captured_head = (b[i + 1] - b[i]).min(MAX_HEAD);
        if e.header_end - e.first > captured_head || !e.known_method {
            continue;
        }
        if e.chunked_body {
            prop_assert!(
                out.iter().any(|o| compatible(o, want)),
                "missing {:?}\nbounds {:?}",
                want,
                b
            );
        } else {
            prop_assert!(
                out.contains(want),
                "missing {:?}\nbounds {:?}\ngot {:#?}",
                want,
                b,
                out
            );
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn split_invariance_requests(
        reqs in vec(req(Mode::Adversarial, 300, 100), 1..6),
        cuts in vec(any::<Index>(), 0..30),
    ) {
        let built = Built::requests(&reqs);
        check_exact(Direction::Request, &built, &cuts)?;
        check_exact(Direction::Request, &built, &[])?;
    }

    #[test]
    fn split_invariance_responses(
        resps in vec(resp(Mode::Adversarial, 300, 100, true), 0..6),
        last in last(Mode::Adversarial, 300),
        cuts in vec(any::<Index>(), 0..30),
    ) {
        let built = Built::responses(&resps, &last);
        check_exact(Direction::Response, &built, &cuts)?;
        check_exact(Direction::Response, &built, &[])?;
    }

    #[test]
    fn captured_like_the_kernel_requests(
        reqs in vec(req(Mode::Safe, 6000, 3000), 1..8),
        cuts in vec(any::<Index>(), 0..8),
        aligned in vec(any::<Index>(), 0..8),
    ) {
        check_captured(Direction::Request, &Built::requests(&reqs), &cuts, &aligned)?;
    }

    #[test]
    fn captured_like_the_kernel_responses(
        resps in vec(resp(Mode::Safe, 6000, 3000, false), 0..8),
        last in last(Mode::Safe, 6000),
        cuts in vec(any::<Index>(), 0..8),
        aligned in vec(any::<Index>(), 0..8),
    ) {
        check_captured(Direction::Response, &Built::responses(&resps, &last), &cuts, &aligned)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        response in any::<bool>(),
        data in vec(any::<u8>(), 0..4000),
        chunks in vec((any::<Index>(), any::<Index>(), any::<Index>()), 0..16),
    ) {
        let dir = if response { Direction::Response } else { Direction::Request };
        feed_randomly(dir, &data, &chunks, &[]);
    }

    #[test]
    fn mutated_streams_never_panic(
        response in any::<bool>(),
        reqs in vec(req(Mode::Adversarial, 3000, 1000), 1..4),
        resps in vec(resp(Mode::Adversarial, 3000, 1000, true), 1..4),
        mutations in vec((any::<Index>(), any::<u8>()), 0..8),
        chunks in vec((any::<Index>(), any::<Index>(), any::<Index>()), 0..16),
        pushes in vec(any::<bool>(), 0..4),
    ) {
        let (dir, mut built) = if response {
            (Direction::Response, Built::responses(&resps, &Last::Nothing))
        } else {
            (Direction::Request, Built::requests(&reqs))
        };
        let len = built.stream.len();
        for (at, byte) in &mutations {
            built.stream[at.index(len)] = *byte;
        }
        feed_randomly(dir, &built.stream, &chunks, &pushes);
    }
}

/// Cuts `data` at random points and captures each chunk with a random head and tail
/// (so gaps appear anywhere), checking the parser's bounds after every chunk.
fn feed_randomly(dir: Direction, data: &[u8], chunks: &[(Index, Index, Index)], pushes: &[bool]) {
    let cuts: Vec<Index> = chunks.iter().map(|c| c.0).collect();
    let b = bounds(&cuts, data.len());
    let mut p = StreamParser::new(dir);
    let mut out = Vec::new();
    for (i, w) in b.windows(2).enumerate() {
        let piece = &data[w[0]..w[1]];
        let (head_pick, tail_pick) = chunks
            .get(i)
            .map_or((None, None), |c| (Some(c.1), Some(c.2)));
        let head_len = head_pick.map_or(piece.len(), |h| h.index(piece.len() + 1));
        let tail_len = tail_pick.map_or(0, |t| t.index((piece.len() - head_len).min(MAX_TAIL) + 1));
        let chunk = Chunk::captured(
            ts_of_chunk(i),
            piece.len() as u64,
            &piece[..head_len],
            &piece[piece.len() - tail_len..],
        );
        if let Some(&h) = pushes.get(i) {
            p.push_request(h);
        }
        p.feed(&chunk, &mut out);
        assert!(
            p.buffered_bytes() <= MAX_LINE,
            "buffered {}",
            p.buffered_bytes()
        );
        assert!(p.pending_requests() <= MAX_PENDING);
    }
    p.close(CLOSE_TS, &mut out);
    assert_eq!(p.stats().messages, out.len() as u64);
    assert!(
        out.iter()
            .all(|m| m.host.as_ref().is_none_or(|h| h.len() <= MAX_VALUE))
    );
}
