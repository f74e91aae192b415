//! The DNS harness itself, no kernel programs: dnsmasq's query log is exact ground truth
//! for what dig and getent sent, and getent's tries show the search-list expansion that
//! the collector must count as one lookup.
mod support;

use std::{net::IpAddr, process::Output};

use support::dns::{
    Client, Dnsmasq, EXAMPLE_COM, EXAMPLE_COM_V4, EXAMPLE_COM_V6, KUBERNETES, KUBERNETES_SRV,
    KUBERNETES_V4, LoggedQuery, dig_status, getent_addresses, search_tries,
};

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the DNS harness binds port 53 and mounts: run it as root"
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

fn asked(queries: &[LoggedQuery]) -> Vec<(String, String)> {
    queries
        .iter()
        .map(|q| (q.qtype.clone(), q.name.clone()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(t, n)| (t.to_string(), n.to_string()))
        .collect()
}

#[test]
fn the_log_counts_exactly_the_queries_dig_sent_over_udp_and_tcp() {
    require_root();
    let server = Dnsmasq::start();
    assert!(
        server.queries().is_empty(),
        "a fresh server has seen nothing"
    );

    let answers = [
        (server.dig(EXAMPLE_COM, "A"), "NOERROR"),
        (server.dig(EXAMPLE_COM, "AAAA"), "NOERROR"),
        (server.dig_tcp(KUBERNETES, "A"), "NOERROR"),
        (server.dig(KUBERNETES, "AAAA"), "NOERROR"),
        (server.dig(KUBERNETES_SRV, "SRV"), "NOERROR"),
        (server.dig("nothere.cluster.local", "A"), "NXDOMAIN"),
        (
            server.dig_tcp("nothere.svc.cluster.local", "AAAA"),
            "NXDOMAIN",
        ),
        (server.dig("example.net", "A"), "REFUSED"),
    ];
    for (client, status) in &answers {
        let output = client.run();
        assert_eq!(
            dig_status(succeeded(&output)).as_deref(),
            Some(*status),
            "{client:?}"
        );
    }
    let stdout = String::from_utf8_lossy(&server.dig(EXAMPLE_COM, "A").run().stdout).into_owned();
    assert!(stdout.contains(&EXAMPLE_COM_V4.to_string()), "{stdout}");

    let queries = server.wait_for_queries(answers.len() + 1);
    assert_eq!(
        asked(&queries),
        pairs(&[
            ("A", EXAMPLE_COM),
            ("AAAA", EXAMPLE_COM),
            ("A", KUBERNETES),
            ("AAAA", KUBERNETES),
            ("SRV", KUBERNETES_SRV),
            ("A", "nothere.cluster.local"),
            ("AAAA", "nothere.svc.cluster.local"),
            ("A", "example.net"),
            ("A", EXAMPLE_COM),
        ])
    );
    assert!(
        queries
            .iter()
            .all(|q| q.from.ip().is_loopback() && q.from.port() != 0)
    );
    let serials: Vec<u64> = queries.iter().map(|q| q.serial).collect();
    assert!(serials.windows(2).all(|w| w[0] < w[1]), "{serials:?}");
}

#[test]
fn getent_tries_the_search_list_before_the_name_itself() {
    require_root();
    let server = Dnsmasq::start();

    // example.com: three NXDOMAIN tries under the suffixes, then found as is; A and
    // AAAA side by side for each try.
    let output = server.getent_ahosts(EXAMPLE_COM).run();
    let v6: IpAddr = EXAMPLE_COM_V6.parse().unwrap();
    assert_eq!(
        getent_addresses(succeeded(&output)),
        [IpAddr::V4(EXAMPLE_COM_V4), v6]
    );
    let tries = search_tries(EXAMPLE_COM);
    assert_eq!(tries.len(), 4);
    let expected: Vec<(String, String)> = tries
        .iter()
        .flat_map(|name| {
            [
                ("A".to_owned(), name.clone()),
                ("AAAA".to_owned(), name.clone()),
            ]
        })
        .collect();
    let queries = server.wait_for_queries(expected.len());
    assert_eq!(asked(&queries), expected);
    // glibc sends A and AAAA of a try from one socket (and opens a new one per try):
    // the local port tells tries apart, not lookups.
    assert!(
        queries.chunks(2).all(|try_| try_[0].from == try_[1].from),
        "{queries:?}"
    );

    // kubernetes.default: found at the second try, under svc.cluster.local.
    let output = server.getent_ahosts("kubernetes.default").run();
    assert_eq!(
        getent_addresses(succeeded(&output)),
        [IpAddr::V4(KUBERNETES_V4)]
    );
    let queries = server.wait_for_queries(expected.len() + 4);
    assert_eq!(
        asked(&queries[expected.len()..]),
        pairs(&[
            ("A", "kubernetes.default.ns1.svc.cluster.local"),
            ("AAAA", "kubernetes.default.ns1.svc.cluster.local"),
            ("A", KUBERNETES),
            ("AAAA", KUBERNETES),
        ])
    );
    assert_eq!(
        &search_tries("kubernetes.default")[..2],
        ["kubernetes.default.ns1.svc.cluster.local", KUBERNETES]
    );

    // An absolute name is tried once; A only with ahostsv4.
    let output = server.getent_ahostsv4("example.com.").run();
    assert_eq!(
        getent_addresses(succeeded(&output)),
        [IpAddr::V4(EXAMPLE_COM_V4)]
    );
    let queries = server.wait_for_queries(expected.len() + 5);
    assert_eq!(
        asked(&queries[expected.len() + 4..]),
        pairs(&[("A", EXAMPLE_COM)])
    );
    assert_eq!(search_tries("example.com."), [EXAMPLE_COM]);
}

#[test]
fn a_name_found_nowhere_is_tried_everywhere_and_getent_fails() {
    require_root();
    let server = Dnsmasq::start();
    let output = server.getent_ahostsv4("nothere").run();
    assert_eq!(output.status.code(), Some(2), "getent: not found");
    let queries = server.wait_for_queries(5);
    // Three NXDOMAIN tries, then the bare name twice: REFUSED makes glibc ask again.
    assert_eq!(
        asked(&queries),
        pairs(&[
            ("A", "nothere.ns1.svc.cluster.local"),
            ("A", "nothere.svc.cluster.local"),
            ("A", "nothere.cluster.local"),
            ("A", "nothere"),
            ("A", "nothere"),
        ])
    );
}

#[test]
fn servers_run_side_by_side_with_their_own_logs() {
    require_root();
    let first = Dnsmasq::start();
    let second = Dnsmasq::start();
    assert_ne!(first.addr(), second.addr());
    assert!(first.addr().is_loopback() && second.addr().is_loopback());
    assert_eq!(second.socket_addr().port(), 53);
    succeeded(&second.dig(EXAMPLE_COM, "A").run());
    assert_eq!(second.wait_for_queries(1).len(), 1);
    assert!(first.queries().is_empty());

    // Dropping a server frees its address and removes its files.
    let (addr, resolv_conf) = (first.addr(), first.resolv_conf());
    assert!(resolv_conf.exists());
    drop(first);
    assert!(!resolv_conf.exists());
    assert!(
        std::net::UdpSocket::bind((addr, 53)).is_ok(),
        "{addr}:53 released"
    );
}

#[test]
fn clients_run_inside_a_cgroup() {
    require_root();
    let root = collector::cgroup::find_root().expect("a cgroup v2 hierarchy");
    let group = collector::cgroup::ChildGroup::create(
        &root,
        &format!("headroom-dns-harness-{}", std::process::id()),
    )
    .expect("create a child cgroup");
    let relative = group
        .path()
        .strip_prefix(&root)
        .unwrap()
        .display()
        .to_string();

    // The exec'd program is in the group (cgroup v2 line `0::/PATH`).
    let cat = Client::new(vec!["cat".into(), "/proc/self/cgroup".into()]);
    let output = cat.run_in_cgroup(&group.procs_file());
    let membership = String::from_utf8_lossy(&succeeded(&output).stdout).into_owned();
    assert!(
        membership.lines().any(|l| l == format!("0::/{relative}")),
        "{membership}"
    );

    // dig and getent work the same from there.
    let server = Dnsmasq::start();
    let output = server
        .dig(EXAMPLE_COM, "A")
        .run_in_cgroup(&group.procs_file());
    assert_eq!(dig_status(succeeded(&output)).as_deref(), Some("NOERROR"));
    let output = server
        .getent_ahostsv4("kubernetes.default")
        .run_in_cgroup(&group.procs_file());
    assert_eq!(
        getent_addresses(succeeded(&output)),
        [IpAddr::V4(KUBERNETES_V4)]
    );
    assert_eq!(server.wait_for_queries(3).len(), 3);

    // The shell form runs too (for a caller that builds its own `sh -c`).
    let shell = server.dig(KUBERNETES, "A").shell();
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(&shell)
        .output()
        .unwrap();
    assert_eq!(
        dig_status(succeeded(&output)).as_deref(),
        Some("NOERROR"),
        "{shell}"
    );
    assert_eq!(server.wait_for_queries(4).len(), 4);
}
