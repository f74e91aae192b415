//! The `ProfileList` document (`headroom.dev/v1alpha1`) as docs/profiles.md defines it.
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "headroom.dev/v1alpha1";
pub const KIND: &str = "ProfileList";

/// A rate in each dimension, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    pub apiserver_requests_per_second: f64,
    pub apiserver_received_bytes_per_second: f64,
    pub apiserver_connections_per_second: f64,
    pub dns_queries_per_second: f64,
}

impl Load {
    pub fn from_array([a, b, c, d]: [f64; 4]) -> Self {
        Self {
            apiserver_requests_per_second: a,
            apiserver_received_bytes_per_second: b,
            apiserver_connections_per_second: c,
            dns_queries_per_second: d,
        }
    }

    pub fn to_array(self) -> [f64; 4] {
        [
            self.apiserver_requests_per_second,
            self.apiserver_received_bytes_per_second,
            self.apiserver_connections_per_second,
            self.dns_queries_per_second,
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// Empty for node processes.
    pub namespace: String,
    /// `Deployment`, `DaemonSet`, …, `Pod` for a bare pod, `node` for node processes.
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileItem {
    pub workload: WorkloadRef,
    /// The first app container's image; empty for node processes.
    pub image: String,
    pub pods: u64,
    pub minutes: u64,
    pub steady: Load,
    pub startup: Load,
    pub current: Load,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileList {
    pub api_version: String,
    pub kind: String,
    pub node: String,
    /// RFC 3339, UTC, whole seconds.
    pub generated_at: String,
    pub window_seconds: u64,
    pub totals: Load,
    pub items: Vec<ProfileItem>,
}
