//! The collector is an API server client too, and measures itself. The real binary runs
//! in a child cgroup shaped as the kubelet makes a pod's (the recorded DaemonSet pod
//! `agent-7xk2p`, which the collector finds in its own pod watch), against the
//! recorded-response API server over TLS, found through `--kubeconfig` and the
//! `default/kubernetes` EndpointSlice. Its own series in its own /metrics are held to the
//! server's counts; its steady request rate to the bound one pod watch, one
//! EndpointSlice watch and one kube-dns watch allow; and an API server outage costs a
//! bounded number of reconnects, then the watches resume without a relist.
#[path = "../cluster_api/mod.rs"]
mod cluster_api;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Child,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use cluster_api::{ApiServer, DISCOVERY, ENDPOINT_SLICES, Options, PODS, SERVICES, fixture};
use collector::{cgroup::ChildGroup, cluster::BackoffConfig};
use serde_json::{Value, json};

use crate::{apiserver::in_cgroup, require_root, support::apiserver::server_tls};

const NODE: &str = "node-a";
/// The recorded DaemonSet pod the collector runs as, and its container's id.
const OWN_POD_UID: &str = "7a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const OWN_LABELS: &str = r#"namespace="default",workload_kind="DaemonSet",workload="agent",pod="agent-7xk2p",container="agent""#;
/// What the collector watches: this node's pods, the `kubernetes` EndpointSlices and the
/// kube-dns Service. O(1) per node, whatever the cluster's size.
const WATCHES: u64 = 3;
const RESOURCES: [&str; 3] = ["pods", "endpointslices", "services"];
/// The test server ends every watch after this long, as the API server ends one at its
/// `timeoutSeconds` (kube-rs asks for [`PRODUCTION_WATCH_SECONDS`]): a compressed clock.
const WATCH_LIMIT: Duration = Duration::from_secs(5);
/// How long no request must have come for the collector's /metrics to have caught up:
/// its publish period (2 s) and some.
const QUIET: Duration = Duration::from_millis(2500);
/// kube-rs's watch `timeoutSeconds`: how long a watch lasts against a real API server.
const PRODUCTION_WATCH_SECONDS: f64 = 290.0;
/// Watch periods in the steady window (about).
const STEADY_PERIODS: u32 = 4;
const OUTAGE: Duration = Duration::from_secs(6);
const NODES: f64 = 5000.0;

/// The collector binary as a child process; stopped and reaped when dropped. Its output
/// goes to a file, shown when the test fails.
struct CollectorProcess {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
}

impl CollectorProcess {
    fn start(kubeconfig: &Path, group: &ChildGroup, log: PathBuf) -> Self {
        let listen = crate::free_port();
        let listen_arg = listen.to_string();
        let args = [
            "--kubeconfig".as_ref(),
            kubeconfig.as_os_str(),
            "--node-name".as_ref(),
            NODE.as_ref(),
            "--listen".as_ref(),
            listen_arg.as_ref(),
            // The first LISTs at once: the test times the start-up.
            "--watch-start-jitter".as_ref(),
            "0s".as_ref(),
        ];
        let command = crate::collector_command(&args);
        let child = crate::spawn_logged(&mut in_cgroup(&command, group), &log);
        Self { child, log, listen }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The collector's /metrics, or `None` while it is not serving yet.
    fn try_scrape(&mut self) -> Option<String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the collector exited ({status}):\n{}", self.log());
        }
        let mut stream = TcpStream::connect(self.listen).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.listen
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    fn scrape(&mut self) -> Metrics {
        Metrics(
            self.try_scrape().unwrap_or_else(|| {
                panic!("the collector does not serve /metrics:\n{}", self.log())
            }),
        )
    }
}

impl Drop for CollectorProcess {
    /// SIGTERM, as the kubelet stops it, so it detaches its programs; SIGKILL if it has
    /// not exited within ten seconds.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if crate::exited_within(&mut self.child, Duration::from_secs(10)).is_some() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape of the collector's /metrics.
struct Metrics(String);

impl Metrics {
    /// The value of the series `name{labels}` (labels exactly as exposed), 0 if absent.
    fn get(&self, name: &str, labels: &str) -> f64 {
        let prefix = format!("{name}{{{labels}}} ");
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0.0, |v| v.trim().parse().expect("a sample value"))
    }

