//! The profile maths over a [`ProfileStore`]: plain functions of samples and a time.
//!
//! The figures follow what the recording rules in deploy/prometheus compute from the
//! scraped counters, so the two agree:
//! - a pod's 5-minute rate at a sample: the counter's increase (resets count from
//!   zero) since the oldest sample at most 5 minutes older, over the time between —
//!   or over the whole 5 minutes while the pod's series is younger than that, as
//!   Prometheus' `rate` does for a counter that starts inside its range;
//! - steady: per pod the p95 over the window of its 5-minute rates, then the p95 over
//!   the workload's pods (Prometheus' `quantile`, linear between ranks); only rates over
//!   a full range count, so a pod counts (in `pods` and `steady`) once it has been
//!   measured for the rate range;
//! - measuredSeconds: the longest time one of the workload's pods has been sampled in
//!   the window;
//! - startup: the pod's counter 60 s after its first container started (interpolated
//!   between samples), over 60 s — counters start at zero with the cgroup — for pods
//!   that started in the window after the store began; p95 over those pods;
//! - current and totals: the sum of the latest 5-minute rates of pods still reporting.
use std::collections::{BTreeMap, VecDeque};

use super::{
    DIMENSIONS,
    schema::{API_VERSION, KIND, Load, ProfileItem, ProfileList, WorkloadRef},
    store::{PodSeries, ProfileStore, RATE_RANGE_SECONDS, Sample, StoreConfig},
};
use crate::identity::UNKNOWN_WORKLOAD_KIND;

/// What a pod spends in its first … seconds: the startup burst.
pub const STARTUP_SECONDS: f64 = 60.0;
/// The quantile over pods (and over a pod's time) that a profile reports.
pub const QUANTILE: f64 = 0.95;

/// Prometheus' `quantile`: φ over the sorted values, linear between neighbouring ranks.
/// `None` for no values.
pub fn quantile(phi: f64, values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = phi.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let (lower, upper) = (rank.floor() as usize, rank.ceil() as usize);
    let weight = rank - rank.floor();
    Some(values[lower] * (1.0 - weight) + values[upper] * weight)
}

/// The increase of a counter from `a` to `b`; a decrease is a reset (the new value is
/// all increase).
fn increase(a: u64, b: u64) -> u64 {
    if b >= a { b - a } else { b }
}

/// The 5-minute rate of each dimension at `samples[i]`; `None` without an earlier
/// sample in range.
pub fn rate5m(samples: &VecDeque<Sample>, i: usize) -> Option<[f64; DIMENSIONS]> {
    rate_over(samples, i, RATE_RANGE_SECONDS)
}

/// The rate over `range` seconds of each dimension at `samples[i]`; `None` without an
/// earlier sample in range.
pub fn rate_over(samples: &VecDeque<Sample>, i: usize, range: f64) -> Option<[f64; DIMENSIONS]> {
    let end = samples.get(i)?;
    let first = (0..i).find(|&j| samples[j].at >= end.at - range)?;
    let elapsed = end.at - samples[first].at;
    if elapsed <= 0.0 {
        return None;
    }
    // The series starts inside the range: nothing to extrapolate back to.
    let over = if first == 0 { range } else { elapsed };
    let mut total = [0u64; DIMENSIONS];
    for j in first..i {
        for (d, sum) in total.iter_mut().enumerate() {
            *sum += increase(samples[j].counters[d], samples[j + 1].counters[d]);
        }
    }
    Some(total.map(|n| n as f64 / over))
}

/// The mean rate over the first [`STARTUP_SECONDS`] after `started_at`, from counters
/// that were zero at `started_at`. `None` until a sample at or after that minute.
pub fn startup_rate(series: &PodSeries, started_at: f64) -> Option<[f64; DIMENSIONS]> {
    let end = started_at + STARTUP_SECONDS;
    let after = series.samples.iter().position(|s| s.at >= end)?;
    let b = series.samples[after];
    let (a_at, a) = match after.checked_sub(1).map(|i| series.samples[i]) {
        Some(a) if a.at >= started_at => (a.at, a.counters),
        _ => (started_at, [0; DIMENSIONS]),
    };
    let weight = if b.at > a_at {
        (end - a_at) / (b.at - a_at)
    } else {
        1.0
    };
    let mut rates = [0.0; DIMENSIONS];
    for (d, rate) in rates.iter_mut().enumerate() {
        let (from, to) = (a[d] as f64, b.counters[d] as f64);
        // A reset inside the minute: count from zero.
        let at_end = if to >= from {
            from + (to - from) * weight
        } else {
            to * weight
        };
        *rate = at_end / STARTUP_SECONDS;
    }
    Some(rates)
}

/// Everything computed for one pod at `now`.
struct PodFigures {
    /// p95 of its 5-minute rates in the window; `None` with fewer than two samples.
    steady: Option<[f64; DIMENSIONS]>,
    startup: Option<[f64; DIMENSIONS]>,
    /// Its latest 5-minute rate, if it still reports.
    current: Option<[f64; DIMENSIONS]>,
    /// Seconds between its first and last sample in the window.
    measured: f64,
    in_window: bool,
}

