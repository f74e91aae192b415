//! `apiserverRequestsPerSecond: auto` on a real kube-apiserver v1.20.2's metrics and
//! FlowSchemas (tests/fixtures/apf/: 600 LISTs in 4.51 s at workload-low, 133 req/s).

use std::time::SystemTime;

use super::*;
use crate::{
    capacity::{self, Constraint, FlowSchemaList, apf},
    freshness::FailOpenReason,
};

const BEFORE: &str = include_str!("../../../tests/fixtures/apf/v1.20.2-before-load.prom");
const AFTER: &str = include_str!("../../../tests/fixtures/apf/v1.20.2-after-600-lists.prom");
const FLOW_SCHEMAS: &str = include_str!("../../../tests/fixtures/apf/v1.20.2-flowschemas.json");

fn recorded() -> ApiserverCapacity {
    let scrape = |text: &str, at| apf::parse(text, at).unwrap();
    let (before, after) = (scrape(BEFORE, 0.0), scrape(AFTER, 4.51));
    ApiserverCapacity {
        levels: capacity::capacity(&before, &after, 0.7),
        flow_schemas: serde_json::from_str::<FlowSchemaList>(FLOW_SCHEMAS)
            .unwrap()
            .items,
        observed_at: SystemTime::UNIX_EPOCH,
        source: "recorded".to_owned(),
    }
}

/// Requests judged `auto` against the recorded server, `workload-low` overridden to
/// `override_low` requests/s when given.
fn auto(override_low: Option<f64>) -> Fixture {
    let mut f = Fixture::new(Mode::Enforce);
    f.budget.limits.apiserver_requests_per_second = Some(RequestLimit::Auto);
    if let Some(limit) = override_low {
        f.budget
            .limits
            .priority_levels
            .insert("workload-low".to_owned(), limit);
    }
    f.apiserver = Some(recorded());
    f.apiserver_age = Some(Duration::from_secs(10));
    f
}

const IN_USE: f64 = 600.0 / 4.51;

#[test]
fn a_change_is_judged_against_its_service_accounts_level() {
    // default/default lands in workload-low through `service-accounts`. Everything else
    // there: 133 − web's own 6; on create all 20 pods start: peak + 20 × (2 + 10).
    let d = auto(Some(300.0)).decide(&web(20), None);
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    let e = d.evaluation.as_ref().unwrap();
    let level = e.level.as_ref().unwrap();
    assert_eq!(
        (level.level.as_str(), level.flow_schema.as_str()),
        ("workload-low", "service-accounts")
    );
    assert_eq!(level.ceiling, 300.0);
    assert!((e.projection.base.apiserver_requests_per_second - (IN_USE - 6.0)).abs() < 1e-9);
    assert_eq!(e.violations.len(), 1, "{:?}", e.violations);
    assert_eq!(e.violations[0].check, Check::Peak);
    assert_eq!(e.violations[0].allowed, 300.0, "no burst factor on a level");
    for part in [
        "apiserver requests/s peak 367 > 300 (workload-low's limit)",
        "Priority level workload-low (FlowSchema service-accounts, serviceaccount \
         default/default): limit 300 req/s (priorityLevels), in use 133, this change adds \
         234 at peak.",
    ] {
        assert!(d.message.contains(part), "{part} not in {}", d.message);
    }
    // The largest safe change, checked by projecting it again: 12 n ≤ 300 − 127.
    assert!(
        d.message
            .contains("create 13 replicas, then scale up in steps of ≤ 13; or replicas ≤ 14"),
        "{}",
        d.message
    );
    assert_eq!(
        auto(Some(300.0)).decide(&web(14), None).outcome,
        Outcome::Allowed
    );
}

#[test]
fn the_measured_capacity_at_the_target_utilization_is_the_ceiling() {
    let f = auto(None);
    let d = f.decide(&web(20), None);
    assert_eq!(d.outcome, Outcome::Allowed, "{}", d.message);
    let e = d.evaluation.as_ref().unwrap();
    let level = e.level.as_ref().unwrap();
    let capacity = level.capacity.unwrap();
    assert_eq!(level.ceiling, capacity * 0.7);
    let summary = allowed_summary("default", e);
    assert!(
        summary.contains(&format!(
            "requests at workload-low: capacity {capacity:.0} req/s at 0.7 = {:.0}, in use 133",
            capacity * 0.7
        )),
        "{summary}"
    );
    // A tenth of the level's capacity in one workload is over the share (0.5) of the
    // ceiling only when it runs that many pods: per pod 2 req/s steady.
    let pods = (capacity * 0.7 * 0.5 / 2.0).ceil() as i64 + 1;
    let d = f.decide(&web(pods), None);
    assert_eq!(d.outcome, Outcome::Denied);
    assert!(
        d.message.contains("(workload-low's limit × share 0.5)"),
        "{}",
        d.message
    );
}

