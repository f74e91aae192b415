//! The collector's main loop. Events from the kernel feed the DNS tracker and the request
//! estimator as they arrive; every publish interval the kernel's counters and both
//! trackers become one metrics snapshot, named per identity (from the node's pod cache
//! in a cluster), and the per-pod counters feed the profile store.
pub mod carry;
pub mod endpoints;
pub mod evictions;
pub mod gone;
pub mod names;
pub mod totals;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use collector_ebpf::{EndpointKind, map};
use tokio::sync::watch;

pub use self::{
    carry::Carried,
    endpoints::Discovered,
    gone::{GoneCgroups, Referenced},
    names::{Named, Names, node_identity},
};
use crate::{
    apiserver::{self, Estimator, EstimatorConfig},
    cluster::{DEFAULT_GRACE, Endpoints, SharedPods},
    dns::{self, DnsConfig, DnsTracker},
    ebpf::Probes,
    error::Result,
    events::{Event, EventReader},
    identity::{PodIndex, PodInfo},
    metrics::{
        DnsStats, DurationHistogram, Identity, MapFill, PodLabels, SharedSnapshot, Snapshot,
        WorkloadStats, bpf_stats::StatsClock,
    },
    profile::{self, Counters, Row, SharedProfiles},
};

// The DNS tracker's histogram and the exported one must share bucket bounds.
const _: () = {
    let (a, b) = (
        dns::LATENCY_BOUNDS_SECONDS,
        crate::metrics::DNS_DURATION_BOUNDS,
    );
    assert!(a.len() == b.len());
    let mut i = 0;
    while i < a.len() {
        assert!(a[i] == b[i]);
        i += 1;
    }
};

/// How often the snapshot is rebuilt: well under any scrape interval.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How often the event buffer is drained. The kernel does not wake user space per event
/// (only when the buffer is a sixteenth full), so a busy DNS node costs one wakeup per
/// interval instead of one per packet; event times come from the kernel, so the delay
/// does not change any measurement.
pub const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// State of the main loop.
#[derive(Debug)]
pub struct Agent {
    probes: Probes,
    dns: DnsTracker,
    api: Estimator,
    names: Names,
    /// Cgroups gone (named through their grace) or retired (series dropped).
    gone: GoneCgroups,
    /// Counts of retired cgroups, kept by identities still measured.
    carried: Carried,
    /// The TRAFFIC map's counts per key, kept through evictions (see `totals`).
    totals: totals::TrafficTotals,
    /// CLOSING's entry count and when it was taken (see `closing_entries`).
    closing_counted: Option<(Instant, u64)>,
    /// This node's pods (empty without a cluster).
    pods: SharedPods,
    /// Where each tick's per-pod counters go, when profiles are served.
    profiles: Option<SharedProfiles>,
    /// Events user space could not decode (a kernel/user mismatch).
    bad_events: u64,
    /// What the LRU maps evicted so far.
    evictions: evictions::Evictions,
    /// `TRAFFIC` keys of retired cgroups deleted so far (removals, not evictions).
    traffic_removed: u64,
    /// How long the kernel's run-time stats have been on, when something turns them on.
    stats_clock: Option<StatsClock>,
}

impl Agent {
    pub fn new(probes: Probes, dns: DnsConfig) -> Result<Self> {
        let names = Names::new(probes.cgroup_root());
        Ok(Self {
            dns: DnsTracker::new(dns).map_err(|e| crate::error::Error::Config {
                field: "dns".into(),
                problem: e.to_string(),
            })?,
            api: Estimator::new(EstimatorConfig::default()),
            names,
            gone: GoneCgroups::new(DEFAULT_GRACE),
            carried: Carried::default(),
            totals: totals::TrafficTotals::default(),
            closing_counted: None,
            probes,
            pods: SharedPods::new(DEFAULT_GRACE),
            profiles: None,
            bad_events: 0,
            evictions: evictions::Evictions::default(),
            traffic_removed: 0,
            stats_clock: None,
        })
    }

    /// Names pods from `pods` (the cluster's cache) and drops the series of pods gone
    /// past the cache's grace period.
    pub fn with_pods(mut self, pods: SharedPods) -> Self {
        self.pods = pods;
        self
    }

