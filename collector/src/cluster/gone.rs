//! "Gone since": things (pods, identities) that disappeared, kept for a grace period
//! before their series are dropped, so a scrape still sees a pod's last counts and a
//! pod that comes back (a relist after an outage) keeps its series.
use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// The default grace period: 5 minutes.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct GoneSince<K> {
    grace: Duration,
    since: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Clone> GoneSince<K> {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: HashMap::new(),
        }
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Notes `key` gone at `now`; a key already gone keeps its first time.
    pub fn mark(&mut self, key: K, now: Instant) {
        self.since.entry(key).or_insert(now);
    }

    /// `key` is back: it will not expire.
    pub fn back(&mut self, key: &K) {
        self.since.remove(key);
    }

    pub fn is_gone(&self, key: &K) -> bool {
        self.since.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// Takes out the keys gone for at least the grace period at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<K> {
        let mut expired = Vec::new();
        self.since.retain(|key, since| {
            let keep = now.saturating_duration_since(*since) < self.grace;
            if !keep {
                expired.push(key.clone());
            }
            keep
        });
        expired
    }
}

impl<K: Eq + Hash + Clone> Default for GoneSince<K> {
    fn default() -> Self {
        Self::new(DEFAULT_GRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_the_grace_period_only() {
        let t0 = Instant::now();
        let mut gone = GoneSince::default();
        gone.mark("a", t0);
        gone.mark("b", t0 + Duration::from_secs(60));
        assert!(gone.expire(t0 + Duration::from_secs(299)).is_empty());
        assert_eq!(gone.expire(t0 + Duration::from_secs(300)), ["a"]);
        assert!(!gone.is_gone(&"a"));
        assert!(gone.is_gone(&"b"));
        assert_eq!(gone.expire(t0 + Duration::from_secs(360)), ["b"]);
        assert!(gone.is_empty());
    }

    #[test]
    fn marking_again_keeps_the_first_time() {
        let t0 = Instant::now();
        let mut gone = GoneSince::new(Duration::from_secs(10));
        gone.mark(1, t0);
        gone.mark(1, t0 + Duration::from_secs(9));
        assert_eq!(gone.expire(t0 + Duration::from_secs(10)), [1]);
    }

    #[test]
    fn coming_back_cancels() {
        let t0 = Instant::now();
        let mut gone = GoneSince::new(Duration::from_secs(10));
        gone.mark("pod", t0);
        gone.back(&"pod");
        assert!(gone.expire(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(gone.len(), 0);
    }
}
