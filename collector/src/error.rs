use std::{io, path::PathBuf};

/// What can go wrong in the collector, with what a user should change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo for a cgroup2 \
         mount): Headroom attributes traffic by cgroup v2 id; mount one with \
         `mount -t cgroup2 none /sys/fs/cgroup` or boot with systemd.unified_cgroup_hierarchy=1"
    )]
    NoCgroup2,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot open cgroup {path}: {source}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("cannot create cgroup {path}: {source}")]
    CreateCgroup { path: PathBuf, source: io::Error },
    #[error(
        "loading the kernel programs needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON \
         (running as uid {uid}): {source}"
    )]
    NotPrivileged { uid: u32, source: aya::EbpfError },
    #[error("the kernel rejected Headroom's programs: {0}")]
    Load(#[source] aya::EbpfError),
    #[error(
        "program {name} is missing from the kernel object (collector-ebpf and collector disagree)"
    )]
    ProgramNotFound { name: &'static str },
    #[error("map {name} is missing from the kernel object (collector-ebpf and collector disagree)")]
    MapNotFound { name: &'static str },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(
        "the kernel sent an event of kind {kind} and {len} bytes that this collector does not \
         know: collector and kernel object disagree"
    )]
    BadEvent { kind: u32, len: usize },
    #[error(
        "invalid endpoint {value:?}: {reason}; expected ADDRESS:PORT such as 10.96.0.1:443 or [fd00::1]:443"
    )]
    Endpoint { value: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
