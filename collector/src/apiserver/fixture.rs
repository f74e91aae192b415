//! Reads the tap fixtures (`fixtures/README.md`) and replays them as kernel events.
use collector_ebpf::{EndpointKind, event};

/// One connection's ground truth from a fixture.
#[derive(Debug, Default)]
pub struct Truth {
    pub id: u64,
    pub requests: Vec<u64>,
    /// (start, end) of watch responses, µs.
    pub watches: Vec<(u64, Option<u64>)>,
    pub closed_us: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
pub enum Ev {
    Connect(event::Connect),
    Segment(event::Segment),
    Close(event::Close),
}

impl Ev {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Self::Connect(e) => e.header.ts_ns,
            Self::Segment(e) => e.header.ts_ns,
            Self::Close(e) => e.header.ts_ns,
        }
    }
}

#[derive(Debug, Default)]
pub struct Fixture {
    pub pattern: String,
    pub truth: Vec<Truth>,
    /// All connections' events merged in time order.
    pub events: Vec<Ev>,
}

impl Fixture {
    pub fn requests(&self) -> u64 {
        self.truth.iter().map(|t| t.requests.len() as u64).sum()
    }
}

pub const CGROUP: u64 = 4242;
pub const TGID: u32 = 77;

fn header(kind: u32, direction: u32, us: u64, cookie: u64) -> event::Header {
    event::Header {
        kind,
        direction,
        // Offset so no event sits at 0 (0 means "never" in places).
        ts_ns: 1_000_000_000 + us * 1_000,
        cgroup_id: CGROUP,
        cookie,
        tgid: TGID,
        endpoint_kind: EndpointKind::ApiServer as u32,
    }
}

pub fn us_to_ns(us: u64) -> u64 {
    1_000_000_000 + us * 1_000
}

/// Parses a fixture; panics with the line on malformed input (fixtures are ours).
pub fn parse(text: &str) -> Fixture {
    let mut fx = Fixture::default();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> u64 {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("line {}: field {i} not a number: {line}", n + 1))
        };
        match fields.first().copied() {
            None | Some("#") => {}
            Some("pattern") => fx.pattern = fields[1..].join(" "),
            Some("command") => {}
            Some("conn") => {
                let (id, open) = (num(1), num(3));
                fx.truth.push(Truth {
                    id,
                    ..Truth::default()
                });
                fx.events.push(Ev::Connect(event::Connect {
                    header: header(event::CONNECT, 0, open, id),
                    comm: *b"fixture\0\0\0\0\0\0\0\0\0",
                    protocol: 6,
                    reserved: 0,
                }));
            }
            Some("seg") => {
                let (id, ts, len) = (num(1), num(2), num(4));
                let direction = match fields[3] {
                    "e" => event::EGRESS,
                    "i" => event::INGRESS,
                    other => panic!("line {}: direction {other}", n + 1),
                };
                let listed: Vec<(u8, u16)> = if fields[5] == "-" {
                    Vec::new()
                } else {
                    fields[5]
                        .split(',')
                        .map(|r| {
                            let (t, l) = r.split_once(':').expect("type:length");
                            (
                                t.parse().expect("record type"),
                                l.parse().expect("record length"),
                            )
                        })
                        .collect()
                };
                let mut record = [event::Record::default(); event::MAX_RECORDS];
                for (slot, &(content_type, length)) in record.iter_mut().zip(&listed) {
                    *slot = event::Record {
                        content_type,
                        reserved: 0,
                        length,
                    };
                }
                let shown = listed.len().min(event::MAX_RECORDS);
                fx.events.push(Ev::Segment(event::Segment {
                    header: header(event::SEGMENT, direction, ts, id),
                    payload_len: u32::try_from(len).expect("segment length"),
                    records: shown as u32,
                    records_beyond: (listed.len() - shown) as u32,
                    desync: 0,
                    record,
                }));
            }
            Some("req") => {
                let (id, ts) = (num(1), num(2));
                let truth = truth_mut(&mut fx.truth, id);
                truth.requests.push(ts);
                if fields.get(4) == Some(&"watch") {
                    truth.watches.push((ts, None));
                }
            }
            Some("watchend") => {
                let (id, ts) = (num(1), num(2));
                let truth = truth_mut(&mut fx.truth, id);
                if let Some(w) = truth.watches.iter_mut().find(|w| w.1.is_none()) {
                    w.1 = Some(ts);
                }
            }
            Some("close") => {
                let (id, ts) = (num(1), num(2));
                truth_mut(&mut fx.truth, id).closed_us = Some(ts);
                fx.events.push(Ev::Close(event::Close {
                    header: header(event::CLOSE, 0, ts, id),
                }));
            }
            Some(other) => panic!("line {}: unknown line kind {other}", n + 1),
        }
    }
    // Stable: a connection's events keep their order when times tie.
    fx.events.sort_by_key(Ev::ts_ns);
    fx
}

fn truth_mut(truth: &mut [Truth], id: u64) -> &mut Truth {
    truth
        .iter_mut()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("connection {id} used before its conn line"))
}
