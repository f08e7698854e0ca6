//! Whole traces across processes on one node. The test process (untraced) is the load;
//! tests/programs/goproxy (Go, `httputil.ReverseProxy`) forwards to
//! tests/programs/pybackend (Python, a thread per connection), which calls
//! tests/programs/goserver (Go):
//!
//! ```text
//! load ──► goproxy ─────────► pybackend ─────────► goserver
//!          SERVER ► CLIENT ──► SERVER ► CLIENT ───► SERVER
//! ```
//!
//! With all three traced, each request must come out as one trace of exactly these five
//! spans, linked by parent span ids: inside a process a CLIENT span is the child of the
//! SERVER span whose handling made the call (per thread in Python; per goroutine, and the
//! goroutines it spawns, in Go); across processes a SERVER span is the child of the CLIENT
//! span that sent that very request. Every request carries a unique id in its path and
//! every hop keeps it there, so a span that lands in another request's trace (cross-talk
//! under concurrency, a keep-alive connection paired with the wrong request) shows.
//!
//! Also: an incoming `traceparent` is followed, spans are not held back waiting for an
//! untraced peer, a refused connect is an error CLIENT span, and the Prometheus service
//! graph counts each joined client→server call exactly once.
//!
//! Failures print, per kind of problem, how many requests have it and the offending
//! traces as trees (role, kind, ids, path, status, times relative to the trace's start).
//!
//! Run serially (`--test-threads=1`): every test loads the eBPF programs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::SocketAddr,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{self, Batch, ConnMode, Exchange, Request, run_concurrent, spread},
    harness::{
        self, Agent, GoFlavor, Program, Server, build_go_program, free_port, go_toolchain,
        start_go_server, start_goproxy, start_goproxy_wrapped, start_pybackend, start_pyproxy,
        start_python_http_server,
    },
    receiver::{Protocol, ReceivedSpan, Receiver},
};

/// `opentelemetry.proto.trace.v1.Span.SpanKind`.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// Longest wait for the expected spans.
const SPAN_WAIT: Duration = Duration::from_secs(30);
/// Stop waiting earlier when no span arrived for this long.
const QUIET: Duration = Duration::from_secs(3);
/// Once the expected count arrived: time for late duplicates to show.
const SETTLE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Programs and the agent

fn go_bin(program: &str, version: &str, flavor: GoFlavor) -> PathBuf {
    build_go_program(program, &go_toolchain(version), flavor)
}

/// goproxy → pybackend → goserver, all running.
struct Chain {
    goserver: Server,
    pybackend: Program,
    goproxy: Program,
}

impl Chain {
    /// Both Go programs built with Go `version` in `flavor`; `keepalive`: pybackend keeps
    /// one backend connection per serving thread.
    fn start(version: &str, flavor: GoFlavor, keepalive: bool) -> Chain {
        let goserver = start_go_server(&go_bin("goserver", version, flavor));
        let pybackend = start_pybackend(goserver.addr, keepalive);
        let goproxy = start_goproxy(&go_bin("goproxy", version, flavor), pybackend.addr);
        Chain {
            goserver,
            pybackend,
            goproxy,
        }
    }

    fn pids(&self) -> Vec<u32> {
        vec![
            self.goproxy.pid(),
            self.pybackend.pid(),
            self.goserver.pid(),
        ]
    }

    fn roles(&self) -> Roles {
        Roles::new(&[
            (self.goproxy.pid(), "goproxy"),
            (self.pybackend.pid(), "pybackend"),
            (self.goserver.pid(), "goserver"),
        ])
    }
}

/// The agent tracing `pids`, exporting OTLP/gRPC to `recv`, plus `extra` flags.
fn start_agent(pids: &[u32], recv: &Receiver, extra: &[String]) -> Agent {
    let mut args: Vec<String> = Vec::new();
    for pid in pids {
        args.push("--pid".into());
        args.push(pid.to_string());
    }
    args.extend([
        "--otlp-endpoint".into(),
        recv.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        "grpc".into(),
    ]);
    args.extend(extra.iter().cloned());
    Agent::start(args)
}

/// Waits until `n` spans arrived — or none arrived for [`QUIET`], or [`SPAN_WAIT`]
/// passed — and returns how many there are.
fn wait_spans(recv: &Receiver, n: usize) -> usize {
    let start = Instant::now();
    let (mut seen, mut since) = (0, Instant::now());
    loop {
        let got = recv.wait_for_spans(n, Duration::from_millis(250)).len();
        if got >= n {
            return got;
        }
        if got != seen {
            (seen, since) = (got, Instant::now());
        }
        if since.elapsed() > QUIET || start.elapsed() > SPAN_WAIT {
            return got;
        }
    }
}

/// Waits for `n` spans (see [`wait_spans`]), gives late ones [`SETTLE`], stops the agent
/// (which flushes) and returns everything received.
fn collect(recv: &Receiver, agent: Agent, n: usize) -> Vec<ReceivedSpan> {
    wait_spans(recv, n);
    thread::sleep(SETTLE);
    let exit = agent.stop();
    assert!(
        exit.status.success(),
        "the agent exited with {}\nstderr:\n{}",
        exit.status,
        harness::tail(&exit.stderr, 6000)
    );
    recv.spans()
}

