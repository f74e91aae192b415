//! Reading IP and transport headers of the packet a cgroup_skb program sees (skb data
//! starts at the network header). The fast path — a packet to or from no measured
//! endpoint — reads the few fields needed for the endpoint lookup and stops there.
use aya_ebpf::programs::SkBuffContext;
use collector_ebpf::EndpointKey;

use crate::maps;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    pub const fn index(self) -> usize {
        match self {
            Self::Egress => 0,
            Self::Ingress => 1,
        }
    }

    pub const fn event_code(self) -> u32 {
        match self {
            Self::Egress => collector_ebpf::event::EGRESS,
            Self::Ingress => collector_ebpf::event::INGRESS,
        }
    }
}

/// A packet to or from a measured endpoint.
pub struct Packet {
    pub kind: u32,
    pub proto: u8,
    /// Offset of the transport payload and its length.
    pub payload_at: u32,
    pub payload_len: u32,
    pub local_port: u16,
    /// TCP sequence number of the first payload byte (0 for UDP).
    pub seq: u32,
}

/// Parses the packet if it goes to (egress) or comes from (ingress) a measured endpoint.
#[inline(always)]
pub fn measured(ctx: &SkBuffContext, dir: Direction) -> Option<Packet> {
    let first: u8 = ctx.load(0).ok()?;
    let (proto, l4, remote_addr) = match first >> 4 {
        4 => {
            let proto: u8 = ctx.load(9).ok()?;
            let at = if dir == Direction::Egress { 16 } else { 12 };
            let addr: [u8; 4] = ctx.load(at).ok()?;
            let [a, b, c, d] = addr;
            let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d];
            (proto, u32::from(first & 0x0f) * 4, mapped)
        }
        6 => {
            // Extension headers are not followed: API server and DNS traffic has none.
            let proto: u8 = ctx.load(6).ok()?;
            let at = if dir == Direction::Egress { 24 } else { 8 };
            let addr: [u8; 16] = ctx.load(at).ok()?;
            (proto, 40, addr)
        }
        _ => return None,
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    // Source and destination ports are the first two u16 of both TCP and UDP headers.
    let ports: [u8; 4] = ctx.load(l4 as usize).ok()?;
    let (src, dst) = (
        u16::from_be_bytes([ports[0], ports[1]]),
        u16::from_be_bytes([ports[2], ports[3]]),
    );
    let (remote_port, local_port) = if dir == Direction::Egress {
        (dst, src)
    } else {
        (src, dst)
    };
    let kind = maps::endpoint_kind(&EndpointKey::v6(remote_addr, remote_port))?;

    let (header_len, seq) = if proto == IPPROTO_TCP {
        let seq: [u8; 4] = ctx.load(l4 as usize + 4).ok()?;
        let doff: u8 = ctx.load(l4 as usize + 12).ok()?;
        (u32::from(doff >> 4) * 4, u32::from_be_bytes(seq))
    } else {
        (8, 0)
    };
    let payload_at = l4 + header_len;
    Some(Packet {
        kind,
        proto,
        payload_at,
        payload_len: ctx.len().saturating_sub(payload_at),
        local_port,
        seq,
    })
}
