//! Headroom's admission webhook: projects the control-plane load a workload change will
//! cause (per-pod profile × pods, steady state and rollout peak) and compares it with a
//! `ControlPlaneBudget`.
//!
//! The core (`load`, `inventory`, `workload`, `projection`, `decision`) is plain functions
//! over plain data; `admission`, `server`, `sources` and `check` wire it to HTTPS, profile
//! sources and the offline CLI.
#![forbid(unsafe_code)]

pub mod admission;
pub mod advice;
pub mod budget;
pub mod capacity;
pub mod check;
pub mod cluster;
pub mod decision;
pub mod error;
pub mod freshness;
pub mod http_client;
pub mod inventory;
pub mod load;
pub mod metrics;
pub mod parents;
pub mod profile;
pub mod projection;
pub mod prometheus_rules;
pub mod reservation;
pub mod review;
pub mod server;
pub mod sources;
pub mod tls;
pub mod workload;

pub use error::Error;
