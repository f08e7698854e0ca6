//! HTTPS through OpenSSL (issue 13, first slice): a threaded Python server using the
//! system's libssl gets exactly one right span per request, with `url.scheme=https`,
//! checked against the server's own access log. The client is a seeded mix of methods,
//! statuses, bodies up to 70 KB, TLS 1.2 and 1.3, keep-alive and fresh connections.
//!
//! The client side: the same client, traced too, gets one CLIENT span per exchange, each
//! the parent of the server's SERVER span for it (one trace across both processes).
//!
//! Needs root, python3 and openssl. Run the seed again with `PERISCOPE_TLS_SEED=<seed>`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use periscope_e2e::harness::{self, Agent, Process, TempDir};
use periscope_e2e::receiver::{Protocol, Receiver};

const EXCHANGES: usize = 120;

/// The spans once `n` arrived (or 30 s passed), and anything extra that arrives with
/// them: a moment more, so that a doubled span is seen.
fn settled_spans(receiver: &Receiver, n: usize) -> Vec<periscope_e2e::receiver::ReceivedSpan> {
    let spans = receiver.wait_for_spans(n, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    let more = receiver.spans();
    if more.len() > spans.len() {
        more
    } else {
        spans
    }
}

/// The threaded HTTPS server of tests/programs/tls, ready: (process, port, access log).
fn start_server(dir: &TempDir) -> (Process, u16, std::path::PathBuf) {
    let (cert, key) = harness::self_signed_cert(dir);
    let log_path = dir.path().join("access.log");
    let port = harness::free_port();
    let mut cmd = Command::new(harness::python3());
    cmd.arg(harness::program_dir("tls").join("server.py"))
        .arg(port.to_string())
        .args([&cert, &key])
        .arg(&log_path);
    let mut server = Process::spawn("tls-server", cmd);
    server.wait_for_stdout_line(Duration::from_secs(20), |l| l == "ready");
    (server, port, log_path)
}

#[test]
fn openssl_python_server_spans_match_its_access_log() {
    harness::require_root();
    let _serial = harness::serial();
    let seed = harness::seed_from_env("PERISCOPE_TLS_SEED");
    let dir = TempDir::new("tls");
    let (server, port, log_path) = start_server(&dir);
    let programs = harness::program_dir("tls");

    let receiver = Receiver::start();
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".into(),
        receiver.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        Protocol::Grpc.flag().into(),
    ]);
    let out = Command::new(harness::python3())
        .arg(programs.join("client.py"))
        .arg(port.to_string())
        .arg(seed.to_string())
        .arg(EXCHANGES.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged =
        harness::parse_method_path_log(&std::fs::read_to_string(&log_path).expect("access log"));
    assert_eq!(logged.len(), EXCHANGES, "the server logged every exchange");

    let spans = settled_spans(&receiver, EXCHANGES);
    let stderr = harness::tail(&agent.output().stderr(), 4000).to_string();
    assert!(
        stderr.contains("TLS plaintext probes attached to libssl"),
        "{stderr}"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        assert_eq!(s.span.kind, 2, "SERVER spans only: {}", s.name());
        assert_eq!(
            s.attr("url.scheme").as_deref(),
            Some("https"),
            "{}",
            s.name()
        );
        let path = s.attr("url.path").expect("url.path");
        let (method, status, bytes) = logged
            .get(&path)
            .unwrap_or_else(|| panic!("span {path} has no access-log line\n{stderr}"));
        assert_eq!(
            s.attr("http.request.method").as_deref(),
            Some(method.as_str()),
            "{path}"
        );
        assert_eq!(
            s.attr("http.response.status_code"),
            Some(status.to_string()),
            "{path}"
        );
        if method != "HEAD" {
            assert_eq!(
                s.attr("http.response.body.size"),
                Some(bytes.to_string()),
                "{path}"
            );
        }
        *seen.entry(path).or_default() += 1;
    }
    let missing: Vec<&String> = logged.keys().filter(|p| !seen.contains_key(*p)).collect();
    let doubled: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(p, _)| p)
        .collect();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "seed {seed}: {} spans for {} logged; missing {missing:?}; doubled {doubled:?}\n{stderr}",
        spans.len(),
        logged.len()
    );
}

