//! What API Priority and Fairness reports per priority level, from the API server's
//! metrics, in either generation of their names:
//! - 1.20–1.25: `apiserver_flowcontrol_request_concurrency_limit` (seats; one per
//!   request), `…_current_executing_requests`, `…_current_inqueue_requests`;
//! - 1.26+: `…_nominal_limit_seats`, `…_current_limit_seats` (after borrowing),
//!   `…_current_executing_seats`, `…_work_estimated_seats` (seats per request).
//!
//! Both have `…_dispatched_requests_total`, `…_rejected_requests_total`,
//! `…_request_execution_seconds` and `…_request_wait_duration_seconds`. Counters and
//! histograms are labelled per flow schema too; they are summed per level here.

use std::collections::BTreeMap;

use super::exposition::{self, Sample, SyntaxError};

const PREFIX: &str = "apiserver_flowcontrol_";

/// Which names the server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// 1.20–1.25: one seat per request, `request_concurrency_limit`.
    Requests,
    /// 1.26+: seats, `nominal_limit_seats` / `current_limit_seats`.
    Seats,
}

/// One priority level as one scrape saw it. Counters are cumulative.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelSample {
    /// Seats the level may use now.
    pub seats: f64,
    /// Seats (1.20: requests) executing now.
    pub executing: f64,
    /// Requests waiting in the level's queues now.
    pub in_queue: f64,
    pub dispatched_total: f64,
    pub rejected_total: f64,
    pub execution_seconds_sum: f64,
    pub execution_seconds_count: f64,
    pub wait_seconds_sum: f64,
    pub wait_seconds_count: f64,
    /// Seats per request, summed and counted (1.26+; none before: one seat each).
    pub work_seats_sum: f64,
    pub work_seats_count: f64,
}

/// A scrape of one API server's APF metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Scrape {
    /// When it was taken, in Unix seconds.
    pub at: f64,
    pub generation: Generation,
    pub levels: BTreeMap<String, LevelSample>,
}

/// Why a metrics text gave no capacity figures.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ApfError {
    #[error("API server metrics: {0}")]
    Syntax(#[from] SyntaxError),
    #[error(
        "API server metrics: {name} of priority level {level} is {value}, not a finite \
         number ≥ 0 (a limit, a gauge of requests or seats, or a counter)"
    )]
    Value {
        name: String,
        level: String,
        value: f64,
    },
    #[error(
        "API server metrics have no apiserver_flowcontrol_request_concurrency_limit (1.20–1.25) \
         nor apiserver_flowcontrol_nominal_limit_seats (1.26+): API Priority and Fairness is off \
         (--enable-priority-and-fairness=false) or these are not an API server's metrics"
    )]
    NoPriorityLevels,
}

/// The APF figures of every priority level in `text` (an API server's `/metrics`),
/// taken at `at` (Unix seconds).
pub fn parse(text: &str, at: f64) -> Result<Scrape, ApfError> {
    let samples = exposition::samples(text, PREFIX)?;
    let generation = if samples.iter().any(|s| is(s, "nominal_limit_seats")) {
        Generation::Seats
    } else if samples.iter().any(|s| is(s, "request_concurrency_limit")) {
        Generation::Requests
    } else {
        return Err(ApfError::NoPriorityLevels);
    };
    let mut levels: BTreeMap<String, LevelSample> = BTreeMap::new();
    // 1.26+: the limit after borrowing where the server reports it, else the nominal one.
    let mut nominal: BTreeMap<String, f64> = BTreeMap::new();
    for sample in &samples {
        let Some(level) = sample.label("priority_level") else {
            continue;
        };
        let metric = &sample.name[PREFIX.len()..];
        let v = sample.value;
        // Every series the model reads is a limit, a gauge or a counter: +Inf would make
        // an infinite capacity (and headroom), NaN or a negative a meaningless one.
        if USED.contains(&metric) && !(v.is_finite() && v >= 0.0) {
            return Err(ApfError::Value {
                name: sample.name.clone(),
                level: level.to_owned(),
                value: v,
            });
        }
        let entry = levels.entry(level.to_owned()).or_default();
        match (generation, metric) {
            (Generation::Requests, "request_concurrency_limit") => entry.seats = v,
            (Generation::Seats, "current_limit_seats") => entry.seats = v,
            (Generation::Seats, "nominal_limit_seats") => {
                nominal.insert(level.to_owned(), v);
            }
            (Generation::Requests, "current_executing_requests") => entry.executing += v,
            (Generation::Seats, "current_executing_seats") => entry.executing += v,
            (_, "current_inqueue_requests") => entry.in_queue += v,
            (_, "dispatched_requests_total") => entry.dispatched_total += v,
            (_, "rejected_requests_total") => entry.rejected_total += v,
            (_, "request_execution_seconds_sum") => entry.execution_seconds_sum += v,
            (_, "request_execution_seconds_count") => entry.execution_seconds_count += v,
            (_, "request_wait_duration_seconds_sum") => entry.wait_seconds_sum += v,
            (_, "request_wait_duration_seconds_count") => entry.wait_seconds_count += v,
            (Generation::Seats, "work_estimated_seats_sum") => entry.work_seats_sum += v,
            (Generation::Seats, "work_estimated_seats_count") => entry.work_seats_count += v,
            _ => {}
        }
    }
    for (level, seats) in nominal {
        let entry = levels.entry(level).or_default();
        if entry.seats == 0.0 {
            entry.seats = seats;
        }
    }
    // Levels with no limit are exempt (no seats, never queued): nothing to judge.
    levels.retain(|_, l| l.seats > 0.0);
    Ok(Scrape {
        at,
        generation,
        levels,
    })
}

/// The series (after the prefix) the model reads, of either generation.
const USED: &[&str] = &[
    "request_concurrency_limit",
    "current_limit_seats",
    "nominal_limit_seats",
    "current_executing_requests",
    "current_executing_seats",
    "current_inqueue_requests",
    "dispatched_requests_total",
    "rejected_requests_total",
    "request_execution_seconds_sum",
    "request_execution_seconds_count",
    "request_wait_duration_seconds_sum",
    "request_wait_duration_seconds_count",
    "work_estimated_seats_sum",
    "work_estimated_seats_count",
];

fn is(sample: &Sample, metric: &str) -> bool {
    sample.name.len() == PREFIX.len() + metric.len() && sample.name.ends_with(metric)
}
