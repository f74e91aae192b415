//! Start-up checks, before anything is loaded: each failure says what to change,
//! instead of surfacing later as a verifier or EPERM error from deep inside loading.
use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
};

use crate::{
    cgroup,
    config::Config,
    error::{Error, Result},
    server,
};

/// What the checks found, for the wiring to use.
#[derive(Debug)]
pub struct Preflight {
    /// The cgroup v2 hierarchy to attach at (configured or detected).
    pub cgroup_root: PathBuf,
    /// The configured root, when it is a hybrid host's v1 root and `cgroup_root` is its
    /// cgroup v2 mount under [`cgroup::HYBRID_UNIFIED`] (worth a line in the log).
    pub hybrid_root: Option<PathBuf>,
    /// The HTTP port, already bound: hand it to [`server::serve`].
    pub listener: TcpListener,
}

/// The host files the checks read (other paths in tests).
#[derive(Clone, Debug)]
struct Host {
    proc_status: PathBuf,
    btf: PathBuf,
    /// The kernel release (`uname -r`).
    osrelease: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            proc_status: "/proc/self/status".into(),
            btf: "/sys/kernel/btf/vmlinux".into(),
            osrelease: "/proc/sys/kernel/osrelease".into(),
        }
    }
}

/// Checks, in order: privileges, cgroup v2, BTF, the HTTP port (by binding it).
pub fn preflight(config: &Config) -> Result<Preflight> {
    check(config, &Host::default())
}

fn check(config: &Config, host: &Host) -> Result<Preflight> {
    check_privileges(host)?;
    let root = match &config.cgroup_root {
        Some(root) => root.clone(),
        None => cgroup::find_root()?,
    };
    // The DaemonSet mounts the host's /sys/fs/cgroup, which hybrid hosts keep for v1.
    let cgroup_root = cgroup::resolve_root(&root)?;
    let hybrid_root = (cgroup_root != root).then_some(root);
    check_btf(&host.btf)?;
    let listener = server::bind(config.listen)?;
    Ok(Preflight {
        cgroup_root,
        hybrid_root,
        listener,
    })
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities missing from an effective set (`CapEff` in /proc/self/status) for
/// loading and attaching cgroup programs: CAP_NET_ADMIN, and CAP_BPF with
/// CAP_PERFMON (CAP_SYS_ADMIN stands in for both, as on kernels before 5.8).
pub fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYS_ADMIN) {
        if !has(CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    missing
}

/// `(effective uid, effective capabilities)` from the text of /proc/self/status.
fn uid_and_capabilities(status: &str) -> Option<(u32, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // Uid: real effective saved filesystem
    let uid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    let caps = u64::from_str_radix(field("CapEff:")?, 16).ok()?;
    Some((uid, caps))
}

/// `(major, minor)` of a kernel release such as `6.18.0-1-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, which only CAP_SYS_RESOURCE
/// may lift (the loader does): without it the maps fail to load with EPERM there.
fn memlock_capability(release: &str, effective: u64) -> Option<String> {
    let (major, minor) = kernel_version(release)?;
    let has = |cap: u32| effective & (1 << cap) != 0;
    ((major, minor) < (5, 11) && !has(CAP_SYS_RESOURCE)).then(|| {
        format!(
            "CAP_SYS_RESOURCE (kernel {} charges BPF maps to RLIMIT_MEMLOCK; 5.11 and later \
             do not)",
            release.trim()
        )
    })
}

fn check_privileges(host: &Host) -> Result<()> {
    let proc_status = &host.proc_status;
    let text = fs::read_to_string(proc_status).map_err(|source| Error::Read {
        path: proc_status.clone(),
        source,
    })?;
    let (uid, caps) = uid_and_capabilities(&text).ok_or_else(|| Error::Read {
        path: proc_status.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no Uid or CapEff line"),
    })?;
    let mut missing: Vec<String> = missing_capabilities(caps)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if missing.iter().any(|m| m == "CAP_BPF" || m == "CAP_PERFMON") {
        missing.push("(or CAP_SYS_ADMIN for those)".to_owned());
    }
    // An unreadable release is a kernel new enough to have /proc: judged by the rest.
    let release = fs::read_to_string(&host.osrelease).unwrap_or_default();
    missing.extend(memlock_capability(&release, caps));
    if missing.is_empty() {
        return Ok(());
    }
    let missing = missing.join(", ").replace(", (or", " (or");
    Err(Error::MissingCapabilities { uid, missing })
}

fn check_btf(path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(Error::NoBtf { path: path.into() })
    }
}

#[cfg(test)]
mod tests;
