//! Renders the published [`Snapshot`] at scrape time: a prometheus-client
//! [`Collector`], because the kernel's counters are already cumulative and only need
//! reading, not incrementing.
use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric, counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::Unit,
};

use super::snapshot::{
    ApiServerStats, DnsStats, DurationHistogram, Identity, PodLabels, SharedSnapshot,
};

/// Per-identity series with a DNS query type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QtypeLabels {
    #[prometheus(flatten)]
    identity: Identity,
    qtype: String,
}

/// Per-identity series with a DNS response code.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RcodeLabels {
    #[prometheus(flatten)]
    identity: Identity,
    rcode: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProgramLabels {
    program: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A histogram whose buckets were counted elsewhere.
#[derive(Debug)]
struct ConstHistogram<'a>(&'a DurationHistogram);

impl TypedMetric for ConstHistogram<'_> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(
            self.0.sum_seconds,
            self.0.count(),
            &self.0.bucket_pairs(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The families of one metric: its name (without the registry's `headroom_` prefix and
/// without its unit), help and unit.
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
}

impl Family {
    pub(super) const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            unit: None,
        }
    }

    pub(super) const fn with_unit(name: &'static str, help: &'static str, unit: Unit) -> Self {
        Self {
            name,
            help,
            unit: Some(unit),
        }
    }

    /// Writes the family's descriptor and series; a family with no series is left out,
    /// as prometheus-client's registry does for its own metrics.
    pub(super) fn encode<L, M>(
        &self,
        encoder: &mut DescriptorEncoder,
        series: &[(L, M)],
    ) -> fmt::Result
    where
        L: EncodeLabelSet,
        M: EncodeMetric + TypedMetric,
    {
        if series.is_empty() {
            return Ok(());
        }
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), M::TYPE)?;
        for (labels, metric) in series {
            metric.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }

    /// Writes a family of one series without labels.
    fn encode_single<M>(&self, encoder: &mut DescriptorEncoder, metric: M) -> fmt::Result
    where
        M: EncodeMetric + TypedMetric,
    {
        metric.encode(encoder.encode_descriptor(
            self.name,
            self.help,
            self.unit.as_ref(),
            M::TYPE,
        )?)
    }
}

const APISERVER_REQUESTS: Family = Family::new(
    "apiserver_requests",
    "Requests to the Kubernetes API server, estimated from TLS record patterns.",
);
const APISERVER_CONNECTIONS: Family = Family::new(
    "apiserver_connections",
    "TCP connections opened to the Kubernetes API server.",
);
const APISERVER_SENT: Family = Family::with_unit(
    "apiserver_sent",
    "TCP payload bytes sent to the Kubernetes API server.",
    Unit::Bytes,
);
const APISERVER_RECEIVED: Family = Family::with_unit(
    "apiserver_received",
    "TCP payload bytes received from the Kubernetes API server.",
    Unit::Bytes,
);
const APISERVER_OPEN_STREAMS: Family = Family::new(
    "apiserver_open_streams",
    "Long-lived streams (watches) to the Kubernetes API server open now.",
);
const APISERVER_OPEN_CONNECTIONS: Family = Family::new(
    "apiserver_open_connections",
    "TCP connections to the Kubernetes API server open now.",
);
const DNS_QUERIES: Family = Family::new("dns_queries", "DNS queries sent, by query type.");
const DNS_RESPONSES: Family =
    Family::new("dns_responses", "DNS responses received, by response code.");
const DNS_LOOKUPS: Family = Family::new(
    "dns_lookups",
    "Names looked up; a name tried under several search suffixes counts once.",
);
const DNS_SEARCH_EXPANSIONS: Family = Family::new(
    "dns_search_expansions",
    "Queries for a name under a search suffix that did not give the final answer.",
);
const DNS_QUERY_DURATION: Family = Family::with_unit(
    "dns_query_duration",
    "Time from a DNS query to its response.",
    Unit::Seconds,
);
const POD_START_TIME: Family = Family::with_unit(
    "pod_start_time",
    "Unix time the pod's first container started; image: its first app container's.",
    Unit::Seconds,
);
const EVENTS_LOST: Family = Family::new(
    "collector_events_lost",
    "Kernel events that never reached the collector's event loop.",
);
const KERNEL_DROPS: Family = Family::new(
    "collector_kernel_drops",
    "Things the kernel programs could not record, by reason.",
);
const MAP_ENTRIES: Family = Family::new("collector_map_entries", "Entries in use in a BPF map.");
const MAP_CAPACITY: Family = Family::new("collector_map_capacity", "Maximum entries of a BPF map.");
const MAP_EVICTIONS: Family = Family::new(
    "collector_map_evictions",
    "Entries an LRU BPF map evicted to make room; what they held was lost.",
);
const PROGRAM_RUNS: Family = Family::new(
    "collector_program_runs",
    "Runs of a kernel program, from the kernel's BPF run-time stats.",
);
const PROGRAM_RUN_TIME: Family = Family::with_unit(
    "collector_program_run",
    "Time spent running a kernel program, from the kernel's BPF run-time stats.",
    Unit::Seconds,
);
const PROGRAM_STATS_TIME: Family = Family::with_unit(
    "collector_program_stats",
    "Time the kernel's BPF run-time stats were on, during which program runs and run time count.",
    Unit::Seconds,
);
const BUILD: Family = Family::new("collector_build", "The collector's version.");

