//! Typed configuration: flags, an optional file, one Default, validated at start-up.
//!
//! Precedence, lowest first: [`Config::default`], the YAML file given with `--config`,
//! environment variables (`HEADROOM_*`, and `NODE_NAME` from the downward API), flags.
//! A list given on a higher layer replaces the lower one's, it does not add to it.
//! Every value is checked before anything is loaded; an error names the field (as the
//! file spells it, and its flag) and says what would be accepted.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use collector_ebpf::{EndpointKey, EndpointKind};

use crate::{
    endpoint,
    error::{Error, Result},
    logging::{self, LogFormat},
    metrics::bpf_stats::ProgramStats,
    server::dns_names::DnsNames,
};

/// The collector's port. In Prometheus's exporter range (9100–9999) and clear of the
/// ports node agents commonly hold on the host network (node-exporter 9100, kube-proxy
/// 10249/10256, kubelet 10250, Cilium 9962–9965, Calico 9091), since a DaemonSet
/// agent often runs with `hostNetwork`.
pub const DEFAULT_PORT: u16 = 9977;

/// The port measured as DNS on every address unless `--dns-port` says otherwise.
pub const DNS_PORT: u16 = 53;

/// Largest DNS top-K: the names kept per workload bound the collector's memory.
pub const MAX_DNS_TOP_K: usize = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where /metrics, /healthz and /readyz listen.
    pub listen: SocketAddr,
    /// API server endpoints to measure (standalone; in cluster, discovery adds more).
    pub apiservers: Vec<SocketAddr>,
    /// DNS server endpoints to measure, beyond the `dns_ports` on every address.
    pub dns_servers: Vec<SocketAddr>,
    /// Ports measured as DNS on every address, IPv4 and IPv6, UDP and TCP (client side:
    /// queries sent to the port, answers from it): NodeLocal DNSCache, a resolved stub, a
    /// pod's own nameserver and the node's resolver are all seen without configuration.
    pub dns_ports: Vec<u16>,
    /// The cgroup v2 mount (or a hybrid host's v1 root, whose `unified` mount is then
    /// used); detected from /proc/self/mountinfo when unset.
    pub cgroup_root: Option<PathBuf>,
    /// This node's name (from `NODE_NAME`, set by the downward API in the DaemonSet).
    pub node_name: Option<String>,
    /// Reach the API server through this kubeconfig instead of the pod's service account
    /// (a collector run outside a pod, such as a systemd unit on the node). Its server's
    /// address is measured as the API server, as the `kubernetes` Service's is in a pod.
    pub kubeconfig: Option<PathBuf>,
    /// How long the series of a gone pod or process stay after it went (so the last
    /// increments are scraped).
    pub series_grace_period: Duration,
    /// How long a pod is measured before it counts in a profile: the range of the
    /// profiles' rates (the recording rules' `rate(…[5m])`).
    pub profile_rate_window: Duration,
    /// Query names kept per workload.
    pub dns_top_k: usize,
    /// How query names leave the process (/dns/names): as asked, hashed, or not at all.
    pub dns_names: DnsNames,
    /// /readyz fails when the event loop has not run for this long.
    pub readiness_timeout: Duration,
    /// Ignore the cluster even inside a pod: endpoints from flags only, cgroups named
    /// from their paths.
    pub standalone: bool,
    /// When the kernel's BPF run-time stats (the per-program self-metrics) are on.
    pub program_stats: ProgramStats,
    /// Text or JSON log lines.
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `debug,kube=info`); unset: `RUST_LOG`, else `info`.
    pub log_level: Option<String>,
    /// The first LIST of each watch waits a random time below this, so the collectors
    /// of a DaemonSet rollout or a mass restart do not list in step.
    pub watch_start_jitter: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT),
            apiservers: Vec::new(),
            dns_servers: Vec::new(),
            dns_ports: vec![DNS_PORT],
            cgroup_root: None,
            node_name: None,
            kubeconfig: None,
            series_grace_period: Duration::from_secs(5 * 60),
            profile_rate_window: Duration::from_secs(5 * 60),
            dns_top_k: 20,
            dns_names: DnsNames::default(),
            readiness_timeout: Duration::from_secs(30),
            standalone: false,
            program_stats: ProgramStats::default(),
            log_format: LogFormat::default(),
            log_level: None,
            watch_start_jitter: Duration::from_secs(5),
        }
    }
}

