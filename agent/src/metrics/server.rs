//! The `/metrics` endpoint (`--prometheus ADDR`).
//!
//! Binds loopback unless told otherwise: the endpoint exposes service names and routes,
//! which are not for the whole network by default.

use std::{
    collections::VecDeque,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use thiserror::Error;
use tokio::sync::Notify;

use super::{
    Metrics,
    prometheus::{Encoder, Format, Sample, encode_go, encode_http, encode_process, service_labels},
};
use crate::{export::ExportStats, telemetry::Telemetry};

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("invalid --prometheus address {0:?}: expected PORT, :PORT or HOST:PORT")]
    BadAddr(String),
    #[error("cannot listen on {addr} for the metrics endpoint: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// `9400`, `:9400` -> 127.0.0.1:9400; `0.0.0.0:9400`, `[::]:9400` as given.
pub fn parse_addr(s: &str) -> Result<SocketAddr, ServerError> {
    let bad = || ServerError::BadAddr(s.to_string());
    let t = s.trim();
    let port_only = t.strip_prefix(':').unwrap_or(t);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    // host names: resolve "localhost:9400" and the like.
    use std::net::ToSocketAddrs;
    t.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// What a scrape renders.
#[derive(Clone)]
pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub telemetry: Arc<Telemetry>,
    pub exports: Vec<Arc<ExportStats>>,
}

fn agent_labels() -> Vec<super::prometheus::Label> {
    Vec::new()
}

/// One sample per (label value, count): the agent's labels and `key`.
fn labelled(key: &'static str, pairs: &[(&str, u64)]) -> Vec<Sample> {
    pairs
        .iter()
        .map(|&(value, v)| {
            let mut labels = agent_labels();
            labels.push((key.into(), value.to_string()));
            Sample {
                labels,
                value: v as f64,
            }
        })
        .collect()
}

