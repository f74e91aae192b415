use serde_json::{Value, json};

use super::*;
use crate::{
    budget::{Limits, RequestLimit},
    profile::{ProfileItem, WorkloadRef},
    workload::Kind,
};

const MIB: f64 = 1024.0 * 1024.0;
const KIB: f64 = 1024.0;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn budget(mode: Mode) -> ControlPlaneBudgetSpec {
    ControlPlaneBudgetSpec {
        mode,
        limits: Limits {
            apiserver_requests_per_second: Some(RequestLimit::PerSecond(2000.0)),
            apiserver_received_bytes_per_second: Some(200.0 * MIB),
            apiserver_connections_per_second: Some(50.0),
            dns_queries_per_second: Some(20000.0),
            ..Limits::default()
        },
        burst_factor: 2.0,
        per_workload_share: 0.5,
        canary_size: 3,
        exempt_namespaces: vec!["kube-system".to_owned()],
        trust_declared: false,
        max_data_age_seconds: 300,
        ..ControlPlaneBudgetSpec::default()
    }
}

fn load(requests: f64, bytes: f64, connections: f64, dns: f64) -> Load {
    Load {
        apiserver_requests_per_second: requests,
        apiserver_received_bytes_per_second: bytes,
        apiserver_connections_per_second: connections,
        dns_queries_per_second: dns,
    }
}

fn item(
    kind: &str,
    ns: &str,
    name: &str,
    image: &str,
    steady: Load,
    startup: Load,
    current: Load,
) -> ProfileItem {
    ProfileItem {
        workload: WorkloadRef {
            namespace: ns.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
        },
        image: image.to_owned(),
        pods: 12,
        minutes: 55,
        measured_seconds: 3300,
        steady,
        startup,
        current,
    }
}

/// The outage shape: an agent whose informer watches every pod in the cluster (per-pod
/// received bytes grow with cluster size; startup LISTs all pods), and a web Deployment.
fn snapshot() -> Snapshot {
    let items = [
        item(
            "DaemonSet",
            "monitoring",
            "agent",
            "registry.example/agent:1.2",
            load(0.2, 50.0 * KIB, 0.001, 2.0),
            load(2.0, 5.0 * MIB, 0.02, 4.0),
            Load::ZERO,
        ),
        item(
            "Deployment",
            "default",
            "web",
            "nginx:1.27",
            load(2.0, 20.0 * KIB, 0.01, 5.0),
            load(10.0, 200.0 * KIB, 0.1, 20.0),
            load(6.0, 60.0 * KIB, 0.03, 15.0),
        ),
    ];
    let mut s = Snapshot {
        totals: load(500.0, 20.0 * MIB, 5.0, 3000.0),
        workloads: items.into_iter().map(|i| (i.workload.clone(), i)).collect(),
        ..Snapshot::default()
    };
    s.index_images();
    s
}

fn node_scoped(mut s: Snapshot) -> Snapshot {
    let agent = WorkloadRef {
        namespace: "monitoring".into(),
        kind: "DaemonSet".into(),
        name: "agent".into(),
    };
    let i = s.workloads.get_mut(&agent).unwrap();
    i.steady = load(0.05, 1.0 * KIB, 0.001, 2.0);
    i.startup = load(0.2, 20.0 * KIB, 0.005, 4.0);
    s
}

struct Fixture {
    budget: ControlPlaneBudgetSpec,
    snapshot: Option<Snapshot>,
    age: Option<Duration>,
    inventory: Inventory,
    autoscalers: Autoscalers,
    apiserver: Option<ApiserverCapacity>,
    apiserver_age: Option<Duration>,
}

impl Fixture {
    fn new(mode: Mode) -> Fixture {
        Fixture {
            budget: budget(mode),
            snapshot: Some(snapshot()),
            age: Some(Duration::from_secs(30)),
            inventory: Inventory::uniform(5000),
            autoscalers: Autoscalers::default(),
            apiserver: None,
            apiserver_age: None,
        }
    }

    fn decide(&self, new: &Workload, old: Option<&Workload>) -> Decision {
        let ctx = Context {
            budget_name: "default",
            budget: &self.budget,
            snapshot: self.snapshot.as_ref(),
            data_age: self.age,
            inventory: &self.inventory,
            autoscalers: &self.autoscalers,
            pending: Load::ZERO,
            apiserver: self.apiserver.as_ref(),
            apiserver_age: self.apiserver_age,
        };
        let d = decide(new, old, &ctx);
        for w in &d.warnings {
            assert!(
                w.chars().count() <= MAX_WARNING_CHARS,
                "warning too long: {w}"
            );
        }
        d
    }
}

