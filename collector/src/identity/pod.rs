//! What the collector keeps of a pod (from the API server's Pod object) and the index
//! that finds a pod by uid or by one of its containers' ids.
use std::collections::HashMap;

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};

use super::workload::{self, Owner, Workload};

/// One pod on this node, reduced to what naming and profiles need.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub workload: Workload,
    pub host_network: bool,
    /// When the kubelet accepted the pod (`status.startTime`).
    pub start_time: Option<Timestamp>,
    /// Init containers first, then the app containers, in spec order.
    pub containers: Vec<ContainerInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    /// The image as the pod spec names it (what a manifest a webhook sees would say).
    pub image: String,
    /// The runtime's id without the `containerd://` / `cri-o://` / `docker://` scheme;
    /// `None` until the kubelet reports the container.
    pub id: Option<String>,
    /// When the current instance started running.
    pub started_at: Option<Timestamp>,
    pub init: bool,
}

impl PodInfo {
    /// Reads a Pod object. `None` for an object without a uid (never one the API server
    /// sends).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone()?;
        let name = meta.name.clone().unwrap_or_default();
        let owners: Vec<Owner<'_>> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| Owner {
                kind: &o.kind,
                name: &o.name,
                controller: o.controller.unwrap_or(false),
            })
            .collect();
        let hash = meta
            .labels
            .as_ref()
            .and_then(|l| l.get(workload::POD_TEMPLATE_HASH_LABEL))
            .map(String::as_str);
        let workload = workload::resolve(&name, &owners, hash);
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();

        let statuses = |init: bool| {
            status
                .and_then(|s| {
                    if init {
                        s.init_container_statuses.as_ref()
                    } else {
                        s.container_statuses.as_ref()
                    }
                })
                .into_iter()
                .flatten()
        };
        let mut containers = Vec::new();
        for (init, specs) in [
            (true, spec.and_then(|s| s.init_containers.as_ref())),
            (false, spec.map(|s| &s.containers)),
        ] {
            for c in specs.into_iter().flatten() {
                let reported = statuses(init).find(|s| s.name == c.name);
                containers.push(ContainerInfo {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    id: reported
                        .and_then(|s| s.container_id.as_deref())
                        .map(strip_scheme)
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned),
                    started_at: reported
                        .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                        .map(|t| t.0),
                    init,
                });
            }
        }
        Some(Self {
            uid,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name,
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            workload,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
            containers,
        })
    }

    /// The first app container's image: what the profile falls back on for a new
    /// workload.
    pub fn image(&self) -> &str {
        self.containers
            .iter()
            .find(|c| !c.init)
            .map_or("", |c| c.image.as_str())
    }

    /// When the pod's first container started running, else when the pod started.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.containers
            .iter()
            .filter_map(|c| c.started_at)
            .min()
            .or(self.start_time)
    }
}

/// `containerd://abc` → `abc`.
fn strip_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, id)| id)
}

/// The pods of this node by uid and by container id.
#[derive(Clone, Debug, Default)]
pub struct PodIndex {
    pods: HashMap<String, PodInfo>,
    /// container id → pod uid
    containers: HashMap<String, String>,
}

impl PodIndex {
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    pub fn get(&self, uid: &str) -> Option<&PodInfo> {
        self.pods.get(uid)
    }

    pub fn iter(&self) -> impl Iterator<Item = &PodInfo> {
        self.pods.values()
    }

    /// The pod and container a container id belongs to.
    pub fn by_container(&self, id: &str) -> Option<(&PodInfo, &ContainerInfo)> {
        let pod = self.pods.get(self.containers.get(id)?)?;
        let container = pod
            .containers
            .iter()
            .find(|c| c.id.as_deref() == Some(id))?;
        Some((pod, container))
    }

    /// Adds or replaces a pod.
    pub fn upsert(&mut self, pod: PodInfo) {
        self.remove(&pod.uid);
        for id in pod.containers.iter().filter_map(|c| c.id.clone()) {
            self.containers.insert(id, pod.uid.clone());
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// Removes a pod, returning what was known of it.
    pub fn remove(&mut self, uid: &str) -> Option<PodInfo> {
        let pod = self.pods.remove(uid)?;
        for id in pod.containers.iter().filter_map(|c| c.id.as_deref()) {
            if self.containers.get(id).is_some_and(|owner| owner == uid) {
                self.containers.remove(id);
            }
        }
        Some(pod)
    }

    /// Replaces the whole set (after a relist), returning the pods that are gone.
    pub fn replace_all(&mut self, pods: impl IntoIterator<Item = PodInfo>) -> Vec<PodInfo> {
        let mut old = std::mem::take(self);
        for pod in pods {
            old.remove(&pod.uid);
            self.upsert(pod);
        }
        old.pods.into_values().collect()
    }
}
