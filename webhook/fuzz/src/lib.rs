//! What the webhook's fuzz targets share: the recorded fixtures they start from and the
//! properties every answer must have.
use std::{sync::OnceLock, time::SystemTime};

use serde_json::Value;
use webhook::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    check::Finding,
    inventory::Inventory,
    load::{Dimension, Load},
    profile::{ProfileList, Snapshot},
};

/// The recorded AdmissionReview bodies (`webhook/demo/reviews/`).
pub const REVIEWS: [&str; 3] = [
    include_str!("../../demo/reviews/deployment-web-create.json"),
    include_str!("../../demo/reviews/daemonset-agent-create.json"),
    include_str!("../../demo/reviews/deployment-web-scale-1000.json"),
];

const BUDGET: &str = include_str!("../../tests/fixtures/budget.yaml");
const PROFILES: &str = include_str!("../../tests/fixtures/profiles-node-scoped.json");

/// Nodes of the stand-in inventory (DaemonSets run one pod on each).
pub const NODES: u64 = 5;

/// The test budget (`webhook/tests/fixtures/budget.yaml`).
pub fn budget() -> &'static ControlPlaneBudget {
    static BUDGET_CELL: OnceLock<ControlPlaneBudget> = OnceLock::new();
    BUDGET_CELL.get_or_init(|| {
        ControlPlaneBudget::parse("budget.yaml", BUDGET).expect("the fixture budget parses")
    })
}

/// The recorded node profiles, as data whose age and coverage are not judged.
pub fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let list = ProfileList::parse("profiles", PROFILES.as_bytes())
            .expect("the fixture profiles parse");
        Snapshot {
            nodes: None,
            ..Snapshot::merge([&list])
        }
    })
}

pub fn inventory() -> Inventory {
    Inventory::uniform(NODES)
}

/// A fresh webhook state (no reservations) with the fixture budget and profiles, fresh.
pub fn state() -> State {
    let state = State::new(Budget::from(budget().clone()), inventory());
    state.set_snapshot(snapshot().clone(), SystemTime::now());
    state
}

/// A decision is a well-formed AdmissionReview answering `uid`: `allowed` set, a denial
/// with a 4xx status and a message, warnings as strings.
pub fn assert_well_formed(out: &[u8], uid: &str) {
    let review: Value = serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("response is not JSON ({e}): {out:?}"));
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = &review["response"];
    assert_eq!(response["uid"].as_str(), Some(uid), "{review}");
    let allowed = response["allowed"]
        .as_bool()
        .unwrap_or_else(|| panic!("no allowed: {review}"));
    if !allowed {
        let code = response["status"]["code"].as_u64().unwrap_or(0);
        assert!(
            (400..500).contains(&code),
            "denied with code {code}: {review}"
        );
        let message = response["status"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "denied without a message: {review}");
    }
    if let Some(warnings) = response.get("warnings") {
        let warnings = warnings.as_array().expect("warnings is a list");
        assert!(warnings.iter().all(Value::is_string), "{review}");
    }
}

/// Every dimension finite and ≥ 0.
pub fn assert_load(load: &Load, what: &str) {
    for d in Dimension::ALL {
        let v = load.get(d);
        assert!(v.is_finite() && v >= 0.0, "{what}.{}: {v}", d.field());
    }
}

/// A finding's projected numbers are finite and non-negative.
pub fn assert_finding(f: &Finding) {
    for (name, load) in [("steady", &f.steady), ("peak", &f.peak)] {
        if let Some(load) = load {
            assert_load(load, &format!("{} {name}", f.document));
        }
    }
    assert!(
        f.allowed || !f.message.is_empty(),
        "denied without a message: {f:?}"
    );
}
