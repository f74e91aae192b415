//! Exponential backoff with jitter for the watches, so that when the API server
//! restarts the collectors of a large cluster come back spread out rather than all at
//! once (each delay is drawn between half and all of the exponential step).
use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffConfig {
    /// The first step (client-go's reflector: 800 ms).
    pub min: Duration,
    /// The largest step (client-go: 30 s).
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            min: Duration::from_millis(800),
            max: Duration::from_secs(30),
        }
    }
}

/// Steps `min`, `2·min`, … up to `max`, each scaled by a random factor in [0.5, 1).
/// Never ends: a watch is retried for as long as the collector runs.
#[derive(Clone, Debug)]
pub struct JitterBackoff {
    config: BackoffConfig,
    step: Duration,
    rng: u64,
}

impl JitterBackoff {
    /// Seeded from the process's random hash keys (no RNG crate needed for jitter).
    pub fn new(config: BackoffConfig) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(config, seed)
    }

    pub fn with_seed(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            step: config.min,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// A uniform number in [0, 1) (xorshift64*).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for JitterBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let step = self.step;
        self.step = (self.step * 2).min(self.config.max);
        Some(step.mul_f64(0.5 + 0.5 * self.unit()))
    }
}

impl kube::runtime::utils::Backoff for JitterBackoff {
    fn reset(&mut self) {
        self.step = self.config.min;
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff as _;

    use super::*;

    #[test]
    fn grows_to_max_within_jitter_bounds() {
        let config = BackoffConfig::default();
        let delays: Vec<Duration> = JitterBackoff::with_seed(config, 7).take(10).collect();
        let steps = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0];
        for (delay, step) in delays.iter().zip(steps) {
            let secs = delay.as_secs_f64();
            assert!(secs >= step * 0.5 && secs < step, "{secs} for step {step}");
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = JitterBackoff::with_seed(BackoffConfig::default(), 1);
        backoff.by_ref().take(5).for_each(drop);
        backoff.reset();
        assert!(
            backoff
                .next()
                .is_some_and(|d| d < Duration::from_millis(800))
        );
    }

    #[test]
    fn collectors_spread_out() {
        // A thousand collectors whose watches broke at once: their first retries span
        // most of [400 ms, 800 ms), not one instant.
        let firsts: Vec<f64> = (0..1000u64)
            .map(|seed| {
                JitterBackoff::with_seed(BackoffConfig::default(), seed.wrapping_mul(0x9e37_79b9))
                    .next()
                    .map_or(0.0, |d| d.as_secs_f64())
            })
            .collect();
        let min = firsts.iter().copied().fold(f64::MAX, f64::min);
        let max = firsts.iter().copied().fold(0.0, f64::max);
        assert!(min < 0.45 && max > 0.75, "{min}..{max}");
        let mut buckets = [0u32; 4];
        for f in &firsts {
            buckets[(((f - 0.4) / 0.1) as usize).min(3)] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 150), "{buckets:?}");
    }
}
