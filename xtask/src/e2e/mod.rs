//! `cargo xtask e2e`: the end-to-end tests against a real kube-apiserver. Installs and
//! builds what is missing (idempotent), starts etcd and kube-apiserver on loopback in a
//! scratch directory, runs the webhook's and the collector's `e2e` test targets against
//! them, stops everything it started (also on failure and Ctrl-C) and prints
//! `e2e: N passed, M failed against kube-apiserver vX.Y.Z`.
mod control_plane;
mod install;
mod pki;
mod suite;

use anyhow::{Context as _, bail};

use crate::shell;

pub fn run(keep: bool, extra: &[String]) -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!(
            "the end-to-end tests install packages and run the collector (eBPF at the root \
             cgroup): run `sudo -E cargo xtask e2e`"
        );
    }
    control_plane::stop_on_signal()?;
    let dir = std::env::temp_dir().join(format!("headroom-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run_in(&dir, keep, extra);
    match &result {
        Ok(()) if !keep => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(()) => {}
        Err(_) => eprintln!(
            "xtask e2e: logs (kube-apiserver build, etcd, kube-apiserver, audit, tests) kept in {}",
            dir.display()
        ),
    }
    result
}

fn run_in(dir: &std::path::Path, keep: bool, extra: &[String]) -> anyhow::Result<()> {
    let binary = install::kube_apiserver(dir)?;
    let plane = control_plane::ControlPlane::start(dir, &binary)?;
    eprintln!(
        "xtask e2e: kube-apiserver {} at {}, kubeconfig {}",
        plane.version,
        plane.url,
        plane.files.kubeconfig.display()
    );
    let totals = suite::run(&plane, dir, extra)?;
    let version = plane.version.clone();
    if keep {
        let kubeconfig = plane.files.kubeconfig.clone();
        let (etcd, apiserver) = plane.detach();
        println!(
            "control plane left running: export KUBECONFIG={}\n  stop it with: kill -- -{apiserver}; kill -- -{etcd}",
            kubeconfig.display()
        );
    } else {
        drop(plane);
    }
    println!(
        "e2e: {} passed, {} failed against kube-apiserver {version}",
        totals.passed, totals.failed
    );
    if totals.failed > 0 {
        bail!("end-to-end tests failed");
    }
    if totals.passed == 0 {
        bail!("no end-to-end test ran");
    }
    Ok(())
}
