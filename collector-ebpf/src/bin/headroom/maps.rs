//! The maps, shared by every program. A static's name is the map's name in the object:
//! each must equal its `collector_ebpf::map` constant (user space looks them up by it).
use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf},
};
use collector_ebpf::{
    Drop, EndpointKey, EndpointValue, ExecPath, MapOp, PORT_HALF_WORDS, PORT_WORDS, SocketInfo,
    TrafficCounters, TrafficKey, capacity,
};

#[map]
pub static ENDPOINTS: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(capacity::ENDPOINTS, 0);

#[map]
pub static TRAFFIC: LruPerCpuHashMap<TrafficKey, TrafficCounters> =
    LruPerCpuHashMap::with_max_entries(capacity::TRAFFIC, 0);

#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Drop::COUNT, 0);

#[map]
pub static MAP_OPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MapOp::COUNT, 0);

#[map]
pub static SOCKETS: LruHashMap<u64, SocketInfo> =
    LruHashMap::with_max_entries(capacity::SOCKETS, 0);

#[map]
pub static CLOSING: LruHashMap<u64, SocketInfo> =
    LruHashMap::with_max_entries(capacity::CLOSING, 0);

#[map]
pub static PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

#[map]
pub static EXEC_PATHS: LruHashMap<u32, ExecPath> =
    LruHashMap::with_max_entries(capacity::EXEC_PATHS, 0);

/// Room to read an exec's path into before copying it to `EXEC_PATHS` (too big for the
/// stack alongside the helper's frame). Not shared with user space.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecPath> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Whether some measured endpoint uses `port` (an array lookup the verifier inlines).
#[inline(always)]
pub fn port_measured(port: u16) -> bool {
    PORTS
        .get(u32::from(port >> 6))
        .is_some_and(|word| word & (1u64 << (port & 63)) != 0)
}

/// Flags for submitting an event: user space is not woken per event (it drains on a
/// timer) except once, when the unread data crosses the wakeup threshold. Forcing a
/// wakeup on every event above it would cost an irq_work per event until the reader
/// catches up; if a crossing is missed, the timer still drains.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    let unread = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let threshold = capacity::EVENTS_WAKEUP_BYTES;
    if unread >= threshold && unread < threshold + 1024 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Whether an any-address entry exists for `port` (the bitmap's second half).
#[inline(always)]
fn port_any_address(port: u16) -> bool {
    PORTS
        .get(PORT_HALF_WORDS + u32::from(port >> 6))
        .is_some_and(|word| word & (1u64 << (port & 63)) != 0)
}

/// The kind of a measured endpoint, if `key` is one: its own entry, else the entry for
/// every address at its port (DNS to any server on port 53).
#[inline(always)]
pub fn endpoint_kind(key: &EndpointKey) -> Option<u32> {
    // SAFETY: the value is plain data; a racing update only affects this one read.
    if let Some(v) = unsafe { ENDPOINTS.get(key) } {
        return Some(v.kind);
    }
    if !port_any_address(key.port) {
        return None;
    }
    let any = EndpointKey::any_address(key.port);
    // SAFETY: as above.
    unsafe { ENDPOINTS.get(any) }.map(|v| v.kind)
}

pub fn count_drop(what: Drop) {
    bump(&DROPS, what as u32);
}

pub fn count_op(what: MapOp) {
    bump(&MAP_OPS, what as u32);
}

/// Adds one to this CPU's slot `index` of a counter array.
#[inline(always)]
fn bump(counters: &PerCpuArray<u64>, index: u32) {
    if let Some(n) = counters.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, single writer on this CPU.
        unsafe { *n += 1 };
    }
}

/// Flags for an insert that must create the entry: of two CPUs creating the same key at
/// once only one succeeds, so each entry is counted as created once.
pub const CREATE: u64 = BPF_NOEXIST as u64;

/// Applies `update` to this CPU's counters for `key`, creating them if needed.
#[inline(always)]
pub fn with_counters(key: &TrafficKey, update: impl Fn(&mut TrafficCounters)) {
    if let Some(counters) = TRAFFIC.get_ptr_mut(key) {
        // SAFETY: a per-CPU value; this program is the only writer on this CPU.
        update(unsafe { &mut *counters });
        return;
    }
    let mut fresh = TrafficCounters::default();
    update(&mut fresh);
    if TRAFFIC.insert(key, fresh, CREATE).is_ok() {
        count_op(MapOp::TrafficCreated);
        return;
    }
    // Another CPU created the key meanwhile: add to this CPU's (zeroed) share of it.
    match TRAFFIC.get_ptr_mut(key) {
        // SAFETY: as above.
        Some(counters) => update(unsafe { &mut *counters }),
        None => count_drop(Drop::TrafficInsert),
    }
}
