//! Reservations last until the data shows them, and every replica sees them: with a limit
//! of 1000 requests/s and 900 in use, two +80/s scale-ups 20 s apart — the second is denied,
//! on one replica, on two sharing a process's ledger, and on two `--kube` replicas sharing
//! the budget's status through a fake API server that enforces resourceVersion.
#![expect(clippy::unwrap_used, reason = "tests")]

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Bytes,
    http::StatusCode,
    routing::{get, put},
};
use serde_json::{Value, json};
use support::Review;
use webhook::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    inventory::Inventory,
    load::Load,
    profile::{ProfileItem, Snapshot, WorkloadRef},
    reservation::{self, Ledger},
};

/// The fixture budget with a 1000 requests/s limit.
fn budget_object() -> Value {
    let text = std::fs::read_to_string(support::fixtures().join("budget.yaml")).unwrap();
    let text = text.replace(
        "apiserverRequestsPerSecond: 2000",
        "apiserverRequestsPerSecond: 1000",
    );
    let mut budget: Value = serde_yaml::from_str(&text).unwrap();
    budget["metadata"]["resourceVersion"] = json!("1");
    budget
}

fn budget() -> Budget {
    Budget::from(serde_json::from_value::<ControlPlaneBudget>(budget_object()).unwrap())
}

fn requests(n: f64) -> Load {
    Load {
        apiserver_requests_per_second: n,
        ..Load::ZERO
    }
}

/// 900 requests/s in use, 80 of them each by web-a and web-b (10 pods at 8/s), measured at
/// `at` on one node.
fn snapshot(at: SystemTime) -> Snapshot {
    let item = |name: &str| ProfileItem {
        workload: WorkloadRef {
            namespace: "default".into(),
            kind: "Deployment".into(),
            name: name.into(),
        },
        image: format!("registry.example/{name}:1"),
        pods: 10,
        minutes: 60,
        measured_seconds: 3600,
        steady: requests(8.0),
        startup: Load::ZERO,
        current: requests(80.0),
    };
    let mut s = Snapshot {
        totals: requests(900.0),
        workloads: ["web-a", "web-b"]
            .into_iter()
            .map(|n| {
                let i = item(n);
                (i.workload.clone(), i)
            })
            .collect(),
        nodes: Some(BTreeMap::from([("node-a".to_owned(), at)])),
        ..Snapshot::default()
    };
    s.index_images();
    s
}

/// `kubectl scale deployment NAME --replicas=20` from 10: +80 requests/s.
fn scale_up(name: &str) -> Vec<u8> {
    serde_json::to_vec(&Review::scale("default", name, 10, 20).build()).unwrap()
}

fn answer(state: &State, body: &[u8]) -> Value {
    let out: Value = serde_json::from_slice(&state.review(body).unwrap()).unwrap();
    out["response"].clone()
}

fn replica(ledger: Arc<Mutex<Ledger>>) -> State {
    State::with_ledger(budget(), Inventory::uniform(1), ledger)
}

#[test]
fn the_second_of_two_scale_ups_20s_apart_is_denied() {
    let now = SystemTime::now();
    let state = replica(Arc::default());
    state.set_snapshot(snapshot(now), now);
    let first = answer(&state, &scale_up("web-a"));
    assert_eq!(first["allowed"], true, "{first}");
    // A refresh 20 s later: the data does not show web-a's new pods yet.
    let later = now + Duration::from_secs(20);
    state.set_snapshot(snapshot(later), later);
    let second = answer(&state, &scale_up("web-b"));
    assert_eq!(second["allowed"], false, "{second}");
    let message = second["status"]["message"].as_str().unwrap();
    assert!(message.contains("steady 1060 > 1000"), "{message}");
    // Once the data covers a rate window after the first admission, it is measured (in
    // the totals, which this stand-in data leaves at 900): nothing is reserved.
    let measured = now + Duration::from_secs(301);
    state.set_snapshot(snapshot(measured), measured);
    assert!(state.reservations().is_empty());
}

#[test]
fn a_dry_run_reserves_nothing() {
    let now = SystemTime::now();
    let state = replica(Arc::default());
    state.set_snapshot(snapshot(now), now);
    let dry =
        serde_json::to_vec(&Review::scale("default", "web-a", 10, 20).dry_run().build()).unwrap();
    assert_eq!(answer(&state, &dry)["allowed"], true);
    assert!(state.reservations().is_empty());
    assert_eq!(answer(&state, &scale_up("web-b"))["allowed"], true);
}

