//! DNS through the Agent, the code the collector binary runs: dig and getent (glibc, with
//! a pod's resolv.conf in a mount namespace of its own) in child cgroups that stand for
//! pods, against dnsmasq on a loopback address of its own. dnsmasq's log is the ground
//! truth: queries per qtype and NXDOMAIN answers exact, search-list tries counted as
//! expansions, every answer's latency observed, TCP counted like UDP, IPv6 like IPv4; and
//! 10,000 distinct names leave the series and the memory where they were.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use collector::metrics::{DnsStats, Identity, Metrics, SharedSnapshot, Snapshot};
use collector_ebpf::EndpointKind;

use crate::{
    apiserver::{Background, Collector, identity_of, in_cgroup},
    child_group, require_root,
    support::dns::{
        Client, Dnsmasq, EXAMPLE_COM, EXAMPLE_COM_V4, KUBERNETES, KUBERNETES_SRV, KUBERNETES_V4,
        LoggedQuery, dig_status, getent_addresses,
    },
};

fn dns_of(snap: &Snapshot, who: &Identity) -> DnsStats {
    snap.workloads
        .get(who)
        .and_then(|w| w.dns.clone())
        .unwrap_or_default()
}

/// Queries per qtype, as the server logged them.
fn per_qtype(queries: &[LoggedQuery]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for q in queries {
        *counts.entry(q.qtype.clone()).or_default() += 1;
    }
    counts
}

/// How many of `queries` the server answered NXDOMAIN.
fn nxdomains(server: &Dnsmasq, queries: &[LoggedQuery]) -> u64 {
    let serials: BTreeSet<u64> = server.nxdomain_serials().into_iter().collect();
    queries
        .iter()
        .filter(|q| serials.contains(&q.serial))
        .count() as u64
}

/// Snapshots until the identity's responses number its queries (every answer seen).
fn answered(collector: &mut Collector, who: &[&Identity], queries: u64) -> Snapshot {
    collector.snapshot_when(|snap| {
        let total: u64 = who
            .iter()
            .map(|id| dns_of(snap, id).responses.values().sum::<u64>())
            .sum();
        total >= queries
    })
}

fn print_dns(label: &str, server_queries: &BTreeMap<String, u64>, nx: u64, dns: &DnsStats) {
    println!(
        "{label}: queries server {server_queries:?} collector {:?} | NXDOMAIN server {nx} \
         collector {} | responses {:?} | lookups {} expansions {} | latency observations {} \
         sum {:.6} s",
        dns.queries,
        dns.responses.get("NXDOMAIN").copied().unwrap_or(0),
        dns.responses,
        dns.lookups,
        dns.search_expansions,
        dns.duration.count(),
        dns.duration.sum_seconds,
    );
}