/// The configuration flags (flatten them into the binary's parser with
/// `#[command(flatten)]`). Every one is optional: what is not given comes from the
/// file or the default.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Args {
    /// YAML configuration file; flags and environment variables override it.
    #[arg(long = "config", env = "HEADROOM_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Address for /metrics, /healthz and /readyz [default: 0.0.0.0:9977].
    #[arg(long, env = "HEADROOM_LISTEN", value_name = "ADDRESS:PORT")]
    pub listen: Option<SocketAddr>,
    /// API server endpoint to measure; repeat or separate with commas.
    #[arg(
        long = "apiserver",
        env = "HEADROOM_APISERVER",
        value_name = "ADDRESS:PORT",
        value_delimiter = ','
    )]
    pub apiservers: Vec<SocketAddr>,
    /// DNS server endpoint to measure; repeat or separate with commas.
    #[arg(
        long = "dns-server",
        env = "HEADROOM_DNS_SERVER",
        value_name = "ADDRESS:PORT",
        value_delimiter = ','
    )]
    pub dns_servers: Vec<SocketAddr>,
    /// Port measured as DNS on every address (client side); repeat or separate with
    /// commas; replaces the default [default: 53].
    #[arg(
        long = "dns-port",
        env = "HEADROOM_DNS_PORT",
        value_name = "PORT",
        value_delimiter = ','
    )]
    pub dns_ports: Vec<u16>,
    /// cgroup v2 mount point; on a hybrid host the v1 root works too (its unified/ is
    /// used) [default: detected from /proc/self/mountinfo].
    #[arg(long, env = "HEADROOM_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// This node's name (the DaemonSet sets NODE_NAME from spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Watch the cluster through this kubeconfig, not the pod's service account (the
    /// collector run outside a pod); needs --node-name [default: in a pod, the service
    /// account].
    #[arg(long, env = "HEADROOM_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How long the series of a gone pod or cgroup stay, e.g. 5m [default: 5m].
    #[arg(long, env = "HEADROOM_SERIES_GRACE_PERIOD", value_name = "DURATION", value_parser = parse_duration)]
    pub series_grace_period: Option<Duration>,
    /// The range of the profiles' rates: a pod counts in a profile once measured this
    /// long; keep it at the recording rules' 5m outside demos [default: 5m].
    #[arg(long, env = "HEADROOM_PROFILE_RATE_WINDOW", value_name = "DURATION", value_parser = parse_duration)]
    pub profile_rate_window: Option<Duration>,
    /// Query names kept per workload [default: 20].
    #[arg(long, env = "HEADROOM_DNS_TOP_K", value_name = "N")]
    pub dns_top_k: Option<usize>,
    /// Query names in /dns/names: as asked (plain), as a keyed hash stable while the
    /// process lives (hash), or none: /dns/names answers 404 (off) [default: plain].
    #[arg(long, env = "HEADROOM_DNS_NAMES", value_name = "MODE", value_enum)]
    pub dns_names: Option<DnsNames>,
    /// /readyz fails when the event loop has not run for this long [default: 30s].
    #[arg(long, env = "HEADROOM_READINESS_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    pub readiness_timeout: Option<Duration>,
    /// Do not use the cluster even inside a pod (no pod watch, no discovery): endpoints
    /// from flags only [default: in a cluster when KUBERNETES_SERVICE_HOST is set].
    #[arg(long, env = "HEADROOM_STANDALONE")]
    pub standalone: bool,
    /// When the kernel's BPF run-time stats are on: they cost every BPF program on the
    /// node two clock reads per run, so by default only 5 s of every minute
    /// [default: sampled].
    #[arg(long, env = "HEADROOM_PROGRAM_STATS", value_name = "MODE", value_enum)]
    pub program_stats: Option<ProgramStats>,
    /// Log lines as text or JSON [default: text].
    #[arg(long, env = "HEADROOM_LOG_FORMAT", value_name = "FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. debug or info,collector::watch=debug [default: RUST_LOG, else
    /// info].
    #[arg(long, env = "HEADROOM_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// The first LIST of each API watch waits a random time below this, e.g. 5s; 0s
    /// lists at once [default: 5s].
    #[arg(long, env = "HEADROOM_WATCH_START_JITTER", value_name = "DURATION", value_parser = parse_duration)]
    pub watch_start_jitter: Option<Duration>,
}

