//! The in-cluster watches against a fake API server speaking the real list/watch protocol:
//! nodes, HPAs and the ControlPlaneBudget land in the state; the budget status is patched;
//! a LIST refused with 403 backs off to minutes (counted on tokio's paused clock), is
//! logged once and keeps the webhook not ready; a server without `autoscaling/v2` is
//! worked around, said once and re-checked rarely; a `*/scale` review is judged like its
//! parent once the parent's watch has it.

mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Request,
    http::StatusCode,
    response::Response,
};
use collector::watch::BackoffConfig;
use serde_json::{Value, json};
use tokio::time::Instant;
use webhook::{
    admission::{Budget, INVENTORY_NOT_LISTED, State},
    budget::{ControlPlaneBudget, Mode},
    cluster,
    inventory::Inventory,
    profile::Snapshot,
};

const NODES: &str = "/api/v1/nodes";
const HPAS: &str = "/apis/autoscaling/v2/horizontalpodautoscalers";
const BUDGETS: &str = "/apis/headroom.dev/v1alpha1/controlplanebudgets";
const FLOWSCHEMAS: &str = "/apis/flowcontrol.apiserver.k8s.io/v1beta1/flowschemas";
const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const STATEFULSETS: &str = "/apis/apps/v1/statefulsets";
const REPLICASETS: &str = "/apis/apps/v1/replicasets";

fn list(api_version: &str, kind: &str, items: Value) -> String {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "7"}, "items": items})
        .to_string()
}

fn budget(mode: &str) -> Value {
    json!({
        "apiVersion": "headroom.dev/v1alpha1", "kind": "ControlPlaneBudget",
        "metadata": {"name": "default", "resourceVersion": "5"},
        "spec": {"mode": mode, "limits": {"apiserverRequestsPerSecond": 1000}}
    })
}

fn status(code: u16, reason: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("{reason} (recorded)"), "reason": reason, "code": code})
    .to_string()
}

/// A body (200) or an error status and reason.
type Answer = Result<String, (u16, &'static str)>;

/// One request as the fake API server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    watch: bool,
    user_agent: Option<String>,
    at: Instant,
}

