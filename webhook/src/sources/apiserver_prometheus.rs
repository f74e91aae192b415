//! The API server's capacity for `apiserverRequestsPerSecond: auto` from Prometheus
//! (`--prometheus`): per priority level, APF's figures summed over every API server
//! instance Prometheus scrapes, counters as rates over a window. Both generations of
//! the metric names are asked for, the 1.26+ seat names first; the figures are as old as
//! the oldest instance's newest sample, so a Prometheus that stopped scraping the API
//! servers ages them towards stale as the profile source does.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    capacity::{self, Generation, LevelCapacity, Scrape, apf::LevelSample},
    error::Error,
    sources::prometheus::{LabeledValue, query},
};

/// The window rates are taken over, as in the usual `rate(…[5m])`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Longest wait between failing fetches.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

const PREFIX: &str = "apiserver_flowcontrol_";

/// What one query fills in of a level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Seats,
    Executing,
    InQueue,
    /// The fewest requests queued at any scrape in the window: above zero, they stayed
    /// queued throughout.
    InQueueLeast,
    Dispatched,
    Rejected,
    ExecutionSum,
    ExecutionCount,
    WaitSum,
    WaitCount,
    WorkSeatsSum,
    WorkSeatsCount,
}

/// The gauge whose series say which instances report `generation` and when each was
/// last scraped.
pub fn limit_metric(generation: Generation) -> &'static str {
    match generation {
        Generation::Requests => "apiserver_flowcontrol_request_concurrency_limit",
        Generation::Seats => "apiserver_flowcontrol_nominal_limit_seats",
    }
}

/// Per API server instance, the time of its newest sample of the level limits.
pub fn instances_query(generation: Generation) -> String {
    format!(
        "max by (instance) (timestamp({}))",
        limit_metric(generation)
    )
}

/// Every query of one generation, summed per priority level over all instances.
pub fn queries(generation: Generation, window: Duration) -> Vec<(Field, String)> {
    let w = format!("{}s", window.as_secs().max(1));
    let sum = |inner: String| format!("sum by (priority_level) ({inner})");
    let rate = |metric: &str| sum(format!("rate({PREFIX}{metric}[{w}])"));
    let seats = match generation {
        Generation::Requests => format!("{PREFIX}request_concurrency_limit"),
        Generation::Seats => {
            format!("{PREFIX}current_limit_seats or {PREFIX}nominal_limit_seats")
        }
    };
    let executing = match generation {
        Generation::Requests => "current_executing_requests",
        Generation::Seats => "current_executing_seats",
    };
    let mut all = vec![
        (Field::Seats, sum(seats)),
        (Field::Executing, sum(format!("{PREFIX}{executing}"))),
        (
            Field::InQueue,
            sum(format!("{PREFIX}current_inqueue_requests")),
        ),
        (
            Field::InQueueLeast,
            sum(format!(
                "min_over_time({PREFIX}current_inqueue_requests[{w}])"
            )),
        ),
        (Field::Dispatched, rate("dispatched_requests_total")),
        (Field::Rejected, rate("rejected_requests_total")),
        (Field::ExecutionSum, rate("request_execution_seconds_sum")),
        (
            Field::ExecutionCount,
            rate("request_execution_seconds_count"),
        ),
        (Field::WaitSum, rate("request_wait_duration_seconds_sum")),
        (
            Field::WaitCount,
            rate("request_wait_duration_seconds_count"),
        ),
    ];
    if generation == Generation::Seats {
        all.push((Field::WorkSeatsSum, rate("work_estimated_seats_sum")));
        all.push((Field::WorkSeatsCount, rate("work_estimated_seats_count")));
    }
    all
}

