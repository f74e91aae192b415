//! The collector's `/profiles` against the shipped recording rules on a real Prometheus
//! (Debian package) scraping the real collector binary, for the same workload and the
//! same traffic: a child cgroup resolving names on dnsmasq and listing pods on the
//! stand-in API server.
//!
//! Needs root (the collector loads its kernel programs). The rules' group evaluates
//! every 30 s (its own `interval`, which wins over the global evaluation interval) and
//! a profile's steady figure is a p95 over time, so the comparison waits for two
//! evaluations after the traffic stopped: then the p95 over each side's samples is the
//! 5-minute rate of the whole burst, which both compute from the same counters.
//! (Startup figures need a Pod's start time, which a standalone collector has not.)
//!
//! The steady figure is compared only as far as the two are meant to agree in a run this
//! short: the collector counts a pod in its profile only after a full 5-minute rate
//! window (before that its rate is diluted by the time before it existed), so the young
//! workload is listed with `pods: 0` and no steady figure, while the rules' p95 holds the
//! diluted rate; the webhook treats either as unmeasured until `minMeasuredSeconds`.
#[path = "support/mod.rs"]
mod support;

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use collector::cgroup::{self, ChildGroup};
use serde_json::Value;
use support::{
    apiserver::{ApiServer, ServerConfig},
    dns::{Dnsmasq, EXAMPLE_COM},
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/prometheus/headroom-rules.yaml"
);
/// How long the measured traffic runs.
const TRAFFIC: Duration = Duration::from_secs(30);
/// The bar: the rule and /profiles agree within 5%.
const TOLERANCE: f64 = 0.05;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test runs the collector, which loads eBPF programs: run it as root"
    );
}