/// Renders the whole exposition for one scrape.
pub fn render(src: &Sources, format: Format) -> String {
    let services = src.metrics.snapshot();
    let mut enc = Encoder::new(format);
    encode_http(&mut enc, &services);
    encode_process(&mut enc, &services);
    encode_go(&mut enc, &services);
    let (edges, edge_overflow) = src.metrics.edges();
    super::prometheus::encode_edges(&mut enc, &edges, edge_overflow);
    let resources: Vec<_> = services.iter().map(|s| &*s.resource).collect();
    enc.target_info(&resources);

    let per_service = |f: &dyn Fn(&super::ServiceMetrics) -> u64| -> Vec<Sample> {
        services
            .iter()
            .map(|s| Sample {
                labels: service_labels(&s.resource),
                value: f(s) as f64,
            })
            .collect()
    };
    enc.counter(
        "periscope_route_overflow",
        "Requests whose route exceeded the per-service route cap and were counted under the overflow route.",
        &per_service(&|s| s.route_overflow),
    );
    enc.counter(
        "periscope_metric_series_overflow",
        "Requests folded into the overflow series because a service hit the series cap.",
        &per_service(&|s| s.series_overflow),
    );

    let snap = src.telemetry.snapshot();
    let one = |v: u64| {
        vec![Sample {
            labels: agent_labels(),
            value: v as f64,
        }]
    };
    enc.counter(
        "periscope_events_received",
        "Kernel events read from the ring buffer.",
        &one(snap.events_received),
    );
    enc.counter(
        "periscope_events_lost",
        "Kernel events lost because the ring buffer was full (spans are missing when this grows).",
        &one(snap.kernel.ringbuf_drops),
    );
    enc.counter(
        "periscope_kernel_events",
        "Kernel events written to the ring buffer.",
        &one(snap.kernel.events),
    );
    enc.counter(
        "periscope_syscalls_untracked",
        "Syscalls not followed because the per-thread argument map was full.",
        &one(snap.kernel.stash_full),
    );
    enc.counter(
        "periscope_payload_read_errors",
        "Payload copies from user memory that failed.",
        &one(snap.kernel.read_errors),
    );
    enc.counter(
        "periscope_parse_errors",
        "Malformed HTTP seen on traced sockets.",
        &one(snap.tracker.parse_errors),
    );
    enc.counter(
        "periscope_non_http_streams",
        "Streams on traced sockets that were not HTTP/1.x and were ignored.",
        &one(snap.tracker.non_http_streams),
    );
    // The kernel's socket classifier (ebpf/src/classify.rs) and what it saved.
    let by_class = |pairs: &[(&str, u64)]| labelled("class", pairs);
    let c = snap.kernel.classified;
    enc.counter(
        "periscope_sockets_classified",
        "Sockets the kernel classified on their first bytes: http1, http2 and deferred (too short to tell, or joined mid-stream; the agent's parser decides) have their payload copied, tls and unknown only their byte counts.",
        &by_class(&[
            ("http1", c[0]),
            ("http2", c[1]),
            ("tls", c[2]),
            ("unknown", c[3]),
            ("deferred", c[4]),
        ]),
    );
    enc.counter(
        "periscope_payload_bytes_suppressed",
        "Bytes moved on traced sockets whose payload the kernel did not copy (TLS, unknown protocols, sockets the agent muted).",
        &one(snap.kernel.payload_suppressed),
    );
    enc.counter(
        "periscope_kernel_request_framing",
        "The kernel's framing of HTTP/1 request streams on connections it saw from their first byte: outcome=split counts syscalls cut where a request, a header block's rest or a chunk-size line starts (each captured from there, bodies as byte counts); outcome=lost counts streams whose framing the kernel gave up (malformed framing, no request line where one must start, over 32 pieces in one syscall, a vectored or sendfile syscall that is not all body), which are then captured from each syscall's start for the rest of the connection.",
        &labelled(
            "outcome",
            &[("split", snap.kernel.frame_splits), ("lost", snap.kernel.frame_lost)],
        ),
    );
    enc.counter(
        "periscope_kernel_h2_framing",
        "The kernel's following of HTTP/2 frames on sockets it classified HTTP/2 from their first byte: outcome=chunk counts the chunks syscalls were cut into (frame headers and non-DATA payloads copied, each large DATA payload a byte count); outcome=lost counts socket directions whose frames it stopped following (a read failed, over 2048 steps in one syscall, or a first syscall whose frames ran past its captured head), which are then captured from each syscall's start.",
        &labelled(
            "outcome",
            &[("chunk", snap.kernel.h2_splits), ("lost", snap.kernel.h2_lost)],
        ),
    );
    let p = snap.tracker.payload_bytes;
    use periscope_common::{
        CLASS_DEFERRED, CLASS_HTTP1, CLASS_HTTP2, CLASS_MUTED, CLASS_TLS, CLASS_UNKNOWN,
        CLASS_UNSEEN,
    };
    enc.counter(
        "periscope_payload_bytes_received",
        "Payload bytes the agent received from the kernel, by the socket's class (tls, unknown and muted stay 0).",
        &by_class(&[
            ("unseen", p[CLASS_UNSEEN as usize]),
            ("http1", p[CLASS_HTTP1 as usize]),
            ("http2", p[CLASS_HTTP2 as usize]),
            ("tls", p[CLASS_TLS as usize]),
            ("unknown", p[CLASS_UNKNOWN as usize]),
            ("deferred", p[CLASS_DEFERRED as usize]),
            ("muted", p[CLASS_MUTED as usize]),
        ]),
    );
    enc.counter(
        "periscope_sockets_muted",
        "Sockets whose payload the agent told the kernel to stop copying because its parser gave up (not HTTP/1.x, or upgraded).",
        &one(snap.tracker.sockets_muted),
    );
    enc.counter(
        "periscope_mute_failures",
        "Mute requests that did not reach the kernel (the socket was closed first, or the request queue was full).",
        &one(snap.tracker.mute_failures),
    );
    enc.counter(
        "periscope_tls_connections",
        "Connections of traced processes found to carry TLS; plaintext=true when their plaintext came from the OpenSSL probes (they get spans), false when it did not (TLS not hooked: counted, no spans).",
        &[
            Sample {
                labels: [agent_labels(), vec![("plaintext".into(), "true".into())]].concat(),
                value: snap.tracker.tls_conns_plaintext as f64,
            },
            Sample {
                labels: [agent_labels(), vec![("plaintext".into(), "false".into())]].concat(),
                value: snap
                    .tracker
                    .tls_conns
                    .saturating_sub(snap.tracker.tls_conns_plaintext) as f64,
            },
        ],
    );
    enc.counter(
        "periscope_tls_plaintext_unplaced",
        "TLS plaintext reads/writes dropped because the socket they belong to could not be told.",
        &one(snap.tracker.tls_unplaced),
    );
    enc.counter(
        "periscope_unmatched_messages",
        "Requests without a response or responses without a request.",
        &one(snap.tracker.requests_without_response + snap.tracker.responses_without_request),
    );
    // Every exchange a server made that got no span, by why: the pairing principle is
    // "no span rather than a wrong one", and this is where the missing ones are counted.
    let by_reason = |pairs: &[(&str, u64)]| -> Vec<Sample> {
        pairs
            .iter()
            .map(|&(reason, v)| {
                let mut labels = agent_labels();
                labels.push(("reason".into(), reason.to_string()));
                Sample {
                    labels,
                    value: v as f64,
                }
            })
            .collect()
    };
    enc.counter(
        "periscope_exchanges_unpaired",
        "Exchanges seen on traced sockets that got no span, by reason: desync (a stream lost its message boundaries, so the connection pairs nothing more), no_request (a response with no request to pair, e.g. a connection joined mid-stream), no_response (a request never answered before close, e.g. a client abort).",
        &by_reason(&[
            ("desync", snap.tracker.unpaired_desync),
            ("no_request", snap.tracker.responses_without_request),
            ("no_response", snap.tracker.requests_without_response),
        ]),
    );
    let by_cause = |pairs: &[(&str, u64)]| -> Vec<Sample> {
        pairs
            .iter()
            .map(|&(cause, v)| {
                let mut labels = agent_labels();
                labels.push(("cause".into(), cause.to_string()));
                Sample {
                    labels,
                    value: v as f64,
                }
            })
            .collect()
    };
    let causes: Vec<(&str, u64)> = crate::conn::DesyncCause::ALL
        .iter()
        .map(|c| {
            (
                c.as_str(),
                snap.tracker.unpaired_desync_by_cause[*c as usize],
            )
        })
        .collect();
    enc.counter(
        "periscope_exchanges_unpaired_desync",
        "The desync part of periscope_exchanges_unpaired, by what made the connection lose pairing: header_gap (a header section longer than the capture), chunk_gap (a chunk-size line beyond the capture), boundary_gap (the start of the next message beyond the capture), malformed, other.",
        &by_cause(&causes),
    );
    enc.counter(
        "periscope_h2_streams_unplaced",
        "HTTP/2 streams that got no span, by reason: gap (a capture gap hid frame boundaries or header-block bytes, so the connection's HPACK state is unknown and no header is decoded on it any more), over_limit (too many open streams on one connection), reset (reset before its response headers), close (still open when the connection closed), malformed (frames or header blocks that do not parse), mid_stream (on a connection older than the agent, whose HPACK state is unknown).",
        &by_reason(&[
            ("gap", snap.tracker.h2.unplaced_gap),
            ("over_limit", snap.tracker.h2.unplaced_over_limit),
            ("reset", snap.tracker.h2.unplaced_reset),
            ("close", snap.tracker.h2.unplaced_close),
            ("malformed", snap.tracker.h2.unplaced_malformed),
            ("mid_stream", snap.tracker.h2.unplaced_mid_stream),
        ]),
    );
    enc.counter(
        "periscope_h2_connections",
        "Connections seen to speak HTTP/2 (the client preface was read or written, or an h2c upgrade was granted).",
        &one(snap.tracker.h2_conns),
    );
    enc.counter(
        "periscope_h2_upgrades",
        "Of those, connections switched from HTTP/1.1 to HTTP/2 in cleartext (`Upgrade: h2c` granted by a 101); the request that asked is answered on stream 1.",
        &one(snap.tracker.h2_upgrades),
    );
    enc.counter(
        "periscope_h2_mid_stream_connections",
        "Of those, connections older than the agent, joined in the middle of HTTP/2: their streams are counted (periscope_h2_streams_unplaced_total{reason=\"mid_stream\"}), not traced.",
        &one(snap.tracker.h2_mid_stream),
    );
    enc.counter(
        "periscope_spans_joined",
        "Server spans made children of the traced client span (another process on this node) that sent the request.",
        &one(snap.tracker.joined),
    );
    enc.counter(
        "periscope_go_grpc_calls",
        "grpc-go calls of traced Go processes (uprobe on the transport's (*http2Client).NewStream: one per stream opened), by outcome: linked (the call's client stream was found and its span made the child of the server span its goroutine serves, if any), ambiguous (another call of the same method could have opened the stream: no in-process parent), dropped (the table of calls waiting for their stream was full).",
        &labelled(
            "outcome",
            &[
                ("linked", snap.tracker.grpc_calls_linked),
                ("ambiguous", snap.tracker.grpc_calls_ambiguous),
                ("dropped", snap.tracker.grpc_calls_dropped),
            ],
        ),
    );
    enc.counter(
        "periscope_connect_failures",
        "Failed TCP connects of traced processes (each is an ERROR client span named connect).",
        &one(snap.tracker.connect_failures),
    );
    enc.counter(
        "periscope_events_late",
        "Kernel events applied out of time order (held past the reorder window or pushed out by its memory cap).",
        &one(snap.events_late),
    );
    enc.counter(
        "periscope_events_forced",
        "Kernel events released from the reorder buffer before their hold time because it reached its memory cap (they may be applied out of order).",
        &one(snap.events_forced),
    );
    enc.counter(
        "periscope_event_decode_errors",
        "Ring-buffer records that could not be decoded (a kernel object from another build; should stay 0).",
        &one(snap.decode_errors),
    );
    enc.counter(
        "periscope_sockets_untracked",
        "Sockets of traced processes not followed because the kernel socket map was full (their traffic gives no spans).",
        &one(snap.kernel.sockmap_full),
    );
    // The same socket counted where the kernel starts following it and where the agent
    // opens a connection for it: the kernel count running ahead means events were lost.
    let by_stage =
        |kernel: u64, agent: u64| labelled("stage", &[("kernel", kernel), ("agent", agent)]);
    enc.counter(
        "periscope_sockets_adopted",
        "Sockets a traced process used without accepting or connecting them (inherited, received over a Unix socket, opened before tracing began), adopted when first used; stage=kernel counts the kernel starting to follow one, stage=agent the agent opening a connection for one.",
        &by_stage(snap.kernel.adopted, snap.tracker.conns_adopted),
    );
    enc.counter(
        "periscope_sockets_duplicated",
        "Socket fds a traced process duplicated onto another fd (dup, dup2, dup3, fcntl F_DUPFD), by stage as for periscope_sockets_adopted.",
        &by_stage(snap.kernel.dups, snap.tracker.conns_duplicated),
    );
    enc.counter(
        "periscope_connections_opened",
        "Connections of traced processes the agent started to follow.",
        &one(snap.tracker.conns_opened),
    );
    enc.counter(
        "periscope_peer_address_lookups",
        "Accepted connections whose peer address the accept did not give (libuv's accept(fd, NULL, NULL): node) and the kernel could not read from the socket either (no BTF offsets), read once from /proc/PID/net/tcp instead.",
        &one(snap.tracker.peer_lookups),
    );
    enc.counter(
        "periscope_connections_over_limit",
        "Connections not followed because the agent's connection table was full (their traffic gives no spans).",
        &one(snap.tracker.conns_over_limit),
    );
    enc.counter(
        "periscope_event_loop_processes",
        "Traced processes found to serve several connections on one thread, whose spans then get no thread-based parent.",
        &one(snap.tracker.event_loop_processes),
    );
    enc.counter(
        "periscope_silent_targets",
        "Traced processes that kept making read/write syscalls on sockets while no kernel event arrived for them (the programs do not see them; should stay 0).",
        &one(snap.silent_targets),
    );
    enc.counter(
        "periscope_requests_completed",
        "Request/response exchanges completed (every one is in the RED metrics).",
        &one(snap.tracker.spans),
    );
    enc.counter(
        "periscope_spans_sampled",
        "Spans kept by the sampler.",
        &one(snap.sampler.sampled),
    );
    enc.counter(
        "periscope_spans_not_sampled",
        "Spans dropped by the sampler (their requests still count in the metrics).",
        &one(snap.sampler.dropped_by_sampler),
    );
    enc.counter(
        "periscope_spans_kept_error",
        "Spans the adaptive sampler kept only because they failed.",
        &one(snap.sampler.kept_because_error),
    );
    enc.counter(
        "periscope_spans_kept_slow",
        "Spans the adaptive sampler kept only because they were slow.",
        &one(snap.sampler.kept_because_slow),
    );
    enc.counter(
        "periscope_spans_kept_trace",
        "Spans the adaptive sampler kept only because another span of their trace was kept.",
        &one(snap.sampler.kept_because_trace),
    );
    enc.gauge(
        "periscope_traced_processes",
        "Processes traced now.",
        None,
        &one(snap.processes),
    );
    let by_output = |f: &dyn Fn(&ExportStats) -> u64| -> Vec<Sample> {
        src.exports
            .iter()
            .map(|e| Sample {
                labels: vec![("output".into(), e.output.as_str().to_string())],
                value: f(e) as f64,
            })
            .collect()
    };
    use std::sync::atomic::Ordering::Relaxed;
    enc.counter(
        "periscope_spans_exported",
        "Spans delivered by each output.",
        &by_output(&|e| e.exported.load(Relaxed)),
    );
    enc.counter(
        "periscope_spans_dropped",
        "Spans dropped by each output (queue full, backend down).",
        &by_output(&|e| e.dropped.load(Relaxed)),
    );
    enc.counter(
        "periscope_spans_rejected",
        "Spans the OTLP backend refused in a partial success, by output.",
        &by_output(&|e| e.rejected.load(Relaxed)),
    );
    enc.counter(
        "periscope_export_failures",
        "Export batches given up on after their retries, by output (their spans are in periscope_spans_dropped).",
        &by_output(&|e| e.failed_exports.load(Relaxed)),
    );
    enc.gauge(
        "periscope_export_queue_depth",
        "Spans waiting in each output's queue.",
        None,
        &by_output(&|e| e.queue_depth.load(Relaxed)),
    );
    enc.finish()
}

