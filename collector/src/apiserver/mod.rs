//! API server requests and streams, estimated from what the kernel sees under TLS.
//!
//! TLS hides the HTTP requests, but not the TLS record headers: the kernel reports, per
//! API server socket (keyed by cookie), a `Connect`, then one `Segment` per TCP segment
//! with the record headers (type, length) that start in it, then a `Close`. This module
//! turns that into estimated requests (how many, when), open long-lived streams
//! (watches), and per owner (cgroup id, tgid) totals. Pure and bounded: no I/O, no clock
//! of its own (event times, and [`Estimator::tick`]).
//!
//! # Model
//! Per connection, in order:
//! 1. **Handshake.** Records before the client's Finished are not HTTP. TLS 1.2: the
//!    Finished is the first handshake record after the client's ChangeCipherSpec; its
//!    fixed plaintext (16 bytes) gives the cipher's record overhead (24 GCM, 16 ChaCha).
//!    TLS 1.3: the client's Finished is an *application_data* record of a fixed length
//!    (4 + 32|48 + 17); with client certificates, Certificate and CertificateVerify come
//!    first, so it is the first Finished-sized record of the first three. Overhead 17.
//!    From then on every application_data record has `plaintext = length − overhead`;
//!    below 9 bytes it is a TLS 1.3 alert or KeyUpdate, never HTTP.
//! 2. **Protocol.** ALPN is encrypted in TLS 1.3, so the records decide. Every HTTP/2
//!    client acks the server's SETTINGS with a 9-byte frame at once (hyper at times in
//!    the record of its first requests, see 3), and sends other
//!    frames (WINDOW_UPDATE, PING) under 27 bytes, the smallest possible HTTP/1.1 request
//!    (request line + Host). So a small record means HTTP/2; none within
//!    [`EstimatorConfig::pending_window_ns`] (or before close) means HTTP/1.1. Until then
//!    records wait (counted late, stamped with their own times).
//! 3. **HTTP/2 preface.** The first data record(s) may be the preface: the 24-byte magic,
//!    then SETTINGS (9 + 6·n) and often a WINDOW_UPDATE (13), in one record (Go, curl) or
//!    two (hyper). Shaped like that, they are no request if the connection is HTTP/2;
//!    the magic alone is small enough to say so (hyper may write its SETTINGS ack into
//!    the record of its first requests, leaving no other small record for a while).
//! 4. **HTTP/1.1: one request per turn.** Clients do not pipeline: after a request comes
//!    its response. The first data record after ingress data is a request; more records
//!    before the response (a body split over records) belong to it.
//! 5. **HTTP/2: one request per record, minus control.** Go (client-go, kubectl) and curl
//!    flush each request's HEADERS in a record of its own. Records of exactly 9, 13, 22,
//!    26 bytes are control (SETTINGS ack, WINDOW_UPDATE, RST_STREAM, and their pairs).
//!    17 bytes is a PING — or a fully HPACK-indexed repeat of an earlier request (Go), so
//!    a 17-byte record counts unless the server answers it with a 17-byte PING ack, or it
//!    answers a server PING itself.
//! 6. **HTTP/2 coalescing.** hyper's h2 (kube-rs) writes the HEADERS of the requests it
//!    has queued into one record. Identical requests compress to identical HEADERS of
//!    some size R (h2 never indexes `:path`), the connection's first request d bytes more
//!    (its new HPACK literals, d < R): records are `k·R`, the first `k·R + d`. In a batch
//!    (records within the pending window), records that are exact multiples of one size —
//!    a size seen alone twice, or a common divisor of records; several witnesses, and at
//!    least half of the larger records, as one multiple is easily a coincidence — show a
//!    unit. Sizes cannot tell R from 2R when no record carried one request (under load
//!    hyper answers a whole window of responses with a whole window of requests), so the
//!    server's responses decide between the divisors of such a family: the one whose
//!    count is within 10 % of the data records the server sent meanwhile, when those look
//!    alike (identical requests, alike responses). Each record then counts
//!    `round(size / unit)` (the first rounds down). The unit holds for the connection's
//!    later batches whose records all are its multiples (their responses include those
//!    to earlier requests still in flight), and for exact multiples in others. See
//!    `coalescing`.
//! 7. **Streams.** A watch is the server pushing data nobody asked for: ingress data
//!    after at least [`EstimatorConfig::push_gap_ns`] of silence with no request since
//!    the last ingress data. [`EstimatorConfig::pushes_to_open`] such pushes open a
//!    stream; it closes with the connection, when HTTP/1.1 sends its next request (the
//!    response must have ended), or after [`EstimatorConfig::stream_idle_ns`] without
//!    ingress data.
//!
//! # Known limits
//! - HTTP/2 requests with a body (POST, PUT, PATCH) from Go count twice or more: Go
//!   flushes HEADERS and DATA in separate records, indistinguishable by size.
//! - Coalesced HTTP/2 requests that differ (hyper starting several different lists and
//!   watches at once) count as one request per record: no exact multiples to go by. So
//!   does a bundle of identical ones with no other request record within the pending
//!   window, even if a later batch shows the unit (it was counted already), and a first
//!   bundle followed by lone requests only, when the responses do not come one record
//!   each (large LISTs): the sizes need two multiples of the request besides the first
//!   record, as a Go client's first request can be a multiple of its fully indexed
//!   17-byte repeats by chance.
//! - Alike responses are taken as one record per response: a server that answers each
//!   request of a coalesced family with exactly r alike records (r ≥ 2) can make the
//!   family count up to r times its requests (bounded by the smallest HEADERS size).
//! - Streams: at most one per connection. Several watches multiplexed on one HTTP/2
//!   connection (client-go informers) show as one open stream: a lower bound. A watch
//!   without events is not seen until it pushes (bookmarks come about once a minute).
//! - A connection that was open before the collector started (no handshake seen) has no
//!   preface to skip and learns its protocol only from small records.
//! - TLS 1.3 with client certificates whose Certificate, CertificateVerify and Finished
//!   share one record: the first two data records after it are taken as handshake.
//! - Segments with `desync` lose records; they are counted in [`Stats::desyncs`].
mod coalescing;
mod connection;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use collector_ebpf::{EndpointKind, event};
pub use connection::Protocol;
use connection::{Connection, Outcome};

