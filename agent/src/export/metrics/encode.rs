//! Registry snapshots -> `ExportMetricsServiceRequest`s, cumulative or delta.
//!
//! The registry only ever holds cumulative values (that is what Prometheus scrapes need and
//! what keeps the event thread's work to one increment). Delta temporality is therefore
//! made here, by subtracting what was last *delivered*: the [`Collector`] keeps, per live
//! process and series, the values at the start of the series' next window (a `Mark`).
//! A mark moves only when the point that ends its window is delivered (or when there is
//! nothing new to send), so a failed export loses nothing (the next window is simply longer) and a partly delivered round sends
//! nothing twice. State exists only for series in the latest snapshot: processes and
//! series the registry no longer has are forgotten at the next collection.
//!
//! A collection is split into requests of at most [`MAX_POINTS_PER_REQUEST`] data points
//! (a series' three histograms always travel together), so a node with many processes
//! never builds one request larger than backends accept (the OTel collector's gRPC
//! receiver takes 4 MiB by default).
//!
//! Attributes match the Prometheus rendering (`crate::metrics::prometheus::encode_http`),
//! in semconv spelling and types: `http.response.status_code` and `server.port` are ints,
//! `otel.metric.overflow` a bool. One deliberate difference: a status code of 0 (no
//! response) is left out, as semconv requires the attribute only when a response was seen.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    self as proto, AggregationTemporality, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint, exemplar, metric, number_data_point,
    summary_data_point::ValueAtQuantile,
};

use super::config::TemporalityPreference;
use crate::export::otlp::{SCOPE_NAME, SCOPE_VERSION, resource_to_proto};
use crate::metrics::{Exemplar, Histogram, HttpKind, HttpSeries, HttpStats, ServiceMetrics};
use crate::resource::Resource;
use crate::runtime::go::{GoStats, Site};
use crate::runtime::process::ProcessStats;

pub const HTTP_SERVER_REQUEST_DURATION: &str = "http.server.request.duration";
pub const HTTP_SERVER_REQUEST_BODY_SIZE: &str = "http.server.request.body.size";
pub const HTTP_SERVER_RESPONSE_BODY_SIZE: &str = "http.server.response.body.size";
pub const HTTP_CLIENT_REQUEST_DURATION: &str = "http.client.request.duration";
pub const HTTP_CLIENT_REQUEST_BODY_SIZE: &str = "http.client.request.body.size";
pub const HTTP_CLIENT_RESPONSE_BODY_SIZE: &str = "http.client.response.body.size";
/// gRPC calls. RPC semconv v1.37 names (those the spans carry), in seconds as the newer
/// `rpc.{server,client}.call.duration` and Beyla-style agents have it (v1.37 said ms).
pub const RPC_SERVER_DURATION: &str = "rpc.server.duration";
pub const RPC_CLIENT_DURATION: &str = "rpc.client.duration";
/// Requests whose route fell into the route table's overflow bucket.
pub const ROUTE_OVERFLOW: &str = "periscope.route.overflow";
/// Requests folded into the overflow series by the per-service series cap.
pub const SERIES_OVERFLOW: &str = "periscope.metric.series.overflow";

// Process metrics: semconv names
// (<https://opentelemetry.io/docs/specs/semconv/system/process-metrics/>). Semconv makes the
// four counts UpDownCounters: they are exported as an SDK exports an asynchronous
// UpDownCounter, a non-monotonic cumulative sum.
pub const PROCESS_THREAD_COUNT: &str = "process.thread.count";
/// Monotonic sum with `cpu.mode` = `user` | `system`.
pub const PROCESS_CPU_TIME: &str = "process.cpu.time";
pub const PROCESS_MEMORY_USAGE: &str = "process.memory.usage";
pub const PROCESS_MEMORY_VIRTUAL: &str = "process.memory.virtual";
pub const PROCESS_FILE_DESCRIPTOR_COUNT: &str = "process.unix.file_descriptor.count";
// Go runtime metrics. `go.goroutine.count` is semconv's
// (<https://opentelemetry.io/docs/specs/semconv/runtime/go-metrics/>); semconv has no GC
// cycle count, pause distribution or per-site view, so those are ours.
pub const GO_GOROUTINE_COUNT: &str = "go.goroutine.count";
pub const GO_GC_CYCLES: &str = "periscope.go.gc.cycles";
/// A Summary: quantiles 0, .25, .5, .75, 1 of recent pauses; sum of every pause seen; count
/// = GC cycles (as Prometheus' `go_gc_duration_seconds`).
pub const GO_GC_PAUSE_DURATION: &str = "periscope.go.gc.pause.duration";
/// Attributes `code.function.name`, `code.file.path`, `code.line.number`.
pub const GO_GOROUTINE_BY_SITE: &str = "periscope.go.goroutine.by_site";
/// Value 1, same attributes as [`GO_GOROUTINE_BY_SITE`], one point per suspected site.
pub const GO_GOROUTINE_LEAK_SUSPECTED: &str = "periscope.go.goroutine.leak_suspected";
// OTel Go runtime semconv, from the heap statistics read from memory (runtime/gomem.rs).
pub const GO_MEMORY_USED: &str = "go.memory.used";
pub const GO_MEMORY_LIMIT: &str = "go.memory.limit";
pub const GO_MEMORY_ALLOCATED: &str = "go.memory.allocated";
pub const GO_MEMORY_ALLOCATIONS: &str = "go.memory.allocations";
pub const GO_MEMORY_GC_GOAL: &str = "go.memory.gc.goal";
pub const GO_PROCESSOR_LIMIT: &str = "go.processor.limit";
pub const GO_CONFIG_GOGC: &str = "go.config.gogc";

/// Most data points in one request. A histogram point with bounds, counts, attributes and a
/// few exemplars encodes to roughly 0.3–1 KiB, so this keeps requests near 1 MiB at worst.
pub const MAX_POINTS_PER_REQUEST: usize = 2000;

/// The OTLP data type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Histogram,
    /// A monotonic sum (counter); delta or cumulative per `counters_delta`.
    Sum,
    /// A non-monotonic sum: semconv's UpDownCounters (a count of live things). Always
    /// cumulative from the process start, as the OTel SDKs' delta temporality selector keeps
    /// UpDownCounters cumulative (a delta of a level means nothing on its own).
    UpDownSum,
    Gauge,
    /// Always cumulative: OTLP summaries have no temporality.
    Summary,
}

/// One metric of the export: name, unit, description and data type. Index = position in
/// [`FAMILIES`], which is the export order.
struct Family {
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    kind: Kind,
}

const fn fam(
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    kind: Kind,
) -> Family {
    Family {
        name,
        unit,
        description,
        kind,
    }
}

const FAMILIES: [Family; 27] = [
    fam(
        HTTP_SERVER_REQUEST_DURATION,
        "s",
        "Duration of HTTP server requests.",
        Kind::Histogram,
    ),
    fam(
        HTTP_SERVER_REQUEST_BODY_SIZE,
        "By",
        "Size of HTTP server request bodies.",
        Kind::Histogram,
    ),
    fam(
        HTTP_SERVER_RESPONSE_BODY_SIZE,
        "By",
        "Size of HTTP server response bodies.",
        Kind::Histogram,
    ),
    fam(
        HTTP_CLIENT_REQUEST_DURATION,
        "s",
        "Duration of HTTP client requests.",
        Kind::Histogram,
    ),
    fam(
        HTTP_CLIENT_REQUEST_BODY_SIZE,
        "By",
        "Size of HTTP client request bodies.",
        Kind::Histogram,
    ),
    fam(
        HTTP_CLIENT_RESPONSE_BODY_SIZE,
        "By",
        "Size of HTTP client response bodies.",
        Kind::Histogram,
    ),
    fam(
        ROUTE_OVERFLOW,
        "{request}",
        "Requests whose route fell into the route table's overflow bucket.",
        Kind::Sum,
    ),
    fam(
        SERIES_OVERFLOW,
        "{request}",
        "Requests folded into the overflow series because the per-service series cap was reached.",
        Kind::Sum,
    ),
    fam(
        PROCESS_THREAD_COUNT,
        "{thread}",
        "Live OS threads of the process.",
        Kind::UpDownSum,
    ),
    fam(
        PROCESS_CPU_TIME,
        "s",
        "CPU time used by the process, by cpu.mode.",
        Kind::Sum,
    ),
    fam(
        PROCESS_MEMORY_USAGE,
        "By",
        "Resident memory of the process.",
        Kind::UpDownSum,
    ),
    fam(
        PROCESS_MEMORY_VIRTUAL,
        "By",
        "Virtual memory size of the process.",
        Kind::UpDownSum,
    ),
    fam(
        PROCESS_FILE_DESCRIPTOR_COUNT,
        "{file_descriptor}",
        "Open file descriptors of the process.",
        Kind::UpDownSum,
    ),
    fam(
        GO_GOROUTINE_COUNT,
        "{goroutine}",
        "Live user goroutines.",
        Kind::UpDownSum,
    ),
    fam(
        GO_GC_CYCLES,
        "{gc_cycle}",
        "Completed Go GC cycles.",
        Kind::Sum,
    ),
    fam(
        GO_GC_PAUSE_DURATION,
        "s",
        "Go GC stop-the-world pauses: quantiles of recent pauses, sum of all, count of GC cycles.",
        Kind::Summary,
    ),
    fam(
        GO_GOROUTINE_BY_SITE,
        "{goroutine}",
        "Live goroutines by creation site (the top sites, plus every suspected leak).",
        Kind::Gauge,
    ),
    fam(
        GO_GOROUTINE_LEAK_SUSPECTED,
        "{site}",
        "1 for each goroutine creation site suspected of leaking.",
        Kind::Gauge,
    ),
    // OTel Go runtime semconv: go.memory.allocated and .allocations are Counters, the rest
    // UpDownCounters.
    fam(
        GO_MEMORY_USED,
        "By",
        "Memory used by the Go runtime (total mapped minus released heap), by go.memory.type: \
         stack (heap spans holding goroutine stacks) and other.",
        Kind::UpDownSum,
    ),
    fam(
        GO_MEMORY_LIMIT,
        "By",
        "Go runtime memory limit configured by the user, if a limit exists.",
        Kind::UpDownSum,
    ),
    fam(
        GO_MEMORY_ALLOCATED,
        "By",
        "Memory allocated to the heap by the application.",
        Kind::Sum,
    ),
    fam(
        GO_MEMORY_ALLOCATIONS,
        "{allocation}",
        "Count of allocations to the heap by the application.",
        Kind::Sum,
    ),
    fam(
        GO_MEMORY_GC_GOAL,
        "By",
        "Heap size target for the end of the GC cycle.",
        Kind::UpDownSum,
    ),
    fam(
        GO_PROCESSOR_LIMIT,
        "{thread}",
        "The number of OS threads that can execute user-level Go code simultaneously (GOMAXPROCS).",
        Kind::UpDownSum,
    ),
    fam(
        GO_CONFIG_GOGC,
        "%",
        "Heap size target percentage configured by the user, otherwise 100.",
        Kind::UpDownSum,
    ),
    fam(
        RPC_SERVER_DURATION,
        "s",
        "Duration of gRPC server calls.",
        Kind::Histogram,
    ),
    fam(
        RPC_CLIENT_DURATION,
        "s",
        "Duration of gRPC client calls.",
        Kind::Histogram,
    ),
];
const ROUTE_OVERFLOW_FAMILY: usize = 6;
const SERIES_OVERFLOW_FAMILY: usize = 7;
const THREAD_COUNT_FAMILY: usize = 8;
const CPU_TIME_FAMILY: usize = 9;
const MEMORY_USAGE_FAMILY: usize = 10;
const MEMORY_VIRTUAL_FAMILY: usize = 11;
const FD_COUNT_FAMILY: usize = 12;
const GOROUTINE_COUNT_FAMILY: usize = 13;
const GC_CYCLES_FAMILY: usize = 14;
const GC_PAUSE_FAMILY: usize = 15;
const BY_SITE_FAMILY: usize = 16;
const LEAK_SUSPECTED_FAMILY: usize = 17;
const MEMORY_USED_FAMILY: usize = 18;
const MEMORY_LIMIT_FAMILY: usize = 19;
const MEMORY_ALLOCATED_FAMILY: usize = 20;
const MEMORY_ALLOCATIONS_FAMILY: usize = 21;
const GC_GOAL_FAMILY: usize = 22;
const PROCESSOR_LIMIT_FAMILY: usize = 23;
const GOGC_FAMILY: usize = 24;
const RPC_SERVER_FAMILY: usize = 25;
const RPC_CLIENT_FAMILY: usize = 26;
const _: () = assert!(RPC_CLIENT_FAMILY + 1 == FAMILIES.len());

