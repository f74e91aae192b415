//! Every safe change, applied to the object and judged again, is allowed: a property test
//! over generated workloads, budgets, profiles and clusters (a seeded generator, so a
//! failure names the case that reproduces it).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::{
    budget::{ControlPlaneBudgetSpec, Limits, Mode, RequestLimit},
    decision::{self, Context, Decision, Outcome},
    inventory::{Inventory, NodeGroup},
    profile::{ProfileList, Snapshot, WorkloadRef},
    workload::Autoscalers,
};

/// SplitMix64: small, seeded, good enough to spread cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn int_or_percent(&mut self, max: u64) -> Value {
        if self.chance(0.5) {
            json!(self.range(1, max))
        } else {
            json!(format!("{}%", self.range(1, 100)))
        }
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// One generated review and everything it is judged against.
struct Case {
    kind: Kind,
    new: Value,
    old: Option<Value>,
    budget: ControlPlaneBudgetSpec,
    snapshot: Snapshot,
    inventory: Inventory,
    autoscalers: Autoscalers,
}

const KINDS: [Kind; 6] = [
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::StatefulSet,
    Kind::DaemonSet,
    Kind::Job,
    Kind::CronJob,
];

fn object(rng: &mut Rng, kind: Kind) -> Value {
    let mut v = match kind {
        Kind::Deployment | Kind::ReplicaSet => fixture("deployment-web.json"),
        Kind::StatefulSet => fixture("statefulset-db.yaml"),
        Kind::DaemonSet => fixture("daemonset-agent.yaml"),
        Kind::Job => fixture("job-migrate.json"),
        Kind::CronJob => fixture("cronjob-report.json"),
    };
    v["kind"] = json!(kind.as_str());
    v["metadata"]["namespace"] = json!("apps");
    v["metadata"]["name"] = json!("app");
    let spec = &mut v["spec"];
    match kind {
        Kind::Deployment => {
            spec["strategy"] = match rng.range(0, 2) {
                0 => json!({}),
                1 => json!({"type": "Recreate"}),
                _ => json!({"type": "RollingUpdate", "rollingUpdate": {
                    "maxSurge": rng.int_or_percent(20), "maxUnavailable": rng.int_or_percent(20)}}),
            };
        }
        Kind::ReplicaSet => {
            spec.as_object_mut().unwrap().remove("strategy");
        }
        Kind::StatefulSet => {
            if rng.chance(0.5) {
                spec["podManagementPolicy"] = json!("Parallel");
            }
            spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": rng.int_or_percent(20)}});
        }
        Kind::DaemonSet => {
            spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {
                "maxSurge": rng.range(0, 3), "maxUnavailable": rng.int_or_percent(20)}});
        }
        Kind::Job => spec["completions"] = json!(rng.range(1, 3000)),
        Kind::CronJob => {}
    }
    v
}

fn set_pods(v: &mut Value, kind: Kind, n: u64) {
    match kind {
        Kind::Job => v["spec"]["parallelism"] = json!(n),
        Kind::CronJob => v["spec"]["jobTemplate"]["spec"]["parallelism"] = json!(n),
        Kind::DaemonSet => {}
        _ => v["spec"]["replicas"] = json!(n),
    }
}

