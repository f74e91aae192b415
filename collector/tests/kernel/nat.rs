//! Service addresses rewritten by kube-proxy. A pod sends to the kube-dns Service's
//! cluster IP; netfilter's DNAT (nat OUTPUT, as kube-proxy's iptables and nftables modes
//! do) rewrites it to a CoreDNS pod before `cgroup_skb/egress` sees the packet, and the
//! replies come back with the Service address restored. The test builds that in a
//! network namespace of its own: an nftables DNAT from a cluster IP to a dnsmasq there.
use std::{net::SocketAddr, process::Command};

use collector_ebpf::EndpointKind;

use crate::{
    apiserver::{Collector, identity_of},
    child_group, require_root, run_in_cgroup,
};

/// The Service address pods send to, and where DNAT takes it (inside the namespace).
const CLUSTER_IP: &str = "10.96.0.10";
const COREDNS: &str = "127.0.0.53";

#[test]
fn dns_to_a_service_address_that_dnat_rewrites_is_measured_both_ways() {
    let service: SocketAddr = format!("{CLUSTER_IP}:53").parse().expect("address");
    check_dnat(53, &[service]);
}

/// kube-dns Services whose port 53 maps to another target port (CoreDNS on 1053): after
/// the DNAT the packets go to port 1053, which the collector measures on every address
/// once discovery has put the Service's target port in (as `[::]:1053`, beside the
/// default `[::]:53`).
#[test]
fn dns_dnat_to_another_target_port_is_measured_both_ways() {
    let any = |port| SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    check_dnat(1053, &[any(53), any(1053)]);
}

/// A pod asks the cluster IP on port 53; nftables DNATs it to dnsmasq on `target_port`.
/// The collector measures `endpoints` as DNS.
fn check_dnat(target_port: u16, endpoints: &[SocketAddr]) {
    require_root();
    let nft = Command::new("nft").arg("--version").output();
    assert!(
        nft.is_ok_and(|o| o.status.success()),
        "nft is missing: apt-get install nftables (cargo xtask setup does)"
    );
    const FOUND: u64 = 6;
    const MISSING: u64 = 4;
    let measured: Vec<(SocketAddr, EndpointKind)> =
        endpoints.iter().map(|&a| (a, EndpointKind::Dns)).collect();
    let mut collector = Collector::attach(&measured);
    let pod = child_group(&format!("nat-dns-{target_port}"));
    let who = identity_of(&pod);
    let log = std::env::temp_dir().join(format!(
        "headroom-nat-dns-{target_port}-{}.log",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);

    let dig = |name: &str, extra: &str| {
        format!("dig @{CLUSTER_IP} +tries=1 +time=3 {extra} {name} > /dev/null")
    };
    let queries: Vec<String> = (0..FOUND)
        .map(|i| dig(&format!("n{i}.svc.test"), ""))
        .chain((0..MISSING).map(|i| dig(&format!("m{i}.nx.test"), "")))
        .chain([dig("tcp.svc.test", "+tcp")])
        .collect();
    let script = format!(
        r#"exec unshare --net bash -euc '
ip link set lo up
ip route add {CLUSTER_IP}/32 dev lo src 127.0.0.1
nft -f - <<NFT
table ip kube-proxy {{
  chain output {{
    type nat hook output priority -100;
    ip daddr {CLUSTER_IP} udp dport 53 dnat to {COREDNS}:{target_port}
    ip daddr {CLUSTER_IP} tcp dport 53 dnat to {COREDNS}:{target_port}
  }}
}}
NFT
dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --bind-interfaces --listen-address={COREDNS} --port={target_port} --user=root --pid-file \
  --address=/svc.test/10.0.0.7 --address=/nx.test/ \
  --log-queries --log-facility={log} &
for i in $(seq 50); do
  ss -lun | grep -q "{COREDNS}:{target_port} " && break
  sleep 0.1
done
{queries}
kill %1
wait || true
'"#,
        log = log.display(),
        queries = queries.join("\n"),
    );
    run_in_cgroup(&pod, &script);

    // Ground truth: what dnsmasq answered through the DNAT (readiness is a look at its
    // socket, not a query).
    let logged = std::fs::read_to_string(&log).expect("dnsmasq log");
    let _ = std::fs::remove_file(&log);
    let served = logged.lines().filter(|l| l.contains("query[")).count() as u64;
    assert_eq!(served, FOUND + MISSING + 1, "dnsmasq log:\n{logged}");

    let snap = collector.snapshot_when(|snap| {
        snap.workloads
            .get(&who)
            .and_then(|w| w.dns.as_ref())
            .is_some_and(|d| d.responses.values().sum::<u64>() >= served)
    });
    let dns = snap
        .workloads
        .get(&who)
        .and_then(|w| w.dns.clone())
        .unwrap_or_default();
    println!(
        "through DNAT: server answered {served} | collector queries {:?} responses {:?} lookups {}",
        dns.queries, dns.responses, dns.lookups
    );
    assert_eq!(
        dns.queries.get("A").copied(),
        Some(served),
        "queries sent to the Service address (DNAT rewrote them before egress)"
    );
    assert_eq!(dns.responses.get("NOERROR").copied(), Some(FOUND + 1));
    assert_eq!(dns.responses.get("NXDOMAIN").copied(), Some(MISSING));
    assert_eq!(
        dns.duration.count(),
        served,
        "every response matched to its query"
    );
}
