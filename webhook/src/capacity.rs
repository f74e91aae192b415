//! The API server's own capacity, from API Priority and Fairness: per priority level,
//! the seats it may use and what a request costs in seat-seconds give the requests/s it
//! can serve (Little's law), and what is dispatched now leaves the headroom. Which level
//! a workload's requests land in follows its service account through the FlowSchemas.
//! Plain functions over parsed metrics and objects; sources wire them to Prometheus or
//! to the API server's `/metrics`.

pub mod apf;
pub mod ceiling;
pub mod exposition;
pub mod flowschema;
pub mod model;
pub mod status;

#[cfg(test)]
mod tests;

pub use self::{
    apf::{ApfError, Generation, Scrape},
    ceiling::{ApiserverCapacity, LevelCeiling, resolve},
    flowschema::{FlowSchema, FlowSchemaList, Placement, place},
    model::{Constraint, LevelCapacity, capacity, capacity_at},
    status::{ApiserverCapacityStatus, PriorityLevelStatus},
};

/// The share of a level's capacity the budget admits changes up to, unless set.
pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
