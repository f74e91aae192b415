//! The Prometheus recording rules the webhook reads at scale. A later issue ships rules
//! with exactly these names; change both together.
//!
//! Cluster totals (no labels), 5-minute rates:
//! - `headroom:cluster_apiserver_requests:rate5m`
//! - `headroom:cluster_apiserver_received_bytes:rate5m`
//! - `headroom:cluster_apiserver_connections:rate5m`
//! - `headroom:cluster_dns_queries:rate5m`
//!
//! Per workload (labels `namespace`, `workload_kind`, `workload`, optional `image`):
//! - steady, per pod, p95 over pods of each pod's 5-minute rate:
//!   `headroom:workload_pod_apiserver_requests:p95_rate5m`,
//!   `headroom:workload_pod_apiserver_received_bytes:p95_rate5m`,
//!   `headroom:workload_pod_apiserver_connections:p95_rate5m`,
//!   `headroom:workload_pod_dns_queries:p95_rate5m`
//! - startup, per pod, p95 over pods started in the window of the first minute's rate:
//!   `headroom:workload_pod_startup_apiserver_requests:p95_rate1m`,
//!   `headroom:workload_pod_startup_apiserver_received_bytes:p95_rate1m`,
//!   `headroom:workload_pod_startup_apiserver_connections:p95_rate1m`,
//!   `headroom:workload_pod_startup_dns_queries:p95_rate1m`
//! - current, all the workload's pods together now:
//!   `headroom:workload_apiserver_requests:rate5m`,
//!   `headroom:workload_apiserver_received_bytes:rate5m`,
//!   `headroom:workload_apiserver_connections:rate5m`,
//!   `headroom:workload_dns_queries:rate5m`
//! - what the figures rest on: `headroom:workload_pods:count` (pods measured) and
//!   `headroom:workload_measured_minutes:max`.
//! - the workload's images (label `image`), each valued at the newest start of a pod
//!   running it, the highest being the workload's image:
//!   `headroom:workload_image:newest_start_time`.

use crate::load::Dimension;

/// The slug of a dimension in rule names.
fn slug(d: Dimension) -> &'static str {
    match d {
        Dimension::ApiserverRequests => "apiserver_requests",
        Dimension::ApiserverReceivedBytes => "apiserver_received_bytes",
        Dimension::ApiserverConnections => "apiserver_connections",
        Dimension::DnsQueries => "dns_queries",
    }
}

pub fn cluster_total(d: Dimension) -> String {
    format!("headroom:cluster_{}:rate5m", slug(d))
}

pub fn pod_steady(d: Dimension) -> String {
    format!("headroom:workload_pod_{}:p95_rate5m", slug(d))
}

pub fn pod_startup(d: Dimension) -> String {
    format!("headroom:workload_pod_startup_{}:p95_rate1m", slug(d))
}

pub fn workload_current(d: Dimension) -> String {
    format!("headroom:workload_{}:rate5m", slug(d))
}

pub const WORKLOAD_PODS: &str = "headroom:workload_pods:count";
pub const WORKLOAD_MINUTES: &str = "headroom:workload_measured_minutes:max";
pub const WORKLOAD_IMAGE: &str = "headroom:workload_image:newest_start_time";

/// Labels on the per-workload rules.
pub const LABEL_NAMESPACE: &str = "namespace";
pub const LABEL_KIND: &str = "workload_kind";
pub const LABEL_WORKLOAD: &str = "workload";
pub const LABEL_IMAGE: &str = "image";

/// Every rule name, for tests and for shipping rules.
pub fn all() -> Vec<String> {
    let mut names = Vec::new();
    for d in Dimension::ALL {
        names.push(cluster_total(d));
        names.push(pod_steady(d));
        names.push(pod_startup(d));
        names.push(workload_current(d));
    }
    names.push(WORKLOAD_PODS.to_owned());
    names.push(WORKLOAD_MINUTES.to_owned());
    names.push(WORKLOAD_IMAGE.to_owned());
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_doc_comment() {
        let doc = include_str!("prometheus_rules.rs");
        let names = all();
        assert_eq!(names.len(), 19);
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{name} is not documented"
            );
        }
    }
}
