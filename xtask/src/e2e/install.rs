//! What the end-to-end run needs on this machine: Debian packages, and a kube-apiserver
//! built from Debian bookworm's `kubernetes` source package (no packaged binary is
//! reachable here), cached under `target/` by source version. Every step first checks
//! whether it is needed, so a second run costs seconds.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{setup, shell};

/// The Debian source package version; its upstream tree is Kubernetes 1.20.2 with `vendor/`.
const SOURCE_VERSION: &str = "1.20.5+really1.20.2-1.1+deb12u1";
/// The upstream version inside it: the cache key and the directory the tarball unpacks to.
pub const UPSTREAM_VERSION: &str = "1.20.2";
const ORIG_TARBALL: &str = "kubernetes_1.20.5+really1.20.2.orig.tar.gz";
/// A deb-src entry of its own, removed again once the source is downloaded.
const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/headroom-e2e-deb-src.sources";
const DEB_SRC: &str = "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
                       Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
const GO_BIN: &str = "/usr/lib/go-1.19/bin";
/// Debian's reflect2 1.0.2: the vendored 1.0.1 crashes at start-up on Go 1.18 and later.
const REFLECT2_SRC: &str = "/usr/share/gocode/src/github.com/modern-go/reflect2";

/// Debian packages the end-to-end run uses, and why. Not `kubernetes-client`: it
/// conflicts with the kubectl the machine image ships.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "golang-1.19",
        "e2e: builds kube-apiserver 1.20 (Go 1.20 and later reject its vendor tree)",
    ),
    ("etcd-server", "e2e: the API server's storage"),
    (
        "make",
        "e2e: kube-apiserver's build (code generation first)",
    ),
    ("rsync", "e2e: kube-apiserver's build scripts"),
    (
        "golang-github-modern-go-reflect2-dev",
        "e2e: reflect2 1.0.2 for kube-apiserver's vendor tree",
    ),
];

/// The kube-apiserver binary, built if it is not cached yet. The build's log goes to
/// `log_dir`.
pub fn kube_apiserver(log_dir: &Path) -> anyhow::Result<PathBuf> {
    setup::apt_install(APT_PACKAGES, "e2e packages")?;
    let cache = cache_dir();
    let binary = cache.join("kube-apiserver");
    if runs(&binary) {
        return Ok(binary);
    }
    let tree = source_tree(&cache)?;
    replace_reflect2(&tree)?;
    build(&tree, log_dir)?;
    let built = tree.join("_output/local/bin/linux/amd64/kube-apiserver");
    fs::copy(&built, &binary)
        .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
    if !runs(&binary) {
        bail!("{} was built but does not run", binary.display());
    }
    // The tree and Go's cache are 2 GiB or so; the binary is all later runs need.
    let _ = fs::remove_dir_all(cache.join("src"));
    Ok(binary)
}

/// `target/kube-apiserver/<version>/`: per clone, like the rest of `target/`.
fn cache_dir() -> PathBuf {
    crate::shell::target_dir()
        .join("kube-apiserver")
        .join(UPSTREAM_VERSION)
}

