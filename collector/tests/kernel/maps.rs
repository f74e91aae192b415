//! Bounded maps lose nothing silently: with maps far smaller than the traffic, what the
//! agent reports as evicted plus what the map still holds is everything that happened.
use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use collector::{agent::Agent, dns::DnsConfig, ebpf::Probes, endpoint};
use collector_ebpf::{EndpointKind, MapOp, map};

use crate::{apiserver::identity_of, child_group, require_root, run_in_cgroup};

/// A listener that accepts connections and holds them, counting them. It listens on a
/// loopback address of this test's own (`host` and the process id pick it), so no other
/// test's connection can reach its endpoint (another test polling a port it once found
/// free could otherwise hit this one's).
fn accepting_server(host: u8) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let ip = std::net::Ipv4Addr::new(127, 77, (std::process::id() % 250) as u8 + 1, host);
    let listener = TcpListener::bind((ip, 0)).expect("bind loopback listener");
    let addr = listener.local_addr().expect("listener address");
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        // Held open until the test ends, so that clients decide when sockets close.
        let mut open = Vec::new();
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            open.push(stream);
        }
    });
    (addr, accepted)
}

/// The kernel programs (with `capacities` for some maps) measuring a listener of its own
/// (see [`accepting_server`]) as the API server, through an agent; with the listener's
/// address and its count of connections accepted.
fn measuring_agent(
    host: u8,
    capacities: &[(&'static str, u32)],
) -> (Agent, std::net::SocketAddr, Arc<AtomicU64>) {
    let root = collector::cgroup::find_root().expect("cgroup v2 mount");
    let mut probes = Probes::attach_sized(&root, capacities)
        .unwrap_or_else(|e| panic!("could not load and attach the kernel programs: {e}"));
    let (addr, accepted) = accepting_server(host);
    probes
        .add_endpoint(endpoint::key_of(addr), EndpointKind::ApiServer)
        .expect("add endpoint");
    let agent = Agent::new(probes, DnsConfig::default()).expect("agent");
    (agent, addr, accepted)
}

fn wait_accepted(accepted: &AtomicU64, n: u64) {
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) < n && start.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), n, "connections accepted");
}

