//! Query-to-response latency as a Prometheus histogram shape, exported as
//! `headroom_dns_query_duration_seconds`.

/// Upper bounds (seconds) of the buckets, `+Inf` implied after the last. A node-local
/// cache answers in well under a millisecond, CoreDNS in a few, an upstream miss in tens;
/// glibc retries a query after 5 s, so nothing above that gets its own bucket. The same
/// bounds and bucket layout as `metrics::DNS_DURATION_BOUNDS` / `DurationHistogram`, so
/// the metrics code copies `buckets` as they are.
pub const LATENCY_BOUNDS_SECONDS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Latency observations. `buckets[i]` counts the observations in
/// `(bound[i-1], bound[i]]` (NOT cumulative: sum a prefix for Prometheus' `le` buckets),
/// the last one those above every bound, so `count()` is their sum.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyHistogram {
    pub buckets: [u64; LATENCY_BOUNDS_SECONDS.len() + 1],
    /// Sum of the observations in nanoseconds (exact; seconds = `sum_ns as f64 / 1e9`).
    pub sum_ns: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; LATENCY_BOUNDS_SECONDS.len() + 1],
            sum_ns: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn observe_ns(&mut self, nanos: u64) {
        let seconds = nanos as f64 / 1e9;
        let index = LATENCY_BOUNDS_SECONDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BOUNDS_SECONDS.len());
        self.buckets[index] += 1;
        self.sum_ns = self.sum_ns.saturating_add(nanos);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns as f64 / 1e9
    }

    /// `(upper bound in seconds, observations at or below it)` as Prometheus' `le`
    /// buckets, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BOUNDS_SECONDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .map(|(bound, n)| {
                total += n;
                (bound, total)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe_ns(0);
        histogram.observe_ns(250_000); // exactly 0.25 ms: le="0.00025"
        histogram.observe_ns(250_001);
        histogram.observe_ns(30_000_000);
        histogram.observe_ns(7_000_000_000);
        assert_eq!(histogram.buckets[0], 2);
        assert_eq!(histogram.buckets[1], 1);
        assert_eq!(histogram.buckets[7], 1, "30 ms: (0.025, 0.05]");
        assert_eq!(histogram.buckets[LATENCY_BOUNDS_SECONDS.len()], 1, "+Inf");
        assert_eq!(histogram.count(), 5);
        assert_eq!(histogram.sum_ns, 7_030_500_001);
        let cumulative = histogram.cumulative();
        assert_eq!(cumulative.len(), 15);
        assert_eq!(cumulative[0], (0.000_25, 2));
        assert_eq!(cumulative[13], (5.0, 4));
        assert_eq!(cumulative[14], (f64::INFINITY, 5));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn bounds_increase() {
        assert!(LATENCY_BOUNDS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }
}