/// Who opened a connection: a cgroup (container or node service) and a process in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    pub cgroup_id: u64,
    pub tgid: u32,
}

/// Running totals of one owner.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnerTotals {
    /// The process name of its most recent connection.
    pub comm: [u8; 16],
    /// Estimated requests (a counter).
    pub requests: u64,
    pub connections_opened: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Long-lived streams (watches) open now.
    pub open_streams: u64,
    /// The last event seen for this owner.
    pub last_ts_ns: u64,
}

/// Estimated requests, in the order they were decided (not strictly in time order: a
/// record waits up to the pending window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestEstimate {
    pub owner: Owner,
    pub cookie: u64,
    /// When the record that carried the request(s) was seen.
    pub ts_ns: u64,
    pub count: u64,
}

/// What one connection looks like now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionView {
    pub owner: Owner,
    pub protocol: Protocol,
    pub requests: u64,
    pub stream_open: bool,
}

/// Counters of what the estimator dropped or could not see.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections tracked now.
    pub connections: usize,
    /// Connections forgotten to make room (their Close was probably lost).
    pub evicted_connections: u64,
    /// Owners forgotten to make room (only owners with nothing open).
    pub evicted_owners: u64,
    /// Requests of owners that could not be tracked (owner table full of open owners).
    pub untracked_requests: u64,
    /// Segments where the kernel lost TLS record boundaries.
    pub desyncs: u64,
    /// Request estimates dropped because nobody drained them.
    pub dropped_estimates: u64,
    /// Segments that arrived after their connection's Close (ignored).
    pub late_segments: u64,
}

