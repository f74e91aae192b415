use collector_ebpf::event::{self, DNS_CAPTURE};

use super::*;
use crate::dns::{
    LATENCY_BOUNDS_SECONDS,
    message::{PROTOCOL_TCP, PROTOCOL_UDP},
};

const MS: u64 = 1_000_000;
const WEB: Owner = Owner {
    cgroup_id: 4242,
    tgid: 100,
};
const API: Owner = Owner {
    cgroup_id: 4343,
    tgid: 200,
};

/// Encodes a DNS message with one question (uncompressed) and, for responses, `answers`
/// as ANCOUNT (the records themselves are not needed by the tracker).
struct Wire {
    id: u16,
    response: bool,
    opcode: u8,
    truncated: bool,
    rcode: Rcode,
    answers: u16,
    name: String,
    qtype: QType,
}

impl Wire {
    fn query(id: u16, name: &str, qtype: QType) -> Self {
        Self {
            id,
            response: false,
            opcode: 0,
            truncated: false,
            rcode: Rcode::NOERROR,
            answers: 0,
            name: name.to_owned(),
            qtype,
        }
    }

    fn answer(self, rcode: Rcode, answers: u16) -> Self {
        Self {
            response: true,
            rcode,
            answers,
            ..self
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let flags = (u16::from(self.response) << 15)
            | (u16::from(self.opcode) << 11)
            | (u16::from(self.truncated) << 9)
            | 0x0100
            | u16::from(self.rcode.0);
        let mut bytes = Vec::new();
        for word in [self.id, flags, 1, self.answers, 0, 0] {
            bytes.extend(word.to_be_bytes());
        }
        for label in self.name.split('.').filter(|l| !l.is_empty()) {
            bytes.push(label.len() as u8);
            bytes.extend(label.as_bytes());
        }
        bytes.push(0);
        bytes.extend(self.qtype.0.to_be_bytes());
        bytes.extend(1u16.to_be_bytes());
        bytes
    }
}

/// A kernel DNS event as the ring buffer delivers it.
fn event(
    direction: u32,
    owner: Owner,
    local_port: u32,
    ts_ns: u64,
    protocol: u32,
    message: &[u8],
) -> event::Dns {
    let mut payload = [0u8; DNS_CAPTURE];
    let captured = message.len().min(DNS_CAPTURE);
    payload[..captured].copy_from_slice(&message[..captured]);
    event::Dns {
        header: event::Header {
            kind: event::DNS,
            direction,
            ts_ns,
            cgroup_id: owner.cgroup_id,
            cookie: 0,
            tgid: owner.tgid,
            endpoint_kind: collector_ebpf::EndpointKind::Dns as u32,
        },
        protocol,
        payload_len: message.len() as u32,
        captured: captured as u32,
        local_port,
        payload,
    }
}

/// A client process: sends queries from one port, receives responses there; the
/// ingress side does not know the process (tgid 0), as in softirq context.
struct Client {
    owner: Owner,
    port: u32,
    now: u64,
    next_id: u16,
}

impl Client {
    fn new(owner: Owner, port: u32) -> Self {
        Self {
            owner,
            port,
            now: 1_000 * MS,
            next_id: 1,
        }
    }

    fn send(&mut self, tracker: &mut DnsTracker, name: &str, qtype: QType) -> (Recorded, Wire) {
        self.now += MS;
        let wire = Wire::query(self.next_id, name, qtype);
        self.next_id += 1;
        let recorded = tracker.record(&event(
            event::EGRESS,
            self.owner,
            self.port,
            self.now,
            PROTOCOL_UDP,
            &wire.bytes(),
        ));
        (recorded, wire)
    }

    fn receive(&mut self, tracker: &mut DnsTracker, wire: &Wire, after: u64) -> Recorded {
        self.now += after;
        let ingress = Owner {
            tgid: 0,
            ..self.owner
        };
        tracker.record(&event(
            event::INGRESS,
            ingress,
            self.port,
            self.now,
            PROTOCOL_UDP,
            &wire.bytes(),
        ))
    }