/// The histograms of a series with the index of their family: duration and body sizes
/// for HTTP, the duration alone for gRPC calls.
fn histograms<'a>(key: &HttpSeries, stats: &'a HttpStats) -> Vec<(usize, &'a Histogram)> {
    match (key.rpc.is_some(), key.kind) {
        (true, HttpKind::Server) => vec![(RPC_SERVER_FAMILY, &stats.duration)],
        (true, HttpKind::Client) => vec![(RPC_CLIENT_FAMILY, &stats.duration)],
        (false, kind) => {
            let base = match kind {
                HttpKind::Server => 0,
                HttpKind::Client => 3,
            };
            vec![
                (base, &stats.duration),
                (base + 1, &stats.request_body),
                (base + 2, &stats.response_body),
            ]
        }
    }
}

/// The start of a series' next delta window and its cumulative value then (`None`: zero,
/// the series did not exist yet).
#[derive(Clone, Debug)]
struct Mark<T> {
    at_unix_ns: u64,
    value: Option<T>,
}

/// Delta state of one process.
#[derive(Debug)]
struct ServiceState {
    /// The process incarnation: a reused pid comes with another start time.
    start_unix_ns: u64,
    /// Time of the last collection, which saw every series the process had then: a series
    /// first seen later started after it.
    collected_unix_ns: u64,
    http: HashMap<HttpSeries, Mark<HttpStats>>,
    /// (route overflow, series overflow).
    counters: Mark<(u64, u64)>,
    /// CPU time and GC cycles.
    runtime: Mark<RuntimeCounters>,
}

/// The cumulative sums of the process and Go views (read from /proc and the Go runtime
/// probes, i.e. observed like an asynchronous counter: delta only under `delta`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct RuntimeCounters {
    cpu_user_s: f64,
    cpu_system_s: f64,
    gc_cycles: u64,
    mem_allocated: u64,
    mem_allocations: u64,
}

/// What delivering a request moves forward.
#[derive(Debug)]
enum Commit {
    /// Boxed: the stats are ~360 bytes, the counters 16.
    Series(HttpSeries, Box<HttpStats>),
    Counters(u64, u64),
    Runtime(RuntimeCounters),
}

/// One request ready to send, and the marks it moves forward once delivered.
#[derive(Debug)]
pub struct Batch {
    pub request: ExportMetricsServiceRequest,
    /// Data points in `request` (histogram and sum points).
    pub data_points: u64,
    /// When the snapshot was taken: the end of every point's window.
    pub collected_unix_ns: u64,
    /// (pid, process start, what to commit).
    commits: Vec<(u32, u64, Commit)>,
}

/// Turns registry snapshots into export requests and keeps the marks delta needs.
#[derive(Debug)]
pub struct Collector {
    temporality: TemporalityPreference,
    max_points: usize,
    /// By pid; empty under cumulative temporality.
    services: HashMap<u32, ServiceState>,
}

impl Collector {
    pub fn new(temporality: TemporalityPreference) -> Collector {
        Collector::with_max_points(temporality, MAX_POINTS_PER_REQUEST)
    }

    /// Like [`Collector::new`] with another request size limit (at least one series is
    /// always sent per request, whatever the limit).
    pub fn with_max_points(temporality: TemporalityPreference, max_points: usize) -> Collector {
        Collector {
            temporality,
            max_points: max_points.max(1),
            services: HashMap::new(),
        }
    }

    pub fn temporality(&self) -> TemporalityPreference {
        self.temporality
    }

    /// Series whose delta state is kept, over all processes (0 under cumulative).
    pub fn tracked_series(&self) -> usize {
        self.services.values().map(|s| s.http.len()).sum()
    }

    /// Processes whose delta state is kept (0 under cumulative).
    pub fn tracked_services(&self) -> usize {
        self.services.len()
    }

