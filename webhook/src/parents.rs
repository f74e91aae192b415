//! The object a `*/scale` review is about. A scale review carries only an autoscaling/v1
//! `Scale` (name, replicas); the parent Deployment, StatefulSet or ReplicaSet holds what the
//! decision also reads: annotations (break-glass, a declared profile), the image (the image
//! fallback) and the strategy (an OrderedReady StatefulSet starts one pod at a time).

use std::{collections::HashMap, fmt, sync::Arc};

use collector::watch::{self, BackoffConfig, Health, Watched};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use kube::{
    Api, Client, Resource,
    runtime::reflector::{self, ObjectRef, Store},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::workload::{Kind, Workload};

/// Finds the parent of a `scale` subresource, as the webhook reads it.
pub trait ParentLookup: fmt::Debug + Send + Sync {
    /// The `kind` object `namespace/name`, or `None` when it is not known.
    fn parent(&self, kind: Kind, namespace: &str, name: &str) -> Option<Workload>;
}

/// Standalone: there is no cluster to read parents from.
#[derive(Debug, Default)]
pub struct NoParents;

impl ParentLookup for NoParents {
    fn parent(&self, _: Kind, _: &str, _: &str) -> Option<Workload> {
        None
    }
}

/// Parents held in memory, by kind, namespace and name.
#[derive(Debug, Default)]
pub struct Objects {
    objects: HashMap<(Kind, String, String), Workload>,
}

impl Objects {
    pub fn insert(&mut self, workload: Workload) {
        let r = &workload.reference;
        let key = (workload.kind, r.namespace.clone(), r.name.clone());
        self.objects.insert(key, workload);
    }
}

impl ParentLookup for Objects {
    fn parent(&self, kind: Kind, namespace: &str, name: &str) -> Option<Workload> {
        self.objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

/// Parents from the cluster: one reflector store per kind, each fed by the watch every
/// Headroom binary runs ([`collector::watch`]: one LIST from the watch cache, then WATCH,
/// backoff, failures logged once per change of state with what to do). Status and
/// managedFields are dropped before they are stored: the webhook reads metadata and spec.
///
/// These watches do not gate readiness: without a parent a scale review is still judged
/// (from the Scale, with a warning), as in standalone mode.
#[derive(Clone)]
pub struct Reflected {
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    replicasets: Store<ReplicaSet>,
    pub health: Arc<Health>,
}

pub const DEPLOYMENTS: Watched = Watched {
    resource: "deployments",
    api_version: "apps/v1",
    rbac: crate::cluster::RBAC,
};
pub const STATEFULSETS: Watched = Watched {
    resource: "statefulsets",
    api_version: "apps/v1",
    rbac: crate::cluster::RBAC,
};
pub const REPLICASETS: Watched = Watched {
    resource: "replicasets",
    api_version: "apps/v1",
    rbac: crate::cluster::RBAC,
};

impl fmt::Debug for Reflected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflected")
            .field("deployments", &self.deployments.state().len())
            .field("statefulsets", &self.statefulsets.state().len())
            .field("replicasets", &self.replicasets.state().len())
            .finish()
    }
}

impl Reflected {
    /// Starts the three watches in the background; lookups answer from what has arrived.
    pub fn spawn(client: &Client, backoff: BackoffConfig) -> Reflected {
        let health = Arc::new(Health::new(&[DEPLOYMENTS, STATEFULSETS, REPLICASETS]));
        let start = |resource| (client.clone(), resource, health.clone(), backoff);
        Reflected {
            deployments: reflect(start(DEPLOYMENTS.resource), |d: &mut Deployment| {
                d.status = None;
            }),
            statefulsets: reflect(start(STATEFULSETS.resource), |s: &mut StatefulSet| {
                s.status = None;
            }),
            replicasets: reflect(start(REPLICASETS.resource), |r: &mut ReplicaSet| {
                r.status = None;
            }),
            health,
        }
    }
}

fn reflect<K>(
    (client, resource, health, backoff): (Client, &'static str, Arc<Health>, BackoffConfig),
    trim: impl Fn(&mut K) + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let (store, mut writer) = reflector::store();
    let events = watch::watch(
        Api::<K>::all(client),
        watch::cached_list_config(),
        resource,
        health,
        backoff,
    );
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = event.modify(|k| {
                k.meta_mut().managed_fields = None;
                trim(k);
            });
            writer.apply_watcher_event(&event);
        }
    });
    store
}

fn read<K: Serialize>(kind: Kind, object: &K) -> Option<Workload> {
    let value = serde_json::to_value(object).ok()?;
    Workload::from_value(kind, "parent", value).ok()
}

impl ParentLookup for Reflected {
    fn parent(&self, kind: Kind, namespace: &str, name: &str) -> Option<Workload> {
        match kind {
            Kind::Deployment => {
                let key = ObjectRef::new(name).within(namespace);
                read(kind, &*self.deployments.get(&key)?)
            }
            Kind::StatefulSet => {
                let key = ObjectRef::new(name).within(namespace);
                read(kind, &*self.statefulsets.get(&key)?)
            }
            Kind::ReplicaSet => {
                let key = ObjectRef::new(name).within(namespace);
                read(kind, &*self.replicasets.get(&key)?)
            }
            Kind::DaemonSet | Kind::Job | Kind::CronJob => None,
        }
    }
}
