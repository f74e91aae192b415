//! Project tasks: set-up of a fresh machine, the full test run (kernel tests as root, then
//! the end-to-end tests against a real kube-apiserver), the demo, benchmarks and generated
//! files. The normal build is plain `cargo build`.
mod bench;
mod demo;
mod e2e;
mod fuzz;
mod generate;
mod lint;
mod setup;
mod shell;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the project needs on this machine (idempotent; seconds when done).
    Setup,
    /// Run every test, the kernel tests included (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// End-to-end tests against a real kube-apiserver on loopback (built once, cached in
    /// target/). Needs root.
    E2e {
        /// Leave the control plane running afterwards and print its kubeconfig.
        #[arg(long)]
        keep: bool,
        /// Extra arguments for the test binaries (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        test_args: Vec<String>,
    },
    /// Run the collector on this machine and show what it measures.
    Demo,
    /// rustfmt and clippy (warnings denied), user space and kernel programs.
    Lint,
    /// Benchmarks: tables with ratios against baselines measured in the same run.
    Bench,
    /// Write generated files (the budget CRD) into deploy/.
    Gen,
    /// Fuzz the decoders (cargo-fuzz, nightly; installs cargo-fuzz if missing).
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Print the targets, one a line, and stop.
        #[arg(long)]
        list: bool,
        /// Only this target (default: every one, in turn).
        target: Option<String>,
    },
    /// Long runs (not in CI): the webhook at 500 reviews/s, the collector under dnsperf at
    /// 20,000 queries/s; a table per minute each.
    Soak {
        /// Minutes each soak runs.
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        /// Only this one: `webhook` or `collector`.
        only: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Test { cargo_args } => test::run(&cargo_args),
        Task::E2e { keep, test_args } => e2e::run(keep, &test_args),
        Task::Demo => demo::run(),
        Task::Lint => lint::run(),
        Task::Bench => bench::run(),
        Task::Gen => generate::run(),
        Task::Fuzz { list: true, .. } => {
            fuzz::list();
            Ok(())
        }
        Task::Fuzz {
            seconds, target, ..
        } => fuzz::run(seconds, target.as_deref()),
        Task::Soak { minutes, only } => soak::run(minutes, only.as_deref()),
    }
}