    /// glibc getaddrinfo(AF_UNSPEC): per try, A and AAAA side by side, then both
    /// responses; `answered_at` is the try that finds the name.
    fn getaddrinfo(&mut self, tracker: &mut DnsTracker, tries: &[&str], answered_at: usize) {
        for (i, name) in tries.iter().enumerate() {
            let (_, a) = self.send(tracker, name, QType::A);
            let (_, aaaa) = self.send(tracker, name, QType::AAAA);
            let (rcode, answers) = if i == answered_at {
                (Rcode::NOERROR, 1)
            } else {
                (Rcode::NXDOMAIN, 0)
            };
            self.receive(tracker, &a.answer(rcode, answers), MS);
            self.receive(tracker, &aaaa.answer(rcode, answers), MS);
            if i == answered_at {
                break;
            }
        }
    }
}

fn tracker() -> DnsTracker {
    DnsTracker::new(DnsConfig::default()).unwrap()
}

fn owner(tracker: &DnsTracker, owner: Owner) -> OwnerDns {
    tracker.owner_snapshot(owner).expect("owner tracked")
}

#[test]
fn a_real_response_is_matched_to_its_real_query() {
    let query = include_bytes!("../message/fixtures/a-example-com.query.bin");
    let response = include_bytes!("../message/fixtures/a-example-com.response.bin");
    let mut tracker = tracker();
    let sent = event(event::EGRESS, WEB, 40_000, 5_000 * MS, PROTOCOL_UDP, query);
    assert_eq!(tracker.record(&sent), Recorded::Query(QueryRole::Lookup));
    let received = event(
        event::INGRESS,
        Owner { tgid: 0, ..WEB },
        40_000,
        5_000 * MS + 2_500_000,
        PROTOCOL_UDP,
        response,
    );
    assert_eq!(
        tracker.record(&received),
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: Some(2_500_000)
        }
    );

    let web = owner(&tracker, WEB);
    assert_eq!(web.queries, BTreeMap::from([("A".to_owned(), 1)]));
    assert_eq!(web.responses, BTreeMap::from([("NOERROR".to_owned(), 1)]));
    assert_eq!(
        (web.lookups, web.expansions, web.unmatched_responses),
        (1, 0, 0)
    );
    assert_eq!(web.latency.count(), 1);
    let bucket = LATENCY_BOUNDS_SECONDS
        .iter()
        .position(|&b| 0.0025 <= b)
        .unwrap();
    assert_eq!(web.latency.buckets[bucket], 1);
    assert_eq!(web.latency.sum_ns, 2_500_000);
    assert_eq!(web.top_names[0].name, "example.com");
    assert!(
        tracker.owner_snapshot(Owner { tgid: 0, ..WEB }).is_none(),
        "response went to the sender"
    );
    assert_eq!(tracker.snapshot().tracker.pending, 0);
}

#[test]
fn a_real_tcp_exchange_is_counted_too() {
    let query = include_bytes!("../message/fixtures/tcp-a.query.bin");
    let response = include_bytes!("../message/fixtures/tcp-a.response.bin");
    let mut tracker = tracker();
    tracker.record(&event(
        event::EGRESS,
        WEB,
        41_000,
        10 * MS,
        PROTOCOL_TCP,
        query,
    ));
    let recorded = tracker.record(&event(
        event::INGRESS,
        WEB,
        41_000,
        11 * MS,
        PROTOCOL_TCP,
        response,
    ));
    assert_eq!(
        recorded,
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: Some(MS)
        }
    );
    assert_eq!(owner(&tracker, WEB).queries["A"], 1);
}

