//! The collector's main loop. Events from the kernel feed the DNS tracker and the request
//! estimator as they arrive; every publish interval the kernel's counters and both
//! trackers become one metrics snapshot, named per identity.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use collector_ebpf::{EndpointKind, capacity};

use crate::{
    apiserver::{self, Estimator, EstimatorConfig},
    cgroup,
    dns::{self, DnsConfig, DnsTracker},
    ebpf::Probes,
    error::Result,
    events::{Event, EventReader},
    metrics::{DnsStats, DurationHistogram, Identity, MapFill, SharedSnapshot, Snapshot},
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
    /// Events user space could not decode (a kernel/user mismatch).
    bad_events: u64,
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
            probes,
            bad_events: 0,
        })
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
    pub fn handle(&mut self, event: Result<Event>) {
        match event {
            Ok(Event::Connect(c)) => {
                self.names.learn_comm(c.header.tgid, &c.comm);
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
                let _ = self.dns.record(&d);
            }
            Err(_) => self.bad_events += 1,
        }
    }

    /// Builds the metrics snapshot from the kernel maps and both trackers.
    pub fn snapshot(&mut self, now_ns: u64) -> Result<Snapshot> {
        self.api.tick(now_ns);
        self.dns.expire(now_ns);
        let _ = self.api.drain_requests().count();

        let mut snap = Snapshot::default();
        let traffic = self.probes.traffic()?;
        for (key, counters) in &traffic {
            if key.kind != EndpointKind::ApiServer as u32 {
                continue;
            }
            let api = snap
                .workload(self.names.identity(key.cgroup_id, key.tgid))
                .apiserver();
            api.connections += counters.connects;
            api.sent_bytes += counters.sent_bytes;
            api.received_bytes += counters.received_bytes;
        }
        for (owner, totals) in self.api.owners() {
            let apiserver::Owner { cgroup_id, tgid } = *owner;
            self.names.learn_comm(tgid, &totals.comm);
            let api = snap
                .workload(self.names.identity(cgroup_id, tgid))
                .apiserver();
            api.requests += totals.requests;
            api.open_streams += totals.open_streams;
            api.open_connections += totals.connections_open;
        }
        for owner in self.dns.snapshot().owners {
            let identity = self.names.identity(owner.owner.cgroup_id, owner.owner.tgid);
            let dns = snap.workload(identity).dns();
            merge_dns(dns, &owner);
        }

        let drops = self.probes.drops()?;
        let collector = &mut snap.collector;
        collector.record_kernel_drops(&drops);
        collector.events_lost = drops[collector_ebpf::Drop::EventLost as usize] + self.bad_events;
        collector.maps.insert(
            collector_ebpf::map::TRAFFIC.into(),
            MapFill {
                entries: traffic.len() as u64,
                capacity: u64::from(capacity::TRAFFIC),
            },
        );
        collector.programs = crate::metrics::bpf_stats::program_runs(self.probes.ebpf())?;
        Ok(snap)
    }
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