/// The file's shape: camelCase keys as in Kubernetes objects; unknown keys are errors
/// (a typo must not silently fall back to a default). Values are read as text and
/// parsed here, so an error names the key.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct File {
    listen: Option<String>,
    api_servers: Option<Vec<String>>,
    dns_servers: Option<Vec<String>>,
    dns_ports: Option<Vec<u16>>,
    cgroup_root: Option<PathBuf>,
    node_name: Option<String>,
    kubeconfig: Option<PathBuf>,
    series_grace_period: Option<String>,
    profile_rate_window: Option<String>,
    dns_top_k: Option<usize>,
    dns_names: Option<String>,
    readiness_timeout: Option<String>,
    standalone: Option<bool>,
    program_stats: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    watch_start_jitter: Option<String>,
}

/// A field's name in the file and on the command line, for error messages.
#[derive(Clone, Copy, Debug)]
struct Field {
    key: &'static str,
    flag: &'static str,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (--{})", self.key, self.flag)
    }
}

const LISTEN: Field = Field {
    key: "listen",
    flag: "listen",
};
const API_SERVERS: Field = Field {
    key: "apiServers",
    flag: "apiserver",
};
const DNS_SERVERS: Field = Field {
    key: "dnsServers",
    flag: "dns-server",
};
const DNS_PORTS: Field = Field {
    key: "dnsPorts",
    flag: "dns-port",
};
const CGROUP_ROOT: Field = Field {
    key: "cgroupRoot",
    flag: "cgroup-root",
};
const NODE_NAME: Field = Field {
    key: "nodeName",
    flag: "node-name",
};
const KUBECONFIG: Field = Field {
    key: "kubeconfig",
    flag: "kubeconfig",
};
const SERIES_GRACE_PERIOD: Field = Field {
    key: "seriesGracePeriod",
    flag: "series-grace-period",
};
const PROFILE_RATE_WINDOW: Field = Field {
    key: "profileRateWindow",
    flag: "profile-rate-window",
};
const DNS_TOP_K: Field = Field {
    key: "dnsTopK",
    flag: "dns-top-k",
};
const DNS_NAMES: Field = Field {
    key: "dnsNames",
    flag: "dns-names",
};
const READINESS_TIMEOUT: Field = Field {
    key: "readinessTimeout",
    flag: "readiness-timeout",
};
const PROGRAM_STATS: Field = Field {
    key: "programStats",
    flag: "program-stats",
};
const LOG_FORMAT: Field = Field {
    key: "logFormat",
    flag: "log-format",
};
const LOG_LEVEL: Field = Field {
    key: "logLevel",
    flag: "log-level",
};
const WATCH_START_JITTER: Field = Field {
    key: "watchStartJitter",
    flag: "watch-start-jitter",
};

fn invalid(field: impl fmt::Display, problem: impl Into<String>) -> Error {
    Error::Config {
        field: field.to_string(),
        problem: problem.into(),
    }
}

impl Config {
    /// Default, then the file (if `--config`/`HEADROOM_CONFIG` names one), then flags
    /// and environment; validated.
    pub fn load(args: &Args) -> Result<Self> {
        let mut config = Self::default();
        if let Some(path) = &args.config_file {
            config.apply_file(path)?;
        }
        config.apply_args(args);
        config.validate()?;
        Ok(config)
    }

