//! The webhook registered as deploy/ registers it, judging kubectl's requests through a
//! real API server: denials with the numbers and the safe change, what is allowed, Warn's
//! warning, Audit's annotation in the server's audit log, the budget's status.
use std::{process::Output, time::Duration};

use serde_json::{Value, json};

use crate::{
    support::{Cluster, wait_for},
    webhook::{
        NODES, Registration, SMALL_POOL, Webhook, ensure_budget, ensure_nodes, fixture_object,
        fresh_profiles, set_mode,
    },
};

const PROFILES: &str = "profiles-outage.json";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cluster with nodes, the budget in `mode`, namespaces labelled, and the webhook
/// ready and registered.
fn setup<'a>(cluster: &'a Cluster, mode: &str) -> (Webhook, Registration<'a>) {
    ensure_nodes(cluster);
    ensure_budget(cluster, mode);
    cluster.namespace("monitoring");
    cluster.namespace("default");
    let mut webhook = Webhook::start(cluster, &cluster.kubeconfig, PROFILES);
    webhook.wait_ready();
    let registration = Registration::register(
        cluster,
        &format!("https://{}", webhook.addr),
        &webhook.pki.ca_pem,
    );
    (webhook, registration)
}

/// The outage-shaped DaemonSet of the fixtures: every Linux node, every taint tolerated.
fn outage_daemonset() -> Value {
    fixture_object("daemonset-agent.yaml")
}

/// The same agent on the small pool only.
fn small_pool_daemonset() -> Value {
    let mut ds = outage_daemonset();
    ds["spec"]["template"]["spec"]["nodeSelector"] = json!({"headroom.dev/e2e-pool": "small"});
    ds
}

/// What `headroom-webhook check` says offline about `object` with the same budget,
/// profiles and the cluster's nodes: the finding the webhook's answer must match.
fn offline_check(cluster: &Cluster, object: &Value, mode: &str) -> Value {
    let dir = cluster.scratch("check");
    let nodes = cluster.ok(&["get", "nodes", "-o", "yaml"], None);
    std::fs::write(dir.join("nodes.yaml"), nodes).expect("write nodes");
    let mut budget = fixture_object("budget.yaml");
    budget["spec"]["mode"] = json!(mode);
    std::fs::write(dir.join("budget.json"), budget.to_string()).expect("write budget");
    std::fs::write(dir.join("object.json"), object.to_string()).expect("write object");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headroom-webhook"))
        .arg("check")
        .arg("-f")
        .arg(dir.join("object.json"))
        .arg("--budget")
        .arg(dir.join("budget.json"))
        .arg("--profiles")
        .arg(fresh_profiles(cluster, PROFILES))
        .arg("--nodes-file")
        .arg(dir.join("nodes.yaml"))
        .args(["--output", "json"])
        .output()
        .expect("headroom-webhook check runs");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check's report: {e}: {}", stderr(&out)));
    report["findings"][0].clone()
}

/// Server dry runs of `object` until `done` holds for kubectl's output: the webhook has
/// loaded what it watches (nodes, the budget's mode) once its answer reflects it. Dry
/// runs are evaluated and reserve nothing.
fn until_dry_run(cluster: &Cluster, object: &Value, what: &str, done: impl Fn(&Output) -> bool) {
    wait_for(what, Duration::from_secs(60), || {
        let out = cluster.run(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&object.to_string()),
        );
        done(&out).then_some(())
    });
}

fn delete(cluster: &Cluster, kind: &str, namespace: &str, name: &str) {
    cluster.ok(
        &[
            "delete",
            kind,
            name,
            "-n",
            namespace,
            "--ignore-not-found",
            "--wait=false",
        ],
        None,
    );
}

/// Deletes an object when created and again when dropped, so a failed test leaves
/// nothing that changes the next one's CREATE into an UPDATE.
struct Removed<'a>(&'a Cluster, &'static str, &'static str, &'static str);

