//! Cgroups that are gone. A cgroup whose directory is no longer there (a pod's
//! container after it ended, a transient systemd scope such as `session-3.scope` or a
//! cron job) keeps its series for the grace period, counted from when the collector
//! first noticed it gone, so a scrape still sees its last counts; then it is retired:
//! its series end and what the collector remembers of it is forgotten. The cgroups of a
//! pod swept from the pod cache (deleted past the same grace) are retired at once.
//!
//! Ids are never reused, so gone is for good: a cgroup is checked (one stat, by the
//! caller) only until it is seen gone. Plain data and time passed in; no I/O here.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

/// What refers to cgroups at one tick: the kernel's counters and the trackers' owners.
#[derive(Debug, Default)]
pub struct Referenced {
    /// Every cgroup referred to.
    pub cgroups: HashSet<u64>,
    /// The cgroups the trackers (DNS, request estimator) hold: they forget one only when
    /// told, where the kernel's LRU map evicts what is no longer used.
    pub tracked: HashSet<u64>,
    /// The processes referred to, whose names are still needed.
    pub tgids: HashSet<u32>,
}

impl Referenced {
    /// From the (cgroup, tgid) pairs of the kernel's counters and of the trackers.
    pub fn new(
        kernel: impl IntoIterator<Item = (u64, u32)>,
        trackers: impl IntoIterator<Item = (u64, u32)>,
    ) -> Self {
        let mut refs = Self::default();
        for (cgroup_id, tgid) in kernel {
            refs.cgroups.insert(cgroup_id);
            refs.tgids.insert(tgid);
        }
        for (cgroup_id, tgid) in trackers {
            refs.cgroups.insert(cgroup_id);
            refs.tracked.insert(cgroup_id);
            refs.tgids.insert(tgid);
        }
        refs
    }
}

/// What is known of a cgroup that is not simply alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Noticed gone at this time; its series stay until the grace period ends.
    Gone(Instant),
    /// Retired: its series are dropped. `gone` is false for the cgroup of a swept pod
    /// that was not seen gone (yet), so that it stays dropped while it is still there.
    Dropped { gone: bool },
}

/// The cgroups that are gone or retired; every other cgroup is alive.
#[derive(Debug)]
pub struct GoneCgroups {
    grace: Duration,
    states: HashMap<u64, State>,
}

