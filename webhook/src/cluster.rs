//! In-cluster inputs: the node inventory, HorizontalPodAutoscalers and the
//! ControlPlaneBudget are watched (one LIST, then WATCH, through kube-runtime's watcher
//! as [`collector::watch`] runs it for both binaries: backoff, logs once per change of
//! state, health), kept in kube-runtime reflector stores, and the budget's status
//! (current use and headroom) is written back. The admission path still reads only
//! [`State`]; these tasks replace its parts in the background.
//!
//! The webhook's own API footprint: four watches (HPAs only where `autoscaling/v2` is
//! served, FlowSchemas in the newest version served; discovery is asked again every
//! [`DISCOVERY_RECHECK`] until it is), one status patch per refresh, and a GET of the API
//! server's `/metrics` per refresh (at least 5 s apart) for `auto` request limits.

pub mod flowcontrol;

use std::{sync::Arc, time::Duration};

use collector::watch::{self, BackoffConfig, Health, Served, Watched};
use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::{autoscaling::v2::HorizontalPodAutoscaler, core::v1::Node},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        reflector::{self, Store},
        watcher,
    },
};

use crate::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    freshness,
    inventory::{Inventory, NodeGroup},
    reservation::ReservationStatus,
    workload::Autoscalers,
};

/// The RBAC that grants the webhook's watches.
pub const RBAC: &str = "deploy/webhook/rbac.yaml";
pub const NODES: Watched = Watched {
    resource: "nodes",
    api_version: "v1",
    rbac: RBAC,
};
pub const HPAS: Watched = Watched {
    resource: "horizontalpodautoscalers",
    api_version: "autoscaling/v2",
    rbac: RBAC,
};
pub const BUDGETS: Watched = Watched {
    resource: "controlplanebudgets",
    api_version: "headroom.dev/v1alpha1",
    rbac: RBAC,
};
/// How often discovery is asked again about an API that was not served.
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(5 * 60);
/// What the webhook does while `autoscaling/v2` is not served.
pub const WITHOUT_HPAS: &str =
    "projecting without HorizontalPodAutoscalers (a workload's HPA maxReplicas is not used)";

/// The health of the three watches, each counted as started: the webhook is not ready
/// until each has listed once (or, for HPAs, discovery said they are not served).
pub fn health() -> Health {
    let all = [NODES, HPAS, BUDGETS, flowcontrol::FLOWSCHEMAS];
    let health = Health::new(&all);
    for watched in all {
        health.started(watched.resource);
    }
    health
}

/// The `User-Agent` of every request the webhook makes.
pub fn user_agent() -> String {
    watch::user_agent("headroom-webhook", None)
}

/// The client `serve --kube` uses: in-cluster config or the kubeconfig, with the
/// webhook's `User-Agent`.
pub async fn client() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    client_from(config)
}

/// A client from `config` whose requests carry the webhook's `User-Agent`.
pub fn client_from(mut config: kube::Config) -> Result<Client, kube::Error> {
    // The user agent is built from the crate version: always a valid header.
    let _ = watch::prepare(&mut config, &user_agent());
    Client::try_from(config)
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

/// Keeps `events` in a reflector store and hands the store to `publish` on the first
/// complete LIST, then at most once per `every` when it changed (a node inventory of
/// thousands is not rebuilt per event).
async fn follow<K>(
    events: impl Stream<Item = watcher::Event<K>>,
    every: Duration,
    publish: impl Fn(&Store<K>),
) where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store();
    let mut events = std::pin::pin!(events);
    let (mut listed, mut dirty) = (false, false);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                writer.apply_watcher_event(&event);
                match event {
                    watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    // The first complete list is published at once: readiness and the
                    // admission path see it together.
                    watcher::Event::InitDone if !listed => {
                        publish(&store);
                        (listed, dirty) = (true, false);
                    }
                    watcher::Event::InitDone => dirty = true,
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) => dirty = true,
                }
            }
            _ = tick.tick() => {
                if dirty && listed {
                    publish(&store);
                    dirty = false;
                }
            }
        }
    }
}

/// The nodes, as the inventory needs them (status and managed fields dropped: a node's
/// status lists its images and is most of its size).
fn nodes(
    client: Client,
    health: Arc<Health>,
    backoff: BackoffConfig,
) -> impl Stream<Item = watcher::Event<Node>> {
    let config = watch::cached_list_config();
    watch::watch(
        Api::<Node>::all(client),
        config,
        NODES.resource,
        health,
        backoff,
    )
    .map(|event| {
        event.modify(|node| {
            node.status = None;
            node.metadata.managed_fields = None;
        })
    })
}

/// Watches HPAs once discovery says `autoscaling/v2` is served; until then the webhook
/// projects without them, says so once, and asks again every [`DISCOVERY_RECHECK`].
async fn autoscalers(
    client: Client,
    state: Arc<State>,
    health: Arc<Health>,
    backoff: BackoffConfig,
    every: Duration,
) {
    let mut recheck = tokio::time::interval(DISCOVERY_RECHECK);
    loop {
        recheck.tick().await;
        match watch::served(&client, &HPAS).await {
            Served::No => health.not_served(HPAS.resource, WITHOUT_HPAS),
            Served::Yes => break,
            // The watch's own errors say what is wrong.
            Served::Unknown(error) => {
                tracing::debug!(%error, "discovery of autoscaling/v2 failed; watching anyway");
                break;
            }
        }
    }
    health.started(HPAS.resource);
    let api = Api::<HorizontalPodAutoscaler>::all(client);
    let events = watch::watch(
        api,
        watch::cached_list_config(),
        HPAS.resource,
        health,
        backoff,
    );
    follow(events, every, move |store| {
        let mut autoscalers = Autoscalers::default();
        for hpa in store.state() {
            autoscalers.insert(&hpa);
        }
        state.set_autoscalers(autoscalers);
    })
    .await;
}

