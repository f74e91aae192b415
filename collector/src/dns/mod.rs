//! DNS accounting in user space: parse the messages the kernel captured
//! ([`message`]), match responses to queries, count search-list expansions
//! ([`expansion`]) and keep a bounded top-K of names ([`top_names`]) per owner, all in
//! [`DnsTracker`], which the metrics code reads through [`DnsTracker::snapshot`].
//!
//! ```no_run
//! # use collector::dns::{DnsConfig, DnsTracker};
//! # fn events() -> Vec<collector_ebpf::event::Dns> { Vec::new() }
//! # fn monotonic_now_ns() -> u64 { 0 }
//! let mut tracker = DnsTracker::new(DnsConfig::default()).expect("default config is valid");
//! for event in events() {
//!     tracker.record(&event);
//! }
//! tracker.expire(monotonic_now_ns());
//! for owner in tracker.snapshot().owners {
//!     println!("{:?}: {} lookups, {} expansions", owner.owner, owner.lookups, owner.expansions);
//! }
//! ```
pub mod code;
pub mod expansion;
pub mod latency;
pub mod message;
pub mod name;
pub mod resolv_conf;
pub mod snapshot;
pub mod top_names;
pub mod tracker;

pub use code::{QType, Rcode};
pub use latency::{LATENCY_BOUNDS_SECONDS, LatencyHistogram};
pub use name::Name;
pub use resolv_conf::search_list;
pub use snapshot::{DnsSnapshot, OTHER_QTYPE, Owner, OwnerDns, TrackerStats};
pub use top_names::TopName;
pub use tracker::{DnsConfig, DnsConfigError, DnsTracker, Recorded};
