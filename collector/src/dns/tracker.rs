//! [`DnsTracker`]: per-owner DNS accounting from the kernel's DNS events — queries by
//! qtype, responses by rcode, latency (each response matched to its query), unanswered
//! queries, search-list expansions and the most queried names — in bounded memory.

use std::{
    collections::{BTreeMap, HashMap, hash_map::Entry},
    time::Duration,
};

use collector_ebpf::event;

use super::{
    code::{QType, Rcode},
    expansion::{OpenLookups, QueryRole, TryOutcome, Windows},
    latency::LatencyHistogram,
    message::{self, MessageError},
    name::{Name, NameBuilder},
    resolv_conf::MAX_SEARCH,
    snapshot::{DnsSnapshot, OTHER_QTYPE, Owner, OwnerDns, TrackerStats},
    top_names::TopNames,
};
use crate::ids::IdMap;

/// Limits and time windows of a [`DnsTracker`]. Defaults keep the worst case (every
/// table full of 255-byte names) to a few tens of MiB and the usual case far below.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Owners (cgroup, process) tracked at once; the least recently seen is evicted.
    pub max_owners: usize,
    /// Queries waiting for their response, all owners together.
    pub max_pending: usize,
    /// A query without a response after this long counts as unanswered. glibc gives up
    /// on a try after 5 s; a response later than this one is counted as unmatched.
    pub query_timeout: Duration,
    /// Longest gap between a failed (or unanswered) try and the next try of the same
    /// lookup. Resolvers move on at once, so a second is generous.
    pub expansion_window: Duration,
    /// Names listed per owner in a snapshot (K of the top-K).
    pub top_names: usize,
    /// Candidate names counted per owner (the space-saving table, ≥ `top_names`).
    pub top_name_candidates: usize,
    /// Lookups per owner that can be in progress at once.
    pub max_open_lookups: usize,
    /// Distinct qtypes counted per owner; queries of further types count as `OTHER`
    /// (the qtype is a label: this bounds the series an owner can create).
    pub max_qtypes: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            max_owners: 1024,
            max_pending: 4096,
            query_timeout: Duration::from_secs(10),
            expansion_window: Duration::from_secs(1),
            top_names: 20,
            top_name_candidates: 64,
            max_open_lookups: 8,
            max_qtypes: 16,
        }
    }
}

/// A [`DnsConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    #[error("dns {field} must be at least 1")]
    Zero { field: &'static str },
    #[error(
        "dns top_names ({top_names}) must not exceed top_name_candidates ({candidates}): \
         the top names are picked from the candidates"
    )]
    TopExceedsCandidates { top_names: usize, candidates: usize },
}

impl DnsConfig {
    pub fn validate(&self) -> Result<(), DnsConfigError> {
        let counts = [
            ("max_owners", self.max_owners),
            ("max_pending", self.max_pending),
            ("query_timeout", usize::from(!self.query_timeout.is_zero())),
            (
                "expansion_window",
                usize::from(!self.expansion_window.is_zero()),
            ),
            ("top_names", self.top_names),
            ("top_name_candidates", self.top_name_candidates),
            ("max_open_lookups", self.max_open_lookups),
            ("max_qtypes", self.max_qtypes),
        ];
        if let Some((field, _)) = counts.into_iter().find(|(_, value)| *value == 0) {
            return Err(DnsConfigError::Zero { field });
        }
        if self.top_names > self.top_name_candidates {
            return Err(DnsConfigError::TopExceedsCandidates {
                top_names: self.top_names,
                candidates: self.top_name_candidates,
            });
        }
        Ok(())
    }
}

/// What [`DnsTracker::record`] made of an event (for logs and tests; the counters are
/// already updated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A query sent by the owner, and what it is to the owner's lookups.
    Query(QueryRole),
    /// A response received; `latency_ns` is set when it matched its query.
    Response {
        rcode: Rcode,
        latency_ns: Option<u64>,
    },
    /// Not a client's DNS traffic (see [`TrackerStats::ignored`]).
    Ignored,
    /// The payload is not a readable DNS message.
    Malformed(MessageError),
}

/// How a response finds its query: the socket (cgroup and local port; the cookie is
/// checked when both sides have one), the DNS id, and the question: its type and its
/// name's hash here, the name itself compared once found (`Pending::name`). A response's
/// name is never built: it is read into the tracker's scratch buffer, hashed and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PendingKey {
    cgroup_id: u64,
    local_port: u32,
    id: u16,
    qtype: QType,
    name_hash: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    owner: Owner,
    cookie: u64,
    sent_ns: u64,
    name: Name,
}