/// A traced OpenSSL client (Python's http.client over the system's libssl, TLS 1.2 and
/// 1.3, keep-alive and fresh connections) calling the traced server: one CLIENT span per
/// exchange the client made (method, path, status as the client saw them), each the
/// parent of the server's SERVER span for the same exchange.
#[test]
fn openssl_python_client_spans_join_the_server() {
    harness::require_root();
    let _serial = harness::serial();
    let seed = harness::seed_from_env("PERISCOPE_TLS_SEED");
    let dir = TempDir::new("tls-client");
    let (server, port, log_path) = start_server(&dir);
    let go = dir.path().join("go");
    let mut cmd = Command::new(harness::python3());
    cmd.arg(harness::program_dir("tls").join("client.py"))
        .arg(port.to_string())
        .arg(seed.to_string())
        .arg(EXCHANGES.to_string())
        .arg(&go);
    let mut client = Process::spawn("tls-client", cmd);
    // "ready": its libssl is loaded, no connection made yet.
    client.wait_for_stdout_line(Duration::from_secs(20), |l| l == "ready");

    let receiver = Receiver::start();
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--pid".to_string(),
        client.pid().to_string(),
        "--otlp-endpoint".into(),
        receiver.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        Protocol::Grpc.flag().into(),
    ]);
    std::fs::write(&go, "").expect("start the client");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut exited_at = None;
    let made: Vec<(String, String, String)> = loop {
        let out = client.output().stdout();
        let lines: Vec<(String, String, String)> = out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                match f[..] {
                    [m, p, s] => Some((m.to_string(), p.to_string(), s.to_string())),
                    _ => None,
                }
            })
            .collect();
        if lines.len() >= EXCHANGES {
            break lines;
        }
        // An exit is final once its output has been read (1 s after it).
        if exited_at.is_none() && client.has_exited() {
            exited_at = Some(std::time::Instant::now());
        }
        assert!(
            std::time::Instant::now() < deadline
                && exited_at.is_none_or(|t| t.elapsed() < Duration::from_secs(1)),
            "the client made {} of {EXCHANGES} exchanges\n{}",
            lines.len(),
            client.output().stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logged =
        harness::parse_method_path_log(&std::fs::read_to_string(&log_path).expect("access log"));
    assert_eq!(logged.len(), EXCHANGES, "the server logged every exchange");

    let spans = settled_spans(&receiver, 2 * EXCHANGES);
    let stderr = harness::tail(&agent.output().stderr(), 4000).to_string();
    let client_pid = client.pid().to_string();
    let mut problems = Vec::new();
    // CLIENT spans by path (every path is used once), SERVER spans by their parent.
    let mut clients: HashMap<String, &periscope_e2e::receiver::ReceivedSpan> = HashMap::new();
    let mut servers: HashMap<String, &periscope_e2e::receiver::ReceivedSpan> = HashMap::new();
    for s in &spans {
        match s.span.kind {
            3 => {
                if s.resource_attr("process.pid") != Some(client_pid.as_str()) {
                    problems.push(format!("CLIENT span from another process: {}", s.name()));
                }
                let full = s.attr("url.full").unwrap_or_default();
                let Some(path) = full
                    .strip_prefix("https://")
                    .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
                else {
                    problems.push(format!("CLIENT url.full not https: {full:?}"));
                    continue;
                };
                if clients.insert(path.clone(), s).is_some() {
                    problems.push(format!("two CLIENT spans for {path}"));
                }
            }
            2 => {
                if servers.insert(s.parent_span_id_hex(), s).is_some() {
                    problems.push(format!("two SERVER spans under one parent: {}", s.name()));
                }
            }
            k => problems.push(format!("span kind {k}: {}", s.name())),
        }
    }
    for (method, path, status) in &made {
        let Some(c) = clients.get(path) else {
            problems.push(format!("no CLIENT span for {method} {path}"));
            continue;
        };
        if c.attr("http.request.method").as_deref() != Some(method.as_str())
            || c.attr("http.response.status_code").as_deref() != Some(status.as_str())
        {
            problems.push(format!(
                "CLIENT {path}: {:?} {:?}, the client saw {method} {status}",
                c.attr("http.request.method"),
                c.attr("http.response.status_code")
            ));
        }
        match servers.get(&c.span_id_hex()) {
            Some(srv) => {
                if srv.trace_id_hex() != c.trace_id_hex()
                    || srv.attr("url.path").as_deref() != Some(path.as_str())
                {
                    problems.push(format!(
                        "SERVER child of CLIENT {path} is {:?} in trace {}",
                        srv.attr("url.path"),
                        srv.trace_id_hex()
                    ));
                }
            }
            None => problems.push(format!("CLIENT {path} has no SERVER child")),
        }
    }
    if spans.len() != 2 * EXCHANGES {
        problems.push(format!("{} spans, want {}", spans.len(), 2 * EXCHANGES));
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problem(s):\n  {}\n{stderr}",
        problems.len(),
        problems.join("\n  ")
    );
}