    /// Keeps the series of a gone cgroup for `grace` after it was noticed gone (the
    /// configured series grace period; the pod cache has its own).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.gone = GoneCgroups::new(grace);
        self
    }

    /// Reports the seconds the kernel's run-time stats were on (see
    /// [`crate::metrics::bpf_stats::run`]) with the per-program counters.
    pub fn with_stats_clock(mut self, clock: StatsClock) -> Self {
        self.stats_clock = Some(clock);
        self
    }

    /// Feeds `profiles` at every snapshot.
    pub fn with_profiles(mut self, profiles: SharedProfiles) -> Self {
        self.profiles = Some(profiles);
        self
    }

    pub fn probes_mut(&mut self) -> &mut Probes {
        &mut self.probes
    }

    /// The DNS tracker, to read its bounds and memory (the kernel tests' cap on names).
    pub fn dns(&self) -> &DnsTracker {
        &self.dns
    }

    /// Takes the kernel's event ring buffer for [`run`].
    pub fn event_reader(&mut self) -> Result<EventReader> {
        let ring = self.probes.take_events()?;
        EventReader::new(ring).map_err(|source| crate::error::Error::Read {
            path: "events ring buffer".into(),
            source,
        })
    }

    /// Feeds one event to whoever needs it.
    pub fn handle(&mut self, event: Result<Event<'_>>) {
        match event {
            Ok(Event::Connect(c)) => {
                let probes = &self.probes;
                self.names
                    .learn_comm(c.header.tgid, &c.comm, || probes.exec_path(c.header.tgid));
                self.note_cgroup(c.header.cgroup_id);
                if c.header.endpoint_kind == EndpointKind::ApiServer as u32 && c.protocol == 6 {
                    self.api.on_connect(&c);
                }
            }
            Ok(Event::Segment(s)) => self.api.on_segment(&s),
            Ok(Event::Close(c)) => {
                if c.header.endpoint_kind == EndpointKind::ApiServer as u32 {
                    self.api.on_close(&c);
                }
            }
            Ok(Event::Dns(d)) => {
                self.note_cgroup(d.header.cgroup_id);
                let _ = self
                    .dns
                    .record_message(&d.header, d.protocol, d.local_port, d.payload);
            }
            Err(_) => self.bad_events += 1,
        }
    }

    fn note_cgroup(&mut self, cgroup_id: u64) {
        // Per event: a cgroup already named costs one lookup. A dropped cgroup's path is
        // forgotten; it needs no name.
        if !self.names.is_known(cgroup_id) && !self.gone.is_dropped(cgroup_id) {
            self.names.note(cgroup_id);
        }
    }

    /// Names the cgroups first seen in events since the last call, in one walk of the
    /// hierarchy. The run loop calls it after draining events, so a short-lived pod's
    /// container is named while it is still there, not as `cgroup-<id>` at the next
    /// snapshot.
    pub fn name_new_cgroups(&mut self) {
        self.names.name_new();
    }

    /// Builds the metrics snapshot from the kernel maps and both trackers, and records
    /// its per-pod counters in the profile store.
    pub fn snapshot(&mut self, now_ns: u64) -> Result<Snapshot> {
        let now = Instant::now();
        self.api.tick(now_ns);
        self.dns.expire(now_ns);
        let _ = self.api.drain_requests().count();
        // Owners the estimator forgot to make room: their requests are carried on below.
        let evicted: Vec<_> = self.api.drain_evicted().collect();
        // The grace period: a pod deleted long enough ago loses its series.
        let swept = self.pods.sweep(now);

        let mut snap = Snapshot::default();
        // The op counters before the maps are read, and after (see `evictions`).
        let ops_before = self.probes.map_ops()?;
        let traffic = self.probes.traffic()?;
        // What the map holds, plus what keys it evicted had counted: never less.
        let counted = self.totals.update(&traffic);
        let dns = self.dns.snapshot();
        let refs = Referenced::new(
            counted.keys().map(|k| (k.cgroup_id, k.tgid)),
            self.api
                .owners()
                .chain(evicted.iter().map(|(o, t)| (o, t)))
                .map(|(o, _)| (o.cgroup_id, o.tgid))
                .chain(dns.owners.iter().map(|o| (o.owner.cgroup_id, o.owner.tgid))),
        );
        let names = &mut self.names;
        let gone = &mut self.gone;
        names.resolve(
            refs.cgroups
                .iter()
                .copied()
                .filter(|&id| !gone.is_dropped(id)),
        );
        let swept_cgroups = names.cgroups_of_pods(&swept);
        // Cgroups whose series end with this tick: their last counts go to `retired`.
        let retiring: HashSet<u64> = gone
            .tick(now, &refs.cgroups, &swept_cgroups, |id| names.exists(id))
            .into_iter()
            .collect();
        let swept_cgroups: HashSet<u64> = swept_cgroups.into_iter().collect();
        // A pod swept just now still names its cgroups' last counts.
        let mut swept_pods = PodIndex::default();
        for pod in swept {
            swept_pods.upsert(pod);
        }
        let mut retired = Snapshot::default();

        let cache = self.pods.read();
        let index = cache.index();
        let gone = &self.gone;
        // The pod of each identity named from the pod cache.
        let mut pod_uids: HashMap<Identity, String> = HashMap::new();
        // An identity, and whether its counts are the last of a retiring cgroup.
        let mut name = |names: &Names, cgroup_id: u64, tgid: u32| -> Option<(Identity, bool)> {
            if retiring.contains(&cgroup_id) {
                let pods = if swept_cgroups.contains(&cgroup_id) {
                    &swept_pods
                } else {
                    index
                };
                return Some((names.identity(cgroup_id, tgid, pods), true));
            }
            if gone.is_dropped(cgroup_id) {
                return None;
            }
            let Named { identity, pod_uid } = names.name(cgroup_id, tgid, index);
            if let Some(uid) = pod_uid {
                pod_uids.insert(identity.clone(), uid);
            }
            Some((identity, false))
        };

        for (key, counters) in &counted {
            if key.kind != EndpointKind::ApiServer as u32 {
                continue;
            }
            let Some((identity, last)) = name(names, key.cgroup_id, key.tgid) else {
                continue;
            };
            let into = if last { &mut retired } else { &mut snap };
            let api = into.workload(identity).apiserver();
            api.connections += counters.connects;
            api.sent_bytes += counters.sent_bytes;
            api.received_bytes += counters.received_bytes;
        }
        for (owner, totals) in self.api.owners() {
            let apiserver::Owner { cgroup_id, tgid } = *owner;
            names.learn_comm(tgid, &totals.comm, || self.probes.exec_path(tgid));
            let Some((identity, last)) = name(names, cgroup_id, tgid) else {
                continue;
            };
            let into = if last { &mut retired } else { &mut snap };
            let api = into.workload(identity).apiserver();
            api.requests += totals.requests;
            api.open_streams += totals.open_streams;
            api.open_connections += totals.connections_open;
        }
        // An owner forgotten to make room (nothing open) leaves its requests to its
        // identity, as a retired cgroup does: `requests_total` does not fall.
        for (owner, totals) in &evicted {
            let Some((identity, _)) = name(names, owner.cgroup_id, owner.tgid) else {
                continue;
            };
            retired.workload(identity).apiserver().requests += totals.requests;
        }
        let top_names = self.dns.config().top_names;
        for owner in &dns.owners {
            let Some((identity, last)) = name(names, owner.owner.cgroup_id, owner.owner.tgid)
            else {
                continue;
            };
            if !last {
                snap.add_dns_names(&identity, &owner.top_names, top_names);
            }
            let into = if last { &mut retired } else { &mut snap };
            merge_dns(into.workload(identity).dns(), owner);
        }
        // Identities that outlive a retired cgroup keep its counts (see `carry`).
        self.carried.retire(retired.workloads);
        self.carried.apply(&mut snap.workloads);

        let pod_of = |identity: &Identity| pod_uids.get(identity).and_then(|uid| index.get(uid));
        snap.pod_start_times = pod_start_times(&snap, pod_of);
        if let Some(profiles) = &self.profiles {
            profiles.record(profile::now(), profile_rows(&snap, pod_of));
        }
        drop(cache);
        self.forget(&retiring, &refs);

        let drops = self.probes.drops()?;
        let collector = &mut snap.collector;
        collector.record_kernel_drops(&drops);
        collector.events_lost = drops[collector_ebpf::Drop::EventLost as usize] + self.bad_events;
        let read = evictions::MapRead {
            before: ops_before,
            traffic_entries: traffic.len() as u64,
            traffic_removed: self.traffic_removed,
            socket_entries: self.probes.socket_entries(map::SOCKETS)?,
            after: self.probes.map_ops()?,
        };
        // The kernel would keep a retired cgroup's keys until it needs the room (and
        // count them evicted then): delete them, so the map holds live cgroups.
        for key in counted.keys() {
            let retired = retiring.contains(&key.cgroup_id) || self.gone.is_dropped(key.cgroup_id);
            if !retired {
                continue;
            }
            self.totals.forget_cgroup(key.cgroup_id);
            if traffic.contains_key(key) && self.probes.remove_traffic(key)? {
                self.traffic_removed += 1;
            }
        }
        let closing_entries = self.closing_entries(now)?;
        let evicted = self.evictions.update(&read);
        for (name, entries) in [
            (map::TRAFFIC, read.traffic_entries),
            (map::SOCKETS, read.socket_entries),
            (map::CLOSING, closing_entries),
        ] {
            let capacity = u64::from(self.probes.capacity(name)?);
            collector
                .maps
                .insert(name.into(), MapFill { entries, capacity });
        }
        // CLOSING is left out: evicting its oldest entries is how it forgets sockets.
        collector.evictions = BTreeMap::from([
            (map::TRAFFIC.to_string(), evicted.traffic),
            (map::SOCKETS.to_string(), evicted.sockets),
        ]);
        collector.programs = crate::metrics::bpf_stats::program_runs(self.probes.ebpf())?;
        collector.program_stats_seconds =
            self.stats_clock.as_ref().map_or(0.0, StatsClock::seconds);
        Ok(snap)
    }

    /// CLOSING's fill, counted at most once a minute: counting walks every key, and the
    /// map only says how far its LRU is from forgetting sockets still closing.
    fn closing_entries(&mut self, now: Instant) -> Result<u64> {
        const RECOUNT: Duration = Duration::from_secs(60);
        if let Some((at, n)) = self.closing_counted
            && now.duration_since(at) < RECOUNT
        {
            return Ok(n);
        }
        let n = self.probes.socket_entries(map::CLOSING)?;
        self.closing_counted = Some((now, n));
        Ok(n)
    }

    /// Forgets the cgroups retired this tick, and dropped ones the trackers took in
    /// again (a socket that outlived its cgroup), so they hold nothing of them; then
    /// the names nothing refers to any more.
    fn forget(&mut self, retiring: &HashSet<u64>, refs: &Referenced) {
        let again = refs
            .tracked
            .iter()
            .filter(|&&id| self.gone.is_dropped(id) && !retiring.contains(&id));
        for &cgroup_id in retiring.iter().chain(again) {
            self.dns.forget_cgroup(cgroup_id);
            self.api.forget_cgroup(cgroup_id);
        }
        let gone = &self.gone;
        self.names.prune(
            |id| gone.needs_path(id, refs.cgroups.contains(&id)),
            |tgid| refs.tgids.contains(&tgid),
        );
    }
}

