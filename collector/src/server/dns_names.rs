//! `GET /dns/names`: the names each workload's DNS queries asked for most on this node,
//! from the DNS tracker's bounded top-K tables (docs/dns-names.md). Names are never
//! labels of a series; this is where an operator sees what an `ndots:5` search list or
//! a chatty client makes a pod ask.
use serde::Serialize;

use crate::metrics::Snapshot;

pub const API_VERSION: &str = "headroom.dev/v1alpha1";
pub const KIND: &str = "DnsNameList";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsNameList {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub items: Vec<Item>,
}

/// One identity (a pod's container, or a node process) and its most asked names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub pod: String,
    pub container: String,
    pub names: Vec<Name>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    pub name: String,
    /// Queries for the name: at least the true count, at most `error` more.
    pub queries: u64,
    pub error: u64,
}

/// The list for `snapshot`, identities in label order, names most asked first.
pub fn list(snapshot: &Snapshot) -> DnsNameList {
    let items = snapshot
        .dns_names
        .iter()
        .map(|(id, names)| Item {
            namespace: id.namespace.clone(),
            workload_kind: id.workload_kind.clone(),
            workload: id.workload.clone(),
            pod: id.pod.clone(),
            container: id.container.clone(),
            names: names
                .iter()
                .map(|n| Name {
                    name: n.name.clone(),
                    queries: n.count,
                    error: n.error,
                })
                .collect(),
        })
        .collect();
    DnsNameList {
        api_version: API_VERSION,
        kind: KIND,
        items,
    }
}
