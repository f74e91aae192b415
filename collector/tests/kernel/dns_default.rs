//! DNS measured as the collector measures it with no configuration: port 53 on any
//! address (the `[::]:53` any-address entry `--dns-port` puts in), client side only.
//! Everything runs in a network namespace of its own, where dnsmasq serves a
//! NodeLocal-DNSCache-style link-local address and ::1, from a cgroup of its own that
//! stands for a DNS server on the node; dig asks it over UDP, TCP and IPv6 from a pod's
//! cgroup. dnsmasq's log is the ground truth.
//!
//! And node processes are named by their executable: a copy of dig with a name longer
//! than the kernel's 15-byte comm, whose queries leave from a thread it renamed
//! (`isc-net-0000`), and which has exited before the collector names it.
use std::{
    net::{Ipv6Addr, SocketAddr},
    path::Path,
};

use collector::{
    cgroup::{self, ChildGroup},
    metrics::{DnsStats, Identity, Snapshot},
};
use collector_ebpf::EndpointKind;

use crate::{
    apiserver::{Collector, identity_of},
    child_group, require_root, run_in_cgroup,
};

/// NodeLocal DNSCache's usual address.
const NODE_LOCAL: &str = "169.254.20.10";

/// The any-address entry for port 53, as the collector's default config makes it.
fn port_53_anywhere() -> [(SocketAddr, EndpointKind); 1] {
    [(
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 53),
        EndpointKind::Dns,
    )]
}

fn dns_of(snap: &Snapshot, who: &Identity) -> DnsStats {
    snap.workloads
        .get(who)
        .and_then(|w| w.dns.clone())
        .unwrap_or_default()
}

/// Runs `clients` (shell lines) in `pod`, inside a new network namespace where dnsmasq
/// (moved into `server`'s cgroup) answers on NODE_LOCAL and ::1, port 53:
/// `*.svc.test` found, `*.nx.test` NXDOMAIN. Returns dnsmasq's log.
fn with_dnsmasq(pod: &ChildGroup, server: &ChildGroup, clients: &[String]) -> String {
    let group = pod
        .path()
        .file_name()
        .expect("a named cgroup")
        .to_string_lossy();
    let log = std::env::temp_dir().join(format!("{group}-dnsmasq.log"));
    let _ = std::fs::remove_file(&log);
    let script = format!(
        r#"exec unshare --net bash -euc '
ip link set lo up
ip addr add {NODE_LOCAL}/32 dev lo
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address={NODE_LOCAL} --listen-address=::1 --port=53 \
  --user=root --pid-file --address=/svc.test/10.0.0.7 --address=/nx.test/ \
  --log-queries --log-facility={log} &
echo $! > {server_procs}
for i in $(seq 100); do
  ss -lun | grep -q "{NODE_LOCAL}:53" && ss -lun | grep -q "\[::1\]:53" && break
  sleep 0.05
done
{clients}
kill %1
wait || true
'"#,
        log = log.display(),
        server_procs = server.procs_file().display(),
        clients = clients.join("\n"),
    );
    run_in_cgroup(pod, &script);
    let logged = std::fs::read_to_string(&log).expect("dnsmasq log");
    let _ = std::fs::remove_file(&log);
    logged
}

/// Queries dnsmasq logged, and how many it answered NXDOMAIN.
fn served(logged: &str) -> (u64, u64) {
    let queries = logged.lines().filter(|l| l.contains("query[")).count() as u64;
    let nx = logged
        .lines()
        .filter(|l| l.contains("config ") && l.contains("is NXDOMAIN"))
        .count() as u64;
    (queries, nx)
}

