//! The pods of this node: a cache kept from ONE watch (`spec.nodeName=<node>`), with
//! deleted pods held for a grace period so their series keep their names until they
//! are dropped.
use std::{
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, runtime::watcher};

use super::{Health, Resource, gone::GoneSince};
use crate::{
    identity::{PodIndex, PodInfo},
    watch::{self, BackoffConfig},
};

/// The pods of this node as last seen, plus the deleted ones still in their grace.
#[derive(Clone, Debug)]
pub struct PodCache {
    index: PodIndex,
    gone: GoneSince<String>,
    synced: bool,
}

impl PodCache {
    pub fn new(grace: Duration) -> Self {
        Self {
            index: PodIndex::default(),
            gone: GoneSince::new(grace),
            synced: false,
        }
    }

    /// Pods to name cgroups with (deleted ones in their grace included).
    pub fn index(&self) -> &PodIndex {
        &self.index
    }

    /// Whether a full list has arrived since start.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether pod `uid` was deleted and awaits expiry.
    pub fn is_gone(&self, uid: &str) -> bool {
        self.gone.is_gone(&uid.to_owned())
    }

    /// A pod was added or changed.
    pub fn apply(&mut self, pod: PodInfo) {
        self.gone.back(&pod.uid);
        self.index.upsert(pod);
    }

    /// A pod was deleted: keep naming it until the grace period ends.
    pub fn delete(&mut self, uid: &str, now: Instant) {
        if self.index.get(uid).is_some() {
            self.gone.mark(uid.to_owned(), now);
        }
    }

    /// A full (re)list: listed pods are current, the others are deleted now.
    pub fn relisted(&mut self, pods: Vec<PodInfo>, now: Instant) {
        let listed: std::collections::HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let missing: Vec<String> = self
            .index
            .iter()
            .filter(|p| !listed.contains(p.uid.as_str()))
            .map(|p| p.uid.clone())
            .collect();
        for uid in missing {
            self.delete(&uid, now);
        }
        for pod in pods {
            self.apply(pod);
        }
        self.synced = true;
    }

    /// Drops the pods deleted at least the grace period ago and returns them, so the
    /// caller can drop their series.
    pub fn sweep(&mut self, now: Instant) -> Vec<PodInfo> {
        self.gone
            .expire(now)
            .iter()
            .filter_map(|uid| self.index.remove(uid))
            .collect()
    }
}

/// The cache as the watch task and the naming code share it.
#[derive(Clone, Debug)]
pub struct SharedPods(Arc<RwLock<PodCache>>);

impl SharedPods {
    pub fn new(grace: Duration) -> Self {
        Self(Arc::new(RwLock::new(PodCache::new(grace))))
    }

    /// Read access; hold it only to name a batch of cgroups (never across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, PodCache> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut PodCache) -> T) -> T {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// See [`PodCache::sweep`].
    pub fn sweep(&self, now: Instant) -> Vec<PodInfo> {
        self.update(|cache| cache.sweep(now))
    }
}

/// The field selector of this node's pods.
pub fn node_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Watches this node's pods into `pods` until dropped. Lists come from the API server's
/// watch cache (`resourceVersion=0`); a 410 Gone relists this node's pods only; errors
/// back off as [`watch::watch`] does.
pub async fn watch(
    api: Api<Pod>,
    node: String,
    pods: SharedPods,
    backoff: BackoffConfig,
    health: Arc<Health>,
) {
    let config = watch::cached_list_config().fields(&node_selector(&node));
    let events = watch::watch(api, config, Resource::Pods.name(), health, backoff);
    let mut events = std::pin::pin!(events);
    let mut listing: Vec<PodInfo> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(pod) => listing.extend(PodInfo::from_pod(&pod)),
            watcher::Event::InitDone => {
                let listed = std::mem::take(&mut listing);
                pods.update(|cache| cache.relisted(listed, Instant::now()));
            }
            watcher::Event::Apply(pod) => {
                if let Some(info) = PodInfo::from_pod(&pod) {
                    pods.update(|cache| cache.apply(info));
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(uid) = pod.metadata.uid.as_deref() {
                    pods.update(|cache| cache.delete(uid, Instant::now()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Workload;

    fn pod(uid: &str, name: &str) -> PodInfo {
        PodInfo {
            uid: uid.into(),
            namespace: "default".into(),
            name: name.into(),
            node: "node-a".into(),
            workload: Workload {
                kind: "Pod".into(),
                name: name.into(),
            },
            host_network: false,
            start_time: None,
            containers: Vec::new(),
        }
    }

    #[test]
    fn deleted_pods_keep_their_names_for_the_grace_period() {
        let t0 = Instant::now();
        let mut cache = PodCache::new(Duration::from_secs(300));
        cache.relisted(vec![pod("u1", "a"), pod("u2", "b")], t0);
        assert!(cache.is_synced());
        cache.delete("u1", t0);
        assert!(cache.index().get("u1").is_some());
        assert!(cache.sweep(t0 + Duration::from_secs(299)).is_empty());
        let swept = cache.sweep(t0 + Duration::from_secs(300));
        assert_eq!(
            swept.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert!(cache.index().get("u1").is_none());
        assert_eq!(cache.index().len(), 1);
    }

    #[test]
    fn relist_marks_missing_pods_gone_and_revives_listed_ones() {
        let t0 = Instant::now();
        let mut cache = PodCache::new(Duration::from_secs(300));
        cache.relisted(vec![pod("u1", "a"), pod("u2", "b")], t0);
        cache.delete("u2", t0);
        // After an outage: u1 is gone, u2 is listed (it exists after all: a pod
        // recreated with the same uid cannot happen, but a stale delete can), u3 is new.
        cache.relisted(
            vec![pod("u2", "b"), pod("u3", "c")],
            t0 + Duration::from_secs(10),
        );
        assert!(cache.is_gone("u1"));
        assert!(!cache.is_gone("u2"));
        let swept = cache.sweep(t0 + Duration::from_secs(400));
        assert_eq!(
            swept.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(cache.index().len(), 2);
    }

    #[test]
    fn deleting_an_unknown_pod_does_nothing() {
        let mut cache = PodCache::new(Duration::from_secs(1));
        cache.delete("nope", Instant::now());
        assert!(!cache.is_gone("nope"));
    }

    #[test]
    fn selector_names_the_node() {
        assert_eq!(node_selector("node-a"), "spec.nodeName=node-a");
    }
}
