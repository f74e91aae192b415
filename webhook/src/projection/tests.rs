use super::*;
use crate::budget::Limits;

fn requests(v: f64) -> Load {
    Load {
        apiserver_requests_per_second: v,
        ..Load::ZERO
    }
}

/// 1,000 requests/s limit, burst 1.5, share 0.5.
fn budget() -> ControlPlaneBudgetSpec {
    ControlPlaneBudgetSpec {
        limits: Limits {
            apiserver_requests_per_second: Some(1000.0),
            ..Limits::default()
        },
        burst_factor: 1.5,
        per_workload_share: 0.5,
        ..ControlPlaneBudgetSpec::default()
    }
}

fn cost(steady: f64, startup: f64) -> PodCost {
    PodCost {
        steady: requests(steady),
        startup: requests(startup),
    }
}

#[test]
fn base_takes_out_the_current_share_and_adds_pending() {
    let base = base_load(requests(300.0), requests(50.0), requests(20.0));
    assert_eq!(base, requests(270.0));
    let clamped = base_load(requests(10.0), requests(50.0), Load::ZERO);
    assert_eq!(
        clamped,
        Load::ZERO,
        "a share larger than the total is clamped"
    );
}

#[test]
fn steady_and_peak_follow_the_formula() {
    let p = project(requests(200.0), cost(2.0, 10.0), 100, 25);
    assert_eq!(p.workload_steady, requests(200.0));
    assert_eq!(p.steady, requests(400.0));
    assert_eq!(p.startup_burst, requests(250.0));
    assert_eq!(p.peak, requests(650.0));
    assert!(violations(&p, &budget()).is_empty());
}

#[test]
fn each_check_is_reported() {
    // steady 1100 > 1000; peak 1100 + 500 = 1600 > 1500; workload 900 > 500.
    let p = project(requests(200.0), cost(9.0, 5.0), 100, 100);
    let v = violations(&p, &budget());
    let checks: Vec<Check> = v.iter().map(|v| v.check).collect();
    assert_eq!(checks, [Check::Steady, Check::Peak, Check::Share]);
    assert_eq!(v[0].projected, 1100.0);
    assert_eq!(v[0].allowed, 1000.0);
    assert_eq!(v[1].allowed, 1500.0);
    assert_eq!(v[2].projected, 900.0);
    assert_eq!(v[2].allowed, 500.0);
    assert_eq!(v[0].short(), "apiserver requests/s steady 1100 > 1000");
}

#[test]
fn peak_only_violation() {
    // steady 300 fits, workload 100 fits; peak 300 + 100×20 = 2300 > 1500.
    let p = project(requests(200.0), cost(1.0, 20.0), 100, 100);
    let v = violations(&p, &budget());
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].check, Check::Peak);
}

#[test]
fn unlimited_dimensions_are_not_checked() {
    let p = project(
        Load {
            dns_queries_per_second: 1e12,
            ..Load::ZERO
        },
        PodCost::default(),
        0,
        0,
    );
    assert!(violations(&p, &budget()).is_empty());
}

#[test]
fn max_pods_is_the_boundary() {
    // create: starts = pods. Constraints: 200 + 2n ≤ 1000 (n ≤ 400); 2n ≤ 500 (n ≤ 250);
    // 200 + 2n + 10n ≤ 1500 (n ≤ 108.3).
    let n = max_pods(requests(200.0), cost(2.0, 10.0), 1000, |n| n, &budget());
    assert_eq!(n, 108);
    assert!(fits(requests(200.0), cost(2.0, 10.0), 108, 108, &budget()));
    assert!(!fits(requests(200.0), cost(2.0, 10.0), 109, 109, &budget()));
    // With a fixed batch of 10 starts: peak 200 + 2n + 100 ≤ 1500, but the share binds: 250.
    assert_eq!(
        max_pods(
            requests(200.0),
            cost(2.0, 10.0),
            1000,
            |n| n.min(10),
            &budget()
        ),
        250
    );
    assert_eq!(
        max_pods(requests(200.0), cost(2.0, 10.0), 50, |n| n, &budget()),
        50,
        "capped"
    );
    assert_eq!(
        max_pods(requests(2000.0), cost(2.0, 10.0), 50, |n| n, &budget()),
        0,
        "base over"
    );
}

#[test]
fn max_starts_is_the_boundary_or_none() {
    // 100 pods: steady 400; peak 400 + 10k ≤ 1500 → k ≤ 110, capped at 100.
    assert_eq!(
        max_starts(requests(200.0), cost(2.0, 10.0), 100, &budget()),
        Some(100)
    );
    // 200 pods: steady 600; share 400 ≤ 500; peak 600 + 10k ≤ 1500 → k ≤ 90.
    assert_eq!(
        max_starts(requests(200.0), cost(2.0, 10.0), 200, &budget()),
        Some(90)
    );
    // 300 pods: share 600 > 500 → nothing fits.
    assert_eq!(
        max_starts(requests(200.0), cost(2.0, 10.0), 300, &budget()),
        None
    );
    // One start too big for the burst allowance.
    assert_eq!(
        max_starts(requests(900.0), cost(0.0, 700.0), 1, &budget()),
        None
    );
}

#[test]
fn max_per_pod_steady_takes_the_tighter_of_room_and_share() {
    let v = max_per_pod_steady(requests(200.0), 100, &budget());
    assert_eq!(
        v,
        [(Dimension::ApiserverRequests, 5.0)],
        "share 500 / 100 pods"
    );
    let v = max_per_pod_steady(requests(800.0), 100, &budget());
    assert_eq!(
        v,
        [(Dimension::ApiserverRequests, 2.0)],
        "room 200 / 100 pods"
    );
    assert!(max_per_pod_steady(requests(800.0), 0, &budget()).is_empty());
}
