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

/// What one dimension's checks compare with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// steady ≤ this.
    pub steady: f64,
    /// peak ≤ this.
    pub peak: f64,
    /// the workload's own steady ≤ this.
    pub share: f64,
}

/// The bounds of every dimension that is checked, resolved for one change: a fixed limit
/// gives limit, limit × burst factor and limit × share; `auto` requests give the
/// priority level's ceiling (its capacity × target utilization, or the budget's override),
/// which a rollout's peak may not exceed either, since past it the API server queues.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ceilings {
    bounds: [Option<Bounds>; 4],
}

impl Ceilings {
    /// The budget's fixed limits (`auto` requests are not among them).
    pub fn fixed(budget: &ControlPlaneBudgetSpec) -> Self {
        let mut out = Ceilings::default();
        for d in Dimension::ALL {
            out.bounds[slot(d)] = budget.limits.get(d).map(|limit| Bounds {
                steady: limit,
                peak: limit * budget.burst_factor,
                share: limit * budget.per_workload_share,
            });
        }
        out
    }

    /// Requests bounded by a priority level's `ceiling` (requests/s).
    pub fn with_level(mut self, ceiling: f64, per_workload_share: f64) -> Self {
        self.bounds[slot(Dimension::ApiserverRequests)] = Some(Bounds {
            steady: ceiling,
            peak: ceiling,
            share: ceiling * per_workload_share,
        });
        self
    }

    pub fn get(&self, dimension: Dimension) -> Option<Bounds> {
        self.bounds[slot(dimension)]
    }
}

fn slot(dimension: Dimension) -> usize {
    match dimension {
        Dimension::ApiserverRequests => 0,
        Dimension::ApiserverReceivedBytes => 1,
        Dimension::ApiserverConnections => 2,
        Dimension::DnsQueries => 3,
    }
}

/// Every (dimension, check) the projection breaks, in dimension order.
pub fn violations(p: &Projection, ceilings: &Ceilings) -> Vec<Violation> {
    let mut out = Vec::new();
    for d in Dimension::ALL {
        let Some(bounds) = ceilings.get(d) else {
            continue;
        };
        let checks = [
            (Check::Steady, p.steady.get(d), bounds.steady),
            (Check::Peak, p.peak.get(d), bounds.peak),
            (Check::Share, p.workload_steady.get(d), bounds.share),
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

#[cfg(test)]
mod tests;