#[test]
fn two_replicas_sharing_a_ledger_deny_the_second() {
    let now = SystemTime::now();
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let (a, b) = (replica(ledger.clone()), replica(ledger));
    for r in [&a, &b] {
        r.set_snapshot(snapshot(now), now);
    }
    assert_eq!(answer(&a, &scale_up("web-a"))["allowed"], true);
    let later = now + Duration::from_secs(20);
    b.set_snapshot(snapshot(later), later);
    assert_eq!(answer(&b, &scale_up("web-b"))["allowed"], false);
}

/// A fake API server for one ControlPlaneBudget: GET, and PUT of its status with the
/// resourceVersion precondition (409 when it is not the current one). `conflicts` PUTs
/// first meet another writer that came first.
#[derive(Clone)]
struct FakeApiServer {
    budget: Arc<Mutex<Value>>,
    conflicts: Arc<AtomicU64>,
    answered_409: Arc<AtomicU64>,
}

impl FakeApiServer {
    async fn start(conflicts: u64) -> (FakeApiServer, kube::Client) {
        let fake = FakeApiServer {
            budget: Arc::new(Mutex::new(budget_object())),
            conflicts: Arc::new(AtomicU64::new(conflicts)),
            answered_409: Arc::default(),
        };
        let (get_fake, put_fake) = (fake.clone(), fake.clone());
        let path = "/apis/headroom.dev/v1alpha1/controlplanebudgets/default";
        let app = Router::new()
            .route(
                path,
                get(move || {
                    let fake = get_fake.clone();
                    async move { fake.budget.lock().unwrap().to_string() }
                }),
            )
            .route(
                &format!("{path}/status"),
                put(move |body: Bytes| {
                    let fake = put_fake.clone();
                    async move { fake.put_status(&body) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        (fake, client)
    }

    fn put_status(&self, body: &[u8]) -> (StatusCode, String) {
        let sent: Value = serde_json::from_slice(body).unwrap();
        let mut budget = self.budget.lock().unwrap();
        let current: u64 = budget["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let bump = |budget: &mut Value| {
            budget["metadata"]["resourceVersion"] = json!((current + 1).to_string());
        };
        if self.conflicts.load(Ordering::SeqCst) > 0 {
            // Another writer (the status writer, another replica) got in first.
            self.conflicts.fetch_sub(1, Ordering::SeqCst);
            bump(&mut budget);
        }
        if sent["metadata"]["resourceVersion"] != budget["metadata"]["resourceVersion"] {
            self.answered_409.fetch_add(1, Ordering::SeqCst);
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Operation cannot be fulfilled on controlplanebudgets.headroom.dev \
                            \"default\": the object has been modified; please apply your \
                            changes to the latest version and try again",
                "reason": "Conflict", "code": 409
            });
            return (StatusCode::CONFLICT, status.to_string());
        }
        budget["status"] = sent["status"].clone();
        let now: u64 = budget["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        budget["metadata"]["resourceVersion"] = json!((now + 1).to_string());
        (StatusCode::OK, budget.to_string())
    }
}

/// A `--kube` replica: its own ledger, sharing through the budget status.
fn kube_replica(client: &kube::Client) -> Arc<State> {
    let state = Arc::new(replica(Arc::default()));
    let (share, admitted) = tokio::sync::mpsc::unbounded_channel();
    state.share_reservations(share);
    tokio::spawn(reservation::shared::run(
        kube::Api::all(client.clone()),
        "default".to_owned(),
        state.clone(),
        admitted,
        Duration::from_millis(50),
        true,
    ));
    state
}

#[tokio::test]
async fn two_kube_replicas_share_reservations_through_the_budget_status() {
    let (fake, client) = FakeApiServer::start(1).await;
    let now = SystemTime::now();
    let (a, b) = (kube_replica(&client), kube_replica(&client));
    for r in [&a, &b] {
        r.set_snapshot(snapshot(now), now);
    }
    assert_eq!(answer(&a, &scale_up("web-a"))["allowed"], true);
    let mut seen = false;
    for _ in 0..200 {
        seen = !b.reservations().is_empty();
        if seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "replica b never read replica a's reservation");
    let later = now + Duration::from_secs(20);
    b.set_snapshot(snapshot(later), later);
    let second = answer(&b, &scale_up("web-b"));
    assert_eq!(second["allowed"], false, "{second}");

    assert!(
        fake.answered_409.load(Ordering::SeqCst) >= 1,
        "the conflict was met"
    );
    let stored = fake.budget.lock().unwrap()["status"]["reservations"].clone();
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
    assert_eq!(stored[0]["workload"]["name"], "web-a");
    assert_eq!(stored[0]["load"]["apiserverRequestsPerSecond"], 80.0);
}