/// A port nothing listens on now (the collector and Prometheus need one given).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A child process stopped with SIGTERM (then killed) when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).expect("create log");
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        Self { name, child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` (with `-G --data-urlencode` pairs) as JSON; `None` while the server is not
/// up or answers badly.
fn get_json(url: &str, params: &[(&str, &str)]) -> Option<Value> {
    let mut command = Command::new("curl");
    command.args(["-sS", "--fail", "--max-time", "5", "-G", url]);
    for (key, value) in params {
        command
            .arg("--data-urlencode")
            .arg(format!("{key}={value}"));
    }
    let out = command.stdin(Stdio::null()).output().expect("run curl");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(250));
    }
}

struct Prometheus {
    /// Stops Prometheus when dropped.
    _process: Process,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: SocketAddr) -> Self {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {RULES}\n\
                 scrape_configs:\n  - job_name: headroom\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut process = Process::spawn("prometheus", command, dir.join("prometheus.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_until("Prometheus to be ready", Duration::from_secs(30), || {
            process.assert_running();
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &format!("{url}/-/ready")])
                .status()
                .ok()?
                .success()
                .then_some(())
        });
        Self {
            _process: process,
            url,
        }
    }

    /// The instant query's single value, if it has one.
    fn value(&self, query: &str) -> Option<f64> {
        let body = get_json(&format!("{}/api/v1/query", self.url), &[("query", query)])?;
        let result = body["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{query}: more than one series: {body}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// When the rules' group last ran.
    fn last_evaluation(&self) -> Option<String> {
        let body = get_json(&format!("{}/api/v1/rules", self.url), &[])?;
        body["data"]["groups"]
            .as_array()?
            .iter()
            .find(|g| g["name"] == "headroom-profiles")?["lastEvaluation"]
            .as_str()
            .map(str::to_owned)
    }
}

/// Runs `script` in bash inside `group`, in the background.
fn spawn_in(group: &ChildGroup, script: &str) -> Child {
    Command::new("bash")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && {script}",
            group.procs_file().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run bash")
}

#[test]
fn recording_rules_match_profiles() {
    require_root();
    let dir = std::env::temp_dir().join(format!("headroom-prometheus-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch directory");

    let dns = Dnsmasq::start();
    let api = ApiServer::start(ServerConfig::default());
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut collector_cmd = Command::new(env!("CARGO_BIN_EXE_headroom-collector"));
    collector_cmd.args([
        "--standalone",
        "--node-name",
        "test-node",
        "--listen",
        &listen.to_string(),
        "--apiserver",
        &api.addr().to_string(),
        "--dns-server",
        &dns.socket_addr().to_string(),
    ]);
    let mut collector = Process::spawn(
        "headroom-collector",
        collector_cmd,
        dir.join("collector.log"),
    );
    let profiles_url = format!("http://{listen}/profiles");
    wait_until("the collector's /profiles", Duration::from_secs(30), || {
        collector.assert_running();
        get_json(&profiles_url, &[])
    });
    let prometheus = Prometheus::start(&dir, listen);

    let root = cgroup::find_root().expect("cgroup v2 mount");
    let workload = format!("headroom-prom-{}", std::process::id());
    let group = ChildGroup::create(&root, &workload).expect("create cgroup");
    let dig = format!(
        "dig @{} +tries=1 +time=2 +short {EXAMPLE_COM} A > /dev/null",
        dns.addr()
    );
    let curl = format!(
        "curl -sS --fail --cacert {} -o /dev/null {}",
        api.ca_path().display(),
        api.url("/api/v1/namespaces/default/pods")
    );
    // One of each first, so every series exists (and Prometheus has its first sample)
    // before the measured burst: a rate counts from a series' first sample.
    let status = spawn_in(&group, &format!("{dig} && {curl}"))
        .wait()
        .expect("warm-up");
    assert!(status.success(), "warm-up traffic failed");
    let selector = format!("{{workload=\"{workload}\"}}");
    wait_until(
        "Prometheus to scrape every series",
        Duration::from_secs(20),
        || {
            [
                "headroom_apiserver_requests_total",
                "headroom_apiserver_received_bytes_total",
                "headroom_apiserver_connections_total",
            ]
            .iter()
            .all(|m| {
                prometheus
                    .value(&format!("{m}{selector}"))
                    .is_some_and(|v| v > 0.0)
            })
            .then_some(())
            .filter(|()| {
                prometheus
                    .value(&format!("sum(headroom_dns_queries_total{selector})"))
                    .is_some_and(|v| v > 0.0)
            })
        },
    );

    let burst = spawn_in(
        &group,
        &format!(
            "end=$((SECONDS + {})); while [ $SECONDS -lt $end ]; do {dig}; {curl}; sleep 0.1; done",
            TRAFFIC.as_secs()
        ),
    )
    .wait_with_output()
    .expect("traffic");
    assert!(burst.status.success(), "traffic failed");
    let served = api.requests_total();
    let queried = dns.queries().len();
    assert!(
        served > 50 && queried > 50,
        "too little traffic: {served} requests, {queried} queries"
    );
    // The estimator judges a request up to a second after it, a snapshot is published
    // every 2 s and scraped every 1 s: then both sides hold the final counts.
    thread::sleep(Duration::from_secs(4));
    let settled = prometheus.last_evaluation();
    let mut seen = Vec::new();
    wait_until(
        "two rule evaluations after the traffic",
        Duration::from_secs(75),
        || {
            collector.assert_running();
            let last = prometheus.last_evaluation();
            if last != settled && last.is_some() && !seen.contains(&last) {
                seen.push(last);
            }
            (seen.len() >= 2).then_some(())
        },
    );

    let list = get_json(&profiles_url, &[]).expect("GET /profiles");
    assert_eq!(list["apiVersion"], "headroom.dev/v1alpha1");
    assert_eq!(list["node"], "test-node");
    let item = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|i| i["workload"]["name"] == workload.as_str())
        .unwrap_or_else(|| panic!("no profile for {workload}: {list}"))
        .clone();
    assert_eq!(item["workload"]["kind"], "node");
    // Measured for well under the rate window: listed, not yet counted.
    assert_eq!(item["pods"], 0, "{item}");
    let measured = item["measuredSeconds"].as_u64().expect("measuredSeconds");
    assert!(
        (TRAFFIC.as_secs()..300).contains(&measured),
        "measured for {measured}s: {item}"
    );

    let mut report = Vec::new();
    for (field, rule) in [
        ("apiserverRequestsPerSecond", "apiserver_requests"),
        (
            "apiserverReceivedBytesPerSecond",
            "apiserver_received_bytes",
        ),
        ("apiserverConnectionsPerSecond", "apiserver_connections"),
        ("dnsQueriesPerSecond", "dns_queries"),
    ] {
        assert_eq!(item["steady"][field], 0.0, "not yet a full window: {item}");
        let name = format!("headroom:workload_{rule}:rate5m");
        let ours = item["current"][field].as_f64().expect("a number");
        let theirs = prometheus
            .value(&format!("{name}{selector}"))
            .unwrap_or_else(|| panic!("{name}{selector} has no value"));
        let off = (theirs - ours).abs() / ours;
        report.push(format!(
            "current {field:32} /profiles {ours:12.4}  rule {theirs:12.4}  off {:5.2}%",
            off * 100.0
        ));
        assert!(ours > 0.0, "current.{field} is 0 for traffic that ran");
        assert!(
            off <= TOLERANCE,
            "current.{field}: /profiles says {ours}, {name} says {theirs}\n{}",
            report.join("\n")
        );
    }
    eprintln!(
        "{served} requests, {queried} DNS queries in {TRAFFIC:?}\n{}",
        report.join("\n")
    );

    drop(prometheus);
    drop(collector);
    drop(group);
    let _ = fs::remove_dir_all(&dir);
}
