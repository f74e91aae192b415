//! A readable per-cgroup table of what the kernel measured.
use std::{collections::BTreeMap, fmt::Write as _};

use collector_ebpf::{EndpointKind, TrafficCounters, TrafficKey};

/// One row of the table: a cgroup (by path where known) and its counters for a kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub cgroup: String,
    pub kind: &'static str,
    pub counters: TrafficCounters,
}

pub fn kind_name(raw: u32) -> &'static str {
    match EndpointKind::from_u32(raw) {
        Some(EndpointKind::ApiServer) => "apiserver",
        Some(EndpointKind::Dns) => "dns",
        None => "unknown",
    }
}

/// Builds one row per (cgroup, kind), summing the cgroup's processes and naming each
/// cgroup id with `name` (its path, or the id if it is gone).
pub fn rows(
    traffic: &BTreeMap<TrafficKey, TrafficCounters>,
    mut name: impl FnMut(u64) -> String,
) -> Vec<Row> {
    let mut per_cgroup: BTreeMap<(u64, u32), TrafficCounters> = BTreeMap::new();
    for (key, counters) in traffic {
        per_cgroup
            .entry((key.cgroup_id, key.kind))
            .or_default()
            .accumulate(counters);
    }
    per_cgroup
        .into_iter()
        .map(|((cgroup_id, kind), counters)| Row {
            cgroup: name(cgroup_id),
            kind: kind_name(kind),
            counters,
        })
        .collect()
}

pub fn render(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.cgroup.len())
        .max()
        .unwrap_or(0)
        .max("CGROUP".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<9}  {:>8}  {:>12}  {:>12}  {:>8}  {:>8}",
        "CGROUP", "TO", "CONNECTS", "SENT_BYTES", "RECV_BYTES", "SENT_PK", "RECV_PK"
    );
    for r in rows {
        let c = &r.counters;
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:>8}  {:>12}  {:>12}  {:>8}  {:>8}",
            r.cgroup,
            r.kind,
            c.connects,
            c.sent_bytes,
            c.received_bytes,
            c.sent_packets,
            c.received_packets
        );
    }
    if rows.is_empty() {
        out.push_str("(no traffic to the measured endpoints yet)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_processes_of_a_cgroup_into_one_aligned_row() {
        let counters = |connects, sent_bytes| TrafficCounters {
            connects,
            sent_bytes,
            received_bytes: 40,
            sent_packets: 5,
            received_packets: 2,
        };
        let key = |tgid| TrafficKey {
            cgroup_id: 7,
            kind: EndpointKind::ApiServer as u32,
            tgid,
        };
        let traffic = BTreeMap::from([(key(42), counters(3, 1200)), (key(43), counters(1, 100))]);
        let rows = rows(&traffic, |id| format!("/pod-{id}"));
        let text = render(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[1],
            "/pod-7  apiserver         4          1300            80        10         4"
        );
    }

    #[test]
    fn says_so_when_empty() {
        assert!(render(&[]).contains("no traffic"));
    }
}
