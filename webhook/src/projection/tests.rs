use super::*;
use crate::budget::{Limits, RequestLimit};

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
            apiserver_requests_per_second: Some(RequestLimit::PerSecond(1000.0)),
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
    assert!(violations(&p, &Ceilings::fixed(&budget())).is_empty());
}

#[test]
fn each_check_is_reported() {
    // steady 1100 > 1000; peak 1100 + 500 = 1600 > 1500; workload 900 > 500.
    let p = project(requests(200.0), cost(9.0, 5.0), 100, 100);
    let v = violations(&p, &Ceilings::fixed(&budget()));
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
    let v = violations(&p, &Ceilings::fixed(&budget()));
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
    assert!(violations(&p, &Ceilings::fixed(&budget())).is_empty());
}

#[test]
fn a_priority_level_bounds_the_peak_without_a_burst_factor() {
    // Past a level's ceiling the API server queues: a rollout's peak may not go over it.
    let ceilings = Ceilings::fixed(&budget()).with_level(300.0, 0.5);
    let p = project(requests(200.0), cost(10.0, 20.0), 5, 5);
    assert_eq!((p.steady, p.peak), (requests(250.0), requests(350.0)));
    let v = violations(&p, &ceilings);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0].check, v[0].allowed), (Check::Peak, 300.0));
    assert!(violations(&p, &Ceilings::fixed(&budget())).is_empty());
}