    /// Applies the YAML file at `path` over `self`.
    pub fn apply_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
            path: path.into(),
            source,
        })?;
        self.apply_yaml(&text).map_err(|e| match e {
            Error::Config { field, problem } => Error::Config {
                field: format!("{}: {field}", path.display()),
                problem,
            },
            Error::ConfigSyntax { source, .. } => Error::ConfigSyntax {
                path: path.into(),
                source,
            },
            other => other,
        })
    }

    /// Applies a YAML document over `self` (an empty document changes nothing).
    pub fn apply_yaml(&mut self, text: &str) -> Result<()> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_yaml::from_str(text).map_err(|source| Error::ConfigSyntax {
                path: PathBuf::new(),
                source,
            })?
        };
        if let Some(value) = file.listen {
            self.listen = parse_socket_addr(LISTEN, &value)?;
        }
        if let Some(values) = file.api_servers {
            self.apiservers = parse_socket_addrs(API_SERVERS, &values)?;
        }
        if let Some(values) = file.dns_servers {
            self.dns_servers = parse_socket_addrs(DNS_SERVERS, &values)?;
        }
        if let Some(values) = file.dns_ports {
            self.dns_ports = values;
        }
        if let Some(value) = file.cgroup_root {
            self.cgroup_root = Some(value);
        }
        if let Some(value) = file.node_name {
            self.node_name = Some(value);
        }
        if let Some(value) = file.kubeconfig {
            self.kubeconfig = Some(value);
        }
        if let Some(value) = file.series_grace_period {
            self.series_grace_period =
                parse_duration(&value).map_err(|e| invalid(SERIES_GRACE_PERIOD, e))?;
        }
        if let Some(value) = file.profile_rate_window {
            self.profile_rate_window =
                parse_duration(&value).map_err(|e| invalid(PROFILE_RATE_WINDOW, e))?;
        }
        if let Some(value) = file.dns_top_k {
            self.dns_top_k = value;
        }
        if let Some(value) = file.dns_names {
            self.dns_names = DnsNames::parse(&value).ok_or_else(|| {
                invalid(
                    DNS_NAMES,
                    format!("{value:?} is not a mode; give plain, hash or off"),
                )
            })?;
        }
        if let Some(value) = file.readiness_timeout {
            self.readiness_timeout =
                parse_duration(&value).map_err(|e| invalid(READINESS_TIMEOUT, e))?;
        }
        if let Some(value) = file.standalone {
            self.standalone = value;
        }
        if let Some(value) = file.program_stats {
            self.program_stats = ProgramStats::parse(&value).ok_or_else(|| {
                invalid(
                    PROGRAM_STATS,
                    format!("{value:?} is not a mode; give {}", ProgramStats::names()),
                )
            })?;
        }
        if let Some(value) = file.log_format {
            self.log_format = LogFormat::parse(&value).ok_or_else(|| {
                invalid(
                    LOG_FORMAT,
                    format!("{value:?} is not a format; give text or json"),
                )
            })?;
        }
        if let Some(value) = file.log_level {
            self.log_level = Some(value);
        }
        if let Some(value) = file.watch_start_jitter {
            self.watch_start_jitter =
                parse_duration(&value).map_err(|e| invalid(WATCH_START_JITTER, e))?;
        }
        Ok(())
    }

    /// Applies flags and environment variables (already merged by clap) over `self`.
    pub fn apply_args(&mut self, args: &Args) {
        if let Some(value) = args.listen {
            self.listen = value;
        }
        if !args.apiservers.is_empty() {
            self.apiservers.clone_from(&args.apiservers);
        }
        if !args.dns_servers.is_empty() {
            self.dns_servers.clone_from(&args.dns_servers);
        }
        if !args.dns_ports.is_empty() {
            self.dns_ports.clone_from(&args.dns_ports);
        }
        if let Some(value) = &args.cgroup_root {
            self.cgroup_root = Some(value.clone());
        }
        if let Some(value) = &args.node_name {
            self.node_name = Some(value.clone());
        }
        if let Some(value) = &args.kubeconfig {
            self.kubeconfig = Some(value.clone());
        }
        if let Some(value) = args.series_grace_period {
            self.series_grace_period = value;
        }
        if let Some(value) = args.profile_rate_window {
            self.profile_rate_window = value;
        }
        if let Some(value) = args.dns_top_k {
            self.dns_top_k = value;
        }
        if let Some(value) = args.dns_names {
            self.dns_names = value;
        }
        if let Some(value) = args.readiness_timeout {
            self.readiness_timeout = value;
        }
        if args.standalone {
            self.standalone = true;
        }
        if let Some(value) = args.program_stats {
            self.program_stats = value;
        }
        if let Some(value) = args.log_format {
            self.log_format = value;
        }
        if let Some(value) = &args.log_level {
            self.log_level = Some(value.clone());
        }
        if let Some(value) = args.watch_start_jitter {
            self.watch_start_jitter = value;
        }
    }

    /// Checks every field; the first bad one is the error.
    pub fn validate(&self) -> Result<()> {
        if let Some(level) = &self.log_level {
            logging::filter(Some(level)).map_err(|e| {
                invalid(
                    LOG_LEVEL,
                    format!("{level:?} is not a tracing filter ({e}); give e.g. info or debug"),
                )
            })?;
        }
        if self.watch_start_jitter > Duration::from_secs(300) {
            return Err(invalid(
                WATCH_START_JITTER,
                "more than 5m would leave a new collector blind to its pods for minutes; give \
                 at most 5m",
            ));
        }
        if self.listen.port() == 0 {
            return Err(invalid(
                LISTEN,
                format!(
                    "port 0 would pick a random port that Prometheus cannot find; use a fixed one such as {DEFAULT_PORT}"
                ),
            ));
        }
        for (field, endpoints) in [
            (API_SERVERS, &self.apiservers),
            (DNS_SERVERS, &self.dns_servers),
        ] {
            for (i, addr) in endpoints.iter().enumerate() {
                if addr.port() == 0 {
                    return Err(invalid(
                        format!("{field}[{i}]"),
                        format!("{addr}: port 0 is not a real endpoint; give the server's port"),
                    ));
                }
                if addr.ip().is_unspecified() {
                    return Err(invalid(
                        format!("{field}[{i}]"),
                        format!(
                            "{addr}: {} is no server's address; give the address clients connect to",
                            addr.ip()
                        ),
                    ));
                }
                if endpoints[..i].contains(addr) {
                    return Err(invalid(
                        format!("{field}[{i}]"),
                        format!("{addr} is listed twice"),
                    ));
                }
            }
        }
        if let Some(addr) = self
            .apiservers
            .iter()
            .find(|a| self.dns_servers.contains(a))
        {
            return Err(invalid(
                DNS_SERVERS,
                format!(
                    "{addr} is also in {API_SERVERS}; an endpoint is measured as one or the other"
                ),
            ));
        }
        for (i, port) in self.dns_ports.iter().enumerate() {
            if *port == 0 {
                return Err(invalid(
                    format!("{DNS_PORTS}[{i}]"),
                    "port 0 is no DNS port; give the port clients send queries to, such as 53",
                ));
            }
            if let Some(api) = self.apiservers.iter().find(|a| a.port() == *port) {
                return Err(invalid(
                    format!("{DNS_PORTS}[{i}]"),
                    format!(
                        "port {port} is the port of the API server {api} in {API_SERVERS}; \
                         an endpoint is measured as one or the other"
                    ),
                ));
            }
        }
        let endpoints = self.apiservers.len() + self.dns_servers.len() + self.dns_ports.len();
        let capacity = collector_ebpf::capacity::ENDPOINTS as usize;
        if endpoints > capacity {
            return Err(invalid(
                API_SERVERS,
                format!(
                    "{endpoints} endpoints with {DNS_SERVERS}; the kernel's table holds {capacity}"
                ),
            ));
        }
        if let Some(root) = &self.cgroup_root
            && !root.is_absolute()
        {
            return Err(invalid(
                CGROUP_ROOT,
                format!(
                    "{} is relative; give the absolute path of the cgroup v2 mount, such as /sys/fs/cgroup",
                    root.display()
                ),
            ));
        }
        if let Some(path) = &self.kubeconfig
            && !path.is_file()
        {
            return Err(invalid(
                KUBECONFIG,
                format!(
                    "{} is not a file; give the path of a kubeconfig, or leave it unset to use the pod's service account",
                    path.display()
                ),
            ));
        }
        if let Some(name) = &self.node_name {
            check_node_name(name)
                .map_err(|problem| invalid(NODE_NAME, format!("{name:?} {problem}")))?;
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600))
            .contains(&self.series_grace_period)
        {
            return Err(invalid(
                SERIES_GRACE_PERIOD,
                format!(
                    "{} is out of range; give 1s to 24h, longer than Prometheus's scrape interval",
                    format_duration(self.series_grace_period)
                ),
            ));
        }
        if !(Duration::from_secs(10)..=Duration::from_secs(3600))
            .contains(&self.profile_rate_window)
        {
            return Err(invalid(
                PROFILE_RATE_WINDOW,
                format!(
                    "{} is out of range; give 10s to 1h (5m, as the recording rules, outside demos)",
                    format_duration(self.profile_rate_window)
                ),
            ));
        }
        if !(1..=MAX_DNS_TOP_K).contains(&self.dns_top_k) {
            return Err(invalid(
                DNS_TOP_K,
                format!(
                    "{} is out of range; give 1 to {MAX_DNS_TOP_K}",
                    self.dns_top_k
                ),
            ));
        }
        if self.readiness_timeout < Duration::from_secs(1) {
            return Err(invalid(
                READINESS_TIMEOUT,
                format!(
                    "{} is too short; give at least 1s",
                    format_duration(self.readiness_timeout)
                ),
            ));
        }
        Ok(())
    }

    /// The endpoints to put in the kernel's `ENDPOINTS` map.
    pub fn endpoints(&self) -> impl Iterator<Item = (EndpointKey, EndpointKind)> + '_ {
        let apiservers = self
            .apiservers
            .iter()
            .map(|a| (endpoint::key_of(*a), EndpointKind::ApiServer));
        let dns = self
            .dns_servers
            .iter()
            .map(|a| (endpoint::key_of(*a), EndpointKind::Dns));
        let any_address = self
            .dns_ports
            .iter()
            .map(|port| (EndpointKey::any_address(*port), EndpointKind::Dns));
        apiservers.chain(dns).chain(any_address)
    }
}