/// The window as the model reads it: a scrape `window` before `at` with no counts and
/// the fewest requests queued, and one at `at` with the rates times the window.
pub fn window_scrapes(
    generation: Generation,
    answers: &[(Field, Vec<LabeledValue>)],
    at: f64,
    window: Duration,
) -> (Scrape, Scrape) {
    let seconds = window.as_secs_f64();
    let mut before: BTreeMap<String, LevelSample> = BTreeMap::new();
    let mut after: BTreeMap<String, LevelSample> = BTreeMap::new();
    for (field, samples) in answers {
        for (labels, value) in samples {
            let Some(level) = labels.get("priority_level") else {
                continue;
            };
            let now = after.entry(level.clone()).or_default();
            let counted = value * seconds;
            match field {
                Field::Seats => now.seats = *value,
                Field::Executing => now.executing = *value,
                Field::InQueue => now.in_queue = *value,
                Field::InQueueLeast => before.entry(level.clone()).or_default().in_queue = *value,
                Field::Dispatched => now.dispatched_total = counted,
                Field::Rejected => now.rejected_total = counted,
                Field::ExecutionSum => now.execution_seconds_sum = counted,
                Field::ExecutionCount => now.execution_seconds_count = counted,
                Field::WaitSum => now.wait_seconds_sum = counted,
                Field::WaitCount => now.wait_seconds_count = counted,
                Field::WorkSeatsSum => now.work_seats_sum = counted,
                Field::WorkSeatsCount => now.work_seats_count = counted,
            }
        }
    }
    // Levels with no limit are exempt (no seats, never queued): nothing to judge.
    after.retain(|_, l| l.seats > 0.0);
    let scrape = |at, levels| Scrape {
        at,
        generation,
        levels,
    };
    (scrape(at - seconds, before), scrape(at, after))
}

/// What the status's `source` says: how many API server instances the sums cover.
pub fn source_name(instances: usize) -> String {
    match instances {
        1 => "Prometheus, 1 API server instance".to_owned(),
        n => format!("Prometheus, {n} API server instances"),
    }
}

/// Every level's figures from Prometheus at `base`.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub levels: BTreeMap<String, LevelCapacity>,
    /// The oldest of the instances' newest samples.
    pub observed_at: SystemTime,
    pub instances: usize,
    pub generation: Generation,
}

impl Figures {
    pub fn source(&self) -> String {
        source_name(self.instances)
    }
}

/// Which generation answers and when each instance was last scraped: the seat names
/// first (a 1.26–1.29 server still has the old names too), then the request names.
async fn instances(base: &str) -> Result<(Generation, Vec<f64>), Error> {
    for generation in [Generation::Seats, Generation::Requests] {
        let promql = instances_query(generation);
        let answer = query(base, &promql).await?;
        if !answer.is_empty() {
            return Ok((generation, answer.into_iter().map(|(_, at)| at).collect()));
        }
    }
    Err(Error::Prometheus {
        url: base.to_owned(),
        query: instances_query(Generation::Requests),
        message: format!(
            "no series of {} (1.26+) nor {} (1.20–1.25): Prometheus does not scrape the API \
             servers' /metrics, or API Priority and Fairness is off",
            limit_metric(Generation::Seats),
            limit_metric(Generation::Requests)
        ),
    })
}

/// Asks Prometheus for every level's figures over `window`.
pub async fn fetch(base: &str, window: Duration, target: f64) -> Result<Figures, Error> {
    let (generation, scraped) = instances(base).await?;
    let oldest = scraped.iter().copied().fold(f64::INFINITY, f64::min);
    let mut answers = Vec::new();
    for (field, promql) in queries(generation, window) {
        answers.push((field, query(base, &promql).await?));
    }
    let (before, after) = window_scrapes(generation, &answers, oldest, window);
    Ok(Figures {
        levels: capacity::capacity(&before, &after, target),
        observed_at: SystemTime::UNIX_EPOCH
            + Duration::try_from_secs_f64(oldest).unwrap_or_default(),
        instances: scraped.len(),
        generation,
    })
}

/// While the budget in force has `auto` request limits, asks Prometheus every `every`
/// (backing off to [`MAX_BACKOFF`] while it fails) and publishes the figures to `state`.
/// Failures are logged once per change, counted in
/// `profile_refresh_errors_total{source="apiserver"}`, and the last figures age.
pub async fn run(base: String, state: Arc<crate::admission::State>, every: Duration) {
    let mut delay = every;
    let mut failing: Option<String> = None;
    loop {
        if !state.budget().spec.limits.requests_auto() {
            tokio::time::sleep(every).await;
            continue;
        }
        let target = capacity::DEFAULT_TARGET_UTILIZATION;
        match fetch(&base, DEFAULT_WINDOW, target).await {
            Ok(figures) => {
                if failing.take().is_some() {
                    tracing::info!("reading the API server's capacity from Prometheus works again");
                }
                let source = figures.source();
                state
                    .apiserver
                    .set_levels(figures.levels, figures.observed_at, &source);
                delay = every;
            }
            Err(error) => {
                let error = error.to_string();
                state
                    .metrics
                    .record_refresh_error(super::apiserver::SOURCE_LABEL);
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::warn!(%error, "reading the API server's capacity from Prometheus \
                                            failed; `auto` request limits fail open until it \
                                            works, retrying with backoff");
                }
                failing = Some(error);
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests;