/// What the fake API server answers: per path a body (200) or an error status; watches of
/// a listed path stay open without events. Anything else is 404.
#[derive(Clone, Debug, Default)]
struct Script {
    /// Shared with the serving task: a test changes answers while it runs.
    lists: Arc<Mutex<HashMap<&'static str, Answer>>>,
    patches: Arc<Mutex<Vec<Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Script {
    /// Nodes a, b, c, an HPA of `web` (autoscaling/v2 served) and the budget.
    fn healthy() -> Script {
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
        let discovery = json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "autoscaling/v2",
            "resources": [{"name": "horizontalpodautoscalers", "singularName": "", "namespaced": true,
                           "kind": "HorizontalPodAutoscaler", "verbs": ["list", "watch"]}]
        });
        // As another replica left it: a reservation it admitted just now.
        let mut listed = budget("Warn");
        listed["status"] = json!({"reservations": [{
            "workload": {"namespace": "default", "kind": "Deployment", "name": "other"},
            "load": {"apiserverRequestsPerSecond": 80, "apiserverReceivedBytesPerSecond": 0,
                     "apiserverConnectionsPerSecond": 0, "dnsQueriesPerSecond": 0},
            "admittedAt": webhook::cluster::rfc3339(std::time::SystemTime::now()),
        }]});
        let budgets = list(
            "headroom.dev/v1alpha1",
            "ControlPlaneBudgetList",
            json!([listed]),
        );
        let script = Script::default();
        script.set(NODES, Ok(nodes));
        script.set(HPAS, Ok(hpas));
        script.set("/apis/autoscaling/v2", Ok(discovery.to_string()));
        script.set(BUDGETS, Ok(budgets));
        // FlowSchemas as a 1.20 server serves them (v1beta1), and its /metrics.
        let mut schemas: Value =
            serde_json::from_str(include_str!("fixtures/apf/v1.20.2-flowschemas.json"))
                .expect("recorded FlowSchemas");
        schemas["kind"] = json!("FlowSchemaList");
        schemas["apiVersion"] = json!("flowcontrol.apiserver.k8s.io/v1beta1");
        schemas["metadata"] = json!({"resourceVersion": "7"});
        script.set(FLOWSCHEMAS, Ok(schemas.to_string()));
        let flowcontrol = json!({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "flowcontrol.apiserver.k8s.io/v1beta1",
            "resources": [{"name": "flowschemas", "singularName": "", "namespaced": false,
                           "kind": "FlowSchema", "verbs": ["list", "watch"]}]
        });
        script.set(
            "/apis/flowcontrol.apiserver.k8s.io/v1beta1",
            Ok(flowcontrol.to_string()),
        );
        script.set(
            "/metrics",
            Ok(include_str!("fixtures/apf/v1.20.2-after-600-lists.prom").to_owned()),
        );
        // The parents of scale reviews: none yet.
        for (path, kind) in [
            (DEPLOYMENTS, "DeploymentList"),
            (STATEFULSETS, "StatefulSetList"),
            (REPLICASETS, "ReplicaSetList"),
        ] {
            script.set(path, Ok(list("apps/v1", kind, json!([]))));
        }
        script
    }

    /// What `path` answers from now on; `None`: 404.
    fn set(&self, path: &'static str, answer: Answer) {
        self.lists.lock().expect("lock").insert(path, answer);
    }

    fn remove(&self, path: &str) {
        self.lists.lock().expect("lock").remove(path);
    }

    fn answer_of(&self, path: &str) -> Option<Answer> {
        self.lists.lock().expect("lock").get(path).cloned()
    }

    fn answer(&self, request: &Request) -> Response {
        let path = request.uri().path().to_owned();
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true"));
        let user_agent = request
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen.lock().expect("lock").push(Seen {
            path: path.clone(),
            watch,
            user_agent,
            at: Instant::now(),
        });
        let (code, body) = match self.answer_of(&path) {
            Some(Ok(_)) if watch => {
                let pending = futures::stream::pending::<Result<Bytes, Infallible>>();
                return Response::new(Body::from_stream(pending));
            }
            Some(Ok(body)) => (200, body),
            Some(Err((code, reason))) => (code, status(code, reason)),
            None if path == format!("{BUDGETS}/default/status") => {
                (200, budget("Warn").to_string())
            }
            None => (404, status(404, "NotFound")),
        };
        Response::builder()
            .status(StatusCode::from_u16(code).expect("a status"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a response")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn lists_of(&self, path: &str, before: Instant) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path == path && !s.watch && s.at < before)
            .count()
    }

    /// Serves on 127.0.0.1; returns a client with the webhook's `User-Agent`.
    async fn serve(&self) -> kube::Client {
        let script = self.clone();
        let patches = self.patches.clone();
        let app = Router::new().fallback(move |request: Request| {
            let (script, patches) = (script.clone(), patches.clone());
            async move {
                let is_patch = request.method() == axum::http::Method::PATCH;
                let response = script.answer(&request);
                if is_patch {
                    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                        .await
                        .expect("a body");
                    let patch = serde_json::from_slice(&body).expect("a JSON patch");
                    patches.lock().expect("lock").push(patch);
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        cluster::client_from(kube::Config::new(url.parse().expect("a URL"))).expect("a client")
    }
}

/// The state `serve --kube` builds, with its watches started against `client`.
fn start(client: kube::Client) -> Arc<State> {
    let file_budget: ControlPlaneBudget =
        serde_json::from_value(budget("Enforce")).expect("a budget");
    let state = Arc::new(State::new(Budget::from(file_budget), Inventory::default()));
    let mut snapshot = Snapshot::default();
    snapshot.totals.apiserver_requests_per_second = 250.0;
    state.set_snapshot(snapshot, std::time::SystemTime::now());
    let health = Arc::new(cluster::health());
    state.set_watches(health.clone());
    state.await_inventory();
    let backoff = BackoffConfig {
        start_jitter: Duration::ZERO,
        ..BackoffConfig::default()
    };
    tokio::spawn(cluster::run(
        client,
        state.clone(),
        health,
        "default".to_owned(),
        Duration::from_millis(100),
        backoff,
    ));
    state
}

/// Log lines written while `f` runs on this thread (the paused-clock tests run every task
/// on it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("info,kube_runtime::watcher=error,kube_client::client::builder=off")
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn daemonset_review() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/demo/reviews/daemonset-agent-create.json"
    );
    std::fs::read(path).expect("the recorded DaemonSet review")
}

#[tokio::test]
async fn watches_fill_the_state_and_status_is_patched() {
    let script = Script::healthy();
    let state = start(script.serve().await);

    let mut done = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if state.inventory().total() == 3
            && state.budget().spec.mode == Mode::Warn
            && !state.autoscalers().max_replicas.is_empty()
            && !script.patches.lock().expect("lock").is_empty()
            && state.ready()
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
    // The other replica's reservation, read back from the budget watch.
    let reserved = state.reservations();
    assert_eq!(reserved.len(), 1, "{reserved:?}");
    assert_eq!(reserved[0].workload.name, "other");
    assert_eq!(reserved[0].load.apiserver_requests_per_second, 80.0);
    let status = &script.patches.lock().expect("lock")[0]["status"];
    assert_eq!(status["current"]["apiserverRequestsPerSecond"], 250.0);
    assert_eq!(status["headroom"]["apiserverRequestsPerSecond"], 750.0);
    assert!(
        status["observedAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{status}"
    );
    // Every request says who is calling.
    let agent = format!("headroom-webhook/{}", env!("CARGO_PKG_VERSION"));
    let seen = script.seen();
    assert!(
        seen.iter()
            .all(|s| s.user_agent.as_deref() == Some(agent.as_str())),
        "{seen:#?}"
    );
    let metrics = state.metrics.encode();
    for line in [
        r#"headroom_webhook_kube_watch_ready{resource="nodes"} 1"#,
        r#"headroom_webhook_kube_watch_ready{resource="horizontalpodautoscalers"} 1"#,
        r#"headroom_webhook_kube_watch_ready{resource="controlplanebudgets"} 1"#,
        r#"headroom_webhook_kube_lists_total{resource="nodes"} 1"#,
        r#"headroom_webhook_kube_watch_errors_total{resource="nodes",reason="list_failed"} 0"#,
        r#"headroom_webhook_kube_api_served{resource="horizontalpodautoscalers"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
}

/// The status writer without `patch` on controlplanebudgets/status: it backs off like
/// the watches instead of trying on every refresh (here every 100 ms), logs once, and
/// writes again once the API server lets it.
#[tokio::test(start_paused = true)]
async fn a_refused_status_patch_backs_off_and_logs_once() {
    const STATUS: &str = "/apis/headroom.dev/v1alpha1/controlplanebudgets/default/status";
    let logs = Logs::default();
    let _capture = logs.capture();
    let script = Script::healthy();
    script.set(STATUS, Err((403, "Forbidden")));
    let t0 = Instant::now();
    let _state = start(script.serve().await);

    tokio::time::sleep(Duration::from_secs(600)).await;
    let patches = |before: Instant| {
        script
            .seen()
            .iter()
            .filter(|s| s.path == STATUS && s.at < before)
            .count()
    };
    let first_minute = patches(t0 + Duration::from_secs(60));
    let ten_minutes = patches(t0 + Duration::from_secs(600));
    // 1 s doubling, +0–25 %, capped at 300 s while refused: t ≈ 0, 1, 3, 7, 15, 31, …
    assert!(
        (3..=8).contains(&first_minute),
        "{first_minute} in the first minute"
    );
    assert!(
        (5..=11).contains(&ten_minutes),
        "{ten_minutes} in ten minutes"
    );
    let warned = logs
        .lines()
        .iter()
        .filter(|l| l.contains("writing the budget status failed"))
        .count();
    assert_eq!(warned, 1, "{:?}", logs.lines());

    // Granted: the next attempt (at most 300 s + 25 % later) writes, and says so.
    script.remove(STATUS);
    let granted = Instant::now();
    tokio::time::sleep(Duration::from_secs(400)).await;
    assert!(
        script
            .seen()
            .iter()
            .any(|s| s.path == STATUS && s.at >= granted),
        "written again once allowed"
    );
    assert!(
        logs.lines()
            .iter()
            .any(|l| l.contains("writing the budget status works again")),
        "{:?}",
        logs.lines()
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_node_list_backs_off_logs_once_and_keeps_the_webhook_not_ready() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let script = Script::healthy();
    script.set(NODES, Err((403, "Forbidden")));
    let t0 = Instant::now();
    let state = start(script.serve().await);

    tokio::time::sleep(Duration::from_secs(60)).await;
    let first_minute = script.lists_of(NODES, t0 + Duration::from_secs(60));
    let why = state.not_ready_because();
    assert_eq!(
        why,
        [
            "nodes: never listed: 403 Forbidden (grant list/watch on nodes: see \
          deploy/webhook/rbac.yaml)"
        ],
        "the budget and HPAs listed; the nodes did not"
    );
    let probes = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let probes_addr = probes.local_addr().expect("addr");
    let router = webhook::server::metrics_router(state.clone());
    tokio::spawn(async move { axum::serve(probes, router).await });
    let (code, body) = support::http_get(probes_addr, "/readyz").await;
    assert_eq!(
        (code.as_u16(), body.as_str()),
        (
            503,
            "not ready:\n  nodes: never listed: 403 Forbidden (grant list/watch on nodes: see \
             deploy/webhook/rbac.yaml)\n"
        )
    );
    // A DaemonSet change in this window: allowed unevaluated, never projected at 0 pods.
    let answer: Value =
        serde_json::from_slice(&state.review(&daemonset_review()).expect("an answer"))
            .expect("JSON");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        answer["response"]["warnings"],
        json!([INVENTORY_NOT_LISTED])
    );

    tokio::time::sleep(Duration::from_secs(540)).await;
    let ten_minutes = script.lists_of(NODES, t0 + Duration::from_secs(600));
    println!(
        "nodes LISTs answered 403: {first_minute} in the first minute, {ten_minutes} in 10 minutes"
    );
    // 1 s doubling to 300 s, lengthened by up to 25 %: 6 LISTs in the first minute
    // (t = 0, 1, 3, 7, 15, 31 s at the earliest), 9 or 10 in ten minutes.
    assert_eq!(first_minute, 6);
    assert!((9..=10).contains(&ten_minutes), "{ten_minutes}");
    assert_eq!(script.lists_of(BUDGETS, t0 + Duration::from_secs(600)), 1);
    assert_eq!(script.lists_of(HPAS, t0 + Duration::from_secs(600)), 1);

    let lines = logs.lines();
    let refused: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("cannot list nodes"))
        .collect();
    println!(
        "{}",
        refused
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert!(
        refused[0].contains("ERROR")
            && refused[0].contains(
                "cannot list nodes: 403 Forbidden; grant list/watch on nodes: see \
                 deploy/webhook/rbac.yaml"
            ),
        "{refused:?}"
    );
    let metrics = state.metrics.encode();
    for line in [
        format!(
            r#"headroom_webhook_kube_watch_errors_total{{resource="nodes",reason="list_failed"}} {ten_minutes}"#
        ),
        r#"headroom_webhook_kube_watch_ready{resource="nodes"} 0"#.to_owned(),
        r#"headroom_webhook_kube_watch_ready{resource="controlplanebudgets"} 1"#.to_owned(),
        r#"headroom_webhook_fail_opens_total{reason="inventory"} 1"#.to_owned(),
        r#"headroom_webhook_decisions_total{mode="Warn",result="fail_open",kind="DaemonSet"} 1"#
            .to_owned(),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_autoscaling_v2_the_webhook_projects_without_hpas_and_says_so_once() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let script = Script::healthy();
    // A 1.20 API server serves autoscaling/v2beta2, not v2.
    script.remove("/apis/autoscaling/v2");
    script.remove(HPAS);
    let t0 = Instant::now();
    let state = start(script.serve().await);

    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    assert!(state.ready(), "{:?}", state.not_ready_because());
    assert_eq!(state.inventory().total(), 3);
    assert_eq!(
        state.readiness_notes(),
        [format!(
            "horizontalpodautoscalers: autoscaling/v2 not served; {}",
            cluster::WITHOUT_HPAS
        )]
    );
    let seen = script.seen();
    let discovery = seen
        .iter()
        .filter(|s| s.path == "/apis/autoscaling/v2")
        .count();
    // Asked at start, then every 5 minutes: t = 0, 300, 600, 900 s (and 1200 s, the
    // instant the test looks).
    assert!((4..=5).contains(&discovery), "{discovery}: {seen:#?}");
    assert_eq!(script.lists_of(HPAS, t0 + Duration::from_secs(1200)), 0);
    let said: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("not served"))
        .collect();
    println!("{}", said.join("\n"));
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains(
        "autoscaling/v2 horizontalpodautoscalers is not served by this API server: projecting \
         without HorizontalPodAutoscalers"
    ));
    let metrics = state.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l
                == r#"headroom_webhook_kube_api_served{resource="horizontalpodautoscalers"} 0"#),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(|l| l.starts_with(
            r#"headroom_webhook_kube_watch_ready{resource="horizontalpodautoscalers"}"#
        )),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unavailable_api_server_is_retried_within_thirty_seconds_and_recovery_is_said() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let script = Script::healthy();
    let nodes = script.answer_of(NODES).expect("nodes");
    script.set(NODES, Err((503, "ServiceUnavailable")));
    let t0 = Instant::now();
    let state = start(script.serve().await);

    // Five minutes of 503s: LISTs at t = 0, 1, 3, 7, 15, 31 s, then every 30–37.5 s
    // (transient: no 5-minute steps; no hidden retries in the client), one WARN line.
    tokio::time::sleep(Duration::from_secs(300)).await;
    let lists = script.lists_of(NODES, t0 + Duration::from_secs(300));
    println!("nodes LISTs answered 503 in 5 minutes: {lists}");
    assert!((12..=14).contains(&lists), "{lists}");
    assert!(!state.ready());
    let said = logs.lines();
    let unavailable: Vec<_> = said
        .iter()
        .filter(|l| l.contains("cannot list nodes"))
        .collect();
    assert_eq!(unavailable.len(), 1, "{said:#?}");
    assert!(
        unavailable[0].contains("WARN")
            && unavailable[0].contains("503 Service Unavailable; retrying with backoff"),
        "{unavailable:?}"
    );

    // The API server is back: the next LIST (within 37.5 s) fills the inventory.
    script.set(NODES, nodes);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(state.ready(), "{:?}", state.not_ready_because());
    assert_eq!(state.inventory().total(), 3);
    let back: Vec<_> = logs
        .lines()
        .into_iter()
        .filter(|l| l.contains("the nodes watch works again"))
        .collect();
    assert_eq!(back.len(), 1, "{back:?}");
}

#[tokio::test]
async fn a_scale_review_is_judged_like_the_parent_the_watch_has() {
    let script = Script::healthy();
    // The recorded StatefulSet, with a break-glass annotation, as the list returns it.
    let mut db = support::fixture("statefulset-db.yaml");
    db["metadata"]["resourceVersion"] = json!("8");
    db["metadata"]["annotations"] = json!({"headroom.dev/break-glass": "INC-3: failover"});
    db["status"] = json!({"replicas": 3});
    script.set(
        STATEFULSETS,
        Ok(list("apps/v1", "StatefulSetList", json!([db]))),
    );
    let state = start(script.serve().await);
    let answer = |name: &str| -> Value {
        let review = support::Review::scale_of("statefulsets", "default", name, 3, 30).build();
        let body = state
            .review(&serde_json::to_vec(&review).expect("JSON"))
            .expect("an answer");
        serde_json::from_slice::<Value>(&body).expect("JSON")["response"].clone()
    };
    // Once the parent watch has listed, the StatefulSet is judged with its annotation.
    let break_glass = json!(["headroom: budget not checked, break-glass: INC-3: failover"]);
    let mut r = answer("db");
    for _ in 0..100 {
        if r["warnings"] == break_glass {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        r = answer("db");
    }
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(r["warnings"], break_glass);
    assert_eq!(
        script.lists_of(STATEFULSETS, Instant::now()),
        1,
        "one LIST, then the watch"
    );

    // A StatefulSet the watch does not have: the Scale alone (unmeasured, over the canary
    // size; the cluster's budget is in Warn mode), and the answer says what was not read.
    let r = answer("other");
    assert_eq!(
        r["warnings"],
        json!([
            "headroom: allowed (Warn): unmeasured, 30 pods > canary size 3",
            "headroom: StatefulSet default/other not read for this scale: its annotations, \
             image and strategy were not checked"
        ]),
        "{r}"
    );
}

/// `auto` request limits in `--kube` mode: FlowSchemas from the version the server serves
/// (1.20: v1beta1, discovered) and the levels from two scrapes of its /metrics, through
/// the client; readiness waits for the figures when the budget asks for them.
#[tokio::test(start_paused = true)]
async fn auto_limits_read_flowschemas_and_the_api_servers_metrics() {
    let script = Script::healthy();
    let mut auto = budget("Enforce");
    auto["spec"]["limits"] = json!({"apiserverRequestsPerSecond": "auto"});
    script.set(
        BUDGETS,
        Ok(
            json!({"apiVersion": "headroom.dev/v1alpha1", "kind": "ControlPlaneBudgetList",
                  "metadata": {"resourceVersion": "7"}, "items": [auto]})
            .to_string(),
        ),
    );
    let t0 = Instant::now();
    let state = start(script.serve().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(state.budget().spec.limits.requests_auto());
    assert!(
        state
            .not_ready_because()
            .iter()
            .any(|p| p.contains("no API server capacity figures yet")),
        "{:?}",
        state.not_ready_because()
    );
    // The second scrape, at least 5 s after the first, makes the first window.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(state.ready(), "{:?}", state.not_ready_because());
    let capacity = state.apiserver.current().expect("levels and FlowSchemas");
    assert_eq!(capacity.source, webhook::sources::apiserver::ONE_REPLICA);
    assert_eq!(capacity.flow_schemas.len(), 10);
    let low = &capacity.levels["workload-low"];
    assert_eq!(low.seats, 293.0);
    assert_eq!(
        low.in_use, 0.0,
        "the recorded scrape twice: nothing dispatched between"
    );
    let seen = script.seen();
    let scrapes: Vec<_> = seen.iter().filter(|s| s.path == "/metrics").collect();
    // None until the watched budget asks for `auto` (the one it started with did not),
    // then one per 5 s.
    assert_eq!(scrapes.len(), 2, "{scrapes:?}");
    assert_eq!(scrapes[1].at - scrapes[0].at, Duration::from_secs(5));
    assert!(scrapes[0].at > t0);
    assert_eq!(script.lists_of(FLOWSCHEMAS, Instant::now()), 1);
    // The status shows every level: seats, capacity, in use, limit, headroom, source.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let patches = script.patches.lock().expect("lock").clone();
    let shown = &patches.last().expect("status written")["status"]["apiserverCapacity"];
    assert_eq!(shown["source"], webhook::sources::apiserver::ONE_REPLICA);
    let low = shown["levels"]
        .as_array()
        .expect("levels")
        .iter()
        .find(|l| l["name"] == "workload-low")
        .expect("workload-low");
    assert_eq!(low["seats"], 293.0);
    assert_eq!(low["inUseRequestsPerSecond"], 0.0);
    let capacity = low["capacityRequestsPerSecond"].as_f64().expect("capacity");
    assert!(capacity > 0.0, "{low}");
    assert_eq!(
        low["headroomRequestsPerSecond"].as_f64(),
        low["limitRequestsPerSecond"].as_f64()
    );
}

/// With `--prometheus` as well, the figures come from Prometheus (every replica): the
/// FlowSchemas are still watched, `/metrics` through the client is never read.
#[tokio::test(start_paused = true)]
async fn auto_limits_with_prometheus_leave_the_api_servers_metrics_alone() {
    let script = Script::healthy();
    let mut auto = budget("Enforce");
    auto["spec"]["limits"] = json!({"apiserverRequestsPerSecond": "auto"});
    script.set(
        BUDGETS,
        Ok(
            json!({"apiVersion": "headroom.dev/v1alpha1", "kind": "ControlPlaneBudgetList",
                  "metadata": {"resourceVersion": "7"}, "items": [auto]})
            .to_string(),
        ),
    );
    let state = start(script.serve().await);
    // As `serve --kube --prometheus` does before the watches start.
    state.apiserver.take_levels_from_prometheus();
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(state.budget().spec.limits.requests_auto());
    let seen = script.seen();
    assert!(!seen.iter().any(|s| s.path == "/metrics"), "{seen:?}");
    assert_eq!(script.lists_of(FLOWSCHEMAS, Instant::now()), 1);
    assert!(
        state.apiserver.current().is_none(),
        "no figures from /metrics"
    );
}
