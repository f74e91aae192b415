//! Real clients (kubectl, curl, a hyper HTTP/2 client) against the loopback TLS test API
//! server. No kernel programs: the server's own tap stands in for the kernel's segment
//! events.
mod support;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use collector::apiserver::{Estimator, Owner};
use support::apiserver::{ApiServer, KernelEvent, ServerConfig, kernel_events, monotonic_ns};

const PODS: &str = "/api/v1/namespaces/default/pods";

/// Runs a client command to completion; a missing client fails the test (never skips).
fn run(mut cmd: Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a client, lets it run for `open`, then kills it (a watch someone walks away from).
fn run_for(mut cmd: Command, open: Duration) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    thread::sleep(open);
    assert!(
        child.try_wait().expect("poll client").is_none(),
        "{cmd:?} exited early"
    );
    child.kill().expect("kill client");
    let _ = child.wait();
}

/// A traffic pattern: a name, the command line it stands for, and how to run it.
struct Pattern {
    name: &'static str,
    command: &'static str,
    tls12_only: bool,
    run: fn(&ApiServer),
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "kubectl-get-pods",
        command: "kubectl get pods (discovery, then a Table LIST), twice",
        tls12_only: false,
        run: |s| {
            for _ in 0..2 {
                let mut cmd = s.kubectl();
                cmd.args(["get", "pods"]);
                run(cmd);
            }
        },
    },
    Pattern {
        name: "kubectl-get-raw",
        command: "kubectl get --raw /api/v1/namespaces/default/pods, 5 times",
        tls12_only: false,
        run: |s| {
            for _ in 0..5 {
                let mut cmd = s.kubectl();
                cmd.args(["get", "--raw", PODS]);
                run(cmd);
            }
        },
    },
    Pattern {
        name: "kubectl-watch",
        command: "kubectl get pods --watch, killed after 3 s",
        tls12_only: false,
        run: |s| {
            let mut cmd = s.kubectl();
            cmd.args(["get", "pods", "--watch"]);
            run_for(cmd, Duration::from_secs(3));
        },
    },
    Pattern {
        name: "curl-h1-keepalive",
        command: "curl --http1.1 with 8 URLs on one command line (one kept-alive connection)",
        tls12_only: false,
        run: |s| {
            let mut cmd = s.curl();
            cmd.arg("--http1.1");
            for path in [
                "/version", "/api", "/apis", "/api/v1", PODS, PODS, "/api", PODS,
            ] {
                cmd.arg(s.url(path)).arg("-o").arg("/dev/null");
            }
            run(cmd);
        },
    },
    Pattern {
        name: "curl-h1-keepalive-tls12",
        command: "curl --http1.1 with 8 URLs, server offers TLS 1.2 only",
        tls12_only: true,
        run: |s| {
            let mut cmd = s.curl();
            cmd.arg("--http1.1");
            for path in [
                "/version", "/api", "/apis", "/api/v1", PODS, PODS, "/api", PODS,
            ] {
                cmd.arg(s.url(path)).arg("-o").arg("/dev/null");
            }
            run(cmd);
        },
    },
    Pattern {
        name: "curl-h1-conn-per-request",
        command: "curl --http1.1 -H 'Connection: close' with 6 URLs (a connection each)",
        tls12_only: false,
        run: |s| {
            let mut cmd = s.curl();
            cmd.args(["--http1.1", "-H", "Connection: close"]);
            for _ in 0..6 {
                cmd.arg(s.url(PODS)).arg("-o").arg("/dev/null");
            }
            run(cmd);
        },
    },
    Pattern {
        name: "curl-h2-parallel",
        command: "curl --http2 --parallel with 12 URLs (multiplexed on one connection)",
        tls12_only: false,
        run: |s| {
            let mut cmd = s.curl();
            cmd.args(["--http2", "--parallel", "--parallel-max", "12"]);
            for i in 0..12 {
                let path = if i % 2 == 0 { PODS } else { "/api/v1" };
                cmd.arg(s.url(path)).arg("-o").arg("/dev/null");
            }
            run(cmd);
        },
    },
    Pattern {
        name: "curl-h2-parallel-tls12",
        command: "curl --http2 --parallel with 12 URLs, server offers TLS 1.2 only",
        tls12_only: true,
        run: |s| {
            let mut cmd = s.curl();
            cmd.args(["--http2", "--parallel", "--parallel-max", "12"]);
            for i in 0..12 {
                let path = if i % 2 == 0 { PODS } else { "/api/v1" };
                cmd.arg(s.url(path)).arg("-o").arg("/dev/null");
            }
            run(cmd);
        },
    },
    Pattern {
        name: "rust-h2-concurrent",
        command: "hyper http2 client: 40 GETs on one connection, 10 in flight",
        tls12_only: false,
        run: |s| {
            let statuses = s.rust_h2_client(PODS, 40, 10);
            assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
        },
    },
    Pattern {
        name: "curl-h1-watch",
        command: "curl --http1.1 GET pods?watch=1&timeoutSeconds=3 (a chunked stream that ends)",
        tls12_only: false,
        run: |s| {
            let mut cmd = s.curl();
            cmd.arg("--http1.1")
                .arg(s.url(&format!("{PODS}?watch=1&timeoutSeconds=3")));
            run(cmd);
        },
    },
];