fn daemonset() -> Workload {
    Workload::from_value(Kind::DaemonSet, "ds", fixture("daemonset-agent.yaml")).unwrap()
}

fn web(replicas: i64) -> Workload {
    let mut v = fixture("deployment-web.json");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["replicas"] = json!(replicas);
    Workload::from_value(Kind::Deployment, "web", v).unwrap()
}

fn scale(replicas: i64) -> Workload {
    Workload::from_scale(
        Kind::Deployment,
        "scale",
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": replicas}}),
    )
    .unwrap()
}

#[test]
fn outage_shape_daemonset_on_5000_nodes_is_denied_with_numbers() {
    let f = Fixture::new(Mode::Enforce);
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    assert_eq!((d.pods, d.starts), (5000, 5000));
    let e = d.evaluation.as_ref().unwrap();
    // steady: 20 MiB + 5000 × 50 KiB = 264.1 MiB > 200 MiB.
    let bytes = Dimension::ApiserverReceivedBytes;
    assert!((e.projection.steady.get(bytes) - (20.0 * MIB + 5000.0 * 50.0 * KIB)).abs() < 1.0);
    assert!(
        e.violations
            .iter()
            .any(|v| v.dimension == bytes && v.check == Check::Steady)
    );
    assert!(
        e.violations
            .iter()
            .any(|v| v.dimension == bytes && v.check == Check::Peak)
    );
    let m = &d.message;
    assert!(
        m.contains("DaemonSet monitoring/agent over ControlPlaneBudget default (Enforce)"),
        "{m}"
    );
    assert!(
        m.contains("apiserver received bytes/s steady 264.1 MiB > 200.0 MiB"),
        "{m}"
    );
    assert!(m.contains("5000 pods, 5000 starting at once"), "{m}");
    assert!(m.contains("measured over 12 pods, 55 min"), "{m}");
    assert!(
        m.contains("steady 50.0 KiB + startup 5.0 MiB per pod"),
        "{m}"
    );
    // A per-pod cost that fits steady, peak and share together: peak binds,
    // 20 MiB + 5000 × f × (50 KiB + 5 MiB) ≤ 400 MiB → f ≤ 0.01505.
    assert!(
        m.contains("apiserver received bytes/s steady ≤ 770 B, startup ≤ 77.0 KiB"),
        "{m}"
    );
    // Requests: steady fits (1500 ≤ 2000), so only startup is cut: (4000 − 1500) / 5000.
    assert!(m.contains("apiserver requests/s startup ≤ 0.500;"), "{m}");
    assert!(m.contains("node-scoped watch"), "{m}");
    // 100 MiB share / 50 KiB = 2048 nodes; peak: 20 MiB + n × (50 KiB + 5 MiB) ≤ 400 MiB → 75.
    assert!(m.contains("at most 75 nodes"), "{m}");
}

#[test]
fn the_same_agent_with_a_node_scoped_watch_is_allowed() {
    let mut f = Fixture::new(Mode::Enforce);
    f.snapshot = Some(node_scoped(snapshot()));
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::Allowed, "{}", d.message);
    assert!(d.warnings.is_empty());
    assert_eq!(d.message, "within default");
    let summary = allowed_summary("default", d.evaluation.as_ref().unwrap());
    // DNS: 3000 + 5000 × 2 steady, + 5000 × 4 starting = 33000 of 20000 × 2.
    assert_eq!(
        summary,
        "within default: DNS queries/s peak 33000 of 40000 (82%); per pod measured over 12 \
         pods, 55 min"
    );
}

#[test]
fn warn_mode_allows_with_a_short_warning() {
    let f = Fixture::new(Mode::Warn);
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::Warned);
    assert!(d.allowed());
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].starts_with("headroom: over budget, allowed (Warn): "),
        "{:?}",
        d.warnings
    );
}

#[test]
fn audit_mode_allows_and_records() {
    let f = Fixture::new(Mode::Audit);
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::Audited);
    assert!(d.warnings.is_empty());
    assert!(d.audit_annotations[AUDIT_OVER_BUDGET].starts_with("apiserver requests/s peak"));
}