#[test]
fn responses_match_only_their_own_query() {
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    let (_, query) = client.send(&mut tracker, "example.com", QType::A);

    // Same question, other id; other port; other qtype; other name: none match.
    let wrong_id = Wire::query(query.id + 1, "example.com", QType::A).answer(Rcode::NOERROR, 1);
    assert_eq!(
        client.receive(&mut tracker, &wrong_id, MS),
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: None
        }
    );
    let mut other_port = Client {
        port: 40_001,
        ..Client::new(WEB, 0)
    };
    other_port.now = client.now;
    other_port.receive(
        &mut tracker,
        &Wire::query(query.id, "example.com", QType::A).answer(Rcode::NOERROR, 1),
        MS,
    );
    client.receive(
        &mut tracker,
        &Wire::query(query.id, "example.com", QType::AAAA).answer(Rcode::NOERROR, 1),
        MS,
    );
    client.receive(
        &mut tracker,
        &Wire::query(query.id, "example.org", QType::A).answer(Rcode::NOERROR, 1),
        MS,
    );
    // Another cgroup with the same port and id.
    let mut other_cgroup = Client::new(API, 40_000);
    other_cgroup.now = client.now;
    other_cgroup.receive(&mut tracker, &query.answer(Rcode::NOERROR, 1), MS);
    let query = Wire::query(1, "example.com", QType::A);
    // Case does not matter (0x20 randomisation echoes the case back).
    let echoed = Wire::query(1, "ExAmPlE.cOm", QType::A).answer(Rcode::NOERROR, 1);
    assert!(matches!(
        client.receive(&mut tracker, &echoed, MS),
        Recorded::Response {
            latency_ns: Some(_),
            ..
        }
    ));
    // A second copy of the response finds nothing left to match.
    client.receive(&mut tracker, &query.answer(Rcode::NOERROR, 1), MS);

    let ingress = owner(&tracker, Owner { tgid: 0, ..WEB });
    assert_eq!(ingress.unmatched_responses, 5);
    assert_eq!(
        owner(&tracker, Owner { tgid: 0, ..API }).unmatched_responses,
        1
    );
    let web = owner(&tracker, WEB);
    assert_eq!((web.unmatched_responses, web.latency.count()), (0, 1));
}

#[test]
fn a_question_for_the_root_matches_its_response() {
    // A priming query (`. NS`): the response's name is read but never built as a Name,
    // and the root is compared as the root.
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    let (_, query) = client.send(&mut tracker, ".", QType::NS);
    assert_eq!(
        client.receive(&mut tracker, &query.answer(Rcode::NOERROR, 13), 2 * MS),
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: Some(2 * MS)
        }
    );
    let web = owner(&tracker, WEB);
    assert_eq!((web.queries["NS"], web.unmatched_responses), (1, 0));
    assert_eq!(web.top_names[0].name, ".");
}

#[test]
fn different_socket_cookies_do_not_match() {
    let mut tracker = tracker();
    let wire = Wire::query(7, "example.com", QType::A);
    let mut sent = event(event::EGRESS, WEB, 40_000, MS, PROTOCOL_UDP, &wire.bytes());
    sent.header.cookie = 11;
    tracker.record(&sent);
    let mut received = event(
        event::INGRESS,
        WEB,
        40_000,
        2 * MS,
        PROTOCOL_UDP,
        &wire.answer(Rcode::NOERROR, 1).bytes(),
    );
    received.header.cookie = 12;
    assert_eq!(
        tracker.record(&received),
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: None
        }
    );
    received.header.cookie = 11;
    assert_eq!(
        tracker.record(&received),
        Recorded::Response {
            rcode: Rcode::NOERROR,
            latency_ns: Some(MS)
        }
    );
}

#[test]
fn queries_without_response_expire_as_unanswered() {
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    let (_, lost) = client.send(&mut tracker, "lost.example", QType::A);
    let (_, kept) = client.send(&mut tracker, "kept.example", QType::A);
    client.receive(&mut tracker, &kept.answer(Rcode::NOERROR, 1), MS);
    let timeout = duration_ns(tracker.config().query_timeout);

    tracker.expire(client.now + timeout - 3 * MS);
    assert_eq!(owner(&tracker, WEB).unanswered, 0, "not yet");
    tracker.expire(client.now + timeout);
    assert_eq!(owner(&tracker, WEB).unanswered, 1);
    assert_eq!(tracker.snapshot().tracker.pending, 0);
    // Its response, too late, is unmatched.
    client.receive(&mut tracker, &lost.answer(Rcode::NOERROR, 1), timeout);
    assert_eq!(
        owner(&tracker, Owner { tgid: 0, ..WEB }).unmatched_responses,
        1
    );
}

