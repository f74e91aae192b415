//! `cargo xtask setup`: installs what the project needs on a fresh machine of this kind.
//! Every step first checks whether it is needed, so a second run does nothing.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::shell::{self, describe};

/// Debian packages the project uses, and why.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker links against LLVM 22, the nightly's LLVM",
    ),
    ("libpolly-22-dev", "bpf-linker's LLVM 22 link needs Polly"),
    ("libzstd-dev", "bpf-linker's LLVM link"),
    ("zlib1g-dev", "bpf-linker's LLVM link"),
    ("iproute2", "tests create network namespaces"),
    (
        "curl",
        "tests and demo: HTTP clients against the collector and test servers",
    ),
    ("dnsmasq-base", "tests: the real DNS server"),
    ("dnsutils", "tests: dig"),
    (
        "nftables",
        "tests: kube-proxy's DNAT of Service addresses, in a test network namespace",
    ),
    (
        "prometheus",
        "tests: a real Prometheus scraping the collector; promtool",
    ),
    (
        "iperf3",
        "benchmark: TCP throughput with and without the collector",
    ),
    (
        "dnsperf",
        "benchmark: DNS throughput with and without the collector",
    ),
    ("tcpdump", "benchmark: the peer way of capturing DNS"),
    (
        "bpftool",
        "tests: the kernel's program and link lists after the collector is killed",
    ),
    (
        "openssl",
        "demo: the webhook's self-signed serving certificate",
    ),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Python packages deploy/'s tests use: (pip requirement, module to import, why).
const PYTHON_PACKAGES: &[(&str, &str, &str)] = &[
    (
        "kubernetes-validate==1.37.0",
        "kubernetes_validate",
        "the rendered manifests against Kubernetes' JSON schemas, bundled per version",
    ),
    (
        "cel-python==0.5.0",
        "celpy",
        "the webhook registration's CEL matchConditions evaluated on sample objects",
    ),
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn run() -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!(
            "setup installs packages and mounts tracefs: run it as root (sudo -E cargo xtask setup)"
        );
    }
    apt_packages()?;
    rust_src()?;
    bpf_linker()?;
    tracefs()?;
    python_packages()?;
    kubectl_kustomize()?;
    eprintln!("xtask setup: everything is in place");
    Ok(())
}

fn step_failed(step: &str, cmd: &Command, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "setup step '{step}' failed: {why}\n  to do it by hand, run: {}",
        describe(cmd)
    )
}

fn apt_packages() -> anyhow::Result<()> {
    apt_install(APT_PACKAGES, "apt packages")
}

/// Installs the Debian packages of `packages` (name, why) that are not installed yet.
pub fn apt_install(packages: &[(&str, &str)], step: &str) -> anyhow::Result<()> {
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    let query = shell::output(
        Command::new("dpkg-query")
            .args(["-W", "-f=${Package} ${Status}\\n"])
            .args(&names),
    )?;
    let installed = String::from_utf8_lossy(&query.stdout);
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| {
            !installed
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.ends_with("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    shell::run(&mut update).map_err(|e| step_failed(step, &update, e))?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    shell::run(&mut install).map_err(|e| step_failed(step, &install, e))
}

fn rust_src() -> anyhow::Result<()> {
    let list = shell::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain (kernel programs build core)");
    let mut add = Command::new("rustup");
    add.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    shell::run(&mut add).map_err(|e| step_failed("nightly rust-src", &add, e))
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if have
        .as_deref()
        .is_some_and(|v| v.split_whitespace().any(|w| w == BPF_LINKER_VERSION))
    {
        return Ok(());
    }
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes)"
    );
    let mut install = shell::cargo();
    install
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        // Without it the build may find an older llvm-config and fail to link.
        .env("LLVM_PREFIX", LLVM_PREFIX);
    shell::run(&mut install).map_err(|e| step_failed("bpf-linker", &install, e))
}

fn tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    eprintln!("xtask setup: mounting tracefs at {TRACEFS}");
    std::fs::create_dir_all(TRACEFS).with_context(|| format!("creating {TRACEFS}"))?;
    let mut mount = Command::new("mount");
    mount.args(["-t", "tracefs", "nodev", TRACEFS]);
    shell::run(&mut mount).map_err(|e| step_failed("tracefs", &mount, e))
}

fn python_packages() -> anyhow::Result<()> {
    for (requirement, module, why) in PYTHON_PACKAGES {
        let have = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if have {
            continue;
        }
        eprintln!("xtask setup: installing {requirement} (deploy/ tests: {why})");
        let mut install = Command::new("python3");
        install.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            // Debian's own python3 refuses pip installs without it (PEP 668); the
            // packages only serve the tests of this machine.
            "--break-system-packages",
            requirement,
        ]);
        shell::run(&mut install).map_err(|e| step_failed("python packages", &install, e))?;
    }
    Ok(())
}

/// deploy/ is rendered with `kubectl kustomize`, which needs kustomize v5 (components,
/// `labels:`). The machine image ships kubectl; Debian's kubernetes-client is too old.
fn kubectl_kustomize() -> anyhow::Result<()> {
    let mut version = Command::new("kubectl");
    version.args(["version", "--client"]);
    let out = shell::output(&mut version).map_err(|e| {
        step_failed(
            "kubectl",
            &version,
            format!("{e}; install kubectl 1.27 or later"),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.lines().any(|l| l.starts_with("Kustomize Version: v5")) {
        return Ok(());
    }
    Err(step_failed(
        "kubectl",
        &version,
        format!("kubectl with kustomize v5 (kubectl 1.27 or later) is needed, found:\n{text}"),
    ))
}
