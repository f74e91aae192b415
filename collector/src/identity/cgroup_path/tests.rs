//! Path shapes as the runtimes and drivers create them (see the module doc); one test
//! per runtime × driver, plus hybrid hosts and node processes.
use super::*;

const ID: &str = "4b8a3d8f0e6c2b1a9d7e5f3c1b0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f";
const UID: &str = "0c9d4f1e-5b2a-4c3d-9e8f-7a6b5c4d3e2f";
const UID_SYSTEMD: &str = "0c9d4f1e_5b2a_4c3d_9e8f_7a6b5c4d3e2f";

fn container(runtime: Runtime, qos: Option<QosClass>) -> CgroupOwner {
    CgroupOwner::Container {
        runtime,
        id: ID.into(),
        pod_uid: qos.map(|_| UID.into()),
        qos,
        monitor: false,
    }
}

#[test]
fn containerd_systemd_burstable() {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(
        parse(&path),
        container(Runtime::Containerd, Some(QosClass::Burstable))
    );
}

#[test]
fn containerd_systemd_guaranteed_has_no_qos_level() {
    let path = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope");
    assert_eq!(
        parse(&path),
        container(Runtime::Containerd, Some(QosClass::Guaranteed))
    );
}

#[test]
fn containerd_cgroupfs_besteffort() {
    let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
    assert_eq!(
        parse(&path),
        container(Runtime::Unnamed, Some(QosClass::BestEffort))
    );
}

#[test]
fn containerd_cgroupfs_guaranteed() {
    let path = format!("/kubepods/pod{UID}/{ID}");
    assert_eq!(
        parse(&path),
        container(Runtime::Unnamed, Some(QosClass::Guaranteed))
    );
}

#[test]
fn crio_systemd_and_its_monitor() {
    let pod = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"
    );
    assert_eq!(
        parse(&format!("{pod}/crio-{ID}.scope")),
        container(Runtime::CriO, Some(QosClass::BestEffort))
    );
    // CRI-O may nest the processes one level down in `container`.
    assert_eq!(
        parse(&format!("{pod}/crio-{ID}.scope/container")),
        container(Runtime::CriO, Some(QosClass::BestEffort))
    );
    assert_eq!(
        parse(&format!("{pod}/crio-conmon-{ID}.scope")),
        CgroupOwner::Container {
            runtime: Runtime::CriO,
            id: ID.into(),
            pod_uid: Some(UID.into()),
            qos: Some(QosClass::BestEffort),
            monitor: true,
        }
    );
}

#[test]
fn crio_cgroupfs() {
    let path = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
    assert_eq!(
        parse(&path),
        container(Runtime::CriO, Some(QosClass::Burstable))
    );
}

#[test]
fn docker_outside_kubernetes_both_drivers() {
    assert_eq!(
        parse(&format!("/system.slice/docker-{ID}.scope")),
        container(Runtime::Docker, None)
    );
    assert_eq!(
        parse(&format!("/docker/{ID}")),
        container(Runtime::Unnamed, None)
    );
}

#[test]
fn docker_via_cri_dockerd_systemd() {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"
    );
    assert_eq!(
        parse(&path),
        container(Runtime::Docker, Some(QosClass::Burstable))
    );
}

#[test]
fn nested_node_container_innermost_wins() {
    // kind: the node is a Docker container with its own kubepods tree inside.
    let node = "1111111111111111111111111111111111111111111111111111111111111111";
    let path = format!("/system.slice/docker-{node}.scope/kubepods/burstable/pod{UID}/{ID}");
    assert_eq!(
        parse(&path),
        container(Runtime::Unnamed, Some(QosClass::Burstable))
    );
}

#[test]
fn pod_slice_without_container() {
    let path = format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
    );
    assert_eq!(
        parse(&path),
        CgroupOwner::Pod {
            uid: UID.into(),
            qos: QosClass::Burstable
        }
    );
}

#[test]
fn node_processes_by_unit() {
    for (path, unit) in [
        ("/system.slice/kubelet.service", Some("kubelet")),
        ("/system.slice/containerd.service", Some("containerd")),
        (
            "/system.slice/system-getty.slice/getty@tty1.service",
            Some("getty@tty1"),
        ),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/init.scope", None),
        ("/", None),
        ("", None),
    ] {
        assert_eq!(
            parse(path),
            CgroupOwner::Node {
                unit: unit.map(Into::into)
            },
            "{path}"
        );
    }
}

#[test]
fn near_misses_are_not_containers() {
    // Too short, upper case, a scope that is a bare id, a pod slice with a bad uid.
    for path in [
        "/docker/4b8a3d8f0e6c",
        &format!("/docker/{}", ID.to_uppercase()),
        &format!("/system.slice/{ID}.scope"),
        "/kubepods.slice/kubepods-podnot_a_uid.slice",
        "/kubepods/burstable/podx",
    ] {
        assert!(
            matches!(parse(path), CgroupOwner::Node { unit: None }),
            "{path}: {:?}",
            parse(path)
        );
    }
}

#[test]
fn proc_cgroup_unified() {
    let text = format!("0::/kubepods/burstable/pod{UID}/{ID}\n");
    assert_eq!(
        from_proc_cgroup(&text),
        Some(format!("/kubepods/burstable/pod{UID}/{ID}").as_str())
    );
}

#[test]
fn proc_cgroup_hybrid_prefers_unified_then_v1() {
    let placed = format!(
        "12:pids:/kubepods/pod{UID}/{ID}\n1:name=systemd:/kubepods/pod{UID}/{ID}\n0::/kubepods/pod{UID}/{ID}\n"
    );
    assert_eq!(
        from_proc_cgroup(&placed),
        Some(format!("/kubepods/pod{UID}/{ID}").as_str())
    );
    // The unified tree left at the root: the v1 path names the container.
    let unplaced = format!("12:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n");
    assert_eq!(
        parse(from_proc_cgroup(&unplaced).expect("a path")),
        container(Runtime::Unnamed, None)
    );
}

#[test]
fn proc_cgroup_v1_only() {
    let text =
        "11:memory:/system.slice/kubelet.service\n1:name=systemd:/system.slice/kubelet.service\n";
    assert_eq!(
        from_proc_cgroup(text),
        Some("/system.slice/kubelet.service")
    );
}
