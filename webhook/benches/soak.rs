//! The webhook soak (`cargo xtask soak`, not in CI): the real `headroom-webhook serve`
//! binary for HEADROOM_SOAK_MINUTES (default 10) at 500 AdmissionReviews/s over HTTPS and
//! HTTP/2, as the API server calls it, with a mix of recorded bodies: allowed (the kubectl
//! Deployment create), denied (the outage-shaped DaemonSet, `scale --replicas=1000`) and
//! invalid (a recorded body cut in half: a 400). An error is a failed request or an answer
//! other than the body's expected one. Prints a row per minute: requests, errors, p50/p99
//! latency and the webhook's RSS; then minute 1's RSS against the last minute's.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use support::{H2Client, Pki};
use tokio::sync::mpsc;

const RATE_PER_SECOND: u64 = 500;
/// HTTP/2 connections the load is spread over (the API server keeps a few per webhook).
const CONNECTIONS: usize = 4;
const MINUTE: Duration = Duration::from_secs(60);

/// What a body must get back.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allowed,
    Denied,
    BadRequest,
}

/// The mix, one entry per tenth of the requests.
fn bodies() -> Vec<(Bytes, Expect)> {
    let review = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("demo/reviews")
            .join(name);
        Bytes::from(std::fs::read(path).expect("a recorded review"))
    };
    let allowed = review("deployment-web-create.json");
    let denied = review("daemonset-agent-create.json");
    let scale = review("deployment-web-scale-1000.json");
    let invalid = allowed.slice(..allowed.len() / 2);
    let mut mix = Vec::new();
    mix.extend(std::iter::repeat_n((allowed, Expect::Allowed), 4));
    mix.extend(std::iter::repeat_n((denied, Expect::Denied), 2));
    mix.extend(std::iter::repeat_n((scale, Expect::Denied), 2));
    mix.extend(std::iter::repeat_n((invalid, Expect::BadRequest), 2));
    mix
}

/// Whether the answer is the one `expect`ed.
fn as_expected(status: axum::http::StatusCode, body: &[u8], expect: Expect) -> bool {
    let allowed = || {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["response"]["allowed"].as_bool())
    };
    match expect {
        Expect::Allowed => status == 200 && allowed() == Some(true),
        Expect::Denied => status == 200 && allowed() == Some(false),
        Expect::BadRequest => status == 400,
    }
}

/// The webhook binary on loopback, killed when dropped.
struct Webhook {
    child: Child,
    https: SocketAddr,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Webhook {
    fn start(dir: &Path, profiles: &Path) -> Webhook {
        let log = dir.join("webhook.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_headroom-webhook"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--nodes", "5000", "--refresh-seconds", "5"])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .arg("--budget")
            .arg(support::fixtures().join("budget.yaml"))
            .arg("--profiles")
            .arg(profiles)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("run headroom-webhook");
        for _ in 0..3000 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let https = text
                .lines()
                .filter(|l| l.contains("headroom webhook serving"))
                .flat_map(str::split_whitespace)
                .find_map(|w| w.strip_prefix("https="))
                .and_then(|a| a.parse().ok());
            if let Some(https) = https {
                return Webhook { child, https };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the webhook did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

/// One answered (or failed) request: its minute, latency and whether it was as expected.
struct Sample {
    minute: usize,
    latency: Duration,
    ok: bool,
}

struct MinuteRow {
    requests: usize,
    errors: usize,
    p50: Duration,
    p99: Duration,
    rss_mib: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sends at the fixed rate for `minutes`; each request on its own task (HTTP/2 streams
/// multiplexed over [`CONNECTIONS`] connections), its latency from its release.
async fn load(clients: Vec<H2Client>, minutes: usize, samples: mpsc::UnboundedSender<Sample>) {
    let mix = bodies();
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SECOND);
    let total = RATE_PER_SECOND as usize * 60 * minutes;
    for i in 0..total {
        let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let (body, expect) = mix[i % mix.len()].clone();
        let mut client = clients[i % clients.len()].clone();
        let samples = samples.clone();
        let minute = (due - start).as_secs() as usize / 60;
        tokio::spawn(async move {
            let released = Instant::now();
            let ok = match client.post("/validate", body).await {
                Ok((status, answer)) => as_expected(status, &answer, expect),
                Err(_) => false,
            };
            let _ = samples.send(Sample {
                minute,
                latency: released.elapsed(),
                ok,
            });
        });
    }
}

fn main() {
    let minutes: usize = std::env::var("HEADROOM_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let dir: PathBuf = support::temp_dir("soak-webhook");
    let pki = Pki::generate("soak CA");
    pki.write(&dir);
    let profiles = support::fresh_profiles("profiles-outage.json", &dir);
    let webhook = Webhook::start(&dir, &profiles);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "webhook soak: {minutes} min at {RATE_PER_SECOND} reviews/s over HTTPS/HTTP2 ({CONNECTIONS} \
         connections); mix: 40% allowed, 40% denied, 20% invalid (400)"
    );
    println!("| minute | requests | errors | p50 ms | p99 ms | RSS MiB |");
    println!("|--------|----------|--------|--------|--------|---------|");
    let rows = runtime.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(
                H2Client::connect(webhook.https, &pki)
                    .await
                    .expect("h2 connection"),
            );
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let sender = tokio::spawn(load(clients, minutes, tx));
        let mut rows = Vec::new();
        let mut current: Vec<Sample> = Vec::new();
        let mut minute = 0;
        let start = Instant::now();
        loop {
            // The profiles are measured anew each minute, as collectors' would be.
            let end = start + MINUTE * u32::try_from(minute + 1).unwrap_or(u32::MAX);
            let next = tokio::time::timeout_at((end + Duration::from_secs(2)).into(), rx.recv());
            match next.await {
                // A request of the last minute answered after this one's first.
                Ok(Some(sample)) if sample.minute <= minute => current.push(sample),
                Ok(Some(sample)) => {
                    rows.push(row(minute, &mut current, &webhook));
                    support::fresh_profiles("profiles-outage.json", &dir);
                    minute = sample.minute;
                    current.push(sample);
                }
                Ok(None) | Err(_) => {
                    rows.push(row(minute, &mut current, &webhook));
                    break;
                }
            }
        }
        sender.await.expect("load generator");
        rows
    });
    let errors: usize = rows.iter().map(|r| r.errors).sum();
    let requests: usize = rows.iter().map(|r| r.requests).sum();
    let (first, last) = (rows[0].rss_mib, rows[rows.len() - 1].rss_mib);
    println!(
        "total: {requests} requests, {errors} errors (target 0); RSS minute 1 {first:.1} MiB, \
         minute {} {last:.1} MiB ({:+.1}%, target within 10%)",
        rows.len(),
        100.0 * (last - first) / first
    );
}

fn row(minute: usize, samples: &mut Vec<Sample>, webhook: &Webhook) -> MinuteRow {
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let row = MinuteRow {
        requests: samples.len(),
        errors: samples.iter().filter(|s| !s.ok).count(),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        rss_mib: webhook.rss_mib(),
    };
    println!(
        "| {:>6} | {:>8} | {:>6} | {:>6.3} | {:>6.3} | {:>7.1} |",
        minute + 1,
        row.requests,
        row.errors,
        row.p50.as_secs_f64() * 1000.0,
        row.p99.as_secs_f64() * 1000.0,
        row.rss_mib
    );
    samples.clear();
    row
}
