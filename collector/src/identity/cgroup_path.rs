//! What a cgroup path says about its owner: a container (runtime, id, pod uid, QoS
//! class), a pod-level group (the pod slice itself, a sandbox), or a node process (its
//! systemd unit when it has one).
//!
//! The kubelet lays pods out under `kubepods` in one of two drivers:
//! - systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/`
//!   with the uid's `-` written as `_`, containers as `<runtime>-<id>.scope`
//!   (`cri-containerd-`, `crio-`, `docker-`; CRI-O's monitor as `crio-conmon-<id>.scope`);
//! - cgroupfs: `/kubepods/burstable/pod<uid>/<id>` (CRI-O: `crio-<id>`).
//!
//! Guaranteed pods sit directly under `kubepods` (no QoS level). Outside Kubernetes,
//! Docker uses `/docker/<id>` (cgroupfs) or `/system.slice/docker-<id>.scope` (systemd).
//! The path may be nested (kind and other node-in-a-container setups put a whole
//! `kubepods` tree under a node container), so the innermost container wins.

/// The container runtime a container cgroup's name points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    /// A bare id (cgroupfs driver with containerd or cri-dockerd): the runtime does not
    /// say its name in the path.
    Unnamed,
}

/// The kubelet's QoS class of a pod, from the level it sits under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Who owns a cgroup, as far as its path tells.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CgroupOwner {
    /// A container; `pod_uid` is `None` outside Kubernetes (plain Docker).
    Container {
        runtime: Runtime,
        id: String,
        pod_uid: Option<String>,
        qos: Option<QosClass>,
        /// CRI-O's `conmon` monitor of the container, not the container itself.
        monitor: bool,
    },
    /// Inside a pod but in no container group (the pod's own slice).
    Pod { uid: String, qos: QosClass },
    /// A process of the node; `unit` is its systemd service when it runs in one.
    Node { unit: Option<String> },
}

/// Reads the owner of the cgroup at `path` (relative to the cgroup v2 root, as
/// `/proc/<pid>/cgroup` or [`crate::cgroup::path_of`] give it).
pub fn parse(path: &str) -> CgroupOwner {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    // The innermost container: scan from the leaf.
    for (depth, component) in components.iter().enumerate().rev() {
        if let Some((runtime, id, monitor)) = container_of(component) {
            let (pod_uid, qos) = pod_of(&components[..depth]).unzip();
            return CgroupOwner::Container {
                runtime,
                id: id.to_owned(),
                pod_uid,
                qos,
                monitor,
            };
        }
    }
    if let Some((uid, qos)) = pod_of(&components) {
        return CgroupOwner::Pod { uid, qos };
    }
    CgroupOwner::Node {
        unit: components.iter().rev().find_map(|c| unit_of(c)),
    }
}

/// Picks the cgroup v2 path out of a `/proc/<pid>/cgroup` text. On a hybrid host the
/// unified line is `0::/…`; where it is only `/` (processes that systemd did not
/// place in the unified tree) the `name=systemd` or a controller line says more.
pub fn from_proc_cgroup(text: &str) -> Option<&str> {
    let mut unified = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path);
        } else if v1.is_none() && (controllers == "name=systemd" || controllers.contains("pids")) {
            v1 = Some(path);
        }
    }
    match (unified, v1) {
        (Some("/"), Some(v1)) => Some(v1),
        (Some(path), _) => Some(path),
        (None, v1) => v1,
    }
}

/// `(runtime, id, is_monitor)` when a path component names a container.
fn container_of(component: &str) -> Option<(Runtime, &str, bool)> {
    let scope = component.strip_suffix(".scope");
    let name = scope.unwrap_or(component);
    const PREFIXES: [(&str, Runtime, bool); 4] = [
        ("crio-conmon-", Runtime::CriO, true),
        ("cri-containerd-", Runtime::Containerd, false),
        ("crio-", Runtime::CriO, false),
        ("docker-", Runtime::Docker, false),
    ];
    for (prefix, runtime, monitor) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((runtime, id, monitor));
        }
    }
    // A bare id is a container only as a plain directory (cgroupfs driver).
    (scope.is_none() && is_container_id(component)).then_some((Runtime::Unnamed, component, false))
}

/// Container ids of containerd, CRI-O and Docker are 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The innermost pod (uid, QoS class) among the components.
fn pod_of(components: &[&str]) -> Option<(String, QosClass)> {
    components.iter().enumerate().rev().find_map(|(i, c)| {
        let uid = pod_uid_of(c)?;
        // The level above a pod says its class: `burstable` / `kubepods-burstable.slice`.
        let qos = match components.get(i.wrapping_sub(1)).copied() {
            Some("burstable" | "kubepods-burstable.slice") => QosClass::Burstable,
            Some("besteffort" | "kubepods-besteffort.slice") => QosClass::BestEffort,
            _ => QosClass::Guaranteed,
        };
        Some((uid, qos))
    })
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        let (_, uid) = slice.rsplit_once("-pod")?;
        slice.starts_with("kubepods").then_some(uid)?
    } else {
        component.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A Kubernetes uid: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `kubelet.service` → `kubelet`; `getty@tty1.service` → `getty@tty1`.
fn unit_of(component: &str) -> Option<String> {
    component
        .strip_suffix(".service")
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
