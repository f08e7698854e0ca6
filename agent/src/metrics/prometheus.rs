//! Prometheus text exposition (0.0.4) and OpenMetrics 1.0 rendering.
//!
//! Names follow the OpenTelemetry-to-Prometheus compatibility rules (dots become
//! underscores, the unit is a suffix: `http.server.request.duration` in seconds becomes
//! `http_server_request_duration_seconds`), which is what dashboards built on Beyla,
//! the OTel collector or client_golang already query. Every series carries
//! `service_name` and `service_instance_id` so one agent serving many processes stays
//! readable; `target_info` carries the rest of each resource. OpenMetrics output adds
//! `# UNIT`, trace-id exemplars on histogram buckets, and `# EOF`.

use std::{borrow::Cow, fmt::Write};

use super::{Histogram, HttpKind, ServiceMetrics};
use crate::resource::Resource;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    Text,
    /// `application/openmetrics-text; version=1.0.0`
    OpenMetrics,
}

impl Format {
    /// Picks the format from a scrape's Accept header (Prometheus asks for OpenMetrics
    /// first when exemplar storage is on).
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A label: name (usually static) and value.
pub type Label = (Cow<'static, str>, String);

/// One summary series: labels, (quantile, value) pairs, sum, count.
pub type SummarySeries = (Vec<Label>, Vec<(f64, f64)>, f64, u64);

/// One counter or gauge sample.
pub struct Sample {
    pub labels: Vec<Label>,
    pub value: f64,
}

/// Writes one exposition; families must be written whole, one after another.
pub struct Encoder {
    out: String,
    format: Format,
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// An OTel attribute key as a Prometheus label name.
pub fn label_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else if v == v.trunc() && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn write_labels(out: &mut String, labels: &[Label], extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"{}\"", escape(v));
    }
    if let Some((k, v)) = extra {
        if !first {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out.push('}');
}

/// The labels that identify a traced process on every series.
pub fn service_labels(r: &Resource) -> Vec<Label> {
    let instance = r
        .attributes
        .iter()
        .find(|(k, _)| k == "service.instance.id")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            let host = r
                .attributes
                .iter()
                .find(|(k, _)| k == "host.name")
                .map(|(_, v)| v.as_str())
                .unwrap_or("localhost");
            format!("{host}:{}", r.pid)
        });
    vec![
        ("service_name".into(), r.service_name.clone()),
        ("service_instance_id".into(), instance),
    ]
}

impl Encoder {
    pub fn new(format: Format) -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
            format,
        }
    }

    fn header(&mut self, name: &str, kind: &str, help: &str, unit: Option<&str>) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        if let (Format::OpenMetrics, Some(u)) = (self.format, unit) {
            let _ = writeln!(self.out, "# UNIT {name} {u}");
        }
    }

    /// A counter family. `name` is without `_total`; it is added to samples.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        // The 0.0.4 text format names the family with its `_total`; OpenMetrics without.
        match self.format {
            Format::Text => self.header(&format!("{name}_total"), "counter", help, None),
            Format::OpenMetrics => self.header(name, "counter", help, None),
        }
        for s in samples {
            let _ = write!(self.out, "{name}_total");
            write_labels(&mut self.out, &s.labels, None);
            let _ = writeln!(self.out, " {}", fmt_value(s.value));
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<&str>, samples: &[Sample]) {
        if samples.is_empty() {
            return;
        }
        self.header(name, "gauge", help, unit);
        for s in samples {
            self.out.push_str(name);
            write_labels(&mut self.out, &s.labels, None);
            let _ = writeln!(self.out, " {}", fmt_value(s.value));
        }
    }

    /// A histogram family: each entry is (labels, histogram).
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&str>,
        series: &[(Vec<Label>, &Histogram)],
    ) {
        if series.is_empty() {
            return;
        }
        self.header(name, "histogram", help, unit);
        for (labels, h) in series {
            let mut cumulative = 0u64;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count;
                let le = h
                    .bounds
                    .get(i)
                    .map_or("+Inf".to_string(), |b| fmt_value(*b));
                let _ = write!(self.out, "{name}_bucket");
                write_labels(&mut self.out, labels, Some(("le", &le)));
                let _ = write!(self.out, " {cumulative}");
                if self.format == Format::OpenMetrics
                    && let Some(ex) = &h.exemplars[i]
                {
                    let _ = write!(
                        self.out,
                        " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                        crate::span::context::hex(&ex.trace_id),
                        crate::span::context::hex(&ex.span_id),
                        fmt_value(ex.value),
                        ex.time_unix_ns as f64 / 1e9
                    );
                }
                self.out.push('\n');
            }
            let _ = write!(self.out, "{name}_sum");
            write_labels(&mut self.out, labels, None);
            let _ = writeln!(self.out, " {}", fmt_value(h.sum));
            let _ = write!(self.out, "{name}_count");
            write_labels(&mut self.out, labels, None);
            let _ = writeln!(self.out, " {}", h.count);
        }
    }

    /// A summary family.
    pub fn summary(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&str>,
        series: &[SummarySeries],
    ) {
        if series.is_empty() {
            return;
        }
        self.header(name, "summary", help, unit);
        for (labels, quantiles, sum, count) in series {
            for (q, v) in quantiles {
                self.out.push_str(name);
                write_labels(&mut self.out, labels, Some(("quantile", &fmt_value(*q))));
                let _ = writeln!(self.out, " {}", fmt_value(*v));
            }
            let _ = write!(self.out, "{name}_sum");
            write_labels(&mut self.out, labels, None);
            let _ = writeln!(self.out, " {}", fmt_value(*sum));
            let _ = write!(self.out, "{name}_count");
            write_labels(&mut self.out, labels, None);
            let _ = writeln!(self.out, " {count}");
        }
    }

    /// `target_info`: one sample per process with its resource attributes as labels.
    pub fn target_info(&mut self, resources: &[&Resource]) {
        if resources.is_empty() {
            return;
        }
        let samples: Vec<Sample> = resources
            .iter()
            .map(|r| {
                let mut labels = service_labels(r);
                for (k, v) in &r.attributes {
                    if k == "service.name" || k == "service.instance.id" {
                        continue;
                    }
                    labels.push((label_name(k).into(), v.clone()));
                }
                Sample { labels, value: 1.0 }
            })
            .collect();
        self.gauge("target_info", "Target metadata", None, &samples);
    }

    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// The node-local service graph, under the names Grafana Tempo's service-graph