fn pod_spec(v: &mut Value, kind: Kind) -> &mut Value {
    if kind == Kind::CronJob {
        &mut v["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &mut v["spec"]["template"]["spec"]
    }
}

fn generate(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let kind = KINDS[rng.range(0, KINDS.len() as u64 - 1) as usize];
    let mut new = object(&mut rng, kind);
    // Log-uniform: as many small workloads as large ones.
    let pods = (2000f64.powf(rng.unit()) as u64).max(1);
    set_pods(&mut new, kind, pods);
    let old = rng.chance(0.5).then(|| {
        let mut old = new.clone();
        // Half are rollouts of the same size, half grow too.
        let old_pods = if rng.chance(0.5) {
            pods
        } else {
            rng.range(0, pods)
        };
        set_pods(&mut old, kind, old_pods);
        if kind == Kind::DaemonSet && rng.chance(0.5) {
            // Today on the pool-a nodes; the new object is eligible on every node.
            pod_spec(&mut old, kind)["nodeSelector"]["pool"] = json!("a");
        }
        if rng.chance(0.6) {
            pod_spec(&mut new, kind)["containers"][0]["image"] = json!("example/app:2");
            pod_spec(&mut old, kind)["containers"][0]["image"] = json!("example/app:1");
        }
        old
    });

    let nodes = rng.range(1, 400);
    let inventory = Inventory {
        groups: (0..nodes)
            .map(|i| NodeGroup {
                name: format!("node-{i}"),
                labels: BTreeMap::from([
                    ("kubernetes.io/os".to_owned(), "linux".to_owned()),
                    (
                        "pool".to_owned(),
                        if i % 3 == 0 { "a" } else { "b" }.to_owned(),
                    ),
                ]),
                taints: Vec::new(),
                count: 1,
            })
            .collect(),
    };

    let scale = [1000.0, 1e7, 50.0, 10000.0];
    let mut limits = Load::ZERO;
    let mut budget_limits = Limits::default();
    for (d, scale) in Dimension::ALL.into_iter().zip(scale) {
        if rng.chance(0.8) {
            limits.set(d, scale * (0.1 + rng.unit()));
        }
    }
    budget_limits.apiserver_requests_per_second = Some(limits.apiserver_requests_per_second)
        .filter(|l| *l > 0.0)
        .map(RequestLimit::PerSecond);
    budget_limits.apiserver_received_bytes_per_second =
        Some(limits.apiserver_received_bytes_per_second).filter(|l| *l > 0.0);
    budget_limits.apiserver_connections_per_second =
        Some(limits.apiserver_connections_per_second).filter(|l| *l > 0.0);
    budget_limits.dns_queries_per_second = Some(limits.dns_queries_per_second).filter(|l| *l > 0.0);
    let budget = ControlPlaneBudgetSpec {
        mode: Mode::Enforce,
        limits: budget_limits,
        burst_factor: 1.0 + 2.0 * rng.unit(),
        per_workload_share: 0.05 + 0.95 * rng.unit(),
        canary_size: 3,
        exempt_namespaces: vec!["kube-system".to_owned()],
        trust_declared: false,
        max_data_age_seconds: 600,
        ..ControlPlaneBudgetSpec::default()
    };

    let reference = WorkloadRef {
        namespace: "apps".to_owned(),
        kind: kind.as_str().to_owned(),
        name: "app".to_owned(),
    };
    let per_dim = |rng: &mut Rng, f: &dyn Fn(f64, f64) -> f64| {
        let mut load = Load::ZERO;
        for (d, scale) in Dimension::ALL.into_iter().zip(scale) {
            load.set(d, f(scale, rng.unit()));
        }
        load
    };
    let totals = per_dim(&mut rng, &|s, u| s * u);
    let steady = per_dim(&mut rng, &|s, u| s * u * u * u * 0.002);
    let startup = per_dim(&mut rng, &|s, u| s * u * u * 0.05);
    let current = per_dim(&mut rng, &|_, u| u * 0.5);
    let snapshot = snapshot_with(&reference, totals, steady, startup, current);

    let mut autoscalers = Autoscalers::default();
    if matches!(kind, Kind::Deployment | Kind::StatefulSet) && rng.chance(0.2) {
        autoscalers
            .max_replicas
            .insert(reference, rng.range(pods, 2500));
    }
    Case {
        kind,
        new,
        old,
        budget,
        snapshot,
        inventory,
        autoscalers,
    }
}

/// The recorded outage profiles with this workload measured at these figures.
fn snapshot_with(
    reference: &WorkloadRef,
    totals: Load,
    steady: Load,
    startup: Load,
    current: Load,
) -> Snapshot {
    let path = format!(
        "{}/tests/fixtures/profiles-outage.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let list = ProfileList::parse("outage", &std::fs::read(path).unwrap()).unwrap();
    let mut snapshot = Snapshot::merge([&list]);
    let mut item = snapshot.workloads.values().next().unwrap().clone();
    item.workload = reference.clone();
    item.image = "example/app".to_owned();
    item.steady = steady;
    item.startup = startup;
    // The workload's share is part of the totals.
    item.current = current.map(|d, share| share * totals.get(d));
    snapshot.workloads = [(reference.clone(), item)].into_iter().collect();
    snapshot.totals = totals;
    snapshot.images.clear();
    snapshot.index_images();
    // One recorded node's data stands for the generated cluster: coverage is not judged.
    snapshot.nodes = None;
    snapshot
}

impl Case {
    fn read(&self, v: &Value) -> Workload {
        Workload::from_value(self.kind, "generated", v.clone()).unwrap()
    }

    fn decide_with(
        &self,
        new: &Value,
        old: Option<&Value>,
        snapshot: &Snapshot,
        autoscalers: &Autoscalers,
    ) -> Decision {
        let ctx = Context {
            budget_name: "generated",
            budget: &self.budget,
            snapshot: Some(snapshot),
            data_age: Some(std::time::Duration::ZERO),
            inventory: &self.inventory,
            autoscalers,
            pending: Load::ZERO,
            apiserver: None,
            apiserver_age: None,
        };
        let old = old.map(|o| self.read(o));
        decision::decide(&self.read(new), old.as_ref(), &ctx)
    }

    fn decide(&self, new: &Value, old: Option<&Value>) -> Decision {
        self.decide_with(new, old, &self.snapshot, &self.autoscalers)
    }

    /// Applies `safe` to the object (or, for a cost target, to its measured profile) and
    /// judges every review the change takes; returns the first that is not allowed.
    fn apply(&self, safe: &SafeChange) -> Option<Decision> {
        let mut new = self.new.clone();
        let first_denied = |decisions: Vec<Decision>| decisions.into_iter().find(|d| !d.allowed());
        match safe {
            SafeChange::Replicas { max, autoscaled } => {
                set_pods(&mut new, self.kind, *max);
                let mut autoscalers = self.autoscalers.clone();
                if *autoscaled {
                    for m in autoscalers.max_replicas.values_mut() {
                        *m = *max;
                    }
                }
                first_denied(vec![self.decide_with(
                    &new,
                    self.old.as_ref(),
                    &self.snapshot,
                    &autoscalers,
                )])
            }
            SafeChange::Nodes(max) => {
                let eligible: Vec<String> = {
                    let spec = self.read(&new).pod_spec.unwrap();
                    self.inventory
                        .groups
                        .iter()
                        .filter(|g| {
                            Inventory {
                                groups: vec![(*g).clone()],
                            }
                            .eligible_nodes(&spec)
                                == 1
                        })
                        .map(|g| g.name.clone())
                        .collect()
                };
                let names = &eligible[..*max as usize];
                pod_spec(&mut new, self.kind)["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": names}]}
                ]}}});
                first_denied(vec![self.decide(&new, self.old.as_ref())])
            }
            SafeChange::RolloutBatch(max) => {
                let rolling = json!({"maxSurge": 0, "maxUnavailable": max});
                match self.kind {
                    Kind::Deployment => {
                        new["spec"]["strategy"] =
                            json!({"type": "RollingUpdate", "rollingUpdate": rolling});
                    }
                    Kind::StatefulSet => {
                        new["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] =
                            json!(max);
                    }
                    _ => new["spec"]["updateStrategy"]["rollingUpdate"] = rolling,
                }
                first_denied(vec![self.decide(&new, self.old.as_ref())])
            }
            SafeChange::Stages(step) => {
                let pods = self.read(&self.new).pods(&self.inventory, None);
                let at = |n: u64| {
                    let mut v = self.new.clone();
                    set_pods(&mut v, self.kind, n);
                    v
                };
                let mut decisions = vec![self.decide(&at(*step), None)];
                let mut n = *step;
                while n < pods {
                    let next = (n + step).min(pods);
                    decisions.push(self.decide(&at(next), Some(&at(n))));
                    n = next;
                }
                first_denied(decisions)
            }
            SafeChange::PerPodCost(cost) => {
                let mut snapshot = self.snapshot.clone();
                for item in snapshot.workloads.values_mut() {
                    item.steady = cost.steady;
                    item.startup = cost.startup;
                }
                first_denied(vec![self.decide_with(
                    &self.new,
                    self.old.as_ref(),
                    &snapshot,
                    &self.autoscalers,
                )])
            }
        }
    }
}