    /// Builds the requests for `services` (a [`crate::metrics::Metrics::snapshot`] taken at
    /// `now_unix_ns`); empty when there is nothing to send. Under delta, histogram series
    /// and counters with nothing new are left out (their windows restart now), and so are
    /// processes left with no points. Send the batches in order and [`commit`](Self::commit)
    /// each one delivered; a batch not delivered is simply dropped.
    pub fn collect(&mut self, services: Vec<ServiceMetrics>, now_unix_ns: u64) -> Vec<Batch> {
        let hist_delta = self.temporality.histograms_delta();
        let counter_delta = self.temporality.counters_delta();
        let mut packer = Packer::new(self.max_points, now_unix_ns, hist_delta, counter_delta);
        let mut live: HashMap<u32, ServiceState> = HashMap::new();
        for svc in services {
            let pid = svc.resource.pid;
            let mut state = if hist_delta || counter_delta {
                let st = self
                    .services
                    .remove(&pid)
                    .filter(|st| st.start_unix_ns == svc.start_unix_ns);
                Some(st.unwrap_or_else(|| ServiceState {
                    start_unix_ns: svc.start_unix_ns,
                    collected_unix_ns: svc.start_unix_ns,
                    http: HashMap::new(),
                    counters: Mark {
                        at_unix_ns: svc.start_unix_ns,
                        value: None,
                    },
                    runtime: Mark {
                        at_unix_ns: svc.start_unix_ns,
                        value: None,
                    },
                }))
            } else {
                None
            };
            let incarnation = svc.start_unix_ns;
            let unit = |points, commit| Unit {
                pid,
                incarnation,
                points,
                commit,
            };

            let mut series: Vec<(HttpSeries, HttpStats)> = svc.http.into_iter().collect();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            // Rebuilt from this snapshot: marks of series no longer there are dropped.
            let mut old_marks = state.as_mut().map(|st| std::mem::take(&mut st.http));
            let mut new_marks = HashMap::new();
            for (key, stats) in series {
                let Some(st) = state.as_ref().filter(|_| hist_delta) else {
                    let points = histograms(&key, &stats)
                        .into_iter()
                        .map(|(f, h)| (f, Point::Hist(histogram_point(&key, h, None))))
                        .collect();
                    packer.add(&svc.resource, unit(points, None));
                    continue;
                };
                let mark = old_marks
                    .as_mut()
                    .and_then(|m| m.remove(&key))
                    .unwrap_or(Mark {
                        at_unix_ns: st.collected_unix_ns,
                        value: None,
                    });
                let earlier = mark.value.as_ref().map(|v| histograms(&key, v));
                let mut points = Vec::with_capacity(3);
                for (i, (f, h)) in histograms(&key, &stats).into_iter().enumerate() {
                    if let Some(d) = delta(h, earlier.as_ref().map(|e| e[i].1)) {
                        let p = histogram_point(&key, &d, Some(mark.at_unix_ns));
                        points.push((f, Point::Hist(p)));
                    }
                }
                if points.is_empty() {
                    // Nothing new: the next window starts now.
                    let mark = Mark {
                        at_unix_ns: now_unix_ns,
                        value: Some(stats),
                    };
                    new_marks.insert(key, mark);
                    continue;
                }
                packer.add(
                    &svc.resource,
                    unit(points, Some(Commit::Series(key.clone(), Box::new(stats)))),
                );
                new_marks.insert(key, mark);
            }

            let (route, overflow) = (svc.route_overflow, svc.series_overflow);
            match state.as_mut().filter(|_| counter_delta) {
                None => {
                    let points = vec![
                        (ROUTE_OVERFLOW_FAMILY, Point::Sum(route, None)),
                        (SERIES_OVERFLOW_FAMILY, Point::Sum(overflow, None)),
                    ];
                    packer.add(&svc.resource, unit(points, None));
                }
                Some(st) => {
                    let (r0, s0) = st.counters.value.unwrap_or((0, 0));
                    // A counter cannot go backwards within one process; if it did, treat it
                    // as a reset rather than a huge delta.
                    let sub = |now: u64, before: u64| now.checked_sub(before).unwrap_or(now);
                    let at = Some(st.counters.at_unix_ns);
                    let points: Vec<_> = [
                        (ROUTE_OVERFLOW_FAMILY, sub(route, r0)),
                        (SERIES_OVERFLOW_FAMILY, sub(overflow, s0)),
                    ]
                    .into_iter()
                    .filter(|&(_, d)| d > 0)
                    .map(|(f, d)| (f, Point::Sum(d, at)))
                    .collect();
                    if points.is_empty() {
                        st.counters = Mark {
                            at_unix_ns: now_unix_ns,
                            value: Some((route, overflow)),
                        };
                    } else {
                        let commit = Some(Commit::Counters(route, overflow));
                        packer.add(&svc.resource, unit(points, commit));
                    }
                }
            }

            // Process and Go views: only for live processes (an exited one's last sample is
            // stale), and only once something was sampled.
            let process_known = svc.process != ProcessStats::default();
            if svc.exited_unix_ns.is_none() && (process_known || svc.go.is_some()) {
                let mem = svc.go.as_ref().and_then(|g| g.mem.as_ref());
                let now = RuntimeCounters {
                    cpu_user_s: svc.process.cpu_user_s,
                    cpu_system_s: svc.process.cpu_system_s,
                    gc_cycles: svc.go.as_ref().map_or(0, |g| g.gc_cycles),
                    mem_allocated: mem.map_or(0, |m| m.total_alloc),
                    mem_allocations: mem.map_or(0, |m| m.mallocs),
                };
                // /proc's CPU times count from the process start, not from our attach.
                let cpu_start = match svc.process.start_time_s {
                    t if t > 0.0 => (t * 1e9) as u64,
                    _ => svc.start_unix_ns,
                };
                // Read from the runtime's memory, the GC and allocation counts start with
                // the process too; counted from events, at attach.
                let go_start = if mem.is_some() {
                    cpu_start
                } else {
                    svc.start_unix_ns
                };
                let mut sums = RuntimeSums {
                    cpu_user: Some((now.cpu_user_s, cpu_start)),
                    cpu_system: Some((now.cpu_system_s, cpu_start)),
                    gc_cycles: Some((now.gc_cycles, go_start)),
                    mem_allocated: mem.map(|_| (now.mem_allocated, cpu_start)),
                    mem_allocations: mem.map(|_| (now.mem_allocations, cpu_start)),
                };
                let mut commit = None;
                if let Some(st) = state.as_mut().filter(|_| counter_delta) {
                    let before = st.runtime.value.unwrap_or_default();
                    let at = st.runtime.at_unix_ns;
                    // A first window (no value yet) covers everything since the start.
                    let first = st.runtime.value.is_none();
                    let fsub = |now: f64, before: f64| {
                        if now >= before { now - before } else { now }
                    };
                    let window = |start: u64| if first { start } else { at };
                    sums = RuntimeSums {
                        cpu_user: Some((
                            fsub(now.cpu_user_s, before.cpu_user_s),
                            window(cpu_start),
                        ))
                        .filter(|&(d, _)| d > 0.0),
                        cpu_system: Some((
                            fsub(now.cpu_system_s, before.cpu_system_s),
                            window(cpu_start),
                        ))
                        .filter(|&(d, _)| d > 0.0),
                        gc_cycles: Some((
                            now.gc_cycles
                                .checked_sub(before.gc_cycles)
                                .unwrap_or(now.gc_cycles),
                            window(go_start),
                        ))
                        .filter(|&(d, _)| d > 0),
                        mem_allocated: mem
                            .map(|_| {
                                let d = now.mem_allocated.checked_sub(before.mem_allocated);
                                (d.unwrap_or(now.mem_allocated), window(cpu_start))
                            })
                            .filter(|&(d, _)| d > 0),
                        mem_allocations: mem
                            .map(|_| {
                                let d = now.mem_allocations.checked_sub(before.mem_allocations);
                                (d.unwrap_or(now.mem_allocations), window(cpu_start))
                            })
                            .filter(|&(d, _)| d > 0),
                    };
                    if sums.is_empty() {
                        st.runtime = Mark {
                            at_unix_ns: now_unix_ns,
                            value: Some(now),
                        };
                    } else {
                        commit = Some(Commit::Runtime(now));
                    }
                }
                if !process_known {
                    sums.cpu_user = None;
                    sums.cpu_system = None;
                }
                let points = runtime_points(
                    &svc.process,
                    svc.go.as_ref(),
                    svc.start_unix_ns,
                    process_known,
                    &sums,
                    now_unix_ns,
                );
                packer.add(&svc.resource, unit(points, commit));
            }

            if let Some(mut st) = state {
                st.http = new_marks;
                st.collected_unix_ns = now_unix_ns;
                live.insert(pid, st);
            }
        }
        // Processes absent from the snapshot are forgotten.
        self.services = live;
        packer.finish()
    }

    /// Records that `batch` was delivered: the windows of its points end, the next ones
    /// start at its collection time.
    pub fn commit(&mut self, batch: Batch) {
        for (pid, incarnation, commit) in batch.commits {
            let Some(st) = self
                .services
                .get_mut(&pid)
                .filter(|st| st.start_unix_ns == incarnation)
            else {
                continue;
            };
            match commit {
                Commit::Series(key, stats) => {
                    if let Some(m) = st.http.get_mut(&key) {
                        *m = Mark {
                            at_unix_ns: batch.collected_unix_ns,
                            value: Some(*stats),
                        };
                    }
                }
                Commit::Counters(route, overflow) => {
                    st.counters = Mark {
                        at_unix_ns: batch.collected_unix_ns,
                        value: Some((route, overflow)),
                    };
                }
                Commit::Runtime(counters) => {
                    st.runtime = Mark {
                        at_unix_ns: batch.collected_unix_ns,
                        value: Some(counters),
                    };
                }
            }
        }
    }
}

/// A data point before its metric is assembled. `None` start: the process start
/// (cumulative), filled in when the resource is known.
enum Point {
    Hist(HistogramDataPoint),
    /// Value and delta window start.
    Sum(u64, Option<u64>),
    /// A gauge or sum point, complete but for its time.
    Num(NumberDataPoint),
    Summary(SummaryDataPoint),
}

/// Each sum of the runtime view: (value, window start), `None` when left out (nothing new
/// under delta, or not known).
struct RuntimeSums {
    cpu_user: Option<(f64, u64)>,
    cpu_system: Option<(f64, u64)>,
    gc_cycles: Option<(u64, u64)>,
    mem_allocated: Option<(u64, u64)>,
    mem_allocations: Option<(u64, u64)>,
}

impl RuntimeSums {
    fn is_empty(&self) -> bool {
        self.cpu_user.is_none()
            && self.cpu_system.is_none()
            && self.gc_cycles.is_none()
            && self.mem_allocated.is_none()
            && self.mem_allocations.is_none()
    }
}

fn number(attributes: Vec<KeyValue>, start: u64, value: number_data_point::Value) -> Point {
    Point::Num(NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: 0,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(value),
    })
}

fn int_value(v: impl TryInto<i64>) -> number_data_point::Value {
    number_data_point::Value::AsInt(v.try_into().unwrap_or(i64::MAX))
}

fn site_attributes(site: &Site) -> Vec<KeyValue> {
    vec![
        str_kv("code.function.name", &site.function),
        str_kv("code.file.path", &site.file),
        int_kv("code.line.number", i64::from(site.line)),
    ]
}

/// The process and Go points of one service. Gauges carry no start time (optional in OTLP).
fn runtime_points(
    p: &ProcessStats,
    go: Option<&GoStats>,
    start_unix_ns: u64,
    process_known: bool,
    sums: &RuntimeSums,
    now_unix_ns: u64,
) -> Vec<(usize, Point)> {
    let mut out = Vec::new();
    if process_known {
        out.push((
            THREAD_COUNT_FAMILY,
            number(Vec::new(), 0, int_value(p.threads)),
        ));
    }
    for (mode, sum) in [("user", sums.cpu_user), ("system", sums.cpu_system)] {
        if let Some((v, start)) = sum {
            let attrs = vec![str_kv("cpu.mode", mode)];
            let value = number_data_point::Value::AsDouble(v);
            out.push((CPU_TIME_FAMILY, number(attrs, start, value)));
        }
    }
    if process_known {
        for (f, v) in [
            (MEMORY_USAGE_FAMILY, p.rss_bytes),
            (MEMORY_VIRTUAL_FAMILY, p.virtual_bytes),
            (FD_COUNT_FAMILY, p.open_fds),
        ] {
            out.push((f, number(Vec::new(), 0, int_value(v))));
        }
    }
    let Some(g) = go else {
        return out;
    };
    out.push((
        GOROUTINE_COUNT_FAMILY,
        number(Vec::new(), 0, int_value(g.goroutines)),
    ));
    if let Some((v, start)) = sums.gc_cycles {
        out.push((GC_CYCLES_FAMILY, number(Vec::new(), start, int_value(v))));
    }
    for (f, sum) in [
        (MEMORY_ALLOCATED_FAMILY, sums.mem_allocated),
        (MEMORY_ALLOCATIONS_FAMILY, sums.mem_allocations),
    ] {
        if let Some((v, start)) = sum {
            out.push((f, number(Vec::new(), start, int_value(v))));
        }
    }
    if let Some(m) = &g.mem {
        // As OTel's Go runtime instrumentation splits it: stack is the runtime/metrics class
        // /memory/classes/heap/stacks (MemStats.StackInuse), other the rest of what the
        // process has mapped and not released.
        let used = m.sys.saturating_sub(m.heap_released);
        for (kind, v) in [
            ("stack", m.stack_inuse),
            ("other", used.saturating_sub(m.stack_inuse)),
        ] {
            out.push((
                MEMORY_USED_FAMILY,
                number(vec![str_kv("go.memory.type", kind)], 0, int_value(v)),
            ));
        }
        let gauges = [
            (
                MEMORY_LIMIT_FAMILY,
                Some(m.memory_limit).filter(|&l| l != crate::runtime::gomem::NO_MEMORY_LIMIT),
            ),
            (GC_GOAL_FAMILY, Some(m.next_gc)),
            (PROCESSOR_LIMIT_FAMILY, m.gomaxprocs),
        ];
        for (f, v) in gauges {
            if let Some(v) = v {
                out.push((f, number(Vec::new(), 0, int_value(v))));
            }
        }
        out.push((GOGC_FAMILY, number(Vec::new(), 0, int_value(m.gogc))));
    }
    // Quantiles only when pauses were seen: zeros would claim pauses of 0 s.
    let quantile_values = g
        .gc_pause_quantiles
        .map(|q| {
            [0.0, 0.25, 0.5, 0.75, 1.0]
                .into_iter()
                .zip(q)
                .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                .collect()
        })
        .unwrap_or_default();
    let summary = SummaryDataPoint {
        attributes: Vec::new(),
        start_time_unix_nano: start_unix_ns,
        time_unix_nano: now_unix_ns,
        count: g.gc_cycles,
        sum: g.gc_pause_sum_s,
        quantile_values,
        flags: 0,
    };
    out.push((GC_PAUSE_FAMILY, Point::Summary(summary)));
    for s in &g.sites {
        let attrs = site_attributes(&s.site);
        out.push((BY_SITE_FAMILY, number(attrs, 0, int_value(s.live))));
    }
    for s in g.sites.iter().filter(|s| s.suspected) {
        let attrs = site_attributes(&s.site);
        out.push((LEAK_SUSPECTED_FAMILY, number(attrs, 0, int_value(1))));
    }
    out
}