/// processor uses (so its service-graph views work on these series): calls, failed
/// calls and server-side latency per client -> server edge.
pub fn encode_edges(enc: &mut Encoder, edges: &[super::Edge], overflow: u64) {
    let labels = |e: &super::Edge| -> Vec<Label> {
        vec![
            ("client".into(), e.client.to_string()),
            ("server".into(), e.server.to_string()),
            ("connection_type".into(), String::new()),
        ]
    };
    let samples = |value: fn(&super::EdgeStats) -> u64| -> Vec<Sample> {
        edges
            .iter()
            .map(|e| Sample {
                labels: labels(e),
                value: value(&e.stats) as f64,
            })
            .collect()
    };
    enc.counter(
        "traces_service_graph_request",
        "Requests between two traced services on this node.",
        &samples(|s| s.requests),
    );
    enc.counter(
        "traces_service_graph_request_failed",
        "Failed requests (server span in error) between two traced services on this node.",
        &samples(|s| s.failed),
    );
    let hist: Vec<(Vec<Label>, &Histogram)> = edges
        .iter()
        .map(|e| (labels(e), &e.stats.server_seconds))
        .collect();
    enc.histogram(
        "traces_service_graph_request_server_seconds",
        "Server-side duration of requests between two traced services on this node.",
        Some("seconds"),
        &hist,
    );
    if overflow > 0 {
        enc.counter(
            "periscope_service_graph_edge_overflow",
            "Calls not counted in the service graph because it reached its edge cap.",
            &[Sample {
                labels: Vec::new(),
                value: overflow as f64,
            }],
        );
    }
}

