//! HTTPS through OpenSSL (issue 13, first slice): a threaded Python server using the
//! system's libssl gets exactly one right span per request, with `url.scheme=https`,
//! checked against the server's own access log. The client is a seeded mix of methods,
//! statuses, bodies up to 70 KB, TLS 1.2 and 1.3, keep-alive and fresh connections.
//!
//! Needs root, python3 and openssl. Run the seed again with `PERISCOPE_TLS_SEED=<seed>`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use periscope_e2e::harness::{self, Agent, Process, TempDir};
use periscope_e2e::receiver::{Protocol, Receiver};

const EXCHANGES: usize = 120;

fn seed() -> u64 {
    std::env::var("PERISCOPE_TLS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        })
}

#[test]
fn openssl_python_server_spans_match_its_access_log() {
    harness::require_root();
    let _serial = harness::serial();
    let seed = seed();
    eprintln!("PERISCOPE_TLS_SEED={seed}");
    let dir = TempDir::new("tls");
    let (cert, key) = harness::self_signed_cert(&dir);
    let log_path = dir.path().join("access.log");
    let port = harness::free_port();
    let programs = harness::program_dir("tls");
    let mut cmd = Command::new(harness::python3());
    cmd.arg(programs.join("server.py"))
        .arg(port.to_string())
        .args([&cert, &key])
        .arg(&log_path);
    let mut server = Process::spawn("tls-server", cmd);
    server.wait_for_stdout_line(Duration::from_secs(20), |l| l == "ready");

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

    let spans = receiver.wait_for_spans(EXCHANGES, Duration::from_secs(30));
    // Anything extra would arrive with the ones waited for; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let spans = {
        let more = receiver.spans();
        if more.len() > spans.len() {
            more
        } else {
            spans
        }
    };
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