/// The per-pod counters of a snapshot as the profile store takes them: one row per
/// identity (the store sums a pod's containers). `pod_of` finds an identity's pod.
pub fn profile_rows<'a>(
    snapshot: &Snapshot,
    pod_of: impl Fn(&Identity) -> Option<&'a PodInfo>,
) -> Vec<Row> {
    snapshot
        .workloads
        .iter()
        .map(|(identity, stats)| Row::new(identity.clone(), counters(stats), pod_of(identity)))
        .collect()
}

/// API server requests, received bytes and connections, DNS queries (all types).
pub fn counters(stats: &WorkloadStats) -> Counters {
    let api = stats.apiserver.unwrap_or_default();
    let dns = stats.dns.as_ref().map_or(0, |d| d.queries.values().sum());
    [api.requests, api.received_bytes, api.connections, dns]
}

/// When each measured pod's first container started (Unix seconds), for pods whose
/// Pod object says.
pub fn pod_start_times<'a>(
    snapshot: &Snapshot,
    pod_of: impl Fn(&Identity) -> Option<&'a PodInfo>,
) -> BTreeMap<PodLabels, f64> {
    snapshot
        .workloads
        .keys()
        .filter_map(|identity| {
            let pod = pod_of(identity)?;
            let started = pod.started_at()?;
            let labels = PodLabels::new(identity, pod.image());
            Some((labels, profile::unix_seconds(started)))
        })
        .collect()
}

