use super::*;
use crate::profile::ProfileList;

const BUDGET: &str = include_str!("../../tests/fixtures/budget.yaml");

fn budget(min_coverage: f64) -> ControlPlaneBudgetSpec {
    let mut spec = crate::budget::ControlPlaneBudget::parse("budget.yaml", BUDGET)
        .expect("fixture budget")
        .spec;
    spec.min_coverage = min_coverage;
    spec.max_data_age_seconds = 120;
    spec
}

/// The recorded fixture as `nodes` collectors served it, each `age_of(i)` seconds before
/// the newest.
fn collectors(nodes: usize, age_of: impl Fn(usize) -> u64) -> Snapshot {
    let recorded: ProfileList = ProfileList::parse(
        "profiles-outage.json",
        include_bytes!("../../tests/fixtures/profiles-outage.json"),
    )
    .expect("fixture");
    let newest = crate::profile::parse_time(&recorded.generated_at).expect("a time");
    let lists: Vec<ProfileList> = (0..nodes)
        .map(|i| {
            let mut list = recorded.clone();
            list.node = format!("node-{i}");
            let at = newest - Duration::from_secs(age_of(i));
            list.generated_at = k8s_openapi::jiff::Timestamp::try_from(at)
                .expect("a time")
                .to_string();
            list
        })
        .collect();
    Snapshot::merge(&lists)
}

fn reason(r: Result<&Snapshot, DataGap>) -> Option<FailOpenReason> {
    r.err().map(|gap| gap.reason)
}

#[test]
fn whole_fresh_data_is_decided_on() {
    let s = collectors(10, |_| 0);
    let got = judge(
        Some(&s),
        Some(Duration::from_secs(30)),
        &Inventory::uniform(10),
        &budget(0.9),
    );
    assert_eq!(reason(got), None);
}

#[test]
fn no_data_or_no_node_is_missing() {
    let inventory = Inventory::uniform(10);
    let gap = judge(None, None, &inventory, &budget(0.9)).unwrap_err();
    assert_eq!(gap.reason, FailOpenReason::Missing);
    assert_eq!(gap.why, "no profile data yet");
    let empty = Snapshot::merge(&[]);
    assert_eq!(
        reason(judge(Some(&empty), None, &inventory, &budget(0.9))),
        Some(FailOpenReason::Missing)
    );
    let said_missing = Snapshot {
        missing: Some("Prometheus has no series for x".into()),
        ..collectors(10, |_| 0)
    };
    let gap = judge(
        Some(&said_missing),
        Some(Duration::ZERO),
        &inventory,
        &budget(0.9),
    )
    .unwrap_err();
    assert_eq!(gap.reason, FailOpenReason::Missing);
    assert_eq!(gap.why, "Prometheus has no series for x");
}

#[test]
fn old_measurements_are_stale() {
    let s = collectors(10, |_| 0);
    let gap = judge(
        Some(&s),
        Some(Duration::from_secs(121)),
        &Inventory::uniform(10),
        &budget(0.9),
    )
    .unwrap_err();
    assert_eq!(gap.reason, FailOpenReason::Stale);
    assert_eq!(gap.why, "profile data is 121s old (max 120s)");
}

#[test]
fn half_the_nodes_is_partial_and_so_is_a_node_far_behind() {
    let inventory = Inventory::uniform(10);
    let half = collectors(5, |_| 0);
    let gap = judge(Some(&half), Some(Duration::ZERO), &inventory, &budget(0.9)).unwrap_err();
    assert_eq!(gap.reason, FailOpenReason::Partial);
    assert_eq!(gap.why, "data from 5 of 10 nodes (50% < minCoverage 90%)");
    // Ten lists, two of them from collectors 10 minutes behind the rest.
    let lagging = collectors(10, |i| if i < 2 { 600 } else { 0 });
    assert_eq!(
        coverage(&lagging, &inventory, Duration::from_secs(120)),
        Some(Coverage {
            reporting: 8,
            expected: 10
        })
    );
    assert_eq!(
        reason(judge(
            Some(&lagging),
            Some(Duration::ZERO),
            &inventory,
            &budget(0.9)
        )),
        Some(FailOpenReason::Partial)
    );
    assert_eq!(
        reason(judge(
            Some(&lagging),
            Some(Duration::ZERO),
            &inventory,
            &budget(0.8)
        )),
        None
    );
}

#[test]
fn data_that_does_not_name_its_nodes_is_not_judged_for_coverage() {
    let s = Snapshot::default();
    assert_eq!(coverage(&s, &Inventory::uniform(10), Duration::MAX), None);
    assert_eq!(
        reason(judge(
            Some(&s),
            Some(Duration::ZERO),
            &Inventory::uniform(10),
            &budget(1.0)
        )),
        None
    );
}

#[test]
fn status_shows_coverage_age_and_the_newest_measurement() {
    let s = collectors(5, |_| 0);
    let newest = s.measured_at().unwrap();
    let status = status(
        &budget(0.9),
        &s,
        &Inventory::uniform(10),
        newest + Duration::from_secs(42),
    );
    assert_eq!(status.coverage, Some(0.5));
    assert_eq!(status.data_age_seconds, Some(42));
    assert_eq!(status.observed_at.as_deref(), Some("2026-11-22T05:00:00Z"));
    assert_eq!(status.current, s.totals);
}