#[test]
fn events_age_pending_queries_on_their_own() {
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    client.send(&mut tracker, "lost.example", QType::A);
    client.now += duration_ns(tracker.config().query_timeout) + MS;
    client.send(&mut tracker, "next.example", QType::A);
    assert_eq!(owner(&tracker, WEB).unanswered, 1);
    assert_eq!(tracker.snapshot().tracker.pending, 1);
}

#[test]
fn getaddrinfo_example_com_is_one_lookup_and_three_expansions_per_qtype() {
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    client.getaddrinfo(
        &mut tracker,
        &[
            "example.com.ns1.svc.cluster.local",
            "example.com.svc.cluster.local",
            "example.com.cluster.local",
            "example.com",
        ],
        3,
    );
    let web = owner(&tracker, WEB);
    assert_eq!(
        web.queries,
        BTreeMap::from([("A".to_owned(), 4), ("AAAA".to_owned(), 4)])
    );
    assert_eq!(
        web.responses,
        BTreeMap::from([("NOERROR".to_owned(), 2), ("NXDOMAIN".to_owned(), 6)])
    );
    assert_eq!((web.lookups, web.expansions, web.retries), (2, 6, 0));
    assert_eq!(web.nxdomain, 6);
    assert_eq!(web.latency.count(), 8);

    // Then kubernetes.default: found at the second try.
    client.getaddrinfo(
        &mut tracker,
        &[
            "kubernetes.default.ns1.svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
        ],
        1,
    );
    let web = owner(&tracker, WEB);
    assert_eq!((web.lookups, web.expansions), (4, 8));
}

#[test]
fn two_processes_in_one_cgroup_are_two_owners() {
    let mut tracker = tracker();
    let other = Owner { tgid: 101, ..WEB };
    let mut first = Client::new(WEB, 40_000);
    let mut second = Client::new(other, 40_001);
    // Interleaved: the second process's try must not continue the first's lookup.
    let (_, a) = first.send(&mut tracker, "example.com.svc.cluster.local", QType::A);
    first.receive(&mut tracker, &a.answer(Rcode::NXDOMAIN, 0), MS);
    second.now = first.now;
    second.send(&mut tracker, "example.com.cluster.local", QType::A);
    assert_eq!(owner(&tracker, WEB).lookups, 1);
    assert_eq!(
        (
            owner(&tracker, other).lookups,
            owner(&tracker, other).expansions
        ),
        (1, 0)
    );
}

#[test]
fn a_known_search_list_is_used() {
    let mut tracker = tracker();
    let search = crate::dns::search_list("search svc.cluster.local corp.example\n");
    tracker.set_search_list(WEB, search);
    let mut client = Client::new(WEB, 40_000);
    client.getaddrinfo(
        &mut tracker,
        &["db.svc.cluster.local", "db.corp.example"],
        1,
    );
    assert_eq!(
        (
            owner(&tracker, WEB).lookups,
            owner(&tracker, WEB).expansions
        ),
        (2, 2)
    );
}

#[test]
fn a_truncated_response_then_tcp_is_one_lookup() {
    let mut tracker = tracker();
    let mut client = Client::new(WEB, 40_000);
    let (_, query) = client.send(&mut tracker, "big.example", QType::TXT);
    let truncated = Wire {
        truncated: true,
        ..query.answer(Rcode::NOERROR, 0)
    };
    client.receive(&mut tracker, &truncated, MS);
    let over_tcp = Wire::query(9, "big.example", QType::TXT);
    let recorded = tracker.record(&event(
        event::EGRESS,
        WEB,
        40_002,
        client.now + MS,
        PROTOCOL_TCP,
        &tcp_framed(&over_tcp.bytes()),
    ));
    assert_eq!(recorded, Recorded::Query(QueryRole::Retry));
    let web = owner(&tracker, WEB);
    assert_eq!((web.queries["TXT"], web.lookups, web.retries), (2, 1, 1));
}

