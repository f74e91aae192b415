//! Real clients (kubectl, curl, a hyper HTTP/2 client) against the loopback TLS test API
//! server. No kernel programs: the server's own tap stands in for the kernel's segment
//! events.
mod support;

use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use support::apiserver::{ApiServer, ServerConfig};

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