#[test]
fn scale_up_over_budget_is_denied_and_names_the_largest_safe_replicas() {
    let f = Fixture::new(Mode::Enforce);
    // web: 2 req/s per pod, share limit 1000 req/s → 500 pods; steady: 500 − 6 + 2n ≤ 2000 → 753;
    // peak with 10 req/s startup per added pod: 494 + 2n + 10(n − 3) ≤ 4000 → 294.
    let d = f.decide(&scale(1000), Some(&scale(3)));
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    assert_eq!((d.pods, d.starts), (1000, 997));
    assert!(d.message.contains("replicas ≤ 294"), "{}", d.message);
    let allowed = f.decide(&scale(294), Some(&scale(3)));
    assert_eq!(allowed.outcome, Outcome::Allowed, "{}", allowed.message);
    let over = f.decide(&scale(295), Some(&scale(3)));
    assert_eq!(over.outcome, Outcome::Denied, "{}", over.message);
}

#[test]
fn scale_down_and_no_op_updates_are_always_allowed() {
    let f = Fixture::new(Mode::Enforce);
    let d = f.decide(&scale(1), Some(&scale(1000)));
    assert_eq!(d.outcome, Outcome::NoAddedLoad);
    assert!(d.warnings.is_empty());
    let mut label_change = web(3);
    label_change.annotations.insert("team".into(), "a".into());
    assert_eq!(
        f.decide(&label_change, Some(&web(3))).outcome,
        Outcome::NoAddedLoad
    );
    // Even with no data at all.
    let mut empty = Fixture::new(Mode::Enforce);
    empty.snapshot = None;
    assert_eq!(
        empty.decide(&scale(1), Some(&scale(5))).outcome,
        Outcome::NoAddedLoad
    );
}

fn cronjob(parallelism: i64) -> Value {
    let mut v = fixture("cronjob-report.json");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["jobTemplate"]["spec"]["parallelism"] = json!(parallelism);
    v
}

#[test]
fn a_suspended_cronjob_is_not_evaluated_but_a_new_template_is() {
    let f = Fixture::new(Mode::Enforce);
    let read = |v: Value| Workload::from_value(Kind::CronJob, "cronjob", v).unwrap();
    // 50 pods per run, unmeasured: over the canary size, so evaluating it denies.
    let old = cronjob(50);
    let mut suspended = old.clone();
    suspended["spec"]["suspend"] = json!(true);
    let d = f.decide(&read(suspended), Some(&read(old.clone())));
    assert_eq!(d.outcome, Outcome::NoAddedLoad, "{}", d.message);
    assert_eq!(
        d.message,
        "50 pods (was 50), pod template unchanged: adds no load"
    );
    assert!(d.warnings.is_empty());

    let mut new_image = old.clone();
    new_image["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("busybox:1.37");
    let d = f.decide(&read(new_image), Some(&read(old.clone())));
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);

    let d = f.decide(&read(cronjob(60)), Some(&read(old)));
    assert_eq!(
        d.outcome,
        Outcome::Denied,
        "more pods per run: {}",
        d.message
    );
}

#[test]
fn unmeasured_workload_is_allowed_up_to_the_canary_size() {
    let f = Fixture::new(Mode::Enforce);
    let mut v = fixture("deployment-web.json");
    v["metadata"]["name"] = json!("new-app");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/new-app:1");
    for (replicas, outcome) in [
        (1, Outcome::Canary),
        (3, Outcome::Canary),
        (4, Outcome::Denied),
    ] {
        v["spec"]["replicas"] = json!(replicas);
        let w = Workload::from_value(Kind::Deployment, "new", v.clone()).unwrap();
        let d = f.decide(&w, None);
        assert_eq!(d.outcome, outcome, "{replicas}: {}", d.message);
        if outcome == Outcome::Denied {
            assert!(
                d.message.contains("may run at most 3 pods"),
                "{}",
                d.message
            );
            assert!(d.message.contains("this change runs 4"), "{}", d.message);
            assert!(
                d.message.contains("set replicas to at most 3"),
                "{}",
                d.message
            );
        } else {
            assert_eq!(d.warnings.len(), 1);
            assert!(
                d.warnings[0].contains("unmeasured; allowed as a canary"),
                "{:?}",
                d.warnings
            );
        }
    }
}

#[test]
fn unmeasured_daemonset_beyond_canary_says_narrow_the_node_selector() {
    let mut f = Fixture::new(Mode::Enforce);
    f.snapshot = Some(Snapshot::default());
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::Denied);
    assert!(
        d.message
            .contains("narrow the nodeSelector to at most 3 nodes"),
        "{}",
        d.message
    );
}

