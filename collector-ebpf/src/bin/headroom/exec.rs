//! Remembers the executable each process runs, from the exec tracepoint: the socket
//! hooks see only the sending thread's 15-byte comm (dig's `isc-net-0000`, a JVM's
//! `C2 CompilerThre`), and a short-lived process is gone from /proc before user space
//! names it.
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes},
    programs::TracePointContext,
};
use collector_ebpf::ExecPath;

use crate::maps;

/// Offset of `__data_loc char[] filename` in the tracepoint's record (after the 8 bytes
/// of common fields; /sys/kernel/tracing/events/sched/sched_process_exec/format).
const FILENAME_LOC: usize = 8;

pub fn on_exec(ctx: &TracePointContext) -> Option<()> {
    // A __data_loc is (length << 16) | offset of the string within the record.
    // SAFETY: reads the tracepoint's own record.
    let loc: u32 = unsafe { ctx.read_at(FILENAME_LOC) }.ok()?;
    let offset = (loc & 0xffff) as usize;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let slot = maps::EXEC_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU scratch slot is this program run's alone; the helper writes at
    // most its length and always NUL-terminates.
    unsafe {
        let path = &mut (*slot).path;
        path[0] = 0;
        let src = ctx.as_ptr().cast::<u8>().add(offset);
        bpf_probe_read_kernel_str_bytes(src, path).ok()?;
    }
    // SAFETY: as above; the map copies the value.
    let value: &ExecPath = unsafe { &*slot };
    maps::EXEC_PATHS.insert(tgid, value, 0).ok()
}
