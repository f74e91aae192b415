//! The collector soak (`cargo xtask soak`, not in CI; root, under the shared kernel lock):
//! the real binary for HEADROOM_SOAK_MINUTES (default 10) while one child cgroup runs
//! dnsperf at 20,000 queries/s against a local dnsmasq and another runs `kubectl get pods`
//! every second against the loopback TLS stand-in API server. Prints a row per minute
//! (queries sent by dnsperf and counted by the collector, kubectl requests served and
//! estimated, RSS, events lost), then the totals: DNS queries and API connections exact,
//! requests within 10%.
#![expect(clippy::unwrap_used, reason = "a benchmark: a failure is a panic")]

#[path = "../tests/support/apiserver.rs"]
mod apiserver;

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use apiserver::{ApiServer, ServerConfig};
use collector::cgroup::{self, ChildGroup};

const COLLECTOR: &str = env!("CARGO_BIN_EXE_headroom-collector");
const DNS_ADDR: &str = "127.0.10.53";
const QUERIES_PER_SECOND: u32 = 20_000;
/// How long the collector may take to publish what happened (it publishes every 2 s).
const SETTLE: Duration = Duration::from_secs(5);

/// A child process killed and reaped when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq() -> Process {
    let child = Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={DNS_ADDR}"),
            "--port=53",
            "--address=/soak.test/10.0.0.1",
            "--cache-size=10000",
            "--dns-forward-max=1000",
            "--user=root",
            "--pid-file",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (Debian package dnsmasq-base)");
    thread::sleep(Duration::from_millis(500));
    Process(child)
}

/// `command` run inside `group`: a shell joins it, then execs the command.
fn in_group(command: &Command, group: &ChildGroup) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec \"$@\"",
            group.procs_file().display()
        ))
        .arg("sh")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    wrapped
}

/// The collector binary, standalone.
struct Collector {
    process: Process,
    listen: SocketAddr,
}

