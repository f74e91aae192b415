//! What [`super::DnsTracker::snapshot`] hands the metrics code: plain data, one entry per
//! owner. Names never become labels: `queries`/`responses` keys come from a fixed
//! vocabulary (qtype and rcode mnemonics, `TYPE<n>`, `RCODE<n>`, and [`OTHER_QTYPE`]),
//! and `top_names` is for the JSON endpoint only.

use std::collections::BTreeMap;

use super::{latency::LatencyHistogram, top_names::TopName};

/// The qtype key for queries of types beyond an owner's distinct-type cap.
pub const OTHER_QTYPE: &str = "OTHER";

/// Who made the DNS traffic: a cgroup (container or node service) and a process in it.
/// `tgid` 0 means the kernel did not know the process (e.g. only softirq context saw it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub cgroup_id: u64,
    pub tgid: u32,
}

/// One owner's DNS traffic since the tracker first saw it (or since it was last evicted:
/// counters restart then, which Prometheus reads as a counter reset). All counters are
/// cumulative.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerDns {
    pub owner: Owner,
    /// Queries sent, by qtype label (`A`, `AAAA`, `SRV`, `TYPE65`, …, `OTHER`).
    /// → `headroom_dns_queries_total{qtype}`.
    pub queries: BTreeMap<String, u64>,
    /// Responses received, by rcode label (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, …),
    /// matched or not. → `headroom_dns_responses_total{rcode}`.
    pub responses: BTreeMap<String, u64>,
    /// Intended names looked up: a name tried under N search suffixes is one lookup (per
    /// qtype). → `headroom_dns_lookups_total`.
    pub lookups: u64,
    /// Extra queries the search list caused: tries of a lookup after its first.
    /// → `headroom_dns_search_expansions_total`.
    pub expansions: u64,
    /// The same question asked again (retransmission after a timeout, TCP after a
    /// truncated UDP response, again after SERVFAIL/REFUSED): queries that are neither
    /// lookups nor expansions.
    /// `queries total = lookups + expansions + retries`.
    pub retries: u64,
    /// Queries no response was matched to within the query timeout (or pushed out of
    /// the full pending table).
    pub unanswered: u64,
    /// Responses that matched no pending query (late, or their query was not seen).
    pub unmatched_responses: u64,
    /// NXDOMAIN responses (also in `responses["NXDOMAIN"]`; here for convenience).
    pub nxdomain: u64,
    /// Time from a query to its matched response.
    /// → `headroom_dns_query_duration_seconds` (buckets are per-bucket counts over
    /// [`super::LATENCY_BOUNDS_SECONDS`] with `+Inf` last; see [`LatencyHistogram`]).
    pub latency: LatencyHistogram,
    /// The most queried names (as sent, expansions included), highest first; served as
    /// JSON, never as labels.
    pub top_names: Vec<TopName>,
}

/// The tracker's own health, for self-metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Owners tracked now, and the cap.
    pub owners: usize,
    pub max_owners: usize,
    /// Owners dropped to make room (least recently seen first).
    pub owners_evicted: u64,
    /// Queries waiting for a response now, and the cap.
    pub pending: usize,
    pub max_pending: usize,
    /// Pending queries dropped to make room (counted as unanswered for their owner).
    pub pending_evicted: u64,
    /// Events whose payload was not a readable DNS message.
    pub malformed: u64,
    /// Events that are not a client's DNS traffic: queries received or responses sent
    /// (the owner is a DNS server), opcodes other than QUERY, messages without question.
    pub ignored: u64,
}

/// Everything the tracker knows, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSnapshot {
    /// One entry per owner, ordered by owner.
    pub owners: Vec<OwnerDns>,
    pub tracker: TrackerStats,
}
