//! Copies DNS messages (the first bytes: header and question) to user space, which
//! parses them, matches responses to queries and detects search-list expansion.
//!
//! Where a query's cost goes (issue 14, measured on the 2-CPU test machine under other
//! load, dnsperf → dnsmasq on loopback): a query and its response are four
//! cgroup_skb runs (two of them, the server's, leave at the port check) and two
//! sendmsg runs. The skb runs average ~185–195 ns against ~36 ns for empty programs;
//! without this module's ring buffer output they average ~90 ns, so the reserve, copy
//! and submit below are about half the kernel's part (~0.65 µs per query beyond the
//! empty programs). The collector's process spends another ~0.6 µs per query on the two
//! events (the bench's "own CPU" line; 0.7 before names were hashed once and responses'
//! names only compared), spread over draining, parsing, matching, expansion detection
//! and the top-K (none over 13% under perf). Fewer events, not cheaper ones, is what
//! cuts both: the kernel would count qtype, rcode and latency itself and send names
//! sampled, which search-list expansion (counted from every try's name and outcome)
//! does not allow yet.
use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::SkBuffContext};
use collector_ebpf::{
    Drop,
    event::{self, DNS_CAPTURE, DNS_CLASSES, Header},
};

use crate::{maps, packet::Packet};

pub fn emit(ctx: &SkBuffContext, pkt: &Packet, header: Header) {
    let want = if pkt.payload_len < DNS_CAPTURE as u32 {
        pkt.payload_len
    } else {
        DNS_CAPTURE as u32
    };
    // The smallest record that holds the message: less ring buffer to write and read.
    if want <= DNS_CLASSES[0] as u32 {
        emit_in::<{ DNS_CLASSES[0] }>(ctx, pkt, header, want);
    } else if want <= DNS_CLASSES[1] as u32 {
        emit_in::<{ DNS_CLASSES[1] }>(ctx, pkt, header, want);
    } else {
        emit_in::<{ DNS_CLASSES[2] }>(ctx, pkt, header, want);
    }
}

/// Sends the first `want` (1..=N) payload bytes in a record of class `N`.
#[inline(always)]
fn emit_in<const N: usize>(ctx: &SkBuffContext, pkt: &Packet, header: Header, want: u32) {
    let Some(mut entry) = maps::EVENTS.reserve::<event::DnsRecord<N>>(0) else {
        maps::count_drop(Drop::EventLost);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved ring buffer slot of the right size; the helper
    // writes at most `len` ≤ N bytes into its payload array.
    unsafe {
        addr_of_mut!((*ev).header).write(header);
        addr_of_mut!((*ev).protocol).write(u32::from(pkt.proto));
        addr_of_mut!((*ev).payload_len).write(pkt.payload_len);
        addr_of_mut!((*ev).local_port).write(u32::from(pkt.local_port));
        // want is 1..=N here (the caller returns early on an empty payload, and picked
        // the class that holds it). Pass it as 1 + (m & (N - 1)) with m hidden behind
        // black_box: the verifier must see the bounds on the very register handed to
        // the helper, and LLVM would otherwise fold any range check into one on a copy.
        let m = core::hint::black_box(want.wrapping_sub(1));
        let len = 1 + (m & (N as u32 - 1));
        let dst = addr_of_mut!((*ev).payload).cast::<c_void>();
        let ok = bpf_skb_load_bytes(ctx.skb.skb as *const c_void, pkt.payload_at, dst, len) == 0;
        addr_of_mut!((*ev).captured).write(if ok { len } else { 0 });
    }
    entry.submit(maps::wakeup_flags());
}
