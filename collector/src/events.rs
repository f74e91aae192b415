//! Reading the events the kernel programs put in the ring buffer.
use std::{ops::Deref, task::Poll, time::Duration};

use aya::maps::{MapData, RingBuf};
use collector_ebpf::event;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// One event from the kernel. The small ones are copied out of the ring buffer; a DNS
/// event (the most frequent, and the largest) is read where it lies in the buffer.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Connect(event::Connect),
    Close(event::Close),
    Dns(DnsEvent<'a>),
    Segment(event::Segment),
}

/// A DNS event where it lies in the ring buffer, or a copy if it is not aligned there
/// (ring buffer records always are; the copy is a fallback, not a path taken).
#[derive(Debug, Clone)]
pub enum DnsEvent<'a> {
    InPlace(&'a event::Dns),
    Copied(Box<event::Dns>),
}

impl Deref for DnsEvent<'_> {
    type Target = event::Dns;

    fn deref(&self) -> &event::Dns {
        match self {
            Self::InPlace(dns) => dns,
            Self::Copied(dns) => dns,
        }
    }
}

impl<'a> Event<'a> {
    /// Decodes one ring buffer record. A record of an unknown kind or the wrong size is
    /// an error (the kernel object and this binary disagree), never a panic.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let header: event::Header = read(bytes)?;
        Ok(match header.kind {
            event::CONNECT => Self::Connect(read(bytes)?),
            event::CLOSE => Self::Close(read(bytes)?),
            event::DNS => Self::Dns(match view(bytes) {
                Some(dns) => DnsEvent::InPlace(dns),
                None => DnsEvent::Copied(Box::new(read(bytes)?)),
            }),
            event::SEGMENT => Self::Segment(read(bytes)?),
            kind => {
                return Err(Error::BadEvent {
                    kind,
                    len: bytes.len(),
                });
            }
        })
    }

    pub fn header(&self) -> &event::Header {
        match self {
            Self::Connect(e) => &e.header,
            Self::Close(e) => &e.header,
            Self::Dns(e) => &e.header,
            Self::Segment(e) => &e.header,
        }
    }
}

/// How long after its timestamp an event is surely in its ring: a program stamps an
/// event and submits it microseconds later. Events younger than this wait for the next
/// drain, so that one still being written on another CPU is not overtaken.
pub const SETTLE: Duration = Duration::from_millis(5);

/// The cut for [`Merge::drain`] now: events stamped before it have settled.
pub fn settled_cut() -> u64 {
    monotonic_ns().saturating_sub(SETTLE.as_nanos() as u64)
}

/// Events copied out of several rings, handed on in timestamp order. Each CPU writes
/// to its own ring (one shared ring's lock costs more than the copy), so events of one
/// exchange — a DNS query sent on one CPU, its answer received on another — can be in
/// different rings; handing them on by timestamp keeps the query first.
#[derive(Debug, Default)]
pub struct Merge {
    /// The records' bytes, each starting on a word (events are read in place from here).
    words: Vec<u64>,
    records: Vec<Record>,
    /// Buffers reused for what stays after a release.
    spare_words: Vec<u64>,
    spare_records: Vec<Record>,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    ts_ns: u64,
    at: usize,
    len: usize,
}

impl Merge {
    /// Takes every event now in `rings` and hands on, oldest first, those stamped
    /// before `cut_ns` ([`settled_cut`]; `u64::MAX` for all, as at shutdown); the others
    /// wait here for a later drain. Returns how many were handed on.
    ///
    /// Taking the rings one after another, an answer can reach a ring already taken
    /// after its query reached one not yet taken; an event settled at the cut was in
    /// its ring before the first was taken, so what is handed on is complete and in order.
    pub fn drain<'r>(
        &mut self,
        rings: impl ExactSizeIterator<Item = &'r mut RingBuf<MapData>>,
        cut_ns: u64,
        mut each: impl FnMut(Result<Event<'_>>),
    ) -> usize {
        let mut rings = rings;
        if rings.len() == 1
            && self.is_empty()
            && let Some(ring) = rings.next()
        {
            // One ring is in order already: read its events in place.
            let mut n = 0;
            while let Some(item) = ring.next() {
                each(Event::decode(&item));
                n += 1;
            }
            return n;
        }
        for ring in rings {
            self.take(ring);
        }
        self.release(cut_ns, each)
    }

    /// Copies every record now in `ring`. Returns how many.
    fn take(&mut self, ring: &mut RingBuf<MapData>) -> usize {
        let mut n = 0;
        while let Some(item) = ring.next() {
            self.push(&item);
            n += 1;
        }
        n
    }

