use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

use super::*;
use crate::metrics::{Identity, SharedSnapshot, Snapshot};

/// A server on 127.0.0.1 with a random port; dropping `stop` shuts it down.
struct Running {
    addr: SocketAddr,
    readiness: Readiness,
    snapshot: SharedSnapshot,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

fn start() -> Running {
    start_with(dns_names::NamePolicy::default())
}

fn start_with(names: dns_names::NamePolicy) -> Running {
    let snapshot = SharedSnapshot::default();
    let readiness = Readiness::new(Duration::from_secs(30));
    let state = AppState {
        metrics: Arc::new(Metrics::new(snapshot.clone())),
        readiness: readiness.clone(),
        dns_names: names,
    };
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router(state), async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        readiness,
        snapshot,
        stop,
        task,
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET over a real TCP connection.
async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("receive");
    let raw = String::from_utf8(raw).expect("utf-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn metrics_are_openmetrics_by_default() {
    let server = start();
    let mut snapshot = Snapshot::default();
    snapshot
        .workload(Identity::container(
            "ns1",
            "Deployment",
            "web",
            "web-abc",
            "app",
        ))
        .apiserver()
        .requests = 12;
    server.snapshot.publish(snapshot);
    for accept in [
        None,
        Some("*/*"),
        // What Prometheus 2.x sends.
        Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ),
    ] {
        let reply = get(server.addr, "/metrics", accept).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            "{accept:?}"
        );
        assert!(
            reply.body.lines().any(|l| l
                == r#"headroom_apiserver_requests_total{namespace="ns1",workload_kind="Deployment",workload="web",pod="web-abc",container="app"} 12"#),
            "{}",
            reply.body
        );
        assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
    }
}

#[tokio::test]
async fn metrics_in_prometheus_text_when_asked() {
    let server = start();
    let reply = get(server.addr, "/metrics", Some("text/plain")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(
        reply
            .body
            .lines()
            .any(|l| l == "# TYPE headroom_collector_events_lost_total counter"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("# EOF"), "{}", reply.body);
}

#[tokio::test]
async fn healthz_answers_while_not_ready() {
    let server = start();
    let reply = get(server.addr, "/healthz", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    assert!(server.readiness.status().is_err());
}

#[tokio::test]
async fn readyz_follows_attachment_and_the_event_loop() {
    let server = start();
    let reply = get(server.addr, "/readyz", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "not ready: the kernel programs are not attached\n")
    );
    server.readiness.set_attached(true);
    let reply = get(server.addr, "/readyz", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "not ready: the event loop has not run yet\n")
    );
    server.readiness.beat();
    let reply = get(server.addr, "/readyz", None).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ready\n"));
    server.readiness.set_attached(false);
    assert_eq!(get(server.addr, "/readyz", None).await.status, 503);
}

#[tokio::test]
async fn readyz_says_which_watch_and_why() {
    let server = start();
    server.readiness.set_attached(true);
    server.readiness.beat();
    let health = std::sync::Arc::new(crate::cluster::health::health());
    server.readiness.set_watches(health.clone());
    health.started("pods");
    health.not_served(
        "endpointslices",
        "using the core/v1 Endpoints default/kubernetes instead",
    );
    let reply = get(server.addr, "/readyz", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (503, "not ready: pods: not listed yet\n")
    );
    health.stopped("pods");
    let reply = get(server.addr, "/readyz", None).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            200,
            "ready\n  endpointslices: discovery.k8s.io/v1 not served; using the core/v1 \
             Endpoints default/kubernetes instead\n"
        )
    );
}

#[test]
fn readiness_goes_stale_without_beats() {
    let readiness = Readiness::new(Duration::from_secs(10));
    readiness.set_attached(true);
    let t0 = Instant::now();
    readiness.beat_at(t0);
    assert_eq!(readiness.status_at(t0 + Duration::from_secs(10)), Ok(()));
    let stale = readiness.status_at(t0 + Duration::from_secs(12));
    assert_eq!(
        stale,
        Err(NotReady::LoopStale {
            idle: Duration::from_secs(12),
            timeout: Duration::from_secs(10)
        })
    );
    assert_eq!(
        stale.expect_err("stale").to_string(),
        "the event loop has not run for 12s (limit 10s)"
    );
    readiness.beat_at(t0 + Duration::from_secs(12));
    assert_eq!(readiness.status_at(t0 + Duration::from_secs(13)), Ok(()));
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = start();
    assert_eq!(get(server.addr, "/profiles", None).await.status, 404);
}

#[tokio::test]
async fn more_routes_merge_in() {
    let snapshot = SharedSnapshot::default();
    let state = AppState {
        metrics: Arc::new(Metrics::new(snapshot)),
        readiness: Readiness::new(Duration::from_secs(30)),
        dns_names: dns_names::NamePolicy::default(),
    };
    let app = router(state)
        .merge(Router::new().route("/profiles", axum::routing::get(|| async { "[]" })));
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(serve(listener, app, std::future::pending()));
    assert_eq!(get(addr, "/profiles", None).await.body, "[]");
    assert_eq!(get(addr, "/healthz", None).await.status, 200);
    task.abort();
}

#[tokio::test]
async fn serve_returns_after_shutdown_and_frees_the_port() {
    let server = start();
    assert_eq!(get(server.addr, "/healthz", None).await.status, 200);
    server.stop.send(()).expect("server still running");
    server
        .task
        .await
        .expect("server task")
        .expect("clean shutdown");
    assert!(TcpStream::connect(server.addr).await.is_err());
    bind(server.addr).expect("the port is free again");
}

