//! Naming cgroups: container id from the cgroup path, then pod and owning workload.
//!
//! Pure: [`cgroup_path::parse`] reads a path, [`PodInfo::from_pod`] reads a Pod object,
//! [`identify`] joins the two through a [`PodIndex`] (which `crate::cluster` keeps
//! filled from the node's pod watch). What is not known yet, or no longer, degrades to
//! what the path says rather than failing.
pub mod cgroup_path;
mod pod;
pub mod workload;

pub use self::{
    cgroup_path::{CgroupOwner, QosClass, Runtime},
    pod::{ContainerInfo, PodIndex, PodInfo},
    workload::Workload,
};
pub use crate::metrics::{Identity, NODE_WORKLOAD_KIND};

/// `workload_kind` of a pod the collector has a cgroup for but no Pod object (the
/// watch has not delivered it yet, or the API server is unreachable): `pod` is then the
/// pod's uid and `container` the container id's first 12 digits.
pub const UNKNOWN_WORKLOAD_KIND: &str = "unknown";

/// Names the owner of a cgroup. `comm` names a node process that runs in no systemd
/// service.
pub fn identify(owner: &CgroupOwner, comm: &str, pods: &PodIndex) -> Identity {
    match owner {
        CgroupOwner::Container {
            id,
            pod_uid,
            monitor,
            ..
        } => {
            if !monitor && let Some((pod, container)) = pods.by_container(id) {
                return of_pod(pod, &container.name);
            }
            match pod_uid {
                // The sandbox (pause) container, CRI-O's monitor, or a container the
                // kubelet has not reported yet: the pod, without a container name.
                Some(uid) => match pods.get(uid) {
                    Some(pod) => of_pod(pod, ""),
                    None => unknown_pod(uid, if *monitor { "" } else { short(id) }),
                },
                // A container outside Kubernetes: a process of the node.
                None => Identity::node_process(comm),
            }
        }
        CgroupOwner::Pod { uid, .. } => match pods.get(uid) {
            Some(pod) => of_pod(pod, ""),
            None => unknown_pod(uid, ""),
        },
        CgroupOwner::Node { unit } => Identity::node_process(unit.as_deref().unwrap_or(comm)),
    }
}

/// The Pod object of the pod a cgroup belongs to, if the watch has delivered it.
pub fn pod_of<'a>(owner: &CgroupOwner, pods: &'a PodIndex) -> Option<&'a PodInfo> {
    match owner {
        CgroupOwner::Container { id, pod_uid, .. } => pods
            .by_container(id)
            .map(|(pod, _)| pod)
            .or_else(|| pods.get(pod_uid.as_deref()?)),
        CgroupOwner::Pod { uid, .. } => pods.get(uid),
        CgroupOwner::Node { .. } => None,
    }
}

fn of_pod(pod: &PodInfo, container: &str) -> Identity {
    Identity::container(
        &pod.namespace,
        &pod.workload.kind,
        &pod.workload.name,
        &pod.name,
        container,
    )
}

fn unknown_pod(uid: &str, container: &str) -> Identity {
    Identity::container("", UNKNOWN_WORKLOAD_KIND, "", uid, container)
}

/// The 12-digit form `crictl` and `docker ps` show.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests;