    fn push(&mut self, bytes: &[u8]) {
        const TS: usize = std::mem::offset_of!(event::Header, ts_ns);
        // A record too short for a header sorts first; decoding it reports the error.
        let ts_ns = bytes
            .get(TS..TS + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes);
        let at = self.words.len();
        self.words.resize(at + bytes.len().div_ceil(8), 0);
        // SAFETY: the words from `at` were just made to hold at least `bytes.len()` bytes;
        // u64 words viewed as bytes have no invalid values.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.words.as_mut_ptr().add(at).cast::<u8>(),
                bytes.len(),
            );
        }
        self.records.push(Record {
            ts_ns,
            at,
            len: bytes.len(),
        });
    }

    /// Records copied and not yet handed on.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Hands on, oldest first, every record stamped before `cut_ns` (`u64::MAX`: all);
    /// keeps the others for a later release. Returns how many were handed on.
    fn release(&mut self, cut_ns: u64, mut each: impl FnMut(Result<Event<'_>>)) -> usize {
        // Each ring's records are already (nearly) in order, so the stable sort merges
        // a few runs.
        self.records.sort_by_key(|r| r.ts_ns);
        let due = self.records.partition_point(|r| r.ts_ns < cut_ns);
        for r in &self.records[..due] {
            // SAFETY: the record's bytes lie within `words` (see push).
            let bytes = unsafe {
                std::slice::from_raw_parts(self.words.as_ptr().add(r.at).cast::<u8>(), r.len)
            };
            each(Event::decode(bytes));
        }
        self.spare_words.clear();
        self.spare_records.clear();
        for r in &self.records[due..] {
            let at = self.spare_words.len();
            let words = r.len.div_ceil(8);
            self.spare_words
                .extend_from_slice(&self.words[r.at..r.at + words]);
            self.spare_records.push(Record { at, ..*r });
        }
        std::mem::swap(&mut self.words, &mut self.spare_words);
        std::mem::swap(&mut self.records, &mut self.spare_records);
        due
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime fills the timespec we pass.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts
    };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The event rings, registered with tokio so a task can wait until events arrive.
pub struct EventReader {
    rings: Vec<AsyncFd<RingBuf<MapData>>>,
    merge: Merge,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("rings", &self.rings.len())
            .field("waiting", &self.merge.len())
            .finish_non_exhaustive()
    }
}

