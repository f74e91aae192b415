//! The plain data a scrape is rendered from. The wiring fills a [`Snapshot`] from the
//! kernel maps and the event loop and publishes it through a [`SharedSnapshot`]; a
//! scrape renders whatever was published last. Nothing here knows about aya, DNS
//! parsing or Kubernetes: numbers and names in, exposition out.
use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use prometheus_client::encoding::EncodeLabelSet;

use crate::dns::TopName;

/// `workload_kind` of processes that run on the node outside any pod.
pub const NODE_WORKLOAD_KIND: &str = "node";

/// Who made the traffic: one container of a pod, or one node process. These are the
/// identity labels of every per-workload series, in this order.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct Identity {
    pub namespace: String,
    /// The owning controller's kind (`Deployment`, `DaemonSet`, …; `Pod` for a bare
    /// pod), or [`NODE_WORKLOAD_KIND`].
    pub workload_kind: String,
    /// The owning controller's name, or the process's unit or comm on the node.
    pub workload: String,
    pub pod: String,
    pub container: String,
}

impl Identity {
    /// A container of a pod owned by `workload_kind`/`workload`.
    pub fn container(
        namespace: impl Into<String>,
        workload_kind: impl Into<String>,
        workload: impl Into<String>,
        pod: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            workload_kind: workload_kind.into(),
            workload: workload.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }

    /// A process on the node (a systemd unit, or a comm where there is no unit).
    pub fn node_process(name: impl Into<String>) -> Self {
        Self {
            workload_kind: NODE_WORKLOAD_KIND.into(),
            workload: name.into(),
            ..Self::default()
        }
    }
}

/// The labels of a per-pod series: an [`Identity`] without the container.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct PodLabels {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub pod: String,
    /// The pod's first app container's image: what the rules name a workload's image by,
    /// for the image fallback of a workload not measured yet.
    pub image: String,
}

impl PodLabels {
    /// The pod labels of `id`, whose pod runs `image`.
    pub fn new(id: &Identity, image: &str) -> Self {
        Self {
            namespace: id.namespace.clone(),
            workload_kind: id.workload_kind.clone(),
            workload: id.workload.clone(),
            pod: id.pod.clone(),
            image: image.to_owned(),
        }
    }
}

/// Everything one scrape shows. Series of a gone pod disappear by not being here; the
/// wiring applies the grace period before it leaves an identity out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub workloads: BTreeMap<Identity, WorkloadStats>,
    /// Unix time (seconds) each measured pod's first container started, for the
    /// recording rules' startup figures.
    pub pod_start_times: BTreeMap<PodLabels, f64>,
    /// The names each identity's DNS queries asked for most (estimates from the DNS
    /// tracker's bounded tables, most asked first): served as JSON, never as labels.
    pub dns_names: BTreeMap<Identity, Vec<TopName>>,
    pub collector: CollectorStats,
}

impl Snapshot {
    /// The stats of `identity`, created empty if it is new.
    pub fn workload(&mut self, identity: Identity) -> &mut WorkloadStats {
        self.workloads.entry(identity).or_default()
    }

    /// Adds one owner's (one process's) top names to `identity`'s, keeping the `keep`
    /// most asked: a name in both adds up its count and its error.
    pub fn add_dns_names(&mut self, identity: &Identity, names: &[TopName], keep: usize) {
        if names.is_empty() {
            return;
        }
        let list = self.dns_names.entry(identity.clone()).or_default();
        for name in names {
            match list.iter_mut().find(|known| known.name == name.name) {
                Some(known) => {
                    known.count += name.count;
                    known.error += name.error;
                }
                None => list.push(name.clone()),
            }
        }
        list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        list.truncate(keep);
    }
}

/// What one identity sent. A part that is `None` is left out of the exposition (a
/// workload that never talked to DNS gets no DNS series).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadStats {
    pub apiserver: Option<ApiServerStats>,
    pub dns: Option<DnsStats>,
}

impl WorkloadStats {
    pub fn apiserver(&mut self) -> &mut ApiServerStats {
        self.apiserver.get_or_insert_with(ApiServerStats::default)
    }

    pub fn dns(&mut self) -> &mut DnsStats {
        self.dns.get_or_insert_with(DnsStats::default)
    }
}

/// Traffic to the API server. Counters are cumulative since the identity was first
/// seen; the two `open_*` fields are gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiServerStats {
    /// Estimated requests (TLS hides them; see the estimator).
    pub requests: u64,
    pub connections: u64,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// Long-lived streams (watches) open now.
    pub open_streams: u64,
    pub open_connections: u64,
}

