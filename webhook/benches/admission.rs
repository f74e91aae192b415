//! AdmissionReview latency and throughput over HTTPS on loopback: the real webhook against
//! a bare axum + rustls handler that returns a constant allow, in the same run.
//!
//! `cargo bench -p webhook --bench admission` (what `cargo xtask bench` runs). Targets from
//! issue 5: p99 ≤ 2 ms at 1,000 requests/s; throughput ≥ 70% of the bare handler. Then a
//! row per profile-source fault (issue 15: a collector's `/profiles` or Prometheus down,
//! hanging 5 s, answering garbage or HTTP 500): every review answered within 100 ms.
//!
//! Knobs (environment): HEADROOM_BENCH_LATENCY_REQUESTS (default 5000, sent at 1,000/s),
//! HEADROOM_BENCH_THROUGHPUT_REQUESTS (default 200000), HEADROOM_BENCH_CONNECTIONS (default 8).

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use bytes::Bytes;
use support::{Client, Pki, Profiles, Review, start_server, web_deployment};
use tokio::sync::{Mutex, mpsc};

const RATE_PER_SECOND: u64 = 1000;
/// Alternating throughput rounds per target.
const ROUNDS: usize = 5;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The bare handler: same TLS stack, a constant allow.
async fn start_bare(pki: &Pki) -> SocketAddr {
    let dir = support::temp_dir("bench-bare");
    let (cert, key) = pki.write(&dir);
    let resolver =
        Arc::new(webhook::tls::ReloadingCert::new(cert, key).expect("bare handler certificate"));
    let tls = webhook::tls::server_config(resolver).expect("bare TLS config");
    let allow = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true,"status":{}}}"#;
    let router = Router::new().route(
        "/validate",
        post(move |_body: Bytes| async move {
            ([(header::CONTENT_TYPE, "application/json")], allow).into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(webhook::server::serve_tls(listener, tls, router));
    addr
}

/// How a profile source misbehaves in the fault rows (issue 15): the webhook fetches in
/// the background, so whatever the source does, a review must not wait for it (every
/// review fails open, no data yet; target: each answered within 100 ms).
#[derive(Clone, Copy)]
enum Fault {
    Down,
    Hangs5s,
    Garbage,
    Http500,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::Down, Fault::Hangs5s, Fault::Garbage, Fault::Http500];

    fn name(self) -> &'static str {
        match self {
            Fault::Down => "down",
            Fault::Hangs5s => "hangs 5 s",
            Fault::Garbage => "garbage",
            Fault::Http500 => "HTTP 500",
        }
    }
}

/// A source at `path` (`/profiles` for a collector, `/api/v1/query` for Prometheus)
/// showing `fault`; its base URL.
async fn start_faulty_source(path: &'static str, fault: Fault) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route(
        path,
        axum::routing::get(move || async move {
            match fault {
                Fault::Down => unreachable!("nothing serves a source that is down"),
                Fault::Hangs5s => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    (StatusCode::OK, "{}").into_response()
                }
                Fault::Garbage => (StatusCode::OK, "<html>proxy login</html>").into_response(),
                Fault::Http500 => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
                }
            }
        }),
    );
    // Down: the port was bound a moment ago and is closed again (connection refused).
    if !matches!(fault, Fault::Down) {
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    format!("http://{addr}")
}

/// A webhook whose one profile source (a collector or Prometheus) shows `fault`.
async fn start_faulty(collector: bool, fault: Fault) -> (SocketAddr, Pki) {
    let profiles = if collector {
        Profiles::Collectors(vec![start_faulty_source("/profiles", fault).await])
    } else {
        Profiles::Prometheus(start_faulty_source("/api/v1/query", fault).await)
    };
    let server =
        support::start_server_unready(profiles, 5000, &support::fixtures().join("budget.yaml"))
            .await;
    (server.running.https, server.pki)
}

