//! Build, test, bench and demo orchestration: `cargo xtask <command>`.

mod bench;
mod build;
mod demo;
mod fuzz;
mod gooffsets;
mod kernels;
mod test;
mod tools;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Periscope's build, test, bench and demo tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the eBPF object and the agent (installs missing toolchain pieces).
    Build,
    /// Unit tests, then the end-to-end suite as root against real servers.
    Test {
        /// Only run end-to-end tests whose name contains this.
        filter: Option<String>,
    },
    /// Boot Debian's 6.1 and 6.12 cloud kernels under qemu and check the agent traces
    /// real servers there (doctor, exact spans, Go runtime probes).
    Kernels {
        /// Only kernels whose label ("6.1", "6.12") contains this.
        filter: Option<String>,
    },
    /// Start a sample Go service with traffic, attach, and print spans.
    Demo,
    /// Overhead of tracing under wrk, with/without the agent, side by side.
    Bench,
    /// Build the libFuzzer targets in fuzz/ and run each from its seed corpus.
    Fuzz {
        /// Seconds per target (default 60).
        #[arg(long, conflicts_with = "runs")]
        seconds: Option<u64>,
        /// Executions per target instead of a time budget.
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Regenerate agent/src/runtime/gobin/offsets.rs from the DWARF of every installed
    /// Go toolchain (.tools/go/*, /usr/lib/go-1.*).
    GoOffsets,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Build => {
            let bin = build::build_all()?;
            eprintln!("xtask: built {}", bin.display());
        }
        Cmd::Test { filter } => test::test(filter)?,
        Cmd::Kernels { filter } => kernels::kernels(filter.as_deref())?,
        Cmd::Demo => demo::demo()?,
        Cmd::Bench => bench::bench()?,
        Cmd::Fuzz { seconds, runs } => fuzz::fuzz(match runs {
            Some(n) => fuzz::Budget::Runs(n),
            None => fuzz::Budget::Seconds(seconds.unwrap_or(60)),
        })?,
        Cmd::GoOffsets => {
            let root = tools::repo_root();
            tools::go_toolchains(test::GO_VERSIONS)?;
            let src = gooffsets::generate(&gooffsets::default_toolchains(&root))?;
            std::fs::write(root.join(gooffsets::OUTPUT), src)?;
            eprintln!("xtask: wrote {}", gooffsets::OUTPUT);
        }
    }
    Ok(())
}
