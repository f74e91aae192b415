//! The largest safe change: what a user can change so that the same review is allowed.
//! Each candidate is applied to the change under review and projected again; only one that
//! comes back within budget is offered.

use std::fmt;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::{
    load::{Dimension, Load},
    projection::{self, Ceilings, PodCost, Projection},
    workload::{Kind, Rollout, Size, Workload},
};

/// A change to the object (or to its per-pod cost) that makes the review fit the budget.
#[derive(Clone, Debug, PartialEq)]
pub enum SafeChange {
    /// replicas ≤ `max` (and the HPA's maxReplicas ≤ `max` where one targets the workload).
    Replicas { max: u64, autoscaled: bool },
    /// A DaemonSet on at most `max` nodes (a narrower nodeSelector or node affinity); it
    /// grows by widening it later, each widening reviewed again.
    Nodes(u64),
    /// A rolling update that replaces at most `max` pods at once (maxSurge 0, maxUnavailable
    /// `max`).
    RolloutBatch(u64),
    /// Create `step` replicas, then scale up in steps of at most `step`.
    Stages(u64),
    /// Per-pod figures at most these (the dimensions over budget cut, the others as they are).
    PerPodCost(PodCost),
}

/// The change under review, as the figures its projection reads: the one value the
/// verdict, the safe changes and the message derive from.
#[derive(Clone, Copy, Debug)]
pub struct Change<'a> {
    pub workload: &'a Workload,
    pub old: Option<&'a Workload>,
    pub old_pods: u64,
    pub base: Load,
    pub cost: PodCost,
    pub pods: u64,
    pub starts: u64,
    /// Whether an HPA sets the pod count (its maxReplicas).
    pub autoscaled: bool,
}

impl Change<'_> {
    pub fn projection(&self) -> Projection {
        projection::project(self.base, self.cost, self.pods, self.starts)
    }

    /// The projection with `safe` applied.
    pub fn after(&self, safe: &SafeChange) -> Projection {
        let starts_at = |pods: u64| {
            self.workload
                .concurrent_starts(self.old, pods, self.old_pods)
        };
        let (cost, pods, starts) = match safe {
            SafeChange::Replicas { max, .. } | SafeChange::Nodes(max) => {
                (self.cost, *max, starts_at(*max))
            }
            SafeChange::RolloutBatch(max) => {
                let rollout = batch_rollout(&self.workload.rollout, *max).unwrap_or(Rollout::None);
                let starts = self.workload.concurrent_starts_with(
                    &rollout,
                    self.old,
                    self.pods,
                    self.old_pods,
                );
                (self.cost, self.pods, starts)
            }
            // The last step is the heaviest: every pod running, `step` starting.
            SafeChange::Stages(step) => (self.cost, self.pods, (*step).min(self.pods)),
            SafeChange::PerPodCost(cost) => (*cost, self.pods, self.starts),
        };
        projection::project(self.base, cost, pods, starts)
    }

    fn fits(&self, safe: &SafeChange, budget: &Ceilings) -> bool {
        projection::violations(&self.after(safe), budget).is_empty()
    }
}

/// The rollout that replaces at most `max` pods at once, for the kinds that have one.
fn batch_rollout(rollout: &Rollout, max: u64) -> Option<Rollout> {
    let max = IntOrString::Int(i32::try_from(max).unwrap_or(i32::MAX));
    match rollout {
        Rollout::Rolling {
            round_unavailable_up,
            ..
        } => Some(Rollout::Rolling {
            max_surge: IntOrString::Int(0),
            max_unavailable: max,
            round_unavailable_up: *round_unavailable_up,
        }),
        // A Deployment that recreates may switch to a rolling update.
        Rollout::Recreate => Some(Rollout::Rolling {
            max_surge: IntOrString::Int(0),
            max_unavailable: max,
            round_unavailable_up: false,
        }),
        Rollout::Parallel { .. } => Some(Rollout::Parallel {
            max_unavailable: max,
        }),
        _ => None,
    }
}