/// The collector registered in the metrics registry: reads the shared snapshot on
/// each scrape.
#[derive(Debug)]
pub(crate) struct SnapshotCollector {
    pub(crate) source: SharedSnapshot,
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshot = self.source.current();
        let apiserver: Vec<(&Identity, &ApiServerStats)> = snapshot
            .workloads
            .iter()
            .filter_map(|(id, w)| w.apiserver.as_ref().map(|a| (id, a)))
            .collect();
        let dns: Vec<(&Identity, &DnsStats)> = snapshot
            .workloads
            .iter()
            .filter_map(|(id, w)| w.dns.as_ref().map(|d| (id, d)))
            .collect();

        let counters = |field: fn(&ApiServerStats) -> u64| -> Vec<(Identity, ConstCounter)> {
            apiserver
                .iter()
                .map(|(id, a)| ((*id).clone(), ConstCounter::new(field(a))))
                .collect()
        };
        let gauges = |field: fn(&ApiServerStats) -> u64| -> Vec<(Identity, ConstGauge<u64>)> {
            apiserver
                .iter()
                .map(|(id, a)| ((*id).clone(), ConstGauge::new(field(a))))
                .collect()
        };
        APISERVER_REQUESTS.encode(&mut encoder, &counters(|a| a.requests))?;
        APISERVER_CONNECTIONS.encode(&mut encoder, &counters(|a| a.connections))?;
        APISERVER_SENT.encode(&mut encoder, &counters(|a| a.sent_bytes))?;
        APISERVER_RECEIVED.encode(&mut encoder, &counters(|a| a.received_bytes))?;
        APISERVER_OPEN_STREAMS.encode(&mut encoder, &gauges(|a| a.open_streams))?;
        APISERVER_OPEN_CONNECTIONS.encode(&mut encoder, &gauges(|a| a.open_connections))?;

        let queries: Vec<_> = dns
            .iter()
            .flat_map(|(id, d)| {
                d.queries.iter().map(|(qtype, &n)| {
                    let labels = QtypeLabels {
                        identity: (*id).clone(),
                        qtype: qtype.clone(),
                    };
                    (labels, ConstCounter::new(n))
                })
            })
            .collect();
        DNS_QUERIES.encode(&mut encoder, &queries)?;
        let responses: Vec<_> = dns
            .iter()
            .flat_map(|(id, d)| {
                d.responses.iter().map(|(rcode, &n)| {
                    let labels = RcodeLabels {
                        identity: (*id).clone(),
                        rcode: rcode.clone(),
                    };
                    (labels, ConstCounter::new(n))
                })
            })
            .collect();
        DNS_RESPONSES.encode(&mut encoder, &responses)?;
        let dns_counters = |field: fn(&DnsStats) -> u64| -> Vec<(Identity, ConstCounter)> {
            dns.iter()
                .map(|(id, d)| ((*id).clone(), ConstCounter::new(field(d))))
                .collect()
        };
        DNS_LOOKUPS.encode(&mut encoder, &dns_counters(|d| d.lookups))?;
        DNS_SEARCH_EXPANSIONS.encode(&mut encoder, &dns_counters(|d| d.search_expansions))?;
        let durations: Vec<_> = dns
            .iter()
            .map(|(id, d)| ((*id).clone(), ConstHistogram(&d.duration)))
            .collect();
        DNS_QUERY_DURATION.encode(&mut encoder, &durations)?;

        let starts: Vec<(PodLabels, ConstGauge<f64>)> = snapshot
            .pod_start_times
            .iter()
            .map(|(pod, &at)| (pod.clone(), ConstGauge::new(at)))
            .collect();
        POD_START_TIME.encode(&mut encoder, &starts)?;

        let own = &snapshot.collector;
        EVENTS_LOST.encode_single(&mut encoder, ConstCounter::new(own.events_lost))?;
        let drops: Vec<_> = own
            .kernel_drops
            .iter()
            .map(|(reason, &n)| {
                let labels = ReasonLabels {
                    reason: reason.clone(),
                };
                (labels, ConstCounter::new(n))
            })
            .collect();
        KERNEL_DROPS.encode(&mut encoder, &drops)?;
        let map_labels = |name: &String| MapLabels { map: name.clone() };
        let entries: Vec<_> = own
            .maps
            .iter()
            .map(|(name, fill)| (map_labels(name), ConstGauge::new(fill.entries)))
            .collect();
        MAP_ENTRIES.encode(&mut encoder, &entries)?;
        let capacity: Vec<_> = own
            .maps
            .iter()
            .map(|(name, fill)| (map_labels(name), ConstGauge::new(fill.capacity)))
            .collect();
        MAP_CAPACITY.encode(&mut encoder, &capacity)?;
        let evictions: Vec<_> = own
            .evictions
            .iter()
            .map(|(name, &n)| (map_labels(name), ConstCounter::new(n)))
            .collect();
        MAP_EVICTIONS.encode(&mut encoder, &evictions)?;
        let program_labels = |name: &String| ProgramLabels {
            program: name.clone(),
        };
        let runs: Vec<_> = own
            .programs
            .iter()
            .map(|(name, p)| (program_labels(name), ConstCounter::new(p.run_count)))
            .collect();
        PROGRAM_RUNS.encode(&mut encoder, &runs)?;
        let run_time: Vec<_> = own
            .programs
            .iter()
            .map(|(name, p)| {
                (
                    program_labels(name),
                    ConstCounter::new(p.run_time.as_secs_f64()),
                )
            })
            .collect();
        PROGRAM_RUN_TIME.encode(&mut encoder, &run_time)?;
        PROGRAM_STATS_TIME
            .encode_single(&mut encoder, ConstCounter::new(own.program_stats_seconds))?;

        let build = BuildLabels {
            version: env!("CARGO_PKG_VERSION").into(),
        };
        BUILD.encode_single(&mut encoder, Info::new(build))
    }
}
