//! `limits.apiserverRequestsPerSecond: auto` on the real API server: a small priority
//! level of its own (a PriorityLevelConfiguration with one share, so a few seats, and a
//! FlowSchema sending one service account to it), a load generator making many concurrent
//! GETs as that service account, and the webhook judging a Deployment that runs as it.
//! The budget's status shows the level's in use rising with the load; the change is
//! denied while the load runs and allowed once it stops.
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    support::{Cluster, wait_for},
    webhook::{Registration, Webhook, ensure_budget, fixture_object},
};

const BUDGET: &str = "auto-e2e";
const LEVEL: &str = "headroom-e2e";
const ACCOUNT: &str = "headroom-e2e-loader";
/// Concurrent GETs in flight: many more than the level's seats, so it queues.
const CONCURRENCY: usize = 32;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The level and the schema, in the flowcontrol version 1.20 serves (v1beta1).
fn priority_level_and_schema() -> Value {
    let version = "flowcontrol.apiserver.k8s.io/v1beta1";
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": version, "kind": "PriorityLevelConfiguration",
         "metadata": {"name": LEVEL},
         "spec": {"type": "Limited", "limited": {
             "assuredConcurrencyShares": 1,
             "limitResponse": {"type": "Queue",
                               "queuing": {"queues": 4, "handSize": 2, "queueLengthLimit": 100}}}}},
        {"apiVersion": version, "kind": "FlowSchema",
         "metadata": {"name": LEVEL},
         "spec": {"matchingPrecedence": 500,
                  "priorityLevelConfiguration": {"name": LEVEL},
                  "distinguisherMethod": {"type": "ByUser"},
                  "rules": [{"subjects": [{"kind": "ServiceAccount",
                                           "serviceAccount": {"namespace": "default", "name": ACCOUNT}}],
                             "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                                "namespaces": ["*"], "clusterScope": true}]}]}}
    ]})
}

/// The recorded web Deployment, its pods running as the loader's service account.
fn web() -> Value {
    let mut web = fixture_object("deployment-web.json");
    web["metadata"]["namespace"] = json!("default");
    web["spec"]["template"]["spec"]["serviceAccountName"] = json!(ACCOUNT);
    web
}

/// The level as the budget's status shows it, once it does.
fn level_status(cluster: &Cluster) -> Option<Value> {
    let budget = cluster.get_json(&["controlplanebudget", BUDGET]);
    budget["status"]["apiserverCapacity"]["levels"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == LEVEL)
        .cloned()
}

/// `CONCURRENCY` tasks GETting a ConfigMap as the loader until `stop`; counts answers.
fn load(kubeconfig: &Path, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("config");
        let client = kube::Client::try_from(config).expect("client");
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "default");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (api, stop, answered) = (api.clone(), stop.clone(), answered.clone());
            tasks.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if api.get_opt(LEVEL).await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    });
}