fn variant(safe: &SafeChange) -> &'static str {
    match safe {
        SafeChange::Replicas { .. } => "replicas",
        SafeChange::Nodes(_) => "nodes",
        SafeChange::RolloutBatch(_) => "rollout batch",
        SafeChange::Stages(_) => "stages",
        SafeChange::PerPodCost(_) => "per-pod cost",
    }
}

#[test]
fn every_safe_change_applied_to_the_object_is_allowed() {
    let mut offered: BTreeMap<&str, usize> = BTreeMap::new();
    let mut denied = 0;
    for seed in 0..3000 {
        let case = generate(seed);
        let d = case.decide(&case.new, case.old.as_ref());
        if d.outcome != Outcome::Denied {
            continue;
        }
        denied += 1;
        let e = d
            .evaluation
            .as_ref()
            .expect("a denial over budget has figures");
        for safe in &e.safe_changes {
            *offered.entry(variant(safe)).or_default() += 1;
            if let Some(again) = case.apply(safe) {
                panic!(
                    "seed {seed}: {safe:?} offered for\n{}\nbut applying it is denied:\n{}",
                    d.message, again.message
                );
            }
        }
    }
    // The generator reaches every kind of advice, so the property is exercised.
    assert!(denied > 300, "{denied} denials");
    for kind in [
        "replicas",
        "nodes",
        "rollout batch",
        "stages",
        "per-pod cost",
    ] {
        assert!(
            offered.get(kind).is_some_and(|n| *n >= 10),
            "{kind} offered too rarely: {offered:?}"
        );
    }
}

