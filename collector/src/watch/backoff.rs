//! When a failing watch tries again: exponential steps with jitter that only lengthens
//! them, started over only once a LIST has succeeded (or a watch delivered events), and
//! allowed to grow to minutes while the API server keeps refusing (401/403/404) — an
//! operator must act, so asking every 30 s only adds load.
//!
//! kube-runtime's `StreamBackoff` calls [`Backoff::reset`] on every `Ok` item, and the
//! watcher yields `Ok(Event::Init)` before every LIST, so a plain backoff never grows for
//! a LIST that keeps failing. [`GatedBackoff`] ignores a reset that no progress earned;
//! the [`Gate`] is opened by what the watch actually delivered.
use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// The steps of a failing watch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    /// The first step.
    pub min: Duration,
    /// The largest step after a transient error (unreachable, 5xx, 429, 410 Gone).
    pub max: Duration,
    /// The largest step while the API server refuses (401, 403, 404).
    pub max_refused: Duration,
    /// Each step is lengthened by a random fraction of itself in `[0, jitter)`; never
    /// shortened, so the bounds of the schedule hold with jitter included.
    pub jitter: f64,
    /// The first LIST waits a random time in `[0, start_jitter)`, so the collectors of a
    /// DaemonSet rollout or a mass restart do not list in step.
    pub start_jitter: Duration,
}

impl BackoffConfig {
    /// No jitter anywhere (tests that count requests exactly).
    pub fn without_jitter(self) -> Self {
        Self {
            jitter: 0.0,
            start_jitter: Duration::ZERO,
            ..self
        }
    }
}

impl Default for BackoffConfig {
    /// 1 s, 2 s, 4 s, … up to 30 s (transient) or 300 s (refused), +0–25 % each; the
    /// first LIST within 5 s of start.
    ///
    /// With a 403 from the start, LISTs begin at t = 0, 1, 3, 7, 15, 31, 63, 127, 255,
    /// 511 s at the earliest: at most 6 in the first minute and 10 in ten minutes.
    fn default() -> Self {
        Self {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_refused: Duration::from_secs(300),
            jitter: 0.25,
            start_jitter: Duration::from_secs(5),
        }
    }
}

/// What the watch has shown since the last failure, shared by the stream that sees its
/// items and the backoff that `StreamBackoff` drives.
#[derive(Debug, Default)]
pub struct Gate {
    /// A LIST completed or a watch delivered an event: the next reset counts.
    progressed: AtomicBool,
    /// The last failure was a refusal (401/403/404).
    refused: AtomicBool,
}

impl Gate {
    pub fn progressed(&self) {
        self.progressed.store(true, Ordering::Relaxed);
    }

    pub fn failed(&self, refused: bool) {
        self.refused.store(refused, Ordering::Relaxed);
    }
}

/// A uniform number in [0, 1) (xorshift64*), seeded from the process's random hash keys:
/// jitter needs no RNG crate.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(seed)
    }

    pub fn with_seed(seed: u64) -> Self {
        // xorshift must not start at zero.
        Self(seed | 1)
    }

    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d` lengthened by a random fraction of itself in `[0, fraction)`.
    pub fn lengthen(&mut self, d: Duration, fraction: f64) -> Duration {
        d.mul_f64(1.0 + fraction.max(0.0) * self.unit())
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// The backoff [`crate::watch::watch`] gives kube-runtime's `StreamBackoff`. Never ends:
/// a watch is retried for as long as the process runs.
#[derive(Debug)]
pub struct GatedBackoff {
    config: BackoffConfig,
    step: Duration,
    gate: Arc<Gate>,
    jitter: Jitter,
}

impl GatedBackoff {
    pub fn new(config: BackoffConfig, gate: Arc<Gate>, jitter: Jitter) -> Self {
        Self {
            config,
            step: config.min,
            gate,
            jitter,
        }
    }
}

impl Iterator for GatedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let cap = if self.gate.refused.load(Ordering::Relaxed) {
            self.config.max_refused
        } else {
            self.config.max
        };
        let step = self.step.min(cap);
        self.step = (self.step * 2).min(self.config.max.max(self.config.max_refused));
        Some(self.jitter.lengthen(step, self.config.jitter))
    }
}

impl kube::runtime::utils::Backoff for GatedBackoff {
    fn reset(&mut self) {
        if self.gate.progressed.swap(false, Ordering::Relaxed) {
            self.step = self.config.min;
        }
    }
}

#[cfg(test)]
mod tests;
