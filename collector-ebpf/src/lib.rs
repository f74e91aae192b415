//! The kernel/user ABI of Headroom's collector: map and program names, and the
//! `#[repr(C)]` keys and values both sides read and write.
//!
//! Every type here is `Copy`, has no implicit padding (reserved fields are explicit and
//! zero) and uses fixed-width integers, so the kernel programs and user space agree on
//! the bytes. User space enables the `user` feature to get `aya::Pod` impls.
#![no_std]

/// Names of the maps, as the kernel object exports them and user space looks them up.
pub mod map {
    /// `HashMap<EndpointKey, EndpointValue>`: the API server and DNS endpoints to measure.
    pub const ENDPOINTS: &str = "ENDPOINTS";
    /// `LruPerCpuHashMap<TrafficKey, TrafficCounters>`: traffic per cgroup and endpoint kind.
    pub const TRAFFIC: &str = "TRAFFIC";
    /// `PerCpuArray<u64>` indexed by [`crate::Drop`]: what the programs could not record.
    pub const DROPS: &str = "DROPS";
}

/// Names of the programs (their function names in the kernel object).
pub mod program {
    /// `cgroup/connect4`: counts TCP connects to a measured endpoint.
    pub const CONNECT4: &str = "headroom_connect4";
    /// `cgroup/connect6`: the same for IPv6 (and IPv4-mapped) sockets.
    pub const CONNECT6: &str = "headroom_connect6";
    /// `cgroup_skb/egress`: bytes and packets sent to a measured endpoint.
    pub const SKB_EGRESS: &str = "headroom_skb_egress";
    /// `cgroup_skb/ingress`: bytes and packets received from a measured endpoint.
    pub const SKB_INGRESS: &str = "headroom_skb_ingress";
}

/// Maximum entries of the maps; user space reports fill against these.
pub mod capacity {
    pub const ENDPOINTS: u32 = 256;
    pub const TRAFFIC: u32 = 16_384;
}

/// What a measured endpoint is.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    ApiServer = 1,
    Dns = 2,
}

impl EndpointKind {
    pub const ALL: [Self; 2] = [Self::ApiServer, Self::Dns];

    pub const fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::ApiServer),
            2 => Some(Self::Dns),
            _ => None,
        }
    }
}

/// Indexes of the `DROPS` array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// A traffic entry could not be created (map full and nothing to evict).
    TrafficInsert = 0,
}

impl Drop {
    pub const COUNT: u32 = 1;
}

/// An endpoint: an IPv6 address (IPv4 as IPv4-mapped `::ffff:a.b.c.d`) and a port.
/// `addr` is in network byte order, `port` in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 16],
    pub port: u16,
    pub reserved: u16,
}

impl EndpointKey {
    /// An IPv4 endpoint, `addr` as the four octets in order.
    pub const fn v4(addr: [u8; 4], port: u16) -> Self {
        let [a, b, c, d] = addr;
        Self {
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
            port,
            reserved: 0,
        }
    }

    /// An IPv6 endpoint.
    pub const fn v6(addr: [u8; 16], port: u16) -> Self {
        Self {
            addr,
            port,
            reserved: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// An [`EndpointKind`] as `u32`.
    pub kind: u32,
}

/// Traffic is kept per cgroup (a container, or a node service) and endpoint kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    /// cgroup v2 id: the inode number of the cgroup's directory.
    pub cgroup_id: u64,
    /// An [`EndpointKind`] as `u32`.
    pub kind: u32,
    pub reserved: u32,
}

/// Counters for one [`TrafficKey`], one copy per CPU; user space sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficCounters {
    /// `connect()` calls on stream sockets to the endpoint.
    pub connects: u64,
    /// Transport payload bytes sent to the endpoint.
    pub sent_bytes: u64,
    /// Transport payload bytes received from the endpoint.
    pub received_bytes: u64,
    /// Packets (GSO super-packets count once) sent.
    pub sent_packets: u64,
    /// Packets received.
    pub received_packets: u64,
}

impl TrafficCounters {
    /// Adds another CPU's copy.
    pub fn accumulate(&mut self, other: &Self) {
        self.connects += other.connects;
        self.sent_bytes += other.sent_bytes;
        self.received_bytes += other.received_bytes;
        self.sent_packets += other.sent_packets;
        self.received_packets += other.received_packets;
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these are repr(C), Copy, made of integers with no implicit padding, so
    // every bit pattern is valid.
    unsafe impl aya::Pod for super::EndpointKey {}
    unsafe impl aya::Pod for super::EndpointValue {}
    unsafe impl aya::Pod for super::TrafficKey {}
    unsafe impl aya::Pod for super::TrafficCounters {}
}

// The ABI must not change size by accident: a mismatch would corrupt maps silently.
const _: () = {
    assert!(core::mem::size_of::<EndpointKey>() == 20);
    assert!(core::mem::size_of::<EndpointValue>() == 4);
    assert!(core::mem::size_of::<TrafficKey>() == 16);
    assert!(core::mem::size_of::<TrafficCounters>() == 40);
};
