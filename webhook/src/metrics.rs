//! The webhook's own metrics, prefixed `headroom_webhook_`.

mod watches;

use std::sync::{Arc, OnceLock, atomic::AtomicU64};

use collector::watch::Health;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The budget's mode: Enforce, Warn or Audit.
    pub mode: &'static str,
    /// The outcome: allowed, denied, warned, audited, break_glass, exempt, no_added_load,
    /// canary, fail_open, owner_judged.
    pub result: &'static str,
    /// Workload kind (Deployment, …; `other` for deletes of other kinds).
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailOpenLabels {
    /// `stale` or `missing` (profile data), `inventory` (nodes not listed yet),
    /// `unparseable` (an object the webhook could not read).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `file`, `collector` or `prometheus`.
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabels {
    /// `certificate` (with its key), `budget` or `nodes`.
    pub file: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LevelLabels {
    /// The API Priority and Fairness priority level.
    pub priority_level: String,
}

/// Per priority level, for `auto` request limits: what the API server can serve, what it
/// serves now and what the budget admits up to (requests/s).
#[derive(Debug, Default)]
pub struct LevelGauges {
    pub capacity: Family<LevelLabels, Gauge<f64, AtomicU64>>,
    pub in_use: Family<LevelLabels, Gauge<f64, AtomicU64>>,
    pub limit: Family<LevelLabels, Gauge<f64, AtomicU64>>,
}

impl LevelGauges {
    /// The levels of `status` replace whatever was shown before.
    pub fn show(&self, status: Option<&crate::capacity::ApiserverCapacityStatus>) {
        for family in [&self.capacity, &self.in_use, &self.limit] {
            family.clear();
        }
        for level in status.map(|s| s.levels.as_slice()).unwrap_or_default() {
            let labels = LevelLabels {
                priority_level: level.name.clone(),
            };
            if let Some(capacity) = level.capacity_requests_per_second {
                self.capacity.get_or_create(&labels).set(capacity);
            }
            self.in_use
                .get_or_create(&labels)
                .set(level.in_use_requests_per_second);
            if let Some(limit) = level.limit_requests_per_second {
                self.limit.get_or_create(&labels).set(limit);
            }
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub decisions: Family<DecisionLabels, Counter>,
    pub admission_duration: Histogram,
    pub data_age: Gauge<f64, AtomicU64>,
    pub coverage: Gauge<f64, AtomicU64>,
    pub fail_opens: Family<FailOpenLabels, Counter>,
    pub invalid_requests: Counter,
    pub refresh_errors: Family<SourceLabels, Counter>,
    pub reload_errors: Family<FileLabels, Counter>,
    /// The in-cluster watches (`serve --kube`), read at scrape time.
    pub watches: Arc<OnceLock<Arc<Health>>>,
    pub levels: LevelGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("headroom_webhook");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Admission decisions by budget mode, result and workload kind",
            decisions.clone(),
        );
        // 50 µs … ~0.8 s
        let admission_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 15));
        registry.register(
            "admission_duration_seconds",
            "Time to answer one AdmissionReview, from body received to response built",
            admission_duration.clone(),
        );
        let data_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "profile_data_age_seconds",
            "Age of the newest measurement in the profile data the admission path reads (-1: none)",
            data_age.clone(),
        );
        let coverage = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "profile_node_coverage_ratio",
            "Share of the inventory's nodes whose data is in the profile data (-1: none yet)",
            coverage.clone(),
        );
        let fail_opens = Family::<FailOpenLabels, Counter>::default();
        registry.register(
            "fail_opens",
            "Changes allowed unevaluated: profile data missing, stale or partial, or the node \
             inventory not listed yet",
            fail_opens.clone(),
        );
        let invalid_requests = Counter::default();
        registry.register(
            "invalid_requests",
            "Requests answered 400: not a valid AdmissionReview v1 for a supported resource",
            invalid_requests.clone(),
        );
        let refresh_errors = Family::<SourceLabels, Counter>::default();
        registry.register(
            "profile_refresh_errors",
            "Failed refreshes of profile data by source",
            refresh_errors.clone(),
        );
        let reload_errors = Family::<FileLabels, Counter>::default();
        registry.register(
            "reload_errors",
            "Changed files that did not load (the old version stays in use), by file",
            reload_errors.clone(),
        );
        let levels = LevelGauges::default();
        for (name, help, family) in [
            (
                "apiserver_level_capacity_requests_per_second",
                "API server capacity per APF priority level: seats / seat-seconds per request",
                &levels.capacity,
            ),
            (
                "apiserver_level_in_use_requests_per_second",
                "Requests/s the API server dispatched per APF priority level in the last window",
                &levels.in_use,
            ),
            (
                "apiserver_level_limit_requests_per_second",
                "Requests/s an auto budget admits per APF priority level: capacity x \
                 targetUtilization, or its priorityLevels entry",
                &levels.limit,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        let watches = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(watches::WatchCollector {
            health: watches.clone(),
        }));
        Metrics {
            registry,
            watches,
            levels,
            decisions,
            admission_duration,
            data_age,
            coverage,
            fail_opens,
            invalid_requests,
            refresh_errors,
            reload_errors,
        }
    }
}

