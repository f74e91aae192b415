//! Headroom's collector: kernel programs that measure what each pod and node process
//! sends to the API server and DNS, and the user space that names and exports it.
pub mod agent;
pub mod apiserver;
pub mod cgroup;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod ebpf;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod preflight;
pub mod profile;
pub mod report;
#[cfg(test)]
mod scratch;
pub mod server;