/// Every answer had its expected status (else the programs, not the agent, are broken).
fn assert_statuses(sent: &[Exchange], what: &str) {
    let wrong: Vec<String> = sent
        .iter()
        .filter(|e| Some(e.status) != e.expect_status)
        .map(|e| {
            format!(
                "{} {}: {} (expected {:?})",
                e.method, e.target, e.status, e.expect_status
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} requests got an unexpected status:\n{}",
        wrong.len(),
        sent.len(),
        wrong.join("\n")
    );
}

/// Half of the connections keep-alive, half a fresh connection per request.
fn mixed(c: usize) -> ConnMode {
    if c.is_multiple_of(2) {
        ConnMode::KeepAlive
    } else {
        ConnMode::Fresh
    }
}

/// Runs each `(label, case)`, all of them even when one panics, then panics with every
/// failure: one run says what fails in each configuration.
fn run_all(cases: Vec<(String, Box<dyn FnOnce()>)>) {
    // The panics are caught and reported below, once: keep only where they happened.
    static WHERE: Mutex<Option<String>> = Mutex::new(None);
    let mut failed = Vec::new();
    for (label, case) in cases {
        eprintln!("--- {label}");
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|info| {
            *WHERE.lock().unwrap_or_else(|e| e.into_inner()) =
                info.location().map(ToString::to_string);
        }));
        let result = panic::catch_unwind(AssertUnwindSafe(case));
        panic::set_hook(hook);
        if let Err(e) = result {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(non-string panic)".into());
            let at = WHERE
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            failed.push(format!("===== {label} FAILED (at {at}) =====\n{msg}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

// ---------------------------------------------------------------------------
// Spans

/// Which test program a span came from, by its resource's `process.pid`.
struct Roles(BTreeMap<String, &'static str>);

impl Roles {
    fn new(pids: &[(u32, &'static str)]) -> Roles {
        Roles(pids.iter().map(|(p, r)| (p.to_string(), *r)).collect())
    }

    fn of(&self, s: &ReceivedSpan) -> String {
        let pid = s.resource_attr("process.pid").unwrap_or("?");
        match self.0.get(pid) {
            Some(role) => role.to_string(),
            None => format!("pid {pid}"),
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        SERVER => "SERVER",
        CLIENT => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

/// The path a span is about: a server span's `url.path`, the path of a client span's
/// `url.full`.
fn span_path(s: &ReceivedSpan) -> Option<String> {
    if let Some(p) = s.attr("url.path") {
        return Some(p);
    }
    let full = s.attr("url.full")?;
    let rest = full.split_once("://").map_or(full.as_str(), |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    Some(client::path_of(path).to_string())
}

/// The request id in a path of these tests, `/{prefix}/{id}` or `/leaf/{id}-{k}`.
fn request_id(path: &str) -> Option<&str> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let (_, last, None) = (segments.next()?, segments.next()?, segments.next()) else {
        return None;
    };
    last.split('-').next().filter(|id| !id.is_empty())
}

fn span_request_id(s: &ReceivedSpan) -> Option<String> {
    span_path(s).and_then(|p| request_id(&p).map(str::to_string))
}

/// One line about `s`; times in µs relative to `t0`.
fn describe(s: &ReceivedSpan, roles: &Roles, t0: u64) -> String {
    let rel = |t: u64| (t as i128 - t0 as i128) as f64 / 1000.0;
    let server = match s.span.kind {
        CLIENT => format!(
            " server={}:{}",
            s.attr("server.address").unwrap_or_default(),
            s.attr("server.port").unwrap_or_default()
        ),
        _ => String::new(),
    };
    let error_type = s
        .attr("error.type")
        .map(|e| format!(" error.type={e}"))
        .unwrap_or_default();
    format!(
        "[{} {}] {:?} span={} parent={} trace={} path={}{server} status={}{}{error_type} \
         t={:+.1}..{:+.1}µs",
        roles.of(s),
        kind_name(s.span.kind),
        s.name(),
        s.span_id_hex(),
        if s.is_root() {
            "-".to_string()
        } else {
            s.parent_span_id_hex()
        },
        s.trace_id_hex(),
        span_path(s).unwrap_or_else(|| "?".into()),
        s.attr("http.response.status_code")
            .unwrap_or_else(|| "-".into()),
        if s.is_error() { " ERROR" } else { "" },
        rel(s.span.start_time_unix_nano),
        rel(s.span.end_time_unix_nano),
    )
}

/// `spans` as trees by parent span id (those whose parent is not among them at the top),
/// siblings by start time.
fn dump(spans: &[&ReceivedSpan], roles: &Roles) -> String {
    dump_from(spans, roles, earliest(spans))
}

fn earliest(spans: &[&ReceivedSpan]) -> u64 {
    spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(u64::MAX)
}

/// [`dump`] with times relative to `t0`.
fn dump_from(spans: &[&ReceivedSpan], roles: &Roles, t0: u64) -> String {
    let ids: BTreeSet<String> = spans.iter().map(|s| s.span_id_hex()).collect();
    let mut sorted: Vec<&ReceivedSpan> = spans.to_vec();
    sorted.sort_by_key(|s| s.span.start_time_unix_nano);
    fn walk(
        out: &mut String,
        s: &ReceivedSpan,
        depth: usize,
        all: &[&ReceivedSpan],
        roles: &Roles,
        t0: u64,
    ) {
        let _ = writeln!(out, "    {}{}", "  ".repeat(depth), describe(s, roles, t0));
        if depth > 16 {
            return; // a parent cycle
        }
        for c in all
            .iter()
            .filter(|c| !c.is_root() && c.parent_span_id_hex() == s.span_id_hex())
        {
            walk(out, c, depth + 1, all, roles, t0);
        }
    }
    let mut out = String::new();
    for s in sorted
        .iter()
        .filter(|s| s.is_root() || !ids.contains(&s.parent_span_id_hex()))
    {
        walk(&mut out, s, 0, &sorted, roles, t0);
    }
    out
}

// ---------------------------------------------------------------------------
// Expected traces and the checker

/// One node of the span tree a request must produce.
#[derive(Clone, Debug)]
struct Want {
    role: &'static str,
    kind: i32,
    path: String,
    children: Vec<Want>,
}

impl Want {
    fn server(role: &'static str, path: impl Into<String>, children: Vec<Want>) -> Want {
        Want {
            role,
            kind: SERVER,
            path: path.into(),
            children,
        }
    }

    fn client(role: &'static str, path: impl Into<String>, children: Vec<Want>) -> Want {
        Want {
            role,
            kind: CLIENT,
            path: path.into(),
            children,
        }
    }

    /// Role and kind, without the path: the same for every request.
    fn what(&self) -> String {
        format!("{} {}", self.role, kind_name(self.kind))
    }

    fn size(&self) -> usize {
        1 + self.children.iter().map(Want::size).sum::<usize>()
    }

    fn count(&self, into: &mut BTreeMap<String, usize>) {
        *into.entry(self.what()).or_default() += 1;
        for c in &self.children {
            c.count(into);
        }
    }
}

/// GET /chain/{id}: goproxy SERVER → CLIENT → pybackend SERVER → CLIENT → goserver SERVER.
fn chain_tree(id: &str) -> Want {
    let chain = format!("/chain/{id}");
    let users = format!("/users/{id}");
    Want::server(
        "goproxy",
        &chain,
        vec![Want::client(
            "goproxy",
            &chain,
            vec![Want::server(
                "pybackend",
                &chain,
                vec![Want::client(
                    "pybackend",
                    &users,
                    vec![Want::server("goserver", &users, vec![])],
                )],
            )],
        )],
    )
}

/// One request sent and the trace it must produce.
struct Expect {
    id: String,
    tree: Want,
    /// (trace id, parent span id) of the `traceparent` it was sent with.
    traceparent: Option<(String, String)>,
}

impl Expect {
    fn new(id: &str, tree: Want) -> Expect {
        Expect {
            id: id.to_string(),
            tree,
            traceparent: None,
        }
    }
}

type Key = (String, i32, String);

/// Checks received spans against the expected trees.
struct Checker<'a> {
    roles: &'a Roles,
    spans: &'a [ReceivedSpan],
    by_span_id: BTreeMap<String, &'a ReceivedSpan>,
    by_trace: BTreeMap<String, Vec<&'a ReceivedSpan>>,
    by_parent: BTreeMap<String, Vec<&'a ReceivedSpan>>,
    by_key: BTreeMap<Key, Vec<&'a ReceivedSpan>>,
    by_request: BTreeMap<String, Vec<&'a ReceivedSpan>>,
    /// Span ids some expected node matched.
    claimed: BTreeSet<String>,
    /// Problem → (request id, details) of each request that has it.
    problems: BTreeMap<String, Vec<(String, String)>>,
    /// Request id → its spans, dumped.
    dumps: BTreeMap<String, String>,
    bad_requests: BTreeSet<String>,
    global: Vec<String>,
    /// The worst nesting violation: ns, and where.
    worst_nesting: Option<(u64, String)>,
}

fn key_of(s: &ReceivedSpan, roles: &Roles) -> Key {
    (roles.of(s), s.span.kind, span_path(s).unwrap_or_default())
}

impl<'a> Checker<'a> {
    fn new(spans: &'a [ReceivedSpan], roles: &'a Roles) -> Checker<'a> {
        let mut c = Checker {
            roles,
            spans,
            by_span_id: BTreeMap::new(),
            by_trace: BTreeMap::new(),
            by_parent: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_request: BTreeMap::new(),
            claimed: BTreeSet::new(),
            problems: BTreeMap::new(),
            dumps: BTreeMap::new(),
            bad_requests: BTreeSet::new(),
            global: Vec::new(),
            worst_nesting: None,
        };
        let mut duplicates = Vec::new();
        for s in spans {
            if c.by_span_id.insert(s.span_id_hex(), s).is_some() {
                duplicates.push(s);
            }
            c.by_trace.entry(s.trace_id_hex()).or_default().push(s);
            if !s.is_root() {
                c.by_parent
                    .entry(s.parent_span_id_hex())
                    .or_default()
                    .push(s);
            }
            c.by_key.entry(key_of(s, roles)).or_default().push(s);
            if let Some(id) = span_request_id(s) {
                c.by_request.entry(id).or_default().push(s);
            }
        }
        if !duplicates.is_empty() {
            c.global.push(format!(
                "{} span ids exported more than once:\n{}",
                duplicates.len(),
                dump(&duplicates[..duplicates.len().min(10)], roles)
            ));
        }
        c
    }

    fn find(&self, w: &Want) -> Vec<&'a ReceivedSpan> {
        self.by_key
            .get(&(w.role.to_string(), w.kind, w.path.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// Where a span that is not where it should be hangs instead.
    fn whereabouts(&self, s: &ReceivedSpan) -> String {
        if s.is_root() {
            return "it is a root span".into();
        }
        match self.by_span_id.get(&s.parent_span_id_hex()) {
            None => "its parent span id was never exported".into(),
            Some(p) if span_request_id(p) == span_request_id(s) => format!(
                "it hangs under the {} {} of the same request",
                self.roles.of(p),
                kind_name(p.span.kind)
            ),
            Some(p) => format!(
                "cross-talk: it hangs under a {} {} of another request",
                self.roles.of(p),
                kind_name(p.span.kind)
            ),
        }
    }

    /// Checks one request; problems are recorded per kind, with the request's spans.
    fn check(&mut self, e: &Expect) {
        let mut problems: Vec<(String, String)> = Vec::new();
        let roots = self.find(&e.tree);
        let root = match roots.as_slice() {
            [] => {
                problems.push((
                    format!("no {} span", e.tree.what()),
                    format!("nothing with path {}", e.tree.path),
                ));
                None
            }
            [r] => Some(*r),
            [r, ..] => {
                problems.push((
                    format!("{} span exported more than once", e.tree.what()),
                    format!("{} spans with path {}", roots.len(), e.tree.path),
                ));
                Some(*r)
            }
        };
        let mut trace: Vec<&ReceivedSpan> = Vec::new();
        if let Some(root) = root {
            match &e.traceparent {
                None if !root.is_root() => problems.push((
                    format!("{} has a parent but no traceparent was sent", e.tree.what()),
                    self.whereabouts(root),
                )),
                None => {}
                Some((trace_id, parent)) => {
                    if root.trace_id_hex() != *trace_id {
                        problems.push((
                            format!("{} is not in the traceparent's trace", e.tree.what()),
                            format!("trace {} instead of {trace_id}", root.trace_id_hex()),
                        ));
                    }
                    if root.parent_span_id_hex() != *parent {
                        problems.push((
                            format!("{}'s parent is not the traceparent's", e.tree.what()),
                            format!("parent {:?} instead of {parent}", root.parent_span_id_hex()),
                        ));
                    }
                }
            }
            self.walk(&e.tree, root, &mut problems);
            trace = self.by_trace[&root.trace_id_hex()].clone();
            if trace.len() != e.tree.size() {
                problems.push((
                    "wrong number of spans in the trace".into(),
                    format!("{} spans instead of {}", trace.len(), e.tree.size()),
                ));
            }
            let foreign: Vec<String> = trace
                .iter()
                .filter(|s| span_request_id(s).as_deref() != Some(e.id.as_str()))
                .map(|s| describe(s, self.roles, 0))
                .collect();
            if !foreign.is_empty() {
                problems.push((
                    "cross-talk: spans of other requests in the trace".into(),
                    foreign.join("\n"),
                ));
            }
            if let Some((trace_id, _)) = &e.traceparent {
                let strays: Vec<String> = self
                    .by_request
                    .get(&e.id)
                    .into_iter()
                    .flatten()
                    .filter(|s| s.trace_id_hex() != *trace_id)
                    .map(|s| describe(s, self.roles, 0))
                    .collect();
                if !strays.is_empty() {
                    problems.push((
                        "spans of the request outside the traceparent's trace".into(),
                        strays.join("\n"),
                    ));
                }
            }
        }
        if problems.is_empty() {
            return;
        }
        self.bad_requests.insert(e.id.clone());
        let elsewhere: Vec<&ReceivedSpan> = self
            .by_request
            .get(&e.id)
            .into_iter()
            .flatten()
            .filter(|s| !trace.iter().any(|t| t.span_id_hex() == s.span_id_hex()))
            .copied()
            .collect();
        let t0 = earliest(&trace).min(earliest(&elsewhere));
        let mut text = String::new();
        if !trace.is_empty() {
            let _ = write!(
                text,
                "  its trace {}:\n{}",
                trace[0].trace_id_hex(),
                dump_from(&trace, self.roles, t0)
            );
        }
        if !elsewhere.is_empty() {
            let _ = write!(
                text,
                "  its spans in other traces:\n{}",
                dump_from(&elsewhere, self.roles, t0)
            );
        }
        self.dumps.insert(e.id.clone(), text);
        // One entry per request and kind of problem (a fan-out can miss several children).
        let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (what, detail) in problems {
            grouped.entry(what).or_default().push(detail);
        }
        for (what, details) in grouped {
            self.problems
                .entry(what)
                .or_default()
                .push((e.id.clone(), details.join("; ")));
        }
    }

    fn walk(&mut self, want: &Want, span: &'a ReceivedSpan, problems: &mut Vec<(String, String)>) {
        self.claimed.insert(span.span_id_hex());
        let mut kids: Vec<&ReceivedSpan> = self
            .by_parent
            .get(&span.span_id_hex())
            .cloned()
            .unwrap_or_default();
        for w in &want.children {
            let matched = kids.iter().position(|k| {
                key_of(k, self.roles) == (w.role.to_string(), w.kind, w.path.clone())
            });
            let child = match matched {
                Some(i) => {
                    let c = kids.remove(i);
                    if c.trace_id_hex() != span.trace_id_hex() {
                        problems.push((
                            format!(
                                "{} in another trace than its parent {}",
                                w.what(),
                                want.what()
                            ),
                            format!("{} vs {}", c.trace_id_hex(), span.trace_id_hex()),
                        ));
                    }
                    self.nesting(want, span, w, c, problems);
                    Some(c)
                }
                None => {
                    // Say where it went, and keep checking it and below it as if it
                    // were in place: the rest is worth knowing about too.
                    let found = self.find(w);
                    let (where_, next) = match found.as_slice() {
                        [] => ("it was not exported".to_string(), None),
                        [f] => (self.whereabouts(f), Some(*f)),
                        [f, ..] => (format!("it was exported {} times", found.len()), Some(*f)),
                    };
                    problems.push((
                        format!(
                            "{} is not the child of {} ({where_})",
                            w.what(),
                            want.what()
                        ),
                        format!(
                            "no child {} {} under {}",
                            w.what(),
                            w.path,
                            span.span_id_hex()
                        ),
                    ));
                    // Would it nest in time where it belongs?
                    if let Some(f) = next {
                        self.nesting(want, span, w, f, problems);
                    }
                    next
                }
            };
            if let Some(c) = child {
                if !self.claimed.contains(&c.span_id_hex()) {
                    self.walk(w, c, problems);
                }
            }
        }
        for k in kids {
            problems.push((
                format!(
                    "unexpected {} {} {:?} under {}",
                    self.roles.of(k),
                    kind_name(k.span.kind),
                    k.name(),
                    want.what()
                ),
                describe(k, self.roles, span.span.start_time_unix_nano),
            ));
        }
    }

    /// Child within its parent's time window, strictly (one kernel clock for both).
    fn nesting(
        &mut self,
        pw: &Want,
        parent: &ReceivedSpan,
        cw: &Want,
        child: &ReceivedSpan,
        problems: &mut Vec<(String, String)>,
    ) {
        let (p, c) = (&parent.span, &child.span);
        let early = p
            .start_time_unix_nano
            .saturating_sub(c.start_time_unix_nano);
        let late = c.end_time_unix_nano.saturating_sub(p.end_time_unix_nano);
        if early == 0 && late == 0 {
            return;
        }
        let detail = format!(
            "{} starts {early} ns before and ends {late} ns after its parent {}",
            cw.what(),
            pw.what()
        );
        let worst = early.max(late);
        if self.worst_nesting.as_ref().is_none_or(|(w, _)| worst > *w) {
            self.worst_nesting = Some((worst, detail.clone()));
        }
        problems.push((
            format!("{} not within its parent {} in time", cw.what(), pw.what()),
            detail,
        ));
    }

    /// Checks every request, then the whole: trace count, spans per service and kind,
    /// spans that belong to no request. Panics with everything found.
    fn assert_all(mut self, expects: &[Expect], what: &str) {
        for e in expects {
            self.check(e);
        }
        if self.by_trace.len() != expects.len() {
            self.global.push(format!(
                "{} traces for {} requests",
                self.by_trace.len(),
                expects.len()
            ));
        }
        let mut want: BTreeMap<String, usize> = BTreeMap::new();
        for e in expects {
            e.tree.count(&mut want);
        }
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        for s in self.spans {
            *got.entry(format!("{} {}", self.roles.of(s), kind_name(s.span.kind)))
                .or_default() += 1;
        }
        if got != want {
            self.global.push(format!(
                "spans per service and kind: got {got:?}, want {want:?}"
            ));
        }
        let unclaimed: Vec<&ReceivedSpan> = self
            .spans
            .iter()
            .filter(|s| !self.claimed.contains(&s.span_id_hex()))
            .collect();
        if !unclaimed.is_empty() {
            self.global.push(format!(
                "{} spans are in no request's tree, e.g.:\n{}",
                unclaimed.len(),
                dump(&unclaimed[..unclaimed.len().min(8)], self.roles)
            ));
        }
        if self.global.is_empty() && self.problems.is_empty() {
            return;
        }
        let mut msg = format!(
            "{what}: {} of {} requests have problems; {} spans received\n",
            self.bad_requests.len(),
            expects.len(),
            self.spans.len()
        );
        for g in &self.global {
            let _ = writeln!(msg, "- {g}");
        }
        if let Some((ns, detail)) = &self.worst_nesting {
            let _ = writeln!(
                msg,
                "- worst time nesting violation: {ns} ns ({:.1} µs): {detail}",
                *ns as f64 / 1000.0
            );
        }
        let mut kinds: Vec<(&String, &Vec<(String, String)>)> = self.problems.iter().collect();
        kinds.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        for (problem, examples) in &kinds {
            let _ = writeln!(msg, "- {} requests: {problem}", examples.len());
        }
        // Two examples of each; a request's spans are printed the first time it is shown.
        let mut shown = BTreeSet::new();
        for (problem, examples) in kinds {
            let _ = writeln!(msg, "\n=== {problem} ({} requests), e.g.:", examples.len());
            for (id, details) in examples.iter().take(2) {
                let _ = writeln!(msg, "request {id}: {details}");
                if shown.insert(id) {
                    msg.push_str(&self.dumps[id]);
                } else {
                    msg.push_str("  (its spans are shown above)\n");
                }
            }
        }
        panic!("{msg}");
    }
}

fn check_traces(spans: &[ReceivedSpan], roles: &Roles, expects: &[Expect], what: &str) {
    Checker::new(spans, roles).assert_all(expects, what);
}

// ---------------------------------------------------------------------------
// Tests

/// 200 requests through the chain at high concurrency (50 connections x 4 requests,
/// half of them keep-alive) make 200 complete five-span traces, each about one request.
fn chain_run(version: &str, flavor: GoFlavor, tag: &str) {
    let chain = Chain::start(version, flavor, false);
    let recv = Receiver::start();
    let agent = start_agent(&chain.pids(), &recv, &[]);
    let ids: Vec<String> = (0..200).map(|i| format!("{tag}{i:04}")).collect();
    let requests = ids
        .iter()
        .map(|id| Request::get(&format!("/chain/{id}")).expect(200))
        .collect();
    let sent = run_concurrent(chain.goproxy.addr, spread(requests, 50, mixed));
    assert_statuses(&sent, "chain");
    let spans = collect(&recv, agent, ids.len() * 5);
    let expects: Vec<Expect> = ids
        .iter()
        .map(|id| Expect::new(id, chain_tree(id)))
        .collect();
    check_traces(
        &spans,
        &chain.roles(),
        &expects,
        &format!("Go {version} {} chain", flavor.name()),
    );
}

#[test]
fn chain_plain_and_stripped() {
    harness::require_root();
    let _serial = harness::serial();
    run_all(vec![
        (
            "goproxy and goserver: Go 1.25, plain".into(),
            Box::new(|| chain_run("1.25", GoFlavor::Plain, "p")),
        ),
        (
            "goproxy and goserver: Go 1.21, stripped".into(),
            Box::new(|| chain_run("1.21", GoFlavor::Stripped, "s")),
        ),
    ]);
}

#[test]
fn traceparent_is_followed() {
    harness::require_root();
    let _serial = harness::serial();
    let chain = Chain::start("1.25", GoFlavor::Plain, false);
    let recv = Receiver::start();
    let agent = start_agent(&chain.pids(), &recv, &[]);
    let expects: Vec<Expect> = (0..20u64)
        .map(|i| {
            let id = format!("t{i:02}");
            let trace_id = format!("{:016x}{:016x}", 0x7e57_0000_0000_0000 + i, i * 7919 + 1);
            let parent = format!("{:016x}", 0xabc0_0000_0000_0000 + i);
            Expect {
                tree: chain_tree(&id),
                id,
                traceparent: Some((trace_id, parent)),
            }
        })
        .collect();
    let requests = expects
        .iter()
        .map(|e| {
            let (trace_id, parent) = e.traceparent.as_ref().unwrap();
            Request::get(&format!("/chain/{}", e.id))
                .with_header("traceparent", &format!("00-{trace_id}-{parent}-01"))
                .expect(200)
        })
        .collect();
    let sent = run_concurrent(chain.goproxy.addr, spread(requests, 4, mixed));
    assert_statuses(&sent, "chain with traceparent");
    let spans = collect(&recv, agent, expects.len() * 5);
    check_traces(&spans, &chain.roles(), &expects, "chain with traceparent");
}

#[test]
fn keepalive_pairing() {
    harness::require_root();
    let _serial = harness::serial();
    let chain = Chain::start("1.25", GoFlavor::Plain, true);
    let recv = Receiver::start();
    let agent = start_agent(&chain.pids(), &recv, &[]);
    let ids: Vec<String> = (0..500).map(|i| format!("k{i:04}")).collect();
    let requests = ids
        .iter()
        .map(|id| Request::get(&format!("/chain/{id}")).expect(200))
        .collect();
    let sent = run_concurrent(
        chain.goproxy.addr,
        spread(requests, 4, |_| ConnMode::KeepAlive),
    );
    assert_statuses(&sent, "keep-alive chain");
    // The point of the test: requests really shared connections on both hops.
    let out = chain.pybackend.process.output().stdout();
    let accepted = out.lines().filter(|l| *l == "accepted").count();
    let opened = out.lines().filter(|l| *l == "backend connection").count();
    assert!(
        accepted <= ids.len() / 4 && opened <= ids.len() / 4,
        "connections were not reused: for {} requests pybackend accepted {accepted} \
         connections from goproxy and opened {opened} to goserver",
        ids.len()
    );
    eprintln!(
        "{} requests: pybackend accepted {accepted} connections, opened {opened}",
        ids.len()
    );
    let spans = collect(&recv, agent, ids.len() * 5);
    let expects: Vec<Expect> = ids
        .iter()
        .map(|id| Expect::new(id, chain_tree(id)))
        .collect();
    check_traces(&spans, &chain.roles(), &expects, "keep-alive chain");
}

#[test]
fn untraced_backend_no_wait() {
    harness::require_root();
    let _serial = harness::serial();
    let backend = start_python_http_server();
    let goproxy = start_goproxy(&go_bin("goproxy", "1.25", GoFlavor::Plain), backend.addr);
    let roles = Roles::new(&[(goproxy.pid(), "goproxy")]);
    let recv = Receiver::start();
    let agent = start_agent(&[goproxy.pid()], &recv, &[]);
    // http.server answers 404 for these, and goproxy passes that on.
    let ids: Vec<String> = (0..10).map(|i| format!("u{i:02}")).collect();
    let requests = ids
        .iter()
        .map(|id| Request::get(&format!("/nope/{id}")).expect(404))
        .collect();
    let sent = run_concurrent(goproxy.addr, spread(requests, 2, mixed));
    assert_statuses(&sent, "goproxy to an untraced backend");
    let last_response = Instant::now();
    let want = ids.len() * 2;
    let in_time = recv.wait_for_spans(want, Duration::from_secs(2)).len();
    if in_time < want {
        let late = recv.wait_for_spans(want, Duration::from_secs(10)).len();
        panic!(
            "only {in_time} of {want} spans arrived within 2 s of the last response \
             ({late} after {:.1} s): spans are held back waiting for the untraced peer\n{}",
            last_response.elapsed().as_secs_f64(),
            dump(&recv.spans().iter().collect::<Vec<_>>(), &roles)
        );
    }
    thread::sleep(SETTLE);
    let exit = agent.stop();
    assert!(exit.status.success(), "agent: {}", exit.stderr);
    let spans = recv.spans();
    let port = backend.port().to_string();
    let bad: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.span.kind == CLIENT && s.attr("server.port") != Some(port.clone()))
        .collect();
    assert!(
        bad.is_empty(),
        "client spans without server.port {port}:\n{}",
        dump(&bad, &roles)
    );
    let expects: Vec<Expect> = ids
        .iter()
        .map(|id| {
            let path = format!("/nope/{id}");
            Expect::new(
                id,
                Want::server(
                    "goproxy",
                    &path,
                    vec![Want::client("goproxy", &path, vec![])],
                ),
            )
        })
        .collect();
    check_traces(&spans, &roles, &expects, "goproxy to an untraced backend");
}

/// GET /fanout/{id}: the handler goroutine spawns three goroutines, each makes one call.
fn fanout_run(version: &str, flavor: GoFlavor) {
    let pybackend = start_pybackend(SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    let goproxy = start_goproxy(&go_bin("goproxy", version, flavor), pybackend.addr);
    let roles = Roles::new(&[(goproxy.pid(), "goproxy"), (pybackend.pid(), "pybackend")]);
    let recv = Receiver::start();
    let agent = start_agent(&[goproxy.pid(), pybackend.pid()], &recv, &[]);
    let ids: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
    let requests = ids
        .iter()
        .map(|id| Request::get(&format!("/fanout/{id}")).expect(200))
        .collect();
    let sent = run_concurrent(goproxy.addr, spread(requests, 4, mixed));
    assert_statuses(&sent, "fanout");
    let tree = |id: &str| {
        let leaves = (0..3)
            .map(|k| {
                let leaf = format!("/leaf/{id}-{k}");
                Want::client(
                    "goproxy",
                    &leaf,
                    vec![Want::server("pybackend", &leaf, vec![])],
                )
            })
            .collect();
        Want::server("goproxy", format!("/fanout/{id}"), leaves)
    };
    let expects: Vec<Expect> = ids.iter().map(|id| Expect::new(id, tree(id))).collect();
    let spans = collect(&recv, agent, ids.len() * 7);
    check_traces(
        &spans,
        &roles,
        &expects,
        &format!("Go {version} {} fanout", flavor.name()),
    );
}

#[test]
fn goroutine_lineage() {
    harness::require_root();
    let _serial = harness::serial();
    run_all(vec![
        (
            "goproxy: Go 1.25, plain".into(),
            Box::new(|| fanout_run("1.25", GoFlavor::Plain)),
        ),
        (
            "goproxy: Go 1.21, stripped".into(),
            Box::new(|| fanout_run("1.21", GoFlavor::Stripped)),
        ),
    ]);
}

/// goproxy with its listener wrapped (`wrap`), Go `version` in `flavor`, under three kinds
/// of handler: one that calls the backend itself (ReverseProxy, one shared transport),
/// one that calls it from goroutines it spawns (/fanout), and one that hands the call to
/// a worker pool started by main (/pool). The first two are linked to their SERVER span;
/// the pool's call is not the handler's descendant and must stay a trace of its own.
fn fidelity_run(version: &str, flavor: GoFlavor, wrap: &str) {
    let pybackend = start_pybackend(SocketAddr::from(([127, 0, 0, 1], free_port())), false);
    let goproxy = start_goproxy_wrapped(&go_bin("goproxy", version, flavor), pybackend.addr, wrap);
    let roles = Roles::new(&[(goproxy.pid(), "goproxy"), (pybackend.pid(), "pybackend")]);
    let recv = Receiver::start();
    let agent = start_agent(&[goproxy.pid(), pybackend.pid()], &recv, &[]);
    let mut requests = Vec::new();
    let mut expects = Vec::new();
    let mut spans_wanted = 0;
    for i in 0..30 {
        let id = format!("x{i:02}");
        let (path, tree, n) = match i % 3 {
            0 => {
                let leaf = format!("/leaf/{id}");
                let tree = Want::server(
                    "goproxy",
                    &leaf,
                    vec![Want::client(
                        "goproxy",
                        &leaf,
                        vec![Want::server("pybackend", &leaf, vec![])],
                    )],
                );
                (leaf, tree, 3)
            }
            1 => {
                let leaves = (0..3)
                    .map(|k| {
                        let leaf = format!("/leaf/{id}-{k}");
                        Want::client(
                            "goproxy",
                            &leaf,
                            vec![Want::server("pybackend", &leaf, vec![])],
                        )
                    })
                    .collect();
                let path = format!("/fanout/{id}");
                (path.clone(), Want::server("goproxy", path, leaves), 7)
            }
            _ => {
                // The worker's call is its own trace (client -> backend), not a child
                // of the /pool span: a tracer that links it is guessing.
                let leaf = format!("/leaf/w{id}");
                expects.push(Expect::new(
                    &format!("w{id}"),
                    Want::client(
                        "goproxy",
                        &leaf,
                        vec![Want::server("pybackend", &leaf, vec![])],
                    ),
                ));
                let path = format!("/pool/{id}");
                (path.clone(), Want::server("goproxy", path, vec![]), 3)
            }
        };
        requests.push(Request::get(&path).expect(200));
        expects.push(Expect::new(&id, tree));
        spans_wanted += n;
    }
    let sent = run_concurrent(goproxy.addr, spread(requests, 6, mixed));
    assert_statuses(&sent, "fidelity");
    let spans = collect(&recv, agent, spans_wanted);
    check_traces(
        &spans,
        &roles,
        &expects,
        &format!("Go {version} {} WRAP={wrap:?}", flavor.name()),
    );
}

/// Issue 11: a net/http server whose listener wraps each accepted connection in its own
/// type lost every in-process parent (the CLIENT span its handler made had none). The
/// serving goroutine is now found from the read syscalls it makes itself, whatever the
/// net.Conn's type.
#[test]
fn go_wrapped_listener_keeps_parent() {
    harness::require_root();
    let _serial = harness::serial();
    run_all(vec![
        (
            "goproxy, struct embedding net.Conn: Go 1.25, plain".into(),
            Box::new(|| fidelity_run("1.25", GoFlavor::Plain, "embed")),
        ),
        (
            "goproxy, limiting listener: Go 1.21, stripped".into(),
            Box::new(|| fidelity_run("1.21", GoFlavor::Stripped, "limit")),
        ),
        (
            "goproxy, plain listener: Go 1.23, stripped".into(),
            Box::new(|| fidelity_run("1.23", GoFlavor::Stripped, "")),
        ),
    ]);
}

/// A refused connect as the agent must report it: CLIENT span "connect", status ERROR,
/// `error.type` connection_refused, `server.port` the port. Returns what is wrong.
fn connect_span_problems(s: &ReceivedSpan, port: u16) -> Vec<String> {
    let mut wrong = Vec::new();
    if s.span.kind != CLIENT {
        wrong.push(format!("kind {}", kind_name(s.span.kind)));
    }
    if s.name() != "connect" {
        wrong.push(format!("name {:?}", s.name()));
    }
    if !s.is_error() {
        wrong.push(format!("status {:?}", s.span.status));
    }
    if s.attr("error.type").as_deref() != Some("connection_refused") {
        wrong.push(format!("error.type {:?}", s.attr("error.type")));
    }
    if s.attr("server.port") != Some(port.to_string()) {
        wrong.push(format!("server.port {:?}", s.attr("server.port")));
    }
    wrong
}

#[test]
fn connect_failure() {
    harness::require_root();
    let _serial = harness::serial();
    let closed = free_port();
    let backend = SocketAddr::from(([127, 0, 0, 1], closed));
    let pyproxy = start_pyproxy(backend);
    let goproxy = start_goproxy(&go_bin("goproxy", "1.25", GoFlavor::Plain), backend);
    let roles = Roles::new(&[(pyproxy.pid(), "pyproxy"), (goproxy.pid(), "goproxy")]);
    let recv = Receiver::start();
    let agent = start_agent(&[pyproxy.pid(), goproxy.pid()], &recv, &[]);
    let calls = 3;
    let py = Batch {
        mode: ConnMode::Fresh,
        requests: (0..calls)
            .map(|_| Request::get("/call?n=1").expect(502))
            .collect(),
    };
    let sent = run_concurrent(pyproxy.addr, vec![py]);
    assert_statuses(&sent, "pyproxy to a closed port");
    let go = Batch {
        mode: ConnMode::Fresh,
        requests: (0..calls)
            .map(|i| Request::get(&format!("/down/g{i}")).expect(502))
            .collect(),
    };
    let sent = run_concurrent(goproxy.addr, vec![go]);
    assert_statuses(&sent, "goproxy to a closed port");
    let spans = collect(&recv, agent, 4 * calls);
    let all = || dump(&spans.iter().collect::<Vec<_>>(), &roles);

    // pyproxy: each 502 SERVER span has exactly one child, the failed connect.
    let mut wrong = Vec::new();
    let py_servers: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| roles.of(s) == "pyproxy" && s.span.kind == SERVER)
        .collect();
    if py_servers.len() != calls {
        wrong.push(format!(
            "{} pyproxy SERVER spans for {calls} requests",
            py_servers.len()
        ));
    }
    for server in &py_servers {
        if server.attr("http.response.status_code").as_deref() != Some("502") || !server.is_error()
        {
            wrong.push(format!(
                "pyproxy SERVER span {} is not a 502 with status ERROR",
                server.span_id_hex()
            ));
        }
        let children: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|c| !c.is_root() && c.parent_span_id_hex() == server.span_id_hex())
            .collect();
        match children.as_slice() {
            [c] => {
                for w in connect_span_problems(c, closed) {
                    wrong.push(format!(
                        "the child of pyproxy SERVER {}: {w}",
                        server.span_id_hex()
                    ));
                }
                if c.trace_id_hex() != server.trace_id_hex() {
                    wrong.push(format!("connect span {} in another trace", c.span_id_hex()));
                }
                let (p, c) = (&server.span, &c.span);
                if c.start_time_unix_nano < p.start_time_unix_nano
                    || c.end_time_unix_nano > p.end_time_unix_nano
                {
                    wrong.push(format!(
                        "connect span not within its parent: starts {} ns before, ends {} ns after",
                        p.start_time_unix_nano
                            .saturating_sub(c.start_time_unix_nano),
                        c.end_time_unix_nano.saturating_sub(p.end_time_unix_nano)
                    ));
                }
            }
            _ => wrong.push(format!(
                "pyproxy SERVER {} has {} children instead of one connect span",
                server.span_id_hex(),
                children.len()
            )),
        }
    }
    let py_connects = spans
        .iter()
        .filter(|s| roles.of(s) == "pyproxy" && s.span.kind == CLIENT)
        .count();
    if py_connects != calls {
        wrong.push(format!(
            "{py_connects} pyproxy CLIENT spans for {calls} failed connects"
        ));
    }

    // goproxy: the 502s are there, and so are connect spans (their parent is not asserted).
    let go_502 = spans
        .iter()
        .filter(|s| {
            roles.of(s) == "goproxy"
                && s.span.kind == SERVER
                && s.attr("http.response.status_code").as_deref() == Some("502")
        })
        .count();
    if go_502 != calls {
        wrong.push(format!(
            "{go_502} goproxy SERVER 502 spans for {calls} requests"
        ));
    }
    let go_connects: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| roles.of(s) == "goproxy" && s.name() == "connect")
        .collect();
    if go_connects.is_empty() {
        wrong.push("no goproxy span named \"connect\"".into());
    }
    for c in &go_connects {
        for w in connect_span_problems(c, closed) {
            wrong.push(format!("goproxy connect span {}: {w}", c.span_id_hex()));
        }
    }
    assert!(
        wrong.is_empty(),
        "connect failures to 127.0.0.1:{closed}:\n- {}\nall spans:\n{}",
        wrong.join("\n- "),
        all()
    );
}

/// Labels of one Prometheus exposition line, unescaped.
fn labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((name, tail)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let mut end = tail.len();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim_start_matches([',', ' ']).to_string(), value);
        rest = &tail[end..];
    }
    out
}

/// Sum of the samples of `name` whose labels include every pair of `want`.
fn sample_sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, l) = series.split_once('{').unwrap_or((series, ""));
            let l = labels(l.strip_suffix('}').unwrap_or(l));
            (n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        // Not .sum(): an empty f64 sum is -0.0.
        .fold(0.0, |a, b| a + b)
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = client::fetch(addr, &Request::get("/metrics"));
    assert_eq!(status, 200, "GET /metrics on {addr}");
    String::from_utf8_lossy(&body).into_owned()
}

#[test]
fn service_graph() {
    harness::require_root();
    let _serial = harness::serial();
    let chain = Chain::start("1.25", GoFlavor::Plain, false);
    let recv = Receiver::start();
    let prom = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let agent = start_agent(
        &chain.pids(),
        &recv,
        &["--prometheus".into(), prom.to_string()],
    );
    let (ok, failing) = (100, 20);
    let mut requests: Vec<Request> = (0..ok)
        .map(|i| Request::get(&format!("/chain/g{i:03}")).expect(200))
        .collect();
    // pybackend calls goserver's /error: a 500 on both hops.
    requests.extend((0..failing).map(|i| Request::get(&format!("/error/x{i:03}")).expect(500)));
    let sent = run_concurrent(chain.goproxy.addr, spread(requests, 20, mixed));
    assert_statuses(&sent, "service graph traffic");
    let total = (ok + failing) as f64;
    wait_spans(&recv, (ok + failing) * 5);

    // Service names as the agent gives them (the executable's name), from the spans.
    let spans = recv.spans();
    let name = |pid: u32| {
        spans
            .iter()
            .find(|s| s.resource_attr("process.pid") == Some(pid.to_string().as_str()))
            .and_then(|s| s.resource_attr("service.name").map(str::to_string))
            .unwrap_or_else(|| harness::exe_name(pid))
    };
    let (proxy, py, server) = (
        name(chain.goproxy.pid()),
        name(chain.pybackend.pid()),
        name(chain.goserver.pid()),
    );
    let edges = [
        (proxy.as_str(), py.as_str()),
        (py.as_str(), server.as_str()),
    ];
    let counts = |text: &str| -> Vec<(f64, f64)> {
        edges
            .iter()
            .map(|(c, s)| {
                let want = [("client", *c), ("server", *s)];
                (
                    sample_sum(text, "traces_service_graph_request_total", &want),
                    sample_sum(text, "traces_service_graph_request_failed_total", &want),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while counts(&scrape(prom)).iter().any(|(t, _)| *t < total) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(250));
    }
    thread::sleep(SETTLE); // a late double count would show now
    let text = scrape(prom);
    let got = counts(&text);
    let mut graph: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("traces_service_graph"))
        .collect();
    if graph.is_empty() {
        graph.push("(none)");
    }
    let wrong: Vec<String> = edges
        .iter()
        .zip(&got)
        .filter(|(_, (t, f))| *t != total || *f != failing as f64)
        .map(|((c, s), (t, f))| {
            format!(
                "edge {c} → {s}: request_total {t}, request_failed_total {f}; \
                 want {total} and {failing}"
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "service graph after {ok} good and {failing} failing requests through \
         goproxy → pybackend → goserver:\n{}\nservice graph series:\n{}",
        wrong.join("\n"),
        graph.join("\n")
    );
    let exit = agent.stop();
    assert!(exit.status.success(), "agent: {}", exit.stderr);
}

#[test]
fn request_ids_and_prometheus_labels_parse() {
    assert_eq!(request_id("/chain/p0001"), Some("p0001"));
    assert_eq!(request_id("/leaf/f03-2"), Some("f03"));
    assert_eq!(request_id("/users/x"), Some("x"));
    assert_eq!(request_id("/"), None);
    assert_eq!(request_id("/a/b/c"), None);
    let l = labels(r#"client="go\"proxy",server="py",x="a,b""#);
    assert_eq!(l["client"], "go\"proxy");
    assert_eq!(l["server"], "py");
    assert_eq!(l["x"], "a,b");
    let text = "# HELP x\ntraces_service_graph_request_total{client=\"a\",server=\"b\"} 3\n\
                traces_service_graph_request_total{client=\"a\",server=\"bb\"} 4\n";
    assert_eq!(
        sample_sum(
            text,
            "traces_service_graph_request_total",
            &[("client", "a"), ("server", "b")]
        ),
        3.0
    );
}

/// The checker itself, on made-up spans: a good chain passes; cross-talk and a child
/// that outlives its parent by 3 µs are caught and said so.
#[test]
fn checker_catches_cross_talk_and_time_nesting() {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value},
        trace::v1::Span,
    };
    let roles = Roles::new(&[(1, "goproxy"), (2, "pybackend"), (3, "goserver")]);
    // One span; ids are single bytes, times in µs.
    let mk = |pid: u32, kind: i32, id: u8, parent: u8, trace: u8, path: &str, t: (u64, u64)| {
        let (key, value) = if kind == SERVER {
            ("url.path", path.to_string())
        } else {
            ("url.full", format!("http://127.0.0.1:1{path}"))
        };
        ReceivedSpan {
            protocol: Protocol::Grpc,
            resource: [("process.pid".to_string(), pid.to_string())].into(),
            scope_name: String::new(),
            scope_version: String::new(),
            span: Span {
                trace_id: vec![trace; 16],
                span_id: vec![id; 8],
                parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
                kind,
                name: "GET".into(),
                start_time_unix_nano: 1_000_000_000 + t.0 * 1000,
                end_time_unix_nano: 1_000_000_000 + t.1 * 1000,
                attributes: vec![KeyValue {
                    key: key.into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(value)),
                    }),
                }],
                ..Default::default()
            },
        }
    };
    // Request `r` with span ids base+1..=base+5 in trace `trace`.
    let chain = |r: &str, base: u8, trace: u8| {
        let (c, u) = (format!("/chain/{r}"), format!("/users/{r}"));
        vec![
            mk(1, SERVER, base + 1, 0, trace, &c, (0, 100)),
            mk(1, CLIENT, base + 2, base + 1, trace, &c, (10, 90)),
            mk(2, SERVER, base + 3, base + 2, trace, &c, (20, 80)),
            mk(2, CLIENT, base + 4, base + 3, trace, &u, (30, 70)),
            mk(3, SERVER, base + 5, base + 4, trace, &u, (40, 60)),
        ]
    };
    let expects = [
        Expect::new("a", chain_tree("a")),
        Expect::new("b", chain_tree("b")),
    ];
    let failure = |spans: Vec<ReceivedSpan>| {
        panic::catch_unwind(AssertUnwindSafe(|| {
            check_traces(&spans, &roles, &expects, "made up")
        }))
        .err()
        .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
    };

    let good = [chain("a", 0, 1), chain("b", 10, 2)].concat();
    assert_eq!(failure(good.clone()), None);

    // b's pybackend SERVER hangs under a's goproxy CLIENT, in a's trace.
    let mut crossed = good.clone();
    crossed[7].span.parent_span_id = vec![2; 8];
    crossed[7].span.trace_id = vec![1; 16];
    let msg = failure(crossed).expect("cross-talk is caught");
    assert!(
        msg.contains("cross-talk: it hangs under a goproxy CLIENT of another request")
            && msg.contains("cross-talk: spans of other requests in the trace"),
        "{msg}"
    );

    // a's goserver SERVER ends 3 µs after its parent, the pybackend CLIENT.
    let mut late = good;
    late[4].span.end_time_unix_nano = late[3].span.end_time_unix_nano + 3000;
    let msg = failure(late).expect("a child outliving its parent is caught");
    assert!(
        msg.contains("worst time nesting violation: 3000 ns (3.0 µs)")
            && msg.contains("1 requests: goserver SERVER not within its parent pybackend CLIENT"),
        "{msg}"
    );
}
