//! Prometheus metrics of the collector (prefix `headroom_`).
//!
//! The wiring fills a [`Snapshot`] (per [`Identity`]: API server and DNS counters; the
//! collector's own health) and publishes it through a [`SharedSnapshot`]; [`Metrics`]
//! renders the last published one on each scrape, as OpenMetrics text or, for clients
//! that ask for it, the Prometheus text format.
pub mod bpf_stats;
mod exposition;
mod prometheus_text;
mod snapshot;
#[cfg(test)]
mod tests;
mod watches;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use self::{
    snapshot::{
        ApiServerStats, CollectorStats, DNS_DURATION_BOUNDS, DnsStats, DurationHistogram, Identity,
        MapFill, NODE_WORKLOAD_KIND, PodLabels, ProgramRuns, SharedSnapshot, Snapshot,
        WorkloadStats, drop_reason,
    },
    watches::{WatchHealth, WatchHealthSource},
};

/// Every metric name starts with this (and `_`).
pub const PREFIX: &str = "headroom";

/// Content type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The collector's one metrics registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    snapshot: SharedSnapshot,
}

impl Metrics {
    /// A registry prefixed `headroom` that renders what is published to `snapshot`.
    pub fn new(snapshot: SharedSnapshot) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        registry.register_collector(Box::new(exposition::SnapshotCollector {
            source: snapshot.clone(),
        }));
        Self { registry, snapshot }
    }

    /// Where to publish snapshots.
    pub fn snapshot(&self) -> &SharedSnapshot {
        &self.snapshot
    }

    /// Adds the collector's own API watches (in a cluster). Register before sharing
    /// `Metrics`.
    pub fn register_watches(&mut self, source: Arc<dyn WatchHealthSource>) {
        self.registry
            .register_collector(Box::new(watches::WatchCollector { source }));
    }

    /// For metrics that are easier kept as live counters than in the snapshot (they
    /// get the `headroom_` prefix too). Register before sharing `Metrics`.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// OpenMetrics 1.0 text, ending in `# EOF`.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and our collector returns errors only from
        // the writer.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The Prometheus text format 0.0.4, for clients that do not speak OpenMetrics
    /// (`promtool check metrics`, older scrapers).
    pub fn encode_prometheus_text(&self) -> String {
        prometheus_text::from_openmetrics(&self.encode_openmetrics())
    }
}