/// DNS traffic. Counters are cumulative; `queries` and `responses` are keyed by the
/// qtype and rcode mnemonics (`A`, `AAAA`, `NOERROR`, `NXDOMAIN`, …). Both come from a
/// fixed vocabulary chosen by the DNS code, never from query names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsStats {
    pub queries: BTreeMap<String, u64>,
    pub responses: BTreeMap<String, u64>,
    /// Intended names looked up; a name tried under N search suffixes is one lookup.
    pub lookups: u64,
    /// Queries for a name under a search suffix that was not the final answer.
    pub search_expansions: u64,
    /// Time from a query to its response.
    pub duration: DurationHistogram,
}

impl DnsStats {
    pub fn add_queries(&mut self, qtype: impl Into<String>, n: u64) -> &mut Self {
        *self.queries.entry(qtype.into()).or_default() += n;
        self
    }

    pub fn add_responses(&mut self, rcode: impl Into<String>, n: u64) -> &mut Self {
        *self.responses.entry(rcode.into()).or_default() += n;
        self
    }
}

/// Upper bounds (seconds) of the DNS latency buckets: a node-local cache answers in
/// well under a millisecond, CoreDNS in a few, an upstream miss in tens; a timed-out
/// query is retried after 5 s by glibc, so nothing above that is worth a bucket.
pub const DNS_DURATION_BOUNDS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A cumulative histogram over [`DNS_DURATION_BOUNDS`]. `buckets[i]` counts the
/// observations in `(bound[i-1], bound[i]]`, the last one those above every bound, so
/// the count is their sum and can never disagree with the `+Inf` bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct DurationHistogram {
    pub buckets: [u64; DNS_DURATION_BOUNDS.len() + 1],
    pub sum_seconds: f64,
}

impl Default for DurationHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; DNS_DURATION_BOUNDS.len() + 1],
            sum_seconds: 0.0,
        }
    }
}

impl DurationHistogram {
    pub fn observe(&mut self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let index = DNS_DURATION_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DNS_DURATION_BOUNDS.len());
        self.buckets[index] += 1;
        self.sum_seconds += seconds;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another histogram's observations (e.g. of a process folded into its unit).
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
    }

    /// `(upper bound, observations in that bucket)` pairs, `+Inf` last.
    pub(crate) fn bucket_pairs(&self) -> Vec<(f64, u64)> {
        DNS_DURATION_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .collect()
    }
}

/// The collector's own health.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CollectorStats {
    /// Events that never reached the event loop (the ring buffer was full), plus any
    /// user space had to discard.
    pub events_lost: u64,
    /// What the kernel programs could not record, by reason (see [`drop_reason`]).
    pub kernel_drops: BTreeMap<String, u64>,
    /// Entries in use per map, against its capacity.
    pub maps: BTreeMap<String, MapFill>,
    /// Entries each LRU map evicted to make room, whose data was lost (see
    /// [`crate::agent::evictions`]).
    pub evictions: BTreeMap<String, u64>,
    /// Per-program run statistics from the kernel (see [`super::bpf_stats`]).
    pub programs: BTreeMap<String, ProgramRuns>,
    /// Seconds the kernel's run-time stats were on, during which `programs` counted.
    pub program_stats_seconds: f64,
}

impl CollectorStats {
    /// Records the kernel's `DROPS` array, indexed by [`collector_ebpf::Drop`] (as
    /// [`crate::ebpf::Probes::drops`] returns it). `events_lost` is the wiring's to set:
    /// the `EventLost` slot plus whatever user space discarded.
    pub fn record_kernel_drops(&mut self, drops: &[u64]) {
        for (reason, &count) in collector_ebpf::Drop::ALL.iter().zip(drops) {
            self.kernel_drops.insert(drop_reason(*reason).into(), count);
        }
    }
}

/// The `reason` label of a kernel drop counter.
pub fn drop_reason(drop: collector_ebpf::Drop) -> &'static str {
    use collector_ebpf::Drop;
    match drop {
        Drop::TrafficInsert => "traffic_insert",
        Drop::EventLost => "event_lost",
        Drop::SocketInsert => "socket_insert",
        Drop::TlsDesync => "tls_desync",
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapFill {
    pub entries: u64,
    pub capacity: u64,
}

/// A program's cumulative run count and run time, as the kernel's BPF stats keep them
/// (only while run-time stats are enabled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramRuns {
    pub run_count: u64,
    pub run_time: Duration,
}

/// Where the wiring publishes snapshots and a scrape reads them. Cloning shares it.
/// A scrape holds the lock only to clone an `Arc`, so rendering never blocks the
/// event loop.
#[derive(Clone, Debug, Default)]
pub struct SharedSnapshot(Arc<RwLock<Arc<Snapshot>>>);

impl SharedSnapshot {
    pub fn new(snapshot: Snapshot) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(snapshot))))
    }

    /// Replaces what the next scrape shows.
    pub fn publish(&self, snapshot: Snapshot) {
        // A panic elsewhere while holding the lock leaves a whole Arc behind; keep going.
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
    }

    /// The last published snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}
