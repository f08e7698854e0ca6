//! OTLP logs: the agent's own events (today, one record when a goroutine creation site
//! becomes a suspected leak), sent to `/v1/logs` (HTTP/protobuf) or the gRPC LogsService.
//!
//! Same shape as the span export, cut down for a trickle of records: [`LogSink::send`] only
//! `try_send`s into a bounded queue (a full queue drops and counts), and the batch worker
//! shared with spans (`export::batch`) batches (size or delay), sends, and holds a batch that
//! failed in a retryable way until the backend takes it.
//!
//! Configuration follows the OTLP exporter spec like the other signals (flag >
//! `OTEL_EXPORTER_OTLP_LOGS_*` > `OTEL_EXPORTER_OTLP_*` > default), through the same
//! resolver as traces and metrics; batching reads the spec's `OTEL_BLRP_*` variables. The
//! transports are built by the shared helpers in `export::otlp`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{
    LogRecord as ProtoLogRecord, ResourceLogs, ScopeLogs, SeverityNumber,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::export::batch;
use crate::export::config::{
    BatchConfig, ConfigError, DEFAULT_MAX_EXPORT_BATCH_SIZE, DEFAULT_MAX_QUEUE_SIZE, ExportFlags,
    OtlpConfig, Signal, resolve_otlp,
};
use crate::export::otlp::{SCOPE_NAME, SCOPE_VERSION, report_client_error, resource_to_proto};
use crate::export::transport::{self, LogsTransport};
use crate::resource::Resource;
use crate::span::Value;

/// Logs URL, used as-is for both protocols (wins over `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
/// `grpc` or `http/protobuf` for logs (wins over `OTEL_EXPORTER_OTLP_PROTOCOL`).
pub const OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";
/// Like `OTEL_EXPORTER_OTLP_HEADERS`, for logs only (wins on the same key).
pub const OTEL_EXPORTER_OTLP_LOGS_HEADERS: &str = "OTEL_EXPORTER_OTLP_LOGS_HEADERS";
/// Per-export timeout for logs in milliseconds (wins over `OTEL_EXPORTER_OTLP_TIMEOUT`).
pub const OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
/// CA bundle for logs (wins over `OTEL_EXPORTER_OTLP_CERTIFICATE`).
pub const OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE: &str = "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE";
/// mTLS key for logs (wins over `OTEL_EXPORTER_OTLP_CLIENT_KEY`).
pub const OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY: &str = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY";
/// mTLS certificate for logs (wins over `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`).
pub const OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE: &str =
    "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE";
/// Plaintext for a scheme-less gRPC endpoint (wins over `OTEL_EXPORTER_OTLP_INSECURE`).
pub const OTEL_EXPORTER_OTLP_LOGS_INSECURE: &str = "OTEL_EXPORTER_OTLP_LOGS_INSECURE";
/// Comma-separated exporter names; when set without `otlp` (e.g. `none`), no OTLP logs are
/// sent even though an OTLP endpoint is configured.
pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
/// Batch log record processor: delay in ms (default 1000), batch size, queue size.
pub const OTEL_BLRP_SCHEDULE_DELAY: &str = "OTEL_BLRP_SCHEDULE_DELAY";
pub const OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE";
pub const OTEL_BLRP_MAX_QUEUE_SIZE: &str = "OTEL_BLRP_MAX_QUEUE_SIZE";

/// The spec's default `OTEL_BLRP_SCHEDULE_DELAY`.
pub const DEFAULT_SCHEDULE_DELAY: Duration = Duration::from_millis(1000);

/// The event name of [`leak_record`].
pub const GOROUTINE_LEAK_EVENT: &str = "periscope.go.goroutine_leak";

const LOGS_SIGNAL: Signal = Signal {
    endpoint: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    protocol: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
    headers: OTEL_EXPORTER_OTLP_LOGS_HEADERS,
    timeout: OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    certificate: OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE,
    client_key: OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY,
    client_certificate: OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE,
    insecure: OTEL_EXPORTER_OTLP_LOGS_INSECURE,
    path: "/v1/logs",
};

/// How long [`LogsHandle::shutdown`] waits past its deadline before aborting the task.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Severity of a record; numbers and texts as the OTel log data model defines them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warn,
    Error,
}

