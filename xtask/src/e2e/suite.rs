//! The end-to-end tests: `#[ignore]`d integration test targets of the webhook and the
//! collector, run with `--ignored` and the control plane's coordinates in the environment.
use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::Stdio,
};

use anyhow::Context as _;

use super::control_plane::ControlPlane;
use crate::{shell, test::Totals};

/// (package, test target): the webhook's first, then the collector's.
const SUITES: &[(&str, &str)] = &[("webhook", "e2e"), ("collector", "e2e")];

/// Runs every suite, its output shown and kept in `<dir>/tests-<package>.log`.
pub fn run(plane: &ControlPlane, dir: &Path, extra: &[String]) -> anyhow::Result<Totals> {
    let mut totals = Totals::default();
    for (package, target) in SUITES {
        let log_path = dir.join(format!("tests-{package}.log"));
        let mut log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = shell::cargo();
        cmd.args(["test", "--locked", "-p", package, "--test", target, "--"])
            .args(["--ignored", "--test-threads=1"])
            .args(extra)
            .env("HEADROOM_E2E_KUBECONFIG", &plane.files.kubeconfig)
            .env("HEADROOM_E2E_AUDIT_LOG", &plane.files.audit_log)
            .env("HEADROOM_E2E_SERVER", &plane.url)
            .env("HEADROOM_E2E_TOKEN", &plane.files.admin_token)
            .env("HEADROOM_E2E_CA", &plane.files.ca_cert)
            .env("HEADROOM_E2E_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {}", shell::describe(&cmd)))?;
        let stdout = child.stdout.take().context("cargo test stdout")?;
        let mut suite = Totals::default();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            writeln!(log, "{line}")?;
            suite.add_line(&line);
        }
        let status = child.wait().context("waiting for cargo test")?;
        if !status.success() && suite.failed == 0 {
            // A build failure or a crash: no libtest summary says so.
            suite.failed += 1;
            eprintln!(
                "xtask e2e: {} failed ({status}) before reporting its tests",
                shell::describe(&cmd)
            );
        }
        totals.passed += suite.passed;
        totals.failed += suite.failed;
        totals.ignored += suite.ignored;
    }
    Ok(totals)
}
