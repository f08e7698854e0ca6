//! RED metrics computed from every request, before any sampling, so counts are exact.
//!
//! The event thread records into a [`Metrics`] registry (one short uncontended lock per
//! request); exporters (Prometheus scrapes, the OTLP metric reader) take snapshots.
//! Cardinality is bounded twice: routes are capped per service by the route table, and
//! series per service are capped here (overflow counted, never silently lost: it lands
//! in one marked series).

pub mod histogram;
pub mod prometheus;
pub mod server;

use foldhash::{HashMap, HashMapExt};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

pub use histogram::{DURATION_BUCKETS, Exemplar, Histogram, SIZE_BUCKETS};

use crate::{
    resource::Resource,
    runtime::{go::GoStats, process::ProcessStats},
    span::SpanKind,
};

/// Series per service and instrument beyond which new attribute sets fold into the
/// overflow series (`otel.metric.overflow="true"`, as the OTel SDK spec names it).
pub const MAX_SERIES_PER_SERVICE: usize = 2000;

/// Attributes of one HTTP series (semconv names in comments).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpSeries {
    pub kind: HttpKind,
    /// http.request.method (normalized: known methods or `_OTHER`).
    pub method: Arc<str>,
    /// http.route (server only; empty when unknown).
    pub route: Arc<str>,
    /// http.response.status_code (0 when there was no response).
    pub status: u16,
    /// error.type (status code for 5xx on servers, 4xx/5xx on clients, or a failure kind).
    pub error_type: Option<Arc<str>>,
    /// server.address / server.port (client only).
    pub server_address: Option<Arc<str>>,
    pub server_port: u16,
    /// Set for gRPC calls: the series is exported as `rpc.{server,client}.duration`
    /// with these attributes instead of the HTTP ones (`method` and `route` are then
    /// left empty), as gRPC instrumentations and Beyla-style agents do.
    pub rpc: Option<RpcKey>,
    /// The overflow series: attributes dropped because the cap was hit.
    pub overflow: bool,
}

/// The RPC attributes of a series of gRPC calls, with the names the spans carry (RPC
/// semconv v1.37: `rpc.system` is always `grpc` here).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcKey {
    /// rpc.service (`package.Service`).
    pub service: Arc<str>,
    /// rpc.method.
    pub method: Arc<str>,
    /// rpc.grpc.status_code; `None` when the stream ended without a status.
    pub grpc_status: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpKind {
    Server,
    Client,
}

impl From<SpanKind> for HttpKind {
    fn from(k: SpanKind) -> Self {
        match k {
            SpanKind::Server => HttpKind::Server,
            SpanKind::Client => HttpKind::Client,
        }
    }
}

/// The three histograms of one HTTP series.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpStats {
    /// Seconds.
    pub duration: Histogram,
    /// Bytes.
    pub request_body: Histogram,
    /// Bytes.
    pub response_body: Histogram,
}

impl Default for HttpStats {
    fn default() -> Self {
        Self {
            duration: Histogram::new(DURATION_BUCKETS),
            request_body: Histogram::new(SIZE_BUCKETS),
            response_body: Histogram::new(SIZE_BUCKETS),
        }
    }
}

/// One finished request, as the metrics see it.
#[derive(Clone, Debug)]
pub struct HttpRecord {
    pub series: HttpSeries,
    pub duration_s: f64,
    pub request_body: u64,
    /// `None` when the size is not known (see `Message::size_unknown`).
    pub response_body: Option<u64>,
    /// Set when the span was sampled (exemplars must point at exported traces).
    pub exemplar: Option<Exemplar>,
}

/// Everything recorded for one traced process.
#[derive(Clone, Debug)]
pub struct ServiceMetrics {
    pub resource: Arc<Resource>,
    /// When recording started (start time of cumulative points).
    pub start_unix_ns: u64,
    pub http: HashMap<HttpSeries, HttpStats>,
    /// Requests whose route fell into the overflow bucket of the route table.
    pub route_overflow: u64,
    /// Requests folded into the overflow series because of [`MAX_SERIES_PER_SERVICE`].
    pub series_overflow: u64,
    /// Unix ns when the process exited; kept a while so its last values get exported.
    pub exited_unix_ns: Option<u64>,
    /// Threads, CPU, memory, fds.
    pub process: ProcessStats,
    /// Go runtime view, for Go programs.
    pub go: Option<GoStats>,
}

