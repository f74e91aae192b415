//! A small, bounded time series of cumulative counters per pod: at most one sample per
//! `interval`, for `window` plus the 5 minutes a rate at the window's start looks back,
//! for at most `max_pods` pods.
use std::collections::{BTreeMap, VecDeque};

use super::DIMENSIONS;
use crate::metrics::Identity;

/// Cumulative counters of one pod (all its containers) or node process, in the order
/// API server requests, API server received bytes, API server connections, DNS
/// queries.
pub type Counters = [u64; DIMENSIONS];

/// How far a 5-minute rate looks back, in seconds.
pub const RATE_RANGE_SECONDS: f64 = crate::schema::profiles::RATE_WINDOW_SECONDS as f64;

#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// Seconds between kept samples; samples that come sooner are dropped.
    pub interval_seconds: f64,
    /// Seconds the profile covers.
    pub window_seconds: f64,
    /// Pods (and node processes) kept; past it the one seen longest ago goes.
    pub max_pods: usize,
    /// How far a rate looks back, and how long a pod is measured before it counts
    /// ([`RATE_RANGE_SECONDS`], as the recording rules' `rate(…[5m])`).
    pub rate_range_seconds: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            interval_seconds: 15.0,
            window_seconds: 3600.0,
            max_pods: 512,
            rate_range_seconds: RATE_RANGE_SECONDS,
        }
    }
}

/// Identifies one pod (or one node process): an [`Identity`] without the container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub pod: String,
}

impl From<&Identity> for PodKey {
    fn from(id: &Identity) -> Self {
        Self {
            namespace: id.namespace.clone(),
            workload_kind: id.workload_kind.clone(),
            workload: id.workload.clone(),
            pod: id.pod.clone(),
        }
    }
}

/// One container's (or node process's) counters at a sampling tick, with what the
/// profile needs of its pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub identity: Identity,
    pub counters: Counters,
    /// The pod's first app container's image (empty for node processes).
    pub image: String,
    /// When the pod's first container started, Unix seconds.
    pub started_at: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Unix seconds.
    pub at: f64,
    pub counters: Counters,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodSeries {
    pub image: String,
    pub started_at: Option<f64>,
    /// Oldest first, `at` strictly increasing.
    pub samples: VecDeque<Sample>,
}

#[derive(Clone, Debug)]
pub struct ProfileStore {
    config: StoreConfig,
    /// When the store began: a pod that started earlier has no startup figure, its
    /// first minute having happened before anyone counted.
    created_at: f64,
    pods: BTreeMap<PodKey, PodSeries>,
}

impl ProfileStore {
    pub fn new(config: StoreConfig, created_at: f64) -> Self {
        Self {
            config,
            created_at,
            pods: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn created_at(&self) -> f64 {
        self.created_at
    }

    pub fn pods(&self) -> &BTreeMap<PodKey, PodSeries> {
        &self.pods
    }

    /// Records one sampling tick at `at` (Unix seconds): containers of a pod are summed.
    pub fn record(&mut self, at: f64, rows: impl IntoIterator<Item = Row>) {
        let mut ticks: BTreeMap<PodKey, PodSeries> = BTreeMap::new();
        for row in rows {
            let tick = ticks.entry(PodKey::from(&row.identity)).or_default();
            if tick.image.is_empty() {
                tick.image = row.image;
            }
            tick.started_at = tick.started_at.or(row.started_at);
            match tick.samples.back_mut() {
                Some(sample) => {
                    for (sum, add) in sample.counters.iter_mut().zip(row.counters) {
                        *sum = sum.saturating_add(add);
                    }
                }
                None => tick.samples.push_back(Sample {
                    at,
                    counters: row.counters,
                }),
            }
        }
        for (key, tick) in ticks {
            let series = self.pods.entry(key).or_default();
            if !tick.image.is_empty() {
                series.image = tick.image;
            }
            if tick.started_at.is_some() {
                series.started_at = tick.started_at;
            }
            let due = series
                .samples
                .back()
                .is_none_or(|last| at >= last.at + self.config.interval_seconds * 0.9);
            if due {
                series.samples.extend(tick.samples);
            }
        }
        self.expire(at);
    }

    /// Drops samples that no rate in the window needs, pods with none left, and the
    /// pods seen longest ago past `max_pods`.
    fn expire(&mut self, now: f64) {
        let horizon = now - self.config.window_seconds - self.config.rate_range_seconds;
        self.pods.retain(|_, series| {
            while series.samples.front().is_some_and(|s| s.at < horizon) {
                series.samples.pop_front();
            }
            !series.samples.is_empty()
        });
        if self.pods.len() > self.config.max_pods {
            let mut by_last: Vec<(f64, PodKey)> = self
                .pods
                .iter()
                .map(|(key, s)| (s.samples.back().map_or(f64::MIN, |x| x.at), key.clone()))
                .collect();
            by_last.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let excess = self.pods.len() - self.config.max_pods;
            for (_, key) in by_last.into_iter().take(excess) {
                self.pods.remove(&key);
            }
        }
    }
}
