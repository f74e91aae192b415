//! Whether the profile data is whole enough to decide on, judged from the data itself:
//! the age of its newest measurement and the share of the inventory's nodes it covers —
//! never the time it was fetched. Data that is missing, stale or partial undercounts the
//! cluster, so a change is allowed with a warning (fail-open) rather than judged on it.

use std::time::{Duration, SystemTime};

use crate::{
    budget::{ControlPlaneBudgetSpec, ControlPlaneBudgetStatus},
    inventory::Inventory,
    profile::Snapshot,
};

/// Why a change was allowed unevaluated: the `reason` label of the fail-opens metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailOpenReason {
    /// No data, or a source answered with nothing where it must have something.
    Missing,
    /// The newest measurement is older than `maxDataAgeSeconds`.
    Stale,
    /// Fewer of the inventory's nodes report than `minCoverage`.
    Partial,
}

impl FailOpenReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailOpenReason::Missing => "missing",
            FailOpenReason::Stale => "stale",
            FailOpenReason::Partial => "partial",
        }
    }
}

/// What is wrong with the data, for the warning and the metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataGap {
    pub reason: FailOpenReason,
    /// For the warning: what is missing, how old, how much is covered.
    pub why: String,
}

/// Nodes with fresh data against the nodes that should report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coverage {
    pub reporting: u64,
    pub expected: u64,
}

impl Coverage {
    /// `reporting / expected`, 1 when no node is expected.
    pub fn ratio(self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            (self.reporting as f64 / self.expected as f64).min(1.0)
        }
    }
}

/// The nodes whose newest measurement is at most `max_age` older than the snapshot's
/// newest, against the inventory; `None` when the data does not say which nodes it covers.
pub fn coverage(snapshot: &Snapshot, inventory: &Inventory, max_age: Duration) -> Option<Coverage> {
    let nodes = snapshot.nodes.as_ref()?;
    let newest = snapshot.measured_at().unwrap_or(SystemTime::UNIX_EPOCH);
    let reporting = nodes
        .values()
        .filter(|at| newest.duration_since(**at).unwrap_or_default() <= max_age)
        .count() as u64;
    Some(Coverage {
        reporting,
        expected: inventory.total(),
    })
}

/// The snapshot if it is whole enough to decide on; else what is wrong with it. `age` is
/// the age of its newest measurement (`None`: there is none).
pub fn judge<'a>(
    snapshot: Option<&'a Snapshot>,
    age: Option<Duration>,
    inventory: &Inventory,
    budget: &ControlPlaneBudgetSpec,
) -> Result<&'a Snapshot, DataGap> {
    let gap = |reason, why: String| Err(DataGap { reason, why });
    let Some(snapshot) = snapshot else {
        return gap(FailOpenReason::Missing, "no profile data yet".to_owned());
    };
    if let Some(why) = &snapshot.missing {
        return gap(FailOpenReason::Missing, why.clone());
    }
    if snapshot.nodes.as_ref().is_some_and(|n| n.is_empty()) {
        return gap(
            FailOpenReason::Missing,
            "profile data from no node".to_owned(),
        );
    }
    let max_age = Duration::from_secs(budget.max_data_age_seconds);
    match age {
        Some(age) if age <= max_age => {}
        Some(age) => {
            return gap(
                FailOpenReason::Stale,
                format!(
                    "profile data is {}s old (max {}s)",
                    age.as_secs(),
                    max_age.as_secs()
                ),
            );
        }
        None => return gap(FailOpenReason::Missing, "no measurement time".to_owned()),
    }
    if let Some(c) = coverage(snapshot, inventory, max_age)
        && c.ratio() < budget.min_coverage
    {
        return gap(
            FailOpenReason::Partial,
            format!(
                "data from {} of {} nodes ({:.0}% < minCoverage {:.0}%)",
                c.reporting,
                c.expected,
                c.ratio() * 100.0,
                budget.min_coverage * 100.0
            ),
        );
    }
    Ok(snapshot)
}

/// The budget's status from the data in hand: the measured total, the headroom of each
/// dimension with a limit, when the newest measurement was taken, its age at `now`, and
/// the share of the inventory's nodes covered.
pub fn status(
    spec: &ControlPlaneBudgetSpec,
    snapshot: &Snapshot,
    inventory: &Inventory,
    now: SystemTime,
) -> ControlPlaneBudgetStatus {
    let mut status = ControlPlaneBudgetStatus::compute(spec, snapshot.totals);
    if let Some(at) = snapshot.measured_at() {
        status.observed_at = k8s_openapi::jiff::Timestamp::try_from(at).ok().map(|t| {
            t.round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(t)
                .to_string()
        });
        status.data_age_seconds = Some(now.duration_since(at).unwrap_or_default().as_secs());
    }
    let max_age = Duration::from_secs(spec.max_data_age_seconds);
    status.coverage = coverage(snapshot, inventory, max_age).map(|c| c.ratio());
    status
}

#[cfg(test)]
mod tests;