fn merge_dns(into: &mut DnsStats, from: &dns::OwnerDns) {
    for (qtype, n) in &from.queries {
        into.add_queries(qtype.clone(), *n);
    }
    for (rcode, n) in &from.responses {
        into.add_responses(rcode.clone(), *n);
    }
    into.lookups += from.lookups;
    into.search_expansions += from.expansions;
    into.duration.merge(&DurationHistogram {
        buckets: from.latency.buckets,
        sum_seconds: from.latency.sum_ns as f64 / 1e9,
    });
}

/// The cluster's endpoint watches, applied to the kernel's table as they change.
#[derive(Debug)]
pub struct Discovery {
    apiserver: Option<watch::Receiver<Endpoints>>,
    dns: Option<watch::Receiver<Endpoints>>,
    apiserver_table: Discovered,
    dns_table: Discovered,
}

impl Discovery {
    /// Follows `apiserver` and `dns`; `fixed_*` are the endpoints from flags, already
    /// in the table.
    pub fn new(
        apiserver: watch::Receiver<Endpoints>,
        dns: watch::Receiver<Endpoints>,
        fixed_apiservers: impl IntoIterator<Item = std::net::SocketAddr>,
        fixed_dns: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Self {
        Self {
            apiserver: Some(apiserver),
            dns: Some(dns),
            apiserver_table: Discovered::new(EndpointKind::ApiServer, fixed_apiservers),
            dns_table: Discovered::new(EndpointKind::Dns, fixed_dns),
        }
    }

    /// Puts what the watches say now into the kernel's table. An address both lists
    /// name is measured as the API server.
    pub fn apply(&mut self, probes: &mut Probes) -> Result<()> {
        if let Some(rx) = &mut self.apiserver {
            let wanted = rx.borrow_and_update().clone();
            let taken = self.dns_table.all();
            self.apiserver_table.apply(probes, &wanted, &taken)?;
        }
        if let Some(rx) = &mut self.dns {
            let wanted = rx.borrow_and_update().clone();
            let taken = self.apiserver_table.all();
            self.dns_table.apply(probes, &wanted, &taken)?;
        }
        Ok(())
    }

    /// Waits for either watch to change; `false` once both have ended.
    async fn changed(&mut self) -> bool {
        loop {
            let (api, dns) = (self.apiserver.as_mut(), self.dns.as_mut());
            let (api_ended, dns_ended) = match (api, dns) {
                (None, None) => return false,
                (Some(a), None) => (a.changed().await.is_err(), false),
                (None, Some(d)) => (false, d.changed().await.is_err()),
                (Some(a), Some(d)) => tokio::select! {
                    r = a.changed() => (r.is_err(), false),
                    r = d.changed() => (false, r.is_err()),
                },
            };
            if api_ended {
                self.apiserver = None;
            } else if dns_ended {
                self.dns = None;
            } else {
                return true;
            }
        }
    }
}

/// Runs until `shutdown` completes: reads events as they arrive and publishes a snapshot
/// every [`PUBLISH_EVERY`]. Calls `beat` after each publish (readiness). With
/// `discovery`, endpoint changes go into the kernel's table as they come.
pub async fn run(
    agent: &mut Agent,
    reader: &mut EventReader,
    snapshot: &SharedSnapshot,
    mut discovery: Option<Discovery>,
    beat: impl Fn(),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if let Some(d) = &mut discovery {
        d.apply(agent.probes_mut())?;
    }
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(PUBLISH_EVERY);
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                reader.drain_now(|ev| agent.handle(ev));
                return Ok(());
            }
            _ = drain.tick() => {
                reader.drain_now(|ev| agent.handle(ev));
                agent.name_new_cgroups();
            }
            batch = reader.next_batch(|ev| agent.handle(ev)) => {
                batch.map_err(|source| crate::error::Error::Read { path: "events ring buffer".into(), source })?;
            }
            alive = async {
                match discovery.as_mut() {
                    Some(d) => d.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                match discovery.as_mut() {
                    // A full table or a map error: keep measuring what is there.
                    Some(d) if alive => {
                        if let Err(e) = d.apply(agent.probes_mut()) {
                            tracing::warn!(error = %e, "updating endpoints failed; measuring with the ones in place");
                        }
                    }
                    _ => discovery = None,
                }
            }
            _ = ticker.tick() => {
                snapshot.publish(agent.snapshot(monotonic_ns())?);
                beat();
            }
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which stamps events.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How the snapshot names traffic per kind, for the readable table.
pub fn by_identity(snapshot: &Snapshot) -> BTreeMap<&Identity, (u64, u64, u64)> {
    snapshot
        .workloads
        .iter()
        .map(|(id, w)| {
            let api = w.apiserver.unwrap_or_default();
            let dns = w.dns.as_ref().map_or(0, |d| d.queries.values().sum());
            (id, (api.requests, api.received_bytes, dns))
        })
        .collect()
}

#[cfg(test)]
mod tests;
