//! The object a `*/scale` review is about. A scale review carries only an autoscaling/v1
//! `Scale` (name, replicas); the parent Deployment, StatefulSet or ReplicaSet holds what the
//! decision also reads: annotations (break-glass, a declared profile), the image (the image
//! fallback) and the strategy (an OrderedReady StatefulSet starts one pod at a time).

use std::{collections::HashMap, fmt};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
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

/// Parents from the cluster: one reflector store per kind, each fed by a watch (one LIST,
/// then WATCH, with kube-runtime's backoff). Status and managedFields are dropped before
/// they are stored: the webhook reads metadata and spec only.
#[derive(Clone)]
pub struct Reflected {
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    replicasets: Store<ReplicaSet>,
}

impl fmt::Debug for Reflected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflected")
            .field("deployments", &self.deployments.len())
            .field("statefulsets", &self.statefulsets.len())
            .field("replicasets", &self.replicasets.len())
            .finish()
    }
}

impl Reflected {
    /// Starts the three watches in the background; lookups answer from what has arrived.
    pub fn spawn(client: &Client) -> Reflected {
        Reflected {
            deployments: reflect(Api::all(client.clone()), |d: &mut Deployment| {
                d.status = None;
            }),
            statefulsets: reflect(Api::all(client.clone()), |s: &mut StatefulSet| {
                s.status = None;
            }),
            replicasets: reflect(Api::all(client.clone()), |r: &mut ReplicaSet| {
                r.status = None;
            }),
        }
    }
}

fn reflect<K>(api: Api<K>, trim: impl Fn(&mut K) + Send + 'static) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(move |k: &mut K| {
            k.managed_fields_mut().clear();
            trim(k);
        })
        .reflect(writer);
    let kind = K::kind(&());
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        let mut failing = false;
        while let Some(event) = events.next().await {
            // Logged once per change of state, not once per retry.
            match event {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(%kind, error = %e, "parent watch failing; retrying");
                }
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!(%kind, "parent watch recovered");
                }
                _ => {}
            }
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
