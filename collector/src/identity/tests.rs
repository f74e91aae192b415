//! Identity of real Pod objects (collector/tests/fixtures/cluster, made as its README
//! says) for each owner kind, joined with cgroup paths of each runtime.
use k8s_openapi::api::core::v1::Pod;

use super::*;

fn fixture(name: &str) -> PodInfo {
    let path = format!(
        "{}/tests/fixtures/cluster/pod-{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let pod: Pod = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    PodInfo::from_pod(&pod).unwrap_or_else(|| panic!("{path}: no uid"))
}

fn index(names: &[&str]) -> PodIndex {
    let mut pods = PodIndex::default();
    for name in names {
        pods.upsert(fixture(name));
    }
    pods
}

/// Container `n` of the fixtures has id `format!("{n:02x}")` repeated 32 times.
fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn systemd_path(uid: &str, prefix: &str, id: &str) -> String {
    let uid = uid.replace('-', "_");
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice/{prefix}{id}.scope"
    )
}

#[test]
fn reads_a_running_pod() {
    let web = fixture("web");
    assert_eq!(web.uid, "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
    assert_eq!(web.node, "node-a");
    assert!(!web.host_network);
    assert_eq!(web.image(), "nginx:1.27");
    assert_eq!(web.containers.len(), 1);
    assert_eq!(web.containers[0].id.as_deref(), Some(cid(1).as_str()));
    assert_eq!(
        web.started_at().map(|t| t.to_string()).as_deref(),
        Some("2025-02-19T10:00:00Z")
    );
    assert!(fixture("agent").host_network);
}

#[test]
fn each_owner_kind() {
    for (name, kind, workload) in [
        ("web", "Deployment", "web"),
        ("agent", "DaemonSet", "agent"),
        ("db", "StatefulSet", "db"),
        ("backup", "CronJob", "backup"),
        ("migrate", "Job", "migrate"),
        ("bare", "Pod", "p"),
    ] {
        assert_eq!(
            fixture(name).workload,
            Workload {
                kind: kind.into(),
                name: workload.into()
            },
            "{name}"
        );
    }
}

#[test]
fn containerd_container_of_a_deployment() {
    let pods = index(&["web", "agent"]);
    let web = fixture("web");
    let owner = cgroup_path::parse(&systemd_path(&web.uid, "cri-containerd-", &cid(1)));
    assert_eq!(
        identify(&owner, "nginx", &pods),
        Identity::container(
            "default",
            "Deployment",
            "web",
            "web-7d9c8b6f5d-x2x4k",
            "nginx"
        )
    );
}

#[test]
fn crio_container_of_a_statefulset_cgroupfs() {
    let pods = index(&["db"]);
    let db = fixture("db");
    let owner = cgroup_path::parse(&format!(
        "/kubepods/besteffort/pod{}/crio-{}",
        db.uid,
        cid(3)
    ));
    assert_eq!(
        identify(&owner, "postgres", &pods),
        Identity::container("default", "StatefulSet", "db", "db-0", "postgres")
    );
}

#[test]
fn host_network_daemonset_is_told_apart_by_cgroup() {
    let pods = index(&["agent", "web"]);
    let agent = fixture("agent");
    let owner = cgroup_path::parse(&format!("/kubepods/besteffort/pod{}/{}", agent.uid, cid(2)));
    let identity = identify(&owner, "agent", &pods);
    assert_eq!(identity.workload_kind, "DaemonSet");
    assert_eq!(identity.container, "agent");
}

#[test]
fn sandbox_and_monitor_are_the_pod_without_container() {
    let pods = index(&["web"]);
    let web = fixture("web");
    let pause = "ab".repeat(32);
    for prefix in ["cri-containerd-", "crio-conmon-"] {
        let owner = cgroup_path::parse(&systemd_path(&web.uid, prefix, &pause));
        let id = identify(&owner, "pause", &pods);
        assert_eq!(
            (id.workload.as_str(), id.pod.as_str(), id.container.as_str()),
            ("web", "web-7d9c8b6f5d-x2x4k", ""),
            "{prefix}"
        );
    }
}

#[test]
fn unknown_pod_degrades_to_uid_and_short_id() {
    // The API server is unreachable: no Pod objects at all.
    let pods = PodIndex::default();
    let uid = "0c9d4f1e-5b2a-4c3d-9e8f-7a6b5c4d3e2f";
    let owner = cgroup_path::parse(&systemd_path(uid, "cri-containerd-", &cid(9)));
    assert_eq!(
        identify(&owner, "app", &pods),
        Identity::container("", UNKNOWN_WORKLOAD_KIND, "", uid, "090909090909")
    );
}

#[test]
fn node_processes_by_unit_or_comm() {
    let pods = index(&["web"]);
    let kubelet = cgroup_path::parse("/system.slice/kubelet.service");
    assert_eq!(
        identify(&kubelet, "kubelet", &pods),
        Identity::node_process("kubelet")
    );
    let session = cgroup_path::parse("/user.slice/user-0.slice/session-1.scope");
    assert_eq!(
        identify(&session, "curl", &pods),
        Identity::node_process("curl")
    );
    let docker = cgroup_path::parse(&format!("/system.slice/docker-{}.scope", cid(8)));
    let id = identify(&docker, "redis-server", &pods);
    assert_eq!(id.workload_kind, NODE_WORKLOAD_KIND);
    assert_eq!(id.workload, "redis-server");
}

#[test]
fn index_follows_updates_and_relists() {
    let mut pods = index(&["web", "db"]);
    assert!(pods.by_container(&cid(1)).is_some());
    let gone = pods.replace_all([fixture("db"), fixture("bare")]);
    assert_eq!(
        gone.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["web-7d9c8b6f5d-x2x4k"]
    );
    assert!(pods.by_container(&cid(1)).is_none());
    assert_eq!(
        pods.by_container(&cid(6))
            .map(|(p, c)| (p.name.as_str(), c.name.as_str())),
        Some(("p", "p"))
    );
    assert!(pods.remove(&fixture("db").uid).is_some());
    assert!(pods.by_container(&cid(3)).is_none());
    assert_eq!(pods.len(), 1);
}
