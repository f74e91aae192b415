//! The object a `*/scale` review is about. A scale review carries only an autoscaling/v1
//! `Scale` (name, replicas); the parent Deployment, StatefulSet or ReplicaSet holds what the
//! decision also reads: annotations (break-glass, a declared profile), the image (the image
//! fallback) and the strategy (an OrderedReady StatefulSet starts one pod at a time).

use std::{collections::HashMap, fmt};

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
