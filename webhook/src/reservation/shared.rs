//! Reservations shared by every replica through the budget's status (`--kube` mode).
//!
//! Each replica sends what it admits to [`run`], which merges it into
//! `status.reservations` with a conflict-safe update: read the budget, merge, write it back
//! with the resourceVersion read (the API server answers 409 when another writer came
//! first: read again and retry). Every `every` the list is read back into the replica's
//! ledger, so a change admitted by one replica counts at all of them.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use kube::{Api, api::PostParams};
use tokio::sync::mpsc;

use super::{Reservation, ReservationStatus, SHOWS_AFTER};
use crate::{admission::State, budget::ControlPlaneBudget};

/// Conflicts retried before the write waits for the next round.
const MAX_ATTEMPTS: usize = 5;

/// Writes the reservations received on `admitted` into the named budget's status and reads
/// everyone's back into `state` after each admission, and every `every` while any are in
/// force (to drop the old ones) — or always with `poll`, where no budget watch merges the
/// others' into `state` ([`crate::cluster`]'s does); runs until `admitted` closes.
pub async fn run(
    api: Api<ControlPlaneBudget>,
    name: String,
    state: Arc<State>,
    mut admitted: mpsc::UnboundedReceiver<Reservation>,
    every: Duration,
    poll: bool,
) {
    let mut unwritten: Vec<Reservation> = Vec::new();
    let mut tick = tokio::time::interval(every);
    let mut failing = false;
    loop {
        tokio::select! {
            received = admitted.recv() => match received {
                Some(r) => unwritten.push(r),
                None => return,
            },
            _ = tick.tick() => {}
        }
        while let Ok(r) = admitted.try_recv() {
            unwritten.push(r);
        }
        // Nothing to write or to clean up: the others' reservations arrive by the
        // budget watch, not by polling.
        if unwritten.is_empty() && state.reservations().is_empty() && !poll {
            continue;
        }
        let keep = SHOWS_AFTER + Duration::from_secs(state.budget().spec.max_data_age_seconds);
        match sync(&api, &name, &unwritten, keep).await {
            Ok(everyone) => {
                unwritten.clear();
                state.merge_reservations(everyone);
                if failing {
                    tracing::info!(budget = %name, "shared reservations written again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        budget = %name, error = %e,
                        "cannot share reservations through the budget status (check RBAC \
                         update on controlplanebudgets/status); retrying each refresh"
                    );
                    failing = true;
                }
            }
        }
    }
}

/// Reads the budget's reservations, adds `new` and drops those older than `keep` (by then
/// the data shows them, or it is stale and changes fail open), writing only if that changed
/// anything; returns every replica's reservations.
pub async fn sync(
    api: &Api<ControlPlaneBudget>,
    name: &str,
    new: &[Reservation],
    keep: Duration,
) -> Result<Vec<Reservation>, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut budget = api.get(name).await?;
        let status = budget.status.get_or_insert_with(Default::default);
        let now = SystemTime::now();
        let mut ledger = super::Ledger::default();
        ledger.merge(
            status
                .reservations
                .iter()
                .filter_map(ReservationStatus::reservation),
        );
        ledger.merge(new.iter().cloned());
        ledger
            .entries
            .retain(|_, r| now.duration_since(r.admitted_at).unwrap_or_default() < keep);
        let mut merged: Vec<ReservationStatus> =
            ledger.reservations().map(ReservationStatus::from).collect();
        merged.sort_by(|a, b| a.workload.cmp(&b.workload));
        let everyone: Vec<Reservation> = ledger.reservations().cloned().collect();
        if merged == status.reservations {
            return Ok(everyone);
        }
        status.reservations = merged;
        // The object carries the resourceVersion it was read at: a precondition.
        match api
            .replace_status(name, &PostParams::default(), &budget)
            .await
        {
            Ok(_) => return Ok(everyone),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < MAX_ATTEMPTS => {
                tracing::debug!(budget = %name, attempt, "budget status conflict; reading again");
            }
            Err(e) => return Err(e),
        }
    }
}
