//! What the budget's status shows of the API server's capacity: per priority level its
//! seats, capacity, what is in use and the headroom left at the budget's target
//! utilization (or its per-level override), with the figures' age and source.

use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ceiling::ApiserverCapacity;
use crate::budget::Limits;

/// `status.apiserverCapacity`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiserverCapacityStatus {
    /// RFC 3339 time of the newer scrape of the window the figures are from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// Seconds between that scrape and the status being written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<u64>,
    /// Where the figures came from; `one API server replica …` when read through the
    /// client (behind a load balancer, one replica's share of the load).
    pub source: String,
    pub levels: Vec<PriorityLevelStatus>,
}

/// One priority level (exempt levels have no limit and are not listed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriorityLevelStatus {
    pub name: String,
    /// Requests (1.26+: seats) the level may execute at once.
    pub seats: f64,
    /// seats ÷ seat-seconds per request; none when the level has run no request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_requests_per_second: Option<f64>,
    /// Requests/s dispatched in the window.
    pub in_use_requests_per_second: f64,
    /// What the budget lets it carry: capacity × targetUtilization, or its
    /// `priorityLevels` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_requests_per_second: Option<f64>,
    /// limit − in use, 0 while it rejects or queues (negative: over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headroom_requests_per_second: Option<f64>,
    /// `rejecting` or `queueing` when the level did so in the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
}

/// The status of every level at `now`, under `limits`.
pub fn status(
    capacity: &ApiserverCapacity,
    limits: &Limits,
    now: SystemTime,
) -> ApiserverCapacityStatus {
    let round = |v: f64| (v * 10.0).round() / 10.0;
    let levels = capacity
        .levels
        .values()
        .map(|l| {
            let limit = limits
                .priority_levels
                .get(&l.level)
                .copied()
                .or(l.capacity.map(|c| c * limits.target_utilization));
            let headroom = limit.map(|limit| match l.constraint {
                Some(_) => 0.0,
                None => limit - l.in_use,
            });
            PriorityLevelStatus {
                name: l.level.clone(),
                seats: l.seats,
                capacity_requests_per_second: l.capacity.map(round),
                in_use_requests_per_second: round(l.in_use),
                limit_requests_per_second: limit.map(round),
                headroom_requests_per_second: headroom.map(round),
                constraint: l.constraint.map(|c| c.name().to_owned()),
            }
        })
        .collect();
    ApiserverCapacityStatus {
        observed_at: Some(crate::cluster::rfc3339(capacity.observed_at)),
        data_age_seconds: Some(
            now.duration_since(capacity.observed_at)
                .unwrap_or_default()
                .as_secs(),
        ),
        source: capacity.source.clone(),
        levels,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::capacity::{Constraint, LevelCapacity};

    #[test]
    fn each_level_shows_capacity_use_limit_and_headroom() {
        let level = |name: &str, capacity: Option<f64>, in_use, constraint| LevelCapacity {
            level: name.to_owned(),
            seats: 40.0,
            seat_seconds_per_request: capacity.map(|c| 40.0 / c),
            capacity,
            in_use,
            headroom: None,
            constraint,
            window_seconds: 15.0,
        };
        let capacity = ApiserverCapacity {
            levels: [
                (
                    "global-default".to_owned(),
                    level("global-default", Some(1000.0), 100.0, None),
                ),
                (
                    "workload-low".to_owned(),
                    level("workload-low", Some(400.0), 240.0, None),
                ),
                ("catch-all".to_owned(), level("catch-all", None, 0.0, None)),
                (
                    "system".to_owned(),
                    level("system", Some(50.0), 45.0, Some(Constraint::Queueing)),
                ),
            ]
            .into(),
            flow_schemas: Vec::new(),
            observed_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_323_600),
            source: "one API server replica".to_owned(),
        };
        let mut limits = Limits::default();
        limits
            .priority_levels
            .insert("workload-low".to_owned(), 300.0);
        let now = capacity.observed_at + Duration::from_secs(12);
        let s = status(&capacity, &limits, now);
        assert_eq!(s.observed_at.as_deref(), Some("2026-11-22T05:00:00Z"));
        assert_eq!(s.data_age_seconds, Some(12));
        let by_name = |n: &str| s.levels.iter().find(|l| l.name == n).unwrap().clone();
        let global = by_name("global-default");
        assert_eq!(
            (
                global.limit_requests_per_second,
                global.headroom_requests_per_second
            ),
            (Some(700.0), Some(600.0)),
            "1000 at 0.7, 100 in use"
        );
        let low = by_name("workload-low");
        assert_eq!(
            (
                low.limit_requests_per_second,
                low.headroom_requests_per_second
            ),
            (Some(300.0), Some(60.0)),
            "the override"
        );
        let catch_all = by_name("catch-all");
        assert_eq!(
            (
                catch_all.capacity_requests_per_second,
                catch_all.headroom_requests_per_second
            ),
            (None, None)
        );
        let system = by_name("system");
        assert_eq!(system.headroom_requests_per_second, Some(0.0));
        assert_eq!(system.constraint.as_deref(), Some("queueing"));
    }
}
