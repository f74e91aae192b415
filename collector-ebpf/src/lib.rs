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
    /// `LruHashMap<u64 socket cookie, SocketInfo>`: sockets to measured endpoints.
    pub const SOCKETS: &str = "SOCKETS";
    /// `LruHashMap<u64 socket cookie, SocketInfo>`: released sockets, so the last packets
    /// of a closing connection (FIN, ACK) are still attributed to their process.
    pub const CLOSING: &str = "CLOSING";
    /// `Array<u64>` of [`crate::PORT_WORDS`] words: bit `port % 64` of word `port / 64` is
    /// set when some measured endpoint uses that port. Checked before the endpoint
    /// lookup so that most packets cost no hash lookup at all.
    pub const PORTS: &str = "PORTS";
    /// `RingBuf` of events (see [`crate::event`]) for user space.
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` indexed by [`crate::MapOp`]: entries the programs created in
    /// and removed from the LRU maps, from which user space counts their evictions.
    pub const MAP_OPS: &str = "MAP_OPS";
    /// `LruHashMap<u32 tgid, ExecPath>`: the path each process last executed, from the
    /// exec tracepoint, so a process is named by its executable even after it exited
    /// (the socket hooks only see the sending *thread's* 15-byte comm).
    pub const EXEC_PATHS: &str = "EXEC_PATHS";
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
    /// `cgroup/sendmsg4`: unconnected UDP (DNS) sends; records the sending process.
    pub const SENDMSG4: &str = "headroom_sendmsg4";
    /// `cgroup/sendmsg6`.
    pub const SENDMSG6: &str = "headroom_sendmsg6";
    /// `cgroup/sock_release`: a measured socket is closed.
    pub const SOCK_RELEASE: &str = "headroom_sock_release";
    /// `tracepoint/sched/sched_process_exec`: records the executable of each process.
    pub const EXEC: &str = "headroom_exec";
    /// The tracepoint [`EXEC`] attaches to: (category, name).
    pub const EXEC_TRACEPOINT: (&str, &str) = ("sched", "sched_process_exec");
}

/// Maximum entries of the maps; user space reports fill against these.
pub mod capacity {
    pub const ENDPOINTS: u32 = 256;
    /// Processes whose executable is remembered; the oldest execs are evicted first.
    pub const EXEC_PATHS: u32 = 8_192;
    pub const TRAFFIC: u32 = 16_384;
    pub const SOCKETS: u32 = 65_536;
    pub const CLOSING: u32 = 8_192;
    /// Bytes of the events ring buffer (a power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 4 << 20;
    /// Unread bytes in the ring buffer above which the kernel wakes user space at once.
    /// Below it user space is not woken per event: it drains on a short timer, which
    /// keeps a DNS-heavy node from waking the collector for every packet.
    pub const EVENTS_WAKEUP_BYTES: u64 = 256 << 10;
}

/// Words of one half of the `PORTS` bitmap: one bit per TCP/UDP port.
pub const PORT_HALF_WORDS: u32 = 65_536 / 64;
/// Words of the `PORTS` bitmap: the first half has a port's bit set when some endpoint
/// uses the port; the second half when an any-address entry
/// ([`EndpointKey::any_address`]) does, so only those ports pay a second lookup.
pub const PORT_WORDS: u32 = 2 * PORT_HALF_WORDS;

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
    /// An event did not fit in the ring buffer (user space is behind).
    EventLost = 1,
    /// A socket entry could not be created.
    SocketInsert = 2,
    /// TLS record parsing lost its place in a stream (resynchronised later).
    TlsDesync = 3,
}

impl Drop {
    pub const COUNT: u32 = 4;
    pub const ALL: [Self; 4] = [
        Self::TrafficInsert,
        Self::EventLost,
        Self::SocketInsert,
        Self::TlsDesync,
    ];
}

/// What the programs do to the LRU maps, counted per CPU in `MAP_OPS`. An LRU map
/// evicts silently; since only these operations add or remove entries, the evictions
/// so far are `created − removed − entries now`, which user space works out.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// A new `TRAFFIC` key (a cgroup, endpoint kind and process seen for the first time).
    TrafficCreated = 0,
    /// A new `SOCKETS` entry (a socket to a measured endpoint, or one adopted).
    SocketCreated = 1,
    /// A `SOCKETS` entry removed because its socket was released.
    SocketRemoved = 2,
}

impl MapOp {
    pub const COUNT: u32 = 3;
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

    /// Every address at `port` (the unspecified address `::`): a packet whose exact
    /// endpoint is not in the table is measured as this entry's kind when its port's
    /// bit is set in the wildcard half of `PORTS`.
    pub const fn any_address(port: u16) -> Self {
        Self::v6([0; 16], port)
    }

    /// Whether this key stands for every address at its port.
    pub const fn is_any_address(&self) -> bool {
        let mut i = 0;
        while i < 16 {
            if self.addr[i] != 0 {
                return false;
            }
            i += 1;
        }
        true
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

/// Traffic is kept per cgroup (a container, or a node service), endpoint kind and process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    /// cgroup v2 id: the inode number of the cgroup's directory.
    pub cgroup_id: u64,
    /// An [`EndpointKind`] as `u32`.
    pub kind: u32,
    /// The process that owns the socket (0 when the kernel had no task at hand).
    pub tgid: u32,
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

/// What the kernel knows of a socket to a measured endpoint, keyed by socket cookie.
/// Created where a task is at hand (connect, sendmsg), so packets handled in softirq
/// context can still be attributed to a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    pub cgroup_id: u64,
    pub tgid: u32,
    /// An [`EndpointKind`] as `u32`.
    pub kind: u32,
    pub comm: [u8; 16],
    /// TLS record tracking per direction (index 0 egress, 1 ingress).
    pub tls: [TlsCursor; 2],
}

/// Bytes of an executable's path kept (what a longer path keeps is its beginning, so
/// user space names it from the path's last complete component).
pub const EXEC_PATH_LEN: usize = 128;

/// The path a process executed, NUL-terminated (as the exec tracepoint reports it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecPath {
    pub path: [u8; EXEC_PATH_LEN],
}

/// Where the next TLS record header starts in one direction of a TCP stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCursor {
    /// TCP sequence number of the next byte not yet seen.
    pub next_seq: u32,
    /// Bytes from `next_seq` to the next record header.
    pub to_next_header: u32,
    /// 1 once `next_seq` is known, 0 before the first segment.
    pub started: u32,
    /// 1 while the cursor is lost (waiting for a segment that starts with a header).
    pub lost: u32,
}

/// Events the kernel sends user space through the `EVENTS` ring buffer. Each starts with
/// an [`event::Header`] whose `kind` says which struct it is.
pub mod event {
    /// [`Connect`]: a process connected a socket to a measured endpoint.
    pub const CONNECT: u32 = 1;
    /// [`Close`]: a measured socket was released.
    pub const CLOSE: u32 = 2;
    /// [`Dns`]: a DNS message sent or received.
    pub const DNS: u32 = 3;
    /// [`Segment`]: a TCP segment with payload to or from the API server.
    pub const SEGMENT: u32 = 4;

    pub const EGRESS: u32 = 0;
    pub const INGRESS: u32 = 1;

    /// DNS payload bytes copied (enough for the header and question of any real query).
    pub const DNS_CAPTURE: usize = 256;
    /// TLS record headers reported per segment at most; more are counted in
    /// `Segment::records_beyond`.
    pub const MAX_RECORDS: usize = 12;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        pub kind: u32,
        /// [`EGRESS`] or [`INGRESS`] where it applies.
        pub direction: u32,
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
        pub ts_ns: u64,
        pub cgroup_id: u64,
        pub cookie: u64,
        /// The owning process (0 when unknown).
        pub tgid: u32,
        /// An [`crate::EndpointKind`] as `u32`.
        pub endpoint_kind: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Connect {
        pub header: Header,
        pub comm: [u8; 16],
        /// 6 for TCP, 17 for UDP.
        pub protocol: u32,
        pub reserved: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Close {
        pub header: Header,
    }

    /// A DNS message with room for `N` payload bytes. The kernel reserves the smallest
    /// of [`DNS_CLASSES`] that holds the message (most are well under 128 bytes, so most
    /// records are a third of the largest); user space reads each as a [`Dns`].
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DnsRecord<const N: usize> {
        pub header: Header,
        /// 6 for TCP (payload starts with the 2-byte length), 17 for UDP.
        pub protocol: u32,
        /// Transport payload length of the packet.
        pub payload_len: u32,
        /// Bytes of `payload` that are valid (≤ N).
        pub captured: u32,
        /// The local port (tells apart sockets of one process).
        pub local_port: u32,
        pub payload: [u8; N],
    }

    /// A DNS event of the largest class, as user space handles every class.
    pub type Dns = DnsRecord<DNS_CAPTURE>;

    /// The payload sizes of DNS records, smallest first (powers of two).
    pub const DNS_CLASSES: [usize; 3] = [64, 128, DNS_CAPTURE];

    /// A TLS record header found in a segment.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Record {
        /// 20 change_cipher_spec, 21 alert, 22 handshake, 23 application_data.
        pub content_type: u8,
        pub reserved: u8,
        /// Length of the record's body.
        pub length: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Segment {
        pub header: Header,
        /// TCP payload bytes of the segment (a GSO super-packet counts whole).
        pub payload_len: u32,
        /// Valid entries in `records`.
        pub records: u32,
        /// Record headers beyond MAX_RECORDS in this segment (not listed).
        pub records_beyond: u32,
        /// 1 if the TLS cursor was lost in this segment (records may be missing).
        pub desync: u32,
        pub record: [Record; MAX_RECORDS],
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
    unsafe impl aya::Pod for super::SocketInfo {}
    unsafe impl aya::Pod for super::TlsCursor {}
    unsafe impl aya::Pod for super::ExecPath {}
}

// The ABI must not change size by accident: a mismatch would corrupt maps silently.
const _: () = {
    assert!(core::mem::size_of::<EndpointKey>() == 20);
    assert!(core::mem::size_of::<EndpointValue>() == 4);
    assert!(core::mem::size_of::<TrafficKey>() == 16);
    assert!(core::mem::size_of::<TrafficCounters>() == 40);
    assert!(core::mem::size_of::<TlsCursor>() == 16);
    assert!(core::mem::size_of::<SocketInfo>() == 64);
    assert!(core::mem::size_of::<event::Header>() == 40);
    assert!(core::mem::size_of::<event::Connect>() == 64);
    assert!(core::mem::size_of::<event::Dns>() == 40 + 16 + event::DNS_CAPTURE);
    assert!(core::mem::size_of::<event::Segment>() == 40 + 16 + 4 * event::MAX_RECORDS);
};
