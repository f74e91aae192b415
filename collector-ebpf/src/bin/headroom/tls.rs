//! Follows TLS record boundaries in one direction of a TCP stream, so user space can see
//! the record pattern (types and sizes) without decrypting anything. The cursor lives in
//! the socket table; retransmitted data is skipped; when the cursor loses its place it
//! waits for a segment that starts with a plausible record header.
use aya_ebpf::programs::SkBuffContext;
use collector_ebpf::{
    Drop, TlsCursor,
    event::{MAX_RECORDS, Record, Segment},
};

use crate::{maps, packet::Packet};

/// Record headers looked at per segment (GSO segments can carry several records).
const MAX_HEADERS: u32 = 32;
/// Largest TLS record body: 2^14 plaintext plus expansion.
const MAX_RECORD: u16 = 16_384 + 2_048;

/// Result of following one segment.
pub enum Followed {
    /// New data: `ev` has its records filled in.
    New,
    /// Data already seen (a retransmission): nothing to report.
    Retransmission,
}

#[inline(always)]
fn plausible(h: &[u8; 5]) -> bool {
    (20..=24).contains(&h[0])
        && h[1] == 3
        && h[2] <= 4
        && u16::from_be_bytes([h[3], h[4]]) <= MAX_RECORD
}

/// Bytes of this segment not seen before in this direction (all of it for the first
/// segment or after a gap; none for a retransmission; the new tail of a partial overlap).
#[inline(always)]
pub fn new_bytes(cur: &TlsCursor, pkt: &Packet) -> u32 {
    if cur.started == 0 {
        return pkt.payload_len;
    }
    if (pkt.seq.wrapping_sub(cur.next_seq) as i32) >= 0 {
        return pkt.payload_len;
    }
    let beyond = pkt
        .seq
        .wrapping_add(pkt.payload_len)
        .wrapping_sub(cur.next_seq) as i32;
    if beyond > 0 { beyond as u32 } else { 0 }
}

/// Moves the cursor past this segment without looking for records (sockets whose records
/// are not followed: DNS over TCP, connections already released).
#[inline(always)]
pub fn advance(cur: &mut TlsCursor, pkt: &Packet) {
    let end = pkt.seq.wrapping_add(pkt.payload_len);
    if cur.started == 0 || (end.wrapping_sub(cur.next_seq) as i32) > 0 {
        cur.started = 1;
        cur.next_seq = end;
    }
}

pub fn follow(
    ctx: &SkBuffContext,
    pkt: &Packet,
    cur: &mut TlsCursor,
    ev: &mut Segment,
) -> Followed {
    if cur.started == 0 {
        cur.started = 1;
        cur.next_seq = pkt.seq;
        cur.to_next_header = 0;
    } else {
        let ahead = pkt.seq.wrapping_sub(cur.next_seq) as i32;
        if ahead < 0 {
            let end = pkt.seq.wrapping_add(pkt.payload_len);
            if (end.wrapping_sub(cur.next_seq) as i32) <= 0 {
                return Followed::Retransmission;
            }
            cur.lost = 1; // partly old, partly new: rare; resynchronise
        } else if ahead > 0 {
            cur.lost = 1; // a gap: a segment was not seen
        }
    }
    let mut off = cur.to_next_header;
    if cur.lost != 0 {
        let starts_with_header = ctx
            .load::<[u8; 5]>(pkt.payload_at as usize)
            .is_ok_and(|h| plausible(&h));
        if starts_with_header {
            cur.lost = 0;
            off = 0;
        } else {
            ev.desync = 1;
        }
    }
    if cur.lost == 0 {
        let mut n = 0usize;
        for _ in 0..MAX_HEADERS {
            if off >= pkt.payload_len {
                break;
            }
            let header = if off + 5 <= pkt.payload_len {
                ctx.load::<[u8; 5]>((pkt.payload_at + off) as usize)
                    .ok()
                    .filter(plausible)
            } else {
                None // a header split across segments: resynchronise later
            };
            let Some(h) = header else {
                cur.lost = 1;
                ev.desync = 1;
                break;
            };
            let length = u16::from_be_bytes([h[3], h[4]]);
            if let Some(slot) = ev.record.get_mut(n) {
                *slot = Record {
                    content_type: h[0],
                    reserved: 0,
                    length,
                };
                n += 1;
            } else {
                ev.records_beyond += 1;
            }
            off += 5 + u32::from(length);
        }
        if cur.lost == 0 && off < pkt.payload_len {
            cur.lost = 1; // more headers than we look at
            ev.desync = 1;
        }
        ev.records = n.min(MAX_RECORDS) as u32;
    }
    if ev.desync != 0 {
        maps::count_drop(Drop::TlsDesync);
    }
    cur.to_next_header = if cur.lost == 0 {
        off - pkt.payload_len
    } else {
        0
    };
    cur.next_seq = pkt.seq.wrapping_add(pkt.payload_len);
    Followed::New
}