async fn connections(addr: SocketAddr, pki: &Pki, n: usize) -> Vec<Client> {
    let config = pki.client_config(rustls::DEFAULT_VERSIONS);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(
            Client::connect(addr, config.clone())
                .await
                .expect("bench connection"),
        );
    }
    clients
}

async fn send(client: &mut Client, body: &Bytes) {
    let (status, _) = client.post("/validate", body.clone()).await;
    assert!(status.is_success(), "bench request failed: {status}");
}

/// Open loop at a fixed rate; latency counts from the moment a request is released to the
/// connection pool, so queueing behind slow responses is included. (Not from the nominal
/// schedule: tokio's timer has millisecond granularity, which would add up to 1 ms to every
/// sample.)
async fn latency_at_fixed_rate(
    clients: Vec<Client>,
    body: Bytes,
    requests: usize,
) -> Vec<Duration> {
    let (tx, rx) = mpsc::channel::<Instant>(requests);
    let rx = Arc::new(Mutex::new(rx));
    let mut workers = Vec::new();
    for mut client in clients {
        let (rx, body) = (rx.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let Some(released) = rx.lock().await.recv().await else {
                    break;
                };
                send(&mut client, &body).await;
                latencies.push(released.elapsed());
            }
            latencies
        }));
    }
    let start = Instant::now();
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SECOND);
    for i in 0..requests {
        let scheduled = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        tokio::time::sleep_until(scheduled.into()).await;
        if tx.send(Instant::now()).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut all = Vec::with_capacity(requests);
    for w in workers {
        all.extend(w.await.expect("latency worker"));
    }
    all.sort();
    all
}

