//! One TLS connection's state machine: handshake, protocol guess, request counting and the
//! stream detector. See the module docs of [`super`] for the model.
use std::collections::VecDeque;

use super::{
    EstimatorConfig, Owner,
    coalescing::{self, Headers},
};

/// TLS content types.
const CHANGE_CIPHER_SPEC: u8 = 20;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

/// TLS 1.3 record overhead: AEAD tag (16) + the inner content type byte (RFC 8446 §5.2).
const TLS13_OVERHEAD: u32 = 17;
/// TLS 1.2 AES-GCM overhead: explicit nonce (8) + tag (16); the default until the client's
/// Finished tells us the real one.
const TLS12_DEFAULT_OVERHEAD: u32 = 24;
/// TLS 1.2 Finished plaintext: 4-byte handshake header + 12-byte verify_data.
const TLS12_FINISHED: u32 = 16;
/// TLS 1.3 client Finished record lengths: 4 + 32 (SHA-256) or 48 (SHA-384) + overhead.
const TLS13_FINISHED: [u16; 2] = [4 + 32 + 17, 4 + 48 + 17];
/// TLS 1.3 with client certificates sends Certificate, CertificateVerify, Finished.
const TLS13_CLIENT_FLIGHT_MAX: usize = 3;

/// Smallest plaintext that can be HTTP: an HTTP/2 frame header. TLS 1.3 alerts (2) and
/// KeyUpdate (5) travel as application data and are smaller.
const MIN_HTTP: u32 = 9;
/// An HTTP/1.1 request needs a request line, a Host header and CRLFs: at least this many
/// bytes ("GET / HTTP/1.1\r\nHost: x\r\n\r\n"). Anything smaller is HTTP/2.
const MIN_HTTP1_REQUEST: u32 = 27;
/// HTTP/2 client connection preface magic (RFC 9113 §3.4).
const H2_MAGIC: u32 = 24;
/// HTTP/2 frame sizes that are control, never a request: SETTINGS ack (9), WINDOW_UPDATE or
/// RST_STREAM (13), SETTINGS ack + WINDOW_UPDATE (22), connection + stream WINDOW_UPDATE
/// (26, how Go's transport returns flow-control credit). PING (17) is handled apart.
const H2_CONTROL: [u32; 4] = [9, 13, 22, 26];
const H2_PING: u32 = 17;
/// SETTINGS parameters a client sends at most (RFC 9113 defines 6, extensions add a few).
const MAX_SETTINGS: u32 = 10;

/// What the connection speaks over TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Not known yet (requests wait, at most `pending_window_ns`).
    Unknown,
    Http1,
    Http2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    /// Nothing seen: a ClientHello starts a handshake; application data means we joined a
    /// connection that was already open.
    Start,
    /// ClientHello sent, the client's handshake not finished.
    InProgress,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preface {
    /// The next data record is the first: maybe the HTTP/2 preface.
    Expect,
    /// The 24-byte magic came alone; a SETTINGS-shaped record may follow.
    MagicOnly,
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemKind {
    /// Shaped like (part of) the HTTP/2 preface: no request if the connection is HTTP/2.
    Preface,
    /// A record that may carry requests.
    Candidate,
    /// 17 bytes under HTTP/2: a PING, or a fully HPACK-indexed repeated request. The next
    /// ingress record decides: a 17-byte PING ack means PING.
    MaybePing { answered_by_ping: Option<bool> },
}

/// An egress record waiting for the protocol to be known or for its batch to be judged.
#[derive(Clone, Copy, Debug)]
struct Item {
    ts_ns: u64,
    plaintext: u32,
    turn: u32,
    kind: ItemKind,
    /// The connection's first request record.
    first: bool,
    /// [`Connection::responses`] when it was pushed.
    responses_before: u64,
}

/// A stream (a watch): the server pushing data nobody asked for, again and again.
#[derive(Clone, Copy, Debug, Default)]
struct Stream {
    open: bool,
    /// Unsolicited ingress bursts seen since the last reset.
    pushes: u32,
    last_push_ns: u64,
}

/// What one connection reports back to the estimator.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests estimated, with their times.
    pub requests: Vec<(u64, u64)>,
    /// +1 a stream opened, -1 one closed.
    pub stream_delta: i64,
}