fn requests(v: f64) -> Load {
    Load {
        apiserver_requests_per_second: v,
        ..Load::ZERO
    }
}

#[test]
fn largest_is_the_boundary() {
    assert_eq!(largest(1, 100, |n| n <= 37), Some(37));
    assert_eq!(largest(1, 100, |_| true), Some(100));
    assert_eq!(largest(1, 100, |_| false), None);
    assert_eq!(largest(5, 4, |_| true), None);
}

#[test]
fn a_cost_target_fits_steady_peak_and_share_together() {
    // limit 1000, burst 1.5, share 0.5; base 200; 100 pods, all 100 starting.
    let budget = Ceilings::fixed(&ControlPlaneBudgetSpec {
        limits: Limits {
            apiserver_requests_per_second: Some(RequestLimit::PerSecond(1000.0)),
            ..Limits::default()
        },
        burst_factor: 1.5,
        per_workload_share: 0.5,
        ..ControlPlaneBudgetSpec::default()
    });
    let w = Workload::from_value(Kind::Deployment, "w", fixture("deployment-web.json")).unwrap();
    let change = Change {
        workload: &w,
        old: None,
        old_pods: 0,
        base: requests(200.0),
        cost: PodCost {
            steady: requests(10.0),
            startup: requests(30.0),
        },
        pods: 100,
        starts: 100,
        autoscaled: false,
    };
    let target = cost_target(&change, &budget).unwrap();
    // Steady alone allows 8/pod, share 5/pod; peak: 200 + 100 f (10 + 30) ≤ 1500 → f ≤ 0.325.
    assert_eq!(target.steady.apiserver_requests_per_second, 3.2);
    assert_eq!(target.startup.apiserver_requests_per_second, 9.7);
    assert!(change.fits(&SafeChange::PerPodCost(target), &budget));
    // Everything else is already over the limit: no per-pod cost helps.
    let over = Change {
        base: requests(1200.0),
        ..change
    };
    assert_eq!(cost_target(&over, &budget), None);
}