impl GoneCgroups {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            states: HashMap::new(),
        }
    }

    /// One tick at `now`. `referenced`: the cgroups something still refers to (kernel
    /// counters, the trackers); `swept`: cgroups of pods swept from the pod cache;
    /// `exists` stats a cgroup, and is called at most once per cgroup, only for ones not
    /// known to be gone. Returns the cgroups to retire now: their series end with this
    /// tick, and the caller forgets them. Cgroups nothing refers to any more are
    /// forgotten here (a dropped one only once it is gone, so it stays dropped while
    /// there).
    pub fn tick(
        &mut self,
        now: Instant,
        referenced: &HashSet<u64>,
        swept: &[u64],
        mut exists: impl FnMut(u64) -> bool,
    ) -> Vec<u64> {
        let mut retire = Vec::new();
        for &id in swept {
            let gone = match self.states.get(&id) {
                Some(State::Dropped { .. }) => continue,
                Some(State::Gone(_)) => true,
                None => false,
            };
            self.states.insert(id, State::Dropped { gone });
            retire.push(id);
        }
        for &id in referenced {
            let since = match self.states.get(&id) {
                Some(State::Dropped { .. }) => continue,
                Some(State::Gone(since)) => *since,
                None if exists(id) => continue,
                None => {
                    self.states.insert(id, State::Gone(now));
                    now
                }
            };
            if now.saturating_duration_since(since) >= self.grace {
                self.states.insert(id, State::Dropped { gone: true });
                retire.push(id);
            }
        }
        // Unreferenced: a gone cgroup has no series left to keep, and a dropped one
        // none to hide. Retired just now ones are kept: they leave the trackers only
        // after this tick.
        let retired: HashSet<u64> = retire.iter().copied().collect();
        self.states.retain(|id, state| {
            referenced.contains(id)
                || retired.contains(id)
                || matches!(state, State::Dropped { gone: false }) && exists(*id)
        });
        retire.sort_unstable();
        retire
    }

    /// Whether the series of `cgroup_id` are dropped.
    pub fn is_dropped(&self, cgroup_id: u64) -> bool {
        matches!(self.states.get(&cgroup_id), Some(State::Dropped { .. }))
    }

    /// Whether the name of `cgroup_id` is still needed: alive and referenced, in its
    /// grace, or dropped but perhaps still there (to check it is gone). A cgroup known to
    /// be gone and dropped needs none.
    pub fn needs_path(&self, cgroup_id: u64, referenced: bool) -> bool {
        match self.states.get(&cgroup_id) {
            None => referenced,
            Some(State::Gone(_) | State::Dropped { gone: false }) => true,
            Some(State::Dropped { gone: true }) => false,
        }
    }

    /// Cgroups gone or dropped and remembered.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(300);

    fn set(ids: &[u64]) -> HashSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_gone_cgroup_is_retired_a_grace_period_after_it_was_noticed() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        let alive = |id| id != 2;
        assert!(gone.tick(t0, &set(&[1, 2]), &[], alive).is_empty());
        assert!(!gone.is_dropped(2));
        assert!(
            gone.tick(
                t0 + GRACE - Duration::from_secs(1),
                &set(&[1, 2]),
                &[],
                alive
            )
            .is_empty()
        );
        assert_eq!(gone.tick(t0 + GRACE, &set(&[1, 2]), &[], alive), [2]);
        assert!(gone.is_dropped(2) && !gone.is_dropped(1));
        // Once: still referenced (the kernel's counters linger), it stays dropped.
        assert!(
            gone.tick(t0 + 2 * GRACE, &set(&[1, 2]), &[], alive)
                .is_empty()
        );
        assert!(gone.is_dropped(2));
        // Nothing refers to it any more: forgotten.
        assert!(gone.tick(t0 + 3 * GRACE, &set(&[1]), &[], alive).is_empty());
        assert!(!gone.is_dropped(2));
        assert!(gone.is_empty());
    }

    #[test]
    fn the_grace_counts_from_when_it_was_first_noticed() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        assert!(gone.tick(t0, &set(&[1]), &[], |_| true).is_empty());
        // Gone between two ticks, a minute later.
        let t1 = t0 + Duration::from_secs(60);
        assert!(gone.tick(t1, &set(&[1]), &[], |_| false).is_empty());
        assert!(gone.tick(t0 + GRACE, &set(&[1]), &[], |_| false).is_empty());
        assert_eq!(gone.tick(t1 + GRACE, &set(&[1]), &[], |_| false), [1]);
    }

    #[test]
    fn a_cgroup_seen_gone_is_not_statted_again() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        let mut stats = Vec::new();
        let mut exists = |id| {
            stats.push(id);
            id == 1
        };
        gone.tick(t0, &set(&[1, 2]), &[], &mut exists);
        gone.tick(t0 + Duration::from_secs(2), &set(&[1, 2]), &[], &mut exists);
        stats.sort_unstable();
        assert_eq!(
            stats,
            [1, 1, 2],
            "one stat per tick while alive, none after"
        );
    }

    #[test]
    fn gone_before_it_was_named_is_retired_too() {
        // A short-lived pod's container, gone before its first tick: no path, so the
        // caller's check says gone at once. It is not a node process forever.
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        assert!(gone.tick(t0, &set(&[7]), &[], |_| false).is_empty());
        assert_eq!(gone.tick(t0 + GRACE, &set(&[7]), &[], |_| false), [7]);
    }

    #[test]
    fn a_gone_cgroup_nothing_refers_to_is_forgotten_without_retiring() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        gone.tick(t0, &set(&[3]), &[], |_| false);
        assert_eq!(gone.len(), 1);
        // The kernel evicted its counters and the trackers never had it.
        assert!(
            gone.tick(t0 + Duration::from_secs(2), &set(&[]), &[], |_| false)
                .is_empty()
        );
        assert!(gone.is_empty());
    }

    #[test]
    fn swept_pods_are_retired_at_once_and_stay_dropped_while_there() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        let mut there = true;
        assert_eq!(gone.tick(t0, &set(&[4, 5]), &[4, 9], |_| there), [4, 9]);
        assert!(gone.is_dropped(4) && gone.is_dropped(9));
        // Swept again (a relist): nothing new.
        assert!(gone.tick(t0, &set(&[4]), &[4], |_| there).is_empty());
        // Unreferenced but still there: kept, so new traffic from it stays hidden.
        let t1 = t0 + Duration::from_secs(2);
        assert!(gone.tick(t1, &set(&[]), &[], |_| there).is_empty());
        assert!(gone.is_dropped(4) && gone.needs_path(4, false));
        there = false;
        assert!(gone.tick(t1, &set(&[]), &[], |_| there).is_empty());
        assert!(!gone.is_dropped(4) && !gone.is_dropped(9));
    }

    #[test]
    fn a_cgroup_in_its_grace_swept_with_its_pod_is_known_gone() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        gone.tick(t0, &set(&[6]), &[], |_| false);
        assert_eq!(
            gone.tick(t0 + Duration::from_secs(2), &set(&[6]), &[6], |_| {
                panic!("no stat for a cgroup known gone")
            }),
            [6]
        );
        assert!(!gone.needs_path(6, true));
    }

    #[test]
    fn which_paths_are_still_needed() {
        let t0 = Instant::now();
        let mut gone = GoneCgroups::new(GRACE);
        gone.tick(t0, &set(&[1, 2]), &[], |id| id == 1);
        assert!(gone.needs_path(1, true), "alive and referenced");
        assert!(!gone.needs_path(1, false), "alive, nothing refers to it");
        assert!(gone.needs_path(2, true), "named through its grace");
        gone.tick(t0 + GRACE, &set(&[1, 2]), &[], |id| id == 1);
        assert!(!gone.needs_path(2, true), "dropped and gone");
    }
}
