//! Headroom's kernel programs. Attached at the cgroup v2 root, they see every socket on
//! the node and attribute its traffic to the socket's cgroup (a container or a node
//! service), which is what tells hostNetwork pods apart.
//!
//! Each entry point is thin: it calls a `try_…` function and turns any error into the
//! value that lets the traffic through. The programs only observe; they never drop.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kernel {
    use aya_ebpf::{
        bindings::bpf_sock_addr,
        helpers::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
        macros::{cgroup_skb, cgroup_sock_addr, map},
        maps::{HashMap, LruPerCpuHashMap, PerCpuArray},
        programs::{SkBuffContext, SockAddrContext},
    };
    use collector_ebpf::{Drop, EndpointKey, EndpointValue, TrafficCounters, TrafficKey, capacity};

    // The static's name is the map's name in the object: it must equal collector_ebpf::map::*.
    #[map]
    static ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
        HashMap::with_max_entries(capacity::ENDPOINTS, 0);

    #[map]
    static TRAFFIC: LruPerCpuHashMap<TrafficKey, TrafficCounters> =
        LruPerCpuHashMap::with_max_entries(capacity::TRAFFIC, 0);

    #[map]
    static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);

    /// Return value of cgroup hooks that lets the operation proceed.
    const ALLOW: i32 = 1;
    const SOCK_STREAM: u32 = 1;
    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;

    /// Which way a packet goes relative to the local socket.
    #[derive(Clone, Copy)]
    enum Direction {
        Egress,
        Ingress,
    }

    #[cgroup_sock_addr(connect4)]
    pub fn headroom_connect4(ctx: SockAddrContext) -> i32 {
        let _ = try_connect(&ctx, false);
        ALLOW
    }

    #[cgroup_sock_addr(connect6)]
    pub fn headroom_connect6(ctx: SockAddrContext) -> i32 {
        let _ = try_connect(&ctx, true);
        ALLOW
    }

    #[cgroup_skb(egress)]
    pub fn headroom_skb_egress(ctx: SkBuffContext) -> i32 {
        let _ = try_skb(&ctx, Direction::Egress);
        ALLOW
    }

    #[cgroup_skb(ingress)]
    pub fn headroom_skb_ingress(ctx: SkBuffContext) -> i32 {
        let _ = try_skb(&ctx, Direction::Ingress);
        ALLOW
    }

    fn try_connect(ctx: &SockAddrContext, v6: bool) -> Result<(), ()> {
        // SAFETY: the kernel passes a valid bpf_sock_addr to this program type.
        let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
        if sa.type_ != SOCK_STREAM {
            return Ok(());
        }
        // user_port holds the port in network byte order in its low 16 bits.
        let port = u16::from_be(sa.user_port as u16);
        let key = if v6 {
            let w = sa.user_ip6;
            let mut addr = [0u8; 16];
            addr[0..4].copy_from_slice(&w[0].to_ne_bytes());
            addr[4..8].copy_from_slice(&w[1].to_ne_bytes());
            addr[8..12].copy_from_slice(&w[2].to_ne_bytes());
            addr[12..16].copy_from_slice(&w[3].to_ne_bytes());
            EndpointKey::v6(addr, port)
        } else {
            EndpointKey::v4(sa.user_ip4.to_ne_bytes(), port)
        };
        // SAFETY: HashMap values are plain data; a racing update only affects this read.
        let kind = unsafe { ENDPOINTS.get(key) }.ok_or(())?.kind;
        // SAFETY: helper without preconditions.
        let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
        with_counters(cgroup_id, kind, |c| c.connects += 1)
    }

    fn try_skb(ctx: &SkBuffContext, dir: Direction) -> Result<(), ()> {
        let first: u8 = ctx.load(0).map_err(|_| ())?;
        let (proto, l4, remote) = match first >> 4 {
            4 => {
                let ihl = usize::from(first & 0x0f) * 4;
                let proto: u8 = ctx.load(9).map_err(|_| ())?;
                let at = match dir {
                    Direction::Egress => 16,  // destination address
                    Direction::Ingress => 12, // source address
                };
                // Fixed-size loads: load_bytes may shrink its length to zero, which the
                // verifier rejects.
                let addr: [u8; 4] = ctx.load(at).map_err(|_| ())?;
                let mut mapped = [0u8; 16];
                mapped[10] = 0xff;
                mapped[11] = 0xff;
                mapped[12..16].copy_from_slice(&addr);
                (proto, ihl, mapped)
            }
            6 => {
                // Extension headers are not followed: API server and DNS traffic has none.
                let proto: u8 = ctx.load(6).map_err(|_| ())?;
                let at = match dir {
                    Direction::Egress => 24,
                    Direction::Ingress => 8,
                };
                let addr: [u8; 16] = ctx.load(at).map_err(|_| ())?;
                (proto, 40, addr)
            }
            _ => return Ok(()),
        };
        let header = match proto {
            IPPROTO_TCP => {
                let doff: u8 = ctx.load(l4 + 12).map_err(|_| ())?;
                usize::from(doff >> 4) * 4
            }
            IPPROTO_UDP => 8,
            _ => return Ok(()),
        };
        let port_at = match dir {
            Direction::Egress => l4 + 2, // destination port
            Direction::Ingress => l4,    // source port
        };
        let port = u16::from_be(ctx.load::<u16>(port_at).map_err(|_| ())?);
        let key = EndpointKey::v6(remote, port);
        // SAFETY: as in try_connect.
        let kind = unsafe { ENDPOINTS.get(key) }.ok_or(())?.kind;
        let payload = (ctx.len() as usize).saturating_sub(l4 + header) as u64;
        // SAFETY: helper without preconditions; skb->sk is the socket the hook runs for.
        let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
        with_counters(cgroup_id, kind, |c| match dir {
            Direction::Egress => {
                c.sent_bytes += payload;
                c.sent_packets += 1;
            }
            Direction::Ingress => {
                c.received_bytes += payload;
                c.received_packets += 1;
            }
        })
    }

    /// Applies `update` to this CPU's counters for (cgroup, kind), creating them if needed.
    #[inline(always)]
    fn with_counters(
        cgroup_id: u64,
        kind: u32,
        update: impl Fn(&mut TrafficCounters),
    ) -> Result<(), ()> {
        let key = TrafficKey {
            cgroup_id,
            kind,
            reserved: 0,
        };
        if let Some(counters) = TRAFFIC.get_ptr_mut(key) {
            // SAFETY: a per-CPU value; this program is the only writer on this CPU.
            update(unsafe { &mut *counters });
            return Ok(());
        }
        let mut fresh = TrafficCounters::default();
        update(&mut fresh);
        if TRAFFIC.insert(key, fresh, 0).is_err() {
            count_drop(Drop::TrafficInsert);
            return Err(());
        }
        Ok(())
    }

    fn count_drop(what: Drop) {
        if let Some(n) = DROPS.get_ptr_mut(what as u32) {
            // SAFETY: per-CPU slot, single writer on this CPU.
            unsafe { *n += 1 };
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

/// Host builds (clippy over the workspace) see an empty program.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
