use std::{
    collections::{BTreeSet, HashSet},
    net::SocketAddr,
    path::Path,
};

use k8s_openapi::jiff::Timestamp;

use super::{endpoints::diff, names::cgroups_of_pods, *};
use crate::{
    identity::{ContainerInfo, PodIndex, Workload},
    scratch::Scratch,
};

const UID: &str = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const OTHER_UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn cid(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

/// The systemd driver's path of container `id` of pod `uid` under containerd.
fn container_path(uid: &str, id: &str) -> String {
    let uid = uid.replace('-', "_");
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{id}.scope"
    )
}

fn web_pod(uid: &str, name: &str, container: u8) -> PodInfo {
    PodInfo {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        node: "node-a".into(),
        workload: Workload {
            kind: "Deployment".into(),
            name: "web".into(),
        },
        host_network: false,
        start_time: Some("2026-01-01T00:00:00Z".parse().expect("time")),
        containers: vec![ContainerInfo {
            name: "app".into(),
            image: "nginx:1.27".into(),
            id: Some(cid(container)),
            started_at: Some("2026-01-01T00:00:05Z".parse().expect("time")),
            init: false,
        }],
    }
}

#[test]
fn names_node_processes() {
    let name = |path: Option<&str>, comm| node_identity(path, comm, 7).workload;
    assert_eq!(
        name(Some("/system.slice/kubelet.service"), Some("kubelet")),
        "kubelet"
    );
    assert_eq!(
        name(Some("/user.slice/session-3.scope"), Some("curl")),
        "curl"
    );
    assert_eq!(
        name(Some("/headroom-demo-agent"), Some("bash")),
        "headroom-demo-agent"
    );
    assert_eq!(name(Some("/"), Some("coredns")), "coredns");
    assert_eq!(name(None, Some("x")), "cgroup-7");
    assert_eq!(node_identity(Some("/"), None, 1).workload_kind, "node");
}