fn tcp_framed(message: &[u8]) -> Vec<u8> {
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend(message);
    framed
}

#[test]
fn malformed_and_foreign_traffic_is_counted_apart() {
    let mut tracker = tracker();
    let query = Wire::query(1, "example.com", QType::A);
    // Cut inside the name.
    let cut = &query.bytes()[..15];
    assert!(matches!(
        tracker.record(&event(event::EGRESS, WEB, 1, MS, PROTOCOL_UDP, cut)),
        Recorded::Malformed(MessageError::Truncated { .. })
    ));
    // `captured` beyond the buffer is clamped, not trusted.
    let mut lying = event(event::EGRESS, WEB, 1, MS, PROTOCOL_UDP, &query.bytes());
    lying.captured = 10_000;
    assert!(matches!(tracker.record(&lying), Recorded::Query(_)));
    // The owner is a DNS server: a query arrives, a response leaves.
    assert_eq!(
        tracker.record(&event(
            event::INGRESS,
            WEB,
            53,
            MS,
            PROTOCOL_UDP,
            &query.bytes()
        )),
        Recorded::Ignored
    );
    let response = Wire::query(1, "example.com", QType::A).answer(Rcode::NOERROR, 1);
    assert_eq!(
        tracker.record(&event(
            event::EGRESS,
            WEB,
            53,
            MS,
            PROTOCOL_UDP,
            &response.bytes()
        )),
        Recorded::Ignored
    );
    // A dynamic update (opcode 5).
    let update = Wire {
        opcode: 5,
        ..Wire::query(2, "example.com", QType::SOA)
    };
    assert_eq!(
        tracker.record(&event(
            event::EGRESS,
            WEB,
            2,
            MS,
            PROTOCOL_UDP,
            &update.bytes()
        )),
        Recorded::Ignored
    );
    // Unknown protocol.
    assert!(matches!(
        tracker.record(&event(event::EGRESS, WEB, 2, MS, 1, &query.bytes())),
        Recorded::Malformed(MessageError::Protocol { protocol: 1 })
    ));

    let stats = tracker.snapshot().tracker;
    assert_eq!((stats.malformed, stats.ignored), (2, 3));
    assert_eq!(
        owner(&tracker, WEB).queries["A"],
        1,
        "only the well-formed query"
    );
}

#[test]
fn qtypes_beyond_the_cap_count_as_other() {
    let config = DnsConfig {
        max_qtypes: 3,
        ..DnsConfig::default()
    };
    let mut tracker = DnsTracker::new(config).unwrap();
    let mut client = Client::new(WEB, 40_000);
    for qtype in [
        QType::A,
        QType::AAAA,
        QType::SRV,
        QType::TXT,
        QType(999),
        QType::A,
    ] {
        client.send(&mut tracker, "example.com", qtype);
    }
    let queries = owner(&tracker, WEB).queries;
    assert_eq!(queries.len(), 4, "three types and OTHER: {queries:?}");
    assert_eq!(queries["A"], 2);
    assert_eq!(queries[OTHER_QTYPE], 2);
    assert_eq!(queries.values().sum::<u64>(), 6);
}

