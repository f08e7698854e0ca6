//! Discovery: the agent finds its targets by executable (`--exe`) or port (`--port`),
//! including servers started after it and servers restarted during the run (new PID),
//! and gives each process its own resource.

use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_batch},
    harness::{
        self, Agent, GoFlavor, Server, build_go_program, go_toolchain, start_go_server,
        start_nginx, start_python_http_server,
    },
    receiver::{Protocol, ReceivedSpan, Receiver},
};

fn get_n(server: &Server, n: usize, path: &str, ua: &str) {
    let batch = Batch {
        mode: ConnMode::KeepAlive,
        requests: (0..n)
            .map(|_| Request::get(path).with_user_agent(ua).expect(200))
            .collect(),
    };
    run_batch(server.addr, &batch);
}

/// Sends requests until spans with this user agent arrive (discovery has a small delay:
/// the exec event, then the minimum process age), then sends `n` more that must all
/// be traced. Returns those `n` spans.
fn traced_requests(recv: &Receiver, server: &Server, n: usize, ua: &str) -> Vec<ReceivedSpan> {
    let probe_ua = format!("{ua}-probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        get_n(server, 1, "/", &probe_ua);
        if recv
            .spans()
            .iter()
            .any(|s| s.attr("user_agent.original").as_deref() == Some(&probe_ua))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server pid {} was never picked up",
            server.pid()
        );
        thread::sleep(Duration::from_millis(200));
    }
    get_n(server, n, "/", ua);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<ReceivedSpan> = recv
            .spans()
            .into_iter()
            .filter(|s| s.attr("user_agent.original").as_deref() == Some(ua))
            .collect();
        if spans.len() >= n || Instant::now() > deadline {
            assert_eq!(spans.len(), n, "every request after pick-up is traced");
            return spans;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn goserver_bin() -> std::path::PathBuf {
    build_go_program("goserver", &go_toolchain("1.25"), GoFlavor::Stripped)
}

#[test]
fn exe_selector_follows_late_starts_and_restarts() {
    harness::require_root();
    let _serial = harness::serial();
    let bin = goserver_bin();
    let recv = Receiver::start();
    let agent = Agent::start([
        "--exe",
        "goserver",
        "--otlp-endpoint",
        &recv.endpoint(Protocol::Grpc),
        "--otlp-protocol",
        "grpc",
        "--min-process-age",
        "200",
    ]);
    // Started after the agent.
    let first = start_go_server(&bin);
    let spans = traced_requests(&recv, &first, 10, "first");
    assert!(
        spans
            .iter()
            .all(|s| s.resource_attr("process.pid") == Some(first.pid().to_string().as_str()))
    );
    assert!(
        spans
            .iter()
            .all(|s| s.resource_attr("service.name") == Some("goserver"))
    );
    // Restarted: a new process, a new PID, spans keep flowing.
    let old_pid = first.pid();
    drop(first);
    let second = start_go_server(&bin);
    assert_ne!(second.pid(), old_pid);
    let spans = traced_requests(&recv, &second, 10, "second");
    assert!(
        spans
            .iter()
            .all(|s| s.resource_attr("process.pid") == Some(second.pid().to_string().as_str()))
    );
    let exit = agent.stop();
    assert!(exit.status.success());
}

#[test]
fn port_selector_follows_late_starts() {
    harness::require_root();
    let _serial = harness::serial();
    let recv = Receiver::start();
    let port = harness::free_port();
    let agent = Agent::start([
        "--port".to_string(),
        port.to_string(),
        "--otlp-endpoint".into(),
        recv.endpoint(Protocol::HttpProtobuf),
        "--otlp-protocol".into(),
        "http/protobuf".into(),
    ]);
    let server = harness::start_python_http_server_on(port);
    let spans = traced_requests(&recv, &server, 5, "by-port");
    assert!(
        spans
            .iter()
            .all(|s| s.attr("server.port") == Some(port.to_string()))
    );
    assert!(
        spans
            .iter()
            .all(|s| s.resource_attr("process.pid") == Some(server.pid().to_string().as_str()))
    );
    // Nothing else was traced: every span is from that server.
    assert!(
        recv.spans()
            .iter()
            .all(|s| s.resource_attr("process.pid") == Some(server.pid().to_string().as_str()))
    );
    let exit = agent.stop();
    assert!(exit.status.success());
}

#[test]
fn many_targets_each_get_their_own_service() {
    harness::require_root();
    let _serial = harness::serial();
    let bin = goserver_bin();
    let go = start_go_server(&bin);
    let py = start_python_http_server();
    let ng = start_nginx();
    let recv = Receiver::start();
    let exe_py = harness::exe_name(py.pid());
    let agent = Agent::start([
        "--exe".to_string(),
        "goserver".into(),
        "--exe".into(),
        exe_py.clone(),
        "--exe".into(),
        "nginx".into(),
        "--otlp-endpoint".into(),
        recv.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        "grpc".into(),
    ]);
    let ng_ok = |n| {
        let batch = Batch {
            mode: ConnMode::KeepAlive,
            requests: (0..n)
                .map(|_| Request::get("/ok").with_user_agent("many").expect(200))
                .collect(),
        };
        run_batch(ng.addr, &batch);
    };
    get_n(&go, 3, "/", "many");
    get_n(&py, 3, "/", "many");
    ng_ok(3);
    let spans = recv.wait_for_spans(9, Duration::from_secs(20));
    let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &spans {
        by_service
            .entry(
                s.resource_attr("service.name")
                    .unwrap_or_default()
                    .to_string(),
            )
            .or_default()
            .insert(
                s.resource_attr("process.pid")
                    .unwrap_or_default()
                    .to_string(),
            );
    }
    assert_eq!(spans.len(), 9, "{by_service:?}");
    assert_eq!(
        by_service.keys().cloned().collect::<BTreeSet<_>>(),
        ["goserver".to_string(), exe_py, "nginx".to_string()]
            .into_iter()
            .collect(),
    );
    assert_eq!(
        by_service["goserver"],
        [go.pid().to_string()].into_iter().collect()
    );
    assert_eq!(
        by_service["nginx"],
        ng.handler_pids().iter().map(|p| p.to_string()).collect()
    );
    let exit = agent.stop();
    assert!(exit.status.success());
}