#[test]
fn remembers_comms_until_the_bound() {
    let mut names = Names::new(Path::new("/nonexistent"));
    // No such process: the kernel's name is used.
    names.learn_comm(u32::MAX - 1, b"kubectl\0\0\0\0\0\0\0\0\0", || None);
    assert_eq!(
        names.comms.get(&(u32::MAX - 1)).map(String::as_str),
        Some("kubectl")
    );
    // A live process: its executable's full name wins over a thread's (and over the
    // 15 bytes of its own comm: this test binary's name is longer).
    names.learn_comm(std::process::id(), b"worker-thread\0\0\0", || None);
    let exe = std::env::current_exe().expect("this test's executable");
    let own = exe.file_name().expect("a file name").to_string_lossy();
    assert!(own.len() > 15, "{own}");
    assert_eq!(
        names.comms.get(&std::process::id()).map(String::as_str),
        Some(own.as_ref())
    );
    for tgid in 10..(10 + names::MAX_COMMS as u32) {
        names.learn_comm(tgid, b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", || None);
    }
    assert!(names.comms.len() <= names::MAX_COMMS);
}

#[test]
fn a_pods_cgroup_is_renamed_once_its_pod_object_arrives() {
    let mut names = Names::new(Path::new("/nonexistent"));
    names.learn_path(42, Some(container_path(UID, &cid(1))));
    let mut pods = PodIndex::default();
    // First traffic before the watch delivered the pod: the uid and short id.
    assert_eq!(
        names.name(42, 100, &pods),
        Named {
            identity: Identity::container("", "unknown", "", UID, &cid(1)[..12]),
            pod_uid: None,
        }
    );
    pods.upsert(web_pod(UID, "web-7d9f-abcde", 1));
    assert_eq!(
        names.name(42, 100, &pods),
        Named {
            identity: Identity::container("shop", "Deployment", "web", "web-7d9f-abcde", "app"),
            pod_uid: Some(UID.into()),
        }
    );
}

#[test]
fn cgroups_outside_pods_keep_the_node_naming() {
    let pods = PodIndex::default();
    let named = |path: &str, comm| names::name(Some(path), comm, 9, &pods);
    assert_eq!(
        named("/headroom-demo-chatty-agent", Some("bash")).identity,
        Identity::node_process("headroom-demo-chatty-agent")
    );
    assert_eq!(
        named("/system.slice/kubelet.service", Some("kubelet")).identity,
        Identity::node_process("kubelet")
    );
    // Plain Docker: a container, but no pod.
    let docker = format!("/system.slice/docker-{}.scope", cid(3));
    assert_eq!(named(&docker, Some("redis")).pod_uid, None);
    assert_eq!(named(&docker, Some("redis")).identity.workload_kind, "node");
}

#[test]
fn gone_pods_drop_their_cgroups_once() {
    let gone = web_pod(UID, "web-old", 1);
    let pod_slice = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        UID.replace('-', "_")
    );
    let paths = [
        (1, container_path(UID, &cid(1))),
        (2, pod_slice),
        (3, container_path(OTHER_UID, &cid(2))),
        (4, "/system.slice/kubelet.service".to_string()),
    ];
    let found = cgroups_of_pods(
        paths.iter().map(|(id, p)| (*id, p.as_str())),
        std::slice::from_ref(&gone),
    );
    assert_eq!(found, [1, 2]);

    let mut names = Names::new(Path::new("/nonexistent"));
    for (id, path) in &paths {
        names.learn_path(*id, Some(path.clone()));
    }
    names.learn_path(5, None);
    assert!(names.cgroups_of_pods(&[]).is_empty());
    assert_eq!(names.cgroups_of_pods(std::slice::from_ref(&gone)), [1, 2]);
    // Retired at once, and once (see `gone`).
    let mut lifecycle = GoneCgroups::new(DEFAULT_GRACE);
    let now = Instant::now();
    let referenced: HashSet<u64> = (1..=5).collect();
    assert_eq!(lifecycle.tick(now, &referenced, &[1, 2], |_| true), [1, 2]);
    assert!(lifecycle.is_dropped(1) && lifecycle.is_dropped(2));
    assert!(!lifecycle.is_dropped(3) && !lifecycle.is_dropped(4));
    assert!(
        lifecycle
            .tick(now, &referenced, &[1, 2], |_| true)
            .is_empty()
    );
}

/// A scratch directory standing for a cgroup root.
impl Scratch {
    /// Makes the group at `path` (relative) and returns its id.
    fn group(&self, path: &str) -> u64 {
        let dir = self.0.join(path);
        std::fs::create_dir_all(&dir).expect("group");
        crate::cgroup::id_of(&dir).expect("id")
    }

    fn remove(&self, path: &str) {
        std::fs::remove_dir(self.0.join(path)).expect("rmdir");
    }
}

#[test]
fn new_cgroups_are_named_in_one_walk_and_checked_with_one_stat() {
    let root = Scratch::new("names-walk");
    let web = root.group(&container_path(UID, &cid(1))[1..]);
    let session = root.group("user.slice/session-3.scope");
    let mut names = Names::new(&root.0);
    // Seen in events: named at the next drain, before the container can go.
    names.note(web);
    names.name_new();
    assert_eq!(names.path(web), Some(&*container_path(UID, &cid(1))));
    names.resolve([session, u64::MAX]);
    assert_eq!(names.path(session), Some("/user.slice/session-3.scope"));
    assert_eq!(
        names.paths[&u64::MAX],
        names::Place::Gone,
        "gone before it was named"
    );
    assert!(names.exists(web) && names.exists(session));
    assert!(!names.exists(u64::MAX));
    root.remove("user.slice/session-3.scope");
    assert!(!names.exists(session));
    // Still named through its grace period, from the path it had.
    names.learn_comm(u32::MAX - 2, b"cron\0\0\0\0\0\0\0\0\0\0\0\0", || None);
    assert_eq!(
        names.identity(session, u32::MAX - 2, &PodIndex::default()),
        Identity::node_process("cron")
    );
}