#[test]
fn owners_are_capped_and_the_least_recently_seen_is_evicted() {
    let config = DnsConfig {
        max_owners: 3,
        ..DnsConfig::default()
    };
    let mut tracker = DnsTracker::new(config).unwrap();
    let owners: Vec<Owner> = (1..=5)
        .map(|i| Owner {
            cgroup_id: i,
            tgid: i as u32,
        })
        .collect();
    let mut clients: Vec<Client> = owners.iter().map(|o| Client::new(*o, 40_000)).collect();
    for (i, client) in clients.iter_mut().enumerate().take(3) {
        client.now += i as u64 * MS;
        client.send(&mut tracker, "example.com", QType::A);
    }
    // Owner 1 is seen again; owner 4 arrives: owner 2 is the least recently seen.
    clients[0].now += 10 * MS;
    clients[0].send(&mut tracker, "example.com", QType::A);
    clients[3].now += 20 * MS;
    clients[3].send(&mut tracker, "example.com", QType::A);
    let snapshot = tracker.snapshot();
    let kept: Vec<Owner> = snapshot.owners.iter().map(|o| o.owner).collect();
    assert_eq!(kept, [owners[0], owners[2], owners[3]]);
    assert_eq!(
        (snapshot.tracker.owners, snapshot.tracker.owners_evicted),
        (3, 1)
    );
    clients[4].now += 30 * MS;
    clients[4].send(&mut tracker, "example.com", QType::A);
    assert_eq!(tracker.snapshot().tracker.owners_evicted, 2);
    assert!(tracker.owner_snapshot(owners[2]).is_none());
}

#[test]
fn pending_queries_are_capped_and_the_oldest_counts_as_unanswered() {
    let config = DnsConfig {
        max_pending: 4,
        ..DnsConfig::default()
    };
    let mut tracker = DnsTracker::new(config).unwrap();
    let mut client = Client::new(WEB, 40_000);
    let sent: Vec<Wire> = (0..10)
        .map(|i| {
            client
                .send(&mut tracker, &format!("n{i}.example"), QType::A)
                .1
        })
        .collect();
    let stats = tracker.snapshot().tracker;
    assert_eq!((stats.pending, stats.pending_evicted), (4, 6));
    assert_eq!(owner(&tracker, WEB).unanswered, 6);
    // The newest are the ones still matched.
    let last = sent.into_iter().last().unwrap();
    assert!(matches!(
        client.receive(&mut tracker, &last.answer(Rcode::NOERROR, 1), MS),
        Recorded::Response {
            latency_ns: Some(_),
            ..
        }
    ));
}

#[test]
fn ten_thousand_distinct_names_from_one_owner_stay_within_the_caps() {
    let config = DnsConfig::default();
    let mut tracker = DnsTracker::new(config.clone()).unwrap();
    let mut client = Client::new(WEB, 40_000);
    let mut run = |tracker: &mut DnsTracker, names: std::ops::Range<u32>| {
        for i in names {
            // Half answered, half not: the pending table fills as well.
            let name = format!("name-{i:05}.tenant.example.com");
            let (_, query) = client.send(tracker, &name, QType::A);
            if i % 2 == 0 {
                client.receive(tracker, &query.answer(Rcode::NXDOMAIN, 0), 100_000);
            }
        }
    };
    run(&mut tracker, 0..10_000);
    let heap = tracker.heap_bytes();
    let snapshot = tracker.snapshot();

    assert_eq!(
        snapshot.owners.len(),
        1,
        "matched responses belong to the sender"
    );
    let web = &snapshot.owners[0];
    assert_eq!(web.queries["A"], 10_000);
    assert_eq!(web.lookups + web.expansions + web.retries, 10_000);
    assert_eq!(web.top_names.len(), config.top_names, "K names reported");
    assert!(
        web.top_names
            .iter()
            .all(|t| t.count >= 1 && t.name.starts_with("name-"))
    );
    assert_eq!(
        snapshot.tracker.pending, config.max_pending,
        "pending table full, not beyond"
    );
    assert_eq!(
        web.unanswered + snapshot.tracker.pending as u64,
        5_000,
        "every unanswered query accounted"
    );
    assert!(
        heap < 2 << 20,
        "{heap} bytes for one owner and a full pending table"
    );

    // Another 10,000 new names: nothing grows any more.
    run(&mut tracker, 10_000..20_000);
    assert!(
        tracker.heap_bytes() <= heap,
        "{} > {heap}",
        tracker.heap_bytes()
    );
    let snapshot = tracker.snapshot();
    assert_eq!(snapshot.owners[0].top_names.len(), config.top_names);
    assert_eq!(snapshot.tracker.pending, config.max_pending);
}

