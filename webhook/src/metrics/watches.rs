//! The webhook's own watches of the API server (`serve --kube`), read at scrape time from
//! their [`Health`]: the same families as the collector's `headroom_collector_kube_*`,
//! prefixed `headroom_webhook_kube_`. Nothing is exposed without `--kube`.
use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use collector::watch::{Health, Report};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    resource: &'static str,
    reason: &'static str,
}

#[derive(Debug)]
pub(super) struct WatchCollector {
    pub(super) health: Arc<OnceLock<Arc<Health>>>,
}

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, M)],
) -> fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut family = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn per_resource<M>(
    reports: &[Report],
    value: impl Fn(&Report) -> Option<M>,
) -> Vec<(ResourceLabels, M)> {
    reports
        .iter()
        .filter_map(|r| {
            Some((
                ResourceLabels {
                    resource: r.resource,
                },
                value(r)?,
            ))
        })
        .collect()
}

impl Collector for WatchCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(health) = self.health.get() else {
            return Ok(());
        };
        let reports = health.reports();
        family(
            &mut encoder,
            "kube_lists",
            "LISTs the webhook's own watches started (the first, then one per 410 Gone or \
             failed list), by resource",
            &per_resource(&reports, |r| Some(ConstCounter::new(r.lists))),
        )?;
        let errors: Vec<_> = reports
            .iter()
            .flat_map(|r| {
                r.errors.iter().map(|&(reason, n)| {
                    let labels = ErrorLabels {
                        resource: r.resource,
                        reason,
                    };
                    (labels, ConstCounter::new(n))
                })
            })
            .collect();
        family(
            &mut encoder,
            "kube_watch_errors",
            "Failures of the webhook's own watches, each retried after a jittered backoff, by \
             reason",
            &errors,
        )?;
        family(
            &mut encoder,
            "kube_watch_ready",
            "1 while a watch has listed and is not failing (what /readyz requires); absent while \
             it does not run",
            &per_resource(&reports, |r| Some(ConstGauge::new(i64::from(r.ready?)))),
        )?;
        family(
            &mut encoder,
            "kube_api_served",
            "0 while discovery says the API server does not serve the resource (the webhook \
             works without it), else 1",
            &per_resource(&reports, |r| Some(ConstGauge::new(i64::from(r.served)))),
        )
    }
}
