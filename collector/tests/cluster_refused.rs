//! The collector against an API server that refuses it (403: a service account without
//! RBAC; 404) or does not serve an API (a 1.20 server has no `discovery.k8s.io/v1`), on
//! tokio's paused clock: the LISTs made over simulated minutes follow the backoff, each
//! resource is logged once with what to grant, readiness says why, and a missing API is
//! a fallback said once, with discovery asked again every few minutes, not per retry.
mod cluster_api;

use std::{
    io::Write,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use cluster_api::{ApiServer, DISCOVERY, ENDPOINT_SLICES, ENDPOINTS, PODS, SERVICES};
use collector::{
    cluster::{self, BackoffConfig, Cluster, ClusterConfig, Resource, endpoints::SLICES_FALLBACK},
    metrics::{Metrics, SharedSnapshot},
    server::{NotReady, Readiness},
};
use serde_json::json;
use tokio::time::Instant;

const NODE: &str = "node-0000";

/// The collector's defaults (jitter included), but no start-up jitter: the test counts
/// from the first LIST.
fn config() -> ClusterConfig {
    let mut config = ClusterConfig::new(NODE, "10.96.0.1:443".parse().expect("addr"));
    config.backoff = BackoffConfig {
        start_jitter: Duration::ZERO,
        ..BackoffConfig::default()
    };
    config.resolv_conf = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cluster/resolv.conf"
    ));
    config
}

fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("a URL"));
    cluster::client_for(config, NODE).expect("a client")
}

