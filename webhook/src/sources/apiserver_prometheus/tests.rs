//! Query building and answer parsing, on answers recorded from a real Prometheus
//! scraping two API server instances that serve the recorded v1.20.2 `/metrics`
//! (tests/fixtures/prometheus/apf-v1.20-two-instances/, README there).

use super::*;
use crate::{capacity::Constraint, sources::prometheus::parse_response};

fn recorded(name: &str) -> Vec<LabeledValue> {
    let path = format!(
        "{}/tests/fixtures/prometheus/apf-v1.20-two-instances/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    parse_response(&std::fs::read(&path).unwrap()).unwrap()
}

/// Each query's recorded answer, under the names the fixtures carry.
fn answers() -> Vec<(Field, Vec<LabeledValue>)> {
    [
        (Field::Seats, "seats"),
        (Field::Executing, "executing"),
        (Field::InQueue, "inqueue"),
        (Field::InQueueLeast, "inqueue-least"),
        (Field::Dispatched, "dispatched"),
        (Field::Rejected, "rejected"),
        (Field::ExecutionSum, "execution-sum"),
        (Field::ExecutionCount, "execution-count"),
        (Field::WaitSum, "wait-sum"),
        (Field::WaitCount, "wait-count"),
    ]
    .into_iter()
    .map(|(field, name)| (field, recorded(name)))
    .collect()
}

fn value(name: &str, level: &str) -> f64 {
    recorded(name)
        .into_iter()
        .find(|(labels, _)| labels["priority_level"] == level)
        .unwrap()
        .1
}

#[test]
fn the_queries_sum_per_level_over_instances_with_rates_over_the_window() {
    let requests = queries(Generation::Requests, DEFAULT_WINDOW);
    let find = |all: &[(Field, String)], field| {
        all.iter()
            .find(|(f, _)| *f == field)
            .map(|(_, q)| q.clone())
            .unwrap()
    };
    assert_eq!(
        find(&requests, Field::Seats),
        "sum by (priority_level) (apiserver_flowcontrol_request_concurrency_limit)"
    );
    assert_eq!(
        find(&requests, Field::ExecutionSum),
        "sum by (priority_level) (rate(apiserver_flowcontrol_request_execution_seconds_sum[300s]))"
    );
    assert_eq!(
        find(&requests, Field::InQueueLeast),
        "sum by (priority_level) (min_over_time(apiserver_flowcontrol_current_inqueue_requests[300s]))"
    );
    assert!(!requests.iter().any(|(f, _)| *f == Field::WorkSeatsSum));

    let seats = queries(Generation::Seats, Duration::from_secs(120));
    assert_eq!(
        find(&seats, Field::Seats),
        "sum by (priority_level) (apiserver_flowcontrol_current_limit_seats or \
         apiserver_flowcontrol_nominal_limit_seats)"
    );
    assert_eq!(
        find(&seats, Field::Executing),
        "sum by (priority_level) (apiserver_flowcontrol_current_executing_seats)"
    );
    assert_eq!(
        find(&seats, Field::WorkSeatsCount),
        "sum by (priority_level) (rate(apiserver_flowcontrol_work_estimated_seats_count[120s]))"
    );
    assert_eq!(
        instances_query(Generation::Seats),
        "max by (instance) (timestamp(apiserver_flowcontrol_nominal_limit_seats))"
    );
}

#[test]
fn recorded_answers_give_each_levels_capacity_over_both_instances() {
    let instances = recorded("instances-v1.20");
    assert_eq!(instances.len(), 2);
    assert!(recorded("instances-v1.26-none").is_empty());
    let at = instances
        .iter()
        .map(|(_, t)| *t)
        .fold(f64::INFINITY, f64::min);
    let (before, after) = window_scrapes(Generation::Requests, &answers(), at, DEFAULT_WINDOW);
    assert_eq!(after.at - before.at, 300.0);
    let levels = capacity::capacity(&before, &after, 0.7);
    assert!(!levels.contains_key("exempt"), "exempt has no limit");
    let low = &levels["workload-low"];
    // 293 seats on each of the two instances.
    assert_eq!(low.seats, 586.0);
    let dispatched = value("dispatched", "workload-low");
    assert!((low.in_use - dispatched).abs() < 1e-9, "{low:?}");
    let per_request =
        value("execution-sum", "workload-low") / value("execution-count", "workload-low");
    let seat_seconds = low.seat_seconds_per_request.unwrap();
    assert!((seat_seconds - per_request).abs() < 1e-12, "{low:?}");
    let capacity = 586.0 / per_request;
    assert!((low.capacity.unwrap() - capacity).abs() < 1e-6 * capacity);
    assert!((low.headroom.unwrap() - (capacity * 0.7 - dispatched)).abs() < 1e-6 * capacity);
    assert_eq!(low.constraint, None);
    // A level no request ran at has seats but no measured cost.
    assert_eq!(levels["catch-all"].seats, 30.0);
    assert_eq!(levels["catch-all"].capacity, None);
}

#[test]
fn rejections_or_queueing_throughout_the_window_leave_no_headroom() {
    let at = 1_796_309_298.0;
    let with = |field: Field, rate: f64| {
        let mut all = answers();
        let mut sample = recorded("inqueue").remove(0);
        sample.1 = rate;
        all.retain(|(f, _)| *f != field);
        all.push((field, vec![sample]));
        let (before, after) = window_scrapes(Generation::Requests, &all, at, DEFAULT_WINDOW);
        capacity::capacity(&before, &after, 0.7)
            .remove("workload-low")
            .unwrap()
    };
    let rejecting = with(Field::Rejected, 0.01);
    assert_eq!(rejecting.constraint, Some(Constraint::Rejecting));
    assert_eq!(rejecting.headroom, Some(0.0));
    // Queued now but not throughout: the level still has headroom.
    let queued_now = with(Field::InQueue, 3.0);
    assert_eq!(queued_now.constraint, None);
    let mut all = answers();
    for (field, samples) in &mut all {
        if matches!(field, Field::InQueue | Field::InQueueLeast) {
            samples[0].1 = 2.0;
        }
    }
    let (before, after) = window_scrapes(Generation::Requests, &all, at, DEFAULT_WINDOW);
    let queueing = capacity::capacity(&before, &after, 0.7)
        .remove("workload-low")
        .unwrap();
    assert_eq!(queueing.constraint, Some(Constraint::Queueing));
    assert_eq!(queueing.headroom, Some(0.0));
}

#[test]
fn the_source_names_the_instances() {
    assert_eq!(source_name(1), "Prometheus, 1 API server instance");
    assert_eq!(source_name(3), "Prometheus, 3 API server instances");
}
