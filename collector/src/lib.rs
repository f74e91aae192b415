//! Headroom's collector: kernel programs that measure what each pod and node process
//! sends to the API server and DNS, and the user space that names and exports it.
//!
//! Without the default `agent` feature only the parts the webhook shares build: the
//! wire types ([`schema`]) and how both binaries watch the API server ([`watch`]), with
//! no kernel object, aya or eBPF build behind them.
pub mod schema;
pub mod watch;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
pub mod apiserver;
#[cfg(feature = "agent")]
pub mod cgroup;
#[cfg(feature = "agent")]
pub mod cluster;
#[cfg(feature = "agent")]
pub mod config;
#[cfg(feature = "agent")]
pub mod dns;
#[cfg(feature = "agent")]
pub mod ebpf;
#[cfg(feature = "agent")]
pub mod endpoint;
#[cfg(feature = "agent")]
pub mod error;
#[cfg(feature = "agent")]
pub mod events;
#[cfg(feature = "agent")]
pub mod identity;
#[cfg(feature = "agent")]
pub mod ids;
#[cfg(feature = "agent")]
pub mod logging;
#[cfg(feature = "agent")]
pub mod metrics;
#[cfg(feature = "agent")]
pub mod preflight;
#[cfg(feature = "agent")]
pub mod profile;
#[cfg(feature = "agent")]
pub mod report;
#[cfg(all(test, feature = "agent"))]
mod scratch;
#[cfg(feature = "agent")]
pub mod server;