/// Binds now (so a bad address fails at startup with one line) and serves on `rt`.
pub fn start(
    addr: SocketAddr,
    sources: Sources,
    rt: &tokio::runtime::Handle,
) -> Result<SocketAddr, ServerError> {
    let std_listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    let local = std_listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    std_listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    rt.spawn(async move {
        let listener = match tokio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("metrics endpoint stopped: {e}");
                return;
            }
        };
        serve(listener, sources).await;
    });
    Ok(local)
}

/// Connections kept open at once (a scraper opens one). A new one past this closes the
/// oldest that has not sent a request yet (else the oldest of all).
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this…
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// …and be done (response read) within this, or its connection is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause between accept attempts while the process is out of descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// One open connection, as the accept loop sees it.
struct Live {
    id: u64,
    /// Set once the client sent a request: a scraper, not an idle or slow socket.
    requested: Arc<AtomicBool>,
    /// Closes the connection when notified.
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct LiveSet {
    next_id: u64,
    conns: VecDeque<Live>,
}

impl LiveSet {
    /// Registers a new connection; past [`MAX_CONNECTIONS`] the oldest one that never
    /// sent a request (else the oldest) is told to close. Before this, idle clients
    /// holding every slot made a scrape wait for their header timeout (10 s: a failed
    /// Prometheus scrape at its default timeout).
    fn admit(&mut self, cap: usize) -> (u64, Arc<AtomicBool>, Arc<Notify>) {
        if self.conns.len() >= cap {
            let i = self
                .conns
                .iter()
                .position(|c| !c.requested.load(Ordering::Relaxed))
                .unwrap_or(0);
            if let Some(old) = self.conns.remove(i) {
                old.close.notify_one();
            }
        }
        let live = Live {
            id: self.next_id,
            requested: Arc::new(AtomicBool::new(false)),
            close: Arc::new(Notify::new()),
        };
        self.next_id += 1;
        let handles = (live.id, live.requested.clone(), live.close.clone());
        self.conns.push_back(live);
        handles
    }

