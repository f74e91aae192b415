//! Reading the events the kernel programs put in the ring buffer.

use aya::maps::{MapData, RingBuf};
use collector_ebpf::event;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// One event from the kernel. The small ones are copied out of the ring buffer; a DNS
/// event's message (the most frequent events, and the largest) is read where it lies.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    Connect(event::Connect),
    Close(event::Close),
    Dns(DnsEvent<'a>),
    Segment(event::Segment),
}

/// A DNS event: its fixed fields copied, its message bytes read where they lie in the
/// ring buffer (records come in size classes, see [`event::DnsRecord`]).
#[derive(Debug, Clone)]
pub struct DnsEvent<'a> {
    pub header: event::Header,
    /// 6 for TCP (the payload starts with the 2-byte length), 17 for UDP.
    pub protocol: u32,
    /// Transport payload length of the packet.
    pub payload_len: u32,
    pub local_port: u32,
    /// The message bytes captured: at most the record's class.
    pub payload: &'a [u8],
}

impl<'a> DnsEvent<'a> {
    /// A DNS record of any size class.
    fn decode(bytes: &'a [u8]) -> Result<Self> {
        const PAYLOAD: usize = std::mem::offset_of!(event::Dns, payload);
        let bad = || Error::BadEvent {
            kind: event::DNS,
            len: bytes.len(),
        };
        let class = bytes.len().checked_sub(PAYLOAD).ok_or_else(bad)?;
        if !event::DNS_CLASSES.contains(&class) {
            return Err(bad());
        }
        let fixed: event::DnsRecord<0> = read(bytes)?;
        let captured = usize::try_from(fixed.captured).map_or(class, |n| n.min(class));
        Ok(Self {
            header: fixed.header,
            protocol: fixed.protocol,
            payload_len: fixed.payload_len,
            local_port: fixed.local_port,
            payload: &bytes[PAYLOAD..PAYLOAD + captured],
        })
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
            event::DNS => Self::Dns(DnsEvent::decode(bytes)?),
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
impl<const N: usize> Plain for event::DnsRecord<N> {}
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
    fn a_dns_event_reads_its_message_where_it_lies_aligned_or_not() {
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
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(&bytes);
        for record in [&bytes[..], &shifted[1..]] {
            let Ok(Event::Dns(d)) = Event::decode(record) else {
                panic!("a DNS record decodes");
            };
            assert_eq!(
                (d.header, d.protocol, d.payload_len, d.local_port, d.payload),
                (dns.header, 17, 3, 5353, &[1u8, 2, 3][..])
            );
            assert!(
                std::ptr::eq(
                    d.payload.as_ptr(),
                    record[std::mem::offset_of!(event::Dns, payload)..].as_ptr()
                ),
                "not copied"
            );
        }
    }

    #[test]
    fn a_dns_record_of_a_smaller_class_reads_as_far_as_captured() {
        let mut small = event::DnsRecord::<64> {
            header: header(event::DNS),
            protocol: 17,
            payload_len: 5,
            captured: 5,
            local_port: 5353,
            payload: [0; 64],
        };
        small.payload[..5].copy_from_slice(b"query");
        let bytes = bytes_of(&small);
        let Ok(Event::Dns(dns)) = Event::decode(&bytes) else {
            panic!("a 64-byte class record decodes");
        };
        assert_eq!(
            (dns.header, dns.local_port, dns.payload),
            (small.header, 5353, &b"query"[..])
        );
        // A captured count beyond its class (a kernel/user mismatch) is cut to the class.
        small.captured = 200;
        let bytes = bytes_of(&small);
        let Ok(Event::Dns(dns)) = Event::decode(&bytes) else {
            panic!("decodes");
        };
        assert_eq!(dns.payload.len(), 64);
        // A length that is no class is an error, not a guess.
        assert!(matches!(
            Event::decode(&bytes[..bytes.len() - 8]),
            Err(Error::BadEvent {
                kind: event::DNS,
                ..
            })
        ));
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