impl<'a> Removed<'a> {
    fn new(
        cluster: &'a Cluster,
        kind: &'static str,
        namespace: &'static str,
        name: &'static str,
    ) -> Self {
        delete(cluster, kind, namespace, name);
        Removed(cluster, kind, namespace, name)
    }
}

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        delete(self.0, self.1, self.2, self.3);
    }
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn enforce_denies_the_outage_daemonset_with_the_numbers_and_allows_the_small_pool() {
    let cluster = Cluster::from_env();
    let (webhook, _registration) = setup(&cluster, "Enforce");
    let _agent = Removed::new(&cluster, "daemonset", "monitoring", "agent");
    let ds = outage_daemonset();
    until_dry_run(&cluster, &ds, "the outage DaemonSet denied", |o| {
        !o.status.success()
    });

    let expected = offline_check(&cluster, &ds, "Enforce");
    assert_eq!(expected["result"], "denied", "{expected}");
    // One pod per Linux node: the 2,000 and any other test's (a kept control plane).
    let linux = cluster
        .ok(
            &["get", "nodes", "-l", "kubernetes.io/os=linux", "-o", "name"],
            None,
        )
        .lines()
        .count();
    assert!(linux >= NODES, "{linux} Linux nodes");
    assert_eq!(expected["pods"], linux as u64, "{expected}");
    let out = cluster.apply(&ds);
    assert!(!out.status.success(), "applied: {}", stderr(&out));
    let message = expected["message"].as_str().expect("message");
    assert!(
        stderr(&out).contains(&format!(
            "admission webhook \"workloads.headroom.dev\" denied the request: {message}"
        )),
        "kubectl: {}\nexpected the offline check's message: {message}",
        stderr(&out)
    );
    assert!(message.contains(&format!("{linux} pods")), "{message}");
    assert!(message.contains("Largest safe change"), "{message}");
    let gone = cluster.run(&["get", "daemonset", "agent", "-n", "monitoring"], None);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));

    let small = small_pool_daemonset();
    let allowed = offline_check(&cluster, &small, "Enforce");
    assert_eq!(allowed["pods"], SMALL_POOL as u64, "{allowed}");
    let out = cluster.apply(&small);
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = cluster.get_json(&["daemonset", "agent", "-n", "monitoring"]);
    assert_eq!(
        stored["spec"]["template"]["spec"]["nodeSelector"]["headroom.dev/e2e-pool"],
        "small"
    );
    assert!(
        webhook.metrics_text().contains(
            r#"headroom_webhook_decisions_total{mode="Enforce",result="denied",kind="DaemonSet"}"#
        ),
        "the denial is counted"
    );
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn scale_up_past_budget_is_denied_down_is_allowed_and_delete_is_allowed() {
    let cluster = Cluster::from_env();
    let (_webhook, _registration) = setup(&cluster, "Enforce");
    let _web = Removed::new(&cluster, "deployment", "default", "web");
    let web = fixture_object("deployment-web.json");
    until_dry_run(&cluster, &web, "the web Deployment allowed", |o| {
        o.status.success()
    });
    let out = cluster.run(
        &["apply", "-n", "default", "-f", "-"],
        Some(&web.to_string()),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let up = cluster.run(
        &[
            "scale",
            "deployment",
            "web",
            "-n",
            "default",
            "--replicas=1000",
        ],
        None,
    );
    assert!(!up.status.success(), "scaled to 1000");
    let text = stderr(&up);
    assert!(text.contains("denied the request: headroom: Deployment default/web over ControlPlaneBudget default (Enforce)"), "{text}");
    assert!(text.contains("1000 pods, 997 starting at once"), "{text}");
    assert!(text.contains("Largest safe change: replicas ≤ "), "{text}");
    let stored = cluster.get_json(&["deployment", "web", "-n", "default"]);
    assert_eq!(
        stored["spec"]["replicas"], 3,
        "the denied scale left it as it was"
    );

    cluster.ok(
        &[
            "scale",
            "deployment",
            "web",
            "-n",
            "default",
            "--replicas=2",
        ],
        None,
    );
    let stored = cluster.get_json(&["deployment", "web", "-n", "default"]);
    assert_eq!(stored["spec"]["replicas"], 2);

    cluster.ok(
        &[
            "delete",
            "deployment",
            "web",
            "-n",
            "default",
            "--wait=false",
        ],
        None,
    );
    let gone = cluster.run(&["get", "deployment", "web", "-n", "default"], None);
    assert!(stderr(&gone).contains("NotFound"), "{}", stderr(&gone));
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn warn_mode_allows_and_kubectl_prints_the_warning() {
    let cluster = Cluster::from_env();
    let (_webhook, _registration) = setup(&cluster, "Enforce");
    let _agent = Removed::new(&cluster, "daemonset", "monitoring", "agent");
    set_mode(&cluster, "Warn");
    let ds = outage_daemonset();
    until_dry_run(&cluster, &ds, "Warn mode seen by the webhook", |o| {
        o.status.success() && stderr(o).contains("Warning: headroom")
    });
    let expected = offline_check(&cluster, &ds, "Warn");
    assert_eq!(expected["result"], "warned", "{expected}");
    let warning = expected["warnings"][0].as_str().expect("a warning");
    let out = cluster.apply(&ds);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("Warning: {warning}")),
        "kubectl: {}\nexpected: {warning}",
        stderr(&out)
    );
    cluster.get_json(&["daemonset", "agent", "-n", "monitoring"]);
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn audit_mode_allows_and_the_audit_log_carries_the_annotation() {
    let cluster = Cluster::from_env();
    let (_webhook, _registration) = setup(&cluster, "Enforce");
    let _agent = Removed::new(&cluster, "daemonset", "monitoring", "agent");
    set_mode(&cluster, "Audit");
    let ds = outage_daemonset();
    // Audit allows without a warning, like no webhook at all: wait until the server's
    // audit log shows a dry run annotated.
    let annotated = |entry: &Value, dry_run: bool| {
        entry["stage"] == "ResponseComplete"
            && entry["objectRef"]["resource"] == "daemonsets"
            && entry["objectRef"]["name"] == "agent"
            && entry["requestURI"]
                .as_str()
                .unwrap_or("")
                .contains("dryRun")
                == dry_run
            && entry["annotations"]["workloads.headroom.dev/over-budget"].is_string()
    };
    wait_for(
        "Audit mode seen by the webhook",
        Duration::from_secs(60),
        || {
            // Denied until the webhook has seen the mode change, annotated from then on.
            let _ = cluster.run(
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&ds.to_string()),
            );
            cluster
                .audit()
                .iter()
                .any(|e| annotated(e, true))
                .then_some(())
        },
    );
    let expected = offline_check(&cluster, &ds, "Audit");
    assert_eq!(expected["result"], "audited", "{expected}");
    let out = cluster.apply(&ds);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Warning"), "{}", stderr(&out));
    let log = cluster.audit();
    let entry = log
        .iter()
        .rev()
        .find(|e| annotated(e, false))
        .expect("the create is in the audit log with the webhook's annotation");
    let annotation = entry["annotations"]["workloads.headroom.dev/over-budget"]
        .as_str()
        .expect("annotation");
    let message = expected["message"].as_str().expect("message");
    // The first violation of the offline check's message, and how many more it has.
    let (first, more) = annotation.split_once(" (+").expect("first (+N more)");
    let violations = message.split_once("(Audit): ").map_or("", |(_, rest)| rest);
    assert!(
        violations.starts_with(first),
        "{annotation} is from: {message}"
    );
    assert_eq!(more, "1 more)", "{annotation}: two dimensions over");
    assert_eq!(entry["responseStatus"]["code"], 201, "{entry}");
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn the_budget_status_is_patched_from_the_profiles() {
    let cluster = Cluster::from_env();
    let (_webhook, _registration) = setup(&cluster, "Enforce");
    // The profiles' totals (500 req/s of a 2000 limit) as current use and headroom.
    let status = wait_for("the budget's status", Duration::from_secs(30), || {
        let budget = cluster.get_json(&["controlplanebudget", "default"]);
        budget["status"]["observedAt"]
            .is_string()
            .then(|| budget["status"].clone())
    });
    assert_eq!(
        status["current"]["apiserverRequestsPerSecond"], 500.0,
        "{status}"
    );
    assert_eq!(
        status["headroom"]["apiserverRequestsPerSecond"], 1500.0,
        "{status}"
    );
    let patches = cluster
        .audit()
        .into_iter()
        .filter(|e| {
            e["stage"] == "ResponseComplete"
                && e["verb"] == "patch"
                && e["objectRef"]["resource"] == "controlplanebudgets"
                && e["objectRef"]["subresource"] == "status"
        })
        .count();
    assert!(patches >= 1, "the status patch is in the audit log");
}