/// Tuning and bounds. The defaults suit a node talking to one API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EstimatorConfig {
    /// Connections tracked at most (matches the kernel's socket table by default).
    pub max_connections: usize,
    /// Owners tracked at most.
    pub max_owners: usize,
    /// Records waiting per connection at most (more: judged early).
    pub max_pending: usize,
    /// Request estimates kept for [`Estimator::drain_requests`] at most.
    pub max_estimates: usize,
    /// How long records may wait for the protocol or their batch. An HTTP/2 client acks
    /// the server's SETTINGS within a round trip or two; 1 s is far above that.
    pub pending_window_ns: u64,
    /// Ingress silence before unsolicited data counts as a push. Above the gaps inside one
    /// response on a busy server, below watch event spacing worth calling a stream.
    pub push_gap_ns: u64,
    /// Pushes that open a stream.
    pub pushes_to_open: u32,
    /// A push older than this no longer supports the next one.
    pub push_memory_ns: u64,
    /// A stream with no ingress data for this long is closed. Above the API server's
    /// watch bookmark interval (about a minute).
    pub stream_idle_ns: u64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        Self {
            max_connections: collector_ebpf::capacity::SOCKETS as usize,
            max_owners: 16_384,
            max_pending: 64,
            max_estimates: 65_536,
            pending_window_ns: 1_000_000_000,
            push_gap_ns: 100_000_000,
            pushes_to_open: 2,
            push_memory_ns: 120_000_000_000,
            stream_idle_ns: 180_000_000_000,
        }
    }
}

/// The estimator: feed it the kernel's API server events in order, read totals.
#[derive(Debug)]
pub struct Estimator {
    config: EstimatorConfig,
    connections: HashMap<u64, Connection>,
    /// (last event time, cookie): least recently active first, for eviction.
    recency: BTreeSet<(u64, u64)>,
    owners: HashMap<Owner, OwnerTotals>,
    /// Owners forgotten to make room, with their last totals, until
    /// [`Estimator::drain_evicted`] (the agent drains it every snapshot and carries their
    /// requests on, so no exported counter falls when an owner is forgotten).
    evicted: Vec<(Owner, OwnerTotals)>,
    estimates: VecDeque<RequestEstimate>,
    /// Cookies of connections closed lately, oldest first. Events from several CPUs can
    /// reach the ring buffer out of order, so a connection's last segment may come after
    /// its Close; it must not open the connection again. Socket cookies are never reused.
    closed: VecDeque<u64>,
    closed_set: HashSet<u64>,
    stats: Stats,
}

/// Closed connections remembered to recognise their late segments.
const REMEMBER_CLOSED: usize = 4096;

impl Estimator {
    pub fn new(config: EstimatorConfig) -> Self {
        Self {
            config,
            connections: HashMap::new(),
            recency: BTreeSet::new(),
            owners: HashMap::new(),
            evicted: Vec::new(),
            estimates: VecDeque::new(),
            closed: VecDeque::new(),
            closed_set: HashSet::new(),
            stats: Stats::default(),
        }
    }

    pub fn config(&self) -> &EstimatorConfig {
        &self.config
    }

    /// A process connected a socket to the API server.
    pub fn on_connect(&mut self, ev: &event::Connect) {
        if !is_api_server(&ev.header) {
            return;
        }
        let h = &ev.header;
        if let Some(old) = self.connections.get(&h.cookie) {
            // A reused cookie without a Close: end the old connection first.
            let ts = old.last_ts_ns;
            self.close(h.cookie, ts);
        }
        let owner = Owner {
            cgroup_id: h.cgroup_id,
            tgid: h.tgid,
        };
        self.open(h.cookie, owner, ev.comm, h.ts_ns);
    }

    /// A TCP segment with payload to or from the API server.
    pub fn on_segment(&mut self, ev: &event::Segment) {
        if !is_api_server(&ev.header) {
            return;
        }
        let h = &ev.header;
        if !self.connections.contains_key(&h.cookie) {
            if self.closed_set.contains(&h.cookie) {
                // The tail of a connection already closed (see `closed`).
                self.stats.late_segments += 1;
                return;
            }
            // Opened before we started, or its Connect was lost: the header names the owner.
            let owner = Owner {
                cgroup_id: h.cgroup_id,
                tgid: h.tgid,
            };
            self.open(h.cookie, owner, [0; 16], h.ts_ns);
        }
        if ev.desync != 0 {
            self.stats.desyncs += 1;
        }
        let listed = (ev.records as usize).min(event::MAX_RECORDS);
        let records: Vec<(u8, u16)> = ev.record[..listed]
            .iter()
            .map(|r| (r.content_type, r.length))
            .collect();
        let mut out = Outcome::default();
        let Some(conn) = self.connections.get_mut(&h.cookie) else {
            return;
        };
        let before = conn.last_ts_ns;
        if h.direction == event::EGRESS {
            conn.egress(h.ts_ns, &records, ev.records_beyond, &self.config, &mut out);
        } else {
            conn.ingress(h.ts_ns, ev.payload_len, &records, &self.config, &mut out);
        }
        let (owner, after) = (conn.owner, conn.last_ts_ns);
        if before != after {
            self.recency.remove(&(before, h.cookie));
            self.recency.insert((after, h.cookie));
        }
        self.apply_to_connection(h.cookie, owner, out, after);
    }

