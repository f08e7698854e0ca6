//! `periscope`: attach to running processes and export their HTTP spans.
//!
//! This file parses the command line and wires the stages (see lib.rs): the kernel
//! probes feed one event thread (decode -> connections -> HTTP -> spans), which hands
//! spans to the export stage running on a small tokio runtime. Nothing on the event
//! path ever waits for an exporter.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fs,
    os::fd::AsRawFd,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, RingBuf};
use clap::{Parser, ValueEnum};
use periscope::{
    conn::{Tracker, TrackerConfig},
    discovery::{Discovery, Selector},
    events::Event,
    export::{
        self, ConsoleFormat, ExportConfig, ExportFlags, SpanSink, metrics::MetricsExportConfig,
    },
    metrics::{self, Metrics},
    probes::{self, Probes},
    resource::ResourceConfig,
    route::{RouteConfig, RoutePatterns},
    runtime::go::{self, GoProcess, LeakConfig},
    sampling::{Sampler, SamplerConfig},
    telemetry::{Snapshot, Telemetry},
};
use periscope_common::ROLE_UNKNOWN;

#[derive(Parser, Debug)]
#[command(
    name = "periscope",
    version,
    about = "Zero-code eBPF tracing: HTTP spans from processes nobody instrumented",
    long_about = None
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Process to trace (all its threads, and the processes it forks). Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,

    /// Trace processes whose executable (full path or base name) matches this glob,
    /// including ones started later. Repeatable.
    #[arg(long = "exe", value_name = "GLOB")]
    exes: Vec<String>,

    /// Trace processes listening on this port, including ones started later. Repeatable.
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,

    /// Processes found by --exe or by tracing everything (no selector) are traced once
    /// they are this old, keeping short-lived commands out [default: 500]
    #[arg(long, value_name = "MS")]
    min_process_age: Option<u64>,

    /// OTLP endpoint, e.g. http://localhost:4318 [env: OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,

    /// OTLP protocol: grpc or http/protobuf [env: OTEL_EXPORTER_OTLP_PROTOCOL]
    #[arg(long, value_name = "PROTOCOL")]
    otlp_protocol: Option<String>,

    /// Extra OTLP headers, key=value,... [env: OTEL_EXPORTER_OTLP_HEADERS]
    #[arg(long, value_name = "HEADERS")]
    otlp_headers: Option<String>,

    /// PEM CA bundle trusted for an https:// OTLP endpoint, instead of the system's roots
    /// [env: OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    otlp_certificate: Option<std::path::PathBuf>,

    /// mTLS: PEM private key for an https:// OTLP endpoint (with --otlp-client-certificate)
    /// [env: OTEL_EXPORTER_OTLP_CLIENT_KEY]
    #[arg(long, value_name = "FILE")]
    otlp_client_key: Option<std::path::PathBuf>,

    /// mTLS: PEM certificate chain for an https:// OTLP endpoint (with --otlp-client-key)
    /// [env: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    otlp_client_certificate: Option<std::path::PathBuf>,

    /// Print spans to stdout (the default when no OTLP endpoint is configured).
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "text")]
    console: Option<ConsoleArg>,

    /// Run for this many seconds, then flush and exit.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// Do not trace processes forked by the targets.
    #[arg(long)]
    no_follow_forks: bool,

    /// Seconds between status lines on stderr (0 = only at exit) [default: 10]
    #[arg(long, value_name = "SECS")]
    status_interval: Option<u64>,

    /// Serve Prometheus metrics on this address (PORT or :PORT = loopback; HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<String>,

    /// Route template for http.route, e.g. /api/users/{id} or /static/* (repeatable;
    /// first match wins; other paths are folded heuristically).
    #[arg(long = "route", value_name = "PATTERN")]
    routes: Vec<String>,

    /// Most distinct routes per service; further ones count under /{overflow}.
    #[arg(long, value_name = "N")]
    max_routes: Option<usize>,

    /// Size of the kernel-to-agent event ring, in MiB: a power of two from 1 to 1024.
    /// It absorbs bursts while the agent is not scheduled; events that do not fit are
    /// counted as lost. Counted twice in the agent's RSS (the ring is mapped twice)
    /// [default: 4]
    #[arg(long, value_name = "MIB")]
    ring_buffer_mib: Option<u32>,

    /// Do not attach the Go runtime uprobes (goroutines, GC): HTTP tracing and process
    /// metrics only.
    #[arg(long)]
    no_go_runtime: bool,

    /// Do not read Go heap, GC and scheduler statistics from the program's memory
    /// (go_memstats_*, the runtime's own go_goroutines / go_threads); goroutines and GC
    /// then come from the runtime probes only. For measuring what the reads cost.
    #[arg(long)]
    no_go_runtime_memory: bool,

    /// Report every goroutine creation and exit from uprobes (exact, with the parent
    /// goroutine) instead of sampling the runtime's goroutine list twice a second.
    /// Costs a uprobe trap per goroutine: expensive for goroutine-heavy programs.
    #[arg(long)]
    go_goroutine_events: bool,

    /// Goroutine-leak detection window: a creation site whose live goroutines grow
    /// steadily over it is reported [default: 300]
    #[arg(long, value_name = "SECS")]
    leak_window: Option<f64>,

    /// Least growth over the window for a site to be suspected of leaking [default: 100]
    #[arg(long, value_name = "N")]
    leak_min_growth: Option<i64>,

    /// Goroutine creation sites exported per Go process (plus suspected ones)
    /// [default: 20]
    #[arg(long, value_name = "N")]
    top_sites: Option<usize>,

    /// Resource attribute for every traced process, e.g. deployment.environment.name=prod
    /// (repeatable; overrides OTEL_RESOURCE_ATTRIBUTES; service.name=X sets the name).
    #[arg(long = "resource-attribute", value_name = "KEY=VALUE")]
    resource_attributes: Vec<String>,

    /// Pod metadata from the Kubernetes API (k8s.pod.name, k8s.namespace.name,
    /// k8s.container.name, workload names, service.name): auto = on when running in a pod
    /// (KUBERNETES_SERVICE_HOST is set) or --kube-api-url is given [default: auto]
    #[arg(long, value_name = "MODE", value_enum)]
    kube_metadata: Option<periscope::kube::Mode>,

    /// Kubernetes API server [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT]
    #[arg(long, value_name = "URL")]
    kube_api_url: Option<String>,

    /// CA bundle (PEM) the API server's certificate must chain to
    /// [default: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt]
    #[arg(long, value_name = "FILE")]
    kube_ca_file: Option<std::path::PathBuf>,

    /// Bearer token file, read again on every refresh (projected tokens rotate)
    /// [default: /var/run/secrets/kubernetes.io/serviceaccount/token]
    #[arg(long, value_name = "FILE")]
    kube_token_file: Option<std::path::PathBuf>,

    /// This node's name: pods are listed by spec.nodeName [env: NODE_NAME]
    #[arg(long, value_name = "NAME")]
    kube_node_name: Option<String>,

    /// Also take service.name from the pod labels app.kubernetes.io/instance and
    /// app.kubernetes.io/name (and service.version from app.kubernetes.io/version), as the
    /// OpenTelemetry Kubernetes conventions allow when opted in.
    #[arg(long)]
    kube_well_known_labels: bool,

    /// Configuration file (TOML; every flag has a key of the same name). Flags and
    /// OTEL_* variables override it.
    #[arg(long, value_name = "FILE", env = "PERISCOPE_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Check this host: kernel, BTF, mounts, lockdown, capabilities, and which probe
    /// kinds really load here. Exits 1 when something required is missing.
    Doctor {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Do not mount tracefs/securityfs to check them.
        #[arg(long)]
        no_mount: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ConsoleArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PERISCOPE_LOG")
                .unwrap_or_else(|_| "warn,periscope=info".into()),
        )
        .with_target(false)
        .init();
    if let Some(Command::Doctor { json, no_mount }) = cli.command {
        let opts = periscope::doctor::Options {
            format: if json {
                periscope::doctor::Format::Json
            } else {
                periscope::doctor::Format::Table
            },
            mount: !no_mount,
            ..Default::default()
        };
        return match periscope::doctor::run(&mut std::io::stdout(), &opts) {
            Ok(report) => ExitCode::from(report.exit_code()),
            Err(e) => {
                eprintln!("periscope: error: doctor: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("periscope: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parent pid of every process, from /proc/*/stat.
fn parent_map() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // comm may hold spaces and parentheses: fields resume after the last ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
            && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok())
        {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The given pids plus, when following forks, their living descendants.
fn expand_targets(pids: &[u32], follow: bool) -> BTreeSet<u32> {
    let mut set: BTreeSet<u32> = pids.iter().copied().collect();
    if follow {
        let parents = parent_map();
        loop {
            let before = set.len();
            for (&pid, ppid) in &parents {
                if set.contains(ppid) {
                    set.insert(pid);
                }
            }
            if set.len() == before {
                break;
            }
        }
    }
    set.remove(&std::process::id());
    set
}

/// Fills what the command line left unset from the config file (flag > env > file >
/// default; the OTEL_* env vars are read later by the export config, so a file value
/// is only used when they are unset).
fn merge_file(mut cli: Cli) -> Result<Cli> {
    use periscope::config::{FileConfig, layered};
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if cli.pids.is_empty() {
        cli.pids = file.pid;
    }
    if cli.exes.is_empty() {
        cli.exes = file.exe;
    }
    if cli.ports.is_empty() {
        cli.ports = file.port;
    }
    if cli.routes.is_empty() {
        cli.routes = file.route;
    }
    if cli.resource_attributes.is_empty() {
        cli.resource_attributes = file.resource_attribute;
    }
    cli.otlp_endpoint = layered(
        cli.otlp_endpoint,
        &[
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ],
        file.otlp_endpoint,
    );
    cli.otlp_protocol = layered(
        cli.otlp_protocol,
        &[
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ],
        file.otlp_protocol,
    );
    cli.otlp_headers = layered(
        cli.otlp_headers,
        &[
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ],
        file.otlp_headers,
    );
    // Every signal's variable hides the file's value: a file value acts as the flag, which
    // would otherwise beat a signal-specific env var.
    cli.otlp_certificate = layered(
        cli.otlp_certificate,
        &[
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        ],
        file.otlp_certificate,
    );
    cli.otlp_client_key = layered(
        cli.otlp_client_key,
        &[
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
        ],
        file.otlp_client_key,
    );
    cli.otlp_client_certificate = layered(
        cli.otlp_client_certificate,
        &[
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
        ],
        file.otlp_client_certificate,
    );
    if cli.console.is_none() {
        cli.console = match file.console.as_deref() {
            None => None,
            Some("text") => Some(ConsoleArg::Text),
            Some("json") => Some(ConsoleArg::Json),
            Some(other) => {
                bail!("config file: console must be \"text\" or \"json\", not {other:?}")
            }
        };
    }
    cli.duration = cli.duration.or(file.duration);
    cli.no_follow_forks |= file.no_follow_forks.unwrap_or(false);
    cli.no_go_runtime |= file.no_go_runtime.unwrap_or(false);
    cli.go_goroutine_events |= file.go_goroutine_events.unwrap_or(false);
    cli.status_interval = cli.status_interval.or(file.status_interval);
    cli.prometheus = cli.prometheus.or(file.prometheus);
    cli.max_routes = cli.max_routes.or(file.max_routes);
    cli.ring_buffer_mib = cli.ring_buffer_mib.or(file.ring_buffer_mib);
    cli.min_process_age = cli.min_process_age.or(file.min_process_age);
    cli.leak_window = cli.leak_window.or(file.leak_window);
    cli.leak_min_growth = cli.leak_min_growth.or(file.leak_min_growth);
    cli.top_sites = cli.top_sites.or(file.top_sites);
    if cli.kube_metadata.is_none()
        && let Some(mode) = file.kube_metadata.as_deref()
    {
        cli.kube_metadata = Some(
            mode.parse()
                .map_err(|e| anyhow::anyhow!("config file: kube-metadata: {e}"))?,
        );
    }
    // KUBERNETES_SERVICE_HOST is a default (where the API is when in a pod), not a
    // setting: a file's kube-api-url wins over it. NODE_NAME is a setting.
    cli.kube_api_url = cli.kube_api_url.or(file.kube_api_url);
    cli.kube_ca_file = cli.kube_ca_file.or(file.kube_ca_file);
    cli.kube_token_file = cli.kube_token_file.or(file.kube_token_file);
    cli.kube_node_name = layered(cli.kube_node_name, &["NODE_NAME"], file.kube_node_name);
    cli.kube_well_known_labels |= file.kube_well_known_labels.unwrap_or(false);
    Ok(cli)
}

fn run(cli: Cli) -> Result<()> {
    let cli = merge_file(cli)?;
    let status_interval = cli.status_interval.unwrap_or(10);
    for &pid in &cli.pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with PID {pid}");
        }
        if pid == std::process::id() {
            bail!("periscope cannot trace itself (PID {pid})");
        }
    }
    let selector = Selector::new(cli.pids.clone(), &cli.exes, cli.ports.clone())?;
    let mut discovery = Discovery::new(
        selector,
        Duration::from_millis(cli.min_process_age.unwrap_or(500)),
    );
    let mut flags = ExportFlags {
        otlp_endpoint: cli.otlp_endpoint.clone(),
        otlp_protocol: cli.otlp_protocol.clone(),
        otlp_headers: cli.otlp_headers.clone(),
        otlp_timeout: None,
        otlp_certificate: cli.otlp_certificate.clone(),
        otlp_client_key: cli.otlp_client_key.clone(),
        otlp_client_certificate: cli.otlp_client_certificate.clone(),
        console: Vec::new(),
    };
    match cli.console {
        Some(ConsoleArg::Text) => flags.console.push(ConsoleFormat::Text),
        Some(ConsoleArg::Json) => flags.console.push(ConsoleFormat::Json),
        None => {}
    }
    let mut export_cfg = ExportConfig::from_flags_and_env(&flags)?;
    if export_cfg.is_empty() {
        export_cfg.console.push(ConsoleFormat::Text);
    }
    let routes = RouteConfig {
        patterns: RoutePatterns::parse(&cli.routes)?,
        max_routes_per_service: cli
            .max_routes
            .unwrap_or(periscope::route::DEFAULT_MAX_ROUTES_PER_SERVICE),
        ..RouteConfig::default()
    };
    let sampler = Sampler::new(SamplerConfig::from_env(|k| std::env::var(k).ok())?);
    let mut resource = ResourceConfig::from_env();
    resource
        .apply_flags(&cli.resource_attributes)
        .map_err(|item| {
            anyhow::anyhow!("invalid --resource-attribute {item:?}: expected KEY=VALUE")
        })?;
    let prometheus_addr = cli
        .prometheus
        .as_deref()
        .map(metrics::server::parse_addr)
        .transpose()?;
    let metrics = Arc::new(Metrics::default());

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("periscope-export")
        .enable_all()
        .build()
        .context("starting the export runtime")?;
    // Pod metadata: the first list runs while the probes load.
    let kube = periscope::kube::start(
        &periscope::kube::KubeFlags {
            mode: cli.kube_metadata,
            api_url: cli.kube_api_url.clone(),
            ca_file: cli.kube_ca_file.clone(),
            token_file: cli.kube_token_file.clone(),
            node_name: cli.kube_node_name.clone(),
            well_known_labels: cli.kube_well_known_labels,
        },
        rt.handle(),
    )?;
    let discovering = discovery.selector().discovers();
    let ring_bytes = periscope::probes::ring_bytes(cli.ring_buffer_mib)?;
    let (probes, ring) = Probes::load(ring_bytes, discovering)?;
    probes.warn_unavailable();
    let follow = !cli.no_follow_forks;
    let found: Vec<u32> = discovery.initial(Instant::now()).into_iter().collect();
    let targets = expand_targets(&found, follow);
    let tracker = Tracker::new(TrackerConfig {
        resource,
        routes,
        sampler,
        metrics: metrics.clone(),
    });
    let logs_export = export::logs::LogsExportConfig::from_flags_and_env(&flags)?
        .map(|cfg| export::logs::start(cfg, rt.handle()));
    let mut t = Targets {
        probes,
        tracker,
        go: HashMap::new(),
        leak: LeakConfig {
            window_ns: (cli.leak_window.unwrap_or(300.0) * 1e9) as u64,
            min_growth: cli.leak_min_growth.unwrap_or(100),
            top_sites: cli.top_sites.unwrap_or(20),
        },
        follow,
        go_runtime: !cli.no_go_runtime,
        go_events: cli.go_goroutine_events,
        go_memory: !cli.no_go_runtime_memory,
        logs: logs_export.as_ref().map(|(sink, _)| sink.clone()),
        metrics: metrics.clone(),
        silence: Default::default(),
        tls_hooked: HashSet::new(),
        tls_recheck: HashMap::new(),
    };
    if let Some(kube) = &kube {
        // Bounded: a slow or down API server delays startup by at most this, and the
        // processes attached meanwhile get their pod attributes when they arrive.
        kube.wait_first_attempt(periscope::kube::STARTUP_WAIT);
    }
    let mut described = Vec::new();
    for &pid in &targets {
        let name = t.attach(pid)?;
        described.push(format!("{pid} ({name})"));
    }
    if described.len() > 12 {
        let more = described.len() - 12;
        described.truncate(12);
        described.push(format!("and {more} more"));
    }
    let mode = match (discovering, discovery.selector().is_all()) {
        (true, true) => "; discovering every process",
        (true, false) => "; discovering new matches",
        _ => "",
    };

    let (sink, export) = export::start(export_cfg, rt.handle());
    let stats = export.stats();
    let telemetry = Arc::new(Telemetry::default());
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(addr) = prometheus_addr {
        let sources = metrics::server::Sources {
            metrics: metrics.clone(),
            telemetry: telemetry.clone(),
            exports: stats.clone(),
        };
        let local = metrics::server::start(addr, sources, rt.handle())?;
        eprintln!("periscope: metrics on http://{local}/metrics");
    }

    // Listen for signals before saying ready: from then on, SIGINT/SIGTERM mean "flush
    // and exit 0". The listeners live for the whole run so none is ever missed.
    let (mut sigint, mut sigterm) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _rt = rt.enter();
        (
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        )
    };
    let metrics_export = MetricsExportConfig::from_export_flags_and_env(&flags)?
        .map(|cfg| export::metrics::start(cfg, metrics.clone(), rt.handle()));

    // Loading read the eBPF object and the kernel's BTF (several MiB, parsed and freed):
    // give those pages back, or the heap keeps them for the whole run (measured: an
    // idle agent's heap 13.9 MiB before this, see the bench's "agent on another" RSS).
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    eprintln!(
        "periscope: ready — tracing {} process(es): {}{mode}",
        targets.len(),
        described.join(", ")
    );

    let event_thread = {
        let telemetry = telemetry.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("periscope-events".into())
            .spawn(move || event_loop(t, ring, discovery, sink, &telemetry, &stop))
            .context("starting the event thread")?
    };

    let end = rt.block_on(async {
        let deadline = cli
            .duration
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_status = Instant::now();
        loop {
            tokio::select! {
                _ = sigint.recv() => break "interrupted",
                _ = sigterm.recv() => break "terminated",
                _ = tick.tick() => {}
            }
            if event_thread.is_finished() {
                break "every traced process exited";
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break "duration elapsed";
            }
            if status_interval > 0 && last_status.elapsed() >= Duration::from_secs(status_interval)
            {
                last_status = Instant::now();
                eprintln!("{}", status_line(&telemetry.snapshot(), &stats));
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    let loop_result = event_thread
        .join()
        .map_err(|_| anyhow::anyhow!("event thread panicked"))?;
    rt.block_on(async {
        let deadline = Duration::from_secs(5);
        let metrics = async {
            if let Some(m) = metrics_export {
                m.shutdown(deadline).await;
            }
        };
        let logs = async {
            if let Some((_, l)) = logs_export {
                l.shutdown(deadline).await;
            }
        };
        tokio::join!(export.shutdown(deadline), metrics, logs);
    });
    let snap = telemetry.snapshot();
    eprintln!(
        "periscope: {end}; flushed. {}",
        status_line(&snap, &stats).trim_start_matches("periscope: ")
    );
    loop_result
}

fn status_line(s: &Snapshot, outputs: &[Arc<export::ExportStats>]) -> String {
    let mut line = format!(
        "periscope: status processes={} events={} lost={} parse_errors={} non_http={} unmatched={} unpaired_desync={} spans={} joined={} connect_failures={}",
        s.processes,
        s.events_received,
        s.kernel.ringbuf_drops,
        s.tracker.parse_errors,
        s.tracker.non_http_streams,
        s.tracker.requests_without_response + s.tracker.responses_without_request,
        s.tracker.unpaired_desync,
        s.tracker.spans,
        s.tracker.joined,
        s.tracker.connect_failures,
    );
    for c in periscope::conn::DesyncCause::ALL {
        line.push_str(&format!(
            " desync_{}={}",
            c.as_str(),
            s.tracker.unpaired_desync_by_cause[c as usize]
        ));
    }
    line.push_str(&format!(
        " frame_splits={} frame_lost={} h2_splits={} h2_lost={}",
        s.kernel.frame_splits, s.kernel.frame_lost, s.kernel.h2_splits, s.kernel.h2_lost
    ));
    for o in outputs {
        line.push_str(&format!(
            " {out}_exported={} {out}_dropped={}",
            o.exported.load(Ordering::Relaxed),
            o.dropped.load(Ordering::Relaxed),
            out = o.output.as_str(),
        ));
    }
    line
}

/// How often the ring is drained when nothing forces a wakeup. Events reach userspace
/// at most this late; batching them saves a wakeup per event.
const DRAIN_INTERVAL_MS: i32 = 10;
/// Spans are handed to the outputs once this many wait, or every `HANDOVER_EVERY`:
/// one wakeup of the export worker per hand-over instead of one per span (it cost the
/// agent about 0.8 µs per request, mostly in context switches, at 45k requests/s).
const SPAN_HANDOVER: usize = 256;
const HANDOVER_EVERY: Duration = Duration::from_millis(20);
const HOUSEKEEPING: Duration = Duration::from_millis(100);
/// Go runtime stats are published to the metrics this often.
const GO_PUBLISH: Duration = Duration::from_secs(1);

/// Everything the event thread owns about the traced processes.
struct Targets {
    probes: Probes,
    tracker: Tracker,
    go: HashMap<u32, GoProcess>,
    leak: LeakConfig,
    follow: bool,
    go_runtime: bool,
    /// Per-goroutine probes instead of sampling allgs.
    go_events: bool,
    /// Read heap/GC/scheduler statistics from the program's memory.
    go_memory: bool,
    /// OTLP log records (goroutine-leak warnings), when an OTLP endpoint is set.
    logs: Option<export::logs::LogSink>,
    metrics: Arc<Metrics>,
    /// Targets that make syscalls while no event arrives for them.
    silence: probes::silence::SilenceWatch,
    /// Targets whose OpenSSL is hooked.
    tls_hooked: HashSet<u32>,
    /// Targets without OpenSSL yet, and when to look again: a library may be loaded
    /// after start (Python imports `ssl` when first used).
    tls_recheck: HashMap<u32, Instant>,
}

/// How often a target without OpenSSL is looked at again.
const TLS_RECHECK: Duration = Duration::from_secs(2);

impl Targets {
    /// Starts tracing `pid`: kernel filter, resource, the sockets it already has, and
    /// the Go runtime probes when it is a Go program. Returns its service name.
    fn attach(&mut self, pid: u32) -> Result<String> {
        self.probes
            .add_target(pid, self.follow)
            .with_context(|| format!("adding PID {pid} to the target map"))?;
        self.silence.attached(pid, Instant::now());
        let res = self.tracker.add_process(pid);
        // Programs are attached already, so a socket opened from now on is seen by
        // accept/connect; the ones open before are added here (role learnt from bytes).
        for fd in probes::existing_tcp_sockets(pid).unwrap_or_default() {
            self.probes.add_socket(pid, fd, ROLE_UNKNOWN)?;
        }
        self.attach_tls(pid, false);
        if self.go_runtime {
            self.attach_go(pid);
        } else if periscope::runtime::gobin::GoBinary::open(format!("/proc/{pid}/exe")).is_ok() {
            self.tracker.disable_thread_context(pid);
        }
        Ok(res.service_name.clone())
    }

    /// Hooks the OpenSSL the process maps, if any: a line when hooked or when that fails;
    /// none found means a look again in TLS_RECHECK.
    fn attach_tls(&mut self, pid: u32, recheck: bool) {
        self.tls_recheck.remove(&pid);
        match self.probes.attach_tls(pid, recheck) {
            Ok(Some(lib)) => {
                tracing::info!("PID {pid}: TLS plaintext probes attached to {}", lib.name);
                self.tls_hooked.insert(pid);
            }
            Ok(None) => {
                self.tls_recheck.insert(pid, Instant::now() + TLS_RECHECK);
            }
            Err(e) => {
                eprintln!("periscope: warning: PID {pid}: HTTPS not traced: {e}");
            }
        }
    }

    /// Looks again at targets that had no OpenSSL (bounded: a few per pass).
    fn tls_housekeeping(&mut self) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .tls_recheck
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(pid, _)| *pid)
            .take(16)
            .collect();
        for pid in due {
            self.attach_tls(pid, true);
        }
    }

    fn attach_go(&mut self, pid: u32) {
        let started = Instant::now();
        let plan = match go::plan(pid, self.go_events) {
            Ok(Some(plan)) => {
                self.tracker.disable_thread_context(pid);
                plan
            }
            Ok(None) => return,
            // A short-lived process can exit between discovery and this read: that is
            // no warning (a churn of cron-like jobs printed one per job).
            Err(e) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                tracing::debug!("PID {pid} exited before its Go runtime was read: {e}");
                return;
            }
            Err(e) => {
                eprintln!("periscope: warning: PID {pid}: Go runtime metrics unavailable: {e}");
                return;
            }
        };
        let mut proc = GoProcess::new(pid, &plan, self.leak);
        // The runtime's memory must look like goroutines under these offsets before any
        // probe reads goroutines with them: build info can lie about the Go version, and
        // wrong offsets would give made-up goroutines and wrong trace parents. HTTP spans
        // go on without the runtime part.
        if let Err(e @ go::AllgsError::Walk(_)) = proc.read_allgs(&plan.offsets) {
            eprintln!(
                "periscope: warning: PID {pid}: Go runtime metrics off (Go {} per its build info): {e}",
                plan.version
            );
            return;
        }
        match self.probes.attach_go(pid, &plan) {
            Ok(n) => {
                proc.sample_allgs = !self.go_events;
                let seeded = proc.seed_from_memory(&plan.offsets);
                if !self.go_memory {
                    tracing::info!("PID {pid}: Go heap statistics off (--no-go-runtime-memory)");
                } else if let Err(why) = proc.enable_memory_stats() {
                    tracing::info!("PID {pid}: Go heap statistics unavailable: {why}");
                }
                tracing::info!(
                    "PID {pid}: Go {} runtime probes attached at {n} sites{} in {} ms; {}",
                    plan.version,
                    match plan.single_stepped() {
                        Some(k) => format!(" ({k} of them single-stepped when hit)"),
                        None => String::new(),
                    },
                    started.elapsed().as_millis(),
                    match seeded {
                        Ok(k) => format!("{k} goroutines alive at attach"),
                        Err(e) => format!("goroutines alive before attach cannot be read ({e})"),
                    }
                );
                match &plan.tls {
                    Ok(Some(sites)) => tracing::info!(
                        "PID {pid}: TLS plaintext probes attached to Go crypto/tls ({sites} sites)"
                    ),
                    Ok(None) => {}
                    Err(why) => {
                        eprintln!("periscope: warning: PID {pid}: Go HTTPS not traced: {why}")
                    }
                }
                self.metrics.set_go(pid, proc.stats());
                self.go.insert(pid, proc);
            }
            Err(e) => {
                eprintln!("periscope: warning: PID {pid}: Go runtime probes not attached: {e}")
            }
        }
    }

    fn attach_logged(&mut self, pid: u32) {
        match self.attach(pid) {
            Ok(name) => tracing::info!("tracing PID {pid} ({name})"),
            // The process may be gone already; nothing to trace then.
            Err(e) => tracing::debug!("not tracing PID {pid}: {e:#}"),
        }
    }

    fn detach(&mut self, pid: u32, ts_ns: u64, emit: &mut dyn FnMut(periscope::span::Span)) {
        self.silence.detached(pid);
        let fds = self.tracker.remove_process(pid, ts_ns, emit);
        self.probes.remove_sockets(pid, fds);
        self.probes.purge_process(pid);
        self.probes.remove_target(pid);
        self.tls_recheck.remove(&pid);
        if self.tls_hooked.remove(&pid) {
            self.probes.detach_tls(pid);
        }
        if self.go.remove(&pid).is_some() {
            self.probes.detach_go(pid);
        }
    }

    fn go_event(&mut self, ev: &Event<'_>) {
        match ev {
            Event::GoroutineCreate(e) => {
                if let Some(g) = self.go.get_mut(&e.header.tgid()) {
                    g.on_create(e.goid, e.gopc, e.startpc);
                }
            }
            Event::GoroutineExit(e) => {
                if let Some(g) = self.go.get_mut(&e.header.tgid()) {
                    g.on_exit(e.goid);
                }
            }
            Event::GcPause(e) => {
                if let Some(g) = self.go.get_mut(&e.header.tgid()) {
                    g.on_gc_pause(e.start_ns, e.end_ns);
                }
            }
            Event::GcCycle(e) => {
                if let Some(g) = self.go.get_mut(&e.header.tgid()) {
                    g.on_gc_cycle();
                }
            }
            _ => {}
        }
    }

    /// Leak sampling (and warnings) on every tick; stats to the metrics when `publish`.
    fn go_housekeeping(&mut self, publish: bool) {
        let now = periscope::conn::monotonic_ns();
        for (&pid, g) in self.go.iter_mut() {
            g.rescan_if_due(now);
            g.sample(now);
            for (site, from, to) in g.take_new_suspects() {
                let service = self
                    .tracker
                    .resource(pid)
                    .map(|r| r.service_name.clone())
                    .unwrap_or_default();
                let window_s = self.leak.window_ns / 1_000_000_000;
                eprintln!(
                    "periscope: warning: goroutine leak suspected in {service} (PID {pid}): {to} live goroutines created at {} ({}:{}), up from {from} over {window_s}s",
                    site.function, site.file, site.line,
                );
                if let (Some(sink), Some(resource)) = (&self.logs, self.tracker.resource(pid)) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    sink.send(export::logs::leak_record(
                        resource,
                        &site.function,
                        &site.file,
                        site.line,
                        from,
                        to,
                        window_s,
                        now,
                    ));
                }
            }
            if publish {
                self.metrics.set_go(pid, g.stats());
            }
        }
    }
}

/// Applies one ring record: target-set changes here (they touch kernel maps), Go
/// runtime events to the runtime stage, the rest to the connection tracker.
fn apply(
    record: &[u8],
    t: &mut Targets,
    discovery: &mut Discovery,
    telemetry: &Telemetry,
    emit: &mut dyn FnMut(periscope::span::Span),
) {
    if let Some(pid_tgid) = record.get(16..24) {
        // EventHeader: kind, pad, ts_ns, then pid_tgid.
        let pid_tgid = u64::from_ne_bytes(pid_tgid.try_into().expect("8 bytes"));
        t.silence.event((pid_tgid >> 32) as u32);
    }
    let event = Event::try_from(record);
    if let Ok(ev) = &event
        && tracing::enabled!(tracing::Level::TRACE)
    {
        tracing::trace!("event {ev:?}");
    }
    match event {
        Ok(Event::Fork(ev)) => {
            // The kernel already traces the child; give it a resource.
            t.tracker.add_forked_process(ev.pid, ev.parent_pid);
        }
        Ok(Event::Exit(ev)) => t.detach(ev.pid, ev.header.ts_ns, emit),
        Ok(Event::Exec(ev)) => {
            if t.tracker.resource(ev.pid).is_some() {
                // A target runs another program now: new resource, or let go.
                t.detach(ev.pid, ev.header.ts_ns, emit);
                if discovery.still_matches(ev.pid) {
                    t.attach_logged(ev.pid);
                }
            } else {
                discovery.on_exec(ev.pid, Instant::now());
            }
        }
        Ok(Event::Bind(ev)) => {
            let pid = ev.header.tgid();
            if t.tracker.resource(pid).is_none() && discovery.on_bind(pid, ev.port) {
                t.attach_logged(pid);
            }
        }
        Ok(ev @ Event::GoroutineCreate(e)) => {
            // Counts and sites (runtime stage); creation lineage for trace context.
            t.tracker.goroutine_created(&e);
            t.go_event(&ev);
        }
        Ok(ev @ Event::GoroutineExit(e)) => {
            t.tracker.goroutine_exited(&e);
            t.go_event(&ev);
        }
        Ok(ev @ (Event::GcPause(_) | Event::GcCycle(_))) => t.go_event(&ev),
        Ok(ev) => t.tracker.handle(ev, emit),
        Err(_) => telemetry.decode_error(),
    }
}

fn event_loop(
    mut t: Targets,
    mut ring: RingBuf<MapData>,
    mut discovery: Discovery,
    sink: SpanSink,
    telemetry: &Telemetry,
    stop: &AtomicBool,
) -> Result<()> {
    let discovering = discovery.selector().discovers();
    let mut received: u64 = 0;
    let mut last_housekeeping = Instant::now();
    let mut last_go_publish = Instant::now();
    // Spans go to the outputs in hand-overs (see `SPAN_HANDOVER`), not one by one: each
    // hand-over may wake an output's worker.
    let pending = std::cell::RefCell::new(Vec::new());
    let mut last_handover = Instant::now();
    let mut hand_over = |force: bool| {
        let mut p = pending.borrow_mut();
        if !p.is_empty()
            && (force || p.len() >= SPAN_HANDOVER || last_handover.elapsed() >= HANDOVER_EVERY)
        {
            sink.send_many(std::mem::replace(
                &mut *p,
                Vec::with_capacity(SPAN_HANDOVER),
            ));
            last_handover = Instant::now();
        }
    };
    let mut emit = |span| pending.borrow_mut().push(span);
    let fd = ring.as_raw_fd();
    // Records are applied in time order, not ring order (see events::reorder).
    let mut reorder = periscope::events::reorder::Reorder::new();
    loop {
        while let Some(item) = ring.next() {
            received += 1;
            reorder.push(&item);
        }
        let stopping = stop.load(Ordering::Relaxed);
        let now = periscope::conn::monotonic_ns();
        reorder.release(now, stopping, |record| {
            apply(record, &mut t, &mut discovery, telemetry, &mut emit)
        });
        // Sockets whose parser gave up: the kernel stops copying their payload.
        let mutes: Vec<(u32, u32, u16)> = t.tracker.take_mutes().collect();
        for (pid, fd, generation) in mutes {
            let ok = t
                .probes
                .set_class(pid, fd, generation, periscope_common::CLASS_MUTED);
            t.tracker.mute_done(ok);
        }
        let publish = |t: &Targets, reorder: &periscope::events::reorder::Reorder| {
            telemetry.publish(Snapshot {
                kernel: t.probes.stats(),
                tracker: t.tracker.stats(),
                sampler: t.tracker.sampler_stats(),
                events_received: received,
                processes: t.tracker.process_count() as u64,
                events_late: reorder.late,
                events_forced: reorder.forced,
                silent_targets: t.silence.silent,
                ..Snapshot::default()
            })
        };
        if last_housekeeping.elapsed() >= HOUSEKEEPING {
            last_housekeeping = Instant::now();
            // Exits we did not see (e.g. the ring was full): poll liveness. What is
            // held for reordering is applied first: it may be the process's last words.
            let dead: Vec<u32> = t
                .tracker
                .pids()
                .into_iter()
                .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            if !dead.is_empty() {
                reorder.release(now, true, |record| {
                    apply(record, &mut t, &mut discovery, telemetry, &mut emit)
                });
                for pid in dead {
                    t.detach(pid, 0, &mut emit);
                }
            }
            for pid in discovery.due(Instant::now()) {
                if t.tracker.resource(pid).is_none() {
                    t.attach_logged(pid);
                }
            }
            t.probes.flush_logs();
            let probes = &t.probes;
            for warning in t
                .silence
                .check(Instant::now(), &|pid| probes.has_target(pid))
            {
                eprintln!("{warning}");
            }
            t.tracker.housekeeping();
            t.tracker.refresh_resources();
            let go_due = last_go_publish.elapsed() >= GO_PUBLISH;
            if go_due {
                last_go_publish = Instant::now();
            }
            t.go_housekeeping(go_due);
            t.tls_housekeeping();
            if t.tracker.process_count() == 0 && !discovering {
                hand_over(true);
                publish(&t, &reorder);
                return Ok(());
            }
            publish(&t, &reorder);
        }
        if stopping {
            // Final drain happened above; publish once more for the exit summary.
            hand_over(true);
            t.go_housekeeping(true);
            publish(&t, &reorder);
            return Ok(());
        }
        hand_over(false);
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, DRAIN_INTERVAL_MS) };
    }
}
