//! Admission decisions: exemptions, break-glass, fail-open, the canary rule for unmeasured
//! workloads, and the budget verdict with a message a user can act on.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::{
    advice::{self, Advice, Change, SafeChange},
    budget::{BREAK_GLASS_ANNOTATION, ControlPlaneBudgetSpec, DECLARED_PROFILE_ANNOTATION, Mode},
    capacity::{self, ApiserverCapacity, LevelCeiling},
    freshness::{self, DataGap, FailOpenReason},
    inventory::Inventory,
    load::{Dimension, Load},
    profile::{PerPod, Provenance, Snapshot},
    projection::{self, Ceilings, Check, PodCost, Projection, Violation},
    workload::{Autoscalers, Size, Workload},
};

/// Kubernetes truncates longer warnings; the issue asks for ≤ 120 characters.
pub const MAX_WARNING_CHARS: usize = 120;
/// Audit annotation keys (the API server prefixes them with the webhook's name).
pub const AUDIT_BREAK_GLASS: &str = "break-glass";
pub const AUDIT_OVER_BUDGET: &str = "over-budget";
pub const AUDIT_FAIL_OPEN: &str = "fail-open";

/// What happened to a change; the `result` label of the decisions metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Evaluated and within budget.
    Allowed,
    /// Over budget (or unmeasured beyond the canary size) in Enforce mode.
    Denied,
    /// Over budget in Warn mode: allowed with a warning.
    Warned,
    /// Over budget in Audit mode: allowed, recorded.
    Audited,
    /// Allowed by the break-glass annotation.
    BreakGlass,
    /// The namespace is exempt.
    Exempt,
    /// The change adds no load (scale-down, metadata-only update).
    NoAddedLoad,
    /// Unmeasured, within the canary size.
    Canary,
    /// Created by a controller that was judged for these pods (a Deployment's ReplicaSet).
    OwnerJudged,
    /// No or stale profile data: allowed with a warning.
    FailOpen,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Warned => "warned",
            Outcome::Audited => "audited",
            Outcome::BreakGlass => "break_glass",
            Outcome::Exempt => "exempt",
            Outcome::NoAddedLoad => "no_added_load",
            Outcome::Canary => "canary",
            Outcome::OwnerJudged => "owner_judged",
            Outcome::FailOpen => "fail_open",
        }
    }

    pub fn allowed(self) -> bool {
        self != Outcome::Denied
    }
}

/// The numbers behind a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub provenance: Provenance,
    pub cost: PodCost,
    pub projection: Projection,
    pub violations: Vec<Violation>,
    /// What each dimension was checked against.
    pub ceilings: Ceilings,
    /// With `auto` requests: the priority level they were judged against.
    pub level: Option<LevelCeiling>,
    /// The largest safe changes, each checked by projecting it again (empty when allowed).
    pub safe_changes: Vec<SafeChange>,
    pub suggestion: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The explanation: the denial reason, or what was found.
    pub message: String,
    /// Each at most [`MAX_WARNING_CHARS`].
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
    pub pods: u64,
    pub starts: u64,
    pub evaluation: Option<Evaluation>,
    /// Set with [`Outcome::FailOpen`]: what was wrong with the data.
    pub fail_open: Option<FailOpenReason>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcome.allowed()
    }
}

/// Everything a decision reads besides the object: all in memory.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub budget_name: &'a str,
    pub budget: &'a ControlPlaneBudgetSpec,
    /// `None`: no profile data has arrived yet.
    pub snapshot: Option<&'a Snapshot>,
    /// Age of the snapshot's newest measurement; compared with the budget's
    /// maxDataAgeSeconds.
    pub data_age: Option<Duration>,
    pub inventory: &'a Inventory,
    pub autoscalers: &'a Autoscalers,
    /// Steady load of changes admitted since the snapshot was taken (not this workload's).
    pub pending: Load,
    /// The API server's capacity per priority level, for `apiserverRequestsPerSecond:
    /// auto` (`None`: none has arrived).
    pub apiserver: Option<&'a ApiserverCapacity>,
    /// Age of its newest figures; compared with maxDataAgeSeconds.
    pub apiserver_age: Option<Duration>,
}