fn succeeded(output: &Output) -> &Output {
    assert!(
        output.status.success(),
        "client failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// dig over UDP from one pod and over TCP from another (both in the root network
/// namespace): queries per qtype and NXDOMAIN exact against dnsmasq's log, each answer
/// matched to its query (one latency observation per query), no expansions (dig uses no
/// search list).
#[test]
fn dig_queries_and_nxdomain_are_exact_over_udp_and_tcp() {
    require_root();
    check_digs(&Dnsmasq::start(), "ipv4");
}

/// The same over IPv6, dnsmasq on ::1 (at a port of its own): dig's sockets connect
/// through `cgroup/connect6`, and the packet hooks read IPv6 headers.
#[test]
fn dig_queries_and_nxdomain_are_exact_over_ipv6_udp_and_tcp() {
    require_root();
    check_digs(&Dnsmasq::start_ipv6(), "ipv6");
}

/// dig's UDP and TCP queries from two pods (cgroup names tagged `family`), held to the
/// server's log.
fn check_digs(server: &Dnsmasq, family: &str) {
    let udp_pod = child_group(&format!("dns-dig-udp-{family}"));
    let tcp_pod = child_group(&format!("dns-dig-tcp-{family}"));
    let mut collector = Collector::attach(&[(server.socket_addr(), EndpointKind::Dns)]);
    let (udp_id, tcp_id) = (identity_of(&udp_pod), identity_of(&tcp_pod));

    // A name long enough that its query and answer take the kernel's largest DNS record
    // (over 128 bytes), the others the smallest.
    let long = format!(
        "{}.{}.{}.svc.cluster.local",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(40)
    );
    let udp: [(Client, &str); 7] = [
        (server.dig(EXAMPLE_COM, "A"), "NOERROR"),
        (server.dig(EXAMPLE_COM, "AAAA"), "NOERROR"),
        (server.dig(KUBERNETES, "A"), "NOERROR"),
        (server.dig(KUBERNETES_SRV, "SRV"), "NOERROR"),
        (server.dig("nothere.cluster.local", "A"), "NXDOMAIN"),
        (server.dig("gone.svc.cluster.local", "AAAA"), "NXDOMAIN"),
        (server.dig(&long, "A"), "NXDOMAIN"),
    ];
    run_digs(&mut collector, &udp, &udp_pod.procs_file());
    let udp_queries = server.wait_for_queries(udp.len());
    assert_eq!(udp_queries.len(), udp.len(), "dnsmasq saw every UDP query");
    let tcp: [(Client, &str); 2] = [
        (server.dig_tcp(KUBERNETES, "A"), "NOERROR"),
        (server.dig_tcp("nothere.svc.cluster.local", "A"), "NXDOMAIN"),
    ];
    run_digs(&mut collector, &tcp, &tcp_pod.procs_file());
    let all = server.wait_for_queries(udp.len() + tcp.len());
    assert_eq!(all.len(), udp.len() + tcp.len(), "dnsmasq saw every query");
    let tcp_queries = &all[udp.len()..];

    let snap = answered(&mut collector, &[&udp_id, &tcp_id], all.len() as u64);
    let at = server.socket_addr();
    for (label, who, queries) in [
        (format!("dig @{at} (UDP)"), &udp_id, &udp_queries[..]),
        (format!("dig @{at} +tcp"), &tcp_id, tcp_queries),
    ] {
        let dns = dns_of(&snap, who);
        let (expected, nx) = (per_qtype(queries), nxdomains(server, queries));
        print_dns(&label, &expected, nx, &dns);
        let total = queries.len() as u64;
        assert_eq!(dns.queries, expected, "{label}: queries per qtype");
        assert_eq!(
            dns.responses.get("NXDOMAIN").copied().unwrap_or(0),
            nx,
            "{label}: NXDOMAIN answers"
        );
        assert_eq!(
            dns.responses.values().sum::<u64>(),
            total,
            "{label}: one response per query: {:?}",
            dns.responses
        );
        assert_eq!(
            dns.duration.count(),
            total,
            "{label}: every answer matched to its query"
        );
        assert!(dns.duration.sum_seconds > 0.0, "{label}: latency observed");
        assert_eq!(
            (dns.lookups, dns.search_expansions),
            (total, 0),
            "{label}: each dig is one lookup"
        );
        // Every name asked is among the most asked (fewer than K names), counted at
        // least as often as the server saw it (the table's estimates never undercount).
        let listed = snap.dns_names.get(who).cloned().unwrap_or_default();
        let mut asked: BTreeMap<String, u64> = BTreeMap::new();
        for q in queries {
            let name = q.name.trim_end_matches('.').to_ascii_lowercase();
            *asked.entry(name).or_default() += 1;
        }
        for (name, n) in &asked {
            let top = listed.iter().find(|t| t.name.eq_ignore_ascii_case(name));
            assert!(
                top.is_some_and(|t| t.count >= *n && t.count - t.error <= *n),
                "{label}: {name} asked {n} times; listed {listed:?}"
            );
        }
    }
}

fn run_digs(collector: &mut Collector, digs: &[(Client, &str)], procs: &Path) {
    let outputs = collector.run(
        digs.iter()
            .map(|(c, _)| c.command_in_cgroup(procs))
            .collect(),
    );
    for ((client, status), output) in digs.iter().zip(&outputs) {
        assert_eq!(
            dig_status(succeeded(output)).as_deref(),
            Some(*status),
            "{client:?}"
        );
    }
}

/// glibc with a pod's resolv.conf (`search ns1.svc.cluster.local svc.cluster.local
/// cluster.local`, `options ndots:5`) tries a short name under each suffix first. The
/// collector counts one lookup per intended name and qtype, and the failed tries under
/// the suffixes as expansions; dnsmasq's log says what was really asked and answered.
#[test]
fn getent_search_list_tries_are_expansions() {
    require_root();
    let server = Dnsmasq::start();
    let pod = child_group("dns-getent");
    let mut collector = Collector::attach(&[(server.socket_addr(), EndpointKind::Dns)]);
    let who = identity_of(&pod);
    let procs = pod.procs_file();

    // example.com: found as is after three NXDOMAIN tries; kubernetes.default: found under
    // svc.cluster.local at the second try; nothere: found nowhere (the bare name is
    // REFUSED, which glibc asks again once). A and AAAA side by side each time.
    let v6: IpAddr = crate::support::dns::EXAMPLE_COM_V6
        .parse()
        .expect("an IPv6 address");
    let output = collector.run(vec![
        server.getent_ahosts(EXAMPLE_COM).command_in_cgroup(&procs),
    ]);
    assert_eq!(
        getent_addresses(succeeded(&output[0])),
        [IpAddr::V4(EXAMPLE_COM_V4), v6]
    );
    let output = collector.run(vec![
        server
            .getent_ahosts("kubernetes.default")
            .command_in_cgroup(&procs),
    ]);
    assert_eq!(
        getent_addresses(succeeded(&output[0])),
        [IpAddr::V4(KUBERNETES_V4)]
    );
    let output = collector.run(vec![
        server.getent_ahosts("nothere").command_in_cgroup(&procs),
    ]);
    assert_eq!(output[0].status.code(), Some(2), "getent: not found");

    // Ground truth from the server: every (qtype, name) asked once is a try; the same
    // asked again is a retry; of the tries, one per qtype and getent run is the lookup
    // itself, the others are expansions.
    const RUNS: u64 = 3;
    const QTYPES: u64 = 2;
    let queries = server.wait_for_queries(22);
    let tries: BTreeSet<(String, String)> = queries
        .iter()
        .map(|q| (q.qtype.clone(), q.name.to_ascii_lowercase()))
        .collect();
    let retries = queries.len() as u64 - tries.len() as u64;
    let lookups = RUNS * QTYPES;
    let expansions = tries.len() as u64 - lookups;
    let (expected, nx) = (per_qtype(&queries), nxdomains(&server, &queries));

    let snap = answered(&mut collector, &[&who], queries.len() as u64);
    let dns = dns_of(&snap, &who);
    print_dns("getent ahosts", &expected, nx, &dns);
    println!(
        "getent ahosts: server tries {} retries {retries} → lookups {lookups} expansions \
         {expansions}",
        tries.len()
    );
    assert_eq!(dns.queries, expected, "queries per qtype");
    assert_eq!(
        dns.responses.get("NXDOMAIN").copied().unwrap_or(0),
        nx,
        "NXDOMAIN answers"
    );
    assert_eq!(
        dns.responses.values().sum::<u64>(),
        queries.len() as u64,
        "one response per query: {:?}",
        dns.responses
    );
    assert_eq!(dns.lookups, lookups, "lookups: one per name and qtype");
    assert_eq!(
        dns.search_expansions, expansions,
        "the tries under search suffixes that were not the answer"
    );
    assert_eq!(
        dns.duration.count(),
        queries.len() as u64,
        "every answer matched to its query"
    );
    assert!(dns.duration.sum_seconds > 0.0, "latency observed");
}

/// Lines of the exposition that carry `who`'s labels.
fn series_of(snap: &Snapshot, who: &Identity) -> Vec<String> {
    let shared = SharedSnapshot::new(snap.clone());
    let text = Metrics::new(shared).encode_openmetrics();
    let label = format!("workload=\"{}\"", who.workload);
    text.lines()
        .filter(|l| l.contains(&label))
        .map(str::to_owned)
        .collect()
}

/// The series of one identity without their values: what a new name could add.
fn series_names(lines: &[String], own: &Identity, other: &Identity) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            let key = l.rsplit_once(' ').map_or(l.as_str(), |(k, _)| k);
            key.replace(&own.workload, "WORKLOAD")
                .replace(&other.workload, "WORKLOAD")
        })
        .collect()
}