    /// A socket to the API server was released.
    pub fn on_close(&mut self, ev: &event::Close) {
        if is_api_server(&ev.header) {
            let cookie = ev.header.cookie;
            self.close(cookie, ev.header.ts_ns);
            self.remember_closed(cookie);
        }
    }

    /// Forgets cgroup `cgroup_id` (gone and retired: its series were dropped): its
    /// owners' totals and its connections, whose later segments are then ignored as a
    /// closed connection's are.
    pub fn forget_cgroup(&mut self, cgroup_id: u64) {
        let cookies: Vec<u64> = self
            .connections
            .iter()
            .filter(|(_, conn)| conn.owner.cgroup_id == cgroup_id)
            .map(|(&cookie, _)| cookie)
            .collect();
        for cookie in cookies {
            if let Some(conn) = self.connections.remove(&cookie) {
                self.recency.remove(&(conn.last_ts_ns, cookie));
            }
            self.remember_closed(cookie);
        }
        self.owners.retain(|owner, _| owner.cgroup_id != cgroup_id);
        self.evicted
            .retain(|(owner, _)| owner.cgroup_id != cgroup_id);
    }

    fn remember_closed(&mut self, cookie: u64) {
        if self.closed_set.insert(cookie) {
            self.closed.push_back(cookie);
            if self.closed.len() > REMEMBER_CLOSED
                && let Some(oldest) = self.closed.pop_front()
            {
                self.closed_set.remove(&oldest);
            }
        }
    }

    /// Lets time pass: judges records that waited long enough and closes idle streams.
    /// Call it now and then (e.g. before reading totals) with the current CLOCK_MONOTONIC.
    pub fn tick(&mut self, now_ns: u64) {
        let cookies: Vec<u64> = self.connections.keys().copied().collect();
        for cookie in cookies {
            let mut out = Outcome::default();
            let Some(conn) = self.connections.get_mut(&cookie) else {
                continue;
            };
            conn.settle(now_ns, &self.config, &mut out, false);
            let owner = conn.owner;
            self.apply_to_connection(cookie, owner, out, now_ns);
        }
    }

    pub fn owner(&self, owner: &Owner) -> Option<&OwnerTotals> {
        self.owners.get(owner)
    }

    pub fn owners(&self) -> impl Iterator<Item = (&Owner, &OwnerTotals)> {
        self.owners.iter()
    }

    pub fn connection(&self, cookie: u64) -> Option<ConnectionView> {
        self.connections.get(&cookie).map(|c| ConnectionView {
            owner: c.owner,
            protocol: c.protocol(),
            requests: c.requests,
            stream_open: c.stream_open(),
        })
    }

