//! The demo's last act: the webhook answers real AdmissionReviews with the per-pod
//! profiles the collector just measured. Without a cluster the demo's cgroups are named
//! after themselves; here they stand for the workloads they play (the chatty agent as a
//! DaemonSet, the quiet one as a Deployment), so their profiles are re-keyed to those.
use std::{
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Background, PODS, http_get};
use crate::shell;

const LISTEN: &str = "127.0.0.1:18443";
const METRICS: &str = "127.0.0.1:19090";
const NODES: &str = "5000";
/// A small cluster's control plane: what the demo's webhook defends.
const BUDGET: &str = "apiVersion: headroom.dev/v1alpha1
kind: ControlPlaneBudget
metadata:
  name: demo
spec:
  mode: Enforce
  limits:
    apiserverRequestsPerSecond: 100
    apiserverReceivedBytesPerSecond: 1048576
    apiserverConnectionsPerSecond: 20
    dnsQueriesPerSecond: 500
  burstFactor: 2
  canarySize: 3
  # One machine's collector stands for the 5,000 nodes: its one node is all the data.
  minCoverage: 0
  maxDataAgeSeconds: 120
  # The demo measures its pods for one or two 15 s samples, with the collector's rate
  # window shortened to 15 s to match (--profile-rate-window); a sample may land a
  # little short of 15 s after the first, hence 10. In a cluster this stays at the 300 s
  # default, so a canary younger than 5 minutes is unmeasured.
  minMeasuredSeconds: 10
";

/// A workload a demo cgroup stands for, and the review body it is created with.
struct Play {
    cgroup: &'static str,
    kind: &'static str,
    namespace: &'static str,
    name: &'static str,
    review: &'static str,
    replicas: Option<u64>,
}

const PLAYS: &[Play] = &[
    Play {
        cgroup: PODS[0].name,
        kind: "DaemonSet",
        namespace: "demo",
        name: "chatty-agent",
        review: "daemonset-agent-create.json",
        replicas: None,
    },
    Play {
        cgroup: PODS[1].name,
        kind: "Deployment",
        namespace: "demo",
        name: "quiet-agent",
        review: "deployment-web-create.json",
        replicas: Some(3),
    },
];

pub fn run(profiles: &Value, scratch: &Path, target: &Path) -> anyhow::Result<()> {
    let mut list = profiles.clone();
    if let Some(items) = list["items"].as_array_mut() {
        for item in items.iter_mut() {
            if let Some(play) = PLAYS.iter().find(|p| item["workload"]["name"] == p.cgroup) {
                item["workload"] =
                    json!({ "namespace": play.namespace, "kind": play.kind, "name": play.name });
            }
        }
    }
    let profiles_path = scratch.join("profiles.json");
    std::fs::write(&profiles_path, serde_json::to_vec_pretty(&list)?)?;
    let budget_path = scratch.join("budget.yaml");
    std::fs::write(&budget_path, BUDGET)?;
    let (cert, key) = (scratch.join("tls.crt"), scratch.join("tls.key"));
    let mut openssl = Command::new("openssl");
    openssl
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .stderr(Stdio::null());
    shell::run(&mut openssl)?;

    let _webhook = Background::spawn(
        Command::new(target.join("headroom-webhook"))
            .arg("serve")
            .args([
                "--listen",
                LISTEN,
                "--metrics-listen",
                METRICS,
                "--nodes",
                NODES,
            ])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--budget")
            .arg(&budget_path)
            .arg("--profiles")
            .arg(&profiles_path),
        "headroom-webhook",
    )?;
    let start = Instant::now();
    while http_get(&format!("http://{METRICS}/readyz")).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!("headroom-webhook did not become ready on {METRICS}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    println!(
        "\nheadroom-webhook (budget: a small cluster, {NODES} nodes) answering AdmissionReviews:\n"
    );
    let reviews = shell::workspace_root().join("webhook/demo/reviews");
    for Play {
        kind,
        namespace,
        name,
        review: file,
        replicas,
        ..
    } in PLAYS
    {
        let mut review: Value = serde_json::from_slice(
            &std::fs::read(reviews.join(file)).with_context(|| format!("reading {file}"))?,
        )?;
        let request = &mut review["request"];
        request["name"] = json!(name);
        request["namespace"] = json!(namespace);
        request["object"]["metadata"]["name"] = json!(name);
        request["object"]["metadata"]["namespace"] = json!(namespace);
        if let Some(n) = replicas {
            request["object"]["spec"]["replicas"] = json!(n);
        }
        let body = scratch.join(format!("{name}-review.json"));
        std::fs::write(&body, serde_json::to_vec(&review)?)?;
        let out = shell::output(
            Command::new("curl")
                .args([
                    "-sS",
                    "--fail-with-body",
                    "-H",
                    "Content-Type: application/json",
                    "--cacert",
                ])
                .arg(&cert)
                .arg("--data-binary")
                .arg(format!("@{}", body.display()))
                .arg(format!("https://{LISTEN}/validate")),
        )?;
        let answer: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "the webhook's answer: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        let response = &answer["response"];
        let allowed = response["allowed"].as_bool().unwrap_or(false);
        println!(
            "CREATE {kind} {namespace}/{name}: {}",
            if allowed { "ALLOWED" } else { "DENIED" }
        );
        if let Some(message) = response["status"]["message"].as_str() {
            println!("  {message}");
        }
        for warning in response["warnings"].as_array().into_iter().flatten() {
            println!("  warning: {}", warning.as_str().unwrap_or_default());
        }
        println!();
    }
    Ok(())
}