impl Severity {
    pub fn number(self) -> SeverityNumber {
        match self {
            Severity::Info => SeverityNumber::Info,
            Severity::Warn => SeverityNumber::Warn,
            Severity::Error => SeverityNumber::Error,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
            Severity::Error => "ERROR",
        }
    }
}

/// One event of the agent about a traced process.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRecord {
    pub resource: Arc<Resource>,
    pub time_unix_ns: u64,
    pub severity: Severity,
    pub body: String,
    pub attributes: Vec<(&'static str, Value)>,
    pub event_name: Option<&'static str>,
}

/// The record sent when a goroutine creation site becomes a suspected leak: `from` live
/// goroutines at the start of the `window_s` window, `to` now. The body names the file by
/// its base name; `code.file.path` carries `file` as given.
#[expect(
    clippy::too_many_arguments,
    reason = "the signature the agent's leak detector calls; each argument is one fact"
)]
pub fn leak_record(
    resource: Arc<Resource>,
    site_function: &str,
    file: &str,
    line: u32,
    from: i64,
    to: i64,
    window_s: u64,
    now_unix_ns: u64,
) -> LogRecord {
    let base = file.rsplit('/').next().unwrap_or(file);
    LogRecord {
        resource,
        time_unix_ns: now_unix_ns,
        severity: Severity::Warn,
        body: format!(
            "goroutine leak suspected: {to} live goroutines created at {site_function} \
             ({base}:{line}), up from {from} over {window_s}s"
        ),
        attributes: vec![
            ("code.function.name", Value::Str(site_function.to_owned())),
            ("code.file.path", Value::Str(file.to_owned())),
            ("code.line.number", Value::Int(i64::from(line))),
            ("periscope.goroutines.live", Value::Int(to)),
            ("periscope.goroutines.growth", Value::Int(to - from)),
        ],
        event_name: Some(GOROUTINE_LEAK_EVENT),
    }
}

/// A validated logs export configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LogsExportConfig {
    /// Endpoint (`…/v1/logs` for http/protobuf, the base URL for gRPC), protocol, headers
    /// and per-export timeout.
    pub otlp: OtlpConfig,
    pub batch: BatchConfig,
}

impl LogsExportConfig {
    /// Default batching for an already validated transport.
    pub fn new(otlp: OtlpConfig) -> LogsExportConfig {
        LogsExportConfig {
            otlp,
            batch: BatchConfig {
                schedule_delay: DEFAULT_SCHEDULE_DELAY,
                max_export_batch_size: DEFAULT_MAX_EXPORT_BATCH_SIZE,
                max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            },
        }
    }

    /// Resolves the shared OTLP flags over the process environment.
    pub fn from_flags_and_env(
        flags: &ExportFlags,
    ) -> Result<Option<LogsExportConfig>, ConfigError> {
        LogsExportConfig::resolve(flags, |k| std::env::var(k).ok())
    }