#[test]
fn a_level_that_queues_or_rejects_takes_nothing_more() {
    let mut f = auto(None);
    let low = f
        .apiserver
        .as_mut()
        .unwrap()
        .levels
        .get_mut("workload-low")
        .unwrap();
    low.constraint = Some(Constraint::Rejecting);
    let d = f.decide(&web(1), None);
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    assert!(
        d.message.contains("in use 133, rejecting now: no headroom"),
        "{}",
        d.message
    );
}

#[test]
fn missing_or_stale_capacity_data_fails_open_with_the_profile_reasons() {
    let mut f = auto(None);
    f.apiserver = None;
    let d = f.decide(&web(20), None);
    assert_eq!(
        (d.outcome, d.fail_open),
        (Outcome::FailOpen, Some(FailOpenReason::Missing))
    );
    assert!(
        d.message.contains("no API server capacity data yet"),
        "{}",
        d.message
    );

    let mut f = auto(None);
    f.apiserver_age = Some(Duration::from_secs(301));
    let d = f.decide(&web(20), None);
    assert_eq!(d.fail_open, Some(FailOpenReason::Stale));
    assert!(
        d.message
            .contains("API server capacity data is 301s old (max 300s)"),
        "{}",
        d.message
    );

    let mut f = auto(None);
    f.apiserver.as_mut().unwrap().flow_schemas.clear();
    let d = f.decide(&web(20), None);
    assert_eq!(d.fail_open, Some(FailOpenReason::Missing));
    assert!(
        d.message
            .contains("no FlowSchema takes serviceaccount default/default"),
        "{}",
        d.message
    );

    // A level that has never run a request has no capacity figure; an override needs none.
    let mut f = auto(None);
    let low = f.apiserver.as_mut().unwrap();
    low.levels.get_mut("workload-low").unwrap().capacity = None;
    assert_eq!(
        f.decide(&web(2), None).fail_open,
        Some(FailOpenReason::Missing)
    );
    f.budget
        .limits
        .priority_levels
        .insert("workload-low".to_owned(), 1000.0);
    assert_eq!(f.decide(&web(2), None).outcome, Outcome::Allowed);
}

#[test]
fn the_pod_templates_service_account_decides_the_level() {
    // 5 pods at global-default (nothing in use): peak 5 × (2 + 10) = 60 > 50.
    let mut v = fixture("deployment-web.json");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["replicas"] = json!(5);
    v["spec"]["template"]["spec"]["serviceAccountName"] = json!("builder");
    let w = Workload::from_value(Kind::Deployment, "web", v).unwrap();
    assert_eq!(w.service_account(), "builder");
    let mut f = auto(None);
    // A schema of higher precedence for that one service account, to its own level.
    let custom: capacity::FlowSchema = serde_json::from_value(json!({
        "metadata": {"name": "builders"},
        "spec": {"matchingPrecedence": 500, "priorityLevelConfiguration": {"name": "global-default"},
                 "rules": [{"subjects": [{"kind": "ServiceAccount",
                                          "serviceAccount": {"namespace": "default", "name": "builder"}}],
                            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                               "namespaces": ["*"], "clusterScope": true}]}]}
    }))
    .unwrap();
    f.apiserver.as_mut().unwrap().flow_schemas.push(custom);
    f.budget
        .limits
        .priority_levels
        .insert("global-default".to_owned(), 50.0);
    let d = f.decide(&w, None);
    let level = d.evaluation.as_ref().unwrap().level.as_ref().unwrap();
    assert_eq!(
        (level.level.as_str(), level.flow_schema.as_str()),
        ("global-default", "builders")
    );
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    // web(20) under the default service account still lands in workload-low.
    assert_eq!(f.decide(&web(20), None).outcome, Outcome::Allowed);
}
