//! The FlowSchemas (`flowcontrol.apiserver.k8s.io`) that place a workload's service
//! account in a priority level, watched in the newest version the server serves (1.20:
//! v1beta1; today: v1), found through discovery and asked again every
//! [`super::DISCOVERY_RECHECK`] while none is. The objects are read in the shape every
//! version shares ([`crate::capacity::flowschema`]). The levels' seats come from the
//! API server's metrics (an exempt level reports none), so PriorityLevelConfigurations
//! need no watch.

use std::{collections::BTreeMap, sync::Arc};

use collector::watch::{self, BackoffConfig, Health, Served, Watched};
use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::watcher,
};

use super::{DISCOVERY_RECHECK, RBAC};
use crate::{admission::State, capacity::FlowSchema};

pub const GROUP: &str = "flowcontrol.apiserver.k8s.io";
pub const FLOWSCHEMAS: Watched = Watched {
    resource: "flowschemas",
    api_version: "flowcontrol.apiserver.k8s.io/v1",
    rbac: RBAC,
};
/// Newest first: the first one served is watched.
const VERSIONS: [&str; 5] = [
    "flowcontrol.apiserver.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1beta3",
    "flowcontrol.apiserver.k8s.io/v1beta2",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1alpha1",
];
/// What the webhook does while no version is served.
pub const WITHOUT_FLOW_SCHEMAS: &str = "`apiserverRequestsPerSecond: auto` cannot place a \
                                        workload in a priority level: such changes fail open";

/// The newest served version, `Err` with discovery's error when it could not say.
async fn served_version(client: &Client) -> Result<Option<&'static str>, String> {
    for api_version in VERSIONS {
        let watched = Watched {
            api_version,
            ..FLOWSCHEMAS
        };
        match watch::served(client, &watched).await {
            Served::Yes => return Ok(Some(api_version)),
            Served::No => {}
            Served::Unknown(error) => return Err(error),
        }
    }
    Ok(None)
}

/// Watches the FlowSchemas and hands every complete set to the state's capacity store.
pub async fn run(client: Client, state: Arc<State>, health: Arc<Health>, backoff: BackoffConfig) {
    let mut recheck = tokio::time::interval(DISCOVERY_RECHECK);
    let api_version = loop {
        recheck.tick().await;
        match served_version(&client).await {
            Ok(Some(version)) => break version,
            Ok(None) => health.not_served(FLOWSCHEMAS.resource, WITHOUT_FLOW_SCHEMAS),
            // The watch's own errors will say what is wrong.
            Err(error) => {
                tracing::debug!(%error, "discovery of flowcontrol failed; watching v1");
                break FLOWSCHEMAS.api_version;
            }
        }
    };
    let version = api_version.rsplit_once('/').map_or("v1", |(_, v)| v);
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, version, "FlowSchema"),
        FLOWSCHEMAS.resource,
    );
    tracing::info!(api_version, "watching FlowSchemas");
    let events = watch::watch(
        Api::<DynamicObject>::all_with(client, &resource),
        watch::cached_list_config(),
        FLOWSCHEMAS.resource,
        health,
        backoff,
    );
    let mut events = std::pin::pin!(events);
    let (mut listing, mut current) = (BTreeMap::new(), BTreeMap::new());
    while let Some(event) = events.next().await {
        // A relist replaces the set only once complete.
        let changed = match event {
            watcher::Event::Init => {
                listing.clear();
                false
            }
            watcher::Event::InitApply(object) => {
                insert(&mut listing, &object);
                false
            }
            watcher::Event::InitDone => {
                current = std::mem::take(&mut listing);
                true
            }
            watcher::Event::Apply(object) => {
                insert(&mut current, &object);
                true
            }
            watcher::Event::Delete(object) => current.remove(&object.name_any()).is_some(),
        };
        if changed {
            state
                .apiserver
                .set_flow_schemas(current.values().cloned().collect());
        }
    }
}

fn insert(into: &mut BTreeMap<String, FlowSchema>, object: &DynamicObject) {
    let parsed = serde_json::to_value(object).and_then(serde_json::from_value::<FlowSchema>);
    match parsed {
        Ok(schema) => {
            into.insert(object.name_any(), schema);
        }
        Err(error) => {
            tracing::warn!(flowschema = %object.name_any(), %error, "FlowSchema not understood; left out");
        }
    }
}
