//! Evictions of the kernel's LRU maps. The kernel evicts silently; but only the
//! programs add entries, and they and the agent (deleting a retired cgroup's keys)
//! count what they remove, so what is missing from a map is what it evicted:
//! `created − removed − entries now`.
//!
//! The counters and the entries are not read at one instant. Reading `created` before
//! the map and `removed` after it makes every race err low (an entry created during the
//! read is not yet in `created`; one removed during it is already in `removed`), so the
//! figure is a lower bound that catches up; keeping the highest so far makes it a
//! counter that never goes down.
use collector_ebpf::MapOp;

use crate::ebpf::MapOps;

/// Evictions counted so far, per LRU map the programs create entries in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    pub traffic: u64,
    pub sockets: u64,
}

/// What one snapshot read: the op counters before and after reading the maps, and the
/// entries the maps had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapRead {
    pub before: MapOps,
    pub after: MapOps,
    pub traffic_entries: u64,
    /// `TRAFFIC` keys the agent deleted before this read.
    pub traffic_removed: u64,
    pub socket_entries: u64,
}

impl Evictions {
    /// Takes in one read; returns the counts as they stand.
    pub fn update(&mut self, read: &MapRead) -> Self {
        // Only the agent removes TRAFFIC entries.
        let traffic = evicted(
            read.before.get(MapOp::TrafficCreated),
            read.traffic_removed,
            read.traffic_entries,
        );
        let sockets = evicted(
            read.before.get(MapOp::SocketCreated),
            read.after.get(MapOp::SocketRemoved),
            read.socket_entries,
        );
        self.traffic = self.traffic.max(traffic);
        self.sockets = self.sockets.max(sockets);
        *self
    }
}

/// Entries created and neither removed nor present: evicted.
pub fn evicted(created: u64, removed: u64, entries: u64) -> u64 {
    created.saturating_sub(removed.saturating_add(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(traffic_created: u64, socket_created: u64, socket_removed: u64) -> MapOps {
        MapOps([traffic_created, socket_created, socket_removed])
    }

    #[test]
    fn what_is_neither_removed_nor_there_was_evicted() {
        let mut e = Evictions::default();
        let read = MapRead {
            before: ops(100, 50, 10),
            after: ops(100, 50, 10),
            traffic_entries: 64,
            traffic_removed: 6,
            socket_entries: 32,
        };
        assert_eq!(
            e.update(&read),
            Evictions {
                traffic: 30,
                sockets: 8
            },
            "keys the agent deleted were not evicted"
        );
    }

    #[test]
    fn a_map_that_never_filled_evicted_nothing() {
        let mut e = Evictions::default();
        let read = MapRead {
            before: ops(5, 3, 1),
            after: ops(5, 3, 1),
            traffic_entries: 5,
            traffic_removed: 0,
            socket_entries: 2,
        };
        assert_eq!(e.update(&read), Evictions::default());
    }

    #[test]
    fn races_during_the_read_err_low_and_the_count_never_goes_down() {
        let mut e = Evictions::default();
        // 10 sockets evicted. While the map was read, one socket was created (seen in
        // the map, not yet in `before`) and one released (gone from the map, in `after`).
        let read = MapRead {
            before: ops(0, 40, 10),
            after: ops(0, 41, 11),
            traffic_entries: 0,
            traffic_removed: 0,
            socket_entries: 20,
        };
        assert_eq!(e.update(&read).sockets, 9, "a lower bound, never a phantom");
        // The next read sees all of it.
        let read = MapRead {
            before: ops(0, 41, 11),
            after: ops(0, 41, 11),
            traffic_entries: 0,
            traffic_removed: 0,
            socket_entries: 20,
        };
        assert_eq!(e.update(&read).sockets, 10);
        // A read that comes out lower (a race the other way) keeps the count.
        let read = MapRead {
            before: ops(0, 41, 12),
            after: ops(0, 41, 12),
            traffic_entries: 0,
            traffic_removed: 0,
            socket_entries: 20,
        };
        assert_eq!(e.update(&read).sockets, 10);
    }
}