#[derive(Default)]
struct Registry {
    services: BTreeMap<u32, ServiceMetrics>,
    edges: BTreeMap<(Arc<str>, Arc<str>), EdgeStats>,
    edge_overflow: u64,
}

/// Most client -> server edges of the service graph; calls on further edges are
/// counted in `edge_overflow` only.
pub const MAX_EDGES: usize = 10_000;

/// Calls from one traced service to another on this node (the service graph), seen
/// from both ends: counted when the server span is joined to its client span.
#[derive(Clone, Debug, PartialEq)]
pub struct EdgeStats {
    pub requests: u64,
    pub failed: u64,
    /// Server-side durations, seconds.
    pub server_seconds: Histogram,
}

/// One edge of the service graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    pub client: Arc<str>,
    pub server: Arc<str>,
    pub stats: EdgeStats,
}

/// The shared registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Registry>,
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How long the series of an exited process stay exported.
pub const EXITED_RETENTION_NS: u64 = 5 * 60 * 1_000_000_000;

/// Most exited services kept for their last export at once (the newest ones).
pub const MAX_EXITED_SERVICES: usize = 1024;

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a process (idempotent); `now_unix_ns` starts its cumulative series.
    pub fn add_service(&self, resource: &Arc<Resource>, now_unix_ns: u64) {
        let fresh = || ServiceMetrics {
            resource: resource.clone(),
            start_unix_ns: now_unix_ns,
            http: HashMap::new(),
            route_overflow: 0,
            series_overflow: 0,
            exited_unix_ns: None,
            process: ProcessStats::default(),
            go: None,
        };
        let mut reg = self.lock();
        match reg.services.get_mut(&resource.pid) {
            // The PID is reused (or the process exec'd another program) while the
            // exited one is still retained: a new service, never the old one's series,
            // resource or "exited" mark. The old one's values not yet exported are lost
            // (missing beats wrong).
            Some(old) if old.exited_unix_ns.is_some() => *old = fresh(),
            Some(_) => {}
            None => {
                reg.services.insert(resource.pid, fresh());
            }
        }
    }

    pub fn record_http(&self, resource: &Arc<Resource>, rec: HttpRecord, route_overflowed: bool) {
        let mut reg = self.lock();
        let svc = reg
            .services
            .entry(resource.pid)
            .or_insert_with(|| ServiceMetrics {
                resource: resource.clone(),
                start_unix_ns: unix_now_ns(),
                http: HashMap::new(),
                route_overflow: 0,
                series_overflow: 0,
                exited_unix_ns: None,
                process: ProcessStats::default(),
                go: None,
            });
        if route_overflowed {
            svc.route_overflow += 1;
        }
        let series =
            if svc.http.len() >= MAX_SERIES_PER_SERVICE && !svc.http.contains_key(&rec.series) {
                svc.series_overflow += 1;
                HttpSeries {
                    kind: rec.series.kind,
                    method: Arc::from(""),
                    route: Arc::from(""),
                    status: 0,
                    error_type: None,
                    server_address: None,
                    server_port: 0,
                    // An overflowed gRPC call stays in the RPC instrument.
                    rpc: rec.series.rpc.as_ref().map(|_| RpcKey {
                        service: Arc::from(""),
                        method: Arc::from(""),
                        grpc_status: None,
                    }),
                    overflow: true,
                }
            } else {
                rec.series
            };
        let stats = svc.http.entry(series).or_default();
        stats.duration.record(rec.duration_s, rec.exemplar);
        let size_ex = |v: u64| {
            rec.exemplar.map(|e| Exemplar {
                value: v as f64,
                ..e
            })
        };
        stats
            .request_body
            .record(rec.request_body as f64, size_ex(rec.request_body));
        if let Some(b) = rec.response_body {
            stats.response_body.record(b as f64, size_ex(b));
        }
    }

    /// Applies `f` to the process stats of `pid`, if registered.
    pub fn update_process(&self, pid: u32, f: impl FnOnce(&mut ProcessStats)) {
        if let Some(s) = self.lock().services.get_mut(&pid) {
            f(&mut s.process);
        }
    }

    pub fn set_go(&self, pid: u32, stats: GoStats) {
        if let Some(s) = self.lock().services.get_mut(&pid) {
            s.go = Some(stats);
        }
    }

    pub fn service_exited(&self, pid: u32, now_unix_ns: u64) {
        if let Some(s) = self.lock().services.get_mut(&pid) {
            s.exited_unix_ns.get_or_insert(now_unix_ns);
        }
    }

    /// Drops services that exited more than [`EXITED_RETENTION_NS`] ago, exited ones
    /// with nothing left to export (no HTTP series or overflow counts: their process
    /// and Go views are not exported once they exited), and the oldest exited ones
    /// beyond [`MAX_EXITED_SERVICES`]. Under process churn the retained entries were
    /// otherwise bounded by time only, not by count.
    pub fn gc(&self, now_unix_ns: u64) {
        let mut reg = self.lock();
        reg.services.retain(|_, s| match s.exited_unix_ns {
            None => true,
            Some(t) => {
                now_unix_ns.saturating_sub(t) < EXITED_RETENTION_NS
                    && (!s.http.is_empty() || s.route_overflow > 0 || s.series_overflow > 0)
            }
        });
        let mut exited: Vec<(u64, u32)> = reg
            .services
            .iter()
            .filter_map(|(&pid, s)| Some((s.exited_unix_ns?, pid)))
            .collect();
        if exited.len() > MAX_EXITED_SERVICES {
            exited.sort_unstable();
            for &(_, pid) in &exited[..exited.len() - MAX_EXITED_SERVICES] {
                reg.services.remove(&pid);
            }
        }
    }

    /// A process's resource changed (Kubernetes metadata arrived after it was attached):
    /// its series carry the new one from now on.
    pub fn replace_resource(&self, resource: &Arc<Resource>) {
        if let Some(svc) = self.lock().services.get_mut(&resource.pid) {
            svc.resource = resource.clone();
        }
    }

    /// One call from service `client` to service `server`, both traced on this node.
    pub fn record_edge(&self, client: &str, server: &str, failed: bool, server_seconds: f64) {
        let mut reg = self.lock();
        let key: (Arc<str>, Arc<str>) = (Arc::from(client), Arc::from(server));
        if reg.edges.len() >= MAX_EDGES && !reg.edges.contains_key(&key) {
            reg.edge_overflow += 1;
            return;
        }
        let e = reg.edges.entry(key).or_insert_with(|| EdgeStats {
            requests: 0,
            failed: 0,
            server_seconds: Histogram::new(DURATION_BUCKETS),
        });
        e.requests += 1;
        if failed {
            e.failed += 1;
        }
        e.server_seconds.record(server_seconds, None);
    }

    /// The service graph's edges, and the calls not counted for the edge cap.
    pub fn edges(&self) -> (Vec<Edge>, u64) {
        let reg = self.lock();
        (
            reg.edges
                .iter()
                .map(|((c, s), st)| Edge {
                    client: c.clone(),
                    server: s.clone(),
                    stats: st.clone(),
                })
                .collect(),
            reg.edge_overflow,
        )
    }

    /// A consistent copy of every service's metrics, ordered by pid.
    pub fn snapshot(&self) -> Vec<ServiceMetrics> {
        self.lock().services.values().cloned().collect()
    }
}

