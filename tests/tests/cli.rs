//! How the real agent behaves at its edges: bad input gets one clear line and a non-zero
//! exit; a backend that is down costs spans (counted) but never the run; a target that
//! exits ends the run cleanly.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_batch},
    harness::{self, Agent, agent_bin, start_python_http_server},
};

fn run_agent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("run periscope")
}

/// The error output is exactly one line starting with `periscope: error:`.
fn one_error_line(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got {}",
        out.status
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("periscope: error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn missing_pid_is_one_clear_line() {
    harness::require_root();
    let line = one_error_line(&run_agent(&["--pid", "999999999"]));
    assert!(line.contains("no process with PID 999999999"), "{line}");
}

#[test]
fn bad_flag_values_are_one_clear_line() {
    harness::require_root();
    let me = std::process::id().to_string();
    let line = one_error_line(&run_agent(&[
        "--pid",
        &me,
        "--otlp-protocol",
        "carrier-pigeon",
        "--otlp-endpoint",
        "http://127.0.0.1:4317",
    ]));
    assert!(line.contains("carrier-pigeon"), "{line}");
    // https:// is accepted (tests/otlp_tls.rs); other schemes, and half an mTLS identity,
    // are configuration mistakes found before anything is read or sent.
    let line = one_error_line(&run_agent(&[
        "--pid",
        &me,
        "--otlp-endpoint",
        "ftp://collector:4317",
    ]));
    assert!(line.contains("http:// or https://"), "{line}");
    let line = one_error_line(&run_agent(&[
        "--pid",
        &me,
        "--otlp-endpoint",
        "https://collector:4317",
        "--otlp-client-key",
        "/etc/otlp/client.key",
    ]));
    assert!(
        line.contains("--otlp-client-key") && line.contains("client certificate"),
        "{line}"
    );
    let line = one_error_line(&run_agent(&[
        "--pid",
        &me,
        "--prometheus",
        "not-an-address",
    ]));
    assert!(line.contains("--prometheus"), "{line}");
    let line = one_error_line(&run_agent(&["--pid", &me, "--route", "users/{id}"]));
    assert!(line.contains("users/{id}"), "{line}");
    // clap's own errors for unknown flags.
    let out = run_agent(&["--pid", &me, "--frobnicate"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));
}

#[test]
fn unprivileged_run_says_what_is_missing() {
    harness::require_root();
    let server = start_python_http_server();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(agent_bin())
        .args(["--pid", &server.pid().to_string()])
        .output()
        .expect("setpriv");
    let line = one_error_line(&out);
    assert!(
        line.contains("permission denied") && line.contains("root"),
        "{line}"
    );
}

#[test]
fn backend_down_holds_spans_counts_drops_at_exit_and_keeps_running() {
    harness::require_root();
    let _serial = harness::serial();
    let server = start_python_http_server();
    // Nothing listens on port 1: every export fails.
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".into(),
        "http://127.0.0.1:1".into(),
        "--otlp-protocol".into(),
        "http/protobuf".into(),
        "--status-interval".into(),
        "1".into(),
    ]);
    let batch = Batch {
        mode: ConnMode::Fresh,
        requests: (0..20).map(|_| Request::get("/").expect(200)).collect(),
    };
    run_batch(server.addr, &batch);
    // The exporter holds the spans (they fit in its queue) and says so once, while the
    // agent keeps running; what is still unsent at exit is counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = agent.output().stderr();
        if stderr.contains("holding spans and retrying until the backend recovers") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no outage warning in:\n{}",
            harness::tail(&stderr, 4000)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);
    let last = exit.stderr.lines().last().unwrap_or_default().to_string();
    assert!(
        last.contains("spans=20") && last.contains("otlp_exported=0 otlp_dropped=20"),
        "{}",
        exit.stderr
    );
}

#[test]
fn target_exit_flushes_and_exits_zero() {
    harness::require_root();
    let _serial = harness::serial();
    let server = start_python_http_server();
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--console".into(),
        "json".into(),
        "--resource-attribute".into(),
        "deployment.environment.name=staging".into(),
    ]);
    let batch = Batch {
        mode: ConnMode::KeepAlive,
        requests: (0..5).map(|_| Request::get("/").expect(200)).collect(),
    };
    run_batch(server.addr, &batch);
    drop(server); // kills the target
    let exit = agent.wait_exit();
    assert!(exit.status.success(), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("every traced process exited"),
        "{}",
        exit.stderr
    );
    assert_eq!(
        exit.stdout
            .lines()
            .filter(|l| l.contains("\"kind\":\"SERVER\""))
            .count(),
        5
    );
    // Resource attributes given as flags reach every span's resource.
    assert!(
        exit.stdout
            .lines()
            .all(|l| l.contains("\"deployment.environment.name\":\"staging\"")),
        "{}",
        exit.stdout
    );
}

#[test]
fn config_file_keys_and_precedence() {
    harness::require_root();
    let dir = harness::TempDir::new("config");
    let me = std::process::id().to_string();
    // Unknown keys are named.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "otlp-endpiont = \"http://127.0.0.1:4317\"\n").unwrap();
    let line = one_error_line(&run_agent(&[
        "--config",
        bad.to_str().unwrap(),
        "--pid",
        &me,
    ]));
    assert!(
        line.contains("otlp-endpiont") && line.contains("bad.toml"),
        "{line}"
    );
    // A file value is used when neither flag nor env sets it...
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        "otlp-endpoint = \"http://127.0.0.1:4317\"\notlp-protocol = \"from-file\"\n",
    )
    .unwrap();
    let line = one_error_line(&run_agent(&[
        "--config",
        file.to_str().unwrap(),
        "--pid",
        &me,
    ]));
    assert!(line.contains("from-file"), "{line}");
    // ... the env var beats the file ...
    let out = Command::new(agent_bin())
        .args(["--config", file.to_str().unwrap(), "--pid", &me])
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "from-env")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("from-env"), "{line}");
    // ... and the flag beats both.
    let out = Command::new(agent_bin())
        .args([
            "--config",
            file.to_str().unwrap(),
            "--otlp-protocol",
            "from-flag",
            "--pid",
            &me,
        ])
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "from-env")
        .output()
        .unwrap();
    let line = one_error_line(&out);
    assert!(line.contains("from-flag"), "{line}");
}
