//! The guard never becomes the outage: with the webhook gone, or accepting connections
//! and never answering, the API server lets requests through (failurePolicy: Ignore)
//! within the registration's timeoutSeconds. Durations are the server's own: the audit
//! log's requestReceivedTimestamp to stageTimestamp of the request.
use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    support::Cluster,
    test_pki::Pki,
    webhook::{Registration, Webhook, ensure_budget, ensure_nodes},
};

/// deploy/'s registration says 3 s.
const TIMEOUT_SECONDS: f64 = 3.0;
const NAMESPACE: &str = "failsafe";

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}
            }
        }
    })
}

/// `kubectl create` of a Deployment; the server's time for it, from its audit log.
fn create_and_time(cluster: &Cluster, name: &str) -> f64 {
    let _ = cluster.run(
        &[
            "delete",
            "deployment",
            name,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
        ],
        None,
    );
    let out = cluster.run(&["create", "-f", "-"], Some(&deployment(name).to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = cluster
        .audit()
        .into_iter()
        .rev()
        .find(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "create"
                && e["objectRef"]["resource"] == "deployments"
                && e["objectRef"]["namespace"] == NAMESPACE
                && e["objectRef"]["name"] == name
        })
        .expect("the create is in the audit log");
    assert_eq!(entry["responseStatus"]["code"], 201, "{entry}");
    seconds_between(&entry["requestReceivedTimestamp"], &entry["stageTimestamp"])
}

/// Seconds between two RFC 3339 timestamps of the audit log (`…T10:25:52.110728Z`).
fn seconds_between(from: &Value, to: &Value) -> f64 {
    let of_day = |t: &Value| -> f64 {
        let time = t
            .as_str()
            .and_then(|s| s.split_once('T'))
            .expect("timestamp")
            .1;
        let mut parts = time.trim_end_matches('Z').split(':');
        let mut next = || {
            parts
                .next()
                .and_then(|p| p.parse::<f64>().ok())
                .expect("hh:mm:ss")
        };
        next() * 3600.0 + next() * 60.0 + next()
    };
    (of_day(to) - of_day(from)).rem_euclid(86_400.0)
}

/// kube-apiserver's log names the webhook call that failed open.
fn failed_open_logged(cluster: &Cluster, before: usize) -> bool {
    let log = std::fs::read_to_string(cluster.dir.join("kube-apiserver.log")).unwrap_or_default();
    log[before.min(log.len())..]
        .lines()
        .any(|l| l.contains("failing open") && l.contains("workloads.headroom.dev"))
}

fn apiserver_log_len(cluster: &Cluster) -> usize {
    std::fs::metadata(cluster.dir.join("kube-apiserver.log")).map_or(0, |m| m.len() as usize)
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn webhook_killed_the_create_goes_through_at_once() {
    let cluster = Cluster::from_env();
    ensure_nodes(&cluster);
    ensure_budget(&cluster, "Enforce");
    cluster.namespace(NAMESPACE);
    let mut webhook = Webhook::start(&cluster, &cluster.kubeconfig, "profiles-outage.json");
    webhook.wait_ready();
    let _registration = Registration::register(
        &cluster,
        &format!("https://{}", webhook.addr),
        &webhook.pki.ca_pem,
    );
    webhook.process.kill();
    let before = apiserver_log_len(&cluster);
    let took = create_and_time(&cluster, "after-kill");
    assert!(
        took < 1.0,
        "the server took {took:.3} s with the webhook gone"
    );
    assert!(
        failed_open_logged(&cluster, before),
        "the server called it and failed open"
    );
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn webhook_never_answering_the_create_goes_through_after_its_timeout() {
    let cluster = Cluster::from_env();
    cluster.namespace(NAMESPACE);
    // Accepts connections and holds them without a byte: a hung webhook.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = Arc::new(AtomicBool::new(false));
    let held = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut connections = Vec::new();
            listener.set_nonblocking(true).expect("nonblocking");
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => connections.push(stream),
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
            connections.len()
        })
    };
    let pki = Pki::generate("headroom e2e hung webhook CA");
    let _registration = Registration::register(&cluster, &format!("https://{addr}"), &pki.ca_pem);
    let before = apiserver_log_len(&cluster);
    let took = create_and_time(&cluster, "after-hang");
    stop.store(true, Ordering::Relaxed);
    let connections = held.join().expect("listener thread");
    assert!(connections >= 1, "the server connected to the hung webhook");
    assert!(
        (TIMEOUT_SECONDS..TIMEOUT_SECONDS + 1.0).contains(&took),
        "the server took {took:.3} s; the registration's timeout is {TIMEOUT_SECONDS} s"
    );
    assert!(
        failed_open_logged(&cluster, before),
        "the server failed open"
    );
}