#[test]
fn a_taken_port_names_the_address_and_the_flag() {
    let taken = bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = bind(addr).expect_err("port in use");
    assert!(
        matches!(err, Error::PortInUse { addr: a } if a == addr),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot listen on {addr} for /metrics, /healthz and /readyz: the address is already \
             in use (another collector or exporter on this node?); choose a free port with \
             --listen ADDRESS:PORT, HEADROOM_LISTEN or `listen:` in the config file"
        )
    );
}

#[test]
fn an_address_not_on_this_host_is_a_listen_error() {
    // 192.0.2.0/24 is TEST-NET-1: never assigned to a local interface.
    let addr = SocketAddr::from(([192, 0, 2, 1], 9977));
    let err = bind(addr).expect_err("not local");
    assert!(matches!(err, Error::Listen { .. }), "{err:?}");
    assert!(err.to_string().contains("192.0.2.1:9977"), "{err}");
    assert!(err.to_string().contains("--listen"), "{err}");
}

#[tokio::test]
async fn dns_names_list_each_workloads_most_asked_names() {
    let server = start();
    let web = Identity::container("ns1", "Deployment", "web", "web-abc", "app");
    let top = |name: &str, count: u64, error: u64| crate::dns::TopName {
        name: name.into(),
        count,
        error,
    };
    let mut snapshot = Snapshot::default();
    // Two processes of the container: their names add up, the list keeps the 2 most
    // asked.
    snapshot.add_dns_names(
        &web,
        &[
            top("api.ns1.svc.cluster.local", 7, 0),
            top("a.example", 2, 0),
        ],
        2,
    );
    snapshot.add_dns_names(
        &web,
        &[
            top("db.ns1.svc.cluster.local", 5, 1),
            top("a.example", 4, 0),
        ],
        2,
    );
    server.snapshot.publish(snapshot);
    let reply = get(server.addr, "/dns/names", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.body,
        concat!(
            r#"{"apiVersion":"headroom.dev/v1alpha1","kind":"DnsNameList","items":["#,
            r#"{"namespace":"ns1","workloadKind":"Deployment","workload":"web","pod":"web-abc","container":"app","#,
            r#""names":[{"name":"api.ns1.svc.cluster.local","queries":7,"error":0},"#,
            r#"{"name":"a.example","queries":6,"error":0}]}]}"#
        )
    );
}

/// Two workloads that asked for the same name, and one other name.
fn names_snapshot() -> Snapshot {
    let top = |name: &str, count: u64| crate::dns::TopName {
        name: name.into(),
        count,
        error: 0,
    };
    let web = Identity::container("ns1", "Deployment", "web", "web-abc", "app");
    let api = Identity::container("ns2", "Deployment", "api", "api-def", "app");
    let mut snapshot = Snapshot::default();
    snapshot.add_dns_names(
        &web,
        &[top("secret.corp.example", 9), top("a.example", 1)],
        5,
    );
    snapshot.add_dns_names(&api, &[top("secret.corp.example", 3)], 5);
    snapshot
}

#[tokio::test]
async fn dns_names_hash_hides_names_but_keeps_them_apart_and_stable() {
    let server = start_with(dns_names::NamePolicy::new(dns_names::DnsNames::Hash));
    server.snapshot.publish(names_snapshot());
    let reply = get(server.addr, "/dns/names", None).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains("example"), "{}", reply.body);
    let list: dns_names::DnsNameList = serde_json::from_str(&reply.body).expect("a DnsNameList");
    let shown: Vec<Vec<(&str, u64)>> = list
        .items
        .iter()
        .map(|i| {
            i.names
                .iter()
                .map(|n| (n.name.as_str(), n.queries))
                .collect()
        })
        .collect();
    let (web, api) = (&shown[0], &shown[1]);
    // The same name shows as the same hash in both workloads, another as another.
    assert_eq!(web[0].0, api[0].0);
    assert_ne!(web[0].0, web[1].0);
    assert_eq!((web[0].1, web[1].1, api[0].1), (9, 1, 3));
    for (name, _) in web.iter().chain(api.iter()) {
        let hex = name.strip_prefix("hash:").expect("hash: prefix");
        assert!(
            hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
    }
    // Stable while the process lives: the next answer shows the same hashes.
    assert_eq!(get(server.addr, "/dns/names", None).await.body, reply.body);
}

#[tokio::test]
async fn dns_names_off_answers_404_and_no_name() {
    let server = start_with(dns_names::NamePolicy::new(dns_names::DnsNames::Off));
    server.snapshot.publish(names_snapshot());
    let reply = get(server.addr, "/dns/names", None).await;
    assert_eq!(reply.status, 404);
    assert!(reply.body.contains("--dns-names off"), "{}", reply.body);
    assert!(!reply.body.contains("example"), "{}", reply.body);
    // Names are never labels: the metrics show none either way.
    let metrics = get(server.addr, "/metrics", None).await;
    assert!(!metrics.body.contains("example"), "{}", metrics.body);
}

#[test]
fn a_hash_key_is_per_policy() {
    let (a, b) = (
        dns_names::NamePolicy::new(dns_names::DnsNames::Hash),
        dns_names::NamePolicy::new(dns_names::DnsNames::Hash),
    );
    let name = "secret.corp.example";
    assert_eq!(a.show(name), a.clone().show(name));
    assert_ne!(a.show(name), b.show(name));
    assert_eq!(
        dns_names::NamePolicy::default().show(name).as_deref(),
        Some(name)
    );
}
