//! Reading the events the kernel programs put in the ring buffer.
use aya::maps::{MapData, RingBuf};
use collector_ebpf::event;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result};

/// One event from the kernel, copied out of the ring buffer.
#[derive(Debug, Clone)]
pub enum Event {
    Connect(event::Connect),
    Close(event::Close),
    Dns(Box<event::Dns>),
    Segment(event::Segment),
}

impl Event {
    /// Decodes one ring buffer record. A record of an unknown kind or the wrong size is
    /// an error (the kernel object and this binary disagree), never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let header: event::Header = read(bytes)?;
        Ok(match header.kind {
            event::CONNECT => Self::Connect(read(bytes)?),
            event::CLOSE => Self::Close(read(bytes)?),
            event::DNS => Self::Dns(Box::new(read(bytes)?)),
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
pub fn drain(ring: &mut RingBuf<MapData>, mut each: impl FnMut(Result<Event>)) -> usize {
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
    pub fn drain_now(&mut self, each: impl FnMut(Result<Event>)) -> usize {
        drain(self.ring.get_mut(), each)
    }

    /// Waits until the kernel has put events in the buffer, then hands each to `each`.
    /// Returns how many were read.
    pub async fn next_batch(&mut self, each: impl FnMut(Result<Event>)) -> std::io::Result<usize> {
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
