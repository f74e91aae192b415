//! Counters of retired cgroups, carried over to the identities they share with cgroups
//! still measured. An identity can sum several cgroups: node processes are named by
//! their scope's command (every cron run of `kubectl` is `node/kubectl`), and a
//! StatefulSet's recreated pod has the old one's name. Dropping one of them must not
//! make the identity's counters go down, which Prometheus would read as a reset (and
//! count everything again). So its counts stay, added to the identity's, for as long as
//! the identity is measured at all; once none of its cgroups is left, its series end.
use std::collections::BTreeMap;

use crate::metrics::{ApiServerStats, DnsStats, Identity, WorkloadStats};

#[derive(Debug, Default)]
pub struct Carried(BTreeMap<Identity, WorkloadStats>);

impl Carried {
    /// Takes in the last counts of cgroups retired this tick, per identity.
    pub fn retire(&mut self, retired: BTreeMap<Identity, WorkloadStats>) {
        for (identity, stats) in retired {
            add_counters(self.0.entry(identity).or_default(), &stats);
        }
    }

    /// Adds what is carried to the identities still measured in `live`, and forgets what
    /// was carried for the others: their series end here.
    pub fn apply(&mut self, live: &mut BTreeMap<Identity, WorkloadStats>) {
        self.0
            .retain(|identity, carried| match live.get_mut(identity) {
                Some(stats) => {
                    add_counters(stats, carried);
                    true
                }
                None => false,
            });
    }

    /// Identities with counts carried.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Adds the counters of `from` to `into`. Gauges (open streams and connections) are
/// left alone: what is open belongs to cgroups still measured.
fn add_counters(into: &mut WorkloadStats, from: &WorkloadStats) {
    if let Some(api) = &from.apiserver {
        let ApiServerStats {
            requests,
            connections,
            sent_bytes,
            received_bytes,
            open_streams: _,
            open_connections: _,
        } = *api;
        let into = into.apiserver();
        into.requests += requests;
        into.connections += connections;
        into.sent_bytes += sent_bytes;
        into.received_bytes += received_bytes;
    }
    if let Some(dns) = &from.dns {
        let DnsStats {
            queries,
            responses,
            lookups,
            search_expansions,
            duration,
        } = dns;
        let into = into.dns();
        for (qtype, n) in queries {
            into.add_queries(qtype.clone(), *n);
        }
        for (rcode, n) in responses {
            into.add_responses(rcode.clone(), *n);
        }
        into.lookups += lookups;
        into.search_expansions += search_expansions;
        into.duration.merge(duration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Snapshot;

    fn api(requests: u64, open_streams: u64) -> WorkloadStats {
        WorkloadStats {
            apiserver: Some(ApiServerStats {
                requests,
                connections: 1,
                sent_bytes: 100,
                received_bytes: 1000,
                open_streams,
                open_connections: open_streams,
            }),
            dns: None,
        }
    }

    #[test]
    fn an_identity_keeps_the_counts_of_its_retired_cgroups() {
        let kubectl = Identity::node_process("kubectl");
        let once = Identity::node_process("cgroup-7");
        let mut carried = Carried::default();
        let mut retired = Snapshot::default();
        *retired.workload(kubectl.clone()) = api(10, 1);
        retired.workload(kubectl.clone()).dns().add_queries("A", 2);
        *retired.workload(once.clone()) = api(5, 0);
        carried.retire(retired.workloads);

        // The next cron run of kubectl is measured; cgroup-7 had only itself.
        let mut live = Snapshot::default();
        *live.workload(kubectl.clone()) = api(3, 1);
        carried.apply(&mut live.workloads);
        let got = &live.workloads[&kubectl];
        assert_eq!(
            got.apiserver,
            Some(ApiServerStats {
                requests: 13,
                connections: 2,
                sent_bytes: 200,
                received_bytes: 2000,
                open_streams: 1,
                open_connections: 1,
            }),
            "counters add up, gauges are the live cgroup's"
        );
        assert_eq!(
            got.dns.as_ref().map(|d| d.queries.clone()),
            Some(BTreeMap::from([("A".to_string(), 2)]))
        );
        assert!(!live.workloads.contains_key(&once), "its series ended");
        assert_eq!(carried.len(), 1);

        // Carried again next tick, until the identity is measured no more.
        let mut live = Snapshot::default();
        *live.workload(kubectl.clone()) = api(4, 0);
        carried.apply(&mut live.workloads);
        assert_eq!(
            live.workloads[&kubectl].apiserver.map(|a| a.requests),
            Some(14)
        );
        carried.apply(&mut Snapshot::default().workloads);
        assert!(carried.is_empty());
    }
}
