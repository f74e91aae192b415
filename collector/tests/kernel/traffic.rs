//! Bytes and connections: exact counts per cgroup against a loopback server's.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use collector::{
    cgroup,
    ebpf::Probes,
    endpoint,
    events::{self, Event},
};
use collector_ebpf::{Drop, EndpointKind, TrafficCounters};

use crate::{require_root, run_in_cgroup};

/// A loopback TCP server that, on each connection, writes `reply` bytes, then reads
/// until EOF. It counts connections accepted and bytes read: the ground truth.
struct CountingServer {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    bytes_read: Arc<AtomicU64>,
}

impl CountingServer {
    fn start(reply: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback listener");
        let addr = listener.local_addr().expect("listener address");
        let accepted = Arc::new(AtomicU64::new(0));
        let bytes_read = Arc::new(AtomicU64::new(0));
        let (acc, read) = (accepted.clone(), bytes_read.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (acc, read) = (acc.clone(), read.clone());
                thread::spawn(move || {
                    let _ = stream.write_all(&vec![b'r'; reply]);
                    let mut buf = [0u8; 4096];
                    let mut total = 0u64;
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    read.fetch_add(total, Ordering::SeqCst);
                    acc.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            accepted,
            bytes_read,
        }
    }

    /// Waits until `connections` connections have been served completely.
    fn wait_for(&self, connections: u64) -> (u64, u64) {
        let start = Instant::now();
        while self.accepted.load(Ordering::SeqCst) < connections
            && start.elapsed() < Duration::from_secs(20)
        {
            thread::sleep(Duration::from_millis(10));
        }
        (
            self.accepted.load(Ordering::SeqCst),
            self.bytes_read.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn counts_connects_and_payload_bytes_per_cgroup() {
    require_root();
    let root = cgroup::find_root().expect("cgroup v2 mount");
    let mut probes = Probes::attach(&root)
        .unwrap_or_else(|e| panic!("could not load and attach the kernel programs: {e}"));

    const CONNECTIONS: u64 = 7;
    const PAYLOAD: usize = 1000;
    const REPLY: usize = 300;
    let server = CountingServer::start(REPLY);
    probes
        .add_endpoint(endpoint::key_of(server.addr), EndpointKind::ApiServer)
        .expect("add endpoint");
    // Traffic to another port from another cgroup must not be counted.
    let other = CountingServer::start(REPLY);

    let pod =
        cgroup::ChildGroup::create(&root, &format!("headroom-test-pod-{}", std::process::id()))
            .expect("create cgroup");
    let bystander = cgroup::ChildGroup::create(
        &root,
        &format!("headroom-test-other-{}", std::process::id()),
    )
    .expect("create cgroup");

    let payload = "p".repeat(PAYLOAD);
    let client = |port: u16| {
        format!(
            "for i in $(seq {CONNECTIONS}); do exec 3<>/dev/tcp/127.0.0.1/{port}; head -c {REPLY} <&3 >/dev/null; printf '%s' '{payload}' >&3; exec 3>&-; done"
        )
    };
    let mut events = probes.take_events().expect("events ring buffer");
    let client_pid = run_in_cgroup(&pod, &client(server.addr.port()));
    run_in_cgroup(&bystander, &client(other.addr.port()));

    let (accepted, bytes_read) = server.wait_for(CONNECTIONS);
    assert_eq!(
        accepted, CONNECTIONS,
        "the server did not see every connection"
    );
    assert_eq!(
        bytes_read,
        CONNECTIONS * PAYLOAD as u64,
        "the server did not read every byte"
    );
    other.wait_for(CONNECTIONS);

    let traffic = probes.traffic().expect("read traffic map");
    let mut counted = TrafficCounters::default();
    for (key, counters) in &traffic {
        if key.cgroup_id == pod.id() && key.kind == EndpointKind::ApiServer as u32 {
            counted.accumulate(counters);
        }
    }
    assert_eq!(
        counted.connects, accepted,
        "connects counted by the kernel vs accepted by the server"
    );
    assert_eq!(
        counted.sent_bytes, bytes_read,
        "payload bytes sent, kernel vs server"
    );
    assert_eq!(
        counted.received_bytes,
        CONNECTIONS * REPLY as u64,
        "payload bytes received, kernel vs what the server wrote"
    );
    assert!(
        traffic.keys().all(|k| k.cgroup_id != bystander.id()),
        "traffic to an unmeasured port was counted: {traffic:?}"
    );
    // The events: one Connect per connection, owned by the shell that connected, and a
    // Close for each of those sockets.
    let (mut connects, mut closes) = (Vec::new(), Vec::new());
    events::drain(&mut events, |ev| match ev.expect("decodable event") {
        Event::Connect(c) if c.header.cgroup_id == pod.id() => connects.push(c),
        Event::Close(c) if c.header.cgroup_id == pod.id() => closes.push(c.header.cookie),
        _ => {}
    });
    assert_eq!(
        connects.len() as u64,
        CONNECTIONS,
        "Connect events: {connects:?}"
    );
    for c in &connects {
        assert_eq!(c.header.tgid, client_pid, "owner of the socket");
        assert_eq!(c.protocol, 6);
        assert!(c.comm.starts_with(b"bash\0"), "comm {:?}", c.comm);
        assert!(
            closes.contains(&c.header.cookie),
            "no Close for socket {}",
            c.header.cookie
        );
    }
    let per_process = traffic
        .iter()
        .filter(|(k, _)| k.cgroup_id == pod.id())
        .map(|(k, _)| k.tgid)
        .collect::<Vec<_>>();
    assert_eq!(
        per_process,
        vec![client_pid],
        "traffic attributed to the connecting process"
    );

    let drops = probes.drops().expect("read drops");
    for lost in [Drop::TrafficInsert, Drop::EventLost, Drop::SocketInsert] {
        assert_eq!(
            drops[lost as usize], 0,
            "the kernel dropped {lost:?} events"
        );
    }
}

/// Endpoints come and go in a cluster (EndpointSlice updates): a removed endpoint is no
/// longer measured, and removing one endpoint of a port leaves the port's others measured.
#[test]
fn removed_endpoints_are_no_longer_measured() {
    require_root();
    let root = cgroup::find_root().expect("cgroup v2 mount");
    let mut probes = Probes::attach(&root)
        .unwrap_or_else(|e| panic!("could not load and attach the kernel programs: {e}"));
    const PAYLOAD: usize = 700;
    let (kept, removed) = (CountingServer::start(0), CountingServer::start(0));
    let removed_key = endpoint::key_of(removed.addr);
    probes
        .add_endpoint(endpoint::key_of(kept.addr), EndpointKind::ApiServer)
        .expect("add");
    probes
        .add_endpoint(removed_key, EndpointKind::ApiServer)
        .expect("add");
    // Another address on the removed endpoint's port keeps that port's bit set.
    let twin = SocketAddr::from(([127, 0, 0, 2], removed.addr.port()));
    probes
        .add_endpoint(endpoint::key_of(twin), EndpointKind::ApiServer)
        .expect("add");

    let pod = crate::child_group("remove-endpoint");
    let send = |port: u16| {
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; printf '%s' '{}' >&3; exec 3>&-",
            "q".repeat(PAYLOAD)
        )
    };
    let sent = |probes: &Probes| -> u64 {
        let traffic = probes.traffic().expect("read traffic map");
        traffic
            .iter()
            .filter(|(k, _)| k.cgroup_id == pod.id())
            .map(|(_, c)| c.sent_bytes)
            .sum()
    };
    run_in_cgroup(&pod, &send(removed.addr.port()));
    removed.wait_for(1);
    assert_eq!(sent(&probes), PAYLOAD as u64, "measured before removal");

    probes
        .remove_endpoint(removed_key)
        .expect("remove endpoint");
    probes
        .remove_endpoint(removed_key)
        .expect("removing it again is not an error");
    run_in_cgroup(&pod, &send(removed.addr.port()));
    run_in_cgroup(&pod, &send(kept.addr.port()));
    removed.wait_for(2);
    kept.wait_for(1);
    assert_eq!(
        sent(&probes),
        2 * PAYLOAD as u64,
        "after removal only the kept endpoint's bytes are added"
    );
}
