//! The priority level a change is judged against under `apiserverRequestsPerSecond: auto`:
//! the level its pods' service account lands in, and the requests/s that level may carry
//! (its capacity × target utilization, or the budget's per-level override). Capacity data
//! that is missing or stale fails open with the same reasons as profile data.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use super::{
    flowschema::{FlowSchema, place},
    model::{Constraint, LevelCapacity},
};
use crate::{
    budget::Limits,
    freshness::{DataGap, FailOpenReason},
};

/// The API server's capacity as a decision reads it.
#[derive(Clone, Debug)]
pub struct ApiserverCapacity {
    /// Every level with a limit (exempt levels have none and are not judged).
    pub levels: BTreeMap<String, LevelCapacity>,
    /// The FlowSchemas that place a service account in a level.
    pub flow_schemas: Vec<FlowSchema>,
    /// When the newest figures were measured (the later scrape of the window).
    pub observed_at: SystemTime,
    /// Where they came from: `one API server replica (/metrics through the kube client)`,
    /// a file, or Prometheus.
    pub source: String,
}

/// The level a change is judged against, with the figures its message names.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelCeiling {
    pub level: String,
    pub flow_schema: String,
    /// The level's measured capacity in requests/s, when it has one.
    pub capacity: Option<f64>,
    pub target_utilization: f64,
    /// Requests/s the level may carry with the change: capacity × target utilization, the
    /// budget's override, or what it carries now when it rejects or queues.
    pub ceiling: f64,
    /// Whether `ceiling` is the budget's `priorityLevels` entry.
    pub overridden: bool,
    /// Requests/s dispatched at the level now.
    pub in_use: f64,
    pub constraint: Option<Constraint>,
}

impl LevelCeiling {
    /// `workload-low: capacity 443 req/s at 0.7 = 310` (or the override), for messages.
    pub fn describe(&self) -> String {
        let limit = match (self.overridden, self.capacity) {
            (true, _) => format!("limit {:.0} req/s (priorityLevels)", self.ceiling),
            (false, Some(capacity)) => format!(
                "capacity {capacity:.0} req/s at {} = {:.0}",
                self.target_utilization,
                capacity * self.target_utilization
            ),
            (false, None) => "no capacity figure".to_owned(),
        };
        let constraint = self
            .constraint
            .map(|c| format!(", {} now: no headroom", c.name()))
            .unwrap_or_default();
        format!(
            "{}: {limit}, in use {:.0}{constraint}",
            self.level, self.in_use
        )
    }
}

/// What a change's requests are judged against: `Ok(None)` when its level has no limit
/// (exempt); a gap when the data cannot say.
pub fn resolve(
    capacity: Option<&ApiserverCapacity>,
    age: Option<Duration>,
    limits: &Limits,
    max_age: Duration,
    namespace: &str,
    service_account: &str,
) -> Result<Option<LevelCeiling>, DataGap> {
    let gap = |reason, why: String| Err(DataGap { reason, why });
    let Some(capacity) = capacity else {
        return gap(
            FailOpenReason::Missing,
            "no API server capacity data yet".to_owned(),
        );
    };
    match age {
        Some(age) if age <= max_age => {}
        Some(age) => {
            return gap(
                FailOpenReason::Stale,
                format!(
                    "API server capacity data is {}s old (max {}s)",
                    age.as_secs(),
                    max_age.as_secs()
                ),
            );
        }
        None => {
            return gap(
                FailOpenReason::Missing,
                "no API server capacity measurement time".to_owned(),
            );
        }
    }
    let Some(placement) = place(&capacity.flow_schemas, namespace, service_account) else {
        return gap(
            FailOpenReason::Missing,
            format!("no FlowSchema takes serviceaccount {namespace}/{service_account}"),
        );
    };
    let Some(figures) = capacity.levels.get(&placement.priority_level) else {
        return Ok(None);
    };
    let overridden = limits
        .priority_levels
        .get(&placement.priority_level)
        .copied();
    let target = limits.target_utilization;
    let ceiling = match (overridden, figures.capacity) {
        (Some(limit), _) => limit,
        (None, Some(capacity)) => capacity * target,
        (None, None) => {
            return gap(
                FailOpenReason::Missing,
                format!(
                    "priority level {} has run no request yet: no capacity figure",
                    placement.priority_level
                ),
            );
        }
    };
    // A level that rejects or queues has no headroom: nothing may be added to it.
    let ceiling = match figures.constraint {
        Some(_) => ceiling.min(figures.in_use),
        None => ceiling,
    };
    Ok(Some(LevelCeiling {
        level: placement.priority_level,
        flow_schema: placement.flow_schema,
        capacity: figures.capacity,
        target_utilization: target,
        ceiling,
        overridden: overridden.is_some(),
        in_use: figures.in_use,
        constraint: figures.constraint,
    }))
}
