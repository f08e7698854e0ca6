//! The kernel's socket classifier on real traffic (issue 12), and garbage on traced
//! sockets never costing the spans of the good traffic after it (issue 16).
//!
//! Truth the agent did not write: the bytes the clients themselves sent and received on
//! each non-HTTP socket, and the requests they made.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use periscope_e2e::{
    client::{self, Batch, ConnMode, Request, run_batch},
    harness::{self, Agent, Process, TempDir},
    receiver::{Protocol, Receiver},
};

/// Value of `name{class="class"}` (or bare `name` when `class` is empty) in an exposition.
fn metric(text: &str, name: &str, class: &str) -> Option<f64> {
    let want = if class.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{class=\"{class}\"}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&want)?.trim().parse().ok())
}

fn scrape(addr: SocketAddr) -> String {
    let (status, body) = client::fetch(addr, &Request::get("/metrics"));
    assert_eq!(status, 200, "GET /metrics on {addr}");
    String::from_utf8_lossy(&body).into_owned()
}

/// Scrapes until `done` holds (the agent publishes its counters on a tick) or 20 s pass.
fn scrape_until(addr: SocketAddr, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(addr);
        if done(&text) || start.elapsed() > Duration::from_secs(20) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deterministic noise whose first byte (0x00) is no protocol's.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    v[0] = 0;
    v
}

/// Writes `out`, reads until `want` bytes came back; returns the bytes moved both ways.
fn exchange(addr: SocketAddr, out: &[u8], want: usize) -> u64 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(out).expect("write");
    let mut got = vec![0u8; want];
    s.read_exact(&mut got).expect("read the reply");
    (out.len() + want) as u64
}

/// TLS clients (an untraced python): `n` connections, each a handshake and one echoed
/// 1000-byte message. Prints the plaintext bytes moved.
const TLS_CLIENT: &str = r#"
import socket, ssl, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
moved = 0
for i in range(n):
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            msg = b"secret %d " % i * 100
            t.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += t.recv(65536)
            moved += len(msg) + len(got)
print(moved)
"#;

