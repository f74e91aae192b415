//! In-cluster inputs: the node inventory, HorizontalPodAutoscalers and the
//! ControlPlaneBudget are watched (one LIST, then WATCH, through kube-runtime's watcher),
//! and the budget's status (current use and headroom) is written back. The admission path
//! still reads only [`State`]; these tasks replace its parts in the background.
//!
//! The webhook's own API footprint: three watches and one status patch per refresh.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::Node};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;

use crate::{
    admission::{Budget, State},
    budget::{ControlPlaneBudget, ControlPlaneBudgetStatus},
    inventory::{Inventory, NodeGroup},
    workload::Autoscalers,
};

/// A map of the watched objects (projected to what the webhook needs), kept from watcher
/// events. A restarted watch (`Init` … `InitDone`) replaces the map only once complete.
#[derive(Debug)]
pub struct Mirror<T> {
    live: BTreeMap<String, T>,
    relisting: Option<BTreeMap<String, T>>,
    /// Whether `live` holds a complete list (the first `InitDone` has been seen).
    ready: bool,
}

impl<T> Default for Mirror<T> {
    fn default() -> Self {
        Mirror {
            live: BTreeMap::new(),
            relisting: None,
            ready: false,
        }
    }
}

impl<T> Mirror<T> {
    /// Applies one event; returns whether `live` changed.
    pub fn apply<K: Resource>(
        &mut self,
        event: watcher::Event<K>,
        project: impl Fn(&K) -> T,
    ) -> bool {
        let key = |k: &K| {
            format!(
                "{}/{}",
                k.meta().namespace.as_deref().unwrap_or(""),
                k.meta().name.as_deref().unwrap_or("")
            )
        };
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(k) => {
                let value = project(&k);
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(key(&k), value);
                false
            }
            watcher::Event::InitDone => {
                if let Some(complete) = self.relisting.take() {
                    self.live = complete;
                }
                self.ready = true;
                true
            }
            watcher::Event::Apply(k) => {
                let value = project(&k);
                self.live.insert(key(&k), value);
                true
            }
            watcher::Event::Delete(k) => self.live.remove(&key(&k)).is_some(),
        }
    }

    pub fn ready(&self) -> bool {
        self.ready
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.live.values()
    }
}

fn node_group(node: &Node) -> NodeGroup {
    NodeGroup {
        name: node.name_any(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints: node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default(),
        count: 1,
    }
}

/// Watches `api`, keeps a [`Mirror`] and hands it to `publish` at most once per `every`
/// when it changed (a node inventory of thousands is not rebuilt per event).
async fn watch_into<K, T>(
    api: Api<K>,
    every: Duration,
    project: impl Fn(&K) -> T + Send + 'static,
    publish: impl Fn(&Mirror<T>) + Send + 'static,
) where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + 'static,
{
    let kind = std::any::type_name::<K>();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut mirror = Mirror::default();
    let mut dirty = false;
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => dirty |= mirror.apply(event, &project),
                Some(Err(e)) => tracing::warn!(kind, error = %e, "watch error; retrying"),
                None => return,
            },
            _ = tick.tick() => {
                if dirty && mirror.ready() {
                    publish(&mirror);
                    dirty = false;
                }
            }
        }
    }
}

/// Starts the watches and the status writer; runs until the process ends.
pub async fn run(client: Client, state: Arc<State>, budget_name: String, every: Duration) {
    let nodes_state = state.clone();
    tokio::spawn(watch_into(
        Api::<Node>::all(client.clone()),
        every,
        node_group,
        move |mirror| {
            let inventory = Inventory {
                groups: mirror.values().cloned().collect(),
            };
            tracing::debug!(nodes = inventory.total(), "node inventory updated");
            nodes_state.set_inventory(inventory);
        },
    ));
    let hpa_state = state.clone();
    tokio::spawn(watch_into(
        Api::<HorizontalPodAutoscaler>::all(client.clone()),
        every,
        Clone::clone,
        move |mirror| {
            let mut autoscalers = Autoscalers::default();
            for hpa in mirror.values() {
                autoscalers.insert(hpa);
            }
            hpa_state.set_autoscalers(autoscalers);
        },
    ));
    let budget_state = state.clone();
    let name = budget_name.clone();
    tokio::spawn(watch_into(
        Api::<ControlPlaneBudget>::all(client.clone()),
        every,
        Clone::clone,
        move |mirror| {
            let Some(budget) = mirror.values().find(|b| b.name_any() == name) else {
                tracing::error!(budget = %name, "ControlPlaneBudget not found; keeping the last one");
                return;
            };
            match budget.spec.validate(&format!("ControlPlaneBudget {name}")) {
                Ok(()) => budget_state.set_budget(Budget::from(budget.clone())),
                Err(e) => tracing::error!(error = %e, "invalid budget; keeping the last one"),
            }
        },
    ));

    let budgets = Api::<ControlPlaneBudget>::all(client);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(data) = state.data() else { continue };
        let mut status =
            ControlPlaneBudgetStatus::compute(&state.budget().spec, data.snapshot.totals);
        status.observed_at = Some(rfc3339(data.fetched_at));
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        if let Err(e) = budgets
            .patch_status(&budget_name, &PatchParams::default(), &patch)
            .await
        {
            tracing::warn!(error = %e, "writing the budget status failed");
        }
    }
}

/// Reads the named budget once at start-up.
pub async fn fetch_budget(client: Client, name: &str) -> Result<ControlPlaneBudget, kube::Error> {
    Api::<ControlPlaneBudget>::all(client).get(name).await
}

/// `2026-11-22T05:00:00Z` from a system time (UTC, whole seconds).
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, pool: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some([("pool".to_owned(), pool.to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Node::default()
        }
    }

    fn pools(m: &Mirror<NodeGroup>) -> Vec<String> {
        m.values()
            .map(|g| format!("{}={}", g.name, g.labels["pool"]))
            .collect()
    }

    #[test]
    fn mirror_publishes_only_complete_lists() {
        let mut m = Mirror::default();
        assert!(!m.apply(watcher::Event::Init, node_group));
        assert!(!m.apply(watcher::Event::InitApply(node("a", "x")), node_group));
        assert!(!m.ready(), "not complete before InitDone");
        assert!(m.apply(watcher::Event::<Node>::InitDone, node_group));
        assert!(m.ready());
        assert_eq!(pools(&m), ["a=x"]);

        assert!(m.apply(watcher::Event::Apply(node("b", "y")), node_group));
        assert!(m.apply(watcher::Event::Apply(node("a", "z")), node_group));
        assert_eq!(pools(&m), ["a=z", "b=y"]);
        assert!(m.apply(watcher::Event::Delete(node("b", "y")), node_group));
        assert!(!m.apply(watcher::Event::Delete(node("gone", "y")), node_group));

        // A restarted watch replaces the map once its list is complete.
        m.apply(watcher::Event::Init, node_group);
        m.apply(watcher::Event::InitApply(node("c", "x")), node_group);
        assert_eq!(pools(&m), ["a=z"], "the old map serves until InitDone");
        m.apply(watcher::Event::<Node>::InitDone, node_group);
        assert_eq!(pools(&m), ["c=x"]);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_323_600)),
            "2026-11-22T05:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