fn start(pattern: &Pattern) -> ApiServer {
    ApiServer::start(ServerConfig {
        tls12_only: pattern.tls12_only,
        ..ServerConfig::default()
    })
}

/// Waits until every connection the server logged has closed (the tap is complete).
fn settle(server: &ApiServer) {
    let closed = server.wait_for(Duration::from_secs(5), |s| {
        s.connections().iter().all(|c| c.closed_ns.is_some())
    });
    assert!(closed, "connections still open after the client exited");
}

/// Re-records the estimator's fixtures from real clients:
/// `cargo test -p collector --test apiserver_harness -- --ignored record_fixtures`.
#[test]
#[ignore = "rewrites collector/src/apiserver/fixtures; run by hand when the clients change"]
fn record_fixtures() {
    for pattern in PATTERNS {
        let server = start(pattern);
        (pattern.run)(&server);
        settle(&server);
        let text = server.fixture(pattern.name, pattern.command);
        let path = support::apiserver::fixtures_dir().join(format!("{}.tap", pattern.name));
        std::fs::write(&path, text).expect("write fixture");
        println!(
            "{}: {} requests, {} connections",
            pattern.name,
            server.requests_total(),
            server.connections_accepted()
        );
    }
}

const OWNER: Owner = Owner {
    cgroup_id: 7,
    tgid: 4242,
};

/// Feeds every logged connection, as kernel events in time order, to a fresh estimator.
fn estimate(server: &ApiServer, now_ns: u64) -> Estimator {
    let mut events: Vec<KernelEvent> = server
        .connections()
        .iter()
        .flat_map(|c| kernel_events(c, c.id, OWNER.cgroup_id, OWNER.tgid))
        .collect();
    events.sort_by_key(KernelEvent::ts_ns);
    let mut est = Estimator::default();
    for ev in &events {
        match ev {
            KernelEvent::Connect(e) => est.on_connect(e),
            KernelEvent::Segment(e) => est.on_segment(e),
            KernelEvent::Close(e) => est.on_close(e),
        }
    }
    est.tick(now_ns);
    est
}