/// Issue 12: a traced process speaking HTTP/1, TLS, Redis RESP and random bytes sends
/// no payload of the non-HTTP sockets to userspace, and its HTTP requests all become
/// exactly right spans.
#[test]
fn non_http_sockets_send_no_payload() {
    harness::require_root();
    let _serial = harness::serial();
    const N: usize = 20;
    let dir = TempDir::new("classify");
    let (cert, key) = harness::self_signed_cert(&dir);
    let ports: Vec<u16> = (0..4).map(|_| harness::free_port()).collect();
    let script = harness::program_dir("classify").join("server.py");
    let mut cmd = Command::new(harness::python3());
    cmd.arg(&script);
    for p in &ports {
        cmd.arg(p.to_string());
    }
    cmd.args([&cert, &key]);
    let mut server = Process::spawn("classify-server", cmd);
    server.wait_for_stdout_line(Duration::from_secs(20), |l| l == "ready");
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));

    let receiver = Receiver::start();
    let metrics_port = harness::free_port();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let agent = Agent::start([
        "--pid".to_string(),
        server.pid().to_string(),
        "--otlp-endpoint".into(),
        receiver.endpoint(Protocol::Grpc),
        "--otlp-protocol".into(),
        Protocol::Grpc.flag().into(),
        "--prometheus".into(),
        metrics_addr.to_string(),
    ]);
    // Each listener thread was already blocked in accept when the agent attached: that
    // connection is adopted on first use, and an adopted socket may have been joined
    // mid-stream, so the kernel defers to the agent's parser on it. One warm-up
    // connection per port takes those; the counters start after them.
    exchange(addr(2), b"*1\r\n$4\r\nPING\r\n", 7);
    exchange(addr(3), &noise(99, 10), 10);
    client::fetch(addr(0), &Request::get("/warm-up"));
    let warm = Command::new(harness::python3())
        .args(["-c", TLS_CLIENT, &ports[1].to_string(), "1"])
        .output()
        .expect("python3");
    assert!(warm.status.success(), "TLS warm-up");
    let classified = |t: &str| -> f64 {
        ["http1", "http2", "tls", "unknown", "deferred"]
            .iter()
            .map(|c| metric(t, "periscope_sockets_classified_total", c).unwrap_or(0.0))
            .sum()
    };
    let before = scrape_until(metrics_addr, |t| classified(t) >= 4.0);
    let base = |name: &str, class: &str| metric(&before, name, class).unwrap_or(0.0);

    let mut plain_moved = 0u64;
    for i in 0..N {
        plain_moved += exchange(addr(2), b"*1\r\n$4\r\nPING\r\n", 7);
        let junk = noise(i as u64 + 1, 1000);
        plain_moved += exchange(addr(3), &junk, junk.len());
    }
    let out = Command::new(harness::python3())
        .args(["-c", TLS_CLIENT, &ports[1].to_string(), &N.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "TLS client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tls_plain: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("bytes");
    let batch = Batch {
        mode: ConnMode::Fresh,
        requests: (0..N)
            .map(|i| Request::get(&format!("/classify/{i}")).expect(200))
            .collect(),
    };
    let sent = run_batch(addr(0), &batch);
    assert_eq!(sent.len(), N);

    let spans = receiver.wait_for_spans(N + 1, Duration::from_secs(20));
    let text = scrape_until(metrics_addr, |t| {
        classified(t) >= classified(&before) + 4.0 * N as f64
    });
    let delta =
        |name: &str, class: &str| metric(&text, name, class).unwrap_or(0.0) - base(name, class);
    let stderr = harness::tail(&agent.output().stderr(), 3000).to_string();
    assert_eq!(
        delta("periscope_sockets_classified_total", "tls"),
        N as f64,
        "{text}"
    );
    assert_eq!(
        delta("periscope_sockets_classified_total", "unknown"),
        2.0 * N as f64,
        "Redis and random-byte sockets\n{text}"
    );
    assert!(
        delta("periscope_sockets_classified_total", "http1") >= N as f64,
        "{text}"
    );
    assert_eq!(
        delta("periscope_sockets_classified_total", "deferred"),
        0.0,
        "{text}"
    );
    for class in ["tls", "unknown", "muted", "deferred"] {
        assert_eq!(
            delta("periscope_payload_bytes_received_total", class),
            0.0,
            "payload bytes of {class} sockets reached the agent\n{text}"
        );
    }
    // Ciphertext is at least as long as the plaintext it carries.
    let suppressed = delta("periscope_payload_bytes_suppressed_total", "");
    assert!(
        suppressed >= (plain_moved + tls_plain) as f64,
        "suppressed {suppressed} < {plain_moved} plain + {tls_plain} TLS plaintext bytes\n{text}"
    );

    let mut paths: HashMap<String, usize> = HashMap::new();
    for s in &spans {
        assert_eq!(
            s.attr("http.request.method").as_deref(),
            Some("GET"),
            "{stderr}"
        );
        assert_eq!(
            s.attr("http.response.status_code").as_deref(),
            Some("200"),
            "{stderr}"
        );
        *paths
            .entry(s.attr("url.path").unwrap_or_default())
            .or_default() += 1;
    }
    let mut want: HashMap<String, usize> = (0..N).map(|i| (format!("/classify/{i}"), 1)).collect();
    want.insert("/warm-up".into(), 1);
    assert_eq!(paths, want, "one right span per request\n{stderr}");
    drop(agent);
}

/// A ClientHello as `openssl s_client` starts one (record header, handshake header, the
/// start of its body), padded.
fn client_hello() -> Vec<u8> {
    let mut v = vec![
        0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
    ];
    v.extend(noise(7, 245).iter().skip(1));
    v
}

/// Issue 16: random bytes, a TLS ClientHello, an HTTP/2 preface and a 64 KiB request
/// line sent to traced nginx and python servers cost some of the spans of the 100
/// ordinary requests sent right after. Each garbage connection is written, then read
/// until the server closes or a short timeout.
#[test]
fn garbage_before_good_traffic_costs_no_spans() {
    harness::require_root();
    let _serial = harness::serial();
    const ROUNDS: usize = 40;
    for (name, server) in [
        ("nginx", harness::start_nginx()),
        ("python", harness::start_python_http_server()),
    ] {
        let receiver = Receiver::start();
        let agent = Agent::start([
            "--pid".to_string(),
            server.pid().to_string(),
            "--otlp-endpoint".into(),
            receiver.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            Protocol::Grpc.flag().into(),
        ]);
        let mut long_line = b"GET /".to_vec();
        long_line.extend(std::iter::repeat_n(b'a', 64 * 1024));
        long_line.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        let garbage: Vec<Vec<u8>> = vec![
            noise(3, 512),
            client_hello(),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
            long_line,
        ];
        for _ in 0..ROUNDS {
            for g in &garbage {
                let Ok(mut s) = TcpStream::connect(server.addr) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                let _ = s.write_all(g);
                let mut sink = [0u8; 4096];
                while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            }
        }
        let batch = Batch {
            mode: ConnMode::Fresh,
            requests: (0..100)
                .map(|i| Request::get(&format!("/good/{i}")).expect(404))
                .collect(),
        };
        let sent = run_batch(server.addr, &batch);
        assert_eq!(sent.len(), 100);
        let spans = receiver.wait_for_spans(100, Duration::from_secs(30));
        let good: Vec<_> = spans
            .iter()
            .filter(|s| s.attr("url.path").is_some_and(|p| p.starts_with("/good/")))
            .collect();
        let mut paths: Vec<String> = good.iter().filter_map(|s| s.attr("url.path")).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(
            (good.len(), paths.len()),
            (100, 100),
            "{name}: every ordinary request after the garbage is one span; missing {:?}\nagent stderr:\n{}",
            (0..100)
                .map(|i| format!("/good/{i}"))
                .filter(|p| paths.binary_search(p).is_err())
                .collect::<Vec<_>>(),
            harness::tail(&agent.output().stderr(), 3000)
        );
        assert!(
            good.iter()
                .all(|s| s.attr("http.response.status_code").as_deref() == Some("404")),
            "{name}: statuses"
        );
        drop(agent);
    }
}