/// Truncates to [`MAX_WARNING_CHARS`] characters, marking the cut with `…`.
pub fn fit_warning(text: &str) -> String {
    if text.chars().count() <= MAX_WARNING_CHARS {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_WARNING_CHARS - 1).collect();
    out.push('…');
    out
}

#[derive(Deserialize)]
struct Declared {
    #[serde(default, deserialize_with = "crate::load::deserialize_partial")]
    steady: Load,
    #[serde(default, deserialize_with = "crate::load::deserialize_partial")]
    startup: Load,
}

fn declared_cost(workload: &Workload) -> Option<Result<PodCost, String>> {
    let text = workload.annotations.get(DECLARED_PROFILE_ANNOTATION)?;
    Some(
        serde_json::from_str::<Declared>(text)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                match d
                    .steady
                    .invalid_dimension()
                    .or(d.startup.invalid_dimension())
                {
                    Some(dim) => Err(format!("{} must be a finite number ≥ 0", dim.field())),
                    None => Ok(PodCost {
                        steady: d.steady,
                        startup: d.startup,
                    }),
                }
            }),
    )
}

/// Decides on `workload` replacing `old` (`None`: a create).
pub fn decide(workload: &Workload, old: Option<&Workload>, ctx: &Context<'_>) -> Decision {
    let reference = &workload.reference;
    let hpa_max = ctx.autoscalers.max_for(reference);
    let pods = workload.pods(ctx.inventory, hpa_max);
    let old_pods = old.map_or(0, |o| o.pods(ctx.inventory, hpa_max));
    let starts = workload.concurrent_starts(old, pods, old_pods);
    let decision = |outcome, message: String, warnings: Vec<String>| Decision {
        outcome,
        message,
        warnings: warnings.iter().map(|w| fit_warning(w)).collect(),
        audit_annotations: BTreeMap::new(),
        pods,
        starts,
        evaluation: None,
        fail_open: None,
    };

    if ctx.budget.exempt_namespaces.contains(&reference.namespace) {
        return decision(
            Outcome::Exempt,
            format!(
                "namespace {} is exempt from {}",
                reference.namespace, ctx.budget_name
            ),
            Vec::new(),
        );
    }
    if let Some(owner) = &workload.judged_owner {
        return decision(
            Outcome::OwnerJudged,
            format!("controlled by {owner}, which was judged for these pods"),
            Vec::new(),
        );
    }
    // No pods added and none restarted, or no pods added and the pod template unchanged
    // (a CronJob suspended, a label changed): nothing to evaluate.
    if let Some(old) = old
        && pods <= old_pods
        && (starts == 0 || !workload.template_changed(old))
    {
        return decision(
            Outcome::NoAddedLoad,
            format!(
                "{pods} pods (was {old_pods}), {}: adds no load",
                if workload.template_changed(old) {
                    "none starting"
                } else {
                    "pod template unchanged"
                }
            ),
            Vec::new(),
        );
    }
    if let Some(reason) = workload.break_glass_reason() {
        let mut d = decision(
            Outcome::BreakGlass,
            format!("allowed by {BREAK_GLASS_ANNOTATION}: {reason}"),
            vec![format!(
                "headroom: budget not checked, break-glass: {reason}"
            )],
        );
        d.audit_annotations
            .insert(AUDIT_BREAK_GLASS.to_owned(), reason.to_owned());
        return d;
    }
    let snapshot = match freshness::judge(ctx.snapshot, ctx.data_age, ctx.inventory, ctx.budget) {
        Ok(s) => s,
        Err(gap) => return fail_open(decision, gap),
    };

    let mut warnings = Vec::new();
    let per_pod = snapshot
        .per_pod(reference, workload.image.as_deref())
        .or_else(|| match declared_cost(workload) {
            Some(Ok(cost)) if ctx.budget.trust_declared => Some(PerPod {
                steady: cost.steady,
                startup: cost.startup,
                provenance: Provenance::Declared,
                measured_seconds: None,
            }),
            Some(Ok(_)) => {
                warnings.push(format!(
                    "headroom: {DECLARED_PROFILE_ANNOTATION} ignored: budget does not trust declared"
                ));
                None
            }
            Some(Err(e)) => {
                warnings.push(format!("headroom: bad {DECLARED_PROFILE_ANNOTATION}: {e}"));
                None
            }
            None => None,
        });
    let Some(per_pod) = per_pod else {
        return unmeasured(workload, pods, ctx, decision, warnings, None);
    };
    // A profile younger than minMeasuredSeconds is not yet the figure it will be.
    if let Some(left) = per_pod.seconds_until_measured(ctx.budget.min_measured_seconds) {
        return unmeasured(workload, pods, ctx, decision, warnings, Some(left));
    }

    let level = match auto_level(workload, ctx) {
        Ok(level) => level,
        Err(gap) => return fail_open(decision, gap),
    };
    let mut base = projection::base_load(
        snapshot.totals,
        snapshot.current_share(reference),
        ctx.pending,
    );
    let mut ceilings = Ceilings::fixed(ctx.budget);
    if let Some(level) = &level {
        // The level's own load stands for everything else: what it dispatches now, less
        // this workload's measured requests, plus what was admitted since.
        let share = snapshot
            .current_share(reference)
            .apiserver_requests_per_second;
        base.apiserver_requests_per_second =
            (level.in_use - share).max(0.0) + ctx.pending.apiserver_requests_per_second;
        ceilings = ceilings.with_level(level.ceiling, ctx.budget.per_workload_share);
    }
    let change = Change {
        workload,
        old,
        old_pods,
        base,
        cost: PodCost {
            steady: per_pod.steady,
            startup: per_pod.startup,
        },
        pods,
        starts,
        autoscaled: hpa_max.is_some(),
    };
    let cost = change.cost;
    let projection = change.projection();
    let violations = projection::violations(&projection, &ceilings);
    let provenance = per_pod.provenance;
    if violations.is_empty() {
        // The admission path does not send an allowed change's message; the detailed one
        // is built on demand by [`allowed_summary`].
        let mut d = decision(
            Outcome::Allowed,
            format!("within {}", ctx.budget_name),
            warnings,
        );
        d.evaluation = Some(Evaluation {
            provenance,
            cost,
            projection,
            violations,
            ceilings,
            level,
            safe_changes: Vec::new(),
            suggestion: None,
        });
        return d;
    }

    let safe_changes = advice::safe_changes(&change, &ceilings);
    let suggestion = (!safe_changes.is_empty()).then(|| {
        safe_changes
            .iter()
            .map(|safe| {
                Advice {
                    safe,
                    workload,
                    cost,
                    pods,
                }
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("; or ")
    });
    let evaluation = Evaluation {
        provenance,
        cost,
        projection,
        violations,
        ceilings,
        level,
        safe_changes,
        suggestion,
    };
    let message = over_budget_message(workload, ctx, &evaluation);
    let first = evaluation.violations[0].short();
    let more = match evaluation.violations.len() {
        1 => String::new(),
        n => format!(" (+{} more)", n - 1),
    };
    let mut d = match ctx.budget.mode {
        Mode::Enforce => decision(Outcome::Denied, message, warnings),
        Mode::Warn => {
            warnings.push(format!(
                "headroom: over budget, allowed (Warn): {first}{more}"
            ));
            decision(Outcome::Warned, message, warnings)
        }
        Mode::Audit => {
            let mut d = decision(Outcome::Audited, message, warnings);
            d.audit_annotations
                .insert(AUDIT_OVER_BUDGET.to_owned(), format!("{first}{more}"));
            d
        }
    };
    d.evaluation = Some(evaluation);
    d
}

/// With `apiserverRequestsPerSecond: auto`, the priority level the workload's requests
/// land in and what it may carry; `None` without `auto` or at an exempt level.
fn auto_level(workload: &Workload, ctx: &Context<'_>) -> Result<Option<LevelCeiling>, DataGap> {
    if !ctx.budget.limits.requests_auto() {
        return Ok(None);
    }
    capacity::resolve(
        ctx.apiserver,
        ctx.apiserver_age,
        &ctx.budget.limits,
        Duration::from_secs(ctx.budget.max_data_age_seconds),
        &workload.reference.namespace,
        workload.service_account(),
    )
}

fn fail_open(
    decision: impl Fn(Outcome, String, Vec<String>) -> Decision,
    gap: DataGap,
) -> Decision {
    let DataGap { reason, why } = gap;
    let mut d = decision(
        Outcome::FailOpen,
        format!("not evaluated: {why}; allowed (fail-open)"),
        vec![format!("headroom: not evaluated, {why}; allowed")],
    );
    d.audit_annotations.insert(AUDIT_FAIL_OPEN.to_owned(), why);
    d.fail_open = Some(reason);
    d
}

fn unmeasured(
    workload: &Workload,
    pods: u64,
    ctx: &Context<'_>,
    decision: impl Fn(Outcome, String, Vec<String>) -> Decision,
    mut warnings: Vec<String>,
    // Seconds until its profile covers minMeasuredSeconds; `None`: it has none.
    measured_in: Option<u64>,
) -> Decision {
    let canary = u64::from(ctx.budget.canary_size);
    let reference = &workload.reference;
    let (what, next) = match measured_in {
        None => (
            "has no measured profile and no trusted declared one".to_owned(),
            "let the collector measure it, then scale".to_owned(),
        ),
        Some(left) => (
            format!(
                "has a profile measured for less than minMeasuredSeconds ({}s), which is not \
                 yet its true cost",
                ctx.budget.min_measured_seconds
            ),
            format!("it is measured in {left}s; scale after that"),
        ),
    };
    if let Some(left) = measured_in {
        warnings.push(format!("headroom: {reference} measured in {left}s"));
    }
    if pods <= canary {
        warnings.push(format!(
            "headroom: {reference} unmeasured; allowed as a canary ({pods} ≤ {canary} pods)"
        ));
        return decision(
            Outcome::Canary,
            format!("unmeasured; {pods} pods within the canary size {canary}"),
            warnings,
        );
    }
    let fix = match workload.size {
        Size::PerNode => format!("narrow the nodeSelector to at most {canary} nodes"),
        Size::Replicas(_) => format!("set replicas to at most {canary}"),
    };
    let message = format!(
        "headroom: {reference} {what}; an unmeasured workload may run at most {canary} pods \
         (canarySize of {}), this change runs {pods}. Largest safe change: run a canary \
         first ({fix}), {next}.",
        ctx.budget_name
    );
    let short = format!("unmeasured, {pods} pods > canary size {canary}");
    match ctx.budget.mode {
        Mode::Enforce => decision(Outcome::Denied, message, warnings),
        Mode::Warn => {
            warnings.push(format!("headroom: allowed (Warn): {short}"));
            decision(Outcome::Warned, message, warnings)
        }
        Mode::Audit => {
            let mut d = decision(Outcome::Audited, message, warnings);
            d.audit_annotations
                .insert(AUDIT_OVER_BUDGET.to_owned(), short);
            d
        }
    }
}

/// An allowed change's explanation: the dimension closest to its limit and where the
/// per-pod figures came from.
pub fn allowed_summary(budget_name: &str, evaluation: &Evaluation) -> String {
    let level = evaluation
        .level
        .as_ref()
        .map(|l| format!("; requests at {}", l.describe()))
        .unwrap_or_default();
    format!(
        "within {budget_name}: {}{level}; per pod {}",
        tightest(&evaluation.projection, &evaluation.ceilings),
        evaluation.provenance
    )
}

/// The dimension/check closest to its limit, for an allowed change's summary.
fn tightest(p: &Projection, ceilings: &Ceilings) -> String {
    let mut best: Option<(f64, Dimension, Check, f64, f64)> = None;
    for d in Dimension::ALL {
        let Some(bounds) = ceilings.get(d) else {
            continue;
        };
        for (check, value, allowed) in [
            (Check::Steady, p.steady.get(d), bounds.steady),
            (Check::Peak, p.peak.get(d), bounds.peak),
        ] {
            let ratio = if allowed > 0.0 { value / allowed } else { 0.0 };
            if best.is_none_or(|b| ratio > b.0) {
                best = Some((ratio, d, check, value, allowed));
            }
        }
    }
    match best {
        Some((ratio, d, check, value, allowed)) => format!(
            "{d} {} {} of {} ({:.0}%)",
            check.as_str(),
            d.format(value),
            d.format(allowed),
            ratio * 100.0
        ),
        None => "no limits".to_owned(),
    }
}

fn over_budget_message(workload: &Workload, ctx: &Context<'_>, e: &Evaluation) -> String {
    let (p, cost, violations) = (&e.projection, e.cost, &e.violations);
    let (level, suggestion) = (e.level.as_ref(), e.suggestion.as_deref());
    let over: Vec<String> = violations
        .iter()
        .map(|v| {
            let at_level = level.filter(|_| v.dimension == Dimension::ApiserverRequests);
            let detail = match (v.check, at_level) {
                (Check::Share, Some(l)) => format!(
                    " ({}'s limit × share {})",
                    l.level, ctx.budget.per_workload_share
                ),
                (_, Some(l)) => format!(" ({}'s limit)", l.level),
                (Check::Peak, None) => format!(" (limit × burst {})", ctx.budget.burst_factor),
                (Check::Share, None) => {
                    format!(" (limit × share {})", ctx.budget.per_workload_share)
                }
                (Check::Steady, None) => String::new(),
            };
            format!("{}{detail}", v.short())
        })
        .collect();
    let mut dims: Vec<Dimension> = violations.iter().map(|v| v.dimension).collect();
    dims.dedup();
    let per_pod: Vec<String> = dims
        .iter()
        .map(|d| {
            format!(
                "{d}: steady {} + startup {} per pod, {} from everything else",
                d.format(cost.steady.get(*d)),
                d.format(cost.startup.get(*d)),
                d.format(p.base.get(*d))
            )
        })
        .collect();
    let level = level
        .filter(|_| dims.contains(&Dimension::ApiserverRequests))
        .map(|l| level_sentence(l, p, ctx.pending, workload))
        .unwrap_or_default();
    format!(
        "headroom: {} over ControlPlaneBudget {} ({}): {}.{level} Projection: {} pods, {} \
         starting at once; {}; per-pod figures {}. Largest safe change: {}.",
        workload.reference,
        ctx.budget_name,
        ctx.budget.mode.as_str(),
        over.join("; "),
        p.pods,
        p.starts,
        per_pod.join("; "),
        e.provenance,
        suggestion.unwrap_or("none at this size; reduce the per-pod cost or raise the budget")
    )
}

/// ` Priority level workload-low (FlowSchema service-accounts, serviceaccount apps/agent):
/// capacity 443 req/s at 0.7 = 310, in use 240, this change adds 95 at peak.`
fn level_sentence(level: &LevelCeiling, p: &Projection, pending: Load, w: &Workload) -> String {
    let requests = Dimension::ApiserverRequests;
    let reserved = pending.get(requests);
    let adds = (p.peak.get(requests) - level.in_use - reserved).max(0.0);
    let reserved = if reserved > 0.0 {
        format!(", {reserved:.0} reserved")
    } else {
        String::new()
    };
    format!(
        " Priority level {} (FlowSchema {}, serviceaccount {}/{}): {}{reserved}, this change \
         adds {adds:.0} at peak.",
        level.level,
        level.flow_schema,
        w.reference.namespace,
        w.service_account(),
        level
            .describe()
            .split_once(": ")
            .map_or("", |(_, rest)| rest),
    )
}

#[cfg(test)]
mod tests;
