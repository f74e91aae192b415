//! Data that is missing, stale, partial, slow or broken: every review is still answered,
//! allowed with a warning naming the reason and counted as a fail-open. Prometheus is the
//! real Debian server where it can be (one with no collector behind it answers every query
//! with an empty vector), and otherwise a stand-in serving answers recorded from it
//! (tests/fixtures/prometheus/).
#![expect(clippy::unwrap_used, reason = "tests")]

mod support;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Router, extract::Query, http::StatusCode, routing::get};
use serde_json::Value;
use support::{Client, Profiles, RealPrometheus, TestServer, http_get, temp_dir};
use webhook::prometheus_rules as rules;

const SCRAPES: &str = "max by (instance) (timestamp(headroom_collector_build_info))";

fn recorded(name: &str) -> String {
    std::fs::read_to_string(support::fixtures().join("prometheus").join(name)).unwrap()
}

/// The recorded two-node scrape answer with each scrape `age` before now.
fn scrapes_aged(age: Duration) -> String {
    let mut answer: Value =
        serde_json::from_str(&recorded("collector-scrapes-two-nodes.json")).expect("recorded JSON");
    let at = (SystemTime::now() - age)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for sample in answer["data"]["result"].as_array_mut().unwrap() {
        sample["value"][1] = Value::String(format!("{at:.3}"));
    }
    answer.to_string()
}

/// A Prometheus stand-in answering `/api/v1/query` with `answer(query)`.
async fn prometheus_stand_in(
    answer: impl Fn(&str) -> (StatusCode, String) + Send + Sync + 'static,
) -> String {
    let answer = Arc::new(answer);
    let app = Router::new().route(
        "/api/v1/query",
        get(
            move |Query(q): Query<std::collections::HashMap<String, String>>| {
                let answer = answer.clone();
                async move { answer(q.get("query").map_or("", String::as_str)) }
            },
        ),
    );
    serve(app).await
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// The cluster totals answered (recorded one-value answers), the scrapes as given, every
/// other query an empty vector.
fn totals_and(scrapes: String) -> impl Fn(&str) -> (StatusCode, String) {
    move |query| {
        let is_total = webhook::load::Dimension::ALL
            .iter()
            .any(|d| query == rules::cluster_total(*d));
        let body = if query == SCRAPES {
            scrapes.clone()
        } else if is_total {
            recorded("one-value.json")
        } else {
            recorded("empty-vector.json")
        };
        (StatusCode::OK, body)
    }
}

/// The fixture budget (Enforce) with `spec` lines replaced.
fn budget(dir: &Path, replace: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(support::fixtures().join("budget.yaml")).unwrap();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    let path = dir.join("budget.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The fixture budget judging data the way a deployed one does.
fn strict_budget(dir: &Path) -> std::path::PathBuf {
    budget(
        dir,
        &[
            ("maxDataAgeSeconds: 600", "maxDataAgeSeconds: 120"),
            ("minCoverage: 0", "minCoverage: 0.9"),
        ],
    )
}

/// The demo's recorded `kubectl scale deployment web --replicas=1000` (from 3).
fn scale_to_1000() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/reviews/deployment-web-scale-1000.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn review(server: &TestServer, body: &Value) -> Value {
    let config = server.pki.client_config(rustls::DEFAULT_VERSIONS);
    let mut client = Client::connect(server.running.https, config).await.unwrap();
    client.review(body).await
}

fn warnings(response: &Value) -> Vec<&str> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

async fn fail_opens(server: &TestServer, reason: &str) -> u64 {
    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    let prefix = format!("headroom_webhook_fail_opens_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.parse().unwrap())
}

/// Asserts `response` is an allowed fail-open whose one warning gives `why`.
fn assert_fail_open(response: &Value, why: &str) {
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        warnings(response),
        [format!("headroom: not evaluated, {why}; allowed")],
        "{response}"
    );
    assert_eq!(response["auditAnnotations"]["fail-open"], why, "{response}");
}

/// The "done when": a Prometheus answering every query with an empty vector does
/// not block `kubectl scale --replicas=1000`, nor read as zero load.
#[tokio::test]
async fn a_prometheus_with_no_data_fails_open_as_missing() {
    let dir = temp_dir("empty-prometheus");
    let prometheus = RealPrometheus::start(&dir, &[]).await;
    let server = support::start_server_with(
        Profiles::Prometheus(prometheus.url.clone()),
        100,
        &strict_budget(&dir),
    )
    .await;
    let r = review(&server, &scale_to_1000()).await;
    assert_fail_open(
        &r,
        "Prometheus has no series for headroom_collector_build_info (+4 more)",
    );
    assert_eq!(fail_opens(&server, "missing").await, 1);
}

#[tokio::test]
async fn scrapes_older_than_the_max_age_are_stale() {
    let dir = temp_dir("stale-prometheus");
    let url = prometheus_stand_in(totals_and(scrapes_aged(Duration::from_secs(600)))).await;
    let server =
        support::start_server_with(Profiles::Prometheus(url), 2, &strict_budget(&dir)).await;
    let r = review(&server, &scale_to_1000()).await;
    let why = r["auditAnnotations"]["fail-open"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.starts_with("profile data is 60") && why.ends_with("s old (max 120s)"),
        "{r}"
    );
    assert_eq!(fail_opens(&server, "stale").await, 1);
}

#[tokio::test]
async fn half_the_nodes_is_partial_and_all_of_them_is_judged() {
    let dir = temp_dir("partial-prometheus");
    let url = prometheus_stand_in(totals_and(scrapes_aged(Duration::ZERO))).await;
    let partial =
        support::start_server_with(Profiles::Prometheus(url.clone()), 4, &strict_budget(&dir))
            .await;
    let r = review(&partial, &scale_to_1000()).await;
    assert_fail_open(&r, "data from 2 of 4 nodes (50% < minCoverage 90%)");
    assert_eq!(fail_opens(&partial, "partial").await, 1);

    // Both nodes of two report: the data is whole, and a workload with no series in it is
    // unmeasured (the canary rule) — judged, not failed open.
    let whole =
        support::start_server_with(Profiles::Prometheus(url), 2, &strict_budget(&dir)).await;
    let r = review(&whole, &scale_to_1000()).await;
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(message.contains("has no measured profile"), "{message}");
    assert_eq!(fail_opens(&whole, "partial").await, 0);
}

/// A server whose only profile source is `url`, as a collector's `/profiles` or as
/// Prometheus.
async fn server_on(source: Source, url: &str, dir: &Path) -> TestServer {
    let profiles = match source {
        Source::Collector => Profiles::Collectors(vec![url.to_owned()]),
        Source::Prometheus => Profiles::Prometheus(url.to_owned()),
    };
    support::start_server_unready(profiles, 2, &strict_budget(dir)).await
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Collector,
    Prometheus,
}

impl Source {
    const BOTH: [Source; 2] = [Source::Collector, Source::Prometheus];

    /// The path the webhook fetches from this source.
    fn path(self) -> &'static str {
        match self {
            Source::Collector => "/profiles",
            Source::Prometheus => "/api/v1/query",
        }
    }

    /// The `source` label of `headroom_webhook_profile_refresh_errors_total`.
    fn label(self) -> &'static str {
        match self {
            Source::Collector => "collector",
            Source::Prometheus => "prometheus",
        }
    }

    /// What this source answers when it has nothing: a collector's empty profile list (its
    /// recorded answer with no workloads), Prometheus' empty vector.
    fn empty_answer(self) -> String {
        match self {
            Source::Collector => {
                let mut list = support::fixture("profiles-outage.json");
                list["items"] = serde_json::json!([]);
                list.to_string()
            }
            Source::Prometheus => recorded("empty-vector.json"),
        }
    }

    /// Its error answer with a 500: Prometheus' recorded error body; a collector's is text.
    fn error_answer(self) -> String {
        match self {
            Source::Collector => "profiles unavailable\n".to_owned(),
            Source::Prometheus => recorded("bad-data-error.json"),
        }
    }
}

/// A source that takes 5 s to answer: reviews are answered from memory meanwhile.
#[tokio::test]
async fn a_hanging_source_never_holds_up_a_review() {
    for source in Source::BOTH {
        let dir = temp_dir("hanging-source");
        let asked = Arc::new(tokio::sync::Notify::new());
        let answered = Arc::new(AtomicBool::new(false));
        let app = {
            let (asked, answered) = (asked.clone(), answered.clone());
            Router::new().route(
                source.path(),
                get(move || {
                    let (asked, answered) = (asked.clone(), answered.clone());
                    async move {
                        asked.notify_one();
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        answered.store(true, Ordering::SeqCst);
                        source.empty_answer()
                    }
                }),
            )
        };
        let url = serve(app).await;
        let server = server_on(source, &url, &dir).await;
        asked.notified().await;
        let r = review(&server, &scale_to_1000()).await;
        assert!(
            !answered.load(Ordering::SeqCst),
            "{source:?}: the review waited for the source"
        );
        assert_fail_open(&r, "no profile data yet");
        assert_eq!(fail_opens(&server, "missing").await, 1, "{source:?}");
        let (status, body) = http_get(server.running.metrics, "/readyz").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{source:?}: {body}"
        );
    }
}