fn parse_socket_addr(field: Field, value: &str) -> Result<SocketAddr> {
    value.trim().parse().map_err(|_| {
        invalid(
            field,
            format!("{value:?} is not ADDRESS:PORT, such as 10.96.0.1:443 or [fd00::1]:443"),
        )
    })
}

fn parse_socket_addrs(field: Field, values: &[String]) -> Result<Vec<SocketAddr>> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            parse_socket_addr(field, v).map_err(|e| match e {
                Error::Config { problem, .. } => invalid(format!("{field}[{i}]"), problem),
                other => other,
            })
        })
        .collect()
}

/// A node name is a DNS subdomain: at most 253 characters of `a-z`, `0-9`, `-` and `.`,
/// starting and ending with an alphanumeric.
fn check_node_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("is not 1 to 253 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err("has characters other than a-z, 0-9, '-' and '.'");
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !edge_ok(name.bytes().next()) || !edge_ok(name.bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// Parses a duration such as `300ms`, `30s`, `5m`, `1h30m`: whole numbers, each with a
/// unit (ms, s, m, h).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let fail = || format!("{text:?} is not a duration such as 30s, 5m or 1h30m");
    if text.is_empty() {
        return Err(fail());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(fail)?;
        if digits == 0 {
            return Err(fail());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(fail()),
        };
        total = total.checked_add(part).ok_or_else(fail)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The inverse of [`parse_duration`] for messages: `90s` → `1m30s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let (h, m, s, ms) = (
        millis / 3_600_000,
        millis / 60_000 % 60,
        millis / 1000 % 60,
        millis % 1000,
    );
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