/// `dig -f FILE`: one process asking the names listed in FILE (`NAME QTYPE` lines), one
/// query at a time, as a crawler or a misconfigured client would.
fn dig_batch(server: &Dnsmasq, file: &Path) -> Command {
    let mut command = Command::new("dig");
    command
        .arg(format!("@{}", server.addr()))
        .arg("-p")
        .arg(server.socket_addr().port().to_string())
        .args(["+tries=1", "+time=3", "+short", "-f"])
        .arg(file);
    command
}

/// `count` distinct names under `cluster.local` (NXDOMAIN each), numbered from `first`,
/// as `dig -f` lines.
fn names(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("n{i:05}.names.cluster.local A\n"))
        .collect()
}

/// What the caps are measured by after each half of the names.
struct Sample {
    heap: usize,
    series: BTreeSet<String>,
}

/// 10,000 distinct names from one process of one pod, counted exactly; yet the pod has the
/// same series as a pod that asked one name (names are never labels), and the DNS
/// tracker's memory does not grow from the first 5,000 names to the next 5,000 (top-K
/// candidates, pending queries and owners are capped). dig reads the names from a FIFO,
/// so the test can look at the collector half-way through the same process.
#[test]
fn ten_thousand_distinct_names_stay_within_the_caps() {
    require_root();
    const HALF: usize = 5_000;
    let server = Dnsmasq::start();
    let pod = child_group("dns-names");
    let one = child_group("dns-one-name");
    let mut collector = Collector::attach(&[(server.socket_addr(), EndpointKind::Dns)]);
    let (who, control) = (identity_of(&pod), identity_of(&one));
    let dir = std::env::temp_dir().join(format!("headroom-dns-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let _cleanup = RemoveDir(dir.clone());

    let single = dir.join("one-name");
    std::fs::write(&single, names(90_000, 1)).expect("write a dig batch file");
    collector.run_ok(vec![in_cgroup(&dig_batch(&server, &single), &one)]);

    let fifo = dir.join("names");
    let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", fifo.display());
    let mut dig = Background::start(in_cgroup(&dig_batch(&server, &fifo), &pod));
    // Opening a FIFO blocks until dig opens it too: a thread writes, each half on a signal.
    let (next_half, halves) = std::sync::mpsc::channel::<usize>();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .open(&fifo)
                .expect("open the FIFO");
            for first in halves {
                std::io::Write::write_all(&mut file, names(first, HALF).as_bytes())
                    .expect("write names");
            }
        })
    };
    let mut samples = Vec::new();
    for half in 0..2 {
        next_half.send(half * HALF).expect("writer alive");
        let asked = (half + 1) * HALF;
        // dig asks one name after another: first wait for the server to have answered
        // them all (5,000 take seconds on a loaded machine), then for the collector.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while server.queries().len() < 1 + asked && std::time::Instant::now() < deadline {
            // Draining meanwhile, as the collector does: the ring buffer holds a few seconds.
            collector.pump_for(std::time::Duration::from_millis(100));
        }
        let snap = answered(&mut collector, &[&who, &control], 1 + asked as u64);
        let logged = server.queries().len();
        let dns = dns_of(&snap, &who);
        let tracker = collector.agent().dns();
        let (heap, stats, config) = (tracker.heap_bytes(), tracker.snapshot(), tracker.config());
        let top = stats
            .owners
            .iter()
            .filter(|o| o.owner.cgroup_id == pod.id())
            .map(|o| o.top_names.len())
            .max()
            .unwrap_or(0);
        let series = series_of(&snap, &who);
        println!(
            "{asked} names: server logged {} | collector queries {:?} responses {:?} | tracker \
             heap {heap} bytes, owners {}/{}, pending {}/{}, top names listed {top}/{} | \
             series of the pod {}, of the one-name pod {}",
            logged - 1,
            dns.queries,
            dns.responses,
            stats.tracker.owners,
            stats.tracker.max_owners,
            stats.tracker.pending,
            stats.tracker.max_pending,
            config.top_names,
            series.len(),
            series_of(&snap, &control).len(),
        );
        assert_eq!(logged, 1 + asked, "dnsmasq saw every query");
        assert_eq!(dns.queries.get("A").copied(), Some(asked as u64), "queries");
        assert_eq!(
            dns.responses.get("NXDOMAIN").copied(),
            Some(asked as u64),
            "NXDOMAIN answers"
        );
        assert_eq!(top, config.top_names, "K names listed, no more");
        assert!(stats.tracker.owners <= stats.tracker.max_owners);
        assert!(stats.tracker.pending <= stats.tracker.max_pending);
        assert!(
            heap < 2 << 20,
            "{heap} bytes of DNS state after {asked} names"
        );
        let pod_series = series_names(&series, &who, &control);
        let control_series = series_names(&series_of(&snap, &control), &control, &who);
        assert_eq!(
            pod_series, control_series,
            "{asked} names must make the same series as one name"
        );
        let text = Metrics::new(SharedSnapshot::new(snap.clone())).encode_openmetrics();
        assert!(
            !text.contains(".names.cluster.local"),
            "a query name leaked into the metrics"
        );
        samples.push(Sample {
            heap,
            series: pod_series,
        });
    }
    drop(next_half);
    writer.join().expect("FIFO writer");
    let status = dig.wait();
    assert!(status.success(), "dig -f: {status}");
    assert!(
        samples[1].heap <= samples[0].heap,
        "the DNS tracker grew from {} to {} bytes between 5,000 and 10,000 names",
        samples[0].heap,
        samples[1].heap
    );
    assert_eq!(
        samples[0].series, samples[1].series,
        "series changed with more names"
    );
}

/// Removes a scratch directory when dropped (also on failure).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