#[derive(Debug)]
pub struct Connection {
    pub owner: Owner,
    /// Counted in its owner's `connections_open` (and `connections_opened`): not yet when
    /// the owner table was full of busy owners as it opened; then counted once its owner
    /// has a place, so an owner's open streams never outnumber its open connections.
    pub counted: bool,
    pub last_ts_ns: u64,
    pub requests: u64,
    handshake: Handshake,
    egress_ccs: bool,
    /// TLS 1.3 client flight records not yet judged (client certificates).
    tls13_flight: u8,
    overhead: u32,
    protocol: Protocol,
    preface: Preface,
    /// Incremented at the first ingress data after egress data: HTTP/1.1 turns.
    turn: u32,
    ingress_since_egress: bool,
    counted_turn: Option<u32>,
    pending: VecDeque<Item>,
    last_ingress_was_ping: bool,
    /// Any egress candidate yet (ingress before the first is handshake aftermath).
    seen_request: bool,
    last_candidate_ns: u64,
    last_ingress_ns: u64,
    stream: Stream,
    /// The first request record is still to come.
    first_request: bool,
    /// Ingress data records so far (HTTP/2: each may be a response), and the sizes of
    /// the latest [`RESPONSES_KEPT`] of them.
    responses: u64,
    response_sizes: VecDeque<u32>,
    /// The coalescing unit a batch showed (hyper's repeated HEADERS), for later batches.
    unit: Option<u32>,
}

/// Response sizes kept per connection for [`coalescing::batch_unit`].
const RESPONSES_KEPT: usize = 256;