    fn remove(&mut self, id: u64) {
        self.conns.retain(|c| c.id != id);
    }
}

/// The accept loop. Out of file descriptors (or kernel memory), `accept` fails at once for
/// as long as the condition lasts: retrying at once would spin a core, so it backs off and
/// says so once per episode. Slow or idle clients are cut off by the timeouts above, and
/// past [`MAX_CONNECTIONS`] the newest connection takes the place of an idle one.
async fn serve(listener: tokio::net::TcpListener, sources: Sources) {
    let live = Arc::new(Mutex::new(LiveSet::default()));
    let mut backoff: Option<Duration> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                if backoff.take().is_some() {
                    tracing::info!("metrics endpoint: accepting connections again");
                }
                stream
            }
            Err(e) if is_resource_exhaustion(&e) => {
                let wait = match backoff {
                    None => {
                        tracing::warn!(
                            "metrics endpoint: cannot accept connections: {e}; retrying (logged once until it recovers)"
                        );
                        Duration::from_millis(10)
                    }
                    Some(d) => (d * 2).min(MAX_ACCEPT_BACKOFF),
                };
                backoff = Some(wait);
                tokio::time::sleep(wait).await;
                continue;
            }
            // The peer went away before we accepted it (ECONNABORTED) and the like.
            Err(_) => continue,
        };
        let (id, requested, close) = lock(&live).admit(MAX_CONNECTIONS);
        let sources = sources.clone();
        let live = live.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                requested.store(true, Ordering::Relaxed);
                let sources = sources.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &sources)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
                _ = close.notified() => {}
            }
            lock(&live).remove(id);
        });
    }
}