    /// Resolves flags over `env`. Enabled when an endpoint is given by flag,
    /// `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (the traces rule),
    /// unless `OTEL_LOGS_EXPORTER` is set and does not name `otlp`.
    pub fn resolve(
        flags: &ExportFlags,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LogsExportConfig>, ConfigError> {
        let env = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if let Some(exporters) = env(OTEL_LOGS_EXPORTER) {
            let mut otlp = false;
            for name in exporters.split(',').map(str::trim) {
                match name {
                    "otlp" => otlp = true,
                    "none" | "console" | "" => {}
                    _ => {
                        return Err(invalid(
                            OTEL_LOGS_EXPORTER,
                            &exporters,
                            "expected a list of otlp, console or none",
                        ));
                    }
                }
            }
            if !otlp {
                return Ok(None);
            }
        }
        let Some(otlp) = resolve_otlp(&LOGS_SIGNAL, &flags.otlp(), &env)? else {
            return Ok(None);
        };
        let mut cfg = LogsExportConfig::new(otlp);
        if let Some(ms) = positive(&env, OTEL_BLRP_SCHEDULE_DELAY, "milliseconds")? {
            cfg.batch.schedule_delay = Duration::from_millis(ms);
        }
        if let Some(n) = positive(&env, OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, "integer")? {
            cfg.batch.max_export_batch_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = positive(&env, OTEL_BLRP_MAX_QUEUE_SIZE, "integer")? {
            cfg.batch.max_queue_size = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(Some(cfg))
    }
}

fn invalid(setting: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// A positive integer env var, `None` when unset.
fn positive(
    env: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    what: &str,
) -> Result<Option<u64>, ConfigError> {
    let Some(v) = env(var) else { return Ok(None) };
    match v.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(invalid(var, &v, format!("expected a positive {what}"))),
    }
}

/// The logs exporter's own telemetry. Counters only grow; relaxed atomics.
#[derive(Debug, Default)]
pub struct LogsExportStats {
    /// Records the backend accepted (minus those rejected in a partial success).
    pub exported: AtomicU64,
    /// Records lost on our side: queue full, batch failed after its retries, shutdown
    /// deadline passed, or sent after shutdown.
    pub dropped: AtomicU64,
    /// Records the backend refused in a partial success.
    pub rejected: AtomicU64,
    /// Batches given up on (their records are in `dropped`).
    pub failed_exports: AtomicU64,
}

type Msg = batch::Msg<LogRecord>;

impl batch::Item for LogRecord {
    type Service = transport::Logs;
    const NOUN: &'static str = "log records";
    fn to_request(batch: &[LogRecord]) -> ExportLogsServiceRequest {
        to_request(batch)
    }
}

impl batch::Counters for LogsExportStats {
    fn exported(&self) -> &AtomicU64 {
        &self.exported
    }
    fn dropped(&self) -> &AtomicU64 {
        &self.dropped
    }
    fn rejected(&self) -> &AtomicU64 {
        &self.rejected
    }
    fn failed_exports(&self) -> &AtomicU64 {
        &self.failed_exports
    }
}

/// Where the agent puts log records. Clone freely; `send` never blocks.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
    stats: Arc<LogsExportStats>,
}

impl LogSink {
    /// Queues `record`; when the queue is full (or the exporter stopped) it is dropped and
    /// counted in [`LogsExportStats::dropped`].
    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(Msg::Item(record)).is_err() {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
    }

    pub fn stats(&self) -> Arc<LogsExportStats> {
        self.stats.clone()
    }
}

/// Owns the export task; [`LogsHandle::shutdown`] flushes and stops it. Dropping it without
/// shutdown leaves the task running until every [`LogSink`] is gone.
pub struct LogsHandle {
    tx: mpsc::Sender<Msg>,
    deadline: watch::Sender<Option<Instant>>,
    stats: Arc<LogsExportStats>,
    task: tokio::task::JoinHandle<()>,
}

impl LogsHandle {
    pub fn stats(&self) -> Arc<LogsExportStats> {
        self.stats.clone()
    }

    /// Exports what is queued (within `deadline`), then stops. Returns by `deadline` plus a
    /// short grace period whatever the backend does.
    pub async fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let _ = self.deadline.send(Some(until));
        let _ = tokio::time::timeout_at(until, self.tx.send(Msg::Flush)).await;
        let abort = self.task.abort_handle();
        if tokio::time::timeout_at(until + SHUTDOWN_GRACE, self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// Starts the exporter on `rt`. If the OTLP client cannot be created the error is logged
/// once and every record is dropped and counted.
pub fn start(cfg: LogsExportConfig, rt: &tokio::runtime::Handle) -> (LogSink, LogsHandle) {
    let transport = {
        let _guard = rt.enter();
        LogsTransport::new(&cfg.otlp)
    };
    let transport = match transport {
        Ok(t) => Some(t),
        Err(e) => {
            report_client_error(
                "OTLP logs export disabled, every record will be dropped",
                &e,
            );
            None
        }
    };
    let stats = Arc::new(LogsExportStats::default());
    let (tx, rx) = mpsc::channel(cfg.batch.max_queue_size.max(1));
    let (deadline_tx, deadline_rx) = watch::channel(None);
    let worker = batch::BatchWorker::<LogRecord, _>::new(
        transport,
        cfg.otlp.timeout(),
        cfg.batch,
        stats.clone(),
        deadline_rx,
        "OTLP logs export",
    );
    let task = rt.spawn(worker.run(rx));
    let sink = LogSink {
        tx: tx.clone(),
        stats: stats.clone(),
    };
    let handle = LogsHandle {
        tx,
        deadline: deadline_tx,
        stats,
        task,
    };
    (sink, handle)
}

/// Builds one request, records grouped by resource in order of first appearance.
pub fn to_request(records: &[LogRecord]) -> ExportLogsServiceRequest {
    let mut groups: Vec<(&Arc<Resource>, Vec<ProtoLogRecord>)> = Vec::new();
    for r in records {
        let proto = record_to_proto(r);
        match groups
            .iter_mut()
            .find(|(res, _)| Arc::ptr_eq(res, &r.resource) || ***res == *r.resource)
        {
            Some((_, list)) => list.push(proto),
            None => groups.push((&r.resource, vec![proto])),
        }
    }
    let resource_logs = groups
        .into_iter()
        .map(|(resource, log_records)| ResourceLogs {
            resource: Some(resource_to_proto(resource)),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: SCOPE_VERSION.to_owned(),
                    ..Default::default()
                }),
                log_records,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

fn record_to_proto(r: &LogRecord) -> ProtoLogRecord {
    let any = |v: any_value::Value| Some(AnyValue { value: Some(v) });
    ProtoLogRecord {
        time_unix_nano: r.time_unix_ns,
        // The agent observes the event when it happens.
        observed_time_unix_nano: r.time_unix_ns,
        severity_number: r.severity.number() as i32,
        severity_text: r.severity.text().to_owned(),
        body: any(any_value::Value::StringValue(r.body.clone())),
        attributes: r
            .attributes
            .iter()
            .map(|(k, v)| KeyValue {
                key: (*k).to_owned(),
                value: any(match v {
                    Value::Str(s) => any_value::Value::StringValue(s.clone()),
                    Value::Static(s) => any_value::Value::StringValue((*s).to_owned()),
                    Value::Int(i) => any_value::Value::IntValue(*i),
                }),
            })
            .collect(),
        event_name: r.event_name.unwrap_or_default().to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::config::Protocol;
    use prost::Message;

    fn resource(pid: u32) -> Arc<Resource> {
        Arc::new(Resource {
            pid,
            service_name: "shop".into(),
            attributes: vec![
                ("service.name".into(), "shop".into()),
                ("process.pid".into(), pid.to_string()),
            ],
        })
    }

    fn resolve(vars: &[(&str, &str)]) -> Result<Option<LogsExportConfig>, ConfigError> {
        resolve_with(&ExportFlags::default(), vars)
    }

    fn resolve_with(
        flags: &ExportFlags,
        vars: &[(&str, &str)],
    ) -> Result<Option<LogsExportConfig>, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogsExportConfig::resolve(flags, |k| {
            vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn leak_record_says_what_and_where() {
        let r = leak_record(
            resource(7),
            "main.leak",
            "/src/app/main.go",
            42,
            23,
            523,
            300,
            5,
        );
        assert_eq!(
            r.body,
            "goroutine leak suspected: 523 live goroutines created at main.leak (main.go:42), up from 23 over 300s"
        );
        assert_eq!(
            (r.severity, r.event_name),
            (Severity::Warn, Some(GOROUTINE_LEAK_EVENT))
        );
        assert_eq!(r.time_unix_ns, 5);
        assert_eq!(
            r.attributes,
            vec![
                ("code.function.name", Value::Str("main.leak".into())),
                ("code.file.path", Value::Str("/src/app/main.go".into())),
                ("code.line.number", Value::Int(42)),
                ("periscope.goroutines.live", Value::Int(523)),
                ("periscope.goroutines.growth", Value::Int(500)),
            ]
        );
    }

    #[test]
    fn records_convert_and_group_by_resource() {
        let (a, b) = (resource(1), resource(2));
        let recs = [
            leak_record(a.clone(), "f", "x.go", 1, 0, 200, 60, 10),
            leak_record(b.clone(), "g", "y.go", 2, 0, 300, 60, 11),
            LogRecord {
                resource: a.clone(),
                time_unix_ns: 12,
                severity: Severity::Error,
                body: "boom".into(),
                attributes: Vec::new(),
                event_name: None,
            },
        ];
        let req = to_request(&recs);
        assert_eq!(req.resource_logs.len(), 2);
        let logs = &req.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].severity_number, SeverityNumber::Warn as i32);
        assert_eq!(logs[0].severity_text, "WARN");
        assert_eq!(logs[0].event_name, GOROUTINE_LEAK_EVENT);
        assert_eq!(logs[0].observed_time_unix_nano, 10);
        let line = logs[0]
            .attributes
            .iter()
            .find(|kv| kv.key == "code.line.number")
            .and_then(|kv| kv.value.clone()?.value);
        assert_eq!(line, Some(any_value::Value::IntValue(1)));
        assert_eq!(logs[1].severity_number, SeverityNumber::Error as i32);
        assert_eq!(logs[1].event_name, "");
        let bytes = req.encode_to_vec();
        assert_eq!(ExportLogsServiceRequest::decode(&bytes[..]).unwrap(), req);
    }

    #[test]
    fn endpoint_resolution_follows_the_other_signals() {
        assert_eq!(resolve(&[]), Ok(None), "no endpoint, no logs");
        let c = resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(c.otlp.endpoint(), "http://c:4318/v1/logs");
        assert_eq!(c.batch.schedule_delay, DEFAULT_SCHEDULE_DELAY);
        let c = resolve(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "http://l:9/custom"),
            (OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            (OTEL_EXPORTER_OTLP_LOGS_HEADERS, "b=3"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "100"),
            (OTEL_EXPORTER_OTLP_LOGS_TIMEOUT, "200"),
            (OTEL_BLRP_SCHEDULE_DELAY, "50"),
            (OTEL_BLRP_MAX_QUEUE_SIZE, "8"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.otlp.endpoint(), "http://l:9/custom", "used as-is");
        assert_eq!(c.otlp.protocol(), Protocol::Grpc);
        let h = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(c.otlp.headers(), [h("a", "1"), h("b", "3")]);
        assert_eq!(c.otlp.timeout(), Duration::from_millis(200));
        assert_eq!(c.batch.schedule_delay, Duration::from_millis(50));
        assert_eq!(c.batch.max_queue_size, 8);

        // The shared flag is a base URL: another signal's path is replaced.
        let flags = ExportFlags {
            otlp_endpoint: Some("http://f:4318/v1/traces".into()),
            otlp_timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let c = resolve_with(&flags, &[(OTEL_EXPORTER_OTLP_LOGS_TIMEOUT, "200")])
            .unwrap()
            .unwrap();
        assert_eq!(c.otlp.endpoint(), "http://f:4318/v1/logs");
        assert_eq!(c.otlp.timeout(), Duration::from_secs(1), "flag wins");

        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(resolve(&[base, (OTEL_LOGS_EXPORTER, "none")]), Ok(None));
        assert_eq!(
            resolve(&[base, (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE, "0")])
                .unwrap_err()
                .to_string(),
            "invalid OTEL_BLRP_MAX_EXPORT_BATCH_SIZE `0`: expected a positive integer"
        );
        assert_eq!(
            resolve(&[(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, "ftp://x")])
                .unwrap_err()
                .to_string(),
            "invalid OTEL_EXPORTER_OTLP_LOGS_ENDPOINT `ftp://x`: scheme `ftp://` is not supported, expected an http:// or https:// URL"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_full_queue_drops_and_a_dead_backend_keeps_the_deadline() {
        // Accepts connections, never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/logs", l.local_addr().unwrap());
        let otlp = OtlpConfig::new(&url, Protocol::HttpProtobuf).unwrap();
        let mut cfg = LogsExportConfig::new(otlp);
        cfg.batch.max_queue_size = 2;
        cfg.batch.schedule_delay = Duration::from_secs(3600);
        let (sink, handle) = start(cfg, &tokio::runtime::Handle::current());
        for i in 0..5 {
            sink.send(leak_record(resource(1), "f", "x.go", 1, 0, i, 1, 1));
        }
        let stats = sink.stats();
        // Whether dropped at the full queue or with the failed batch, every one is counted.
        let begun = std::time::Instant::now();
        handle.shutdown(Duration::from_millis(300)).await;
        assert!(begun.elapsed() < Duration::from_millis(300) + SHUTDOWN_GRACE * 2);
        assert_eq!(stats.exported.load(Relaxed), 0);
        assert_eq!(stats.dropped.load(Relaxed), 5, "every record accounted for");
        sink.send(leak_record(resource(1), "f", "x.go", 1, 0, 9, 1, 1));
        assert_eq!(stats.dropped.load(Relaxed), 6, "after shutdown");
    }
}