/// Runs until `shutdown` completes: reads events as they arrive and publishes a snapshot
/// every [`PUBLISH_EVERY`]. Calls `beat` after each publish (readiness).
pub async fn run(
    agent: &mut Agent,
    reader: &mut EventReader,
    snapshot: &SharedSnapshot,
    beat: impl Fn(),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
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
            }
            batch = reader.next_batch(|ev| agent.handle(ev)) => {
                batch.map_err(|source| crate::error::Error::Read { path: "events ring buffer".into(), source })?;
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

/// Names a (cgroup, process) without a cluster: node services by their systemd unit,
/// other cgroups by their name, processes in the root cgroup or a session scope by
/// their command name. (In a cluster, pods are named from the pod watch instead.)
#[derive(Debug)]
pub struct Names {
    root: PathBuf,
    paths: HashMap<u64, Option<String>>,
    comms: HashMap<u32, String>,
}

/// Bound on remembered process names; cleared when reached (they are re-learnt).
const MAX_COMMS: usize = 4096;

impl Names {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.into(),
            paths: HashMap::new(),
            comms: HashMap::new(),
        }
    }

    /// Remembers the name of process `tgid`. The kernel's comm is the connecting
    /// *thread's* (dig connects from `isc-net-0000`), so the process's own name from
    /// /proc wins while the process is alive.
    pub fn learn_comm(&mut self, tgid: u32, comm: &[u8; 16]) {
        if tgid == 0 || self.comms.contains_key(&tgid) {
            return;
        }
        let from_proc = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
            .ok()
            .map(|c| c.trim_end().to_string())
            .filter(|c| !c.is_empty());
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        let name = match from_proc {
            Some(name) => name,
            None if len > 0 => String::from_utf8_lossy(&comm[..len]).into_owned(),
            None => return,
        };
        if self.comms.len() >= MAX_COMMS {
            self.comms.clear();
        }
        self.comms.insert(tgid, name);
    }

    pub fn identity(&mut self, cgroup_id: u64, tgid: u32) -> Identity {
        let root = &self.root;
        let path = self
            .paths
            .entry(cgroup_id)
            .or_insert_with(|| cgroup::path_of(root, cgroup_id).map(|p| p.display().to_string()))
            .clone();
        let comm = self.comms.get(&tgid).cloned();
        node_identity(path.as_deref(), comm.as_deref(), cgroup_id)
    }
}

/// The identity of a node process from its cgroup path (relative to the root, starting
/// with `/`) and command name.
pub fn node_identity(path: Option<&str>, comm: Option<&str>, cgroup_id: u64) -> Identity {
    let leaf = path.and_then(|p| p.rsplit('/').find(|s| !s.is_empty()));
    let name = match leaf {
        Some(unit) if unit.ends_with(".service") => unit.trim_end_matches(".service").to_string(),
        Some(scope) if scope.ends_with(".scope") => comm.unwrap_or(scope).to_string(),
        Some(group) => group.to_string(),
        None => match (path, comm) {
            (Some(_), Some(comm)) => comm.to_string(), // the root cgroup
            (Some(_), None) => "unknown".into(),
            (None, _) => format!("cgroup-{cgroup_id}"), // gone before it was named
        },
    };
    Identity::node_process(name)
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
mod tests {
    use super::*;

    #[test]
    fn names_node_processes() {
        let name = |path: Option<&str>, comm| node_identity(path, comm, 7).workload;
        assert_eq!(
            name(Some("/system.slice/kubelet.service"), Some("kubelet")),
            "kubelet"
        );
        assert_eq!(
            name(Some("/user.slice/session-3.scope"), Some("curl")),
            "curl"
        );
        assert_eq!(
            name(Some("/headroom-demo-agent"), Some("bash")),
            "headroom-demo-agent"
        );
        assert_eq!(name(Some("/"), Some("coredns")), "coredns");
        assert_eq!(name(None, Some("x")), "cgroup-7");
        assert_eq!(node_identity(Some("/"), None, 1).workload_kind, "node");
    }

    #[test]
    fn remembers_comms_until_the_bound() {
        let mut names = Names::new(Path::new("/nonexistent"));
        // No such process: the kernel's name is used.
        names.learn_comm(u32::MAX - 1, b"kubectl\0\0\0\0\0\0\0\0\0");
        assert_eq!(
            names.comms.get(&(u32::MAX - 1)).map(String::as_str),
            Some("kubectl")
        );
        // A live process: its own name wins over a thread's.
        names.learn_comm(std::process::id(), b"worker-thread\0\0\0");
        let own = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
        assert_eq!(
            names.comms.get(&std::process::id()).map(String::as_str),
            Some(own.trim_end())
        );
        for tgid in 10..(10 + MAX_COMMS as u32) {
            names.learn_comm(tgid, b"x\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        }
        assert!(names.comms.len() <= MAX_COMMS);
    }
}
