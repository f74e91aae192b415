//! Counters that never fall. The kernel's `TRAFFIC` map is an LRU map: when it is full,
//! the kernel evicts a key to make room, and that key's counts leave the map. Summing
//! the map as it is would make an identity's `_total` series go down, which Prometheus
//! reads as a counter reset (and `rate()` jumps). So every key's counts are kept here:
//! an evicted key keeps its last counts (frozen), and a key that comes back counts on
//! from them. Keys leave only with their cgroup (see [`TrafficTotals::forget_cgroup`]).
//! What the kernel counted between the last read and an eviction is lost, and counted
//! in `headroom_collector_map_evictions_total`.
use std::collections::{BTreeMap, HashMap};

use collector_ebpf::{TrafficCounters, TrafficKey};

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// What earlier lives of the key counted before they were evicted.
    base: TrafficCounters,
    /// The kernel's value at the last read (zero while the key is out of the map).
    last: TrafficCounters,
}

#[derive(Debug, Default)]
pub struct TrafficTotals {
    keys: HashMap<TrafficKey, Tally>,
}

impl TrafficTotals {
    /// Takes in one read of the kernel's map and returns the totals of every key: the
    /// ones read, and the ones evicted before (at what they had counted).
    pub fn update(
        &mut self,
        read: &BTreeMap<TrafficKey, TrafficCounters>,
    ) -> BTreeMap<TrafficKey, TrafficCounters> {
        for (key, tally) in &mut self.keys {
            if !read.contains_key(key) {
                fold(tally);
            }
        }
        for (key, now) in read {
            let tally = self.keys.entry(*key).or_default();
            // Less than last time in any field: evicted and created again between two
            // reads; the earlier life's counts are kept.
            if fell(now, &tally.last) {
                fold(tally);
            }
            tally.last = *now;
        }
        self.keys
            .iter()
            .map(|(key, tally)| {
                let mut total = tally.base;
                total.accumulate(&tally.last);
                (*key, total)
            })
            .collect()
    }

    /// Forgets the keys of a cgroup whose series have ended.
    pub fn forget_cgroup(&mut self, cgroup_id: u64) {
        self.keys.retain(|key, _| key.cgroup_id != cgroup_id);
    }

    /// Keys kept (read or frozen).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The key left the map: what it had counted joins its base.
fn fold(tally: &mut Tally) {
    tally.base.accumulate(&tally.last);
    tally.last = TrafficCounters::default();
}

fn fell(now: &TrafficCounters, last: &TrafficCounters) -> bool {
    now.connects < last.connects
        || now.sent_bytes < last.sent_bytes
        || now.received_bytes < last.received_bytes
        || now.sent_packets < last.sent_packets
        || now.received_packets < last.received_packets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(cgroup_id: u64, tgid: u32) -> TrafficKey {
        TrafficKey {
            cgroup_id,
            kind: 1,
            tgid,
        }
    }

    fn connects(n: u64) -> TrafficCounters {
        TrafficCounters {
            connects: n,
            sent_bytes: 100 * n,
            ..TrafficCounters::default()
        }
    }

    fn read(entries: &[(TrafficKey, u64)]) -> BTreeMap<TrafficKey, TrafficCounters> {
        entries.iter().map(|&(k, n)| (k, connects(n))).collect()
    }

    #[test]
    fn an_evicted_key_keeps_its_counts_and_counts_on_when_it_returns() {
        let mut totals = TrafficTotals::default();
        let (a, b) = (key(1, 10), key(1, 11));
        let out = totals.update(&read(&[(a, 3), (b, 5)]));
        assert_eq!(out[&a].connects, 3);
        // a evicted: its 3 stay.
        let out = totals.update(&read(&[(b, 6)]));
        assert_eq!((out[&a].connects, out[&b].connects), (3, 6));
        // a is back, counting from zero in the kernel: 3 + 2.
        let out = totals.update(&read(&[(a, 2), (b, 6)]));
        assert_eq!((out[&a].connects, out[&a].sent_bytes), (5, 500));
        // b evicted and created again between two reads: its new count is lower.
        let out = totals.update(&read(&[(a, 2), (b, 1)]));
        assert_eq!(out[&b].connects, 7);
        assert_eq!(totals.len(), 2);
    }

    #[test]
    fn totals_never_fall_whatever_the_reads() {
        // Pseudo-random reads: each key present or evicted, its kernel count restarting
        // from zero after an eviction and growing otherwise.
        let keys: Vec<TrafficKey> = (0..8).map(|t| key(1, t)).collect();
        let mut kernel: Vec<Option<u64>> = vec![None; keys.len()];
        let mut totals = TrafficTotals::default();
        let mut previous: BTreeMap<TrafficKey, u64> = BTreeMap::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..2_000 {
            for value in &mut kernel {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                *value = match (rng % 4, *value) {
                    (0, _) => None,
                    (_, Some(n)) => Some(n + rng % 3),
                    (_, None) => Some(rng % 2),
                };
            }
            let now: Vec<(TrafficKey, u64)> = keys
                .iter()
                .zip(&kernel)
                .filter_map(|(k, v)| v.map(|n| (*k, n)))
                .collect();
            let out = totals.update(&read(&now));
            for (key, total) in &out {
                let before = previous.get(key).copied().unwrap_or(0);
                assert!(
                    total.connects >= before,
                    "{key:?}: {} < {before}",
                    total.connects
                );
                previous.insert(*key, total.connects);
            }
        }
    }

    #[test]
    fn a_gone_cgroup_is_forgotten() {
        let mut totals = TrafficTotals::default();
        totals.update(&read(&[(key(1, 1), 1), (key(2, 1), 1)]));
        totals.forget_cgroup(1);
        assert_eq!(totals.len(), 1);
        assert!(!totals.update(&read(&[])).contains_key(&key(1, 1)));
    }
}
