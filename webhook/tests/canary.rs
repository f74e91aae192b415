//! A canary seconds or minutes old is not yet measured: its profile (the collector's own
//! output for a real canary's first minutes, tests/fixtures/canary/, recorded by
//! collector/src/profile/tests.rs) never admits a full rollout — the DaemonSet patched
//! from its three canary nodes to all 2,000.
#![expect(clippy::unwrap_used, reason = "tests")]

mod support;

use serde_json::{Value, json};
use support::{Client, Profiles, Review};
use webhook::inventory::{Inventory, NodeGroup};

/// 2,000 nodes, three of them labelled for the canary.
fn inventory() -> Inventory {
    let mut inventory = Inventory::uniform(1997);
    let mut canary = NodeGroup {
        name: String::new(),
        ..inventory.groups[0].clone()
    };
    canary
        .labels
        .insert("headroom.dev/canary".into(), "true".into());
    canary.count = 3;
    inventory.groups.push(canary);
    inventory
}

/// The recorded agent DaemonSet going from the canary nodes to every node.
fn full_rollout() -> Value {
    let new = support::agent_daemonset();
    let mut old = new.clone();
    old["spec"]["template"]["spec"]["nodeSelector"]["headroom.dev/canary"] = json!("true");
    Review::update(old, new).build()
}

async fn decide(profiles: &'static str) -> Value {
    decide_with(profiles, &support::fixtures().join("budget.yaml")).await
}

async fn decide_with(profiles: &'static str, budget: &std::path::Path) -> Value {
    let server = support::start_server_with(Profiles::File(profiles), 2000, budget).await;
    server.state.set_inventory(inventory());
    let config = server.pki.client_config(rustls::DEFAULT_VERSIONS);
    let mut client = Client::connect(server.running.https, config).await.unwrap();
    client.review(&full_rollout()).await
}

#[tokio::test]
async fn a_canary_under_five_minutes_old_never_admits_a_full_rollout() {
    for age in [
        "canary/canary-0s.json",
        "canary/canary-20s.json",
        "canary/canary-1m.json",
        "canary/canary-3m.json",
    ] {
        let r = decide(age).await;
        assert_eq!(r["allowed"], false, "{age}: {r}");
        let message = r["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("DaemonSet monitoring/agent has no measured profile")
                && message.contains("this change runs 2000")
                && message.contains("run a canary first"),
            "{age}: {message}"
        );
    }
}

#[tokio::test]
async fn a_canary_measured_for_its_rate_window_is_projected() {
    let r = decide("canary/canary-6m.json").await;
    let message = r["status"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("measured profile"), "{r}");
    // 2,000 pods at the canary's ≥ 1.95 requests/s each: over the 2,000/s limit.
    assert_eq!(r["allowed"], false, "{r}");
    assert!(message.contains("measured over 3 pods, 6 min"), "{message}");
}

/// A budget asking for more than the rate window: a profile measured for less is treated
/// as unmeasured, and the answer says when it will be measured.
#[tokio::test]
async fn a_profile_shorter_than_min_measured_seconds_is_unmeasured() {
    let dir = support::temp_dir("min-measured");
    let text = std::fs::read_to_string(support::fixtures().join("budget.yaml")).unwrap();
    let budget = dir.join("budget.yaml");
    std::fs::write(&budget, format!("{text}  minMeasuredSeconds: 600\n")).unwrap();
    let r = decide_with("canary/canary-6m.json", &budget).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("measured for less than minMeasuredSeconds (600s)")
            && message.contains("it is measured in 240s; scale after that"),
        "{message}"
    );
    let warnings = r["warnings"].to_string();
    assert!(
        warnings.contains("DaemonSet monitoring/agent measured in 240s"),
        "{warnings}"
    );
}