#[test]
fn a_session_scope_that_went_loses_its_series_after_the_grace_then_its_bookkeeping() {
    let root = Scratch::new("names-lifecycle");
    let kubelet = root.group("system.slice/kubelet.service");
    let session = root.group("user.slice/session-3.scope");
    let grace = Duration::from_secs(60);
    let mut names = Names::new(&root.0);
    let mut lifecycle = GoneCgroups::new(grace);
    let t0 = Instant::now();
    let (kubelet_tgid, session_tgid) = (u32::MAX - 3, u32::MAX - 4);
    names.learn_comm(kubelet_tgid, b"kubelet\0\0\0\0\0\0\0\0\0", || None);
    names.learn_comm(session_tgid, b"bash\0\0\0\0\0\0\0\0\0\0\0\0", || None);
    // What the agent does at every tick, minus the kernel.
    let mut tick = |names: &mut Names, at: Duration, refs: &Referenced| {
        names.resolve(refs.cgroups.iter().copied());
        let retired = lifecycle.tick(t0 + at, &refs.cgroups, &[], |id| names.exists(id));
        names.prune(
            |id| lifecycle.needs_path(id, refs.cgroups.contains(&id)),
            |tgid| refs.tgids.contains(&tgid),
        );
        (retired, lifecycle.is_dropped(session))
    };
    let both = Referenced::new([(kubelet, kubelet_tgid), (session, session_tgid)], []);
    assert_eq!(tick(&mut names, Duration::ZERO, &both), (vec![], false));
    root.remove("user.slice/session-3.scope");
    let noticed = Duration::from_secs(10);
    assert_eq!(tick(&mut names, noticed, &both), (vec![], false));
    assert_eq!(
        tick(&mut names, noticed + grace, &both),
        (vec![session], true)
    );
    assert!(
        !names.paths.contains_key(&session),
        "a retired cgroup needs no name"
    );
    assert!(names.paths.contains_key(&kubelet));
    // The kernel's map let its counters go: nothing is left of it.
    let kubelet_only = Referenced::new([(kubelet, kubelet_tgid)], []);
    assert_eq!(
        tick(&mut names, noticed + 2 * grace, &kubelet_only),
        (vec![], false)
    );
    assert!(lifecycle.is_empty());
    assert_eq!(names.paths.len(), 1);
    assert!(!names.comms.contains_key(&session_tgid));
    assert!(names.comms.contains_key(&kubelet_tgid));
}

#[test]
fn a_cgroup_a_failed_walk_did_not_find_is_never_taken_for_gone() {
    let mut names = Names::new(Path::new("/nonexistent"));
    names.resolve([42]);
    assert_eq!(names.paths[&42], names::Place::Unknown);
    assert!(names.exists(42));
    assert_eq!(
        names.identity(42, 0, &PodIndex::default()),
        Identity::node_process("cgroup-42")
    );
}

#[test]
fn what_refers_to_a_cgroup() {
    let refs = Referenced::new([(1, 10), (2, 0)], [(2, 20), (3, 30)]);
    assert_eq!(refs.cgroups, HashSet::from([1, 2, 3]));
    assert_eq!(refs.tracked, HashSet::from([2, 3]));
    assert_eq!(refs.tgids, HashSet::from([10, 0, 20, 30]));
}

#[test]
fn endpoint_diff_adds_new_removes_gone_and_leaves_flags_alone() {
    let addr = |s: &str| s.parse::<SocketAddr>().expect("addr");
    let current: Endpoints = [addr("10.0.0.1:6443"), addr("10.0.0.2:6443")].into();
    let wanted: Endpoints = [
        addr("10.0.0.2:6443"),
        addr("10.0.0.3:6443"),
        addr("10.96.0.1:443"),
    ]
    .into();
    let fixed: BTreeSet<SocketAddr> = [addr("10.96.0.1:443")].into();
    assert_eq!(
        diff(&current, &wanted, &fixed),
        endpoints::Diff {
            add: vec![addr("10.0.0.3:6443")],
            remove: vec![addr("10.0.0.1:6443")],
        }
    );
    // A flag endpoint the watch no longer lists stays.
    let with_fixed: Endpoints = [addr("10.96.0.1:443")].into();
    assert_eq!(
        diff(&with_fixed, &Endpoints::new(), &fixed),
        endpoints::Diff::default()
    );
    assert_eq!(diff(&wanted, &wanted, &fixed), endpoints::Diff::default());
}