/// Renders the HTTP RED families of every service.
pub fn encode_http(enc: &mut Encoder, services: &[ServiceMetrics]) {
    type Fam<'a> = Vec<(Vec<Label>, &'a Histogram)>;
    let mut fams: [Fam<'_>; 6] = Default::default();
    // gRPC calls: rpc_{server,client}_duration_seconds.
    let mut rpc: [Fam<'_>; 2] = Default::default();
    for svc in services {
        let base = service_labels(&svc.resource);
        let mut keys: Vec<_> = svc.http.keys().collect();
        keys.sort();
        for key in keys {
            let stats = &svc.http[key];
            let mut labels = base.clone();
            if key.overflow {
                labels.push(("otel_metric_overflow".into(), "true".into()));
            } else {
                match &key.rpc {
                    Some(r) => {
                        labels.push(("rpc_system".into(), "grpc".into()));
                        labels.push(("rpc_service".into(), r.service.to_string()));
                        labels.push(("rpc_method".into(), r.method.to_string()));
                        if let Some(code) = r.grpc_status {
                            labels.push(("rpc_grpc_status_code".into(), code.to_string()));
                        }
                    }
                    None => {
                        labels.push(("http_request_method".into(), key.method.to_string()));
                        labels.push(("http_response_status_code".into(), key.status.to_string()));
                        if key.kind == HttpKind::Server && !key.route.is_empty() {
                            labels.push(("http_route".into(), key.route.to_string()));
                        }
                    }
                }
                if let Some(a) = &key.server_address {
                    labels.push(("server_address".into(), a.to_string()));
                    labels.push(("server_port".into(), key.server_port.to_string()));
                }
                if let Some(e) = &key.error_type {
                    labels.push(("error_type".into(), e.to_string()));
                }
            }
            if key.rpc.is_some() {
                rpc[usize::from(key.kind == HttpKind::Client)].push((labels, &stats.duration));
                continue;
            }
            let base_i = if key.kind == HttpKind::Server { 0 } else { 3 };
            fams[base_i].push((labels.clone(), &stats.duration));
            fams[base_i + 1].push((labels.clone(), &stats.request_body));
            fams[base_i + 2].push((labels, &stats.response_body));
        }
    }
    let names = [
        (
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests.",
            "seconds",
        ),
        (
            "http_server_request_body_size_bytes",
            "Size of HTTP server request bodies.",
            "bytes",
        ),
        (
            "http_server_response_body_size_bytes",
            "Size of HTTP server response bodies.",
            "bytes",
        ),
        (
            "http_client_request_duration_seconds",
            "Duration of HTTP client requests.",
            "seconds",
        ),
        (
            "http_client_request_body_size_bytes",
            "Size of HTTP client request bodies.",
            "bytes",
        ),
        (
            "http_client_response_body_size_bytes",
            "Size of HTTP client response bodies.",
            "bytes",
        ),
    ];
    for (fam, (name, help, unit)) in fams.iter().zip(names) {
        enc.histogram(name, help, Some(unit), fam);
    }
    let names = [
        (
            "rpc_server_duration_seconds",
            "Duration of gRPC server calls.",
        ),
        (
            "rpc_client_duration_seconds",
            "Duration of gRPC client calls.",
        ),
    ];
    for (fam, (name, help)) in rpc.iter().zip(names) {
        enc.histogram(name, help, Some("seconds"), fam);
    }
}

/// Renders process gauges for every service (client_golang's process collector names,
/// so existing dashboards work, plus `process_threads` from OTel's process.thread.count).
pub fn encode_process(enc: &mut Encoder, services: &[ServiceMetrics]) {
    let live: Vec<&ServiceMetrics> = services
        .iter()
        .filter(|s| s.exited_unix_ns.is_none())
        .collect();
    let fam = |f: &dyn Fn(&ServiceMetrics) -> f64| -> Vec<Sample> {
        live.iter()
            .map(|s| Sample {
                labels: service_labels(&s.resource),
                value: f(s),
            })
            .collect()
    };
    enc.counter(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds.",
        &fam(&|s| s.process.cpu_user_s + s.process.cpu_system_s),
    );
    enc.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        Some("bytes"),
        &fam(&|s| s.process.rss_bytes as f64),
    );
    enc.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        Some("bytes"),
        &fam(&|s| s.process.virtual_bytes as f64),
    );
    enc.gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        None,
        &fam(&|s| s.process.open_fds as f64),
    );
    enc.gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        Some("seconds"),
        &fam(&|s| s.process.start_time_s),
    );
    enc.gauge(
        "process_threads",
        "Live OS threads of the process (kept by sched tracepoint events).",
        None,
        &fam(&|s| s.process.threads as f64),
    );
}