#[test]
fn image_fallback_measures_a_new_workload() {
    let f = Fixture::new(Mode::Enforce);
    let mut v = fixture("deployment-web.json");
    v["metadata"]["name"] = json!("web-copy");
    v["metadata"]["namespace"] = json!("team-a");
    v["spec"]["replicas"] = json!(10);
    let w = Workload::from_value(Kind::Deployment, "copy", v).unwrap();
    let d = f.decide(&w, None);
    assert_eq!(d.outcome, Outcome::Allowed, "{}", d.message);
    assert!(
        d.evaluation
            .unwrap()
            .provenance
            .to_string()
            .starts_with("image nginx:1.27 as measured for Deployment default/web"),
    );
}

#[test]
fn declared_profile_counts_only_when_trusted() {
    let mut f = Fixture::new(Mode::Enforce);
    let mut v = fixture("deployment-web.json");
    v["metadata"]["name"] = json!("declared");
    v["metadata"]["namespace"] = json!("default");
    v["metadata"]["annotations"] = json!({
        DECLARED_PROFILE_ANNOTATION: r#"{"steady": {"apiserverRequestsPerSecond": 1}, "startup": {"apiserverRequestsPerSecond": 2}}"#
    });
    v["spec"]["replicas"] = json!(10);
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/declared:1");
    let w = Workload::from_value(Kind::Deployment, "declared", v).unwrap();
    let d = f.decide(&w, None);
    assert_eq!(
        d.outcome,
        Outcome::Denied,
        "not trusted → unmeasured beyond canary"
    );
    assert!(d.warnings[0].contains("ignored"), "{:?}", d.warnings);
    f.budget.trust_declared = true;
    let d = f.decide(&w, None);
    assert_eq!(d.outcome, Outcome::Allowed, "{}", d.message);
    assert_eq!(d.evaluation.unwrap().provenance, Provenance::Declared);
}

#[test]
fn break_glass_allows_with_warning_and_audit_annotation() {
    let f = Fixture::new(Mode::Enforce);
    let mut w = daemonset();
    w.annotations.insert(
        BREAK_GLASS_ANNOTATION.into(),
        "INC-1234: restore logging during incident ".repeat(5),
    );
    let d = f.decide(&w, None);
    assert_eq!(d.outcome, Outcome::BreakGlass);
    assert_eq!(d.warnings.len(), 1);
    assert!(d.warnings[0].starts_with("headroom: budget not checked, break-glass: INC-1234"));
    assert!(
        d.warnings[0].ends_with('…'),
        "long reason is cut: {}",
        d.warnings[0]
    );
    assert!(d.audit_annotations[AUDIT_BREAK_GLASS].starts_with("INC-1234"));
}

#[test]
fn exempt_namespace_is_not_evaluated() {
    let f = Fixture::new(Mode::Enforce);
    let mut w = daemonset();
    w.reference.namespace = "kube-system".into();
    let d = f.decide(&w, None);
    assert_eq!(d.outcome, Outcome::Exempt);
    assert!(d.evaluation.is_none());
}

#[test]
fn stale_or_missing_data_fails_open_with_a_warning() {
    let mut f = Fixture::new(Mode::Enforce);
    f.age = Some(Duration::from_secs(301));
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::FailOpen);
    assert_eq!(
        d.warnings,
        ["headroom: not evaluated, profile data is 301s old (max 300s); allowed"]
    );
    assert!(d.audit_annotations.contains_key(AUDIT_FAIL_OPEN));
    f.snapshot = None;
    let d = f.decide(&daemonset(), None);
    assert_eq!(d.outcome, Outcome::FailOpen);
    assert_eq!(
        d.warnings,
        ["headroom: not evaluated, no profile data yet; allowed"]
    );
}

#[test]
fn hpa_max_replicas_is_projected() {
    let mut f = Fixture::new(Mode::Enforce);
    let w = web(3);
    assert_eq!(f.decide(&w, None).pods, 3);
    f.autoscalers.max_replicas.insert(w.reference.clone(), 2000);
    let d = f.decide(&w, None);
    assert_eq!(d.pods, 2000);
    assert_eq!(
        d.outcome,
        Outcome::Denied,
        "2000 × 2 req/s is over the share"
    );
}