impl Metrics {
    pub fn record_decision(&self, mode: &'static str, result: &'static str, kind: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { mode, result, kind })
            .inc();
    }

    pub fn record_fail_open(&self, reason: &'static str) {
        self.fail_opens
            .get_or_create(&FailOpenLabels { reason })
            .inc();
    }

    pub fn record_refresh_error(&self, source: &'static str) {
        self.refresh_errors
            .get_or_create(&SourceLabels { source })
            .inc();
    }

    pub fn record_reload_error(&self, file: &'static str) {
        self.reload_errors.get_or_create(&FileLabels { file }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_exact_lines() {
        let m = Metrics::default();
        m.record_decision("Enforce", "denied", "DaemonSet");
        m.record_decision("Enforce", "denied", "DaemonSet");
        m.record_decision("Warn", "warned", "Deployment");
        m.record_fail_open("stale");
        m.admission_duration.observe(0.0003);
        m.data_age.set(12.5);
        m.invalid_requests.inc();
        m.record_refresh_error("collector");
        m.record_reload_error("certificate");
        let text = m.encode();
        for line in [
            "# TYPE headroom_webhook_decisions counter",
            r#"headroom_webhook_decisions_total{mode="Enforce",result="denied",kind="DaemonSet"} 2"#,
            r#"headroom_webhook_decisions_total{mode="Warn",result="warned",kind="Deployment"} 1"#,
            r#"headroom_webhook_fail_opens_total{reason="stale"} 1"#,
            "headroom_webhook_admission_duration_seconds_count 1",
            r#"headroom_webhook_admission_duration_seconds_bucket{le="0.0004"} 1"#,
            r#"headroom_webhook_admission_duration_seconds_bucket{le="0.0002"} 0"#,
            "headroom_webhook_profile_data_age_seconds 12.5",
            "headroom_webhook_invalid_requests_total 1",
            r#"headroom_webhook_profile_refresh_errors_total{source="collector"} 1"#,
            r#"headroom_webhook_reload_errors_total{file="certificate"} 1"#,
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }

    #[test]
    fn each_priority_level_shows_capacity_in_use_and_limit() {
        use crate::capacity::{ApiserverCapacityStatus, PriorityLevelStatus};
        let m = Metrics::default();
        let level = |name: &str, capacity: Option<f64>, limit: Option<f64>| PriorityLevelStatus {
            name: name.to_owned(),
            seats: 3.0,
            capacity_requests_per_second: capacity,
            in_use_requests_per_second: 438.8,
            limit_requests_per_second: limit,
            headroom_requests_per_second: None,
            constraint: None,
        };
        let status = ApiserverCapacityStatus {
            observed_at: None,
            data_age_seconds: None,
            source: String::new(),
            levels: vec![
                level("headroom-e2e", Some(1207.3), Some(845.1)),
                level("catch-all", None, None),
            ],
        };
        m.levels.show(Some(&status));
        let text = m.encode();
        for line in [
            r#"headroom_webhook_apiserver_level_capacity_requests_per_second{priority_level="headroom-e2e"} 1207.3"#,
            r#"headroom_webhook_apiserver_level_in_use_requests_per_second{priority_level="headroom-e2e"} 438.8"#,
            r#"headroom_webhook_apiserver_level_limit_requests_per_second{priority_level="headroom-e2e"} 845.1"#,
            r#"headroom_webhook_apiserver_level_in_use_requests_per_second{priority_level="catch-all"} 438.8"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains(r#"capacity_requests_per_second{priority_level="catch-all"}"#),
            "no capacity figure, no sample: {text}"
        );
        // Gone from the figures, gone from the exposition.
        m.levels.show(None);
        assert!(!m.encode().contains("priority_level="), "{}", m.encode());
    }
}