#[test]
fn evictions_of_small_maps_account_for_everything() {
    require_root();
    const TRAFFIC_CAPACITY: u32 = 256;
    const SOCKETS_CAPACITY: u32 = 256;
    // One process per connection: each is a new (cgroup, kind, process) TRAFFIC key.
    const PROCESSES: u64 = 1200;
    // Connections one process holds open at once: more sockets than SOCKETS holds.
    const HELD: u64 = 700;

    let (mut agent, addr, accepted) = measuring_agent(
        1,
        &[
            (map::TRAFFIC, TRAFFIC_CAPACITY),
            (map::SOCKETS, SOCKETS_CAPACITY),
        ],
    );
    assert_eq!(
        agent.probes_mut().capacity(map::TRAFFIC).expect("capacity"),
        TRAFFIC_CAPACITY
    );
    let pod = child_group("map-evictions");
    let (ip, port) = (addr.ip(), addr.port());

    // Many short-lived processes, each connecting once and closing.
    run_in_cgroup(
        &pod,
        &format!("for i in $(seq {PROCESSES}); do (exec 3<>/dev/tcp/{ip}/{port}); done"),
    );
    wait_accepted(&accepted, PROCESSES);
    // One process holding many connections open at once.
    run_in_cgroup(
        &pod,
        &format!(
            "ulimit -n 4096; for i in $(seq {HELD}); do exec {{fd}}<>/dev/tcp/{ip}/{port}; done; \
             exec 3<>/dev/tcp/{ip}/{port}; sleep 0.2"
        ),
    );
    wait_accepted(&accepted, PROCESSES + HELD + 1);

    let snapshot = agent
        .snapshot(collector::agent::monotonic_ns())
        .expect("snapshot");
    let own = &snapshot.collector;
    let probes = agent.probes_mut();
    let ops = probes.map_ops().expect("map ops");
    let traffic = probes.traffic().expect("traffic");
    let traffic_entries = traffic.len() as u64;
    let traffic_evicted = own.evictions[map::TRAFFIC];
    let sockets_evicted = own.evictions[map::SOCKETS];
    println!(
        "TRAFFIC: {} created, {traffic_entries} held, {traffic_evicted} evicted; \
         SOCKETS: {} created, {} removed, {} held, {sockets_evicted} evicted",
        ops.get(MapOp::TrafficCreated),
        ops.get(MapOp::SocketCreated),
        ops.get(MapOp::SocketRemoved),
        own.maps[map::SOCKETS].entries,
    );

    // Ground truth: PROCESSES + 1 processes connected, each a key of its own; keys of no
    // process come on top (packets of a socket whose entry was evicted, the kernel's own
    // ACKs and resets), and may be evicted and created again. The map holds at most its
    // capacity; what it does not hold it evicted.
    let processes = PROCESSES + 1;
    let created = ops.get(MapOp::TrafficCreated);
    assert!(
        created >= processes,
        "{created} TRAFFIC keys created by {processes} connecting processes"
    );
    assert!(
        traffic_entries <= u64::from(TRAFFIC_CAPACITY),
        "{traffic_entries} entries in a map of {TRAFFIC_CAPACITY}"
    );
    assert!(
        traffic_evicted >= processes - u64::from(TRAFFIC_CAPACITY),
        "{traffic_evicted} TRAFFIC keys evicted"
    );
    assert_eq!(
        traffic_evicted + traffic_entries,
        created,
        "evicted + held TRAFFIC keys vs created"
    );

    // Every connection made a socket entry, or failed to and counted the drop (a tiny
    // LRU map under load can find no node to take); the short-lived ones were removed
    // when released (or had been evicted before); the held ones overflow the map.
    let connections = PROCESSES + HELD + 1;
    let drops = probes.drops().expect("drops");
    let created = ops.get(MapOp::SocketCreated);
    assert_eq!(
        created + drops[collector_ebpf::Drop::SocketInsert as usize],
        connections,
        "socket entries created, plus inserts dropped, vs connections"
    );
    assert!(
        sockets_evicted >= HELD + 1 - u64::from(SOCKETS_CAPACITY),
        "{sockets_evicted} socket entries evicted; {HELD} held open in a map of {SOCKETS_CAPACITY}"
    );
    assert_eq!(
        sockets_evicted + ops.get(MapOp::SocketRemoved) + own.maps[map::SOCKETS].entries,
        created,
        "evicted + removed + held socket entries vs created"
    );
    assert_eq!(
        own.maps[map::TRAFFIC].capacity,
        u64::from(TRAFFIC_CAPACITY),
        "fill is reported against the loaded capacity"
    );
}

#[test]
fn maps_that_never_fill_report_no_evictions() {
    require_root();
    let (mut agent, addr, accepted) = measuring_agent(2, &[]);
    let pod = child_group("map-no-evictions");
    run_in_cgroup(
        &pod,
        &format!(
            "for i in $(seq 20); do (exec 3<>/dev/tcp/{}/{}); done",
            addr.ip(),
            addr.port()
        ),
    );
    wait_accepted(&accepted, 20);
    let snapshot = agent
        .snapshot(collector::agent::monotonic_ns())
        .expect("snapshot");
    let probes = agent.probes_mut();
    let ops = probes.map_ops().expect("map ops");
    let traffic: std::collections::BTreeMap<_, _> = probes
        .traffic()
        .expect("traffic")
        .into_iter()
        .filter(|(k, _)| k.cgroup_id == pod.id())
        .collect();
    // Each of the 20 processes connected once: 20 connects under 20 process keys (keys
    // of no process, for the kernel's own packets, may come on top).
    let owned: Vec<_> = traffic.iter().filter(|(k, _)| k.tgid != 0).collect();
    let connects: u64 = traffic.values().map(|c| c.connects).sum();
    assert_eq!(connects, 20, "connects counted: {traffic:?}");
    assert_eq!(owned.len(), 20, "process keys: {traffic:?}");
    let dropped = probes.drops().expect("drops")[collector_ebpf::Drop::SocketInsert as usize];
    assert_eq!(dropped, 0, "a map far from full drops nothing");
    assert_eq!(ops.get(MapOp::SocketCreated), 20, "socket entries created");
    assert_eq!(
        ops.get(MapOp::TrafficCreated),
        probes.traffic().expect("traffic").len() as u64,
        "nothing evicted: every key created is there"
    );
    assert_eq!(snapshot.collector.evictions[map::TRAFFIC], 0);
    assert_eq!(snapshot.collector.evictions[map::SOCKETS], 0);
}

