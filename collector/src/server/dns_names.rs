//! `GET /dns/names`: the names each workload's DNS queries asked for most on this node,
//! from the DNS tracker's bounded top-K tables (docs/dns-names.md). Names are never
//! labels of a series; this is where an operator sees what an `ndots:5` search list or
//! a chatty client makes a pod ask.
use crate::metrics::Snapshot;
pub use crate::schema::dns_names::{API_VERSION, DnsNameList, Item, KIND, Name};

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
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        items,
    }
}
