//! `periscope doctor`: can Periscope trace on this host, and if not, what to do.
//!
//! Files such as kernel configs only hint at what works; the doctor proves it. It
//! gathers facts (kernel, BTF, tracefs, bpffs, lockdown, capabilities, sysctls, limits,
//! PID namespace), then loads tiny programs of every probe kind with raw `bpf(2)` calls,
//! attaches them, triggers them and reads back how often they ran, and finally loads the
//! agent's own embedded programs. Every check is `ok`, `info`, `warn` or `fail`; every
//! `warn`/`fail` carries one line saying what to do.
//!
//! Split by role: [`parse`] (text the kernel gives us), [`facts`] (reading the host; the
//! only side effects), [`probe`] (experiments), [`assess`] (pure verdicts), `sys` (the
//! system calls: this module's only `unsafe`).
//!
//! Exit status: 0 when every *required* check passes (ring buffer, tracepoints, uprobes,
//! privileges, tracefs mounted or mountable, kernel >= 5.8, lockdown not
//! confidentiality, the agent's programs, and those programs capturing a loopback HTTP
//! exchange the doctor makes itself), 1 otherwise. Optional kinds (kprobe, fentry,
//! tp_btf, raw tracepoint, uretprobe) and hints (bpffs, PID namespace) only warn.

pub mod assess;
pub mod facts;
pub mod parse;
pub mod probe;
mod sys;

use std::io::{self, Write};

use serde::Serialize;

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// For the record; nothing to do either way.
    Info,
    /// Works, but something is missing or unknown; `fix` says what to do.
    Warn,
    /// Periscope cannot work until this is fixed; `fix` says how.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier ("kernel", "tracefs", "uprobe", ...).
    pub id: &'static str,
    pub status: Status,
    /// Whether Periscope needs this to work (only required checks ever fail).
    pub required: bool,
    /// What was found.
    pub detail: String,
    /// What to do; set exactly when the status is warn or fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Everything the doctor found.
#[derive(Clone, Debug, Serialize)]
pub struct DoctorReport {
    /// True when every required check passed.
    pub ready: bool,
    pub kernel: String,
    pub checks: Vec<Check>,
}

impl DoctorReport {
    fn new(kernel: String, checks: Vec<Check>) -> Self {
        let ready = checks.iter().all(|c| c.status != Status::Fail);
        Self {
            ready,
            kernel,
            checks,
        }
    }

    /// 0 when ready, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.ready { 0 } else { 1 }
    }

    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// The report as a table, one row per check, a `->` line under each warn/fail.
    pub fn write_table(&self, out: &mut dyn Write) -> io::Result<()> {
        let id = self
            .checks
            .iter()
            .map(|c| c.id.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let pad = id + 1 + 8 + 1 + 4;
        writeln!(out, "periscope doctor — kernel {}", self.kernel)?;
        writeln!(out)?;
        writeln!(out, "{:<id$} {:<8} {:<4} RESULT", "CHECK", "NEEDED", "")?;
        for c in &self.checks {
            let need = if c.required { "required" } else { "optional" };
            writeln!(
                out,
                "{:<id$} {need:<8} {:<4} {}",
                c.id,
                c.status.label(),
                c.detail
            )?;
            if let Some(fix) = &c.fix {
                writeln!(out, "{:<pad$} -> {fix}", "")?;
            }
        }
        writeln!(out)?;
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let (fails, warns) = (count(Status::Fail), count(Status::Warn));
        if self.ready {
            writeln!(
                out,
                "ready: every required check passed ({warns} warning{})",
                if warns == 1 { "" } else { "s" }
            )
        } else {
            writeln!(
                out,
                "NOT ready: {fails} required check{} failed ({warns} warning{}); fix the FAIL rows",
                if fails == 1 { "" } else { "s" },
                if warns == 1 { "" } else { "s" }
            )
        }
    }
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// What the doctor may do.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub format: Format,
    /// Mount tracefs when missing (left mounted: the agent needs it) and securityfs just
    /// long enough to read the lockdown mode. Needs CAP_SYS_ADMIN; default true.
    pub mount: bool,
    /// Load and attach the agent's own embedded programs; default true.
    pub agent_programs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Table,
            mount: true,
            agent_programs: true,
        }
    }
}

/// Runs every check without printing anything.
pub fn diagnose(opts: &Options) -> DoctorReport {
    let f = facts::gather(opts.mount);
    let mut checks = assess::environment(&f);
    let env = probe::Env {
        tracefs: f.tracefs.path(),
        btf_present: f.btf_bytes.is_some(),
        kernel: f.kernel,
    };
    for (kind, outcome) in probe::run_all(&env) {
        checks.push(assess::probe(kind, &outcome, &f));
    }
    checks.push(assess::probe_write_user(&f));
    if opts.agent_programs {
        // The agent's loader mounts tracefs itself; respect `mount: false`.
        let result = if f.tracefs.path().is_none() && !opts.mount {
            Err(None)
        } else {
            probe::agent_programs().map_err(Some)
        };
        let capture = result.as_ref().ok().map(|r| r.capture.clone());
        checks.push(assess::agent_programs(&result.map(|r| r.report)));
        checks.push(assess::capture(capture.as_ref()));
    }
    DoctorReport::new(format!("{} ({})", f.release, f.machine), checks)
}

/// `periscope doctor`: runs every check, prints the report to `out` in `opts.format`,
/// and returns it; the process should exit with [`DoctorReport::exit_code`].
pub fn run(out: &mut dyn Write, opts: &Options) -> io::Result<DoctorReport> {
    let report = diagnose(opts);
    match opts.format {
        Format::Table => report.write_table(out)?,
        Format::Json => writeln!(out, "{}", report.to_json())?,
    }
    out.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DoctorReport {
        DoctorReport::new(
            "6.18.44 (x86_64)".into(),
            vec![
                Check {
                    id: "kernel",
                    status: Status::Ok,
                    required: true,
                    detail: "fine".into(),
                    fix: None,
                },
                Check {
                    id: "kprobe",
                    status: Status::Warn,
                    required: false,
                    detail: "no PMU".into(),
                    fix: Some("nothing to do".into()),
                },
            ],
        )
    }

    #[test]
    fn table_and_exit_code() {
        let r = sample();
        assert!(r.ready);
        assert_eq!(r.exit_code(), 0);
        let mut out = Vec::new();
        r.write_table(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("kprobe optional WARN no PMU"), "{text}");
        assert!(text.contains("kernel required ok   fine"), "{text}");
        assert!(text.contains("-> nothing to do"), "{text}");
        assert!(text.contains("ready: every required check passed (1 warning)"));

        let mut failing = sample();
        failing.checks[0].status = Status::Fail;
        failing.checks[0].fix = Some("upgrade".into());
        let failing = DoctorReport::new(failing.kernel, failing.checks);
        assert!(!failing.ready);
        assert_eq!(failing.exit_code(), 1);
        let mut out = Vec::new();
        failing.write_table(&mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("NOT ready: 1 required check failed")
        );
    }

    #[test]
    fn json_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["checks"][0]["id"], "kernel");
        assert_eq!(v["checks"][0]["status"], "ok");
        assert!(v["checks"][0].get("fix").is_none());
        assert_eq!(v["checks"][1]["status"], "warn");
        assert_eq!(v["checks"][1]["required"], false);
        assert_eq!(v["checks"][1]["fix"], "nothing to do");
    }
}