impl Collector {
    fn start(apiserver: SocketAddr, log: &Path) -> Collector {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let child = Command::new(COLLECTOR)
            .args(["--standalone", "--node-name", "soak"])
            .args(["--listen", &listen.to_string()])
            .args(["--dns-server", &format!("{DNS_ADDR}:53")])
            .args(["--apiserver", &apiserver.to_string()])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("HEADROOM_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(log).unwrap())
            .spawn()
            .expect("headroom-collector");
        let collector = Collector {
            process: Process(child),
            listen,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !collector.get("/readyz").starts_with("ready") {
            assert!(
                Instant::now() < deadline,
                "not ready: {}",
                fs::read_to_string(log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        collector
    }

    fn get(&self, path: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(self.listen) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.listen
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }

    fn rss_mib(&self) -> f64 {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

/// The sum of `family`'s samples, those whose labels contain `labels` (all if empty).
fn sum_of(metrics: &str, family: &str, labels: &str) -> u64 {
    let open = format!("{family}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&open) || l.starts_with(&format!("{family} ")))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// What the collector shows of the two pods.
#[derive(Clone, Copy, Default)]
struct Counted {
    dns_queries: u64,
    connections: u64,
    requests: u64,
    events_lost: u64,
}

fn counted(collector: &Collector, dns_pod: &str, kubectl_pod: &str) -> Counted {
    let metrics = collector.get("/metrics");
    let (dns, kubectl) = (
        format!("workload=\"{dns_pod}\""),
        format!("workload=\"{kubectl_pod}\""),
    );
    Counted {
        dns_queries: sum_of(&metrics, "headroom_dns_queries_total", &dns),
        connections: sum_of(&metrics, "headroom_apiserver_connections_total", &kubectl),
        requests: sum_of(&metrics, "headroom_apiserver_requests_total", &kubectl),
        events_lost: sum_of(&metrics, "headroom_collector_events_lost_total", ""),
    }
}

/// dnsperf for 60 s at [`QUERIES_PER_SECOND`] from `group`: (queries sent, queries/s).
fn dnsperf_minute(names: &Path, group: &ChildGroup) -> (u64, f64) {
    let mut dnsperf = Command::new("dnsperf");
    dnsperf
        .args(["-s", DNS_ADDR, "-p", "53", "-d"])
        .arg(names)
        .args(["-l", "60", "-c", "2", "-q", "500", "-t", "2"])
        .args(["-Q", &QUERIES_PER_SECOND.to_string()]);
    let out = in_group(&dnsperf, group)
        .output()
        .expect("dnsperf (Debian package dnsperf)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no '{name}' in dnsperf's output:\n{text}"))
    };
    (field("Queries sent:") as u64, field("Queries per second:"))
}

/// `kubectl get pods` once a second from `group` until `stop`; counts the runs.
fn kubectl_loop(
    server: Arc<ApiServer>,
    group: Arc<ChildGroup>,
    stop: Arc<AtomicBool>,
    runs: Arc<AtomicU64>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            let mut kubectl = server.kubectl();
            kubectl.args(["get", "pods", "-o", "name"]);
            let ok = in_group(&kubectl, &group)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kubectl get pods failed");
            runs.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
    })
}

fn main() {
    let minutes: u32 = std::env::var("HEADROOM_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let dir = std::env::temp_dir().join(format!("headroom-soak-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let names = dir.join("names");
    let data: String = (0..10_000).map(|i| format!("n{i}.soak.test A\n")).collect();
    fs::write(&names, data).unwrap();
    let _dnsmasq = dnsmasq();
    let server = Arc::new(ApiServer::start(ServerConfig {
        pods: 20,
        ..ServerConfig::default()
    }));
    let collector = Collector::start(server.addr(), &dir.join("collector.log"));
    let root = cgroup::find_root().unwrap();
    let pid = std::process::id();
    let dns_group = ChildGroup::create(&root, &format!("headroom-soak-dns-{pid}")).unwrap();
    let kubectl_group =
        Arc::new(ChildGroup::create(&root, &format!("headroom-soak-kubectl-{pid}")).unwrap());
    let name_of = |g: &ChildGroup| g.path().file_name().unwrap().to_string_lossy().into_owned();
    let (dns_pod, kubectl_pod) = (name_of(&dns_group), name_of(&kubectl_group));

    println!(
        "collector soak: {minutes} min; dnsperf at {QUERIES_PER_SECOND} queries/s → dnsmasq, \
         kubectl get pods every second → stand-in API server (TLS)"
    );
    println!(
        "| minute | dnsperf q/s | queries sent | counted | kubectl runs | API requests served | estimated | RSS MiB | events lost |"
    );
    println!(
        "|--------|-------------|--------------|---------|--------------|---------------------|-----------|---------|-------------|"
    );
    let (stop, runs) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let kubectl = kubectl_loop(
        server.clone(),
        kubectl_group.clone(),
        stop.clone(),
        runs.clone(),
    );
    let (mut sent_total, mut before, mut served_before) = (0, Counted::default(), 0);
    let mut rss = Vec::new();
    for minute in 1..=minutes {
        let (sent, qps) = dnsperf_minute(&names, &dns_group);
        sent_total += sent;
        thread::sleep(SETTLE);
        let now = counted(&collector, &dns_pod, &kubectl_pod);
        let served = server.requests_total();
        rss.push(collector.rss_mib());
        println!(
            "| {minute:>6} | {qps:>11.0} | {sent:>12} | {:>7} | {:>12} | {:>19} | {:>9} | {:>7.1} | {:>11} |",
            now.dns_queries - before.dns_queries,
            runs.load(Ordering::SeqCst),
            served - served_before,
            now.requests - before.requests,
            rss[rss.len() - 1],
            now.events_lost,
        );
        (before, served_before) = (now, served);
    }
    stop.store(true, Ordering::SeqCst);
    kubectl.join().unwrap();
    thread::sleep(SETTLE);
    let end = counted(&collector, &dns_pod, &kubectl_pod);
    let (served, accepted) = (server.requests_total(), server.connections_accepted());
    let (first, last) = (rss[0], rss[rss.len() - 1]);
    println!(
        "totals: DNS queries sent {sent_total}, counted {} ({}); API connections accepted \
         {accepted}, counted {} ({}); requests served {served}, estimated {} ({:+.1}%, target \
         within 10%); events lost {}; RSS minute 1 {first:.1} MiB, minute {} {last:.1} MiB \
         ({:+.1}%, target within 10%)",
        end.dns_queries,
        if end.dns_queries == sent_total {
            "exact"
        } else {
            "NOT exact"
        },
        end.connections,
        if end.connections == accepted {
            "exact"
        } else {
            "NOT exact"
        },
        end.requests,
        100.0 * (end.requests as f64 - served as f64) / served.max(1) as f64,
        end.events_lost,
        rss.len(),
        100.0 * (last - first) / first,
    );
    drop(collector);
    let _ = fs::remove_dir_all(&dir);
}