fn runs(binary: &Path) -> bool {
    Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn step_failed(step: &str, how: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("e2e step '{step}' failed: {why}\n  to do it by hand: {how}")
}

/// The unpacked upstream tree under `cache/src`, downloaded first if needed.
fn source_tree(cache: &Path) -> anyhow::Result<PathBuf> {
    let src = cache.join("src");
    let tree = src.join(format!("kubernetes-{UPSTREAM_VERSION}"));
    if tree.join("Makefile").exists() {
        return Ok(tree);
    }
    fs::create_dir_all(&src).with_context(|| format!("creating {}", src.display()))?;
    let tarball = src.join(ORIG_TARBALL);
    if !tarball.exists() {
        download_source(&src)?;
    }
    eprintln!("xtask e2e: unpacking {ORIG_TARBALL}");
    let mut untar = Command::new("tar");
    untar.current_dir(&src).args(["xzf", ORIG_TARBALL]);
    shell::run(&mut untar).map_err(|e| {
        step_failed(
            "kubernetes source",
            &format!("cd {} && {}", src.display(), shell::describe(&untar)),
            e,
        )
    })?;
    Ok(tree)
}

/// `apt-get source --download-only kubernetes=<version>` through a temporary deb-src
/// entry in a file of its own; the entry is removed and the lists updated again whatever
/// happens, so the machine's apt configuration ends as it was.
fn download_source(src: &Path) -> anyhow::Result<()> {
    eprintln!("xtask e2e: downloading Debian's kubernetes {SOURCE_VERSION} source");
    let how = format!(
        "write {DEB_SRC_FILE} (a deb-src entry for bookworm), apt-get update, \
         cd {} && apt-get source --download-only kubernetes={SOURCE_VERSION}, \
         then remove {DEB_SRC_FILE} and apt-get update",
        src.display()
    );
    fs::write(DEB_SRC_FILE, DEB_SRC).map_err(|e| {
        step_failed(
            "kubernetes source",
            &how,
            format!("writing {DEB_SRC_FILE}: {e}"),
        )
    })?;
    let fetched = (|| {
        shell::run(Command::new("apt-get").args(["update", "-qq"]))?;
        shell::run(
            Command::new("apt-get")
                .current_dir(src)
                .args(["source", "--download-only", "-qq"])
                .arg(format!("kubernetes={SOURCE_VERSION}")),
        )
    })();
    let removed = fs::remove_file(DEB_SRC_FILE);
    let updated = shell::run(Command::new("apt-get").args(["update", "-qq"]));
    fetched.map_err(|e| step_failed("kubernetes source", &how, e))?;
    removed.map_err(|e| {
        step_failed(
            "kubernetes source",
            &how,
            format!("removing {DEB_SRC_FILE}: {e}"),
        )
    })?;
    updated.map_err(|e| step_failed("kubernetes source", &how, e))
}

fn replace_reflect2(tree: &Path) -> anyhow::Result<()> {
    let vendored = tree.join("vendor/github.com/modern-go/reflect2");
    if vendored.join("go_above_118.go").exists() {
        return Ok(());
    }
    let mut copy = Command::new("cp");
    copy.arg("-rL").arg(REFLECT2_SRC).arg(&vendored);
    let how = format!(
        "rm -rf {} && {}",
        vendored.display(),
        shell::describe(&copy)
    );
    if vendored.exists() {
        fs::remove_dir_all(&vendored).map_err(|e| step_failed("reflect2 1.0.2", &how, e))?;
    }
    shell::run(&mut copy).map_err(|e| step_failed("reflect2 1.0.2", &how, e))
}

fn build(tree: &Path, log_dir: &Path) -> anyhow::Result<()> {
    let log_path = log_dir.join("kube-apiserver-build.log");
    eprintln!(
        "xtask e2e: building kube-apiserver {UPSTREAM_VERSION} with Go 1.19 (6–9 minutes on 2 cores; log: {})",
        log_path.display()
    );
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let path = format!(
        "{GO_BIN}:{}",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let mut make = Command::new("make");
    make.current_dir(tree)
        .arg("WHAT=cmd/kube-apiserver")
        .env("PATH", &path)
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", "0")
        .env("KUBE_BUILD_PLATFORMS", "linux/amd64")
        // Go's cache inside the tree: a fresh clone builds from scratch, and the cache
        // goes with the tree once the binary is kept.
        .env("GOCACHE", tree.join(".gocache"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let how = format!(
        "cd {} && PATH={GO_BIN}:$PATH GOPROXY=off CGO_ENABLED=0 KUBE_BUILD_PLATFORMS=linux/amd64 make WHAT=cmd/kube-apiserver",
        tree.display()
    );
    shell::run(&mut make).map_err(|e| {
        step_failed(
            "kube-apiserver build",
            &how,
            format!("{e}; its log: {}", log_path.display()),
        )
    })
}
