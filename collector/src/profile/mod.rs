//! Profiles: what one pod of a workload costs, per dimension (schema in docs/profiles.md).
//!
//! The wiring samples the cumulative counters of every identity each `interval` into a
//! [`SharedProfiles`] ([`SharedProfiles::record`]) and merges [`router`] (`GET
//! /profiles`) onto the server's router. The maths is in [`compute`], plain functions
//! of the stored samples.
pub mod compute;
/// The wire types live in [`crate::schema`], which builds without the agent.
pub use crate::schema::profiles as schema;
pub mod store;
#[cfg(test)]
mod tests;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::jiff::Timestamp;

pub use self::{
    compute::profile_list,
    schema::{Load, ProfileItem, ProfileList, WorkloadRef},
    store::{Counters, PodKey, ProfileStore, Row, StoreConfig},
};
use crate::{identity::PodInfo, metrics::Identity};

/// API server requests, API server received bytes, API server connections, DNS queries.
pub const DIMENSIONS: usize = 4;

impl Row {
    /// A row for `identity` with `counters`, taking image and start time from its pod.
    pub fn new(identity: Identity, counters: Counters, pod: Option<&PodInfo>) -> Self {
        Self {
            identity,
            counters,
            image: pod.map(|p| p.image().to_owned()).unwrap_or_default(),
            started_at: pod.and_then(PodInfo::started_at).map(unix_seconds),
        }
    }
}

/// Seconds since the Unix epoch, as the store counts time.
pub fn unix_seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// The present time in Unix seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// RFC 3339 in UTC, whole seconds: `2026-11-22T05:00:00Z`.
pub fn rfc3339(unix: f64) -> String {
    Timestamp::from_second(unix.floor() as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The store as the sampler and the HTTP handler share it.
#[derive(Clone, Debug)]
pub struct SharedProfiles {
    store: Arc<Mutex<ProfileStore>>,
    node: Arc<str>,
}

impl SharedProfiles {
    pub fn new(store: ProfileStore, node: &str) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
            node: node.into(),
        }
    }

    /// Records one sampling tick (see [`ProfileStore::record`]).
    pub fn record(&self, at: f64, rows: impl IntoIterator<Item = Row>) {
        self.store
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(at, rows);
    }

    /// The node's profiles at `at`.
    pub fn profile_list(&self, at: f64) -> ProfileList {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        profile_list(&store, &self.node, at, rfc3339(at))
    }
}

/// `GET /profiles`, to merge onto `crate::server::router`'s result.
pub fn router(profiles: SharedProfiles) -> Router {
    Router::new()
        .route("/profiles", axum::routing::get(handler))
        .with_state(profiles)
}

/// `GET /profiles`: the node's `ProfileList` as JSON.
pub async fn handler(State(profiles): State<SharedProfiles>) -> Response {
    match serde_json::to_string(&profiles.profile_list(now())) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        // Only a non-finite number could fail, and rates of u64 counters are finite.
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
