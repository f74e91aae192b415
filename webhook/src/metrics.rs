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
        let watches = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(watches::WatchCollector {
            health: watches.clone(),
        }));
        Metrics {
            registry,
            watches,
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
}
