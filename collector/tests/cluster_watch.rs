//! The collector's watches against a local API server replaying recorded objects:
//! one watch per resource with the right selectors, a 410 Gone relists this node's pods
//! only, watch errors and an outage back off and keep what is known.
mod cluster_api;

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, time::Duration};

use cluster_api::{
    ApiServer, DISCOVERY, ENDPOINT_SLICES, PODS, SERVICES, WatchReply, event, expired, fixture,
    until,
};
use collector::{
    cluster::{self, BackoffConfig, Cluster, ClusterConfig, ErrorReason, Resource},
    identity::{self, Identity, cgroup_path},
    metrics::{Metrics, SharedSnapshot},
};
use serde_json::{Value, json};

const NODE: &str = "node-a";
const SELECTOR: &str = "spec.nodeName=node-a";
const WEB_UID: &str = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const BARE_UID: &str = "be6f7a8b-9c0d-4e1f-8a3b-4c5d6e7f8091";
const MIGRATE_UID: &str = "ad5e6f7a-8b9c-4d0e-9f2a-3b4c5d6e7f80";

fn config() -> ClusterConfig {
    let mut config = ClusterConfig::new(NODE, "10.96.0.1:443".parse().expect("addr"));
    config.backoff = BackoffConfig {
        min: Duration::from_millis(100),
        max: Duration::from_millis(400),
        ..BackoffConfig::default().without_jitter()
    };
    config.resolv_conf = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cluster/resolv.conf"
    ));
    config
}

fn addrs(list: &[&str]) -> BTreeSet<SocketAddr> {
    list.iter()
        .map(|a| a.parse().expect("an address"))
        .collect()
}

fn service_list() -> Value {
    let mut service = fixture("service-kube-dns.json");
    let object = service.as_object_mut().expect("an object");
    object.remove("kind");
    object.remove("apiVersion");
    json!({"kind": "ServiceList", "apiVersion": "v1",
           "metadata": {"resourceVersion": "1010"}, "items": [service]})
}

/// The recorded lists, and watches that hold open with no events.
fn recorded_server_lists(server: &ApiServer) {
    server.set_lists(PODS, vec![fixture("pod-list.json")]);
    server.set_lists(ENDPOINT_SLICES, vec![fixture("endpointslice-list.json")]);
    server.set_lists(SERVICES, vec![service_list()]);
}

/// The identity of the web pod's nginx container, from its systemd cgroup path.
fn web_identity(cluster: &Cluster) -> Identity {
    let path = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
        WEB_UID.replace('-', "_"),
        "01".repeat(32)
    );
    let owner = cgroup_path::parse(&path);
    identity::identify(&owner, "nginx", cluster.pods().read().index())
}

/// A client of `server` as the collector builds one: with its `User-Agent`.
fn client(server: &ApiServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("a URL"));
    cluster::client_for(config, NODE).expect("a client")
}

