//! Hostile Go targets (issue 16): a Go binary whose pclntab is corrupted, and one whose
//! build info lies about its Go version. The agent must skip the Go runtime part with
//! one clear warning line, never crash or hang, and keep tracing the process's HTTP:
//! every request the client made is one SERVER span.
//!
//! Needs root, the agent binary and Go 1.23 (`cargo xtask test` installs it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use periscope_e2e::client::{self, Request};
use periscope_e2e::harness::{self, Agent, GoFlavor, TempDir};
use periscope_e2e::receiver::{Protocol, Receiver};

const SPAN_TIMEOUT: Duration = Duration::from_secs(30);
const REQUESTS: usize = 20;

/// (file offset, size) of section `name` of an ELF64 file.
fn section(b: &[u8], name: &str) -> (usize, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(sh(shstrndx) + 0x18);
    (0..shnum)
        .find(|&i| {
            let start = strtab + u32_at(sh(i));
            b[start..].starts_with(name.as_bytes()) && b[start + name.len()] == 0
        })
        .map(|i| (u64_at(sh(i) + 0x18), u64_at(sh(i) + 0x20)))
        .unwrap_or_else(|| panic!("no section {name}"))
}

/// A copy of the stripped Go 1.23 goserver named `goserver`, changed by `patch`.
fn patched_goserver(dir: &TempDir, patch: impl Fn(&mut Vec<u8>)) -> PathBuf {
    let tc = harness::go_toolchain("1.23");
    let built = harness::build_go_program("goserver", &tc, GoFlavor::Stripped);
    let mut bytes = std::fs::read(&built).unwrap();
    patch(&mut bytes);
    let out = dir.path().join("goserver");
    std::fs::write(&out, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// Traces the server at `bin`, sends [`REQUESTS`] requests, and checks: one span per
/// request, the server alive, the agent exits cleanly, and exactly one warning line
/// about this PID, which must contain `want`. Returns that line.
fn traced_despite(bin: &Path, want: &str) -> String {
    let mut server = harness::start_go_server(bin);
    let pid = server.pid();
    let receiver = Receiver::start();
    let agent = Agent::start([
        "--pid".to_string(),
        pid.to_string(),
        "--otlp-endpoint".to_string(),
        receiver.endpoint(Protocol::Grpc),
        "--otlp-protocol".to_string(),
        "grpc".to_string(),
    ]);
    let addr: SocketAddr = server.addr;
    for i in 0..REQUESTS {
        let (status, _) = client::fetch(addr, &Request::get(&format!("/users/{i}")));
        assert_eq!(status, 200, "GET /users/{i}");
    }
    let spans = receiver.wait_for_spans(REQUESTS, SPAN_TIMEOUT);
    let exit = agent.stop();
    server.process.assert_running();
    assert!(exit.status.success(), "agent exited with {}", exit.status);
    let paths: Vec<String> = spans.iter().filter_map(|s| s.attr("url.path")).collect();
    for i in 0..REQUESTS {
        let path = format!("/users/{i}");
        assert_eq!(
            paths.iter().filter(|p| **p == path).count(),
            1,
            "spans for {path}: got paths {paths:?}\nagent stderr:\n{}",
            harness::tail(&exit.stderr, 3000)
        );
    }
    let warnings: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains("warning") && l.contains(&format!("PID {pid}")))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning line for PID {pid}; stderr:\n{}",
        harness::tail(&exit.stderr, 3000)
    );
    assert!(
        warnings[0].contains(want),
        "{:?} lacks {want:?}",
        warnings[0]
    );
    warnings[0].to_string()
}

/// `.gopclntab` corrupted where the Go runtime does not look but the agent does (the
/// runtime verifies the header magic and the order of the function table at start, so
/// a program with those broken does not run at all). Returns the patched server.
fn corrupted_pclntab(dir: &TempDir, count: bool, names: bool) -> PathBuf {
    patched_goserver(dir, |b| {
        let (off, _) = section(b, ".gopclntab");
        let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
        // pcHeader (Go 1.20+): magic, pads, minLC, ptrSize, nfunc, nfiles, textStart,
        // funcnameOffset, cuOffset, ...
        let (start, end) = (word(b, off + 0x20) as usize, word(b, off + 0x28) as usize);
        assert!(start < end, "funcnametab {start:#x}..{end:#x}");
        if names {
            for i in (off + start..off + end).step_by(7) {
                b[i] ^= 0x5a;
            }
        }
        if count {
            b[off + 8..off + 16].copy_from_slice(&(1u64 << 62).to_le_bytes());
        }
    })
}

/// The header's function count set to 2^62: not believed, one line, HTTP spans still
/// come.
#[test]
fn corrupted_pclntab_function_count_skips_go_runtime_keeps_http() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let dir = TempDir::new("hostile-pclntab-count");
    let bin = corrupted_pclntab(&dir, true, false);
    let line = traced_despite(&bin, "Go runtime");
    eprintln!("corrupted pclntab function count: {line}");
}

/// Every 7th byte of the function-name table flipped: the runtime functions the probes
/// need cannot be found by name; one line, HTTP spans still come.
#[test]
fn corrupted_pclntab_function_names_skips_go_runtime_keeps_http() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let dir = TempDir::new("hostile-pclntab-names");
    let bin = corrupted_pclntab(&dir, false, true);
    let line = traced_despite(&bin, "Go runtime");
    eprintln!("corrupted pclntab function names: {line}");
}

/// Build info of a Go 1.23 binary patched to claim Go 1.21, whose struct offsets
/// differ (g.goid moved by 8 bytes in 1.23): without DWARF the agent would read
/// goroutines with the wrong offsets; the allgs walk finds them implausible and the
/// runtime part is off, with one line.
#[test]
fn lying_build_info_skips_go_runtime_keeps_http() {
    harness::require_root();
    let _serial = harness::serial();
    harness::agent_bin();
    let dir = TempDir::new("hostile-buildinfo");
    let bin = patched_goserver(&dir, |b| {
        let (off, size) = section(b, ".go.buildinfo");
        let info = &mut b[off..off + size];
        let at = info
            .windows(7)
            .position(|w| w == b"go1.23.")
            .expect("go1.23. in .go.buildinfo");
        info[at + 5] = b'1';
    });
    let line = traced_despite(&bin, "Go runtime metrics off");
    eprintln!("lying build info: {line}");
}
