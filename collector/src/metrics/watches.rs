//! The collector's own watches of the API server, read live at scrape time: how often
//! each (re)listed, what it applied, why it failed and when it last heard anything.
//! Plain numbers from a [`WatchHealthSource`]; the cluster module fills them.
use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use super::exposition::Family;
/// One watch's health as a scrape shows it: the shared watch machinery's report.
pub use crate::watch::health::Report as WatchHealth;

/// Where the watches' health comes from.
pub trait WatchHealthSource: fmt::Debug + Send + Sync + 'static {
    fn watch_health(&self) -> Vec<WatchHealth>;
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    resource: String,
    reason: String,
}

const LISTS: Family = Family::new(
    "collector_kube_lists",
    "Lists the collector's own watches made (the first, then one per 410 Gone), by resource.",
);
const EVENTS: Family = Family::new(
    "collector_kube_events",
    "Watch events the collector applied (a completed list counts as one), by resource.",
);
const ERRORS: Family = Family::new(
    "collector_kube_watch_errors",
    "Failures of the collector's own watches, each retried after a jittered backoff, by reason.",
);
const READY: Family = Family::new(
    "collector_kube_watch_ready",
    "1 while a watch has listed and is not failing (what /readyz requires); absent while it does not run.",
);
const SERVED: Family = Family::new(
    "collector_kube_api_served",
    "0 while discovery says the API server does not serve the resource (a fallback is used), else 1.",
);
const LAST_EVENT: Family = Family::with_unit(
    "collector_kube_last_event_timestamp",
    "Unix time of the last event a watch applied; absent until its first list completes.",
    Unit::Seconds,
);

/// Registered in the metrics registry by [`super::Metrics::register_watches`].
#[derive(Debug)]
pub(super) struct WatchCollector {
    pub(super) source: Arc<dyn WatchHealthSource>,
}

impl Collector for WatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let watches = self.source.watch_health();
        let labels = |w: &WatchHealth| ResourceLabels {
            resource: w.resource.to_owned(),
        };
        let lists: Vec<_> = watches
            .iter()
            .map(|w| (labels(w), ConstCounter::new(w.lists)))
            .collect();
        LISTS.encode(&mut encoder, &lists)?;
        let events: Vec<_> = watches
            .iter()
            .map(|w| (labels(w), ConstCounter::new(w.events)))
            .collect();
        EVENTS.encode(&mut encoder, &events)?;
        let errors: Vec<_> = watches
            .iter()
            .flat_map(|w| {
                w.errors.iter().map(|&(reason, n)| {
                    let labels = ErrorLabels {
                        resource: w.resource.to_owned(),
                        reason: reason.to_owned(),
                    };
                    (labels, ConstCounter::new(n))
                })
            })
            .collect();
        ERRORS.encode(&mut encoder, &errors)?;
        let last: Vec<_> = watches
            .iter()
            .filter_map(|w| Some((labels(w), ConstGauge::new(w.last_event_unix_seconds?))))
            .collect();
        LAST_EVENT.encode(&mut encoder, &last)?;
        let ready: Vec<_> = watches
            .iter()
            .filter_map(|w| Some((labels(w), ConstGauge::new(i64::from(w.ready?)))))
            .collect();
        READY.encode(&mut encoder, &ready)?;
        let served: Vec<_> = watches
            .iter()
            .map(|w| (labels(w), ConstGauge::new(i64::from(w.served))))
            .collect();
        SERVED.encode(&mut encoder, &served)
    }
}