/// Runs one pattern with real clients and holds the estimate to 10 % of what the server
/// served; also checks the tap's own accounting against the server's counters.
fn check(name: &str) {
    let pattern = PATTERNS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pattern {name}"));
    let server = start(pattern);
    (pattern.run)(&server);
    settle(&server);
    let conns = server.connections();
    assert_eq!(conns.len() as u64, server.connections_accepted(), "{name}");
    let tapped: u64 = conns
        .iter()
        .flat_map(|c| &c.chunks)
        .filter(|ch| ch.direction == collector_ebpf::event::EGRESS)
        .map(|ch| u64::from(ch.len))
        .sum();
    assert_eq!(
        tapped,
        server.bytes_read(),
        "{name}: tap and byte counter disagree"
    );
    let served = server.requests_total();
    let served_logged: u64 = conns.iter().map(|c| c.requests.len() as u64).sum();
    assert_eq!(served, served_logged, "{name}");
    // Long after the last event: everything pending is judged.
    let est = estimate(&server, monotonic_ns() + 10_000_000_000);
    let totals = est.owner(&OWNER).copied().unwrap_or_default();
    println!(
        "{name}: served {served} (h1 {}, h2 {}), estimated {}, connections {}",
        server.requests(support::apiserver::Protocol::Http1),
        server.requests(support::apiserver::Protocol::Http2),
        totals.requests,
        totals.connections_opened
    );
    assert!(served > 0, "{name}: the client made no request");
    assert!(
        totals.requests.abs_diff(served) * 10 <= served,
        "{name}: served {served}, estimated {} (more than 10 % off); the tap:\n{}",
        totals.requests,
        server.fixture(name, pattern.command)
    );
    assert_eq!(
        totals.connections_opened,
        server.connections_accepted(),
        "{name}"
    );
    assert_eq!(totals.connections_open, 0, "{name}");
    assert_eq!(totals.open_streams, 0, "{name}: a stream left open");
}

macro_rules! pattern_tests {
    ($($test:ident => $name:literal,)*) => {$(
        #[test]
        fn $test() {
            check($name);
        }
    )*};
}

pattern_tests! {
    kubectl_get_pods_within_10_percent => "kubectl-get-pods",
    kubectl_get_raw_repeated_within_10_percent => "kubectl-get-raw",
    kubectl_watch_within_10_percent => "kubectl-watch",
    curl_http1_keepalive_within_10_percent => "curl-h1-keepalive",
    curl_http1_keepalive_tls12_within_10_percent => "curl-h1-keepalive-tls12",
    curl_http1_connection_per_request_within_10_percent => "curl-h1-conn-per-request",
    curl_http2_parallel_within_10_percent => "curl-h2-parallel",
    curl_http2_parallel_tls12_within_10_percent => "curl-h2-parallel-tls12",
    curl_http1_watch_within_10_percent => "curl-h1-watch",
}

/// hyper's HTTP/2 client with 10 requests in flight: it coalesces the HEADERS of the
/// requests it has queued into one record, so the estimate hangs on telling how many.
#[test]
fn rust_http2_concurrent_within_10_percent() {
    check("rust-h2-concurrent");
}

/// A watch shows as an open stream while the server is streaming it, and as closed once
/// the client has gone: kubectl (HTTP/2) and curl (HTTP/1.1, chunked).
#[test]
fn watch_is_an_open_stream_while_open() {
    let server = ApiServer::start(ServerConfig::default());
    let mut kubectl = server.kubectl();
    kubectl.args(["get", "pods", "--watch"]);
    let mut curl = server.curl();
    curl.arg("--http1.1")
        .arg(server.url(&format!("{PODS}?watch=1")));
    let mut children: Vec<_> = [kubectl, curl]
        .into_iter()
        .map(|mut cmd| {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"))
        })
        .collect();
    assert!(
        server.wait_for(Duration::from_secs(10), |s| s.open_watches() == 2),
        "both watches should be streaming"
    );
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.open_watches(), 2, "watches ended early");
    let est = estimate(&server, monotonic_ns());
    let open = est.owner(&OWNER).map_or(0, |t| t.open_streams);
    assert_eq!(
        open, 2,
        "two watches streaming, {open} open streams estimated"
    );
    for child in &mut children {
        child.kill().expect("kill client");
        let _ = child.wait();
    }
    settle(&server);
    assert_eq!(server.open_watches(), 0);
    let est = estimate(&server, monotonic_ns());
    assert_eq!(est.owner(&OWNER).map_or(0, |t| t.open_streams), 0);
}