impl Connection {
    pub fn new(owner: Owner, ts_ns: u64) -> Self {
        Self {
            owner,
            counted: false,
            last_ts_ns: ts_ns,
            requests: 0,
            handshake: Handshake::Start,
            egress_ccs: false,
            tls13_flight: 0,
            overhead: TLS13_OVERHEAD,
            protocol: Protocol::Unknown,
            preface: Preface::Expect,
            turn: 0,
            ingress_since_egress: false,
            counted_turn: None,
            pending: VecDeque::new(),
            last_ingress_was_ping: false,
            seen_request: false,
            last_candidate_ns: 0,
            last_ingress_ns: 0,
            stream: Stream::default(),
            first_request: true,
            responses: 0,
            response_sizes: VecDeque::new(),
            unit: None,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    pub fn stream_open(&self) -> bool {
        self.stream.open
    }

    /// An egress segment: `records` are (content type, length) of the headers starting in
    /// it, `beyond` more that were not listed.
    pub fn egress(
        &mut self,
        ts_ns: u64,
        records: &[(u8, u16)],
        beyond: u32,
        cfg: &EstimatorConfig,
        out: &mut Outcome,
    ) {
        self.last_ts_ns = self.last_ts_ns.max(ts_ns);
        let mut candidates: Vec<u32> = Vec::new();
        for &(content_type, length) in records {
            if let Some(p) = self.egress_record(ts_ns, content_type, length, cfg, out) {
                candidates.push(p);
            }
        }
        // Records the kernel counted but did not list: assume they look like the listed
        // ones (a segment of many small records is typically many requests or none), the
        // most common size among them (an average would be no size hyper ever wrote, and
        // would hide its repeated HEADERS from the coalescing unit).
        if beyond > 0 && !records.is_empty() && !candidates.is_empty() {
            let extra = (u64::from(beyond) * candidates.len() as u64 + records.len() as u64 / 2)
                / records.len() as u64;
            candidates.sort_unstable();
            let size = candidates
                .chunk_by(|a, b| a == b)
                .max_by_key(|run| run.len())
                .map_or(0, |run| run[0]);
            for _ in 0..extra {
                self.candidate(ts_ns, size, cfg, out);
            }
        }
        self.settle(ts_ns, cfg, out, false);
    }

    /// Returns the plaintext size when the record was taken as a request candidate.
    fn egress_record(
        &mut self,
        ts_ns: u64,
        content_type: u8,
        length: u16,
        cfg: &EstimatorConfig,
        out: &mut Outcome,
    ) -> Option<u32> {
        match (self.handshake, content_type) {
            (Handshake::Done, APPLICATION_DATA) => {}
            (Handshake::Done, _) => return None, // alerts (TLS 1.2), renegotiation
            (Handshake::Start, APPLICATION_DATA) => {
                // Joined mid-connection: no handshake, no preface to expect.
                self.handshake = Handshake::Done;
                self.preface = Preface::Done;
            }
            (_, HANDSHAKE) if self.egress_ccs && u32::from(length) <= TLS12_FINISHED + 64 => {
                // TLS 1.2: the encrypted Finished right after ChangeCipherSpec. Its plaintext
                // is fixed, so its length tells the cipher's overhead (GCM 24, ChaCha 16).
                let overhead = u32::from(length).saturating_sub(TLS12_FINISHED);
                self.overhead = if (8..=64).contains(&overhead) {
                    overhead
                } else {
                    TLS12_DEFAULT_OVERHEAD
                };
                self.handshake = Handshake::Done;
                return None;
            }
            (_, HANDSHAKE) => {
                self.handshake = Handshake::InProgress;
                return None;
            }
            (_, CHANGE_CIPHER_SPEC) => {
                self.egress_ccs = true;
                return None;
            }
            (_, APPLICATION_DATA) => {
                // TLS 1.3 client flight: [Certificate, CertificateVerify,] Finished. The
                // Finished has a fixed length; without one in the first three records, the
                // first was the Finished (client auth messages coalesced into it).
                self.tls13_flight += 1;
                self.overhead = TLS13_OVERHEAD;
                if TLS13_FINISHED.contains(&length)
                    || usize::from(self.tls13_flight) >= TLS13_CLIENT_FLIGHT_MAX
                {
                    self.handshake = Handshake::Done;
                }
                return None;
            }
            _ => return None,
        }
        let p = u32::from(length).saturating_sub(self.overhead);
        if p < MIN_HTTP {
            return None;
        }
        self.data_record(ts_ns, p, cfg, out)
    }

    fn data_record(
        &mut self,
        ts_ns: u64,
        p: u32,
        cfg: &EstimatorConfig,
        out: &mut Outcome,
    ) -> Option<u32> {
        let preface = match self.preface {
            Preface::Expect if p == H2_MAGIC => Some(Preface::MagicOnly),
            Preface::Expect if p > H2_MAGIC && settings_shaped(p - H2_MAGIC) => Some(Preface::Done),
            Preface::MagicOnly if settings_shaped(p) => Some(Preface::Done),
            _ => None,
        };
        if let Some(next) = preface {
            self.preface = next;
            self.ingress_since_egress = false;
            if p < MIN_HTTP1_REQUEST {
                // The magic alone (hyper): no HTTP/1.1 request is that small. hyper may
                // write its SETTINGS ack into the record of its first requests, so this
                // can be the only small record for a long while.
                self.protocol = Protocol::Http2;
            }
            self.push(ts_ns, p, ItemKind::Preface, cfg, out);
            return None;
        }
        self.preface = Preface::Done;
        self.ingress_since_egress = false;
        if p < MIN_HTTP1_REQUEST && self.protocol != Protocol::Http2 {
            // Only HTTP/2 sends records this small (SETTINGS ack, WINDOW_UPDATE, ...).
            self.protocol = Protocol::Http2;
        }
        if self.protocol == Protocol::Http2 {
            if H2_CONTROL.contains(&p) {
                return None;
            }
            if p == H2_PING {
                if std::mem::take(&mut self.last_ingress_was_ping) {
                    return None; // the ack of the server's PING
                }
                self.push(
                    ts_ns,
                    p,
                    ItemKind::MaybePing {
                        answered_by_ping: None,
                    },
                    cfg,
                    out,
                );
                return None;
            }
        }
        self.candidate(ts_ns, p, cfg, out);
        Some(p)
    }

    fn candidate(&mut self, ts_ns: u64, p: u32, cfg: &EstimatorConfig, out: &mut Outcome) {
        self.seen_request = true;
        self.last_candidate_ns = ts_ns;
        self.last_ingress_was_ping = false;
        // HTTP/1.1 has no concurrency: a new request means the previous response ended.
        if self.protocol != Protocol::Http2 && self.stream.open {
            self.close_stream(out);
        }
        if self.protocol != Protocol::Http2 {
            self.stream.pushes = 0;
        }
        self.push(ts_ns, p, ItemKind::Candidate, cfg, out);
    }

    fn push(
        &mut self,
        ts_ns: u64,
        p: u32,
        kind: ItemKind,
        cfg: &EstimatorConfig,
        out: &mut Outcome,
    ) {
        if self.pending.len() >= cfg.max_pending {
            self.resolve(out, true, false);
        }
        self.pending.push_back(Item {
            ts_ns,
            plaintext: p,
            turn: self.turn,
            kind,
            first: kind == ItemKind::Candidate && std::mem::take(&mut self.first_request),
            responses_before: self.responses,
        });
        if self.protocol == Protocol::Http1 {
            self.resolve(out, false, false);
        }
    }

    /// An ingress segment.
    pub fn ingress(
        &mut self,
        ts_ns: u64,
        payload_len: u32,
        records: &[(u8, u16)],
        cfg: &EstimatorConfig,
        out: &mut Outcome,
    ) {
        self.last_ts_ns = self.last_ts_ns.max(ts_ns);
        if self.handshake != Handshake::Done || payload_len == 0 {
            return;
        }
        let mut data = records.is_empty(); // a continuation of a record: data
        for &(content_type, length) in records {
            if content_type != APPLICATION_DATA {
                continue;
            }
            let p = u32::from(length).saturating_sub(self.overhead);
            if p < MIN_HTTP {
                continue; // an alert (close_notify) answers nothing
            }
            for item in self.pending.iter_mut() {
                if let ItemKind::MaybePing {
                    answered_by_ping: answer @ None,
                } = &mut item.kind
                {
                    *answer = Some(p == H2_PING);
                }
            }
            self.last_ingress_was_ping = p == H2_PING;
            // Control frames (SETTINGS, PING, WINDOW_UPDATE) are not response data.
            if p > *H2_CONTROL.iter().max().unwrap_or(&0) {
                data = true;
                self.responses += 1;
                if self.response_sizes.len() >= RESPONSES_KEPT {
                    self.response_sizes.pop_front();
                }
                self.response_sizes.push_back(p);
            }
        }
        if !data {
            self.settle(ts_ns, cfg, out, false);
            return;
        }
        if !self.ingress_since_egress {
            self.ingress_since_egress = true;
            self.turn = self.turn.wrapping_add(1);
        }
        if self.seen_request {
            let gap = ts_ns.saturating_sub(self.last_ingress_ns);
            let solicited = self.last_candidate_ns >= self.last_ingress_ns;
            if gap >= cfg.push_gap_ns && !solicited && self.last_ingress_ns > 0 {
                if ts_ns.saturating_sub(self.stream.last_push_ns) > cfg.push_memory_ns {
                    self.stream.pushes = 0;
                }
                self.stream.pushes += 1;
                self.stream.last_push_ns = ts_ns;
                if self.stream.pushes >= cfg.pushes_to_open && !self.stream.open {
                    self.stream.open = true;
                    out.stream_delta += 1;
                }
            }
        }
        self.last_ingress_ns = ts_ns;
        self.settle(ts_ns, cfg, out, false);
    }

    /// Resolves what has waited long enough and closes an idle stream.
    pub fn settle(&mut self, now_ns: u64, cfg: &EstimatorConfig, out: &mut Outcome, closing: bool) {
        let due = self
            .pending
            .front()
            .is_some_and(|i| now_ns.saturating_sub(i.ts_ns) >= cfg.pending_window_ns);
        if closing || due {
            self.resolve(out, true, closing);
        }
        if self.stream.open
            && (closing || now_ns.saturating_sub(self.last_ingress_ns) >= cfg.stream_idle_ns)
        {
            self.close_stream(out);
        }
    }

    fn close_stream(&mut self, out: &mut Outcome) {
        self.stream = Stream::default();
        out.stream_delta -= 1;
    }

    /// Judges the pending items. `final_` (window passed, or closing): an unknown protocol
    /// is HTTP/1.1 by now, since every HTTP/2 client acks the server's SETTINGS at once.
    fn resolve(&mut self, out: &mut Outcome, final_: bool, closing: bool) {
        if self.protocol == Protocol::Unknown {
            if !final_ {
                return;
            }
            self.protocol = Protocol::Http1;
        }
        let items: Vec<Item> = self.pending.drain(..).collect();
        match self.protocol {
            Protocol::Http2 => self.resolve_h2(&items, closing, out),
            _ => {
                for item in items {
                    // One request per turn: the first data record after a response.
                    if self.counted_turn != Some(item.turn) {
                        self.counted_turn = Some(item.turn);
                        self.count(item.ts_ns, 1, out);
                    }
                }
            }
        }
    }

    /// `closing`: a 17-byte record nothing answered before the close was a GOAWAY.
    fn resolve_h2(&mut self, items: &[Item], closing: bool, out: &mut Outcome) {
        let requests: Vec<&Item> = items
            .iter()
            .filter(|i| match i.kind {
                ItemKind::Preface => false,
                ItemKind::Candidate => true,
                ItemKind::MaybePing { answered_by_ping } => match answered_by_ping {
                    Some(ping) => !ping,
                    None => !closing,
                },
            })
            .collect();
        let records: Vec<Headers> = requests
            .iter()
            .map(|i| Headers {
                plaintext: i.plaintext,
                first: i.first,
            })
            .collect();
        let answered = requests
            .first()
            .map_or(0, |i| self.responses - i.responses_before);
        let kept = self.response_sizes.len();
        let responses: Vec<u32> = self
            .response_sizes
            .iter()
            .skip(kept.saturating_sub(usize::try_from(answered).unwrap_or(usize::MAX)))
            .copied()
            .collect();
        // A unit the connection showed before holds while the records fit it: the
        // responses since this batch began include those to earlier requests in flight.
        let unit = match self.unit {
            Some(unit) if records.iter().all(|r| r.plaintext.is_multiple_of(unit)) => Some(unit),
            _ => coalescing::batch_unit(&records, &responses),
        };
        if unit.is_some() {
            self.unit = unit;
        }
        for (item, record) in requests.iter().zip(records) {
            let n = match (unit, self.unit) {
                (Some(unit), _) => coalescing::requests_in(record, unit),
                // A unit an earlier batch showed: only exact multiples go by it.
                (None, Some(unit)) if record.plaintext.is_multiple_of(unit) => {
                    u64::from(record.plaintext / unit)
                }
                _ => 1,
            };
            self.count(item.ts_ns, n, out);
        }
    }

    fn count(&mut self, ts_ns: u64, n: u64, out: &mut Outcome) {
        self.requests += n;
        out.requests.push((ts_ns, n));
    }
}

/// `p` is a SETTINGS frame with up to [`MAX_SETTINGS`] parameters, optionally followed by a
/// connection WINDOW_UPDATE (13 bytes): what clients send right after the preface magic.
fn settings_shaped(p: u32) -> bool {
    let settings = |q: u32| q >= 9 && (q - 9).is_multiple_of(6) && (q - 9) / 6 <= MAX_SETTINGS;
    settings(p) || (p >= 13 && settings(p - 13))
}
