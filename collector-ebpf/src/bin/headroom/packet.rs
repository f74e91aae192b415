//! Reading IP and transport headers of the packet a cgroup_skb program sees (skb data
//! starts at the network header). The fast path — a packet to or from no measured
//! endpoint — reads the few fields needed for the endpoint lookup and stops there.
use core::ptr::{addr_of, read_volatile};

use aya_ebpf::{EbpfContext as _, helpers::bpf_get_socket_cookie, programs::SkBuffContext};
use collector_ebpf::{EndpointKey, SocketInfo};

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
    /// The socket's cookie and table entry, when finding the packet's kind took them
    /// (a NAT-rewritten address), so that the caller need not look them up again.
    pub socket: Option<(u64, *mut SocketInfo)>,
}

/// Parses the packet if it goes to (egress) or comes from (ingress) a measured endpoint.
///
/// The fast path reads the headers straight from the linear packet data and checks the
/// remote port against the `PORTS` bitmap (an inlined array access) before any hash
/// lookup; packets whose headers are not linear take the slower helper-based reads.
#[inline(always)]
pub fn measured(ctx: &SkBuffContext, dir: Direction) -> Option<Packet> {
    let (proto, l4, remote_port, local_port) = match direct_ports(ctx, dir) {
        Some(found) => found,
        None => loaded_ports(ctx, dir)?,
    };
    if !maps::port_measured(remote_port) {
        return None;
    }
    let remote_addr = match direct_remote_addr(ctx, dir) {
        Some(addr) => addr,
        None => loaded_remote_addr(ctx, dir)?,
    };
    let (kind, socket) = match maps::endpoint_kind(&EndpointKey::v6(remote_addr, remote_port)) {
        Some(kind) => (kind, None),
        // NAT rewrote the destination before egress (kube-proxy's DNAT of a Service
        // address to a pod); connect/sendmsg saw the Service address and recorded the
        // socket. Replies come back with the Service address restored, and match above.
        None => {
            let (cookie, info) = recorded_socket(ctx)?;
            // SAFETY: a plain data read of a map value.
            (unsafe { (*info).kind }, Some((cookie, info)))
        }
    };

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
        socket,
    })
}

/// The packet's socket cookie and its entry in the socket table, if it has one.
#[inline(always)]
fn recorded_socket(ctx: &SkBuffContext) -> Option<(u64, *mut SocketInfo)> {
    // SAFETY: the helper reads this program's skb's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    maps::SOCKETS.get_ptr_mut(cookie).map(|info| (cookie, info))
}

/// (protocol, transport offset, remote port, local port) from the linear packet data, or
/// `None` when the headers are not in it (or the packet is neither TCP nor UDP).
#[inline(always)]
fn direct_ports(ctx: &SkBuffContext, dir: Direction) -> Option<(u8, u32, u16, u16)> {
    // SAFETY: data and data_end are context fields read at constant offsets; every
    // packet byte below is read only after checking it lies before data_end.
    unsafe {
        let skb = ctx.skb.skb;
        let data = read_volatile(addr_of!((*skb).data)) as usize;
        let end = read_volatile(addr_of!((*skb).data_end)) as usize;
        if data + 40 > end {
            return None;
        }
        let first = *(data as *const u8);
        let (proto, l4) = match first >> 4 {
            4 => (*((data + 9) as *const u8), usize::from(first & 0x0f) * 4),
            6 => (*((data + 6) as *const u8), 40),
            _ => return None,
        };
        if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
            return None;
        }
        if l4 > 60 || data + l4 + 4 > end {
            return None;
        }
        let ports = (data + l4) as *const [u8; 4];
        let p = *ports;
        let (src, dst) = (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        );
        Some(match dir {
            Direction::Egress => (proto, l4 as u32, dst, src),
            Direction::Ingress => (proto, l4 as u32, src, dst),
        })
    }
}

/// The remote address (IPv4 as IPv4-mapped) from the linear packet data, or `None` when
/// the network header is not in it.
#[inline(always)]
fn direct_remote_addr(ctx: &SkBuffContext, dir: Direction) -> Option<[u8; 16]> {
    // SAFETY: as in direct_ports; the 40 bytes checked cover either header's addresses.
    unsafe {
        let skb = ctx.skb.skb;
        let data = read_volatile(addr_of!((*skb).data)) as usize;
        let end = read_volatile(addr_of!((*skb).data_end)) as usize;
        if data + 40 > end {
            return None;
        }
        let first = *(data as *const u8);
        Some(if first >> 4 == 4 {
            let at = if dir == Direction::Egress { 16 } else { 12 };
            let [a, b, c, d] = *((data + at) as *const [u8; 4]);
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
        } else {
            let at = if dir == Direction::Egress { 24 } else { 8 };
            *((data + at) as *const [u8; 16])
        })
    }
}

/// The same as [`direct_remote_addr`] through `bpf_skb_load_bytes`.
#[inline(always)]
fn loaded_remote_addr(ctx: &SkBuffContext, dir: Direction) -> Option<[u8; 16]> {
    let first: u8 = ctx.load(0).ok()?;
    Some(if first >> 4 == 4 {
        let at = if dir == Direction::Egress { 16 } else { 12 };
        let [a, b, c, d]: [u8; 4] = ctx.load(at).ok()?;
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
    } else {
        let at = if dir == Direction::Egress { 24 } else { 8 };
        ctx.load::<[u8; 16]>(at).ok()?
    })
}

/// The same as [`direct_ports`] through `bpf_skb_load_bytes`, for non-linear headers.
#[inline(always)]
fn loaded_ports(ctx: &SkBuffContext, dir: Direction) -> Option<(u8, u32, u16, u16)> {
    let first: u8 = ctx.load(0).ok()?;
    let (proto, l4) = match first >> 4 {
        4 => (ctx.load::<u8>(9).ok()?, u32::from(first & 0x0f) * 4),
        6 => (ctx.load::<u8>(6).ok()?, 40),
        _ => return None,
    };
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return None;
    }
    let p: [u8; 4] = ctx.load(l4 as usize).ok()?;
    let (src, dst) = (
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    );
    Some(match dir {
        Direction::Egress => (proto, l4, dst, src),
        Direction::Ingress => (proto, l4, src, dst),
    })
}