/// Starts the watches and the status writer; runs until the process ends. `health` is
/// the one [`health`] made and the state's readiness reads.
pub async fn run(
    client: Client,
    state: Arc<State>,
    health: Arc<Health>,
    budget_name: String,
    every: Duration,
    backoff: BackoffConfig,
) {
    state.set_parents(Arc::new(crate::parents::Reflected::spawn(&client, backoff)));
    let nodes_state = state.clone();
    tokio::spawn(follow(
        nodes(client.clone(), health.clone(), backoff),
        every,
        move |store| {
            let inventory = Inventory {
                groups: store.state().iter().map(|n| node_group(n)).collect(),
            };
            tracing::debug!(nodes = inventory.total(), "node inventory updated");
            nodes_state.set_inventory(inventory);
            nodes_state.inventory_listed();
        },
    ));
    tokio::spawn(autoscalers(
        client.clone(),
        state.clone(),
        health.clone(),
        backoff,
        every,
    ));
    tokio::spawn(flowcontrol::run(
        client.clone(),
        state.clone(),
        health.clone(),
        backoff,
    ));
    tokio::spawn(crate::sources::apiserver::run(
        client.clone(),
        state.clone(),
        every,
    ));
    let budget_state = state.clone();
    let name = budget_name.clone();
    let budgets = Api::<ControlPlaneBudget>::all(client.clone());
    tokio::spawn(follow(
        watch::watch(
            budgets,
            watch::cached_list_config(),
            BUDGETS.resource,
            health,
            backoff,
        ),
        every,
        move |store| {
            let Some(budget) = store.find(|b| b.name_any() == name) else {
                tracing::error!(budget = %name, "ControlPlaneBudget not found; keeping the last one");
                return;
            };
            match budget.spec.validate(&format!("ControlPlaneBudget {name}")) {
                Ok(()) => budget_state.set_budget(Budget::from((*budget).clone())),
                Err(e) => tracing::error!(error = %e, "invalid budget; keeping the last one"),
            }
            // What every replica admitted and the data does not show yet.
            if let Some(status) = &budget.status {
                budget_state.merge_reservations(
                    status
                        .reservations
                        .iter()
                        .filter_map(ReservationStatus::reservation),
                );
            }
        },
    ));
    write_status(
        Api::<ControlPlaneBudget>::all(client),
        &state,
        &budget_name,
        every,
        backoff,
    )
    .await;
}

/// Patches the budget's status every `every` from the profile data; a failure is logged
/// when it starts or changes (and its end), not on every refresh, and the next attempt
/// waits out the watches' backoff (1 s doubling to 30 s, to 300 s while refused), so a
/// missing RBAC grant costs ~10 PATCHes in ten minutes, not one per refresh.
async fn write_status(
    budgets: Api<ControlPlaneBudget>,
    state: &State,
    name: &str,
    every: Duration,
    backoff: BackoffConfig,
) {
    use kube::runtime::utils::Backoff as _;
    let mut tick = tokio::time::interval(every);
    let gate = Arc::new(watch::backoff::Gate::default());
    let mut steps =
        watch::backoff::GatedBackoff::new(backoff, gate.clone(), watch::backoff::Jitter::new());
    let mut not_before = tokio::time::Instant::now();
    // While failing: the HTTP status of the last failure, if the API server answered.
    let mut failing: Option<Option<u16>> = None;
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() < not_before {
            continue;
        }
        let Some(data) = state.data() else { continue };
        let mut status = freshness::status(
            &state.budget().spec,
            &data.snapshot,
            &state.inventory(),
            std::time::SystemTime::now(),
        );
        // Data that does not say when it was measured: when it was fetched.
        status
            .observed_at
            .get_or_insert_with(|| rfc3339(data.fetched_at));
        status.apiserver_capacity = state.apiserver.current().map(|capacity| {
            crate::capacity::status::status(
                &capacity,
                &state.budget().spec.limits,
                std::time::SystemTime::now(),
            )
        });
        let patch = Patch::Merge(serde_json::json!({ "status": status }));
        match budgets
            .patch_status(name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => {
                gate.progressed();
                steps.reset();
                if failing.take().is_some() {
                    tracing::info!(budget = %name, "writing the budget status works again");
                }
            }
            Err(e) => {
                let code = match &e {
                    kube::Error::Api(status) => Some(status.code),
                    _ => None,
                };
                gate.failed(matches!(code, Some(401 | 403 | 404)));
                let wait = steps.next().unwrap_or(backoff.max_refused);
                not_before = tokio::time::Instant::now() + wait;
                if failing != Some(code) {
                    tracing::warn!(
                        budget = %name,
                        error = %e,
                        "writing the budget status failed (it needs patch on \
                         controlplanebudgets/status: see {RBAC}); retrying with backoff"
                    );
                }
                failing = Some(code);
            }
        }
    }
}

/// Reads the named budget once at start-up.
pub async fn fetch_budget(client: Client, name: &str) -> Result<ControlPlaneBudget, kube::Error> {
    Api::<ControlPlaneBudget>::all(client).get(name).await
}

/// `2026-11-22T05:00:00Z` from a system time (UTC, whole seconds).
pub fn rfc3339(time: std::time::SystemTime) -> String {
    let t = Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH);
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

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