/// Renders the Go runtime families: the client_golang names Go dashboards already
/// query (go_goroutines, go_threads, go_gc_duration_seconds, go_info), plus goroutines by
/// creation site and leak suspects under periscope_go_*.
pub fn encode_go(enc: &mut Encoder, services: &[ServiceMetrics]) {
    let go: Vec<(&ServiceMetrics, &crate::runtime::go::GoStats)> = services
        .iter()
        .filter(|s| s.exited_unix_ns.is_none())
        .filter_map(|s| s.go.as_ref().map(|g| (s, g)))
        .collect();
    let fam = |f: &dyn Fn(&ServiceMetrics, &crate::runtime::go::GoStats) -> f64| -> Vec<Sample> {
        go.iter()
            .map(|(s, g)| Sample {
                labels: service_labels(&s.resource),
                value: f(s, g),
            })
            .collect()
    };
    enc.gauge(
        "go_goroutines",
        "Number of goroutines that currently exist.",
        None,
        &fam(&|_, g| g.goroutines as f64),
    );
    enc.gauge(
        "go_threads",
        "Number of OS threads created.",
        None,
        // The runtime's thread count (client_golang's meaning) when read from memory, else
        // the live threads seen from sched events.
        &fam(&|s, g| {
            g.mem
                .as_ref()
                .and_then(|m| m.threads)
                .map_or(s.process.threads as f64, |t| t as f64)
        }),
    );
    let info: Vec<Sample> = go
        .iter()
        .map(|(s, g)| {
            let mut labels = service_labels(&s.resource);
            labels.push((
                "version".into(),
                format!("go{}", g.version.trim_start_matches("go")),
            ));
            Sample { labels, value: 1.0 }
        })
        .collect();
    enc.gauge(
        "go_info",
        "Information about the Go environment.",
        None,
        &info,
    );
    encode_go_memstats(enc, &go);
    let gc: Vec<SummarySeries> = go
        .iter()
        .map(|(s, g)| {
            let q = g.gc_pause_quantiles.unwrap_or([0.0; 5]);
            (
                service_labels(&s.resource),
                vec![
                    (0.0, q[0]),
                    (0.25, q[1]),
                    (0.5, q[2]),
                    (0.75, q[3]),
                    (1.0, q[4]),
                ],
                g.gc_pause_sum_s,
                g.gc_cycles,
            )
        })
        .collect();
    enc.summary(
        "go_gc_duration_seconds",
        "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.",
        Some("seconds"),
        &gc,
    );
    enc.counter(
        "periscope_go_goroutines_created",
        "Goroutines created since the agent attached.",
        &fam(&|_, g| g.goroutines_created as f64),
    );
    let site_labels = |s: &ServiceMetrics, site: &crate::runtime::go::SiteSnapshot| {
        let mut labels = service_labels(&s.resource);
        labels.push(("site".into(), site.site.label()));
        labels.push(("function".into(), site.site.function.clone()));
        labels.push(("package".into(), site.site.package().to_string()));
        labels.push(("file".into(), site.site.file.clone()));
        labels.push(("line".into(), site.site.line.to_string()));
        labels
    };
    let by_site: Vec<Sample> = go
        .iter()
        .flat_map(|(s, g)| {
            g.sites.iter().map(|site| Sample {
                labels: site_labels(s, site),
                value: site.live as f64,
            })
        })
        .collect();
    enc.gauge(
        "periscope_go_goroutines_by_site",
        "Live goroutines per creation site (the go statement), top sites per process.",
        None,
        &by_site,
    );
    let suspects: Vec<Sample> = go
        .iter()
        .flat_map(|(s, g)| {
            g.sites.iter().filter(|x| x.suspected).map(|site| Sample {
                labels: site_labels(s, site),
                value: 1.0,
            })
        })
        .collect();
    enc.gauge(
        "periscope_go_goroutine_leak_suspected",
        "1 for each creation site whose live goroutines grew steadily over the leak window.",
        None,
        &suspects,
    );
}