/// Waits (up to 5 s) for a refresh error from `source` to be counted.
async fn refresh_error_counted(server: &TestServer, source: Source) -> bool {
    let line = format!(
        "headroom_webhook_profile_refresh_errors_total{{source=\"{}\"}}",
        source.label()
    );
    for _ in 0..500 {
        let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
        if metrics.contains(&line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Down, a 500 (with Prometheus' error body), and an answer that is neither a profile
/// list nor Prometheus': no data, counted as refresh errors, and every change fails open
/// as missing — for a collector's `/profiles` and for Prometheus alike.
#[tokio::test]
async fn a_source_that_is_down_or_broken_is_missing_data() {
    let dir = temp_dir("broken-source");
    for source in Source::BOTH {
        let down = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let answering = |status, body: String| {
            serve(Router::new().route(source.path(), get(move || async move { (status, body) })))
        };
        let error = answering(StatusCode::INTERNAL_SERVER_ERROR, source.error_answer()).await;
        let garbage = answering(StatusCode::OK, "<html>proxy login</html>".into()).await;
        for url in [down, error, garbage] {
            let server = server_on(source, &url, &dir).await;
            assert!(
                refresh_error_counted(&server, source).await,
                "{source:?} {url}: no refresh error counted"
            );
            let r = review(&server, &scale_to_1000()).await;
            assert_fail_open(&r, "no profile data yet");
            assert_eq!(fail_opens(&server, "missing").await, 1, "{source:?} {url}");
        }
    }
}