/// What travels in one request, all or nothing: a series' histograms, or a process'
/// counters.
struct Unit {
    pid: u32,
    incarnation: u64,
    points: Vec<(usize, Point)>,
    commit: Option<Commit>,
}

/// The points of one process within one request, by family.
struct ServicePoints {
    resource: Arc<Resource>,
    start_unix_ns: u64,
    families: [Vec<Point>; FAMILIES.len()],
}

/// Packs units into requests of at most `max_points` points.
struct Packer {
    max_points: usize,
    now: u64,
    hist_delta: bool,
    counter_delta: bool,
    batches: Vec<Batch>,
    current: Vec<ServicePoints>,
    current_points: usize,
    commits: Vec<(u32, u64, Commit)>,
}

impl Packer {
    fn new(max_points: usize, now: u64, hist_delta: bool, counter_delta: bool) -> Packer {
        Packer {
            max_points,
            now,
            hist_delta,
            counter_delta,
            batches: Vec::new(),
            current: Vec::new(),
            current_points: 0,
            commits: Vec::new(),
        }
    }

    fn add(&mut self, resource: &Arc<Resource>, unit: Unit) {
        if unit.points.is_empty() {
            return;
        }
        if self.current_points > 0 && self.current_points + unit.points.len() > self.max_points {
            self.seal();
        }
        self.current_points += unit.points.len();
        let same = self
            .current
            .last()
            .is_some_and(|s| s.resource.pid == unit.pid && s.start_unix_ns == unit.incarnation);
        if !same {
            self.current.push(ServicePoints {
                resource: resource.clone(),
                start_unix_ns: unit.incarnation,
                families: Default::default(),
            });
        }
        let svc = self.current.last_mut().expect("pushed above");
        for (f, p) in unit.points {
            svc.families[f].push(p);
        }
        if let Some(c) = unit.commit {
            self.commits.push((unit.pid, unit.incarnation, c));
        }
    }

    /// Turns what is packed so far into a batch.
    fn seal(&mut self) {
        if self.current_points == 0 {
            return;
        }
        let resource_metrics = std::mem::take(&mut self.current)
            .into_iter()
            .map(|svc| self.resource_metrics(svc))
            .collect();
        self.batches.push(Batch {
            request: ExportMetricsServiceRequest { resource_metrics },
            data_points: self.current_points as u64,
            collected_unix_ns: self.now,
            commits: std::mem::take(&mut self.commits),
        });
        self.current_points = 0;
    }