impl EventReader {
    pub fn new(rings: Vec<RingBuf<MapData>>) -> std::io::Result<Self> {
        let rings = rings
            .into_iter()
            // SAFETY: each ring buffer owns its map fd, which stays open and the same for
            // as long as the RingBuf lives, i.e. as long as this AsyncFd owns it.
            .map(|ring| unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from))
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            rings,
            merge: Merge::default(),
        })
    }

    /// Hands every settled event (older than [`SETTLE`]) to `each`, without waiting.
    /// The kernel wakes the reader only when a ring fills up, so the loop calls this
    /// on a timer.
    pub fn drain_now(&mut self, each: impl FnMut(Result<Event<'_>>)) -> usize {
        self.merge.drain(
            self.rings.iter_mut().map(AsyncFd::get_mut),
            settled_cut(),
            each,
        )
    }

    /// Hands every event to `each`, settled or not (at shutdown).
    pub fn drain_all(&mut self, each: impl FnMut(Result<Event<'_>>)) -> usize {
        self.merge
            .drain(self.rings.iter_mut().map(AsyncFd::get_mut), u64::MAX, each)
    }

    /// Waits until the kernel has woken the reader for some ring, then hands every
    /// settled event to `each`. Returns how many were handed on.
    pub async fn next_batch(
        &mut self,
        each: impl FnMut(Result<Event<'_>>),
    ) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut woken = false;
            for ring in &mut self.rings {
                match ring.poll_read_ready_mut(cx) {
                    // Cleared before the drain below, so a wakeup during it is not lost.
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        woken = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if woken {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
        Ok(self.drain_now(each))
    }
}

/// Marker for the ABI's event structs: plain `repr(C)` integers and arrays of them.
trait Plain: Copy {}
impl Plain for event::Header {}
impl Plain for event::Connect {}
impl Plain for event::Close {}
impl Plain for event::Dns {}
impl Plain for event::Segment {}

fn read<T: Plain>(bytes: &[u8]) -> Result<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return Err(Error::BadEvent {
            kind: bytes.first().copied().map_or(0, u32::from),
            len: bytes.len(),
        });
    }
    // SAFETY: the length was checked; T is a repr(C) struct of integers (see Plain), for
    // which every bit pattern is valid; read_unaligned copes with the ring buffer's
    // 8-byte alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// `bytes` as a `T` in place, when they are long enough and aligned for it (ring buffer
/// records are 8-byte aligned, which is all the event structs need).
fn view<T: Plain>(bytes: &[u8]) -> Option<&T> {
    let fits = bytes.len() >= std::mem::size_of::<T>()
        && bytes.as_ptr().align_offset(std::mem::align_of::<T>()) == 0;
    // SAFETY: the length and alignment were checked; T is a repr(C) struct of integers
    // (see Plain), for which every bit pattern is valid; the reference borrows `bytes`.
    fits.then(|| unsafe { &*bytes.as_ptr().cast::<T>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Plain>(value: &T) -> Vec<u8> {
        // SAFETY: test helper viewing a plain struct as bytes.
        unsafe {
            std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn header(kind: u32) -> event::Header {
        event::Header {
            kind,
            direction: event::EGRESS,
            ts_ns: 5,
            cgroup_id: 9,
            cookie: 11,
            tgid: 13,
            endpoint_kind: 1,
        }
    }

    #[test]
    fn decodes_each_kind() {
        let close = event::Close {
            header: header(event::CLOSE),
        };
        assert!(matches!(Event::decode(&bytes_of(&close)), Ok(Event::Close(c)) if c == close));
        let connect = event::Connect {
            header: header(event::CONNECT),
            comm: *b"kubectl\0\0\0\0\0\0\0\0\0",
            protocol: 6,
            reserved: 0,
        };
        assert!(
            matches!(Event::decode(&bytes_of(&connect)), Ok(Event::Connect(c)) if c == connect)
        );
    }

    #[test]
    fn reads_a_dns_event_in_place_when_aligned_and_copies_it_otherwise() {
        let mut dns = event::Dns {
            header: header(event::DNS),
            protocol: 17,
            payload_len: 3,
            captured: 3,
            local_port: 5353,
            payload: [0; event::DNS_CAPTURE],
        };
        dns.payload[..3].copy_from_slice(&[1, 2, 3]);
        let bytes = bytes_of(&dns);
        // A buffer of u64s is 8-byte aligned, as ring buffer records are.
        let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
        // SAFETY: viewing the u64 buffer as bytes, within its length.
        let aligned = unsafe {
            std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
        };
        aligned[..bytes.len()].copy_from_slice(&bytes);
        match Event::decode(&aligned[..bytes.len()]) {
            Ok(Event::Dns(DnsEvent::InPlace(d))) => assert_eq!(*d, dns),
            other => panic!("expected a borrowed DNS event, got {other:?}"),
        }
        aligned[1..=bytes.len()].copy_from_slice(&bytes);
        match Event::decode(&aligned[1..=bytes.len()]) {
            Ok(Event::Dns(DnsEvent::Copied(d))) => assert_eq!(*d, dns),
            other => panic!("expected a copied DNS event, got {other:?}"),
        }
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let close = event::Close {
            header: header(event::SEGMENT),
        };
        // A header that claims a Segment but is only as long as a Close.
        assert!(matches!(
            Event::decode(&bytes_of(&close)),
            Err(Error::BadEvent { .. })
        ));
        let unknown = event::Close { header: header(99) };
        assert!(matches!(
            Event::decode(&bytes_of(&unknown)),
            Err(Error::BadEvent { kind: 99, .. })
        ));
        assert!(Event::decode(&[1, 2, 3]).is_err());
    }

    fn dns_at(ts_ns: u64, cookie: u64) -> Vec<u8> {
        let mut dns: event::Dns = read(&vec![0u8; std::mem::size_of::<event::Dns>()]).unwrap();
        dns.header = event::Header {
            ts_ns,
            cookie,
            ..header(event::DNS)
        };
        bytes_of(&dns)
    }

    /// (ts, cookie) of each event a release hands on, in order.
    fn release(merge: &mut Merge, cut_ns: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        merge.release(cut_ns, |ev| {
            let ev = ev.expect("decodable");
            assert!(
                matches!(&ev, Event::Dns(DnsEvent::InPlace(_))),
                "read in place from the word-aligned copy"
            );
            out.push((ev.header().ts_ns, ev.header().cookie));
        });
        out
    }

    #[test]
    fn events_of_several_rings_are_handed_on_in_time_order_once_settled() {
        let mut merge = Merge::default();
        // Ring 0 was taken first: a query (ts 10) and a later one (ts 40); ring 1 then
        // held the answer to the first (ts 20) and one still being written at the cut.
        for (ts, cookie) in [(10, 1), (40, 2), (20, 1), (35, 3), (60, 4)] {
            merge.push(&dns_at(ts, cookie));
        }
        assert_eq!(release(&mut merge, 38), [(10, 1), (20, 1), (35, 3)]);
        assert_eq!(merge.len(), 2, "the unsettled ones wait");
        // The next drain brings an event older than those waiting.
        merge.push(&dns_at(45, 5));
        merge.push(&dns_at(41, 6));
        assert_eq!(release(&mut merge, 50), [(40, 2), (41, 6), (45, 5)]);
        assert_eq!(release(&mut merge, u64::MAX), [(60, 4)]);
        assert!(merge.is_empty());
    }

    #[test]
    fn a_short_record_in_a_merge_is_an_error_not_a_panic() {
        let mut merge = Merge::default();
        merge.push(&dns_at(5, 1));
        merge.push(&[1, 0, 0]);
        let mut results = Vec::new();
        merge.release(u64::MAX, |ev| results.push(ev.map(|e| e.header().ts_ns)));
        assert!(
            matches!(results[0], Err(Error::BadEvent { len: 3, .. })),
            "{results:?}"
        );
        assert!(matches!(results[1], Ok(5)), "{results:?}");
    }
}