/// A pod's cgroup goes: its series stay through the grace period, then end, and the
/// agent deletes its keys from the map itself (so they are not counted as evicted).
#[test]
fn a_gone_cgroup_keeps_its_series_for_the_grace_then_leaves_the_map() {
    require_root();
    const GRACE: Duration = Duration::from_secs(1);
    let (agent, addr, accepted) = measuring_agent(3, &[]);
    let mut agent = agent.with_grace(GRACE);
    let pod = child_group("gone-cgroup");
    let (who, cgroup_id) = (identity_of(&pod), pod.id());
    run_in_cgroup(
        &pod,
        &format!(
            "for i in $(seq 3); do (exec 3<>/dev/tcp/{}/{}); done",
            addr.ip(),
            addr.port()
        ),
    );
    wait_accepted(&accepted, 3);
    let connections = |agent: &mut Agent| {
        let snap = agent
            .snapshot(collector::agent::monotonic_ns())
            .expect("snapshot");
        let evicted = snap.collector.evictions[map::TRAFFIC];
        let api = snap.workloads.get(&who).and_then(|w| w.apiserver);
        (api.map(|a| a.connections), evicted)
    };
    assert_eq!(
        connections(&mut agent),
        (Some(3), 0),
        "while the cgroup is there"
    );

    drop(pod);
    let noticed = Instant::now();
    assert_eq!(
        connections(&mut agent),
        (Some(3), 0),
        "gone, within the grace period"
    );
    thread::sleep(GRACE.saturating_sub(noticed.elapsed()) + Duration::from_millis(200));
    assert_eq!(
        connections(&mut agent),
        (None, 0),
        "past the grace period: no series, nothing counted evicted"
    );
    let traffic = agent.probes_mut().traffic().expect("traffic");
    assert!(
        traffic.keys().all(|k| k.cgroup_id != cgroup_id),
        "the gone cgroup's keys are deleted: {traffic:?}"
    );
    // The next read still counts nothing evicted: the agent's deletions are removals.
    assert_eq!(connections(&mut agent).1, 0);
}

/// Counters never fall, whatever the TRAFFIC map evicts: short-lived processes of one
/// pod connect in batches, each a key of its own, ten times more keys than the map
/// holds. After each batch the pod's `connections` total is read: it never goes down,
/// and as every key was read before it could be evicted, it equals the connections the
/// server accepted.
#[test]
fn counters_never_fall_when_the_map_evicts() {
    require_root();
    const TRAFFIC_CAPACITY: u32 = 128;
    const BATCH: u64 = 16;
    const BATCHES: u64 = 80;
    let (mut agent, addr, accepted) = measuring_agent(4, &[(map::TRAFFIC, TRAFFIC_CAPACITY)]);
    let pod = child_group("map-monotonic");
    let who = identity_of(&pod);
    let (ip, port) = (addr.ip(), addr.port());
    let mut seen = Vec::new();
    for batch in 1..=BATCHES {
        run_in_cgroup(
            &pod,
            &format!("for i in $(seq {BATCH}); do (exec 3<>/dev/tcp/{ip}/{port}); done"),
        );
        wait_accepted(&accepted, batch * BATCH);
        let snapshot = agent
            .snapshot(collector::agent::monotonic_ns())
            .expect("snapshot");
        let connections = snapshot
            .workloads
            .get(&who)
            .and_then(|w| w.apiserver)
            .map_or(0, |a| a.connections);
        seen.push((connections, snapshot.collector.evictions[map::TRAFFIC]));
    }
    println!("connections total and TRAFFIC evictions after each batch: {seen:?}");
    let evicted = seen.last().map_or(0, |&(_, e)| e);
    assert!(
        evicted >= BATCH * BATCHES - u64::from(TRAFFIC_CAPACITY),
        "the map evicted {evicted} keys: the test must make it evict"
    );
    for pair in seen.windows(2) {
        assert!(pair[1].0 >= pair[0].0, "a counter fell: {seen:?}");
    }
    assert_eq!(
        seen.last().map(|&(c, _)| c),
        Some(BATCH * BATCHES),
        "every connection counted once"
    );
}
