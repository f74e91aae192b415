//! `cargo xtask demo`: the main job on this machine with embedded defaults. Starts the
//! collector, makes API-server and DNS traffic from two cgroups that stand for pods —
//! kubectl against a loopback TLS stand-in for the API server, glibc lookups with a
//! Kubernetes search list against dnsmasq — and prints what the collector's /metrics
//! says about each, next to what the servers really saw.
use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{setup, shell};

mod admission;

const METRICS_ADDR: &str = "127.0.0.1:19977";
const DNS_ADDR: &str = "127.0.7.53";
/// The collector's profile rate window in the demo: one sampling interval (see the
/// demo budget's minMeasuredSeconds in admission.rs).
const DEMO_RATE_WINDOW: &str = "15s";
const RESOLV_CONF: &str = "search ns1.svc.cluster.local svc.cluster.local cluster.local\n\
                           options ndots:5\nnameserver 127.0.7.53\n";

/// A pod: its traffic, as shell commands run inside its cgroup.
struct DemoPod {
    name: &'static str,
    kubectl_gets: u32,
    lookups: &'static [&'static str],
    watch: bool,
}

const PODS: &[DemoPod] = &[
    DemoPod {
        name: "headroom-demo-chatty-agent",
        kubectl_gets: 6,
        lookups: &["example.com", "kubernetes.default", "example.com"],
        watch: true,
    },
    DemoPod {
        name: "headroom-demo-quiet-agent",
        kubectl_gets: 1,
        lookups: &["kubernetes.default.svc.cluster.local"],
        watch: false,
    },
];

pub fn run() -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!("the demo loads eBPF programs and creates cgroups: run `sudo -E cargo xtask demo`");
    }
    setup::run()?;
    eprintln!("xtask demo: building the collector, the webhook and the stand-in API server");
    // Exactly what the demo runs: each binary it starts from target/ is built here, so a
    // fresh clone works without a test run having built them first.
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "--quiet",
        "-p",
        "collector",
        "--bin",
        "headroom-collector",
        "--example",
        "standin_apiserver",
        "-p",
        "webhook",
        "--bin",
        "headroom-webhook",
    ]))?;
    let target = target_dir().join("debug");
    let scratch = std::env::temp_dir().join(format!("headroom-demo-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let resolv = scratch.join("resolv.conf");
    std::fs::write(&resolv, RESOLV_CONF)?;

    let mut apiserver = StandIn::start(&target.join("examples/standin_apiserver"))?;
    let dns = Background::spawn(
        Command::new("dnsmasq").args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={DNS_ADDR}"),
            "--port=53",
            "--address=/example.com/93.184.215.14",
            "--address=/kubernetes.default.svc.cluster.local/10.96.0.1",
            "--local=/cluster.local/",
            "--user=root",
            "--pid-file",
            "--log-queries",
            &format!("--log-facility={}", scratch.join("dnsmasq.log").display()),
        ]),
        "dnsmasq",
    )?;
    let root = cgroup2_root()?;
    let groups: Vec<Group> = PODS
        .iter()
        .map(|p| Group::create(&root, p.name))
        .collect::<anyhow::Result<_>>()?;

    let collector = Background::spawn(
        Command::new(target.join("headroom-collector")).args([
            "--listen",
            METRICS_ADDR,
            "--apiserver",
            &apiserver.addr,
            "--dns-server",
            &format!("{DNS_ADDR}:53"),
            // A pod counts in a profile once measured for the rate window (5m in a
            // cluster); the demo measures for well under a minute, so one sampling
            // interval stands for it here (and the webhook's budget says so too).
            "--profile-rate-window",
            DEMO_RATE_WINDOW,
        ]),
        "headroom-collector",
    )?;
    wait_for_http(
        &format!("http://{METRICS_ADDR}/readyz"),
        Duration::from_secs(20),
    )?;
    println!(
        "collector ready; stand-in API server at {}, dnsmasq at {DNS_ADDR}:53\n",
        apiserver.addr
    );

    let kubectl = format!(
        "kubectl --kubeconfig {} --cache-dir {}",
        apiserver.kubeconfig,
        scratch.join("kube-cache").display()
    );
    // One request from each pod first: the collector's profile store samples every 15 s
    // and a rate is an increase between samples, so each pod needs a sample before the
    // traffic that the profiles should show.
    for group in &groups {
        let _ = group
            .spawn(&format!("{kubectl} get pods -o name > /dev/null"))?
            .wait();
    }
    wait_for_profile_items(Duration::from_secs(40))?;
    let mut watches = Vec::new();
    for (pod, group) in PODS.iter().zip(&groups) {
        let mut script = String::new();
        for _ in 0..pod.kubectl_gets {
            script.push_str(&format!("{kubectl} get pods -o name > /dev/null; "));
        }
        for name in pod.lookups {
            script.push_str(&format!(
                "unshare -m bash -c 'mount --bind {} /etc/resolv.conf && getent ahosts {name} > /dev/null'; ",
                resolv.display()
            ));
        }
        println!(
            "{}: {} × kubectl get pods{}, lookups of {}",
            pod.name,
            pod.kubectl_gets,
            if pod.watch {
                ", kubectl get pods --watch"
            } else {
                ""
            },
            pod.lookups.join(", ")
        );
        if pod.watch {
            watches.push(group.spawn(&format!(
                "exec {kubectl} get pods --watch -o name > /dev/null"
            ))?);
        }
        // getent exits 2 for a name it could not resolve; the traffic is what counts.
        let _ = group.spawn(&script)?.wait();
    }
    // Let the watch stream a little, and the collector settle and publish.
    thread::sleep(Duration::from_secs(4));
    let metrics = http_get(&format!("http://{METRICS_ADDR}/metrics"))?;
    let names = http_get(&format!("http://{METRICS_ADDR}/dns/names"))?;
    for mut watch in watches {
        let _ = watch.kill();
        let _ = watch.wait();
    }
    println!("\nwaiting for the collector's per-pod profiles (rates need two samples 15 s apart)…");
    let profiles = wait_for_profiles(Duration::from_secs(60))?;
    drop(collector);
    let served = apiserver.finish()?;
    drop(dns);

    println!("\nwhat headroom-collector's /metrics says, per workload:\n");
    print!(
        "{}",
        render(&summarise(&metrics), PODS.iter().map(|p| p.name))
    );
    println!("\nground truth: the stand-in API server served {served}");
    let queries = std::fs::read_to_string(scratch.join("dnsmasq.log"))
        .map(|log| log.lines().filter(|l| l.contains("query[")).count())
        .unwrap_or(0);
    println!("ground truth: dnsmasq logged {queries} queries");
    print_dns_names(&names)?;
    admission::run(&profiles, &scratch, &target)?;
    drop(groups);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The names each demo pod asked for most, from /dns/names: where the search list's