fn query<'a>(seen: &'a cluster_api::Seen, key: &str) -> Option<&'a str> {
    seen.query.get(key).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watch_per_resource_names_pods_and_follows_endpoints() {
    let server = ApiServer::start().await;
    recorded_server_lists(&server);
    server.script_watches(
        PODS,
        vec![WatchReply::Events(vec![
            event("ADDED", fixture("pod-web-2.json")),
            event("DELETED", fixture("pod-bare.json")),
        ])],
    );
    let cluster = Cluster::start(client(&server), config());

    until("the pod watch's events", || {
        let pods = cluster.pods().read();
        pods.index().len() == 7 && pods.is_gone(BARE_UID)
    })
    .await;
    assert!(cluster.pods().read().is_synced());
    assert_eq!(
        web_identity(&cluster),
        Identity::container(
            "default",
            "Deployment",
            "web",
            "web-7d9c8b6f5d-x2x4k",
            "nginx"
        )
    );
    {
        let pods = cluster.pods().read();
        let (pod, container) = pods
            .index()
            .by_container(&"07".repeat(32))
            .expect("the added pod's container");
        assert_eq!(
            (pod.name.as_str(), container.name.as_str()),
            ("web-7d9c8b6f5d-9wz7m", "nginx")
        );
        assert!(
            pods.index()
                .iter()
                .any(|p| p.workload.kind == "DaemonSet" && p.host_network),
            "the hostNetwork DaemonSet pod is cached too"
        );
    }

    // API server: the Service address from the environment plus the slice's endpoints;
    // a new API server in the slice is followed live.
    let mut apiserver = cluster.apiserver_endpoints();
    until("the EndpointSlice", || {
        *apiserver.borrow() == addrs(&["10.96.0.1:443", "10.0.0.10:6443", "10.0.0.11:6443"])
    })
    .await;
    apiserver.mark_unchanged();
    server.push(
        ENDPOINT_SLICES,
        event("MODIFIED", fixture("endpointslice-kubernetes-3.json")),
    );
    tokio::time::timeout(Duration::from_secs(10), apiserver.changed())
        .await
        .expect("an update in time")
        .expect("the sender lives");
    assert_eq!(
        *apiserver.borrow(),
        addrs(&[
            "10.96.0.1:443",
            "10.0.0.10:6443",
            "10.0.0.11:6443",
            "10.0.0.12:6443"
        ])
    );
    // DNS: the node's resolv.conf and the kube-dns Service.
    let dns = cluster.dns_servers();
    until("the kube-dns Service", || {
        *dns.borrow() == addrs(&["10.0.0.2:53", "10.96.0.10:53"])
    })
    .await;

    // The request pattern: one discovery, one list and one watch per resource, nothing
    // cluster-wide; every request says who is calling.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut seen = server.seen();
    let agent = format!("headroom-collector/{} (node-a)", env!("CARGO_PKG_VERSION"));
    assert!(
        seen.iter()
            .all(|s| s.user_agent.as_deref() == Some(agent.as_str())),
        "{seen:#?}"
    );
    assert_eq!(seen.iter().filter(|s| s.path == DISCOVERY).count(), 1);
    seen.retain(|s| s.path != DISCOVERY);
    for path in [PODS, ENDPOINT_SLICES, SERVICES] {
        assert_eq!(server.lists_of(path), 1, "{path}: {seen:#?}");
        assert_eq!(server.watches_of(path), 1, "{path}: {seen:#?}");
    }
    assert_eq!(seen.len(), 6, "{seen:#?}");
    assert!(cluster.health().readiness().is_ready());
    for s in &seen {
        let (key, selector) = match s.path.as_str() {
            PODS => ("fieldSelector", SELECTOR),
            ENDPOINT_SLICES => ("labelSelector", "kubernetes.io/service-name=kubernetes"),
            SERVICES => ("fieldSelector", "metadata.name=kube-dns"),
            other => panic!("unexpected request to {other}"),
        };
        assert_eq!(query(s, key), Some(selector), "{s:?}");
        if s.watch {
            assert_eq!(query(s, "resourceVersion"), Some("1010"), "{s:?}");
            assert_eq!(query(s, "timeoutSeconds"), Some("290"), "{s:?}");
        } else {
            // Lists come from the API server's watch cache, not etcd, in one page (a
            // limit would make the API server skip the cache).
            assert_eq!(query(s, "resourceVersion"), Some("0"), "{s:?}");
            assert_eq!(query(s, "limit"), None, "{s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_relists_this_nodes_pods_only() {
    let server = ApiServer::start().await;
    recorded_server_lists(&server);
    // The second list: the migrate Job's pod finished and was deleted meanwhile.
    let mut later = fixture("pod-list.json");
    later["metadata"]["resourceVersion"] = json!("1500");
    later["items"]
        .as_array_mut()
        .expect("items")
        .retain(|p| p["metadata"]["uid"] != MIGRATE_UID);
    server.set_lists(PODS, vec![fixture("pod-list.json"), later]);
    server.script_watches(PODS, vec![WatchReply::Events(vec![expired(1010, 1500)])]);
    let cluster = Cluster::start(client(&server), config());

    until("the relist after 410", || {
        cluster.pods().read().is_gone(MIGRATE_UID) && server.watches_of(PODS) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pods: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.path == PODS)
        .collect();
    assert_eq!(
        pods.iter()
            .map(|s| (s.watch, query(s, "resourceVersion").unwrap_or("")))
            .collect::<Vec<_>>(),
        [(false, "0"), (true, "1010"), (false, "0"), (true, "1500")],
        "{pods:#?}"
    );
    assert!(
        pods.iter()
            .all(|s| query(s, "fieldSelector") == Some(SELECTOR))
    );
    // The backoff waited before relisting.
    assert!(pods[2].at - pods[1].at >= Duration::from_millis(50));
    // The other watches were not disturbed.
    assert_eq!(server.lists_of(ENDPOINT_SLICES), 1);
    assert!(cluster.health().readiness().is_ready(), "a 410 is routine");
    assert_eq!(server.lists_of(SERVICES), 1);
    assert_eq!(cluster.health().errors(Resource::Pods), 1);
    assert_eq!(
        cluster
            .health()
            .errors_for(Resource::Pods, ErrorReason::Expired),
        1
    );
    assert_eq!(cluster.health().lists(Resource::Pods), 2);
    // The same in the collector's self-metrics.
    let mut metrics = Metrics::new(SharedSnapshot::default());
    metrics.register_watches(cluster.health().clone());
    let text = metrics.encode_openmetrics();
    for line in [
        r#"headroom_collector_kube_lists_total{resource="pods"} 2"#,
        r#"headroom_collector_kube_lists_total{resource="endpointslices"} 1"#,
        r#"headroom_collector_kube_watch_errors_total{resource="pods",reason="expired"} 1"#,
        r#"headroom_collector_kube_watch_errors_total{resource="pods",reason="watch_failed"} 0"#,
        r#"headroom_collector_kube_watch_errors_total{resource="services",reason="expired"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    // The deleted pod keeps its name through the grace period.
    assert_eq!(web_identity(&cluster).workload, "web");
    assert!(cluster.pods().read().index().get(MIGRATE_UID).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_errors_and_an_outage_back_off_and_keep_what_is_known() {
    let server = ApiServer::start().await;
    recorded_server_lists(&server);
    let cluster = Cluster::start(client(&server), config());
    let apiserver = cluster.apiserver_endpoints();
    until("the first sync", || {
        cluster.pods().read().index().len() == 6 && apiserver.borrow().len() == 3
    })
    .await;
    let before = server.seen().len();

    // The API server goes away: the open watches are cut, connections refused.
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        web_identity(&cluster).workload_kind,
        "Deployment",
        "labels stay what they were while the API server is away"
    );
    assert_eq!(cluster.pods().read().index().len(), 6);
    assert_eq!(apiserver.borrow().len(), 3);
    assert!(cluster.health().errors(Resource::Pods) >= 1);
    let errors_in_outage = cluster.health().errors(Resource::Pods);
    // Two seconds of refusals at 100–400 ms steps (each at least half of its step):
    // a handful of attempts, not a retry loop.
    assert!(errors_in_outage <= 12, "{errors_in_outage} attempts in 2 s");

    // It comes back failing watches for a while (500s), then serves them.
    server.script_watches(PODS, vec![WatchReply::Status(500, "InternalError"); 4]);
    server.restart().await;
    until("the pod watch to be back", || {
        let watches: Vec<_> = server.seen()[before..]
            .iter()
            .filter(|s| s.path == PODS && s.watch)
            .cloned()
            .collect();
        watches.len() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after: Vec<_> = server.seen()[before..].to_vec();
    let pod_watches: Vec<_> = after.iter().filter(|s| s.path == PODS).collect();
    // The watches resume from the last resourceVersion: no relist at all, of pods or
    // anything else.
    assert!(after.iter().all(|s| s.watch), "{after:#?}");
    assert!(
        pod_watches
            .iter()
            .all(|s| query(s, "resourceVersion") == Some("1010")
                && query(s, "fieldSelector") == Some(SELECTOR))
    );
    // Five pod watches: four refused with 500, the fifth held; each retry waited.
    assert_eq!(pod_watches.len(), 5, "{pod_watches:#?}");
    assert!(
        cluster
            .health()
            .errors_for(Resource::Pods, ErrorReason::WatchFailed)
            >= 4,
        "{:?}",
        cluster.health().last_error()
    );
    assert_eq!(
        cluster
            .health()
            .errors_for(Resource::Pods, ErrorReason::ListFailed),
        0
    );
    for pair in pod_watches.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(50),
            "{:?} after {:?}",
            pair[1].at - pair[0].at,
            pair[0].at
        );
    }
    assert_eq!(
        server.lists_of(PODS) + server.lists_of(ENDPOINT_SLICES) + server.lists_of(SERVICES),
        3
    );
    assert_eq!(cluster.pods().read().index().len(), 6);
}
