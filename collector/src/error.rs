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
    #[error(
        "cannot turn on the kernel's BPF run-time stats ({source}): this needs CAP_SYS_ADMIN; \
         without it headroom_collector_program_run* stay at zero"
    )]
    BpfStats { source: aya::sys::SyscallError },
    #[error("cannot read the kernel's info on program {name}: {source}")]
    ProgramInfo {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: the address is already in \
         use (another collector or exporter on this node?); choose a free port with --listen \
         ADDRESS:PORT, HEADROOM_LISTEN or `listen:` in the config file"
    )]
    PortInUse { addr: std::net::SocketAddr },
    #[error(
        "cannot listen on {addr} for /metrics, /healthz and /readyz: {source}; change --listen \
         (HEADROOM_LISTEN, `listen:` in the config file)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error(
        "the kernel exposes no BTF ({path} is missing): Headroom's programs need a kernel built \
         with CONFIG_DEBUG_INFO_BTF=y (the default of current distribution kernels)"
    )]
    NoBtf { path: PathBuf },
    #[error(
        "cgroup root {path} is not a cgroup v2 hierarchy: neither it nor {unified} (where \
         hybrid hosts mount cgroup v2) has a cgroup.controllers file; point --cgroup-root \
         (HEADROOM_CGROUP_ROOT, `cgroupRoot:` in the config file) at the host's cgroup2 mount \
         (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts; in the DaemonSet, where \
         the host's /sys/fs/cgroup is mounted), or leave it unset to detect it from \
         /proc/self/mountinfo"
    )]
    NotCgroup2 { path: PathBuf, unified: PathBuf },
    #[error(
        "loading and attaching the kernel programs needs root or the capabilities {missing} \
         (running as uid {uid} without them): run as root, or in Kubernetes add them under \
         securityContext.capabilities.add"
    )]
    MissingCapabilities { uid: u32, missing: String },
    #[error("cannot read config file {path}: {source}")]
    ConfigFile { path: PathBuf, source: io::Error },
    #[error("config file {path} is not valid: {source}")]
    ConfigSyntax {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid configuration: {field}: {problem}")]
    Config { field: String, problem: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
