//! Capacity and headroom of a priority level, by Little's law: a level that may run
//! `seats` seats at once, each request holding `s` seat-seconds on average, serves at
//! most `seats / s` requests per second. Headroom is what is left of that at the target
//! utilization after what is dispatched now; a level that rejected requests or kept
//! them queued in the window has none, whatever the arithmetic says.

use std::collections::BTreeMap;

use super::apf::{LevelSample, Scrape};

/// Why a level's headroom is zero, or why it could not be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Constraint {
    /// The level rejected requests in the window.
    Rejecting,
    /// Requests waited in its queues longer than they ran, or stayed queued across the
    /// window.
    Queueing,
}

impl Constraint {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rejecting => "rejecting",
            Self::Queueing => "queueing",
        }
    }
}

/// One priority level's figures over a window between two scrapes.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelCapacity {
    pub level: String,
    pub seats: f64,
    /// Mean seat-seconds per request; `None` when no request ever ran at this level.
    pub seat_seconds_per_request: Option<f64>,
    /// Requests/s the level can serve at full use (`seats / seat_seconds_per_request`).
    pub capacity: Option<f64>,
    /// Requests/s dispatched in the window.
    pub in_use: f64,
    /// Requests/s that still fit at the target utilization.
    pub headroom: Option<f64>,
    pub constraint: Option<Constraint>,
    pub window_seconds: f64,
}

/// Every level's capacity between `before` and `after` (two scrapes of one server, in
/// time order) at `target_utilization` (0–1].
pub fn capacity(
    before: &Scrape,
    after: &Scrape,
    target_utilization: f64,
) -> BTreeMap<String, LevelCapacity> {
    let window = (after.at - before.at).max(0.0);
    after
        .levels
        .iter()
        .map(|(level, now)| {
            let then = before.levels.get(level).cloned().unwrap_or_default();
            let figures = level_capacity(level, &then, now, window, target_utilization);
            (level.clone(), figures)
        })
        .collect()
}

/// Every level's capacity from one scrape: seat-seconds per request over the server's
/// life, and in use by Little's law the other way round (what executes now ÷ seat-seconds
/// per request), since a rate needs two scrapes. Queued requests now leave no headroom;
/// rejections need a window and are not seen.
pub fn capacity_at(scrape: &Scrape, target_utilization: f64) -> BTreeMap<String, LevelCapacity> {
    let nothing = LevelSample::default();
    scrape
        .levels
        .iter()
        .map(|(level, now)| {
            let seat_seconds = seat_seconds_per_request(&nothing, now);
            let capacity = seat_seconds.filter(|&s| s > 0.0).map(|s| now.seats / s);
            let in_use = seat_seconds
                .filter(|&s| s > 0.0)
                .map_or(0.0, |s| now.executing / s);
            let constraint = (now.in_queue > 0.0).then_some(Constraint::Queueing);
            let headroom = capacity.map(|c| match constraint {
                Some(_) => 0.0,
                None => (c * target_utilization - in_use).max(0.0),
            });
            let figures = LevelCapacity {
                level: level.clone(),
                seats: now.seats,
                seat_seconds_per_request: seat_seconds,
                capacity,
                in_use,
                headroom,
                constraint,
                window_seconds: 0.0,
            };
            (level.clone(), figures)
        })
        .collect()
}

fn level_capacity(
    level: &str,
    then: &LevelSample,
    now: &LevelSample,
    window: f64,
    target: f64,
) -> LevelCapacity {
    let delta = |a: f64, b: f64| (b - a).max(0.0);
    let dispatched = delta(then.dispatched_total, now.dispatched_total);
    let in_use = if window > 0.0 {
        dispatched / window
    } else {
        0.0
    };
    let seat_seconds = seat_seconds_per_request(then, now);
    let capacity = seat_seconds.filter(|&s| s > 0.0).map(|s| now.seats / s);
    let rejected = delta(then.rejected_total, now.rejected_total) > 0.0;
    let constraint = if rejected {
        Some(Constraint::Rejecting)
    } else if queueing(then, now) {
        Some(Constraint::Queueing)
    } else {
        None
    };
    let headroom = capacity.map(|c| match constraint {
        Some(_) => 0.0,
        None => (c * target - in_use).max(0.0),
    });
    LevelCapacity {
        level: level.to_owned(),
        seats: now.seats,
        seat_seconds_per_request: seat_seconds,
        capacity,
        in_use,
        headroom,
        constraint,
        window_seconds: window,
    }
}

/// Mean execution seconds per request times mean seats per request, over the window
/// when requests ran in it, else over the server's life.
fn seat_seconds_per_request(then: &LevelSample, now: &LevelSample) -> Option<f64> {
    let mean = |sum: f64, count: f64| (count > 0.0).then(|| sum / count);
    let in_window = mean(
        now.execution_seconds_sum - then.execution_seconds_sum,
        now.execution_seconds_count - then.execution_seconds_count,
    );
    let seconds =
        in_window.or_else(|| mean(now.execution_seconds_sum, now.execution_seconds_count))?;
    // 1.20–1.25 have no work estimate: one seat per request.
    let seats = mean(
        now.work_seats_sum - then.work_seats_sum,
        now.work_seats_count - then.work_seats_count,
    )
    .or_else(|| mean(now.work_seats_sum, now.work_seats_count))
    .unwrap_or(1.0);
    Some(seconds * seats)
}

/// Requests stayed queued at both ends of the window, or waited longer than they ran.
fn queueing(then: &LevelSample, now: &LevelSample) -> bool {
    if then.in_queue > 0.0 && now.in_queue > 0.0 {
        return true;
    }
    let waits = now.wait_seconds_count - then.wait_seconds_count;
    let runs = now.execution_seconds_count - then.execution_seconds_count;
    if waits <= 0.0 || runs <= 0.0 {
        return false;
    }
    let wait = (now.wait_seconds_sum - then.wait_seconds_sum) / waits;
    let run = (now.execution_seconds_sum - then.execution_seconds_sum) / runs;
    wait > run
}
