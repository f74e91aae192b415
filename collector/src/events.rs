//! Reading the events the kernel programs put in the ring buffer.
use std::ops::Deref;

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

/// Takes every event now in the ring buffer, decoded, in order.
pub fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(Result<Event<'_>>)) -> usize {
    let mut n = 0;
    while let Some(item) = ring.next() {
        each(Event::decode(&item));
        n += 1;
    }
    n
}

/// The ring buffer, registered with tokio so a task can wait until events arrive.
pub struct EventReader {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").finish_non_exhaustive()
    }
}

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd, which stays open and the same for as
        // long as the RingBuf lives, i.e. as long as this AsyncFd owns it.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(std::io::Error::from)?;
        Ok(Self { ring })
    }

    /// Hands every event now in the buffer to `each`, without waiting. The kernel wakes
    /// the reader only when the buffer fills up, so the loop calls this on a timer.
    pub fn drain_now(&mut self, each: impl FnMut(Result<Event<'_>>)) -> usize {
        drain(self.ring.get_mut(), each)
    }

    /// Waits until the kernel has put events in the buffer, then hands each to `each`.
    /// Returns how many were read.
    pub async fn next_batch(
        &mut self,
        each: impl FnMut(Result<Event<'_>>),
    ) -> std::io::Result<usize> {
        let mut guard = self.ring.readable_mut().await?;
        let n = drain(guard.get_inner_mut(), each);
        guard.clear_ready();
        Ok(n)
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
}