    /// Takes the owners forgotten to make room since the last call, with their last
    /// totals: whoever exports the owners' counters must keep counting these.
    pub fn drain_evicted(&mut self) -> impl Iterator<Item = (Owner, OwnerTotals)> + '_ {
        self.evicted.drain(..)
    }

    /// Takes the request estimates decided since the last call.
    pub fn drain_requests(&mut self) -> impl Iterator<Item = RequestEstimate> + '_ {
        self.estimates.drain(..)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connections.len(),
            ..self.stats
        }
    }

    fn open(&mut self, cookie: u64, owner: Owner, comm: [u8; 16], ts_ns: u64) {
        while self.connections.len() >= self.config.max_connections.max(1) {
            let Some(&(ts, oldest)) = self.recency.iter().next() else {
                break;
            };
            self.close(oldest, ts);
            self.stats.evicted_connections += 1;
        }
        let mut conn = Connection::new(owner, ts_ns);
        if let Some(totals) = self.owner_entry(owner) {
            totals.connections_opened += 1;
            totals.connections_open += 1;
            totals.last_ts_ns = totals.last_ts_ns.max(ts_ns);
            if comm != [0; 16] {
                totals.comm = comm;
            }
            conn.counted = true;
        }
        self.connections.insert(cookie, conn);
        self.recency.insert((ts_ns, cookie));
    }

    fn close(&mut self, cookie: u64, ts_ns: u64) {
        let Some(mut conn) = self.connections.remove(&cookie) else {
            return;
        };
        self.recency.remove(&(conn.last_ts_ns, cookie));
        let mut out = Outcome::default();
        conn.settle(ts_ns.max(conn.last_ts_ns), &self.config, &mut out, true);
        let counted = self.apply(cookie, conn.owner, conn.counted, out, ts_ns);
        if counted && let Some(totals) = self.owners.get_mut(&conn.owner) {
            totals.connections_open = totals.connections_open.saturating_sub(1);
        }
    }

    /// [`Self::apply`] for a connection still open, remembering whether it is counted now.
    fn apply_to_connection(&mut self, cookie: u64, owner: Owner, out: Outcome, ts_ns: u64) {
        let counted = self.connections.get(&cookie).is_some_and(|c| c.counted);
        let now = self.apply(cookie, owner, counted, out, ts_ns);
        if now != counted
            && let Some(conn) = self.connections.get_mut(&cookie)
        {
            conn.counted = now;
        }
    }

    /// Adds a connection's outcome to its owner's totals. A connection not yet counted
    /// (`counted`: the owner table was full as it opened) is counted as opened and open
    /// when its owner gets a place here; returns whether it is counted after the call.
    fn apply(
        &mut self,
        cookie: u64,
        owner: Owner,
        counted: bool,
        out: Outcome,
        ts_ns: u64,
    ) -> bool {
        let total: u64 = out.requests.iter().map(|&(_, n)| n).sum();
        if total == 0 && out.stream_delta == 0 {
            return counted;
        }
        let counted = match self.owner_entry(owner) {
            Some(totals) => {
                if !counted {
                    totals.connections_opened += 1;
                    totals.connections_open += 1;
                }
                totals.requests += total;
                totals.open_streams = totals.open_streams.saturating_add_signed(out.stream_delta);
                totals.last_ts_ns = totals.last_ts_ns.max(ts_ns);
                true
            }
            None => {
                self.stats.untracked_requests += total;
                counted
            }
        };
        for (ts_ns, count) in out.requests {
            if self.estimates.len() >= self.config.max_estimates {
                self.estimates.pop_front();
                self.stats.dropped_estimates += 1;
            }
            self.estimates.push_back(RequestEstimate {
                owner,
                cookie,
                ts_ns,
                count,
            });
        }
        counted
    }

    /// The owner's totals, making room when needed by forgetting the least recently active
    /// owner with nothing open (its counters were already exported).
    fn owner_entry(&mut self, owner: Owner) -> Option<&mut OwnerTotals> {
        if !self.owners.contains_key(&owner) && self.owners.len() >= self.config.max_owners {
            let idle = self
                .owners
                .iter()
                .filter(|(_, t)| t.connections_open == 0 && t.open_streams == 0)
                .min_by_key(|(_, t)| t.last_ts_ns)
                .map(|(o, _)| *o);
            match idle {
                Some(idle) => {
                    if let Some(totals) = self.owners.remove(&idle) {
                        self.evicted.push((idle, totals));
                    }
                    self.stats.evicted_owners += 1;
                }
                None => return None,
            }
        }
        Some(self.owners.entry(owner).or_default())
    }
}

impl Default for Estimator {
    fn default() -> Self {
        Self::new(EstimatorConfig::default())
    }
}

fn is_api_server(h: &event::Header) -> bool {
    h.endpoint_kind == EndpointKind::ApiServer as u32
}
