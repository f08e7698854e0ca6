//! Faults production throws at the agent, with the real agent and a real receiver: the OTLP
//! backend going away and coming back. What is asserted is accounting, not timing: every
//! span is either delivered exactly once or counted as dropped, and nothing that fit in
//! the queue is lost.

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{Batch, ConnMode, Request, run_batch},
    harness::{self, Agent, start_python_http_server},
    receiver::{Protocol, Receiver},
};

fn requests(prefix: &str, n: usize) -> Batch {
    Batch {
        mode: ConnMode::Fresh,
        requests: (0..n)
            .map(|i| Request::get(&format!("/{prefix}/{i}")).expect(404))
            .collect(),
    }
}

/// `key=value` from the last status line that has it.
fn status_value(stderr: &str, key: &str) -> Option<u64> {
    stderr.lines().rev().find_map(|l| {
        l.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    })
}

/// Issue 16: with the backend down for a while, the spans of the requests sent 2 s after it
/// came back were dropped too, and export resumed only ~30 s later. Now the queue holds
/// the outage (it is far from full here), and every span is delivered exactly once.
#[test]
fn backend_restart_delivers_queued_and_new_spans() {
    harness::require_root();
    let _serial = harness::serial();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let receiver = Receiver::start();
        let (grpc_port, http_port) = receiver.ports();
        let server = start_python_http_server();
        let agent = Agent::start_with_env(
            [
                "--pid".to_string(),
                server.pid().to_string(),
                "--otlp-endpoint".into(),
                receiver.endpoint(protocol),
                "--otlp-protocol".into(),
                protocol.flag().into(),
                "--status-interval".into(),
                "1".into(),
            ],
            &[
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_METRICS_EXPORTER", "none"),
            ],
        );
        run_batch(server.addr, &requests("before", 20));
        let got = receiver.wait_for_spans(20, Duration::from_secs(20));
        assert_eq!(got.len(), 20, "{protocol:?}: spans before the outage");

        // The backend goes away: its ports are closed, its connections reset.
        drop(receiver);
        let down = Instant::now();
        for i in 0..6 {
            run_batch(server.addr, &requests(&format!("during{i}"), 5));
            thread::sleep(Duration::from_millis(500));
        }
        // Long enough for the exporter to have given up on quick retries.
        while down.elapsed() < Duration::from_secs(6) {
            thread::sleep(Duration::from_millis(100));
        }
        let receiver = Receiver::start_on(grpc_port, http_port);
        thread::sleep(Duration::from_secs(2));
        run_batch(server.addr, &requests("after", 100));

        let spans = receiver.wait_for_spans(130, Duration::from_secs(30));
        let mut seen: HashMap<String, usize> = HashMap::new();
        for s in &spans {
            *seen
                .entry(s.attr("url.path").unwrap_or_default())
                .or_default() += 1;
        }
        let during = seen.keys().filter(|p| p.starts_with("/during")).count();
        let after = seen.keys().filter(|p| p.starts_with("/after/")).count();
        let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert_eq!(
            (during, after, dup.len()),
            (30, 100, 0),
            "{protocol:?}: spans sent during the outage and after recovery, each once ({} received; duplicates {dup:?})\nagent stderr:\n{}",
            spans.len(),
            harness::tail(&agent.output().stderr(), 4000)
        );
        let exit = agent.stop();
        assert!(exit.status.success(), "{}", exit.stderr);
        assert_eq!(
            status_value(&exit.stderr, "otlp_dropped"),
            Some(0),
            "{protocol:?}: nothing dropped\n{}",
            harness::tail(&exit.stderr, 2000)
        );
        assert!(
            exit.stderr.contains("recovered"),
            "{protocol:?}: the outage's end is logged\n{}",
            harness::tail(&exit.stderr, 2000)
        );
    }
}