fn pod_figures(series: &PodSeries, now: f64, config: &StoreConfig, created_at: f64) -> PodFigures {
    let (window, interval, range) = (
        config.window_seconds,
        config.interval_seconds,
        config.rate_range_seconds,
    );
    let start = now - window;
    let samples = &series.samples;
    let in_window: Vec<usize> = (0..samples.len())
        .filter(|&i| samples[i].at >= start && samples[i].at <= now)
        .collect();
    // Only rates over a full range: a younger pod's would be diluted by the time before
    // it existed (a true 1/s read 0.27/s at one minute). Samples come every `interval`
    // give or take the tick's jitter (the store takes one from 0.9 × interval on), so a
    // range is full within a tenth of an interval: otherwise a range of one interval
    // could wait for a sample that lands a few milliseconds short of it forever.
    let first_at = samples.front().map_or(f64::MAX, |s| s.at);
    let full = range - 0.1 * interval;
    let rates: Vec<[f64; DIMENSIONS]> = in_window
        .iter()
        .filter(|&&i| samples[i].at - first_at >= full)
        .filter_map(|&i| rate_over(samples, i, range))
        .collect();
    let steady = (!rates.is_empty()).then(|| {
        std::array::from_fn(|d| {
            let mut values: Vec<f64> = rates.iter().map(|r| r[d]).collect();
            quantile(QUANTILE, &mut values).unwrap_or(0.0)
        })
    });
    let startup = series
        .started_at
        .filter(|&s| s >= start && s >= created_at && s + STARTUP_SECONDS <= now)
        .and_then(|s| startup_rate(series, s));
    // Reporting: its last sample is from the latest tick or so.
    let current = samples
        .back()
        .filter(|last| last.at >= now - 2.0 * interval)
        .and_then(|_| rate_over(samples, samples.len() - 1, range));
    let measured = match (in_window.first(), in_window.last()) {
        (Some(&a), Some(&b)) => samples[b].at - samples[a].at,
        _ => 0.0,
    };
    PodFigures {
        steady,
        startup,
        current,
        measured,
        in_window: !in_window.is_empty(),
    }
}

fn add(total: &mut [f64; DIMENSIONS], rates: [f64; DIMENSIONS]) {
    for (t, r) in total.iter_mut().zip(rates) {
        *t += r;
    }
}

fn p95_over(values: &[[f64; DIMENSIONS]]) -> [f64; DIMENSIONS] {
    std::array::from_fn(|d| {
        let mut column: Vec<f64> = values.iter().map(|v| v[d]).collect();
        quantile(QUANTILE, &mut column).unwrap_or(0.0)
    })
}

/// The node's `ProfileList` at `now` (Unix seconds); `generated_at` is RFC 3339.
pub fn profile_list(
    store: &ProfileStore,
    node: &str,
    now: f64,
    generated_at: String,
) -> ProfileList {
    let config = store.config();
    let mut totals = [0.0; DIMENSIONS];
    #[derive(Default)]
    struct Workload {
        image: String,
        image_at: f64,
        pods: u64,
        measured: f64,
        steady: Vec<[f64; DIMENSIONS]>,
        startup: Vec<[f64; DIMENSIONS]>,
        current: [f64; DIMENSIONS],
    }
    let mut workloads: BTreeMap<WorkloadRef, Workload> = BTreeMap::new();
    for (key, series) in store.pods() {
        let figures = pod_figures(series, now, config, store.created_at());
        if let Some(current) = figures.current {
            add(&mut totals, current);
        }
        // A pod without its Pod object has no workload to profile (it still counts
        // in the totals above).
        if !figures.in_window || key.workload_kind == UNKNOWN_WORKLOAD_KIND {
            continue;
        }
        let workload = workloads
            .entry(WorkloadRef {
                namespace: key.namespace.clone(),
                kind: key.workload_kind.clone(),
                name: key.workload.clone(),
            })
            .or_default();
        // The newest pod's image speaks for the workload.
        let last_at = series.samples.back().map_or(f64::MIN, |s| s.at);
        if !series.image.is_empty() && (workload.image.is_empty() || last_at > workload.image_at) {
            workload.image.clone_from(&series.image);
            workload.image_at = last_at;
        }
        // A pod counts once it has a full rate window; until then only its time does.
        workload.pods += u64::from(figures.steady.is_some());
        workload.measured = workload.measured.max(figures.measured);
        workload.steady.extend(figures.steady);
        workload.startup.extend(figures.startup);
        if let Some(current) = figures.current {
            add(&mut workload.current, current);
        }
    }
    let items = workloads
        .into_iter()
        .map(|(workload, w)| ProfileItem {
            workload,
            image: w.image,
            pods: w.pods,
            minutes: (w.measured / 60.0).floor() as u64,
            measured_seconds: w.measured.floor() as u64,
            steady: Load::from_array(p95_over(&w.steady)),
            startup: Load::from_array(p95_over(&w.startup)),
            current: Load::from_array(w.current),
        })
        .collect();
    ProfileList {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        node: node.into(),
        generated_at,
        window_seconds: config.window_seconds as u64,
        totals: Load::from_array(totals),
        items,
    }
}