    fn resource_metrics(&self, svc: ServicePoints) -> ResourceMetrics {
        let start = svc.start_unix_ns;
        let now = self.now;
        let metrics = svc
            .families
            .into_iter()
            .zip(&FAMILIES)
            .filter(|(points, _)| !points.is_empty())
            .map(|(points, family)| {
                let data = match family.kind {
                    Kind::Histogram => {
                        let data_points = points
                            .into_iter()
                            .filter_map(|p| match p {
                                Point::Hist(mut h) => {
                                    if !self.hist_delta {
                                        h.start_time_unix_nano = start;
                                    }
                                    h.time_unix_nano = now;
                                    Some(h)
                                }
                                _ => None,
                            })
                            .collect();
                        metric::Data::Histogram(proto::Histogram {
                            data_points,
                            aggregation_temporality: temporality(self.hist_delta),
                        })
                    }
                    Kind::Sum | Kind::UpDownSum | Kind::Gauge => {
                        let data_points = points
                            .into_iter()
                            .filter_map(|p| match p {
                                Point::Sum(v, window) => Some(NumberDataPoint {
                                    attributes: Vec::new(),
                                    start_time_unix_nano: window.unwrap_or(start),
                                    time_unix_nano: now,
                                    exemplars: Vec::new(),
                                    flags: 0,
                                    value: Some(int_value(v)),
                                }),
                                Point::Num(mut n) => {
                                    n.time_unix_nano = now;
                                    if family.kind == Kind::UpDownSum {
                                        n.start_time_unix_nano = start;
                                    }
                                    Some(n)
                                }
                                _ => None,
                            })
                            .collect();
                        match family.kind {
                            Kind::Gauge => metric::Data::Gauge(proto::Gauge { data_points }),
                            Kind::UpDownSum => metric::Data::Sum(proto::Sum {
                                data_points,
                                aggregation_temporality: temporality(false),
                                is_monotonic: false,
                            }),
                            _ => metric::Data::Sum(proto::Sum {
                                data_points,
                                aggregation_temporality: temporality(self.counter_delta),
                                is_monotonic: true,
                            }),
                        }
                    }
                    Kind::Summary => {
                        let data_points = points
                            .into_iter()
                            .filter_map(|p| match p {
                                Point::Summary(s) => Some(s),
                                _ => None,
                            })
                            .collect();
                        metric::Data::Summary(proto::Summary { data_points })
                    }
                };
                Metric {
                    name: family.name.to_owned(),
                    description: family.description.to_owned(),
                    unit: family.unit.to_owned(),
                    metadata: Vec::new(),
                    data: Some(data),
                }
            })
            .collect();
        ResourceMetrics {
            resource: Some(resource_to_proto(&svc.resource)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: SCOPE_VERSION.to_owned(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn finish(mut self) -> Vec<Batch> {
        self.seal();
        self.batches
    }
}

fn temporality(delta: bool) -> i32 {
    if delta {
        AggregationTemporality::Delta as i32
    } else {
        AggregationTemporality::Cumulative as i32
    }
}

/// What `h` gained since `earlier`, or `None` when nothing was recorded. Without a usable
/// `earlier` (a new series, or one that does not line up) the whole histogram is the delta.
fn delta(h: &Histogram, earlier: Option<&Histogram>) -> Option<Histogram> {
    let earlier = earlier.filter(|e| {
        e.bounds == h.bounds
            && e.count <= h.count
            && e.counts.len() == h.counts.len()
            && e.counts.iter().zip(&h.counts).all(|(a, b)| a <= b)
    });
    let mut d = match earlier {
        Some(e) if e.count > 0 => {
            let mut d = h.delta_since(e);
            // min/max of the window are unknown (the registry keeps lifetime extremes);
            // NaN marks them for omission.
            d.min = f64::NAN;
            d.max = f64::NAN;
            d
        }
        _ => h.clone(),
    };
    if d.count == 0 {
        return None;
    }
    // Float subtraction can leave a tiny negative sum for a window of zeros.
    d.sum = d.sum.max(0.0);
    Some(d)
}

/// `start`: the delta window's start; `None` for cumulative (filled in with the process
/// start when packed). The collection time is filled in when packed too.
fn histogram_point(s: &HttpSeries, h: &Histogram, start: Option<u64>) -> HistogramDataPoint {
    let known = |v: f64| (h.count > 0 && v.is_finite()).then_some(v);
    HistogramDataPoint {
        attributes: series_attributes(s),
        start_time_unix_nano: start.unwrap_or(0),
        time_unix_nano: 0,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: h.counts.clone(),
        explicit_bounds: h.bounds.to_vec(),
        exemplars: h
            .exemplars
            .iter()
            .flatten()
            .map(exemplar_to_proto)
            .collect(),
        flags: 0,
        min: known(h.min),
        max: known(h.max),
    }
}

fn exemplar_to_proto(e: &Exemplar) -> proto::Exemplar {
    proto::Exemplar {
        filtered_attributes: Vec::new(),
        time_unix_nano: e.time_unix_ns,
        span_id: e.span_id.to_vec(),
        trace_id: e.trace_id.to_vec(),
        value: Some(exemplar::Value::AsDouble(e.value)),
    }
}

/// The data point attributes of one series (see the module docs).
pub fn series_attributes(s: &HttpSeries) -> Vec<KeyValue> {
    if s.overflow {
        return vec![kv(
            "otel.metric.overflow",
            any_value::Value::BoolValue(true),
        )];
    }
    let mut out = Vec::with_capacity(6);
    match &s.rpc {
        Some(r) => {
            out.push(str_kv("rpc.system", "grpc"));
            out.push(str_kv("rpc.service", &r.service));
            out.push(str_kv("rpc.method", &r.method));
            if let Some(code) = r.grpc_status {
                out.push(int_kv("rpc.grpc.status_code", i64::from(code)));
            }
        }
        None => {
            out.push(str_kv("http.request.method", &s.method));
            if s.status != 0 {
                out.push(int_kv("http.response.status_code", i64::from(s.status)));
            }
            if s.kind == HttpKind::Server && !s.route.is_empty() {
                out.push(str_kv("http.route", &s.route));
            }
        }
    }
    if let Some(addr) = &s.server_address {
        out.push(str_kv("server.address", addr));
        if s.server_port != 0 {
            out.push(int_kv("server.port", i64::from(s.server_port)));
        }
    }
    if let Some(e) = &s.error_type {
        out.push(str_kv("error.type", e));
    }
    out
}

// Local twins of the private `key_value` in `export::otlp`, which takes the span `Value`.
fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn str_kv(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

fn int_kv(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message;

    use super::*;
    use crate::metrics::{DURATION_BUCKETS, HttpRecord, Metrics, RpcKey, SIZE_BUCKETS};
    use crate::resource::{Resource, SDK_VERSION};
    use crate::runtime::go::SiteSnapshot;

    const T0: u64 = 1_700_000_000_000_000_000;
    const SEC: u64 = 1_000_000_000;

    fn resource(pid: u32, name: &str) -> Arc<Resource> {
        Arc::new(Resource {
            pid,
            service_name: name.into(),
            attributes: vec![
                ("service.name".into(), name.into()),
                ("process.pid".into(), pid.to_string()),
                ("host.name".into(), "node1".into()),
            ],
        })
    }

    fn server(method: &str, route: &str, status: u16) -> HttpSeries {
        HttpSeries {
            kind: HttpKind::Server,
            method: Arc::from(method),
            route: Arc::from(route),
            status,
            error_type: (status >= 500).then(|| Arc::from(status.to_string().as_str())),
            server_address: None,
            server_port: 0,
            rpc: None,
            overflow: false,
        }
    }

    fn client(addr: &str, port: u16, status: u16, error: Option<&str>) -> HttpSeries {
        HttpSeries {
            kind: HttpKind::Client,
            method: Arc::from("POST"),
            route: Arc::from(""),
            status,
            error_type: error.map(Arc::from),
            server_address: Some(Arc::from(addr)),
            server_port: port,
            rpc: None,
            overflow: false,
        }
    }

    fn ex(value: f64, n: u8) -> Exemplar {
        Exemplar {
            value,
            trace_id: [n; 16],
            span_id: [n + 1; 8],
            time_unix_ns: T0 + u64::from(n),
        }
    }

    fn record(m: &Metrics, r: &Arc<Resource>, s: HttpSeries, d: f64, req: u64, resp: u64) {
        m.record_http(
            r,
            HttpRecord {
                series: s,
                duration_s: d,
                request_body: req,
                response_body: Some(resp),
                exemplar: None,
            },
            false,
        );
    }

    /// The single batch of a small collection.
    fn one(mut batches: Vec<Batch>) -> Batch {
        assert_eq!(batches.len(), 1, "{batches:?}");
        batches.pop().unwrap()
    }

    fn metric<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a Metric {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn hist(m: &Metric) -> &proto::Histogram {
        match &m.data {
            Some(metric::Data::Histogram(h)) => h,
            other => panic!("{} is not a histogram: {other:?}", m.name),
        }
    }

    fn sum(m: &Metric) -> &proto::Sum {
        match &m.data {
            Some(metric::Data::Sum(s)) => s,
            other => panic!("{} is not a sum: {other:?}", m.name),
        }
    }

    fn int(p: &NumberDataPoint) -> i64 {
        match p.value {
            Some(number_data_point::Value::AsInt(v)) => v,
            other => panic!("not an int: {other:?}"),
        }
    }

    fn attr(attrs: &[KeyValue], key: &str) -> Option<any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    }

    fn s(v: &str) -> Option<any_value::Value> {
        Some(any_value::Value::StringValue(v.into()))
    }

    fn i(v: i64) -> Option<any_value::Value> {
        Some(any_value::Value::IntValue(v))
    }

    #[test]
    fn converts_every_field() {
        let m = Metrics::default();
        let r = resource(7, "shop");
        m.add_service(&r, T0);
        m.record_http(
            &r,
            HttpRecord {
                series: server("GET", "/users/{id}", 200),
                duration_s: 0.02,
                request_body: 3,
                response_body: Some(12),
                exemplar: Some(ex(0.02, 1)),
            },
            true,
        );
        record(&m, &r, server("GET", "/users/{id}", 200), 3.0, 0, 20000);
        record(&m, &r, server("PUT", "", 503), 0.001, 0, 0);
        record(&m, &r, client("db", 5432, 0, Some("timeout")), 0.5, 7, 0);

        let now = T0 + 10 * SEC;
        let c = one(Collector::new(TemporalityPreference::Cumulative).collect(m.snapshot(), now));
        assert_eq!(c.request.resource_metrics.len(), 1);
        let rm = &c.request.resource_metrics[0];
        assert_eq!(rm.resource, Some(resource_to_proto(&r)));
        let pid = rm.resource.as_ref().unwrap().attributes[1].clone();
        assert_eq!(
            (pid.key.as_str(), pid.value.unwrap().value),
            ("process.pid", i(7))
        );
        let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("periscope", SDK_VERSION)
        );
        let names: Vec<&str> = rm.scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                HTTP_SERVER_REQUEST_DURATION,
                HTTP_SERVER_REQUEST_BODY_SIZE,
                HTTP_SERVER_RESPONSE_BODY_SIZE,
                HTTP_CLIENT_REQUEST_DURATION,
                HTTP_CLIENT_REQUEST_BODY_SIZE,
                HTTP_CLIENT_RESPONSE_BODY_SIZE,
                ROUTE_OVERFLOW,
                SERIES_OVERFLOW,
            ]
        );
        // 3 server series x 3 families (2 of them) + 1 client series x 3 + 2 counters.
        assert_eq!(c.data_points, 2 * 3 + 3 + 2);

        let dur = metric(rm, HTTP_SERVER_REQUEST_DURATION);
        assert_eq!(
            (dur.unit.as_str(), dur.description.is_empty()),
            ("s", false)
        );
        let h = hist(dur);
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        // Series in key order: GET /users/{id} 200, then PUT 503.
        assert_eq!(h.data_points.len(), 2);
        let p = &h.data_points[0];
        assert_eq!(p.attributes.len(), 3);
        assert_eq!(attr(&p.attributes, "http.request.method"), s("GET"));
        assert_eq!(attr(&p.attributes, "http.response.status_code"), i(200));
        assert_eq!(attr(&p.attributes, "http.route"), s("/users/{id}"));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (T0, now));
        assert_eq!(p.count, 2);
        assert_eq!(p.sum, Some(3.02));
        assert_eq!((p.min, p.max), (Some(0.02), Some(3.0)));
        assert_eq!(p.explicit_bounds, DURATION_BUCKETS);
        let mut want = vec![0u64; DURATION_BUCKETS.len() + 1];
        want[2] = 1; // 0.02 in (0.01, 0.025]
        want[11] = 1; // 3.0 in (2.5, 5]
        assert_eq!(p.bucket_counts, want);
        assert_eq!(p.flags, 0);
        assert_eq!(
            p.exemplars,
            [proto::Exemplar {
                filtered_attributes: Vec::new(),
                time_unix_nano: T0 + 1,
                span_id: vec![2; 8],
                trace_id: vec![1; 16],
                value: Some(exemplar::Value::AsDouble(0.02)),
            }]
        );
        let p = &h.data_points[1];
        assert_eq!(attr(&p.attributes, "http.request.method"), s("PUT"));
        assert_eq!(
            attr(&p.attributes, "http.route"),
            None,
            "empty route left out"
        );
        assert_eq!(attr(&p.attributes, "error.type"), s("503"));

        let resp = hist(metric(rm, HTTP_SERVER_RESPONSE_BODY_SIZE));
        assert_eq!(metric(rm, HTTP_SERVER_RESPONSE_BODY_SIZE).unit, "By");
        let p = &resp.data_points[0];
        assert_eq!(p.explicit_bounds, SIZE_BUCKETS);
        assert_eq!(*p.bucket_counts.last().unwrap(), 1, "20000 B above 10000");
        assert_eq!(p.exemplars.len(), 1);
        assert_eq!(p.exemplars[0].value, Some(exemplar::Value::AsDouble(12.0)));

        let p = &hist(metric(rm, HTTP_CLIENT_REQUEST_DURATION)).data_points[0];
        assert_eq!(p.attributes.len(), 4);
        assert_eq!(attr(&p.attributes, "http.request.method"), s("POST"));
        assert_eq!(
            attr(&p.attributes, "http.response.status_code"),
            None,
            "no response, no status"
        );
        assert_eq!(attr(&p.attributes, "server.address"), s("db"));
        assert_eq!(attr(&p.attributes, "server.port"), i(5432));
        assert_eq!(attr(&p.attributes, "error.type"), s("timeout"));
        assert_eq!(
            hist(metric(rm, HTTP_CLIENT_REQUEST_BODY_SIZE)).data_points[0].sum,
            Some(7.0)
        );

        let routes = sum(metric(rm, ROUTE_OVERFLOW));
        assert!(routes.is_monotonic);
        assert_eq!(
            routes.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(metric(rm, ROUTE_OVERFLOW).unit, "{request}");
        let p = &routes.data_points[0];
        assert_eq!(
            (int(p), p.start_time_unix_nano, p.time_unix_nano),
            (1, T0, now)
        );
        assert!(p.attributes.is_empty());
        assert_eq!(int(&sum(metric(rm, SERIES_OVERFLOW)).data_points[0]), 0);

        // The request round-trips through protobuf.
        let bytes = c.request.encode_to_vec();
        assert_eq!(
            ExportMetricsServiceRequest::decode(&bytes[..]).unwrap(),
            c.request
        );
    }

    #[test]
    fn overflow_series_carry_only_the_overflow_attribute() {
        let overflow = HttpSeries {
            kind: HttpKind::Client,
            method: Arc::from(""),
            route: Arc::from(""),
            status: 0,
            error_type: None,
            server_address: None,
            server_port: 0,
            rpc: None,
            overflow: true,
        };
        assert_eq!(
            series_attributes(&overflow),
            [kv(
                "otel.metric.overflow",
                any_value::Value::BoolValue(true)
            )]
        );
        // A client without a known port gets the address only; a server never gets one.
        let attrs = series_attributes(&client("api.local", 0, 200, None));
        assert_eq!(attr(&attrs, "server.address"), s("api.local"));
        assert_eq!(attr(&attrs, "server.port"), None);
        assert_eq!(attr(&attrs, "error.type"), None);
        let mut srv = server("GET", "/a", 200);
        srv.server_address = Some(Arc::from("ignored"));
        srv.server_port = 80;
        assert_eq!(
            attr(&series_attributes(&srv), "http.route"),
            s("/a"),
            "server series keep their route"
        );
    }

    fn grpc(kind: HttpKind, code: Option<u32>, error: Option<&str>) -> HttpSeries {
        HttpSeries {
            kind,
            method: Arc::from(""),
            route: Arc::from(""),
            status: 0,
            error_type: error.map(Arc::from),
            server_address: (kind == HttpKind::Client).then(|| Arc::from("10.0.0.2")),
            server_port: if kind == HttpKind::Client { 50051 } else { 0 },
            rpc: Some(RpcKey {
                service: Arc::from("grpc.health.v1.Health"),
                method: Arc::from("Check"),
                grpc_status: code,
            }),
            overflow: false,
        }
    }

    #[test]
    fn grpc_calls_are_rpc_durations_with_rpc_attributes_and_in_no_http_family() {
        let m = Metrics::default();
        let r = resource(3, "grpc");
        m.add_service(&r, T0);
        record(&m, &r, grpc(HttpKind::Server, Some(0), None), 0.01, 5, 7);
        record(&m, &r, grpc(HttpKind::Server, Some(0), None), 0.03, 5, 7);
        record(
            &m,
            &r,
            grpc(HttpKind::Server, Some(13), Some("INTERNAL")),
            0.2,
            5,
            0,
        );
        record(
            &m,
            &r,
            grpc(HttpKind::Client, Some(5), Some("NOT_FOUND")),
            0.1,
            5,
            0,
        );
        let mut c = Collector::new(TemporalityPreference::Cumulative);
        let b = one(c.collect(m.snapshot(), T0 + SEC));
        let rm = &b.request.resource_metrics[0];
        let names: Vec<&str> = rm.scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with("http.")),
            "gRPC calls counted as HTTP too: {names:?}"
        );
        let server = metric(rm, RPC_SERVER_DURATION);
        assert_eq!(server.unit, "s");
        let points = &hist(server).data_points;
        assert_eq!(points.len(), 2);
        let ok = points
            .iter()
            .find(|p| attr(&p.attributes, "rpc.grpc.status_code") == i(0))
            .unwrap();
        assert_eq!(ok.count, 2);
        assert_eq!(attr(&ok.attributes, "rpc.system"), s("grpc"));
        assert_eq!(
            attr(&ok.attributes, "rpc.service"),
            s("grpc.health.v1.Health")
        );
        assert_eq!(attr(&ok.attributes, "rpc.method"), s("Check"));
        assert_eq!(attr(&ok.attributes, "error.type"), None);
        assert_eq!(attr(&ok.attributes, "http.request.method"), None);
        let failed = points
            .iter()
            .find(|p| attr(&p.attributes, "rpc.grpc.status_code") == i(13))
            .unwrap();
        assert_eq!(attr(&failed.attributes, "error.type"), s("INTERNAL"));
        let client = &hist(metric(rm, RPC_CLIENT_DURATION)).data_points;
        assert_eq!(client.len(), 1);
        assert_eq!(attr(&client[0].attributes, "server.address"), s("10.0.0.2"));
        assert_eq!(attr(&client[0].attributes, "server.port"), i(50051));
        assert_eq!(attr(&client[0].attributes, "rpc.grpc.status_code"), i(5));
        // One duration point per series, no body sizes: 2 server + 1 client, + 2 counters.
        assert_eq!(b.data_points, 3 + 2);
    }