fn lock(live: &Mutex<LiveSet>) -> std::sync::MutexGuard<'_, LiveSet> {
    live.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn respond(req: &Request<hyper::body::Incoming>, sources: &Sources) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let accept = req
                .headers()
                .get(hyper::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::from_accept(accept);
            let body = render(sources, format);
            Response::builder()
                .header(hyper::header::CONTENT_TYPE, format.content_type())
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_default()
        }
        "/" => Response::new(Full::new(Bytes::from_static(
            b"periscope: metrics at /metrics\n",
        ))),
        _ => Response::builder()
            .status(404)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16: a scrape of over 100k series (Prometheus's count: each bucket, sum and
    /// count line is one): 2 services with 1000 routes each, three histograms per route.
    /// Every route is in the exposition exactly once. Prints what it took (the note
    /// reports it; nothing here is timed).
    #[test]
    fn a_scrape_of_100k_series_has_every_series_once() {
        use crate::metrics::{HttpRecord, test_series};
        use crate::resource::Resource;
        let metrics = Arc::new(Metrics::default());
        let (services, routes) = (2, 1000);
        for pid in 1..=services {
            let r = Arc::new(Resource {
                pid,
                service_name: format!("svc{pid}"),
                attributes: vec![("service.name".into(), format!("svc{pid}"))],
            });
            for i in 0..routes {
                let rec = HttpRecord {
                    series: test_series(&format!("/r{i}"), 200),
                    duration_s: 0.01,
                    request_body: 0,
                    response_body: Some(0),
                    exemplar: None,
                };
                metrics.record_http(&r, rec, false);
            }
        }
        let src = Sources {
            metrics: metrics.clone(),
            telemetry: Arc::new(Telemetry::default()),
            exports: Vec::new(),
        };
        let t0 = std::time::Instant::now();
        let snapshot = metrics.snapshot();
        let locked = t0.elapsed();
        drop(snapshot);
        let t0 = std::time::Instant::now();
        let text = render(&src, Format::Text);
        let rendered = t0.elapsed();
        let counts: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .collect();
        let distinct: std::collections::HashSet<&str> = counts
            .iter()
            .map(|l| l.rsplit_once(' ').map_or(*l, |(k, _)| k))
            .collect();
        eprintln!(
            "{} series lines: snapshot (the registry's lock) {:.1} ms, whole render {:.1} ms, \
             {:.1} MiB",
            text.lines().filter(|l| !l.starts_with('#')).count(),
            locked.as_secs_f64() * 1e3,
            rendered.as_secs_f64() * 1e3,
            text.len() as f64 / (1 << 20) as f64
        );
        assert!(text.lines().filter(|l| !l.starts_with('#')).count() > 100_000);
        let want = services as usize * routes;
        assert_eq!(counts.len(), want);
        assert_eq!(distinct.len(), want, "a series written twice");
        assert!(
            counts.iter().all(|l| l.ends_with(" 1")),
            "each series counted one request"
        );
    }

    #[tokio::test]
    async fn past_the_cap_an_idle_connection_makes_room() {
        let mut set = LiveSet::default();
        let a = set.admit(3);
        let b = set.admit(3);
        let c = set.admit(3);
        // `a` and `c` sent requests; `b` is idle: it is the one closed.
        a.1.store(true, Ordering::Relaxed);
        c.1.store(true, Ordering::Relaxed);
        let d = set.admit(3);
        let ids: Vec<u64> = set.conns.iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![a.0, c.0, d.0]);
        // Told to close: its task's `notified()` completes at once (the permit waits).
        let closed = tokio::time::timeout(Duration::from_secs(5), b.2.notified()).await;
        assert!(closed.is_ok(), "the idle connection was not told to close");
        // All busy: the oldest goes.
        d.1.store(true, Ordering::Relaxed);
        let e = set.admit(3);
        let ids: Vec<u64> = set.conns.iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![c.0, d.0, e.0]);
        set.remove(d.0);
        assert_eq!(set.conns.len(), 2);
    }

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(
            parse_addr("9400").unwrap(),
            "127.0.0.1:9400".parse().unwrap()
        );
        assert_eq!(
            parse_addr(":9400").unwrap(),
            "127.0.0.1:9400".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:9400").unwrap(),
            "0.0.0.0:9400".parse().unwrap()
        );
        assert_eq!(parse_addr("[::]:1").unwrap(), "[::]:1".parse().unwrap());
        assert!(parse_addr("nope").is_err());
        assert!(parse_addr("1.2.3.4:99999").is_err());
    }

    /// Every counter the agent collects about itself is on /metrics with its own value
    /// (issue 16: the kernel's socket counters, decode errors, forced reorder releases,
    /// connections over the limit and event-loop processes were collected and never shown).
    #[test]
    fn collected_self_counters_are_exported() {
        use crate::{
            conn::TrackerStats,
            export::{ExportStats, OutputKind},
            probes::KernelStats,
            telemetry::Snapshot,
        };
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let telemetry = Arc::new(Telemetry::default());
        for _ in 0..3 {
            telemetry.decode_error();
        }
        telemetry.publish(Snapshot {
            kernel: KernelStats {
                events: 101,
                ringbuf_drops: 102,
                stash_full: 103,
                read_errors: 104,
                sockmap_full: 105,
                adopted: 106,
                dups: 107,
                ..KernelStats::default()
            },
            tracker: TrackerStats {
                conns_opened: 201,
                conns_over_limit: 202,
                event_loop_processes: 203,
                conns_adopted: 204,
                conns_duplicated: 205,
                ..TrackerStats::default()
            },
            events_late: 301,
            events_forced: 302,
            ..Snapshot::default()
        });
        let otlp = Arc::new(ExportStats {
            output: OutputKind::Otlp,
            exported: AtomicU64::new(401),
            dropped: AtomicU64::new(402),
            rejected: AtomicU64::new(403),
            failed_exports: AtomicU64::new(404),
            queue_depth: AtomicU64::new(405),
        });
        let src = Sources {
            metrics: Arc::new(Metrics::default()),
            telemetry,
            exports: vec![otlp.clone()],
        };
        for format in [Format::Text, Format::OpenMetrics] {
            let text = render(&src, format);
            let value = |series: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            };
            for (series, want) in [
                ("periscope_kernel_events_total", 101.0),
                ("periscope_events_lost_total", 102.0),
                ("periscope_syscalls_untracked_total", 103.0),
                ("periscope_payload_read_errors_total", 104.0),
                ("periscope_sockets_untracked_total", 105.0),
                ("periscope_sockets_adopted_total{stage=\"kernel\"}", 106.0),
                ("periscope_sockets_adopted_total{stage=\"agent\"}", 204.0),
                (
                    "periscope_sockets_duplicated_total{stage=\"kernel\"}",
                    107.0,
                ),
                ("periscope_sockets_duplicated_total{stage=\"agent\"}", 205.0),
                ("periscope_connections_opened_total", 201.0),
                ("periscope_connections_over_limit_total", 202.0),
                ("periscope_event_loop_processes_total", 203.0),
                ("periscope_events_late_total", 301.0),
                ("periscope_events_forced_total", 302.0),
                ("periscope_event_decode_errors_total", 3.0),
                ("periscope_spans_exported_total{output=\"otlp\"}", 401.0),
                ("periscope_spans_dropped_total{output=\"otlp\"}", 402.0),
                ("periscope_spans_rejected_total{output=\"otlp\"}", 403.0),
                ("periscope_export_failures_total{output=\"otlp\"}", 404.0),
                ("periscope_export_queue_depth{output=\"otlp\"}", 405.0),
            ] {
                assert_eq!(value(series), Some(want), "{series} in {format:?}:\n{text}");
            }
            // Each family is declared once, with help text.
            for family in [
                "periscope_sockets_untracked",
                "periscope_sockets_adopted",
                "periscope_sockets_duplicated",
                "periscope_connections_opened",
                "periscope_connections_over_limit",
                "periscope_event_loop_processes",
                "periscope_events_forced",
                "periscope_event_decode_errors",
                "periscope_spans_rejected",
                "periscope_export_failures",
            ] {
                let helps = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("# HELP {family}")))
                    .count();
                assert_eq!(helps, 1, "HELP for {family} in {format:?}");
            }
        }
        otlp.rejected.fetch_add(1, Relaxed);
        assert!(
            render(&src, Format::Text)
                .contains("periscope_spans_rejected_total{output=\"otlp\"} 404")
        );
    }
}