/// One owner's counters and bounded tables.
#[derive(Clone, Debug)]
struct OwnerState {
    last_seen_ns: u64,
    queries: Vec<(QType, u64)>,
    other_qtypes: u64,
    /// Indexed by the 4-bit header RCODE.
    responses: [u64; 16],
    lookups: u64,
    expansions: u64,
    retries: u64,
    unanswered: u64,
    unmatched_responses: u64,
    latency: LatencyHistogram,
    top_names: TopNames,
    open_lookups: OpenLookups,
    /// The owner's search list, when user space told us (see `set_search_list`).
    search: Vec<Name>,
}

impl OwnerState {
    fn new(config: &DnsConfig) -> Self {
        Self {
            last_seen_ns: 0,
            queries: Vec::new(),
            other_qtypes: 0,
            responses: [0; 16],
            lookups: 0,
            expansions: 0,
            retries: 0,
            unanswered: 0,
            unmatched_responses: 0,
            latency: LatencyHistogram::default(),
            top_names: TopNames::new(config.top_name_candidates),
            open_lookups: OpenLookups::new(config.max_open_lookups),
            search: Vec::new(),
        }
    }

    fn count_query(&mut self, qtype: QType, max_qtypes: usize) {
        if let Some((_, count)) = self.queries.iter_mut().find(|(t, _)| *t == qtype) {
            *count += 1;
        } else if self.queries.len() < max_qtypes {
            self.queries.push((qtype, 1));
        } else {
            self.other_qtypes += 1;
        }
    }

    fn heap_bytes(&self) -> usize {
        self.queries.capacity() * size_of::<(QType, u64)>()
            + self.top_names.heap_bytes()
            + self.open_lookups.heap_bytes()
            + self.search.capacity() * size_of::<Name>()
            + self.search.iter().map(Name::heap_bytes).sum::<usize>()
    }

    fn snapshot(&self, owner: Owner, top_names: usize) -> OwnerDns {
        let mut queries: BTreeMap<String, u64> = self
            .queries
            .iter()
            .map(|(qtype, n)| (qtype.name().into_owned(), *n))
            .collect();
        if self.other_qtypes > 0 {
            queries.insert(OTHER_QTYPE.to_owned(), self.other_qtypes);
        }
        let responses = (0u8..16)
            .zip(self.responses)
            .filter(|(_, n)| *n > 0)
            .map(|(rcode, n)| (Rcode(rcode).name().into_owned(), n))
            .collect();
        OwnerDns {
            owner,
            queries,
            responses,
            lookups: self.lookups,
            expansions: self.expansions,
            retries: self.retries,
            unanswered: self.unanswered,
            unmatched_responses: self.unmatched_responses,
            nxdomain: self.responses[usize::from(Rcode::NXDOMAIN.0)],
            latency: self.latency.clone(),
            top_names: self.top_names.top(top_names),
        }
    }
}

/// Per-owner DNS accounting, fed with the kernel's [`event::Dns`] events in ring-buffer
/// order. Pure: no I/O, no clock of its own (time is the events' `ts_ns`, and the shell
/// passes CLOCK_MONOTONIC to [`DnsTracker::expire`] when it wants to age idle entries).
#[derive(Debug)]
pub struct DnsTracker {
    config: DnsConfig,
    owners: IdMap<Owner, OwnerState>,
    /// Keyed by what a pod chooses (the query's name and id): foldhash, seeded at random
    /// per process, is fast and not predictable from outside (SipHash cost ~5% of the
    /// collector's CPU under dnsperf).
    pending: HashMap<PendingKey, Pending, foldhash::fast::RandomState>,
    /// The question name of the message being recorded.
    scratch: NameBuilder,
    last_sweep_ns: u64,
    owners_evicted: u64,
    pending_evicted: u64,
    malformed: u64,
    ignored: u64,
}

/// Pending queries are swept for timeouts at most this often (and whenever full).
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

