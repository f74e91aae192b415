//! Projection: the load a workload change will cause, and how it compares with a budget.
//!
//! steady = cluster total now − this workload's measured share + pods × per-pod steady;
//! peak = steady + concurrent starts × per-pod startup burst.

use crate::{
    budget::ControlPlaneBudgetSpec,
    load::{Dimension, Load},
};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection {
    /// Everything else: total − this workload's share (+ changes admitted but not yet measured).
    pub base: Load,
    /// pods × per-pod steady.
    pub workload_steady: Load,
    /// starts × per-pod startup.
    pub startup_burst: Load,
    pub steady: Load,
    pub peak: Load,
    pub pods: u64,
    pub starts: u64,
}

/// Per-pod figures the projection multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodCost {
    pub steady: Load,
    pub startup: Load,
}

pub fn base_load(totals: Load, current_share: Load, pending: Load) -> Load {
    (totals - current_share).clamp_non_negative() + pending
}

pub fn project(base: Load, cost: PodCost, pods: u64, starts: u64) -> Projection {
    let workload_steady = cost.steady * pods as f64;
    let startup_burst = cost.startup * starts as f64;
    let steady = base + workload_steady;
    Projection {
        base,
        workload_steady,
        startup_burst,
        steady,
        peak: steady + startup_burst,
        pods,
        starts,
    }
}

/// Which limit a projection breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// steady > limit
    Steady,
    /// peak > limit × burst factor
    Peak,
    /// the workload's own steady > limit × per-workload share
    Share,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Steady => "steady",
            Check::Peak => "peak",
            Check::Share => "workload share",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Violation {
    pub dimension: Dimension,
    pub check: Check,
    pub projected: f64,
    pub allowed: f64,
}

impl Violation {
    /// `apiserver received bytes/s peak 3.7 GiB > 300.0 MiB`
    pub fn short(&self) -> String {
        format!(
            "{} {} {} > {}",
            self.dimension,
            self.check.as_str(),
            self.dimension.format(self.projected),
            self.dimension.format(self.allowed)
        )
    }
}

/// Every (dimension, check) the projection breaks, in dimension order.
pub fn violations(p: &Projection, budget: &ControlPlaneBudgetSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    for d in Dimension::ALL {
        let Some(limit) = budget.limits.get(d) else {
            continue;
        };
        let checks = [
            (Check::Steady, p.steady.get(d), limit),
            (Check::Peak, p.peak.get(d), limit * budget.burst_factor),
            (
                Check::Share,
                p.workload_steady.get(d),
                limit * budget.per_workload_share,
            ),
        ];
        for (check, projected, allowed) in checks {
            if projected > allowed {
                out.push(Violation {
                    dimension: d,
                    check,
                    projected,
                    allowed,
                });
            }
        }
    }
    out
}

fn fits(
    base: Load,
    cost: PodCost,
    pods: u64,
    starts: u64,
    budget: &ControlPlaneBudgetSpec,
) -> bool {
    violations(&project(base, cost, pods, starts), budget).is_empty()
}

/// The largest pod count n ≤ `up_to` whose projection fits, where n pods start
/// `starts_for(n)` at once. Load grows with n, so a binary search finds it.
pub fn max_pods(
    base: Load,
    cost: PodCost,
    up_to: u64,
    starts_for: impl Fn(u64) -> u64,
    budget: &ControlPlaneBudgetSpec,
) -> u64 {
    let (mut lo, mut hi) = (0u64, up_to);
    if !fits(base, cost, 0, 0, budget) {
        return 0;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(base, cost, mid, starts_for(mid), budget) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The largest number of pods that may start at once (≥ 1) with `pods` running, or `None`
/// when even one start does not fit (the steady state itself is over budget).
pub fn max_starts(
    base: Load,
    cost: PodCost,
    pods: u64,
    budget: &ControlPlaneBudgetSpec,
) -> Option<u64> {
    let k = max_pods_starting(base, cost, pods, budget);
    (k >= 1).then_some(k)
}

fn max_pods_starting(base: Load, cost: PodCost, pods: u64, budget: &ControlPlaneBudgetSpec) -> u64 {
    if !fits(base, cost, pods, 0, budget) {
        return 0;
    }
    let (mut lo, mut hi) = (0u64, pods);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(base, cost, pods, mid, budget) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Per dimension, the largest per-pod steady rate at which `pods` pods would fit the steady
/// and share limits (None where the dimension has no limit).
pub fn max_per_pod_steady(
    base: Load,
    pods: u64,
    budget: &ControlPlaneBudgetSpec,
) -> Vec<(Dimension, f64)> {
    if pods == 0 {
        return Vec::new();
    }
    Dimension::ALL
        .into_iter()
        .filter_map(|d| {
            let limit = budget.limits.get(d)?;
            let room = (limit - base.get(d))
                .min(limit * budget.per_workload_share)
                .max(0.0);
            Some((d, room / pods as f64))
        })
        .collect()
}

#[cfg(test)]
mod tests;
