//! `apiserverRequestsPerSecond: auto` with `--prometheus`: the real Debian Prometheus
//! scrapes two stand-in API server replicas that serve the recorded v1.20.2 `/metrics`
//! (tests/fixtures/apf/: before a load, then after 600 LISTs), and the webhook's
//! capacity source reads the per-level sums over both instances, as does `serve --prometheus`
//! with a budget of `auto` request limits. When the replicas stop
//! answering, Prometheus marks their series stale and the source says what is missing.
#![expect(clippy::unwrap_used, reason = "tests")]

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use axum::{Router, http::StatusCode, routing::get};
use support::{Profiles, RealPrometheus, http_get, start_server_unready, temp_dir};
use webhook::{
    capacity::{Generation, apf},
    sources::apiserver_prometheus::{self as source, DEFAULT_WINDOW},
};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(support::fixtures().join("apf").join(name)).unwrap()
}

/// One API server replica's `/metrics`: the recorded scrape before the load for its first
/// three scrapes, the one after it from then on; 503 once `down`.
async fn replica(down: Arc<AtomicBool>) -> String {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let (before, after) = (
        fixture("v1.20.2-before-load.prom"),
        fixture("v1.20.2-after-600-lists.prom"),
    );
    let metrics = move || {
        let n = scrapes.fetch_add(1, Ordering::SeqCst);
        let body = if n < 3 { before.clone() } else { after.clone() };
        let down = down.load(Ordering::SeqCst);
        async move {
            if down {
                (StatusCode::SERVICE_UNAVAILABLE, String::new())
            } else {
                (StatusCode::OK, body)
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/metrics", get(metrics));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr.to_string()
}

#[tokio::test]
async fn capacity_is_summed_over_every_scraped_replica_and_missing_once_they_go() {
    let dir = temp_dir("apiserver-prometheus");
    let down = Arc::new(AtomicBool::new(false));
    let replicas = [replica(down.clone()).await, replica(down.clone()).await];
    let prometheus = RealPrometheus::start(&dir, &replicas).await;

    // Until both replicas have been scraped after the load, the figures are incomplete.
    let mut figures = None;
    for _ in 0..120 {
        if let Ok(f) = source::fetch(&prometheus.url, DEFAULT_WINDOW, 0.7).await
            && f.instances == 2
            && f.levels.get("workload-low").is_some_and(|l| l.in_use > 0.0)
        {
            figures = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let figures = figures.expect("Prometheus has both replicas' figures within 60 s");
    assert_eq!(figures.generation, Generation::Requests);
    assert_eq!(figures.source(), "Prometheus, 2 API server instances");
    let age = SystemTime::now()
        .duration_since(figures.observed_at)
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(30),
        "sample times, not now: {age:?}"
    );

    let before = apf::parse(&fixture("v1.20.2-before-load.prom"), 0.0).unwrap();
    let after = apf::parse(&fixture("v1.20.2-after-600-lists.prom"), 1.0).unwrap();
    let low = &figures.levels["workload-low"];
    let (then, now) = (
        &before.levels["workload-low"],
        &after.levels["workload-low"],
    );
    // Seats are gauges: each replica's 293, summed.
    assert_eq!(low.seats, 2.0 * now.seats);
    // The cost per request is a ratio of two rates over the same scrapes; Prometheus
    // extrapolates each counter to the window's edges a little differently.
    let recorded = (now.execution_seconds_sum - then.execution_seconds_sum)
        / (now.execution_seconds_count - then.execution_seconds_count);
    let measured = low.seat_seconds_per_request.unwrap();
    assert!(
        (measured / recorded - 1.0).abs() < 0.15,
        "{measured} s per request, the fixtures say {recorded}"
    );
    assert_eq!(low.capacity.unwrap(), low.seats / measured);
    assert_eq!(low.constraint, None);
    assert!(!figures.levels.contains_key("exempt"));

    // `serve --prometheus` (standalone: kube-apiserver's default FlowSchemas) with a
    // budget of `auto` request limits reads the same figures and shows them.
    let budget = dir.join("budget.yaml");
    let text = std::fs::read_to_string(support::fixtures().join("budget.yaml")).unwrap();
    std::fs::write(
        &budget,
        text.replace(
            "apiserverRequestsPerSecond: 2000",
            "apiserverRequestsPerSecond: auto",
        ),
    )
    .unwrap();
    let server =
        start_server_unready(Profiles::Prometheus(prometheus.url.clone()), 3, &budget).await;
    assert!(server.state.budget().spec.limits.requests_auto());
    let mut shown = None;
    for _ in 0..100 {
        if let Some(capacity) = server.state.apiserver.current() {
            shown = Some(capacity);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shown = shown.expect("the server has capacity figures within 10 s");
    assert_eq!(shown.source, "Prometheus, 2 API server instances");
    assert_eq!(shown.levels["workload-low"].seats, 586.0);
    assert!(
        !server
            .state
            .not_ready_because()
            .iter()
            .any(|p| p.contains("capacity")),
        "{:?}",
        server.state.not_ready_because()
    );
    let (status, metrics) = http_get(server.running.metrics, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains(
            r#"headroom_webhook_apiserver_level_capacity_requests_per_second{priority_level="workload-low"}"#
        ),
        "{metrics}"
    );

    // Both replicas stop answering: their series go stale and nothing is taken for zero.
    down.store(true, Ordering::SeqCst);
    let mut error = None;
    for _ in 0..60 {
        if let Err(e) = source::fetch(&prometheus.url, DEFAULT_WINDOW, 0.7).await {
            error = Some(e.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let error = error.expect("stale series within 30 s");
    assert!(
        error.contains(
            "no series of apiserver_flowcontrol_nominal_limit_seats (1.26+) nor \
                        apiserver_flowcontrol_request_concurrency_limit (1.20–1.25)"
        ),
        "{error}"
    );
}