impl DnsTracker {
    pub fn new(config: DnsConfig) -> Result<Self, DnsConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            owners: IdMap::default(),
            pending: HashMap::default(),
            scratch: NameBuilder::default(),
            last_sweep_ns: 0,
            owners_evicted: 0,
            pending_evicted: 0,
            malformed: 0,
            ignored: 0,
        })
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Accounts one DNS event: an egress query of the owner or an ingress response to it.
    pub fn record(&mut self, event: &event::Dns) -> Recorded {
        let captured = usize::try_from(event.captured).map_or(0, |n| n.min(event::DNS_CAPTURE));
        self.record_message(
            &event.header,
            event.protocol,
            event.local_port,
            &event.payload[..captured],
        )
    }

    /// [`Self::record`] of an event's fields, `payload` the message bytes captured (as a
    /// record of any size class holds them).
    pub fn record_message(
        &mut self,
        header: &event::Header,
        protocol: u32,
        local_port: u32,
        payload: &[u8],
    ) -> Recorded {
        let now = header.ts_ns;
        if now.saturating_sub(self.last_sweep_ns) >= SWEEP_EVERY_NS {
            self.expire(now);
        }
        let (message_header, question) =
            match message::parse_transport_into(protocol, payload, &mut self.scratch) {
                Ok(parsed) => parsed,
                Err(error) => {
                    self.malformed += 1;
                    return Recorded::Malformed(error);
                }
            };
        let Some((qtype, _)) = question else {
            self.ignored += 1;
            return Recorded::Ignored;
        };
        let owner = Owner {
            cgroup_id: header.cgroup_id,
            tgid: header.tgid,
        };
        let key = PendingKey {
            cgroup_id: header.cgroup_id,
            local_port,
            id: message_header.id,
            qtype,
            name_hash: self.scratch.hash(),
        };
        match (
            header.direction,
            message_header.response,
            message_header.opcode,
        ) {
            (event::EGRESS, false, 0) => {
                let name = self.scratch.to_name();
                Recorded::Query(self.record_query(owner, key, name, header.cookie, now))
            }
            (event::INGRESS, true, 0) => {
                let (rcode, answers) = (message_header.rcode, message_header.ancount);
                let outcome = if message_header.truncated {
                    TryOutcome::Truncated
                } else if rcode == Rcode::NXDOMAIN || (rcode == Rcode::NOERROR && answers == 0) {
                    TryOutcome::Failed
                } else if [Rcode::SERVFAIL, Rcode::NOTIMP, Rcode::REFUSED].contains(&rcode) {
                    TryOutcome::ServerError
                } else {
                    TryOutcome::Answered
                };
                let latency_ns =
                    self.record_response(owner, key, header.cookie, now, rcode, outcome);
                Recorded::Response { rcode, latency_ns }
            }
            _ => {
                self.ignored += 1;
                Recorded::Ignored
            }
        }
    }

    fn record_query(
        &mut self,
        owner: Owner,
        key: PendingKey,
        name: Name,
        cookie: u64,
        now: u64,
    ) -> QueryRole {
        let windows = Windows {
            expansion_ns: duration_ns(self.config.expansion_window),
            retry_ns: duration_ns(self.config.query_timeout),
        };
        let max_qtypes = self.config.max_qtypes;
        let state = self.owner_mut(owner, now);
        state.count_query(key.qtype, max_qtypes);
        state.top_names.record(&name);
        let role = state
            .open_lookups
            .on_query(key.qtype, &name, now, &state.search, windows);
        match role {
            QueryRole::Lookup => state.lookups += 1,
            QueryRole::Expansion => state.expansions += 1,
            QueryRole::Retry => state.retries += 1,
        }

        // The common case (room in the table) hashes the key once.
        if self.pending.len() >= self.config.max_pending && !self.pending.contains_key(&key) {
            self.expire(now);
            if self.pending.len() >= self.config.max_pending {
                self.evict_oldest_pending();
            }
        }
        match self.pending.entry(key) {
            Entry::Occupied(mut pending) if pending.get().name == name => {
                // The same question on the same socket with the same id: a retransmission.
                // Latency is what the caller waited, so the first send time stays.
                pending.get_mut().owner = owner;
            }
            Entry::Occupied(mut pending) => {
                // Another name with the same 64-bit hash (chance ~2^-64): the newer query
                // takes the place, and the older one counts as unanswered.
                let displaced = pending.insert(Pending {
                    owner,
                    cookie,
                    sent_ns: now,
                    name,
                });
                self.pending_evicted += 1;
                if let Some(state) = self.owners.get_mut(&displaced.owner) {
                    state.unanswered += 1;
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(Pending {
                    owner,
                    cookie,
                    sent_ns: now,
                    name,
                });
            }
        }
        role
    }

    fn record_response(
        &mut self,
        event_owner: Owner,
        key: PendingKey,
        cookie: u64,
        now: u64,
        rcode: Rcode,
        outcome: TryOutcome,
    ) -> Option<u64> {
        let matched = match self.pending.entry(key) {
            Entry::Occupied(pending) => {
                let p = pending.get();
                if (p.cookie == 0 || cookie == 0 || p.cookie == cookie) && self.scratch.is(&p.name)
                {
                    Some(pending.remove())
                } else {
                    None
                }
            }
            Entry::Vacant(_) => None,
        };
        // A matched response belongs to whoever sent the query: the ingress side often
        // does not know the process.
        let owner = matched.as_ref().map_or(event_owner, |p| p.owner);
        let state = self.owner_mut(owner, now);
        state.responses[usize::from(rcode.0 & 0xf)] += 1;
        let Some(pending) = matched else {
            state.unmatched_responses += 1;
            return None;
        };
        let latency_ns = now.saturating_sub(pending.sent_ns);
        state.latency.observe_ns(latency_ns);
        state
            .open_lookups
            .on_response(key.qtype, &pending.name, now, outcome);
        Some(latency_ns)
    }

    /// The owner's state, created (evicting the least recently seen owner if full).
    fn owner_mut(&mut self, owner: Owner, now: u64) -> &mut OwnerState {
        if self.owners.len() >= self.config.max_owners
            && !self.owners.contains_key(&owner)
            && let Some(oldest) = self
                .owners
                .iter()
                .min_by_key(|(_, state)| state.last_seen_ns)
                .map(|(owner, _)| *owner)
        {
            self.owners.remove(&oldest);
            self.owners_evicted += 1;
        }
        let config = &self.config;
        let state = self
            .owners
            .entry(owner)
            .or_insert_with(|| OwnerState::new(config));
        state.last_seen_ns = state.last_seen_ns.max(now);
        state
    }

    fn evict_oldest_pending(&mut self) {
        let Some(oldest) = self
            .pending
            .iter()
            .min_by_key(|(_, pending)| pending.sent_ns)
            .map(|(key, _)| *key)
        else {
            return;
        };
        if let Some(pending) = self.pending.remove(&oldest) {
            self.pending_evicted += 1;
            if let Some(state) = self.owners.get_mut(&pending.owner) {
                state.unanswered += 1;
            }
        }
    }

    /// Counts queries older than the query timeout at `now_ns` (CLOCK_MONOTONIC, the
    /// events' clock) as unanswered and forgets them. `record` does this as events come;
    /// call it before a snapshot so a quiet owner's lost queries show too.
    pub fn expire(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let timeout = duration_ns(self.config.query_timeout);
        let owners = &mut self.owners;
        self.pending.retain(|_, pending| {
            let live = now_ns.saturating_sub(pending.sent_ns) <= timeout;
            if !live && let Some(state) = owners.get_mut(&pending.owner) {
                state.unanswered += 1;
            }
            live
        });
    }

    /// Tells the expansion detector the owner's search list (e.g. read from
    /// `/proc/<tgid>/root/etc/resolv.conf` with [`super::search_list`]). Optional: the
    /// detector works without it; with it, it also recognises search lists whose
    /// suffixes do not nest. At most [`MAX_SEARCH`] entries are kept.
    pub fn set_search_list(&mut self, owner: Owner, search: Vec<Name>) {
        let mut search = search;
        search.truncate(MAX_SEARCH);
        let last_seen = self
            .owners
            .get(&owner)
            .map_or(0, |state| state.last_seen_ns);
        self.owner_mut(owner, last_seen).search = search;
    }

    /// Forgets a cgroup that is gone (its owners and pending queries).
    pub fn forget_cgroup(&mut self, cgroup_id: u64) {
        self.owners.retain(|owner, _| owner.cgroup_id != cgroup_id);
        self.pending.retain(|key, _| key.cgroup_id != cgroup_id);
    }

    /// Everything counted so far, per owner (ordered by owner), and the tracker's health.
    pub fn snapshot(&self) -> DnsSnapshot {
        let mut owners: Vec<OwnerDns> = self
            .owners
            .iter()
            .map(|(owner, state)| state.snapshot(*owner, self.config.top_names))
            .collect();
        owners.sort_by_key(|owner| owner.owner);
        DnsSnapshot {
            owners,
            tracker: TrackerStats {
                owners: self.owners.len(),
                max_owners: self.config.max_owners,
                owners_evicted: self.owners_evicted,
                pending: self.pending.len(),
                max_pending: self.config.max_pending,
                pending_evicted: self.pending_evicted,
                malformed: self.malformed,
                ignored: self.ignored,
            },
        }
    }

    /// One owner's part of [`Self::snapshot`].
    pub fn owner_snapshot(&self, owner: Owner) -> Option<OwnerDns> {
        self.owners
            .get(&owner)
            .map(|state| state.snapshot(owner, self.config.top_names))
    }

    /// Heap bytes held by the tables (an estimate that counts every allocation the
    /// tracker makes, without allocator overhead), for tests and self-metrics.
    pub fn heap_bytes(&self) -> usize {
        let owners = self.owners.capacity() * size_of::<(Owner, OwnerState)>()
            + self
                .owners
                .values()
                .map(OwnerState::heap_bytes)
                .sum::<usize>();
        let pending = self.pending.capacity() * size_of::<(PendingKey, Pending)>()
            + self
                .pending
                .values()
                .map(|pending| pending.name.heap_bytes())
                .sum::<usize>();
        owners + pending
    }
}

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