fn dry_run(cluster: &Cluster) -> std::process::Output {
    cluster.run(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&web().to_string()),
    )
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn auto_limits_follow_the_load_on_the_workloads_priority_level() {
    let cluster = Cluster::from_env();
    ensure_budget(&cluster, "Enforce");
    cluster.namespace("default");
    let out = cluster.apply(&priority_level_and_schema());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cluster.run(
        &["create", "serviceaccount", ACCOUNT, "-n", "default"],
        None,
    );
    assert!(
        out.status.success() || stderr(&out).contains("AlreadyExists"),
        "{}",
        stderr(&out)
    );
    // What it GETs (the aggregated `view` role is empty without a controller manager).
    let account = format!("default:{ACCOUNT}");
    for args in [
        vec![
            "create",
            "role",
            ACCOUNT,
            "-n",
            "default",
            "--verb=get",
            "--resource=configmaps",
        ],
        vec![
            "create",
            "rolebinding",
            ACCOUNT,
            "-n",
            "default",
            "--role",
            ACCOUNT,
            "--serviceaccount",
            &account,
        ],
    ] {
        let out = cluster.run(&args, None);
        assert!(
            out.status.success() || stderr(&out).contains("AlreadyExists"),
            "{}",
            stderr(&out)
        );
    }
    let loader = cluster.serviceaccount_kubeconfig("default", ACCOUNT);

    // The budget: the fixture's, requests `auto`.
    let mut budget = fixture_object("budget.yaml");
    budget["metadata"]["name"] = json!(BUDGET);
    budget["spec"]["limits"]["apiserverRequestsPerSecond"] = json!("auto");
    let out = cluster.apply(&budget);
    assert!(out.status.success(), "{}", stderr(&out));

    // A few requests at the level first: a level that never ran one has no capacity.
    let (stop, answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    {
        let (to_stop, to_count) = (stop.clone(), answered.clone());
        let loader = loader.clone();
        let warm = thread::spawn(move || load(&loader, to_stop, to_count));
        wait_for("warm-up requests", Duration::from_secs(30), || {
            (answered.load(Ordering::Relaxed) >= 100).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        warm.join().expect("warm-up");
    }

    let mut webhook = Webhook::start_for(
        &cluster,
        &cluster.kubeconfig,
        "profiles-outage.json",
        BUDGET,
    );
    webhook.wait_ready();
    let _registration = Registration::register(
        &cluster,
        &format!("https://{}", webhook.addr),
        &webhook.pki.ca_pem,
    );

    // Quiet: the level has capacity, nothing in use; the change fits.
    let quiet = wait_for(
        "the level quiet in the status",
        Duration::from_secs(60),
        || {
            level_status(&cluster).filter(|l| {
                l["inUseRequestsPerSecond"] == 0.0
                    && l["capacityRequestsPerSecond"].as_f64().is_some()
            })
        },
    );
    println!("quiet: {quiet}");
    let out = dry_run(&cluster);
    assert!(
        out.status.success(),
        "denied without load: {}",
        stderr(&out)
    );

    // Loaded: in use rises, and the same change is denied naming the level.
    let (stop, answered) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let generator = {
        let (to_stop, to_count) = (stop.clone(), answered.clone());
        thread::spawn(move || load(&loader, to_stop, to_count))
    };
    let loaded = wait_for(
        "in use rising with the load",
        Duration::from_secs(60),
        || level_status(&cluster).filter(|l| l["inUseRequestsPerSecond"].as_f64() > Some(20.0)),
    );
    println!("loaded: {loaded}");
    let denied = wait_for(
        "the change denied under load",
        Duration::from_secs(30),
        || {
            let out = dry_run(&cluster);
            (!out.status.success()).then(|| stderr(&out))
        },
    );
    stop.store(true, Ordering::Relaxed);
    generator.join().expect("the load generator");
    println!(
        "denied: {denied}\nanswered under load: {}",
        answered.load(Ordering::Relaxed)
    );
    for part in [
        "admission webhook \"workloads.headroom.dev\" denied the request",
        &format!("Priority level {LEVEL} (FlowSchema {LEVEL}, serviceaccount default/{ACCOUNT})"),
        "this change adds",
    ] {
        assert!(denied.contains(part), "{part} not in {denied}");
    }

    // Stopped: in use falls back to 0 and the change is allowed again.
    wait_for("in use back to 0", Duration::from_secs(60), || {
        level_status(&cluster).filter(|l| l["inUseRequestsPerSecond"] == 0.0)
    });
    let out = wait_for(
        "the change allowed after the load",
        Duration::from_secs(30),
        || {
            let out = dry_run(&cluster);
            out.status.success().then_some(out)
        },
    );
    assert!(out.status.success());
    assert!(
        webhook.metrics_text().contains(
            r#"headroom_webhook_decisions_total{mode="Enforce",result="denied",kind="Deployment"}"#
        ),
        "the denial is counted"
    );
    let _ = cluster.run(
        &["delete", "controlplanebudget", BUDGET, "--ignore-not-found"],
        None,
    );
}