    fn own(&self, name: &str) -> u64 {
        self.get(name, OWN_LABELS) as u64
    }

    fn watch(&self, name: &str, resource: &str) -> u64 {
        self.get(name, &format!(r#"resource="{resource}""#)) as u64
    }

    fn watch_errors(&self, reason: &str) -> u64 {
        RESOURCES
            .iter()
            .map(|r| {
                self.get(
                    "headroom_collector_kube_watch_errors_total",
                    &format!(r#"resource="{r}",reason="{reason}""#),
                ) as u64
            })
            .sum()
    }

    fn has_line(&self, start: &str) -> bool {
        self.0.lines().any(|l| l.starts_with(start))
    }
}

/// Child cgroups nested as the kubelet's systemd driver nests a BestEffort pod's
/// container; removed innermost first.
struct PodCgroup(Vec<ChildGroup>);

impl PodCgroup {
    fn create(pod_uid: &str, container_id: &str) -> Self {
        let mut groups = vec![crate::child_group("self-client")];
        for name in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
            format!("cri-containerd-{container_id}.scope"),
        ] {
            let parent = groups.last().expect("a parent").path().to_owned();
            groups.push(ChildGroup::create(&parent, &name).expect("create cgroup"));
        }
        Self(groups)
    }

    fn container(&self) -> &ChildGroup {
        self.0.last().expect("the container's group")
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        while let Some(group) = self.0.pop() {
            drop(group);
        }
    }
}

/// The recorded `kubernetes` EndpointSlice list, its API servers replaced by `addr`:
/// the endpoint the collector discovers is the server it talks to.
fn endpointslices_at(addr: SocketAddr) -> Value {
    let mut list = fixture("endpointslice-list.json");
    for slice in list["items"].as_array_mut().expect("items") {
        slice["endpoints"] = json!([{
            "addresses": [addr.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": NODE
        }]);
        slice["ports"] = json!([{"name": "https", "port": addr.port(), "protocol": "TCP"}]);
    }
    list
}

fn kube_dns_list() -> Value {
    let mut service = fixture("service-kube-dns.json");
    let object = service.as_object_mut().expect("an object");
    object.remove("kind");
    object.remove("apiVersion");
    json!({"kind": "ServiceList", "apiVersion": "v1",
           "metadata": {"resourceVersion": "1010"}, "items": [service]})
}

/// Requests one watch may make in `window` while the API server is up: the one that
/// opens it, then one each time the server ends it (every `limit`). No polling, no list.
fn steady_bound(window: Duration, limit: Duration) -> u64 {
    (window.as_secs_f64() / limit.as_secs_f64()).floor() as u64 + 1
}

/// Attempts one watch may make while the API server is down for `outage`: one at once
/// when its stream ends (a watch that ends is renewed without delay), then one after
/// each backoff wait, each at least its step (min, 2·min, … up to max: jitter only
/// lengthens); attempts stop once those least waits add up past the outage.
fn outage_bound(outage: Duration, backoff: BackoffConfig) -> u64 {
    let (mut step, mut waited, mut attempts) = (backoff.min, Duration::ZERO, 1);
    loop {
        waited += step;
        if waited > outage {
            return attempts;
        }
        attempts += 1;
        step = (step * 2).min(backoff.max);
    }
}

/// The steady load one workload may use under the shipped default budget
/// (`deploy/budget/default.yaml`, which `webhook/tests/deploy.rs` holds to what the
/// webhook loads): `limit` × `perWorkloadShare`.
fn default_budget_share(limit: &str) -> f64 {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/budget/default.yaml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let budget: serde_yaml::Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let number = |v: &serde_yaml::Value, what: &str| {
        v.as_f64()
            .unwrap_or_else(|| panic!("{path}: {what} is not a number"))
    };
    number(&budget["spec"]["limits"][limit], limit)
        * number(&budget["spec"]["perWorkloadShare"], "perWorkloadShare")
}

/// The served count and a scrape at a quiet moment: no request for [`QUIET`] before the
/// scrape, none during it (the watches are renewed together, so such moments come every
/// watch period), and the moment of the count.
fn quiet_scrape(server: &ApiServer, collector: &mut CollectorProcess) -> (usize, Metrics, Instant) {
    let deadline = Instant::now() + WATCH_LIMIT * 4;
    loop {
        let last = server.seen().last().map(|s| s.at).expect("requests");
        let served = server.requests();
        if last.elapsed() >= QUIET {
            let at = Instant::now();
            let metrics = collector.scrape();
            if server.requests() == served {
                return (served, metrics, at);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no quiet moment of {QUIET:?} between the watches' renewals: {:#?}",
            server.seen()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` every 50 ms until it holds; `what` names it in the failure.
fn wait_until(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_collector_measures_its_own_watches_within_their_bound() {
    require_root();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let (ca_pem, mut tls) = server_tls();
    // The recorded-response server speaks HTTP/1.1 only, as kube-rs's client does.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server = runtime.block_on(ApiServer::start_with(Options {
        tls: Some(Arc::new(tls)),
        watch_timeout: Some(WATCH_LIMIT),
    }));
    server.set_lists(PODS, vec![fixture("pod-list.json")]);
    server.set_lists(ENDPOINT_SLICES, vec![endpointslices_at(server.addr())]);
    server.set_lists(SERVICES, vec![kube_dns_list()]);
    let dir = std::env::temp_dir().join(format!("headroom-self-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, ca_pem).expect("write CA");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(&ca)).expect("write kubeconfig");
    let pod = PodCgroup::create(OWN_POD_UID, &"02".repeat(32));
    let mut collector = CollectorProcess::start(&kubeconfig, pod.container(), dir.join("log"));
    let log = |c: &CollectorProcess| format!("collector log:\n{}", c.log());

    // Start-up: one list and one watch per resource, then the collector names its own
    // cgroup from its own pod watch.
    wait_until("the three watches", Duration::from_secs(30), || {
        [PODS, ENDPOINT_SLICES, SERVICES]
            .iter()
            .all(|p| server.watches_of(p) == 1)
    });
    wait_until(
        "the collector's own series",
        Duration::from_secs(15),
        || {
            collector.try_scrape().is_some_and(|text| {
                Metrics(text).has_line(&format!(
                    "headroom_apiserver_requests_total{{{OWN_LABELS}}}"
                ))
            })
        },
    );
    let (served_before, before, window_start) = quiet_scrape(&server, &mut collector);
    let accepted_before = server.connections_accepted();
    let seen = server.seen();
    let startup: Vec<(&str, bool)> = seen
        .iter()
        .filter(|s| s.path != DISCOVERY)
        .take(2 * WATCHES as usize)
        .map(|s| (s.path.as_str(), s.watch))
        .collect();
    for path in [PODS, ENDPOINT_SLICES, SERVICES] {
        let per_path: Vec<bool> = startup
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|&(_, watch)| watch)
            .collect();
        assert_eq!(
            per_path,
            [false, true],
            "start-up is one list then one watch per resource: {:#?}",
            server.seen()
        );
    }
    for resource in RESOURCES {
        assert_eq!(
            before.watch("headroom_collector_kube_lists_total", resource),
            1,
            "{resource}\n{}",
            before.0
        );
        assert!(
            before.watch("headroom_collector_kube_events_total", resource) >= 1,
            "{resource}\n{}",
            before.0
        );
        assert!(
            before.has_line(&format!(
                "headroom_collector_kube_last_event_timestamp_seconds{{resource=\"{resource}\"}} "
            )),
            "{}",
            before.0
        );
    }
    assert_eq!(before.watch_errors("watch_failed"), 0, "{}", before.0);

    // Steady state: the server ends each watch every WATCH_LIMIT; the collector watches
    // again from where it was, nothing else.
    thread::sleep((WATCH_LIMIT * STEADY_PERIODS).saturating_sub(QUIET));
    let (served_after, after, window_end) = quiet_scrape(&server, &mut collector);
    let window = window_end - window_start;
    let steady_served = (served_after - served_before) as u64;
    let steady_measured = after.own("headroom_apiserver_requests_total")
        - before.own("headroom_apiserver_requests_total");
    let bound = WATCHES * steady_bound(window, WATCH_LIMIT);
    let steady_lists: usize = [PODS, ENDPOINT_SLICES, SERVICES]
        .iter()
        .map(|p| server.lists_of(p))
        .sum::<usize>()
        - WATCHES as usize;
    println!(
        "steady window {window:?} (watch limit {WATCH_LIMIT:?}): requests served {steady_served}, \
         self-measured {steady_measured}, bound {bound}; lists {steady_lists}; new connections {}",
        server.connections_accepted() - accepted_before
    );
    assert!(
        steady_served <= bound && steady_measured <= bound,
        "more than one request per watch per watch period: served {steady_served}, measured \
         {steady_measured}, bound {bound}\n{:#?}",
        server.seen()
    );
    assert!(
        steady_served >= WATCHES * (steady_bound(window, WATCH_LIMIT) - 2),
        "each watch is renewed every period: {steady_served} in {window:?}"
    );
    assert!(
        steady_measured.abs_diff(steady_served) * 10 <= steady_served,
        "self-measured {steady_measured} vs {steady_served} served in the steady window\n{}",
        log(&collector)
    );
    assert_eq!(
        steady_lists,
        0,
        "no list in steady state: {:#?}",
        server.seen()
    );
    assert_eq!(
        server.connections_accepted(),
        accepted_before,
        "the watches keep their connections"
    );
    // Everything so far, self-measured vs served.
    let (own_requests, own_connections) = (
        after.own("headroom_apiserver_requests_total"),
        after.own("headroom_apiserver_connections_total"),
    );
    println!(
        "self-measured before the outage: requests {own_requests} (served {served_after}), \
         connections {own_connections} (accepted {}), open streams {}",
        server.connections_accepted(),
        after.own("headroom_apiserver_open_streams")
    );
    assert_eq!(
        own_connections,
        server.connections_accepted(),
        "connections, self-measured vs accepted\n{}\n{}",
        after.0,
        log(&collector)
    );
    assert!(
        own_requests.abs_diff(served_after as u64) * 10 <= served_after as u64,
        "requests, self-measured {own_requests} vs {served_after} served\n{}",
        log(&collector)
    );
    // The collector DaemonSet at 5,000 nodes under the shipped budget: what it measured
    // of itself per watch period, at a real API server's watch length, times the nodes.
    let at_scale = |steady: u64| {
        steady as f64 / window.as_secs_f64() * WATCH_LIMIT.as_secs_f64() / PRODUCTION_WATCH_SECONDS
            * NODES
    };
    let received = after.own("headroom_apiserver_received_bytes_total")
        - before.own("headroom_apiserver_received_bytes_total");
    let connections = after.own("headroom_apiserver_connections_total")
        - before.own("headroom_apiserver_connections_total");
    for (dimension, steady, limit) in [
        ("requests", steady_measured, "apiserverRequestsPerSecond"),
        (
            "received bytes",
            received,
            "apiserverReceivedBytesPerSecond",
        ),
        ("connections", connections, "apiserverConnectionsPerSecond"),
    ] {
        let (load, share) = (at_scale(steady), default_budget_share(limit));
        println!(
            "at {NODES} nodes with {PRODUCTION_WATCH_SECONDS} s watches: {dimension} \
             {load:.1}/s ({:.4}/s per node), the default budget's per-workload share {share}/s",
            load / NODES
        );
        assert!(
            load <= share,
            "{dimension}: {load}/s at {NODES} nodes, over the default budget's {share}/s"
        );
    }

    // The API server goes away: connections cut, new ones refused. Then it comes back,
    // holding watches open from then on so the end is quiet.
    server.stop();
    // Requests that came before the stop took effect belong before the outage.
    thread::sleep(Duration::from_millis(100));
    let seen_before_outage = server.seen().len();
    thread::sleep(OUTAGE.saturating_sub(Duration::from_millis(100)));
    server.set_watch_timeout(None);
    runtime.block_on(server.restart());
    let accepted_at_restart = server.connections_accepted();
    wait_until("the watches to resume", Duration::from_secs(20), || {
        let resumed = &server.seen()[seen_before_outage..];
        [PODS, ENDPOINT_SLICES, SERVICES]
            .iter()
            .all(|p| resumed.iter().any(|s| s.path == *p && s.watch))
    });
    // Connections and requests come from the snapshot the collector publishes every 2 s,
    // watch errors from its watches as they happen: on a loaded machine the snapshot can
    // lag, so scrape until it agrees with the server (or time is up; the assertions below
    // then say what is missing).
    thread::sleep(Duration::from_secs(3));
    let refused_of = |end: &Metrics| {
        end.own("headroom_apiserver_connections_total")
            - own_connections
            - (server.connections_accepted() - accepted_at_restart)
    };
    let caught_up = |end: &Metrics| {
        let (refused, failed) = (refused_of(end), end.watch_errors("watch_failed"));
        let (own, served) = (
            end.own("headroom_apiserver_requests_total"),
            server.requests() as u64,
        );
        refused <= failed && failed <= refused + WATCHES && requests_agree(own, served)
    };
    let settle = Instant::now() + Duration::from_secs(20);
    let mut end = collector.scrape();
    while !caught_up(&end) && Instant::now() < settle {
        thread::sleep(Duration::from_millis(500));
        end = collector.scrape();
    }
    let resumed: Vec<_> = server.seen()[seen_before_outage..].to_vec();
    let refused = refused_of(&end);
    let failed = end.watch_errors("watch_failed");
    let attempt_bound = WATCHES * outage_bound(OUTAGE, BackoffConfig::default());
    println!(
        "outage {OUTAGE:?}: reconnect attempts self-measured {refused}, watch_failed errors \
         {failed}, bound {attempt_bound}; after restart {} requests ({} lists), {} connections",
        resumed.len(),
        resumed.iter().filter(|s| !s.watch).count(),
        server.connections_accepted() - accepted_at_restart
    );
    assert!(
        (1..=attempt_bound).contains(&refused),
        "{refused} reconnect attempts in {OUTAGE:?}, bound {attempt_bound}\n{}",
        log(&collector)
    );
    // Each refused connect fails one watch start; a watch whose pooled connection was
    // cut may fail once more without connecting.
    assert!(
        refused <= failed && failed <= refused + WATCHES,
        "{refused} refused connects against {failed} failed watch starts ({WATCHES} watches)\n{}",
        end.0
    );
    assert_eq!(
        end.watch_errors("list_failed") + end.watch_errors("expired"),
        0,
        "nothing made the watches relist\n{}",
        end.0
    );
    assert!(
        resumed
            .iter()
            .all(|s| s.watch && s.query.get("resourceVersion").is_some_and(|rv| rv != "0")),
        "the watches resume where they were, no relist: {resumed:#?}"
    );
    assert_eq!(
        resumed.len() as u64,
        WATCHES,
        "one watch per resource after the restart: {resumed:#?}\nbefore: {:#?}\n{}",
        &server.seen()[..seen_before_outage],
        log(&collector)
    );
    for resource in RESOURCES {
        assert_eq!(
            end.watch("headroom_collector_kube_lists_total", resource),
            1,
            "{}",
            end.0
        );
    }
    let served_total = server.requests() as u64;
    let own_requests = end.own("headroom_apiserver_requests_total");
    println!(
        "self-measured at the end: requests {own_requests} (served {served_total}), \
         open streams {}",
        end.own("headroom_apiserver_open_streams")
    );
    assert!(
        requests_agree(own_requests, served_total),
        "requests, self-measured {own_requests} vs {served_total} served (at most {WATCHES} \
         more in flight when the server stopped)\n{}",
        log(&collector)
    );

    drop(collector);
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Self-measured requests against those the server served, across an outage: within 10%,
/// plus at most one per watch that was renewing when the server stopped. Those were
/// sent (the collector counts them) but the aborted server never handled them.
fn requests_agree(own: u64, served: u64) -> bool {
    own + served / 10 >= served && own <= served + served / 10 + WATCHES
}

#[test]
fn the_bounds_follow_the_backoff_and_the_watch_period() {
    assert_eq!(
        steady_bound(Duration::from_secs(16), Duration::from_secs(4)),
        5
    );
    // One at once, then after least waits of 1 and 2 s (3 s in all); the next would
    // come 4 s later.
    assert_eq!(
        outage_bound(Duration::from_secs(6), BackoffConfig::default()),
        3
    );
    assert_eq!(
        outage_bound(Duration::from_millis(300), BackoffConfig::default()),
        1
    );
    // Five minutes down: 1 + 5 doubling waits (31 s) + 8 waits of at least 30 s, where
    // retrying at once after each failure would make thousands.
    assert_eq!(
        outage_bound(Duration::from_secs(300), BackoffConfig::default()),
        14
    );
}
