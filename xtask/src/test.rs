//! `cargo xtask test`: set-up if needed, then every test of the workspace — unit,
//! integration and kernel tests — as root, ending with one summary line; then the
//! end-to-end tests against a real kube-apiserver (`cargo xtask e2e`) and their line. Between
//! them every fuzz target runs for 20 s (`cargo xtask fuzz`).
use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{e2e, fuzz, setup, shell};

/// Seconds each fuzz target runs in the test run (the long runs are `cargo xtask fuzz`).
const CI_FUZZ_SECONDS: u64 = 20;

pub fn run(extra: &[String]) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!(
            "the kernel tests load eBPF programs and create cgroups, which needs root: \
             run `sudo -E cargo xtask test` (they are never skipped)"
        );
    }
    setup::run()?;

    let mut cmd = shell::cargo();
    cmd.args(["test", "--locked", "--no-fail-fast"]);
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    // cargo prints the libtest summaries on stdout; pass everything through and sum them.
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", shell::describe(&cmd)))?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !status.success() || totals.failed > 0 {
        bail!("tests failed ({status})");
    }
    if totals.passed == 0 {
        bail!("no test ran");
    }
    // Each fuzz target briefly, so they keep building and the seeds keep passing.
    fuzz::run(CI_FUZZ_SECONDS, None)?;
    // Whole, after everything else passed: a filter meant for the workspace's tests
    // would select none of theirs.
    e2e::run(false, &[])
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Totals {
    /// Adds a libtest line such as
    /// `test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 2 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s");
        t.add_line("running 5 tests");
        assert_eq!(
            t,
            Totals {
                passed: 7,
                failed: 3,
                ignored: 1
            }
        );
    }
}