    #[test]
    fn cumulative_repeats_everything_with_a_fixed_start() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        let mut c = Collector::new(TemporalityPreference::Cumulative);
        record(&m, &r, server("GET", "/", 200), 0.1, 0, 0);
        let first = one(c.collect(m.snapshot(), T0 + SEC));
        c.commit(first);
        assert_eq!(c.tracked_services(), 0, "cumulative keeps no state");
        record(&m, &r, server("GET", "/", 200), 0.2, 0, 0);
        let second = one(c.collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &second.request.resource_metrics[0];
        let p = &hist(metric(rm, HTTP_SERVER_REQUEST_DURATION)).data_points[0];
        assert_eq!(p.count, 2);
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano),
            (T0, T0 + 2 * SEC)
        );
        assert_eq!((p.min, p.max), (Some(0.1), Some(0.2)));
        // Nothing new: still every series, and the counters.
        let third = one(c.collect(m.snapshot(), T0 + 3 * SEC));
        assert_eq!(third.data_points, 3 + 2);
    }

    #[test]
    fn delta_exports_differences_between_commits() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        let mut c = Collector::new(TemporalityPreference::Delta);
        let get = server("GET", "/", 200);
        record(&m, &r, get.clone(), 0.1, 0, 0);
        m.record_http(
            &r,
            HttpRecord {
                series: get.clone(),
                duration_s: 0.3,
                request_body: 0,
                response_body: Some(0),
                exemplar: Some(ex(0.3, 5)),
            },
            true,
        );

        // First window: from the process start, min/max known.
        let first = one(c.collect(m.snapshot(), T0 + SEC));
        let rm = &first.request.resource_metrics[0];
        let h = hist(metric(rm, HTTP_SERVER_REQUEST_DURATION));
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        let p = &h.data_points[0];
        assert_eq!((p.count, p.start_time_unix_nano), (2, T0));
        assert_eq!((p.min, p.max), (Some(0.1), Some(0.3)));
        assert_eq!(p.exemplars.len(), 1);
        let routes = sum(metric(rm, ROUTE_OVERFLOW));
        assert_eq!(
            routes.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(int(&routes.data_points[0]), 1);
        assert!(
            !rm.scope_metrics[0]
                .metrics
                .iter()
                .any(|m| m.name == SERIES_OVERFLOW),
            "a zero delta is left out"
        );
        c.commit(first);
        assert_eq!(c.tracked_services(), 1);

        // Second window: only the new request, from the previous collection.
        record(&m, &r, get.clone(), 0.004, 0, 0);
        let post = server("POST", "/", 201);
        record(&m, &r, post, 1.0, 0, 0);
        let second = one(c.collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &second.request.resource_metrics[0];
        let h = hist(metric(rm, HTTP_SERVER_REQUEST_DURATION));
        let p = &h.data_points[0];
        assert_eq!(attr(&p.attributes, "http.request.method"), s("GET"));
        assert_eq!(p.count, 1);
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano),
            (T0 + SEC, T0 + 2 * SEC)
        );
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 1);
        assert_eq!(p.bucket_counts[0], 1);
        assert!((p.sum.unwrap() - 0.004).abs() < 1e-12);
        assert_eq!((p.min, p.max), (None, None), "window extremes are unknown");
        assert!(p.exemplars.is_empty(), "the old exemplar is not repeated");
        // A series new in this window: all of it, min/max exact, same window start.
        let p = &h.data_points[1];
        assert_eq!(attr(&p.attributes, "http.request.method"), s("POST"));
        assert_eq!((p.count, p.start_time_unix_nano), (1, T0 + SEC));
        assert_eq!((p.min, p.max), (Some(1.0), Some(1.0)));
        assert!(
            !rm.scope_metrics[0]
                .metrics
                .iter()
                .any(|m| m.name == ROUTE_OVERFLOW),
            "no new route overflow"
        );
        assert_eq!(second.data_points, 2 * 3);

        // Not committed (export failed): the next collection covers both windows.
        drop(second);
        record(&m, &r, get, 0.004, 0, 0);
        let third = one(c.collect(m.snapshot(), T0 + 3 * SEC));
        let p = &hist(metric(
            &third.request.resource_metrics[0],
            HTTP_SERVER_REQUEST_DURATION,
        ))
        .data_points[0];
        assert_eq!((p.count, p.start_time_unix_nano), (2, T0 + SEC));
        c.commit(third);

        // Nothing new at all: nothing to send.
        let idle = c.collect(m.snapshot(), T0 + 4 * SEC);
        assert!(idle.is_empty(), "{idle:?}");
    }

    #[test]
    fn lowmemory_makes_histograms_delta_and_counters_cumulative() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        let mut c = Collector::new(TemporalityPreference::LowMemory);
        m.record_http(
            &r,
            HttpRecord {
                series: server("GET", "/", 200),
                duration_s: 0.1,
                request_body: 0,
                response_body: Some(0),
                exemplar: None,
            },
            true,
        );
        let first = one(c.collect(m.snapshot(), T0 + SEC));
        c.commit(first);
        record(&m, &r, server("GET", "/", 200), 0.1, 0, 0);
        let second = one(c.collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &second.request.resource_metrics[0];
        let h = hist(metric(rm, HTTP_SERVER_REQUEST_DURATION));
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(h.data_points[0].count, 1);
        assert_eq!(h.data_points[0].start_time_unix_nano, T0 + SEC);
        for name in [ROUTE_OVERFLOW, SERIES_OVERFLOW] {
            let s = sum(metric(rm, name));
            assert_eq!(
                s.aggregation_temporality,
                AggregationTemporality::Cumulative as i32
            );
            assert_eq!(s.data_points[0].start_time_unix_nano, T0);
        }
        assert_eq!(int(&sum(metric(rm, ROUTE_OVERFLOW)).data_points[0]), 1);
    }

    #[test]
    fn delta_state_follows_the_registry() {
        let m = Metrics::default();
        let (a, b) = (resource(1, "a"), resource(2, "b"));
        m.add_service(&a, T0);
        m.add_service(&b, T0);
        record(&m, &a, server("GET", "/", 200), 0.1, 0, 0);
        record(&m, &b, server("GET", "/", 200), 0.1, 0, 0);
        let mut c = Collector::new(TemporalityPreference::Delta);
        let first = one(c.collect(m.snapshot(), T0 + SEC));
        assert_eq!(first.request.resource_metrics.len(), 2);
        c.commit(first);
        assert_eq!(c.tracked_services(), 2);

        // b exits and is collected: its baseline goes with the next commit.
        m.service_exited(2, T0 + SEC);
        m.gc(T0 + SEC + crate::metrics::EXITED_RETENTION_NS);
        assert!(
            c.collect(m.snapshot(), T0 + 2 * SEC).is_empty(),
            "a has nothing new"
        );
        assert_eq!(c.tracked_services(), 1);

        // A new process reusing pid 2 starts from scratch, from its own start time.
        let b2 = resource(2, "b2");
        m.add_service(&b2, T0 + 5 * SEC);
        record(&m, &b2, server("GET", "/", 200), 0.1, 0, 0);
        let third = one(c.collect(m.snapshot(), T0 + 6 * SEC));
        assert_eq!(third.request.resource_metrics.len(), 1);
        let p = &hist(metric(
            &third.request.resource_metrics[0],
            HTTP_SERVER_REQUEST_DURATION,
        ))
        .data_points[0];
        assert_eq!((p.count, p.start_time_unix_nano), (1, T0 + 5 * SEC));
    }

    /// (pid, method) of every histogram point, per family name.
    fn series_in(b: &Batch) -> Vec<(u32, String, &'static str)> {
        let mut out = Vec::new();
        for rm in &b.request.resource_metrics {
            let pid = rm.resource.as_ref().unwrap().attributes.iter();
            let pid = match pid
                .clone()
                .find(|kv| kv.key == "process.pid")
                .and_then(|kv| kv.value.clone()?.value)
            {
                Some(any_value::Value::IntValue(p)) => p as u32,
                other => panic!("pid {other:?}"),
            };
            for m in &rm.scope_metrics[0].metrics {
                let family = FAMILIES.iter().find(|f| f.name == m.name).unwrap().name;
                if let Some(metric::Data::Histogram(h)) = &m.data {
                    for p in &h.data_points {
                        let Some(any_value::Value::StringValue(method)) =
                            attr(&p.attributes, "http.request.method")
                        else {
                            panic!("no method")
                        };
                        out.push((pid, method, family));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn requests_are_bounded_and_a_series_never_straddles_two() {
        let m = Metrics::default();
        let (a, b) = (resource(1, "a"), resource(2, "b"));
        m.add_service(&a, T0);
        m.add_service(&b, T0);
        for method in ["A", "B", "C", "D", "E"] {
            record(&m, &a, server(method, "/", 200), 0.1, 0, 0);
        }
        for method in ["F", "G"] {
            record(&m, &b, server(method, "/", 200), 0.1, 0, 0);
        }
        let batches = Collector::with_max_points(TemporalityPreference::Cumulative, 7)
            .collect(m.snapshot(), T0 + SEC);
        // 7 series x 3 histograms + 2 processes x 2 counters.
        let total: u64 = batches.iter().map(|b| b.data_points).sum();
        assert_eq!(total, 7 * 3 + 2 * 2);
        let mut seen = Vec::new();
        for batch in &batches {
            assert!(batch.data_points <= 7, "{}", batch.data_points);
            let counted: u64 = batch
                .request
                .resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics[0].metrics)
                .map(|m| match &m.data {
                    Some(metric::Data::Histogram(h)) => h.data_points.len() as u64,
                    Some(metric::Data::Sum(s)) => s.data_points.len() as u64,
                    _ => 0,
                })
                .sum();
            assert_eq!(counted, batch.data_points);
            let series = series_in(batch);
            for (pid, method, _) in &series {
                let n = series
                    .iter()
                    .filter(|(p, m, _)| p == pid && m == method)
                    .count();
                assert_eq!(n, 3, "{method}: all three histograms in one request");
                if !seen.contains(&(*pid, method.clone())) {
                    seen.push((*pid, method.clone()));
                }
            }
        }
        assert_eq!(seen.len(), 7);
        // a: [A B] [C D] [E, counters]; b: [F G] [counters].
        let sizes: Vec<u64> = batches.iter().map(|b| b.data_points).collect();
        assert_eq!(sizes, [6, 6, 5, 6, 2]);
    }

    #[test]
    fn delta_commits_per_request() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        let mut c = Collector::with_max_points(TemporalityPreference::Delta, 4);
        for method in ["A", "B", "C"] {
            record(&m, &r, server(method, "/", 200), 0.1, 0, 0);
        }
        m.record_http(
            &r,
            HttpRecord {
                series: server("A", "/", 200),
                duration_s: 0.1,
                request_body: 0,
                response_body: Some(0),
                exemplar: None,
            },
            true,
        );
        let batches = c.collect(m.snapshot(), T0 + SEC);
        let layout: Vec<Vec<String>> = batches
            .iter()
            .map(|b| {
                let mut v: Vec<String> = series_in(b).into_iter().map(|(_, m, _)| m).collect();
                v.dedup();
                v
            })
            .collect();
        assert_eq!(layout, [vec!["A"], vec!["B"], vec!["C"]]);
        assert_eq!(
            batches[2].data_points,
            3 + 1,
            "C's histograms and the route overflow"
        );
        assert_eq!(c.tracked_series(), 3);
        // B's request fails; A's and C's (with the counter) are delivered.
        for (i, b) in batches.into_iter().enumerate() {
            if i != 1 {
                c.commit(b);
            }
        }

        record(&m, &r, server("A", "/", 200), 0.1, 0, 0);
        let next = c.collect(m.snapshot(), T0 + 2 * SEC);
        assert_eq!(next.len(), 2, "A and B, one request each");
        let metrics: Vec<&Metric> = next
            .iter()
            .flat_map(|b| &b.request.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics[0].metrics)
            .collect();
        let by_method = |m: &str| {
            metrics
                .iter()
                .filter(|x| x.name == HTTP_SERVER_REQUEST_DURATION)
                .flat_map(|x| &hist(x).data_points)
                .find(|p| attr(&p.attributes, "http.request.method") == s(m))
                .map(|p| (p.count, p.start_time_unix_nano))
        };
        assert_eq!(by_method("A"), Some((1, T0 + SEC)), "only the new request");
        assert_eq!(by_method("B"), Some((1, T0)), "sent again, whole window");
        assert_eq!(by_method("C"), None, "delivered, nothing new");
        assert!(
            !metrics.iter().any(|m| m.name == ROUTE_OVERFLOW),
            "the counter was delivered with C"
        );
    }

    #[test]
    fn delta_never_underflows_on_a_shrunk_histogram() {
        let mut h = Histogram::new(SIZE_BUCKETS);
        h.record(1.0, None);
        let mut bigger = h.clone();
        bigger.record(2.0, None);
        // `earlier` ahead of `now` (cannot happen within one process): treated as a reset.
        let d = delta(&h, Some(&bigger)).unwrap();
        assert_eq!(d.count, 1);
        assert_eq!(d.min, 1.0);
        assert!(delta(&h, Some(&h)).is_none());
    }

    fn gauge(m: &Metric) -> &proto::Gauge {
        match &m.data {
            Some(metric::Data::Gauge(g)) => g,
            other => panic!("{} is not a gauge: {other:?}", m.name),
        }
    }

    fn double(p: &NumberDataPoint) -> f64 {
        match p.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            other => panic!("not a double: {other:?}"),
        }
    }

    fn has(rm: &ResourceMetrics, name: &str) -> bool {
        rm.scope_metrics[0].metrics.iter().any(|m| m.name == name)
    }

    fn cpu(rm: &ResourceMetrics, mode: &str) -> Option<(f64, u64)> {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .filter(|m| m.name == PROCESS_CPU_TIME)
            .flat_map(|m| &sum(m).data_points)
            .find(|p| attr(&p.attributes, "cpu.mode") == s(mode))
            .map(|p| (double(p), p.start_time_unix_nano))
    }

    /// Process start (Unix s) of the process stats below: 10 s before T0.
    const PROC_START_S: f64 = 1_699_999_990.0;

    fn process(user: f64, system: f64) -> ProcessStats {
        ProcessStats {
            threads: 7,
            cpu_user_s: user,
            cpu_system_s: system,
            rss_bytes: 50 << 20,
            virtual_bytes: 1 << 30,
            open_fds: 12,
            start_time_s: PROC_START_S,
            ..Default::default()
        }
    }

    fn site(function: &str, line: u32, live: i64, suspected: bool) -> SiteSnapshot {
        SiteSnapshot {
            site: Arc::new(Site {
                function: function.into(),
                file: "/src/app/main.go".into(),
                line,
            }),
            live,
            created: live as u64,
            suspected,
        }
    }

    fn go(gc_cycles: u64) -> GoStats {
        GoStats {
            version: "1.22.1".into(),
            goroutines: 530,
            gc_cycles,
            gc_pause_sum_s: 0.012,
            gc_pause_quantiles: Some([0.0001, 0.0002, 0.0003, 0.0004, 0.002]),
            sites: vec![
                site("main.leak", 42, 523, true),
                site("main.serve", 17, 5, false),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn go_memory_semconv_counters_are_monotonic_and_the_rest_up_down() {
        let m = Metrics::default();
        m.add_service(&resource(1, "a"), T0);
        let mut g = go(3);
        g.mem = Some(crate::runtime::gomem::GoMemStats {
            sys: 40 << 20,
            heap_released: 8 << 20,
            stack_inuse: 3 << 20,
            total_alloc: 900 << 20,
            mallocs: 12_345,
            next_gc: 16 << 20,
            gogc: 100,
            memory_limit: 1 << 30,
            gomaxprocs: Some(2),
            ..Default::default()
        });
        m.set_go(1, g);
        for pref in [
            TemporalityPreference::Cumulative,
            TemporalityPreference::Delta,
        ] {
            let b = one(Collector::new(pref).collect(m.snapshot(), T0 + SEC));
            let rm = &b.request.resource_metrics[0];
            // go.memory.used: one point per go.memory.type, summing to sys - released.
            let used = sum(metric(rm, GO_MEMORY_USED));
            let by_type: Vec<(Option<any_value::Value>, i64)> = used
                .data_points
                .iter()
                .map(|p| (attr(&p.attributes, "go.memory.type"), int(p)))
                .collect();
            assert_eq!(
                by_type,
                vec![
                    (Some(any_value::Value::StringValue("stack".into())), 3 << 20),
                    (
                        Some(any_value::Value::StringValue("other".into())),
                        29 << 20
                    ),
                ],
                "{pref:?}"
            );
            assert!(!used.is_monotonic);
            for (name, unit, monotonic, value) in [
                (GO_MEMORY_LIMIT, "By", false, 1 << 30),
                (GO_MEMORY_ALLOCATED, "By", true, 900 << 20),
                (GO_MEMORY_ALLOCATIONS, "{allocation}", true, 12_345),
                (GO_MEMORY_GC_GOAL, "By", false, 16 << 20),
                (GO_PROCESSOR_LIMIT, "{thread}", false, 2),
                (GO_CONFIG_GOGC, "%", false, 100),
            ] {
                let metric = metric(rm, name);
                assert_eq!(metric.unit, unit, "{name}");
                let s = sum(metric);
                assert_eq!(s.is_monotonic, monotonic, "{name}");
                // Up-down counters stay cumulative whatever the preference.
                let want = if monotonic && pref == TemporalityPreference::Delta {
                    AggregationTemporality::Delta
                } else {
                    AggregationTemporality::Cumulative
                };
                assert_eq!(s.aggregation_temporality, want as i32, "{name} {pref:?}");
                assert_eq!(s.data_points.len(), 1, "{name}");
                assert_eq!(int(&s.data_points[0]), value, "{name}");
            }
        }
    }

    #[test]
    fn process_and_go_views_convert_with_semconv_names_units_and_types() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        m.update_process(1, |p| *p = process(1.5, 0.25));
        m.set_go(1, go(9));
        let b =
            one(Collector::new(TemporalityPreference::Cumulative).collect(m.snapshot(), T0 + SEC));
        let rm = &b.request.resource_metrics[0];
        let unit = |name: &str| metric(rm, name).unit.clone();
        for (name, want) in [
            (PROCESS_THREAD_COUNT, "{thread}"),
            (PROCESS_CPU_TIME, "s"),
            (PROCESS_MEMORY_USAGE, "By"),
            (PROCESS_MEMORY_VIRTUAL, "By"),
            (PROCESS_FILE_DESCRIPTOR_COUNT, "{file_descriptor}"),
            (GO_GOROUTINE_COUNT, "{goroutine}"),
            (GO_GC_CYCLES, "{gc_cycle}"),
            (GO_GC_PAUSE_DURATION, "s"),
            (GO_GOROUTINE_BY_SITE, "{goroutine}"),
            (GO_GOROUTINE_LEAK_SUSPECTED, "{site}"),
        ] {
            assert_eq!(unit(name), want, "{name}");
        }
        // Semconv UpDownCounters: non-monotonic cumulative sums.
        let g = |name: &str| {
            let s = sum(metric(rm, name));
            assert!(!s.is_monotonic, "{name}");
            assert_eq!(
                s.aggregation_temporality,
                AggregationTemporality::Cumulative as i32,
                "{name}"
            );
            let points = &s.data_points;
            assert_eq!(points.len(), 1, "{name}");
            assert_eq!(points[0].start_time_unix_nano, T0, "{name}");
            assert_eq!(points[0].time_unix_nano, T0 + SEC);
            int(&points[0])
        };
        assert_eq!(g(PROCESS_THREAD_COUNT), 7);
        assert_eq!(g(PROCESS_MEMORY_USAGE), 50 << 20);
        assert_eq!(g(PROCESS_MEMORY_VIRTUAL), 1 << 30);
        assert_eq!(g(PROCESS_FILE_DESCRIPTOR_COUNT), 12);
        assert_eq!(g(GO_GOROUTINE_COUNT), 530);

        let cpu_time = sum(metric(rm, PROCESS_CPU_TIME));
        assert!(cpu_time.is_monotonic);
        assert_eq!(
            cpu_time.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let proc_start = (PROC_START_S * 1e9) as u64;
        assert_eq!(
            cpu(rm, "user"),
            Some((1.5, proc_start)),
            "from the process start"
        );
        assert_eq!(cpu(rm, "system"), Some((0.25, proc_start)));

        let gc = sum(metric(rm, GO_GC_CYCLES));
        assert!(gc.is_monotonic);
        assert_eq!(int(&gc.data_points[0]), 9);
        assert_eq!(gc.data_points[0].start_time_unix_nano, T0);

        let Some(metric::Data::Summary(pause)) = &metric(rm, GO_GC_PAUSE_DURATION).data else {
            panic!("not a summary");
        };
        let p = &pause.data_points[0];
        assert_eq!((p.count, p.sum), (9, 0.012));
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (T0, T0 + SEC));
        let q: Vec<(f64, f64)> = p
            .quantile_values
            .iter()
            .map(|v| (v.quantile, v.value))
            .collect();
        assert_eq!(
            q,
            [
                (0.0, 0.0001),
                (0.25, 0.0002),
                (0.5, 0.0003),
                (0.75, 0.0004),
                (1.0, 0.002)
            ]
        );

        let sites = &gauge(metric(rm, GO_GOROUTINE_BY_SITE)).data_points;
        assert_eq!(sites.len(), 2);
        assert_eq!(
            attr(&sites[0].attributes, "code.function.name"),
            s("main.leak")
        );
        assert_eq!(
            attr(&sites[0].attributes, "code.file.path"),
            s("/src/app/main.go")
        );
        assert_eq!(attr(&sites[0].attributes, "code.line.number"), i(42));
        assert_eq!(int(&sites[0]), 523);
        assert_eq!(int(&sites[1]), 5);
        let leaks = &gauge(metric(rm, GO_GOROUTINE_LEAK_SUSPECTED)).data_points;
        assert_eq!(leaks.len(), 1, "only suspected sites");
        assert_eq!(
            attr(&leaks[0].attributes, "code.function.name"),
            s("main.leak")
        );
        assert_eq!(int(&leaks[0]), 1);

        // 6 process points (CPU twice), 3 Go + 2 sites + 1 leak, 2 overflow counters.
        assert_eq!(b.data_points, 6 + 6 + 2);
        // And it survives the wire.
        let bytes = b.request.encode_to_vec();
        assert_eq!(
            ExportMetricsServiceRequest::decode(&bytes[..]).unwrap(),
            b.request
        );
    }

    #[test]
    fn runtime_views_only_when_sampled_and_alive() {
        let m = Metrics::default();
        let (a, b) = (resource(1, "a"), resource(2, "b"));
        m.add_service(&a, T0);
        m.add_service(&b, T0);
        // a: Go without a /proc sample yet; b: process only, then exited.
        m.set_go(
            1,
            GoStats {
                gc_pause_quantiles: None,
                ..go(0)
            },
        );
        m.update_process(2, |p| *p = process(1.0, 1.0));
        let batch =
            one(Collector::new(TemporalityPreference::Cumulative).collect(m.snapshot(), T0 + SEC));
        let rms = &batch.request.resource_metrics;
        assert!(!has(&rms[0], PROCESS_THREAD_COUNT) && !has(&rms[0], PROCESS_CPU_TIME));
        assert!(has(&rms[0], GO_GOROUTINE_COUNT));
        let Some(metric::Data::Summary(pause)) = &metric(&rms[0], GO_GC_PAUSE_DURATION).data else {
            panic!("not a summary");
        };
        assert!(
            pause.data_points[0].quantile_values.is_empty(),
            "no pauses seen: no quantiles"
        );
        assert!(has(&rms[1], PROCESS_THREAD_COUNT) && !has(&rms[1], GO_GOROUTINE_COUNT));

        m.service_exited(2, T0 + SEC);
        let batch =
            one(Collector::new(TemporalityPreference::Cumulative)
                .collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &batch.request.resource_metrics[1];
        assert!(
            !has(rm, PROCESS_THREAD_COUNT) && !has(rm, PROCESS_CPU_TIME),
            "stale once exited"
        );
    }

    #[test]
    fn runtime_sums_follow_the_temporality_preference() {
        let m = Metrics::default();
        let r = resource(1, "a");
        m.add_service(&r, T0);
        m.update_process(1, |p| *p = process(1.5, 0.25));
        m.set_go(1, go(9));
        let proc_start = (PROC_START_S * 1e9) as u64;

        // lowmemory: observed counters stay cumulative.
        let mut low = Collector::new(TemporalityPreference::LowMemory);
        let first = one(low.collect(m.snapshot(), T0 + SEC));
        low.commit(first);
        let second = one(low.collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &second.request.resource_metrics[0];
        for name in [PROCESS_CPU_TIME, GO_GC_CYCLES] {
            assert_eq!(
                sum(metric(rm, name)).aggregation_temporality,
                AggregationTemporality::Cumulative as i32,
                "{name}"
            );
        }
        assert_eq!(cpu(rm, "user"), Some((1.5, proc_start)));

        // delta: the first window is everything since the start.
        let mut c = Collector::new(TemporalityPreference::Delta);
        let first = one(c.collect(m.snapshot(), T0 + SEC));
        let rm = &first.request.resource_metrics[0];
        let gc = sum(metric(rm, GO_GC_CYCLES));
        assert_eq!(
            gc.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        assert_eq!(
            (
                int(&gc.data_points[0]),
                gc.data_points[0].start_time_unix_nano
            ),
            (9, T0)
        );
        assert_eq!(cpu(rm, "user"), Some((1.5, proc_start)));
        c.commit(first);

        // Only user CPU moved: system and GC are left out; gauges are always sent.
        m.update_process(1, |p| p.cpu_user_s = 2.0);
        let second = one(c.collect(m.snapshot(), T0 + 2 * SEC));
        let rm = &second.request.resource_metrics[0];
        assert_eq!(cpu(rm, "user"), Some((0.5, T0 + SEC)));
        assert_eq!(cpu(rm, "system"), None);
        assert!(!has(rm, GO_GC_CYCLES));
        assert_eq!(
            int(&sum(metric(rm, GO_GOROUTINE_COUNT)).data_points[0]),
            530
        );

        // Not delivered: the next window still starts at the last delivery.
        drop(second);
        m.set_go(1, go(12));
        let third = one(c.collect(m.snapshot(), T0 + 3 * SEC));
        let rm = &third.request.resource_metrics[0];
        assert_eq!(cpu(rm, "user"), Some((0.5, T0 + SEC)));
        let gc = &sum(metric(rm, GO_GC_CYCLES)).data_points[0];
        assert_eq!((int(gc), gc.start_time_unix_nano), (3, T0 + SEC));
        c.commit(third);

        // Nothing moved: no sums, and their windows restart now.
        let idle = one(c.collect(m.snapshot(), T0 + 4 * SEC));
        let rm = &idle.request.resource_metrics[0];
        assert!(!has(rm, PROCESS_CPU_TIME) && !has(rm, GO_GC_CYCLES));
        m.set_go(1, go(13));
        let next = one(c.collect(m.snapshot(), T0 + 5 * SEC));
        let gc = &sum(metric(&next.request.resource_metrics[0], GO_GC_CYCLES)).data_points[0];
        assert_eq!((int(gc), gc.start_time_unix_nano), (1, T0 + 4 * SEC));
    }
}