#[test]
fn rolling_update_peak_suggests_a_staged_rollout() {
    let mut f = Fixture::new(Mode::Enforce);
    // Everything else is already near the limit: only the rollout's startup burst breaks it.
    let s = f.snapshot.as_mut().unwrap();
    s.totals.apiserver_requests_per_second = 3000.0;
    f.budget.limits.apiserver_requests_per_second = Some(RequestLimit::PerSecond(3500.0));
    f.budget.burst_factor = 1.2;
    let old = web(200);
    let mut v = fixture("deployment-web.json");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["replicas"] = json!(200);
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let new = Workload::from_value(Kind::Deployment, "web", v).unwrap();
    let d = f.decide(&new, Some(&old));
    // steady 2994 + 400 = 3394 ≤ 3500; peak 3394 + 100 × 10 = 4394 > 4200.
    assert_eq!(d.starts, 100);
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    // (4200 − 3394) / 10 = 80.6 → 80.
    assert!(
        d.message.contains("maxSurge + maxUnavailable ≤ 80"),
        "{}",
        d.message
    );
}

#[test]
fn pending_load_counts_against_the_budget() {
    let f = Fixture::new(Mode::Enforce);
    let ctx = |pending| Context {
        budget_name: "default",
        budget: &f.budget,
        snapshot: f.snapshot.as_ref(),
        data_age: f.age,
        inventory: &f.inventory,
        autoscalers: &f.autoscalers,
        pending,
        apiserver: None,
        apiserver_age: None,
    };
    let w = web(200);
    assert_eq!(decide(&w, None, &ctx(Load::ZERO)).outcome, Outcome::Allowed);
    let busy = load(1700.0, 0.0, 0.0, 0.0);
    assert_eq!(decide(&w, None, &ctx(busy)).outcome, Outcome::Denied);
}

#[test]
fn fit_warning_cuts_at_120_characters() {
    assert_eq!(fit_warning("short"), "short");
    let long = "é".repeat(200);
    let cut = fit_warning(&long);
    assert_eq!(cut.chars().count(), 120);
    assert!(cut.ends_with('…'));
}

#[test]
fn jobs_of_a_cronjob_are_not_judged_again_but_other_owned_jobs_are() {
    let f = Fixture::new(Mode::Enforce);
    let owned_by = |kind: &str, api_version: &str| {
        let mut v = fixture("job-migrate.json");
        v["metadata"]["namespace"] = json!("default");
        v["spec"]["parallelism"] = json!(50);
        v["spec"]["completions"] = json!(50);
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": kind, "name": "report",
            "uid": "0b7a3c1e-2f4d-4e5a-9b6c-7d8e9f0a1b2c", "controller": true
        }]);
        Workload::from_value(Kind::Job, "job", v).unwrap()
    };
    let d = f.decide(&owned_by("CronJob", "batch/v1"), None);
    assert_eq!(d.outcome, Outcome::OwnerJudged, "{}", d.message);
    assert_eq!(
        d.message,
        "controlled by CronJob report, which was judged for these pods"
    );
    // An operator's Job: its owner is nothing headroom judged.
    let d = f.decide(&owned_by("Workflow", "argoproj.io/v1alpha1"), None);
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
}

#[test]
fn daemonset_growth_is_staged_in_nodes_not_max_unavailable() {
    let mut f = Fixture::new(Mode::Enforce);
    let node = |pool: &str, count| crate::inventory::NodeGroup {
        labels: [("kubernetes.io/os", "linux"), ("pool", pool)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        count,
        ..Default::default()
    };
    f.inventory = Inventory {
        groups: vec![node("a", 800), node("b", 1197)],
    };
    let mut old = fixture("daemonset-agent.yaml");
    old["spec"]["template"]["spec"]["nodeSelector"]["pool"] = json!("a");
    let old = Workload::from_value(Kind::DaemonSet, "old", old).unwrap();
    // The new template drops the pool: 1,197 nodes newly eligible, all starting at once.
    let d = f.decide(&daemonset(), Some(&old));
    assert_eq!(d.outcome, Outcome::Denied, "{}", d.message);
    assert_eq!((d.pods, d.starts), (1997, 1198));
    let e = d.evaluation.unwrap();
    assert!(
        !e.safe_changes
            .iter()
            .any(|s| matches!(s, SafeChange::RolloutBatch(_))),
        "maxUnavailable does not bound pods on newly eligible nodes: {:?}",
        e.safe_changes
    );
    let Some(SafeChange::Nodes(n)) = e.safe_changes.first() else {
        panic!("{:?}", e.safe_changes);
    };
    assert!((801..1997).contains(n), "{n}");
    assert!(
        d.message.contains(&format!("at most {n} nodes")),
        "{}",
        d.message
    );
}

mod auto;