#[test]
fn dns_to_any_server_on_port_53_is_measured_client_side_only() {
    require_root();
    const FOUND: u64 = 5;
    const MISSING: u64 = 3;
    let mut collector = Collector::attach(&port_53_anywhere());
    let pod = child_group("dns-any-pod");
    let server = child_group("dns-any-server");
    let dig = |at: &str, name: &str, extra: &str| {
        format!("dig @{at} +tries=1 +time=3 {extra} {name} > /dev/null")
    };
    let clients: Vec<String> = (0..FOUND)
        .map(|i| dig(NODE_LOCAL, &format!("n{i}.svc.test"), ""))
        .chain((0..MISSING).map(|i| dig(NODE_LOCAL, &format!("m{i}.nx.test"), "")))
        .chain([
            // dig's TCP, as a resolver's fallback after a truncated answer.
            dig(NODE_LOCAL, "tcp.svc.test", "+tcp"),
            dig("::1", "v6.svc.test", ""),
            dig("::1", "v6.svc.test", "AAAA"),
            dig("::1", "v6tcp.svc.test", "+tcp"),
        ])
        .collect();
    let logged = with_dnsmasq(&pod, &server, &clients);
    let (queries, nx) = served(&logged);
    assert_eq!(queries, FOUND + MISSING + 4, "dnsmasq log:\n{logged}");
    assert_eq!(nx, MISSING, "dnsmasq log:\n{logged}");

    let (pod_id, server_id) = (identity_of(&pod), identity_of(&server));
    let snap = collector
        .snapshot_when(|snap| dns_of(snap, &pod_id).responses.values().sum::<u64>() >= queries);
    let (client, server_side) = (dns_of(&snap, &pod_id), dns_of(&snap, &server_id));
    println!(
        "any address, port 53: server answered {queries} ({nx} NXDOMAIN) | client queries {:?} \
         responses {:?} latencies {} | the server's own cgroup: queries {:?} responses {:?}",
        client.queries,
        client.responses,
        client.duration.count(),
        server_side.queries,
        server_side.responses
    );
    assert_eq!(client.queries.values().sum::<u64>(), queries);
    assert_eq!(client.queries.get("AAAA").copied(), Some(1));
    assert_eq!(client.responses.get("NXDOMAIN").copied(), Some(MISSING));
    assert_eq!(client.responses.values().sum::<u64>(), queries);
    assert_eq!(client.duration.count(), queries, "every answer matched");
    assert!(
        server_side.queries.is_empty() && server_side.responses.is_empty(),
        "the server is not a client of itself: {server_side:?}"
    );
}

#[test]
fn a_node_process_is_named_by_its_executable_not_its_thread() {
    require_root();
    const QUERIES: u64 = 4;
    let mut collector = Collector::attach(&port_53_anywhere());
    // A transient scope, as systemd-run or a shell session makes: its processes are
    // named by their own name, not the group's.
    let root = cgroup::find_root().expect("cgroup v2 mount");
    let scope = ChildGroup::create(
        &root,
        &format!("headroom-test-names-{}.scope", std::process::id()),
    )
    .expect("create scope");
    let server = child_group("names-server");
    let dir = std::env::temp_dir().join(format!("headroom-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    // 30 bytes: the kernel's comm keeps 15 of them.
    let long_name = "headroom-long-named-dns-client";
    let exe = dir.join(long_name);
    std::fs::copy(which("dig"), &exe).expect("copy dig");
    let clients: Vec<String> = (0..QUERIES)
        .map(|i| {
            format!(
                "{} @{NODE_LOCAL} +tries=1 +time=3 t{i}.svc.test > /dev/null",
                exe.display()
            )
        })
        .collect();
    let logged = with_dnsmasq(&scope, &server, &clients);
    std::fs::remove_dir_all(&dir).expect("remove scratch dir");
    assert_eq!(served(&logged).0, QUERIES, "dnsmasq log:\n{logged}");

    let named = Identity::node_process(long_name);
    let snap = collector
        .snapshot_when(|snap| dns_of(snap, &named).responses.values().sum::<u64>() >= QUERIES);
    let dns_names: Vec<&str> = snap
        .workloads
        .iter()
        .filter(|(_, w)| w.dns.as_ref().is_some_and(|d| !d.queries.is_empty()))
        .map(|(id, _)| id.workload.as_str())
        .collect();
    println!("workloads with DNS queries: {dns_names:?}");
    assert_eq!(
        dns_of(&snap, &named).queries.values().sum::<u64>(),
        QUERIES,
        "all of the client's queries under its executable's full name"
    );
    for wrong in ["isc-net-0000", "headroom-long-n"] {
        assert!(
            !dns_names.contains(&wrong),
            "no series named by a thread or a cut comm ({wrong}): {dns_names:?}"
        );
    }
    drop(scope);
}

fn which(program: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin"] {
        let path = Path::new(dir).join(program);
        if path.is_file() {
            return path;
        }
    }
    panic!("{program} is not installed: apt-get install dnsutils (cargo xtask setup does)");
}
