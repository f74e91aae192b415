//! The TLS-record request estimator fed arbitrary record sequences. Input: a tap in the
//! text format of `collector/src/apiserver/fixtures/README.md` (the recorded taps are the
//! seeds), read leniently: `conn ID open T`, `seg ID T e|i LEN TYPE:LEN,…|- [desync]`,
//! `close ID T`, plus `tick T` and `forget CGROUP`; anything else is skipped. Events go in
//! in line order (the ring buffer does not promise time order across CPUs). Small bounds,
//! so eviction runs too.
//!
//! Properties beyond "no panic", after every event:
//! - connections and owners tracked stay within their bounds;
//! - per owner: open connections ≤ connections opened, open streams ≤ open connections,
//!   and its requests — its totals' plus those of its totals forgotten to make room
//!   (`drain_evicted`, which the agent carries on) — never go down until its cgroup is
//!   forgotten;
//! - requests estimated in all ≤ the bytes of the client's records (a request is at least
//!   one byte; a wrapped or runaway count breaks this).
#![no_main]

use std::collections::HashMap;

use collector::apiserver::{Estimator, EstimatorConfig, Owner};
use collector_ebpf::{EndpointKind, event};
use libfuzzer_sys::fuzz_target;

const CONFIG: EstimatorConfig = EstimatorConfig {
    max_connections: 4,
    max_owners: 3,
    max_pending: 8,
    max_estimates: 32,
    pending_window_ns: 1_000_000_000,
    push_gap_ns: 100_000_000,
    pushes_to_open: 2,
    push_memory_ns: 120_000_000_000,
    stream_idle_ns: 180_000_000_000,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut estimator = Estimator::new(CONFIG);
    let mut seen = Seen::default();
    let (mut estimated, mut client_bytes) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        client_bytes = client_bytes.saturating_add(feed(&mut estimator, &fields));
        if let (Some(&"forget"), Some(Ok(cgroup))) =
            (fields.first(), fields.get(1).map(|f| f.parse::<u64>()))
        {
            seen.last.retain(|o, _| o.cgroup_id != cgroup);
            seen.carried.retain(|o, _| o.cgroup_id != cgroup);
        }
        estimated += estimator.drain_requests().map(|e| e.count).sum::<u64>();
        check(&mut estimator, &mut seen);
        assert!(
            estimated <= client_bytes,
            "{estimated} requests estimated from {client_bytes} bytes of client records"
        );
    }
});

/// Feeds one line; returns the bytes of client (egress) records it listed.
fn feed(estimator: &mut Estimator, fields: &[&str]) -> u64 {
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ns = |us: u64| 1_000_000_000u64.saturating_add(us.saturating_mul(1_000));
    match (fields.first().copied(), num(1), num(2)) {
        (Some("conn"), Some(id), _) => {
            let Some(open) = num(3) else { return 0 };
            estimator.on_connect(&event::Connect {
                header: header(event::CONNECT, 0, ns(open), id),
                comm: *b"fuzz\0\0\0\0\0\0\0\0\0\0\0\0",
                protocol: 6,
                reserved: 0,
            });
        }
        (Some("seg"), Some(id), Some(ts)) => return segment(estimator, fields, id, ns(ts)),
        (Some("close"), Some(id), Some(ts)) => estimator.on_close(&event::Close {
            header: header(event::CLOSE, 0, ns(ts), id),
        }),
        (Some("tick"), Some(ts), _) => estimator.tick(ns(ts)),
        (Some("forget"), Some(cgroup), _) => estimator.forget_cgroup(cgroup),
        _ => {}
    }
    0
}

fn segment(estimator: &mut Estimator, fields: &[&str], id: u64, ts_ns: u64) -> u64 {
    let direction = match fields.get(3) {
        Some(&"e") => event::EGRESS,
        Some(&"i") => event::INGRESS,
        _ => return 0,
    };
    let Some(len) = fields.get(4).and_then(|f| f.parse::<u32>().ok()) else {
        return 0;
    };
    let listed: Vec<(u8, u16)> = fields
        .get(5)
        .map(|r| {
            r.split(',')
                .filter_map(|r| {
                    let (t, l) = r.split_once(':')?;
                    Some((t.parse().ok()?, l.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut record = [event::Record::default(); event::MAX_RECORDS];
    for (slot, &(content_type, length)) in record.iter_mut().zip(&listed) {
        *slot = event::Record {
            content_type,
            reserved: 0,
            length,
        };
    }
    let shown = listed.len().min(event::MAX_RECORDS);
    estimator.on_segment(&event::Segment {
        header: header(event::SEGMENT, direction, ts_ns, id),
        payload_len: len,
        records: shown as u32,
        records_beyond: (listed.len() - shown) as u32,
        desync: u32::from(fields.get(6) == Some(&"desync")),
        record,
    });
    if direction != event::EGRESS {
        return 0;
    }
    // Records beyond those listed are unknown in size: at most a full record each.
    let beyond = (listed.len() - shown) as u64 * (u64::from(u16::MAX) + 5);
    listed[..shown]
        .iter()
        .map(|&(_, l)| u64::from(l))
        .sum::<u64>()
        + beyond
}

/// Three cgroups, two processes each: owners collide and get evicted.
fn header(kind: u32, direction: u32, ts_ns: u64, cookie: u64) -> event::Header {
    event::Header {
        kind,
        direction,
        ts_ns,
        cgroup_id: 1 + cookie % 3,
        cookie,
        tgid: 100 + (cookie % 2) as u32,
        endpoint_kind: EndpointKind::ApiServer as u32,
    }
}

/// Each owner's requests as last checked, and what its forgotten totals had counted.
#[derive(Default)]
struct Seen {
    last: HashMap<Owner, u64>,
    carried: HashMap<Owner, u64>,
}

fn check(estimator: &mut Estimator, seen: &mut Seen) {
    for (owner, totals) in estimator.drain_evicted() {
        assert_eq!(
            (totals.connections_open, totals.open_streams),
            (0, 0),
            "{owner:?} forgotten with something open"
        );
        *seen.carried.entry(owner).or_default() += totals.requests;
    }
    let stats = estimator.stats();
    assert!(stats.connections <= CONFIG.max_connections, "{stats:?}");
    let owners: HashMap<Owner, _> = estimator.owners().map(|(o, t)| (*o, *t)).collect();
    assert!(owners.len() <= CONFIG.max_owners, "{} owners", owners.len());
    for totals in owners.values() {
        assert!(
            totals.connections_open <= totals.connections_opened,
            "{totals:?}"
        );
        assert!(totals.open_streams <= totals.connections_open, "{totals:?}");
    }
    let known: Vec<Owner> = owners.keys().chain(seen.last.keys()).copied().collect();
    for owner in known {
        let now = owners.get(&owner).map_or(0, |t| t.requests)
            + seen.carried.get(&owner).copied().unwrap_or(0);
        let before = seen.last.insert(owner, now).unwrap_or(0);
        assert!(now >= before, "{owner:?} requests went {before} → {now}");
    }
}
