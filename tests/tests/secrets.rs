//! Secrets never leave the agent: an audit over everything it exports at once — OTLP
//! spans, metrics and logs, the Prometheus endpoint (OpenMetrics with exemplars) and the
//! console — for requests that carry credentials everywhere HTTP lets them ride.
//!
//! Each secret is a unique marker; the test fails if any marker shows up in any output,
//! and also if the requests did not produce their spans (an audit of nothing proves
//! nothing). gRPC metadata is not covered: the agent does not decode HTTP/2 yet.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use periscope_e2e::{
    harness::{
        self, Agent, GoFlavor, build_go_program, free_port, go_toolchain, python3, start_announced,
        start_goproxy,
    },
    receiver::{Protocol, Receiver},
};

const MARKER: &str = "SeCrEt";

/// A backend that answers every request with a cookie and a body that are both secret.
const BACKEND: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        body = b"response body SeCrEt-respbody"
        self.send_response(200)
        self.send_header("Set-Cookie", "sid=SeCrEt-setcookie; HttpOnly")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print("listening on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
"#;

/// Raw requests (HTTP/1.1, one connection each) carrying secrets in every place.
fn requests(host: &str) -> Vec<String> {
    vec![
        format!(
            "GET /a?token={MARKER}-query1&page=2 HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {MARKER}-authz\r\nConnection: close\r\n\r\n"
        ),
        format!(
            "GET /b HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {MARKER}-proxyauthz\r\nCookie: session={MARKER}-cookie; theme=dark\r\nConnection: close\r\n\r\n"
        ),
        {
            let body = format!("{{\"password\":\"{MARKER}-body\"}}");
            format!(
                "POST /c?{MARKER}-querykey HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        },
        // Absolute form, as sent to a proxy, with credentials in the authority.
        format!(
            "GET http://user:{MARKER}-userinfo@{host}/d?x={MARKER}-query2 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ),
    ]
}

fn exchange(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn scrape(addr: SocketAddr) -> String {
    exchange(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    )
}

#[test]
fn no_secret_in_any_output() {
    harness::require_root();
    let _serial = harness::serial();
    let receiver = Receiver::start();
    let dir = harness::TempDir::new("secrets");
    let script = dir.path().join("backend.py");
    std::fs::write(&script, BACKEND).unwrap();
    let mut cmd = Command::new(python3());
    cmd.arg("-u").arg(&script);
    let backend = start_announced("secret-backend", cmd);
    let proxy_bin = build_go_program("goproxy", &go_toolchain("1.25"), GoFlavor::Plain);
    let proxy = start_goproxy(&proxy_bin, backend.addr);
    let prom = free_port();
    let agent = Agent::start_with_env(
        [
            "--pid".to_string(),
            proxy.pid().to_string(),
            "--pid".into(),
            backend.pid().to_string(),
            "--otlp-endpoint".into(),
            receiver.endpoint(Protocol::Grpc),
            "--otlp-protocol".into(),
            Protocol::Grpc.flag().into(),
            "--prometheus".into(),
            prom.to_string(),
            "--console".into(),
            "json".into(),
        ],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ],
    );
    let reqs = requests(&proxy.addr.to_string());
    for r in &reqs {
        let answer = exchange(proxy.addr, r);
        assert!(
            answer.contains("SeCrEt-respbody"),
            "the secrets really went through: {answer}"
        );
    }
    // Each request: a SERVER span in the proxy, its CLIENT span, the backend's SERVER span.
    let spans = receiver.wait_for_spans(3 * reqs.len(), Duration::from_secs(20));
    assert_eq!(spans.len(), 3 * reqs.len(), "every span arrived");
    receiver.wait_for_metrics(2, Duration::from_secs(20));
    let prom_text = scrape(SocketAddr::from(([127, 0, 0, 1], prom)));
    assert!(
        prom_text.contains("http_server_request_duration_seconds"),
        "{prom_text}"
    );
    let exit = agent.stop();
    assert!(exit.status.success(), "{}", exit.stderr);

    let outputs = [
        ("OTLP spans", format!("{:?}", receiver.spans())),
        ("OTLP metrics", format!("{:?}", receiver.metrics())),
        ("OTLP logs", format!("{:?}", receiver.logs())),
        ("Prometheus", prom_text),
        ("console", exit.stdout.clone()),
        ("agent log", exit.stderr.clone()),
    ];
    for (what, text) in &outputs {
        if let Some(at) = text.find(MARKER) {
            let from = at.saturating_sub(200);
            panic!(
                "a secret leaked into the {what}: …{}…",
                &text[from..(at + 100).min(text.len())]
            );
        }
    }
    // Redaction keeps the shape: query keys stay, values go.
    let queries: Vec<String> = spans.iter().filter_map(|s| s.attr("url.query")).collect();
    assert!(
        queries.iter().any(|q| q == "token=REDACTED&page=REDACTED"),
        "{queries:?}"
    );
    assert!(
        exit.stdout.lines().count() >= 3 * reqs.len(),
        "console spans:\n{}",
        exit.stdout
    );
}