/// client_golang's `go_memstats_*` (names, help and types of its Go collector, whose values
/// come from runtime/metrics; see runtime/gomem.rs), its newer GOGC / GOMEMLIMIT /
/// GOMAXPROCS gauges, for the processes whose statistics could be read from memory.
fn encode_go_memstats(enc: &mut Encoder, go: &[(&ServiceMetrics, &crate::runtime::go::GoStats)]) {
    use crate::runtime::gomem::GoMemStats;
    let mem: Vec<(&ServiceMetrics, &GoMemStats)> = go
        .iter()
        .filter_map(|(s, g)| g.mem.as_ref().map(|m| (*s, m)))
        .collect();
    let fam = |f: &dyn Fn(&GoMemStats) -> f64| -> Vec<Sample> {
        mem.iter()
            .map(|(s, m)| Sample {
                labels: service_labels(&s.resource),
                value: f(m),
            })
            .collect()
    };
    type Field = fn(&GoMemStats) -> f64;
    // (name, help, is a counter, value); counters are named without `_total`.
    const SERIES: &[(&str, &str, bool, Field)] = &[
        (
            "go_memstats_alloc_bytes",
            "Number of bytes allocated and still in use.",
            false,
            |m| m.heap_alloc as f64,
        ),
        (
            "go_memstats_alloc_bytes",
            "Total number of bytes allocated, even if freed.",
            true,
            |m| m.total_alloc as f64,
        ),
        (
            "go_memstats_sys_bytes",
            "Number of bytes obtained from system.",
            false,
            |m| m.sys as f64,
        ),
        (
            "go_memstats_lookups",
            "Total number of pointer lookups.",
            true,
            |_| 0.0,
        ),
        (
            "go_memstats_mallocs",
            "Total number of mallocs.",
            true,
            |m| m.mallocs as f64,
        ),
        ("go_memstats_frees", "Total number of frees.", true, |m| {
            m.frees as f64
        }),
        (
            "go_memstats_heap_alloc_bytes",
            "Number of heap bytes allocated and still in use.",
            false,
            |m| m.heap_alloc as f64,
        ),
        (
            "go_memstats_heap_sys_bytes",
            "Number of heap bytes obtained from system.",
            false,
            |m| m.heap_sys as f64,
        ),
        (
            "go_memstats_heap_idle_bytes",
            "Number of heap bytes waiting to be used.",
            false,
            |m| m.heap_idle as f64,
        ),
        (
            "go_memstats_heap_inuse_bytes",
            "Number of heap bytes that are in use.",
            false,
            |m| m.heap_inuse as f64,
        ),
        (
            "go_memstats_heap_released_bytes",
            "Number of heap bytes released to OS.",
            false,
            |m| m.heap_released as f64,
        ),
        (
            "go_memstats_heap_objects",
            "Number of allocated objects.",
            false,
            |m| m.heap_objects as f64,
        ),
        (
            "go_memstats_stack_inuse_bytes",
            "Number of bytes in use by the stack allocator.",
            false,
            |m| m.stack_inuse as f64,
        ),
        (
            "go_memstats_stack_sys_bytes",
            "Number of bytes obtained from system for stack allocator.",
            false,
            |m| m.stack_sys as f64,
        ),
        (
            "go_memstats_mspan_inuse_bytes",
            "Number of bytes in use by mspan structures.",
            false,
            |m| m.mspan_inuse as f64,
        ),
        (
            "go_memstats_mspan_sys_bytes",
            "Number of bytes used for mspan structures obtained from system.",
            false,
            |m| m.mspan_sys as f64,
        ),
        (
            "go_memstats_mcache_inuse_bytes",
            "Number of bytes in use by mcache structures.",
            false,
            |m| m.mcache_inuse as f64,
        ),
        (
            "go_memstats_mcache_sys_bytes",
            "Number of bytes used for mcache structures obtained from system.",
            false,
            |m| m.mcache_sys as f64,
        ),
        (
            "go_memstats_buck_hash_sys_bytes",
            "Number of bytes used by the profiling bucket hash table.",
            false,
            |m| m.buck_hash_sys as f64,
        ),
        (
            "go_memstats_gc_sys_bytes",
            "Number of bytes used for garbage collection system metadata.",
            false,
            |m| m.gc_sys as f64,
        ),
        (
            "go_memstats_other_sys_bytes",
            "Number of bytes used for other system allocations.",
            false,
            |m| m.other_sys as f64,
        ),
        (
            "go_memstats_next_gc_bytes",
            "Number of heap bytes when next garbage collection will take place.",
            false,
            |m| m.next_gc as f64,
        ),
        // runtime/debug.ReadGCStats leaves LastGC at the zero time.Time before the first
        // GC, whose UnixNano client_golang exports as is: match it.
        (
            "go_memstats_last_gc_time_seconds",
            "Number of seconds since 1970 of last garbage collection.",
            false,
            |m| {
                if m.last_gc_unix_ns == 0 {
                    -6_795_364_578.871_345
                } else {
                    m.last_gc_unix_ns as f64 / 1e9
                }
            },
        ),
        (
            "go_gc_gogc_percent",
            "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.",
            false,
            |m| m.gogc as f64,
        ),
        (
            "go_gc_gomemlimit_bytes",
            "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.",
            false,
            |m| m.memory_limit as f64,
        ),
    ];
    for &(name, help, counter, f) in SERIES {
        if counter {
            enc.counter(name, help, &fam(&f));
        } else {
            enc.gauge(name, help, None, &fam(&f));
        }
    }
    let procs: Vec<Sample> = mem
        .iter()
        .filter_map(|(s, m)| {
            Some(Sample {
                labels: service_labels(&s.resource),
                value: m.gomaxprocs? as f64,
            })
        })
        .collect();
    enc.gauge(
        "go_sched_gomaxprocs_threads",
        "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.",
        None,
        &procs,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{Exemplar, HttpRecord, HttpSeries, Metrics, RpcKey};

    fn sample_services() -> Vec<ServiceMetrics> {
        let m = Metrics::default();
        let r = Arc::new(Resource {
            pid: 7,
            service_name: "shop \"api\"".into(),
            attributes: vec![
                ("service.name".into(), "shop \"api\"".into()),
                ("host.name".into(), "node1".into()),
                ("deployment.environment.name".into(), "prod".into()),
            ],
        });
        for status in [200u16, 500] {
            m.record_http(
                &r,
                HttpRecord {
                    series: HttpSeries {
                        kind: HttpKind::Server,
                        method: Arc::from("GET"),
                        route: Arc::from("/users/{id}"),
                        status,
                        error_type: (status >= 500).then(|| Arc::from("500")),
                        server_address: None,
                        server_port: 0,
                        rpc: None,
                        overflow: false,
                    },
                    duration_s: 0.02,
                    request_body: 0,
                    response_body: Some(12),
                    exemplar: Some(Exemplar {
                        value: 0.02,
                        trace_id: [1; 16],
                        span_id: [2; 8],
                        time_unix_ns: 1_700_000_000_000_000_000,
                    }),
                },
                false,
            );
        }
        m.snapshot()
    }

    #[test]
    fn grpc_calls_render_as_rpc_duration_families() {
        let m = Metrics::default();
        let r = Arc::new(Resource {
            pid: 9,
            service_name: "greeter".into(),
            attributes: vec![
                ("service.name".into(), "greeter".into()),
                ("host.name".into(), "node1".into()),
            ],
        });
        for (kind, code, error) in [
            (HttpKind::Server, Some(0), None),
            (HttpKind::Server, None, Some("no_status")),
            (HttpKind::Client, Some(5), Some("NOT_FOUND")),
        ] {
            m.record_http(
                &r,
                HttpRecord {
                    series: HttpSeries {
                        kind,
                        method: Arc::from(""),
                        route: Arc::from(""),
                        status: 0,
                        error_type: error.map(Arc::from),
                        server_address: (kind == HttpKind::Client).then(|| Arc::from("db")),
                        server_port: if kind == HttpKind::Client { 9000 } else { 0 },
                        rpc: Some(RpcKey {
                            service: Arc::from("helloworld.Greeter"),
                            method: Arc::from("SayHello"),
                            grpc_status: code,
                        }),
                        overflow: false,
                    },
                    duration_s: 0.004,
                    request_body: 10,
                    response_body: Some(20),
                    exemplar: None,
                },
                false,
            );
        }
        let mut enc = Encoder::new(Format::Text);
        encode_http(&mut enc, &m.snapshot());
        let text = enc.finish();
        assert!(!text.contains("http_"), "{text}");
        assert!(text.contains("# TYPE rpc_server_duration_seconds histogram"));
        assert!(text.contains("rpc_server_duration_seconds_count{service_name=\"greeter\",service_instance_id=\"node1:9\",rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"0\"} 1"), "{text}");
        // A stream that ended without a status has no status label, and says why it failed.
        assert!(
            text.contains("rpc_method=\"SayHello\",error_type=\"no_status\"} 1"),
            "{text}"
        );
        assert!(text.contains("rpc_client_duration_seconds_count{service_name=\"greeter\",service_instance_id=\"node1:9\",rpc_system=\"grpc\",rpc_service=\"helloworld.Greeter\",rpc_method=\"SayHello\",rpc_grpc_status_code=\"5\",server_address=\"db\",server_port=\"9000\",error_type=\"NOT_FOUND\"} 1"), "{text}");
    }

    #[test]
    fn text_exposition_has_buckets_sum_count_and_escaped_labels() {
        let services = sample_services();
        let mut enc = Encoder::new(Format::Text);
        encode_http(&mut enc, &services);
        enc.target_info(&[&services[0].resource]);
        let text = enc.finish();
        assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
        assert!(text.contains(
            "http_server_request_duration_seconds_bucket{service_name=\"shop \\\"api\\\"\",service_instance_id=\"node1:7\",http_request_method=\"GET\",http_response_status_code=\"200\",http_route=\"/users/{id}\",le=\"0.025\"} 1"
        ));
        assert!(text.contains("le=\"+Inf\"} 1"));
        assert!(text.contains("http_server_request_duration_seconds_count{service_name=\"shop \\\"api\\\"\",service_instance_id=\"node1:7\",http_request_method=\"GET\",http_response_status_code=\"500\",http_route=\"/users/{id}\",error_type=\"500\"} 1"));
        assert!(text.contains("target_info{service_name=\"shop \\\"api\\\"\",service_instance_id=\"node1:7\",host_name=\"node1\",deployment_environment_name=\"prod\"} 1"));
        assert!(!text.contains("# EOF"));
        assert!(
            !text.contains("trace_id"),
            "no exemplars in the 0.0.4 text format"
        );
    }

    #[test]
    fn openmetrics_has_unit_exemplars_and_eof() {
        let services = sample_services();
        let mut enc = Encoder::new(Format::OpenMetrics);
        encode_http(&mut enc, &services);
        let text = enc.finish();
        assert!(text.contains("# UNIT http_server_request_duration_seconds seconds"));
        assert!(text.contains(" # {trace_id=\"01010101010101010101010101010101\",span_id=\"0202020202020202\"} 0.02 1700000000.000"));
        assert!(text.ends_with("# EOF\n"));
    }

    /// client_golang's go_memstats_* names and types (counters as `_total`), and nothing
    /// from memory when the statistics could not be read.
    #[test]
    fn go_memstats_families_as_client_golang() {
        use crate::runtime::{go::GoStats, gomem::GoMemStats};
        let mut services = sample_services();
        services[0].go = Some(GoStats {
            version: "go1.25.5".into(),
            mem: Some(GoMemStats {
                heap_alloc: 1234,
                total_alloc: 5678,
                last_gc_unix_ns: 1_700_000_000_500_000_000,
                gomaxprocs: Some(4),
                gogc: 100,
                ..Default::default()
            }),
            ..Default::default()
        });
        let mut enc = Encoder::new(Format::Text);
        encode_go(&mut enc, &services);
        let text = enc.finish();
        for (name, kind) in [
            ("go_memstats_alloc_bytes", "gauge"),
            ("go_memstats_alloc_bytes_total", "counter"),
            ("go_memstats_mallocs_total", "counter"),
            ("go_memstats_heap_inuse_bytes", "gauge"),
            ("go_memstats_next_gc_bytes", "gauge"),
            ("go_memstats_last_gc_time_seconds", "gauge"),
            ("go_sched_gomaxprocs_threads", "gauge"),
            ("go_gc_gogc_percent", "gauge"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}\n{text}"
            );
        }
        assert!(text.contains("go_memstats_alloc_bytes{service_name=\"shop \\\"api\\\"\",service_instance_id=\"node1:7\"} 1234"), "{text}");
        assert!(text.contains("} 1700000000.5\n"), "{text}");
        services[0].go.as_mut().unwrap().mem = None;
        let mut enc = Encoder::new(Format::Text);
        encode_go(&mut enc, &services);
        assert!(!enc.finish().contains("go_memstats"));
    }

    #[test]
    fn accept_header_selects_format() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }

    #[test]
    fn label_names_are_sanitized() {
        assert_eq!(
            label_name("deployment.environment.name"),
            "deployment_environment_name"
        );
        assert_eq!(label_name("9lives"), "_9lives");
    }
}