/// The largest `n` in `lo..=hi` that fits, where fitting at `n` implies fitting below it.
fn largest(lo: u64, hi: u64, fits: impl Fn(u64) -> bool) -> Option<u64> {
    if lo > hi || !fits(lo) {
        return None;
    }
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

/// Every kind of safe change that applies, each the largest that fits, each checked by
/// projecting it again. Empty when nothing short of a bigger budget helps.
pub fn safe_changes(change: &Change<'_>, budget: &Ceilings) -> Vec<SafeChange> {
    let w = change.workload;
    let mut out = Vec::new();
    // At the size asked: fewer pods starting at once.
    let template_rollout = change.old.is_some_and(|old| w.template_changed(old));
    if template_rollout && batch_rollout(&w.rollout, 1).is_some() {
        let fits = |k| change.fits(&SafeChange::RolloutBatch(k), budget);
        out.extend(largest(1, change.pods, fits).map(SafeChange::RolloutBatch));
    }
    let stageable = matches!(w.kind, Kind::Deployment | Kind::ReplicaSet)
        || (w.kind == Kind::StatefulSet && w.create_all_at_once);
    if change.old.is_none() && stageable && !change.autoscaled && change.pods > 1 {
        let fits = |k| change.fits(&SafeChange::Stages(k), budget);
        out.extend(
            largest(1, change.pods - 1, fits)
                .filter(|k| *k < change.starts)
                .map(SafeChange::Stages),
        );
    }
    // At the size asked, when no rollout fits it: a cheaper pod.
    let cost = out
        .is_empty()
        .then(|| cost_target(change, budget))
        .flatten();
    // Fewer pods: more than run today (growth is what is judged), fewer than asked.
    let lowest = if change.old.is_some() {
        change.old_pods + 1
    } else {
        1
    };
    let fewer = |n| {
        if w.size == Size::PerNode {
            SafeChange::Nodes(n)
        } else {
            SafeChange::Replicas {
                max: n,
                autoscaled: change.autoscaled,
            }
        }
    };
    let highest = change.pods.saturating_sub(1);
    out.extend(largest(lowest, highest, |n| change.fits(&fewer(n), budget)).map(fewer));
    out.extend(cost.map(SafeChange::PerPodCost));
    // Each offered change is one that was projected again and fits.
    out.retain(|safe| change.fits(safe, budget));
    out
}

/// The per-pod cost at which this change fits: per dimension over budget, startup cut alone
/// where the steady figures fit, else steady and startup cut by one factor so that steady,
/// peak and the workload's share all fit; rounded down to the figure the message prints.
/// `None` when even zero cost does not fit.
fn cost_target(change: &Change<'_>, budget: &Ceilings) -> Option<PodCost> {
    // On an exact boundary, floating point may land on the wrong side: then a hair under it.
    let exact = cost_target_with(change, budget, 1.0)?;
    if change.fits(&SafeChange::PerPodCost(exact), budget) {
        Some(exact)
    } else {
        cost_target_with(change, budget, 1.0 - 1e-9)
    }
}

fn cost_target_with(change: &Change<'_>, budget: &Ceilings, margin: f64) -> Option<PodCost> {
    let over = projection::violations(&change.projection(), budget);
    let (pods, starts) = (change.pods as f64, change.starts as f64);
    let mut target = change.cost;
    for d in Dimension::ALL {
        let Some(bounds) = budget.get(d) else {
            continue;
        };
        if !over.iter().any(|v| v.dimension == d) {
            continue;
        }
        let (steady, startup) = (change.cost.steady.get(d), change.cost.startup.get(d));
        let base = change.base.get(d);
        let (limit, peak_limit, share_limit) = (bounds.steady, bounds.peak, bounds.share);
        if base > limit || base > peak_limit {
            return None;
        }
        let steady_fits = base + pods * steady <= limit && pods * steady <= share_limit;
        if steady_fits && starts > 0.0 {
            let room = (peak_limit - base - pods * steady) / starts;
            target
                .startup
                .set(d, round_down(d, (room * margin).clamp(0.0, startup)));
            continue;
        }
        let ratio = |room: f64, per_unit: f64| {
            if per_unit > 0.0 {
                room / per_unit
            } else {
                f64::INFINITY
            }
        };
        let factor = ratio(limit - base, pods * steady)
            .min(ratio(peak_limit - base, pods * steady + starts * startup))
            .min(ratio(share_limit, pods * steady))
            .clamp(0.0, 1.0)
            * margin;
        target.steady.set(d, round_down(d, steady * factor));
        target.startup.set(d, round_down(d, startup * factor));
    }
    Some(target)
}

/// Rounds down to the precision [`Dimension::format`] prints, so the printed target is safe.
fn round_down(d: Dimension, value: f64) -> f64 {
    let floor_to = |v: f64, decimals: i32| {
        let scale = 10f64.powi(decimals);
        (v * scale).floor() / scale
    };
    match d {
        Dimension::ApiserverReceivedBytes => {
            let mut unit = 1.0;
            while value / unit >= 1024.0 && unit < 1024.0 * 1024.0 * 1024.0 {
                unit *= 1024.0;
            }
            if unit == 1.0 {
                value.floor()
            } else {
                floor_to(value / unit, 1) * unit
            }
        }
        _ if value >= 100.0 => value.floor(),
        _ if value >= 1.0 => floor_to(value, 1),
        _ => floor_to(value, 3),
    }
}

/// How a safe change reads in a message, for `workload`.
#[derive(Debug)]
pub struct Advice<'a> {
    pub safe: &'a SafeChange,
    pub workload: &'a Workload,
    /// The per-pod cost it replaces, to name only the figures that change.
    pub cost: PodCost,
    pub pods: u64,
}

