//! The in-cluster watches against a fake API server speaking the real list/watch protocol:
//! nodes, HPAs and the ControlPlaneBudget land in the state; the budget status is patched.

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Query,
    routing::{get, patch},
};
use serde_json::{Value, json};
use webhook::{
    admission::{Budget, State},
    budget::{ControlPlaneBudget, Mode},
    inventory::Inventory,
    profile::Snapshot,
};

fn list(api_version: &str, kind: &str, items: Value) -> String {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "7"}, "items": items})
        .to_string()
}

/// A list, or for `?watch=...` a watch that stays open without events.
fn list_or_watch(
    body: String,
) -> impl Fn(Query<HashMap<String, String>>) -> std::future::Ready<Body> + Clone {
    move |Query(q): Query<HashMap<String, String>>| {
        std::future::ready(if q.contains_key("watch") {
            Body::from_stream(futures::stream::pending::<Result<Bytes, Infallible>>())
        } else {
            Body::from(body.clone())
        })
    }
}

fn budget(mode: &str) -> Value {
    json!({
        "apiVersion": "headroom.dev/v1alpha1", "kind": "ControlPlaneBudget",
        "metadata": {"name": "default", "resourceVersion": "5"},
        "spec": {"mode": mode, "limits": {"apiserverRequestsPerSecond": 1000}}
    })
}

#[tokio::test]
async fn watches_fill_the_state_and_status_is_patched() {
    let nodes = list(
        "v1",
        "NodeList",
        json!([
            {"metadata": {"name": "a", "resourceVersion": "1", "labels": {"kubernetes.io/os": "linux"}}},
            {"metadata": {"name": "b", "resourceVersion": "2", "labels": {"kubernetes.io/os": "linux"}},
             "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}},
            {"metadata": {"name": "c", "resourceVersion": "3", "labels": {"kubernetes.io/os": "windows"}}}
        ]),
    );
    let hpas = list(
        "autoscaling/v2",
        "HorizontalPodAutoscalerList",
        json!([{"metadata": {"name": "web", "namespace": "default", "resourceVersion": "4"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                         "maxReplicas": 40}}]),
    );
    let budgets = list(
        "headroom.dev/v1alpha1",
        "ControlPlaneBudgetList",
        json!([budget("Warn")]),
    );
    let patches: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorded = patches.clone();
    let app = Router::new()
        .route("/api/v1/nodes", get(list_or_watch(nodes)))
        .route(
            "/apis/autoscaling/v2/horizontalpodautoscalers",
            get(list_or_watch(hpas)),
        )
        .route(
            "/apis/headroom.dev/v1alpha1/controlplanebudgets",
            get(list_or_watch(budgets)),
        )
        .route(
            "/apis/headroom.dev/v1alpha1/controlplanebudgets/default/status",
            patch(move |body: Bytes| {
                let recorded = recorded.clone();
                async move {
                    recorded
                        .lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    budget("Warn").to_string()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let config = kube::Config::new(url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let file_budget: ControlPlaneBudget = serde_json::from_value(budget("Enforce")).unwrap();
    let state = Arc::new(State::new(Budget::from(file_budget), Inventory::default()));
    let mut snapshot = Snapshot::default();
    snapshot.totals.apiserver_requests_per_second = 250.0;
    state.set_snapshot(snapshot, std::time::SystemTime::now());
    tokio::spawn(webhook::cluster::run(
        client,
        state.clone(),
        "default".to_owned(),
        Duration::from_millis(100),
    ));

    let mut done = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if state.inventory().total() == 3
            && state.budget().spec.mode == Mode::Warn
            && !state.autoscalers().max_replicas.is_empty()
            && !patches.lock().unwrap().is_empty()
        {
            done = true;
            break;
        }
    }
    assert!(done, "state filled from the watches and status patched");
    let linux_untainted = k8s_openapi::api::core::v1::PodSpec {
        node_selector: Some([("kubernetes.io/os".to_owned(), "linux".to_owned())].into()),
        ..Default::default()
    };
    assert_eq!(state.inventory().eligible_nodes(&linux_untainted), 1);
    let web = webhook::profile::WorkloadRef {
        namespace: "default".into(),
        kind: "Deployment".into(),
        name: "web".into(),
    };
    assert_eq!(state.autoscalers().max_for(&web), Some(40));
    let status = &patches.lock().unwrap()[0]["status"];
    assert_eq!(status["current"]["apiserverRequestsPerSecond"], 250.0);
    assert_eq!(status["headroom"]["apiserverRequestsPerSecond"], 750.0);
    assert!(
        status["observedAt"].as_str().unwrap().ends_with('Z'),
        "{status}"
    );
}
