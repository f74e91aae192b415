//! The socket table: who owns each socket to a measured endpoint. Filled in hooks that
//! run in the owning task (connect, sendmsg), read by the packet hooks, which may run in
//! softirq context with no task, and emptied when the socket is released.
use core::{
    ffi::c_void,
    ptr::{addr_of, read_volatile},
};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_EXIST, bpf_sock_addr},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    programs::{SockAddrContext, SockContext},
};
use collector_ebpf::{
    Drop, EndpointKey, MapOp, SocketInfo, TlsCursor, TrafficKey,
    event::{self, Header},
};

use crate::maps::{self, CLOSING, EVENTS, SOCKETS};

const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;

/// The endpoint a connect/sendmsg goes to, read from the hook's context. Fields are
/// read with volatile loads straight off the context pointer: the verifier only allows
/// context accesses at constant offsets, which LLVM may otherwise fold into pointer maths.
#[inline(always)]
fn destination<const V6: bool>(sa: *const bpf_sock_addr) -> EndpointKey {
    // SAFETY: `sa` is the program's context; each field read is a plain u32 load.
    unsafe {
        // user_port holds the port in network byte order in its low 16 bits.
        let port = u16::from_be(read_volatile(addr_of!((*sa).user_port)) as u16);
        if V6 {
            let a = read_volatile(addr_of!((*sa).user_ip6[0])).to_ne_bytes();
            let b = read_volatile(addr_of!((*sa).user_ip6[1])).to_ne_bytes();
            let c = read_volatile(addr_of!((*sa).user_ip6[2])).to_ne_bytes();
            let d = read_volatile(addr_of!((*sa).user_ip6[3])).to_ne_bytes();
            EndpointKey::v6(
                [
                    a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0],
                    d[1], d[2], d[3],
                ],
                port,
            )
        } else {
            EndpointKey::v4(read_volatile(addr_of!((*sa).user_ip4)).to_ne_bytes(), port)
        }
    }
}

#[inline(always)]
fn socket_type(sa: *const bpf_sock_addr) -> u32 {
    // SAFETY: as in destination.
    unsafe { read_volatile(addr_of!((*sa).type_)) }
}

/// `connect()` (TCP or UDP) to a measured endpoint: remember the owner, count the
/// connect for stream sockets, tell user space.
pub fn on_connect<const V6: bool>(ctx: &SockAddrContext) -> Option<()> {
    let protocol = match socket_type(ctx.sock_addr) {
        SOCK_STREAM => 6,
        SOCK_DGRAM => 17,
        _ => return None,
    };
    let kind = maps::endpoint_kind(&destination::<V6>(ctx.sock_addr))?;
    let info = remember(ctx.as_ptr(), kind)?;
    if protocol == 6 {
        let key = TrafficKey {
            cgroup_id: info.cgroup_id,
            kind,
            tgid: info.tgid,
        };
        maps::with_counters(&key, |c| c.connects += 1);
    }
    emit_connect(&info, cookie(ctx.as_ptr()), protocol);
    Some(())
}

/// `sendmsg()` on an unconnected UDP socket (connected ones went through connect).
pub fn on_sendmsg<const V6: bool>(ctx: &SockAddrContext) -> Option<()> {
    if socket_type(ctx.sock_addr) != SOCK_DGRAM {
        return None;
    }
    // Most datagrams (a DNS server's answers among them) go to no measured port: the
    // bitmap says so without a hash lookup.
    let to = destination::<V6>(ctx.sock_addr);
    if !maps::port_measured(to.port) {
        return None;
    }
    // A client sends query after query on one socket: once it is known, a lookup by
    // its 8-byte cookie ends the hook before the endpoint lookup (a 20-byte key, two
    // lookups when only the any-address entry matches). The outcome is the same in
    // either order: nothing more happens for a known socket.
    let cookie = cookie(ctx.as_ptr());
    if SOCKETS.get_ptr(cookie).is_some() {
        return Some(());
    }
    let kind = maps::endpoint_kind(&to)?;
    let info = remember(ctx.as_ptr(), kind)?;
    emit_connect(&info, cookie, 17);
    Some(())
}

/// A socket is released: forget it and tell user space if it was measured.
pub fn on_release(ctx: &SockContext) -> Option<()> {
    let cookie = cookie(ctx.as_ptr());
    // SAFETY: plain data read.
    let info = unsafe { SOCKETS.get(cookie) }.copied()?;
    if SOCKETS.remove(cookie).is_ok() {
        maps::count_op(MapOp::SocketRemoved);
    }
    // Keep the owner a little longer for the connection's last packets.
    let _ = CLOSING.insert(cookie, info, 0);
    let header = header(event::CLOSE, 0, &info, cookie);
    if EVENTS
        .output::<event::Close>(event::Close { header }, maps::wakeup_flags())
        .is_err()
    {
        maps::count_drop(Drop::EventLost);
    }
    Some(())
}

#[inline(always)]
fn cookie(ctx: *mut c_void) -> u64 {
    // SAFETY: ctx is this program's context, whose socket the helper reads.
    unsafe { bpf_get_socket_cookie(ctx) }
}

/// Records the current task as the owner of the socket in `ctx`.
#[inline(always)]
fn remember(ctx: *mut c_void, kind: u32) -> Option<SocketInfo> {
    let info = SocketInfo {
        // SAFETY: helper without preconditions.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        kind,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        tls: [TlsCursor::default(); 2],
    };
    let cookie = cookie(ctx);
    if SOCKETS.insert(cookie, info, maps::CREATE).is_ok() {
        maps::count_op(MapOp::SocketCreated);
    } else if SOCKETS.insert(cookie, info, u64::from(BPF_EXIST)).is_err() {
        // Neither new nor there (evicted in between): the socket goes unowned.
        maps::count_drop(Drop::SocketInsert);
        return None;
    }
    // (An existing entry, e.g. a UDP socket connected again, takes the new owner.)
    Some(info)
}

fn emit_connect(info: &SocketInfo, cookie: u64, protocol: u32) {
    let ev = event::Connect {
        header: header(event::CONNECT, 0, info, cookie),
        comm: info.comm,
        protocol,
        reserved: 0,
    };
    if EVENTS
        .output::<event::Connect>(ev, maps::wakeup_flags())
        .is_err()
    {
        maps::count_drop(Drop::EventLost);
    }
}

#[inline(always)]
pub fn header(kind: u32, direction: u32, info: &SocketInfo, cookie: u64) -> Header {
    Header {
        kind,
        direction,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: info.cgroup_id,
        cookie,
        tgid: info.tgid,
        endpoint_kind: info.kind,
    }
}
