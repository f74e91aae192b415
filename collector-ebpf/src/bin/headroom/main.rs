//! Headroom's kernel programs. Attached at the cgroup v2 root, they see every socket on
//! the node and attribute its traffic to the socket's cgroup (a container or a node
//! service), which is what tells hostNetwork pods apart.
//!
//! Each entry point is thin: it calls a function returning `Option` and always returns
//! the value that lets the operation through. The programs only observe; they never drop.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod dns;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod socket;
#[cfg(target_arch = "bpf")]
mod tls;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext as _,
        helpers::{bpf_get_socket_cookie, bpf_skb_cgroup_id},
        macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, tracepoint},
        programs::{SkBuffContext, SockAddrContext, SockContext, TracePointContext},
    };
    use collector_ebpf::{
        Drop, EndpointKind, MapOp, SocketInfo, TlsCursor, TrafficKey,
        event::{self, MAX_RECORDS, Record, Segment},
    };

    use crate::{
        dns, exec, maps,
        packet::{self, Direction, IPPROTO_TCP},
        socket, tls,
    };

    /// Return value of cgroup hooks that lets the operation proceed.
    const ALLOW: i32 = 1;

    #[cgroup_sock_addr(connect4)]
    pub fn headroom_connect4(ctx: SockAddrContext) -> i32 {
        let _ = socket::on_connect::<false>(&ctx);
        ALLOW
    }

    #[cgroup_sock_addr(connect6)]
    pub fn headroom_connect6(ctx: SockAddrContext) -> i32 {
        let _ = socket::on_connect::<true>(&ctx);
        ALLOW
    }

    #[cgroup_sock_addr(sendmsg4)]
    pub fn headroom_sendmsg4(ctx: SockAddrContext) -> i32 {
        let _ = socket::on_sendmsg::<false>(&ctx);
        ALLOW
    }

    #[cgroup_sock_addr(sendmsg6)]
    pub fn headroom_sendmsg6(ctx: SockAddrContext) -> i32 {
        let _ = socket::on_sendmsg::<true>(&ctx);
        ALLOW
    }

    #[cgroup_sock(sock_release)]
    pub fn headroom_sock_release(ctx: SockContext) -> i32 {
        let _ = socket::on_release(&ctx);
        ALLOW
    }

    #[tracepoint]
    pub fn headroom_exec(ctx: TracePointContext) -> u32 {
        let _ = exec::on_exec(&ctx);
        0
    }

    #[cgroup_skb(egress)]
    pub fn headroom_skb_egress(ctx: SkBuffContext) -> i32 {
        let _ = on_packet(&ctx, Direction::Egress);
        ALLOW
    }

    #[cgroup_skb(ingress)]
    pub fn headroom_skb_ingress(ctx: SkBuffContext) -> i32 {
        let _ = on_packet(&ctx, Direction::Ingress);
        ALLOW
    }

    fn on_packet(ctx: &SkBuffContext, dir: Direction) -> Option<()> {
        let pkt = packet::measured(ctx, dir)?;
        // SAFETY: helpers reading this program's skb and its socket.
        let cgroup_id = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
        // The socket, unless finding the packet's kind looked it up already.
        let (cookie, mut info) = match pkt.socket {
            Some((cookie, info)) => (cookie, Some(info)),
            None => {
                // SAFETY: as above.
                let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
                (cookie, maps::SOCKETS.get_ptr_mut(cookie))
            }
        };
        // SAFETY: plain data reads of map values.
        let mut tgid = info.map(|i| unsafe { (*i).tgid }).unwrap_or(0);
        if info.is_none() {
            if let Some(closing) = unsafe { maps::CLOSING.get(cookie) } {
                // The last packets of a connection its process has closed.
                tgid = closing.tgid;
            } else if pkt.payload_len > 0
                && pkt.proto == IPPROTO_TCP
                && pkt.kind == EndpointKind::ApiServer as u32
            {
                info = adopt(cookie, cgroup_id, pkt.kind);
            }
        }
        let key = TrafficKey {
            cgroup_id,
            kind: pkt.kind,
            tgid,
        };
        // Payload bytes count once: a retransmitted segment's bytes were counted when it
        // was first sent. The socket's cursor for this direction knows what was seen.
        let seen = info.or_else(|| maps::CLOSING.get_ptr_mut(cookie));
        let new_bytes = match seen {
            Some(s) if pkt.proto == IPPROTO_TCP && pkt.payload_len > 0 => {
                // SAFETY: a map value; only this socket's packets in this direction touch
                // this cursor.
                let cursor = unsafe { &mut (*s).tls[dir.index()] };
                let new = tls::new_bytes(cursor, &pkt);
                if info.is_none() || pkt.kind != EndpointKind::ApiServer as u32 {
                    // No record following here (tls::follow advances the cursor itself).
                    tls::advance(cursor, &pkt);
                }
                new
            }
            _ => pkt.payload_len,
        };
        let payload = u64::from(new_bytes);
        // DNS is counted from its messages (user space parses every one); bytes and
        // packets of DNS sockets are read by nothing, so its packets skip the map.
        if pkt.kind == EndpointKind::ApiServer as u32 {
            maps::with_counters(&key, |c| match dir {
                Direction::Egress => {
                    c.sent_bytes += payload;
                    c.sent_packets += 1;
                }
                Direction::Ingress => {
                    c.received_bytes += payload;
                    c.received_packets += 1;
                }
            });
        }
        if pkt.payload_len == 0 {
            return Some(());
        }
        let owner = SocketInfo {
            cgroup_id,
            tgid,
            kind: pkt.kind,
            comm: [0; 16],
            tls: [TlsCursor::default(); 2],
        };
        let header = socket::header(event::SEGMENT, dir.event_code(), &owner, cookie);
        if pkt.kind == EndpointKind::Dns as u32 {
            dns::emit(
                ctx,
                &pkt,
                event::Header {
                    kind: event::DNS,
                    ..header
                },
            );
        } else if pkt.proto == IPPROTO_TCP {
            // SAFETY: the socket table value stays valid while we hold no other reference;
            // only this socket's packets in this direction touch this cursor.
            let cursor = unsafe { &mut (*info?).tls[dir.index()] };
            let mut ev = Segment {
                header,
                payload_len: pkt.payload_len,
                records: 0,
                records_beyond: 0,
                desync: 0,
                record: [Record::default(); MAX_RECORDS],
            };
            if let tls::Followed::New = tls::follow(ctx, &pkt, cursor, &mut ev)
                && maps::EVENTS
                    .output::<Segment>(ev, maps::wakeup_flags())
                    .is_err()
            {
                maps::count_drop(Drop::EventLost);
            }
        }
        Some(())
    }

    /// A socket the collector did not see connect (opened before it started): track it
    /// from here, without an owning process, and find record boundaries by resyncing.
    fn adopt(cookie: u64, cgroup_id: u64, kind: u32) -> Option<*mut SocketInfo> {
        let lost = TlsCursor {
            lost: 1,
            ..TlsCursor::default()
        };
        let info = SocketInfo {
            cgroup_id,
            tgid: 0,
            kind,
            comm: [0; 16],
            tls: [lost; 2],
        };
        // Another CPU may adopt the same socket at once; the entry is created only once.
        if maps::SOCKETS.insert(cookie, info, maps::CREATE).is_ok() {
            maps::count_op(MapOp::SocketCreated);
        }
        let adopted = maps::SOCKETS.get_ptr_mut(cookie);
        if adopted.is_none() {
            maps::count_drop(Drop::SocketInsert);
        }
        adopted
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