/// tries (ndots:5) show.
fn print_dns_names(body: &str) -> anyhow::Result<()> {
    let list: serde_json::Value = serde_json::from_str(body).context("/dns/names is not JSON")?;
    println!(
        "
what headroom-collector's /dns/names says each pod asked for most:"
    );
    for item in list["items"].as_array().into_iter().flatten() {
        let workload = item["workload"].as_str().unwrap_or_default();
        if !PODS.iter().any(|p| p.name == workload) {
            continue;
        }
        println!("  {workload}:");
        for name in item["names"].as_array().into_iter().flatten().take(8) {
            println!(
                "    {:>3} × {}",
                name["queries"].as_u64().unwrap_or(0),
                name["name"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Polls the collector's /profiles until every demo pod has a sample.
fn wait_for_profile_items(limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&http_get(&format!("http://{METRICS_ADDR}/profiles"))?)?;
        let listed = |name: &str| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|i| i["workload"]["name"] == name))
        };
        if PODS.iter().all(|p| listed(p.name)) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!("the collector's /profiles did not list the demo pods after {limit:?}");
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Polls the collector's /profiles until the chatty agent has a measured request rate.
fn wait_for_profiles(limit: Duration) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let list: serde_json::Value =
            serde_json::from_str(&http_get(&format!("http://{METRICS_ADDR}/profiles"))?)?;
        let measured = list["items"].as_array().is_some_and(|items| {
            items.iter().any(|i| {
                i["workload"]["name"] == PODS[0].name
                    && i["steady"]["apiserverRequestsPerSecond"].as_f64() > Some(0.0)
            })
        });
        if measured {
            return Ok(list);
        }
        if start.elapsed() > limit {
            bail!(
                "the collector's /profiles had no measured rate for {} after {limit:?}",
                PODS[0].name
            );
        }
        thread::sleep(Duration::from_secs(1));
    }
}