#[tokio::test]
async fn discovery_wakes_on_changes_and_ends_with_its_watches() {
    let (api_tx, api_rx) = watch::channel(Endpoints::new());
    let (dns_tx, dns_rx) = watch::channel(Endpoints::new());
    let mut discovery = Discovery::new(api_rx, dns_rx, [], []);
    dns_tx.send_modify(|e| {
        e.insert("10.96.0.10:53".parse().expect("addr"));
    });
    assert!(discovery.changed().await);
    drop(api_tx);
    drop(dns_tx);
    // The DNS change above was not read yet: it is still reported once.
    let mut rounds = 0;
    while discovery.changed().await {
        discovery.dns.as_mut().map(|rx| rx.borrow_and_update());
        rounds += 1;
        assert!(
            rounds < 3,
            "changed() kept reporting after both watches ended"
        );
    }
}

#[test]
fn profile_rows_and_start_times_come_from_the_pod() {
    let pod = web_pod(UID, "web-7d9f-abcde", 1);
    let app = Identity::container("shop", "Deployment", "web", "web-7d9f-abcde", "app");
    let node = Identity::node_process("kubelet");
    let mut snap = Snapshot::default();
    *snap.workload(app.clone()).apiserver() = crate::metrics::ApiServerStats {
        requests: 10,
        connections: 2,
        received_bytes: 4096,
        ..Default::default()
    };
    snap.workload(app.clone())
        .dns()
        .add_queries("A", 3)
        .add_queries("AAAA", 4);
    snap.workload(node.clone()).apiserver().requests = 5;
    let pod_of = |id: &Identity| (*id == app).then_some(&pod);

    let rows = profile_rows(&snap, pod_of);
    assert_eq!(
        rows,
        [
            Row::new(node, [5, 0, 0, 0], None),
            Row::new(app.clone(), [10, 4096, 2, 7], Some(&pod)),
        ]
    );
    assert_eq!(rows[1].image, "nginx:1.27");

    let started: Timestamp = "2026-01-01T00:00:05Z".parse().expect("time");
    assert_eq!(
        pod_start_times(&snap, pod_of),
        BTreeMap::from([(
            PodLabels::new(&app, "nginx:1.27"),
            started.as_millisecond() as f64 / 1000.0
        )])
    );
}

#[test]
fn executables_are_named_by_their_last_path_component() {
    use super::names::executable_name;
    assert_eq!(executable_name("/usr/bin/dig").as_deref(), Some("dig"));
    assert_eq!(
        executable_name("/opt/bin/headroom-collector (deleted)").as_deref(),
        Some("headroom-collector"),
        "a replaced binary keeps its name"
    );
    assert_eq!(executable_name("kubectl").as_deref(), Some("kubectl"));
    assert_eq!(executable_name("/usr/bin/"), None);
}

#[test]
fn an_exited_process_is_named_by_the_executable_the_kernel_recorded() {
    let mut names = Names::new(Path::new("/nonexistent-root"));
    // No such process in /proc: the exec tracepoint's path wins over the thread's comm.
    names.learn_comm(u32::MAX - 3, b"isc-net-0000\0\0\0\0", || {
        Some("/usr/bin/headroom-long-named-dns-client".into())
    });
    assert_eq!(
        names.comms.get(&(u32::MAX - 3)).map(String::as_str),
        Some("headroom-long-named-dns-client")
    );
    names.learn_comm(u32::MAX - 4, b"isc-net-0000\0\0\0\0", || None);
    assert_eq!(
        names.comms.get(&(u32::MAX - 4)).map(String::as_str),
        Some("isc-net-0000"),
        "the thread's comm only when nothing else is known"
    );
}