/// A server series `GET route -> status` with nothing else set, for tests here and in
/// the exporters.
#[cfg(test)]
pub(crate) fn test_series(route: &str, status: u16) -> HttpSeries {
    HttpSeries {
        kind: HttpKind::Server,
        method: Arc::from("GET"),
        route: Arc::from(route),
        status,
        error_type: None,
        server_address: None,
        server_port: 0,
        rpc: None,
        overflow: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(pid: u32) -> Arc<Resource> {
        Arc::new(Resource {
            pid,
            service_name: "svc".into(),
            attributes: vec![("service.name".into(), "svc".into())],
        })
    }

    use super::test_series as series;

    #[test]
    fn a_replaced_resource_labels_the_series_recorded_before_and_after() {
        let m = Metrics::default();
        m.add_service(&resource(7), 1);
        let named = Arc::new(Resource {
            pid: 7,
            service_name: "checkout".into(),
            attributes: vec![("service.name".into(), "checkout".into())],
        });
        m.replace_resource(&named);
        // Another pid is not touched.
        m.replace_resource(&Arc::new(Resource {
            pid: 8,
            ..(*named).clone()
        }));
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].resource.service_name, "checkout");
    }

    #[test]
    fn a_reused_pid_gets_a_new_service_not_the_exited_ones() {
        let m = Metrics::default();
        m.add_service(&resource(7), 1);
        m.set_go(7, crate::runtime::go::GoStats::default());
        m.service_exited(7, 5);
        let reborn = Arc::new(Resource {
            pid: 7,
            service_name: "reborn".into(),
            attributes: vec![("service.name".into(), "reborn".into())],
        });
        m.add_service(&reborn, 9);
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        let s = &snap[0];
        assert_eq!(s.resource.service_name, "reborn");
        assert_eq!((s.start_unix_ns, s.exited_unix_ns), (9, None));
        assert!(
            s.go.is_none(),
            "the exited program's Go view is not carried over"
        );
        // A live service is not reset by another add.
        m.set_go(7, crate::runtime::go::GoStats::default());
        m.add_service(&reborn, 12);
        assert!(m.snapshot()[0].go.is_some());
        assert_eq!(m.snapshot()[0].start_unix_ns, 9);
    }

    #[test]
    fn counts_are_exact_per_series() {
        let m = Metrics::default();
        let r = resource(1);
        for i in 0..1000 {
            m.record_http(
                &r,
                HttpRecord {
                    series: series("/a", if i % 10 == 0 { 500 } else { 200 }),
                    duration_s: 0.001,
                    request_body: 0,
                    response_body: Some(10),
                    exemplar: None,
                },
                false,
            );
        }
        let snap = m.snapshot();
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].http[&series("/a", 200)].duration.count, 900);
        assert_eq!(snap[0].http[&series("/a", 500)].duration.count, 100);
    }

    #[test]
    fn series_cap_folds_into_overflow() {
        let m = Metrics::default();
        let r = resource(2);
        let n = MAX_SERIES_PER_SERVICE + 50;
        for i in 0..n {
            m.record_http(
                &r,
                HttpRecord {
                    series: series(&format!("/r{i}"), 200),
                    duration_s: 0.01,
                    request_body: 0,
                    response_body: Some(0),
                    exemplar: None,
                },
                false,
            );
        }
        let snap = &m.snapshot()[0];
        assert_eq!(snap.http.len(), MAX_SERIES_PER_SERVICE + 1);
        assert_eq!(snap.series_overflow, 50);
        let total: u64 = snap.http.values().map(|s| s.duration.count).sum();
        assert_eq!(total, n as u64, "no request is lost to the cap");
    }

    fn one_request(m: &Metrics, r: &Arc<Resource>) {
        m.record_http(
            r,
            HttpRecord {
                series: series("/", 200),
                duration_s: 0.001,
                request_body: 0,
                response_body: Some(0),
                exemplar: None,
            },
            false,
        );
    }

    #[test]
    fn exited_services_are_collected_after_retention() {
        let m = Metrics::default();
        m.add_service(&resource(3), 0);
        one_request(&m, &resource(3));
        m.service_exited(3, 10);
        m.gc(10 + EXITED_RETENTION_NS - 1);
        assert_eq!(m.snapshot().len(), 1);
        m.gc(10 + EXITED_RETENTION_NS);
        assert!(m.snapshot().is_empty());
    }

    #[test]
    fn churn_keeps_exited_services_bounded_by_count() {
        let m = Metrics::default();
        let n = 2 * MAX_EXITED_SERVICES as u32 + 500;
        for pid in 1..=n {
            m.add_service(&resource(pid), 0);
            // Every other one served a request: something left to export.
            if pid % 2 == 0 {
                one_request(&m, &resource(pid));
            }
            m.service_exited(pid, u64::from(pid));
        }
        m.add_service(&resource(n + 1), 0);
        m.gc(u64::from(n) + 1);
        let snap = m.snapshot();
        let exited: Vec<u32> = snap
            .iter()
            .filter(|s| s.exited_unix_ns.is_some())
            .map(|s| s.resource.pid)
            .collect();
        // Nothing-to-export ones are gone; of the rest, the newest MAX are kept.
        assert_eq!(exited.len(), MAX_EXITED_SERVICES.min(n as usize / 2));
        assert!(exited.iter().all(|p| p % 2 == 0));
        assert!(exited.contains(&n) && !exited.contains(&2));
        assert!(
            snap.iter().any(|s| s.resource.pid == n + 1),
            "the live one stays"
        );
    }
}