/// Per workload: sums of the series that matter, from Prometheus text.
fn summarise(text: &str) -> BTreeMap<String, BTreeMap<&'static str, f64>> {
    const WANTED: &[(&str, &str)] = &[
        ("headroom_apiserver_requests_total", "API req"),
        ("headroom_apiserver_connections_total", "API conns"),
        ("headroom_apiserver_received_bytes_total", "API recv B"),
        ("headroom_apiserver_open_streams", "streams"),
        ("headroom_dns_queries_total", "DNS q"),
        ("headroom_dns_lookups_total", "lookups"),
        ("headroom_dns_search_expansions_total", "expansions"),
    ];
    let mut out: BTreeMap<String, BTreeMap<&'static str, f64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let column =
            if name == "headroom_dns_responses_total" && labels.contains("rcode=\"NXDOMAIN\"") {
                "NXDOMAIN"
            } else if let Some((_, column)) = WANTED.iter().find(|(n, _)| *n == name) {
                *column
            } else {
                continue;
            };
        let workload = labels
            .split("\",")
            .find_map(|kv| kv.strip_prefix("workload=\""))
            .map(|w| w.trim_end_matches("\"}").trim_end_matches('"').to_string())
            .unwrap_or_default();
        *out.entry(workload).or_default().entry(column).or_default() +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn render<'a>(
    rows: &BTreeMap<String, BTreeMap<&'static str, f64>>,
    first: impl Iterator<Item = &'a str>,
) -> String {
    const COLUMNS: &[&str] = &[
        "API req",
        "API conns",
        "API recv B",
        "streams",
        "DNS q",
        "NXDOMAIN",
        "lookups",
        "expansions",
    ];
    let mut order: Vec<&str> = first.collect();
    let rest: Vec<&str> = rows
        .keys()
        .map(String::as_str)
        .filter(|w| !order.contains(w))
        .collect();
    order.extend(rest);
    let width = order.iter().map(|w| w.len()).max().unwrap_or(8).max(8);
    let mut text = format!("{:<width$}", "WORKLOAD");
    for c in COLUMNS {
        text.push_str(&format!("  {c:>10}"));
    }
    text.push('\n');
    for workload in order {
        let Some(row) = rows.get(workload) else {
            continue;
        };
        text.push_str(&format!("{workload:<width$}"));
        for c in COLUMNS {
            text.push_str(&format!("  {:>10}", row.get(c).copied().unwrap_or(0.0)));
        }
        text.push('\n');
    }
    text
}

/// The stand-in API server (collector's example), fed through its stdin.
struct StandIn {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
    addr: String,
    kubeconfig: String,
}

impl StandIn {
    fn start(bin: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("stand-in stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .map(str::to_string)
                .with_context(|| format!("stand-in API server printed {line:?}"))
        };
        let (addr, kubeconfig) = (field("addr=")?, field("kubeconfig=")?);
        Ok(Self {
            child,
            stdin,
            stdout,
            addr,
            kubeconfig,
        })
    }

    /// Stops it and returns its ground-truth line.
    fn finish(&mut self) -> anyhow::Result<String> {
        drop(self.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest)?;
        let _ = self.child.wait();
        Ok(rest.trim().trim_start_matches("served ").to_string())
    }
}

/// A child process stopped (SIGTERM, then waited for) when dropped.
struct Background {
    child: Child,
}

impl Background {
    fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Self> {
        let child = cmd.spawn().with_context(|| format!("starting {what}"))?;
        Ok(Self { child })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {url}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

fn wait_for_http(url: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        match http_get(url) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > limit => {
                return Err(e.context(format!("waiting for {url}")));
            }
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shell::workspace_root().join("target"))
}

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let out = shell::output(Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(PathBuf::from)
        .context("no cgroup v2 hierarchy is mounted")
}

/// A demo cgroup, removed on drop.
struct Group {
    path: PathBuf,
}

impl Group {
    fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        let path = root.join(name);
        if !path.exists() {
            std::fs::create_dir(&path)
                .with_context(|| format!("creating cgroup {}", path.display()))?;
        }
        Ok(Self { path })
    }

    /// Runs a bash script whose shell joins this cgroup first.
    fn spawn(&self, script: &str) -> anyhow::Result<Child> {
        let full = format!(
            "echo $$ > {} && {script}",
            self.path.join("cgroup.procs").display()
        );
        Command::new("bash")
            .arg("-c")
            .arg(full)
            .spawn()
            .context("starting bash")
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
