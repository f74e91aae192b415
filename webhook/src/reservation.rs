//! Reservations: the steady load of changes admitted but not yet in the measurements.
//!
//! An admitted increase stays reserved until the profile data's window covers it — until
//! the data's newest measurement is at least a rate window after the admission — so a
//! second change decided meanwhile counts it. Every replica sees the same reservations:
//! in `--kube` mode they are kept in the budget's status ([`shared`]), written with a
//! resourceVersion precondition and retried on conflict, and read back into each
//! replica's [`Ledger`]; standalone, the ledger is the process's own. The admission path
//! only reads and writes the in-memory ledger; the status is written in the background.

pub mod shared;

use std::{
    collections::HashMap,
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{load::Load, profile::WorkloadRef};

/// How long after its admission a change shows in full in the measurements: a rate
/// window ([`collector::schema::profiles::RATE_WINDOW_SECONDS`]).
pub const SHOWS_AFTER: Duration =
    Duration::from_secs(collector::schema::profiles::RATE_WINDOW_SECONDS);

/// One admitted increase.
#[derive(Clone, Debug, PartialEq)]
pub struct Reservation {
    pub workload: WorkloadRef,
    /// Steady load added over what the workload had when it was admitted.
    pub load: Load,
    pub admitted_at: SystemTime,
}

/// Admitted increases, the newest per workload (a later change of a workload replaces its
/// earlier one: its projection already holds the whole workload).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ledger {
    entries: HashMap<WorkloadRef, Reservation>,
    /// The newest measurement time expired against: a reservation it shows is not taken
    /// back when another replica's list still holds it.
    measured_at: Option<SystemTime>,
}

impl Ledger {
    pub fn reserve(&mut self, reservation: Reservation) {
        self.merge([reservation]);
    }

    /// Adds reservations made elsewhere (another replica's); for each workload the one
    /// admitted last stands.
    pub fn merge(&mut self, reservations: impl IntoIterator<Item = Reservation>) {
        for r in reservations {
            if self
                .measured_at
                .is_some_and(|at| at >= r.admitted_at + SHOWS_AFTER)
            {
                continue;
            }
            match self.entries.get(&r.workload) {
                Some(have) if have.admitted_at >= r.admitted_at => {}
                _ => {
                    self.entries.insert(r.workload.clone(), r);
                }
            }
        }
    }

    /// Drops the reservations the data measured at `measured_at` shows in full.
    pub fn expire(&mut self, measured_at: SystemTime) {
        self.measured_at = Some(self.measured_at.map_or(measured_at, |m| m.max(measured_at)));
        self.entries
            .retain(|_, r| measured_at < r.admitted_at + SHOWS_AFTER);
    }

    /// The reserved load of every workload but `workload` (its own projection replaces
    /// its reservation).
    pub fn pending_except(&self, workload: &WorkloadRef) -> Load {
        self.entries
            .values()
            .filter(|r| r.workload != *workload)
            .fold(Load::ZERO, |sum, r| sum + r.load)
    }

    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.entries.values()
    }
}

/// A reservation as the budget's status keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationStatus {
    pub workload: WorkloadRef,
    /// Steady load admitted and not yet measured.
    pub load: Load,
    /// RFC 3339 (UTC, milliseconds) time of the admission.
    pub admitted_at: String,
}

impl From<&Reservation> for ReservationStatus {
    fn from(r: &Reservation) -> Self {
        let at = k8s_openapi::jiff::Timestamp::try_from(r.admitted_at)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        ReservationStatus {
            workload: r.workload.clone(),
            load: r.load,
            admitted_at: at
                .round(k8s_openapi::jiff::Unit::Millisecond)
                .unwrap_or(at)
                .to_string(),
        }
    }
}

impl ReservationStatus {
    /// `None` when `admittedAt` is not an RFC 3339 time (written by hand: ignored).
    pub fn reservation(&self) -> Option<Reservation> {
        Some(Reservation {
            workload: self.workload.clone(),
            load: self.load,
            admitted_at: crate::profile::parse_time(&self.admitted_at)?,
        })
    }
}

#[cfg(test)]
mod tests;