impl fmt::Display for Advice<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.safe {
            SafeChange::Replicas { max, autoscaled } => {
                let hpa = if *autoscaled {
                    " (and the HPA's maxReplicas)"
                } else {
                    ""
                };
                let field = match self.workload.kind {
                    Kind::Job | Kind::CronJob => "parallelism",
                    _ => "replicas",
                };
                write!(f, "{field} ≤ {max}{hpa}")
            }
            SafeChange::Nodes(max) => write!(
                f,
                "at most {max} nodes (narrow the nodeSelector or node affinity; widen it in \
                 later steps)"
            ),
            SafeChange::RolloutBatch(max) => match self.workload.kind {
                Kind::DaemonSet => write!(
                    f,
                    "updateStrategy.rollingUpdate maxSurge + maxUnavailable ≤ {max}"
                ),
                Kind::StatefulSet => {
                    write!(f, "updateStrategy.rollingUpdate.maxUnavailable ≤ {max}")
                }
                _ => write!(f, "a staged rollout with maxSurge + maxUnavailable ≤ {max}"),
            },
            SafeChange::Stages(step) => {
                write!(
                    f,
                    "create {step} replicas, then scale up in steps of ≤ {step}"
                )
            }
            SafeChange::PerPodCost(target) => {
                let cuts: Vec<String> = Dimension::ALL
                    .into_iter()
                    .filter(|d| {
                        target.steady.get(*d) < self.cost.steady.get(*d)
                            || target.startup.get(*d) < self.cost.startup.get(*d)
                    })
                    .map(|d| {
                        let (steady, startup) = (target.steady.get(d), target.startup.get(d));
                        if steady < self.cost.steady.get(d) {
                            format!(
                                "{d} steady ≤ {}, startup ≤ {}",
                                d.format(steady),
                                d.format(startup)
                            )
                        } else {
                            format!("{d} startup ≤ {}", d.format(startup))
                        }
                    })
                    .collect();
                let hint = if self.workload.size == Size::PerNode {
                    " (e.g. a node-scoped watch)"
                } else {
                    ""
                };
                write!(
                    f,
                    "cut the per-pod cost at {} pods to {}{hint}",
                    self.pods,
                    cuts.join("; ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;