/// Log lines written on this thread (a paused-clock test runs every task on it).
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
            .with_env_filter(collector::logging::DEFAULT_FILTER)
            .with_ansi(false)
            .with_writer(move || logs.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn matching(&self, text: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

fn count_before(times: &[Instant], end: Instant) -> usize {
    times.iter().filter(|&&t| t < end).count()
}

/// Every LIST refused with `code`: returns the LISTs per resource in the first minute
/// and the first ten, after checking the logs, readiness and metrics.
async fn refused_lists(code: u16, reason: &'static str) -> Vec<(usize, usize)> {
    let logs = Logs::default();
    let _capture = logs.capture();
    let server = ApiServer::start().await;
    for path in [PODS, ENDPOINT_SLICES, SERVICES] {
        server.refuse_lists(path, code, reason);
    }
    let t0 = Instant::now();
    let cluster = Cluster::start(client(&server), config());
    let readiness = Readiness::new(Duration::from_secs(3600));
    readiness.set_attached(true);
    readiness.beat();
    readiness.set_watches(cluster.health().clone());

    tokio::time::sleep(Duration::from_secs(600)).await;
    let mut counts = Vec::new();
    for path in [PODS, ENDPOINT_SLICES, SERVICES] {
        let lists = server.times_of(path, false);
        counts.push((
            count_before(&lists, t0 + Duration::from_secs(60)),
            count_before(&lists, t0 + Duration::from_secs(600)),
        ));
        assert!(
            server.times_of(path, true).is_empty(),
            "no watch without a list"
        );
    }
    println!("{code}: LISTs per resource (first minute, first ten): {counts:?}");

    let status = format!(
        "{code} {}",
        if code == 403 {
            "Forbidden"
        } else {
            "Not Found"
        }
    );
    for resource in [
        Resource::Pods,
        Resource::EndpointSlices,
        Resource::DnsService,
    ] {
        let said = logs.matching(&format!("cannot list {}:", resource.name()));
        println!("{}", said.join("\n"));
        assert_eq!(said.len(), 1, "one line per resource: {said:#?}");
        assert!(said[0].contains(&status), "{said:?}");
        let advice = resource.watched().advice(&failure(code));
        assert!(said[0].contains(&advice), "{said:?} lacks {advice}");
    }
    let Err(NotReady::Watches(problems)) = readiness.status() else {
        panic!("ready while every LIST is refused");
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("pods: never listed: {status}")),
        "{problems:?}"
    );
    let mut metrics = Metrics::new(SharedSnapshot::default());
    metrics.register_watches(cluster.health().clone());
    let text = metrics.encode_openmetrics();
    for line in [
        format!(
            r#"headroom_collector_kube_watch_errors_total{{resource="pods",reason="list_failed"}} {}"#,
            counts[0].1
        ),
        format!(
            r#"headroom_collector_kube_lists_total{{resource="pods"}} {}"#,
            counts[0].1
        ),
        r#"headroom_collector_kube_watch_ready{resource="pods"} 0"#.to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    counts
}

/// The failure a refused LIST is, for the advice its log line must carry.
fn failure(code: u16) -> collector::watch::Failure {
    let mut status = kube::core::Status::failure("refused", "Refused");
    status.code = code;
    collector::watch::Failure::of(&kube::runtime::watcher::Error::InitialListFailed(
        kube::Error::Api(Box::new(status)),
    ))
}

/// 1 s doubling to 300 s, each step lengthened by up to 25 %: LISTs at t = 0, 1, 3, 7, 15,
/// 31 s at the earliest (6 in the first minute; 63 s at the earliest for the 7th, 78.75 s
/// at the latest), and 9 or 10 in ten minutes (the 10th at 511 s at the earliest, 638.75 s
/// at the latest).
fn assert_within_budget(counts: &[(usize, usize)]) {
    for &(first_minute, ten_minutes) in counts {
        assert_eq!(first_minute, 6, "{counts:?}");
        assert!((9..=10).contains(&ten_minutes), "{counts:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_list_backs_off_to_minutes_logs_once_and_is_not_ready() {
    assert_within_budget(&refused_lists(403, "Forbidden").await);
}

#[tokio::test(start_paused = true)]
async fn a_not_found_list_backs_off_the_same_way() {
    assert_within_budget(&refused_lists(404, "NotFound").await);
}

#[tokio::test(start_paused = true)]
async fn without_endpointslices_v1_the_core_endpoints_serve_and_it_is_said_once() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let server = ApiServer::start().await;
    server.stop_serving_slices();
    server.set_lists(
        ENDPOINTS,
        vec![json!({
            "kind": "EndpointsList", "apiVersion": "v1", "metadata": {"resourceVersion": "1010"},
            "items": [{"metadata": {"name": "kubernetes", "namespace": "default"},
                       "subsets": [{"addresses": [{"ip": "10.0.0.10"}, {"ip": "10.0.0.11"}],
                                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]}]
        })],
    );
    let t0 = Instant::now();
    let cluster = Cluster::start(client(&server), config());
    tokio::time::sleep(Duration::from_secs(600)).await;

    let apiserver: Vec<String> = cluster
        .apiserver_endpoints()
        .borrow()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        apiserver,
        ["10.0.0.10:6443", "10.0.0.11:6443", "10.96.0.1:443"]
    );
    assert_eq!(
        server.lists_of(ENDPOINT_SLICES),
        0,
        "discovery first, no 404 LIST"
    );
    assert_eq!(server.lists_of(ENDPOINTS), 1);
    let endpoints = server
        .seen()
        .into_iter()
        .find(|s| s.path == ENDPOINTS)
        .expect("the Endpoints list");
    assert_eq!(
        endpoints.query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=kubernetes")
    );
    // Discovery at start, then every 5 minutes: t = 0, 300, 600 s (the last at the
    // instant the test looks).
    let discovery = count_before(
        &server.times_of(DISCOVERY, false),
        t0 + Duration::from_secs(601),
    );
    assert!((2..=3).contains(&discovery), "{discovery}");
    let readiness = cluster.health().readiness();
    assert!(readiness.is_ready(), "{readiness:?}");
    let note = format!("endpointslices: discovery.k8s.io/v1 not served; {SLICES_FALLBACK}");
    assert_eq!(readiness.notes, [note]);
    let said = logs.matching("is not served");
    println!("{}", said.join("\n"));
    assert_eq!(said.len(), 1, "{said:#?}");
    assert!(said[0].contains(&format!(
        "discovery.k8s.io/v1 endpointslices is not served by this API server: {SLICES_FALLBACK}"
    )));
    let mut metrics = Metrics::new(SharedSnapshot::default());
    metrics.register_watches(cluster.health().clone());
    let text = metrics.encode_openmetrics();
    for line in [
        r#"headroom_collector_kube_api_served{resource="endpointslices"} 0"#,
        r#"headroom_collector_kube_watch_ready{resource="endpoints"} 1"#,
        r#"headroom_collector_kube_watch_ready{resource="pods"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}

/// docs/api-cost.md states these numbers; a change here must change the page.
#[test]
fn the_api_cost_page_states_the_parameters_in_force() {
    use collector::watch::backoff::{Gate, GatedBackoff, Jitter};
    use kube::runtime::utils::Backoff as _;

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api-cost.md");
    let page = std::fs::read_to_string(path).expect("docs/api-cost.md");
    let backoff = BackoffConfig::default();
    assert_eq!(
        (backoff.min, backoff.max, backoff.max_refused),
        (
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(300)
        )
    );
    assert!((backoff.jitter - 0.25).abs() < f64::EPSILON);
    assert_eq!(backoff.start_jitter, Duration::from_secs(5));
    assert_eq!(
        collector::config::Config::default().watch_start_jitter,
        Duration::from_secs(5)
    );
    assert_eq!(
        collector::cluster::endpoints::DISCOVERY_RECHECK,
        Duration::from_secs(300)
    );
    // The earliest LIST times of a refused watch, as StreamBackoff drives the backoff.
    let gate = Arc::new(Gate::default());
    gate.failed(true);
    let mut refused = GatedBackoff::new(backoff.without_jitter(), gate, Jitter::with_seed(1));
    let mut at = Duration::ZERO;
    let mut times = Vec::new();
    while at < Duration::from_secs(600) {
        times.push(at.as_secs().to_string());
        refused.reset();
        at += refused.next().expect("never ends");
    }
    let schedule = format!("t = {} s", times.join(", "));
    for phrase in [
        schedule.as_str(),
        "resourceVersion=0",
        "without `limit`",
        "timeoutSeconds=290",
        "`spec.nodeName=<node>`",
        "`kubernetes.io/service-name=kubernetes`",
        "`metadata.name=kubernetes`",
        "`metadata.name=kube-dns`",
        "random 0–25 %",
        "(default 5 s)",
        "1 s ×2 to 300 s",
        "every 5 min",
        "6 in the first minute and at most 10 in ten minutes",
    ] {
        assert!(page.contains(phrase), "docs/api-cost.md lacks {phrase:?}");
    }
}
