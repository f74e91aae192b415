//! The `DnsNameList` document served at `/dns/names` (docs/dns-names.md).
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "headroom.dev/v1alpha1";
pub const KIND: &str = "DnsNameList";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsNameList {
    pub api_version: String,
    pub kind: String,
    pub items: Vec<Item>,
}

/// One identity (a pod's container, or a node process) and its most asked names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub namespace: String,
    pub workload_kind: String,
    pub workload: String,
    pub pod: String,
    pub container: String,
    pub names: Vec<Name>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Name {
    pub name: String,
    /// Queries for the name: at least the true count, at most `error` more.
    pub queries: u64,
    pub error: u64,
}