#[test]
fn a_forgotten_cgroup_leaves_nothing_behind() {
    let mut tracker = tracker();
    Client::new(WEB, 40_000).send(&mut tracker, "example.com", QType::A);
    Client::new(API, 40_000).send(&mut tracker, "example.com", QType::A);
    tracker.forget_cgroup(WEB.cgroup_id);
    let snapshot = tracker.snapshot();
    assert_eq!(
        snapshot.owners.iter().map(|o| o.owner).collect::<Vec<_>>(),
        [API]
    );
    assert_eq!(snapshot.tracker.pending, 1);
}

#[test]
fn bad_configs_are_rejected_with_the_field_name() {
    let zero_owners = DnsConfig {
        max_owners: 0,
        ..DnsConfig::default()
    };
    assert_eq!(
        DnsTracker::new(zero_owners).unwrap_err(),
        DnsConfigError::Zero {
            field: "max_owners"
        }
    );
    let no_window = DnsConfig {
        expansion_window: Duration::ZERO,
        ..DnsConfig::default()
    };
    assert_eq!(
        no_window.validate(),
        Err(DnsConfigError::Zero {
            field: "expansion_window"
        })
    );
    let too_many = DnsConfig {
        top_names: 65,
        ..DnsConfig::default()
    };
    assert_eq!(
        too_many.validate(),
        Err(DnsConfigError::TopExceedsCandidates {
            top_names: 65,
            candidates: 64
        })
    );
    assert!(DnsConfig::default().validate().is_ok());
}

/// Replays `fixtures/getent.trace` (real glibc traffic) as kernel events of one owner.
fn replay_getent_trace(tracker: &mut DnsTracker) {
    let trace = include_str!("fixtures/getent.trace");
    for line in trace
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split(' ').collect();
        let [micros, direction, port, hex] = fields[..] else {
            panic!("bad trace line {line:?}");
        };
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let (direction, owner) = match direction {
            "query" => (event::EGRESS, WEB),
            "response" => (event::INGRESS, Owner { tgid: 0, ..WEB }),
            other => panic!("bad direction {other:?}"),
        };
        let ts = 1_000 * MS + micros.parse::<u64>().unwrap() * 1_000;
        let recorded = tracker.record(&event(
            direction,
            owner,
            port.parse().unwrap(),
            ts,
            PROTOCOL_UDP,
            &bytes,
        ));
        assert!(
            !matches!(recorded, Recorded::Malformed(_) | Recorded::Ignored),
            "{line}"
        );
    }
}

#[test]
fn real_getent_traffic_counts_lookups_expansions_and_retries() {
    let mut tracker = tracker();
    replay_getent_trace(&mut tracker);
    let web = owner(&tracker, WEB);
    // example.com: 4 tries × (A, AAAA), found as is; kubernetes.default: 2 tries, found
    // under svc.cluster.local; nothere: 4 tries, the bare one REFUSED and asked again.
    assert_eq!(
        web.queries,
        BTreeMap::from([("A".to_owned(), 11), ("AAAA".to_owned(), 11)])
    );
    assert_eq!((web.lookups, web.expansions, web.retries), (6, 14, 2));
    assert_eq!(
        web.responses,
        BTreeMap::from([
            ("NOERROR".to_owned(), 4),
            ("NXDOMAIN".to_owned(), 14),
            ("REFUSED".to_owned(), 4)
        ])
    );
    assert_eq!((web.unmatched_responses, web.unanswered), (0, 0));
    assert_eq!(web.latency.count(), 22);
    assert_eq!(tracker.snapshot().tracker.pending, 0);
    let top: Vec<(&str, u64)> = web
        .top_names
        .iter()
        .take(1)
        .map(|t| (t.name.as_str(), t.count))
        .collect();
    assert_eq!(
        top,
        [("nothere", 4)],
        "the retried bare name is the most queried"
    );
}