/// Closed loop: every connection sends back to back until `requests` are done.
async fn throughput(clients: Vec<Client>, body: Bytes, requests: usize) -> f64 {
    let per_client = requests / clients.len().max(1);
    let start = Instant::now();
    let mut workers = Vec::new();
    for mut client in clients {
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            for _ in 0..per_client {
                send(&mut client, &body).await;
            }
            per_client
        }));
    }
    let mut done = 0;
    for w in workers {
        done += w.await.expect("throughput worker");
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Row {
    name: String,
    p50: Duration,
    p99: Duration,
    max: Duration,
    throughput: f64,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// One latency row: warm up, then `requests` at the fixed rate over `conns` connections.
async fn latency_row(
    name: String,
    (addr, pki): (SocketAddr, &Pki),
    body: &Bytes,
    conns: usize,
    requests: usize,
) -> Row {
    // Warm-up: connections, allocator, caches.
    let warm = connections(addr, pki, conns).await;
    throughput(warm, body.clone(), 2000).await;
    let clients = connections(addr, pki, conns).await;
    let latencies = latency_at_fixed_rate(clients, body.clone(), requests).await;
    Row {
        name,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        throughput: 0.0,
    }
}

/// The webhook and the bare handler: latency, then throughput in alternating rounds, so
/// both see the same background load (this machine is shared); each one's median round.
async fn healthy_rows(
    targets: [(&'static str, SocketAddr, &Pki); 2],
    body: &Bytes,
    conns: usize,
    (latency_requests, throughput_requests): (usize, usize),
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, addr, pki) in targets {
        rows.push(latency_row(name.into(), (addr, pki), body, conns, latency_requests).await);
    }
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for _ in 0..ROUNDS {
        for (i, (_, addr, pki)) in targets.iter().enumerate() {
            let clients = connections(*addr, pki, conns).await;
            rounds[i].push(throughput(clients, body.clone(), throughput_requests / ROUNDS).await);
        }
    }
    for (row, mut rates) in rows.iter_mut().zip(rounds) {
        rates.sort_by(f64::total_cmp);
        row.throughput = rates[rates.len() / 2];
    }
    rows
}

fn print_healthy(rows: &[Row]) {
    let bare = rows
        .iter()
        .find(|r| r.name.starts_with("bare"))
        .map_or(1.0, |r| r.throughput);
    println!();
    println!("| target              | p50 ms | p99 ms | max ms | throughput req/s | vs bare |");
    println!("|---------------------|--------|--------|--------|------------------|---------|");
    for r in rows {
        println!(
            "| {:<19} | {:>6} | {:>6} | {:>6} | {:>16.0} | {:>6.0}% |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.throughput,
            100.0 * r.throughput / bare
        );
    }
    let webhook = &rows[0];
    println!(
        "targets: p99 ≤ 2 ms at 1,000 req/s: {}; throughput ≥ 70% of bare: {}",
        met(webhook.p99 <= Duration::from_millis(2)),
        met(webhook.throughput >= 0.7 * bare)
    );
}

fn print_faults(rows: &[Row], requests: usize) {
    println!();
    println!(
        "Profile source faults: {requests} reviews at {RATE_PER_SECOND}/s each, every one \
         failing open (no data yet)"
    );
    println!("| profile source          | p50 ms | p99 ms | max ms |");
    println!("|-------------------------|--------|--------|--------|");
    for r in rows {
        println!(
            "| {:<23} | {:>6} | {:>6} | {:>6} |",
            r.name,
            ms(r.p50),
            ms(r.p99),
            ms(r.max)
        );
    }
    let worst = rows.iter().map(|r| r.max).max().unwrap_or_default();
    println!(
        "every review under a faulty source within 100 ms (worst {} ms): {}",
        ms(worst),
        met(worst <= Duration::from_millis(100))
    );
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

fn main() {
    let latency_requests = env_or("HEADROOM_BENCH_LATENCY_REQUESTS", 5000);
    let throughput_requests = env_or("HEADROOM_BENCH_THROUGHPUT_REQUESTS", 200_000);
    let conns = env_or("HEADROOM_BENCH_CONNECTIONS", 8).max(1);

    // Servers and load generator on separate runtimes, as they would be separate processes.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    let (server, bare_addr, bare_pki, faulty) = server_rt.block_on(async {
        let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
        let bare_pki = Pki::generate("bench bare CA");
        let bare = start_bare(&bare_pki).await;
        let mut faulty = Vec::new();
        for collector in [true, false] {
            for fault in Fault::ALL {
                let source = if collector { "collector" } else { "Prometheus" };
                let name = format!("{source} {}", fault.name());
                faulty.push((name, start_faulty(collector, fault).await));
            }
        }
        // The servers' tasks hold their state; they run on `server_rt`'s threads.
        (server, bare, bare_pki, faulty)
    });

    // A real review: the kubectl Deployment create, fully evaluated (allowed).
    let body = Bytes::from(
        serde_json::to_vec(&Review::create(web_deployment("web", 3)).build()).expect("body"),
    );

    // The engine alone, no network: parse, decide, serialise.
    let in_process = 20_000;
    let started = Instant::now();
    for _ in 0..in_process {
        let answer = server.state.review(&body).expect("review");
        std::hint::black_box(answer);
    }
    let per_review = started.elapsed() / in_process;

    println!(
        "AdmissionReview over HTTPS on loopback: {latency_requests} requests at {RATE_PER_SECOND}/s \
         over {conns} connections, then {throughput_requests} back to back in {ROUNDS} \
         alternating rounds (median round reported)"
    );
    let targets = [
        ("webhook", server.running.https, &server.pki),
        ("bare axum+rustls", bare_addr, &bare_pki),
    ];
    let (healthy, faults) = client_rt.block_on(async {
        let counts = (latency_requests, throughput_requests);
        let healthy = healthy_rows(targets, &body, conns, counts).await;
        let mut faults = Vec::new();
        for (name, (addr, pki)) in &faulty {
            let target = (*addr, pki);
            faults.push(latency_row(name.clone(), target, &body, conns, latency_requests).await);
        }
        (healthy, faults)
    });
    print_healthy(&healthy);
    println!(
        "in-process review (parse, decide, serialise; {} B body): {:.1} µs each",
        body.len(),
        per_review.as_secs_f64() * 1e6
    );
    print_faults(&faults, latency_requests);
}
