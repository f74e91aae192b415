//! The kernel's BPF run-time stats, read through `metrics::bpf_stats`, against ground
//! truth: a process that makes exactly one connect() in a cgroup of its own. Needs
//! root, like the kernel tests (`cargo xtask test`); fails rather than skips.
use std::process::Command;

use collector::{
    cgroup::{self, ChildGroup},
    ebpf::Probes,
    metrics::bpf_stats,
};
use collector_ebpf::program;

#[test]
fn run_count_and_time_of_the_attached_programs() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "loads eBPF programs: run as root (`cargo xtask test`)"
    );
    let root = cgroup::find_root().expect("cgroup v2");
    let group = ChildGroup::create(&root, &format!("headroom-bpf-stats-{}", std::process::id()))
        .expect("child cgroup");
    // Attached at the child group, the programs run for its processes only.
    let probes = Probes::attach(group.path()).expect("attach");
    let stats = bpf_stats::enable_run_time_stats().expect("enable BPF run-time stats");

    let before = bpf_stats::program_runs(probes.ebpf()).expect("program info");
    for name in [program::CONNECT4, program::SKB_EGRESS, program::SKB_INGRESS] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }
    // One connect() to an IPv4 literal on a closed port: refused at once, no DNS.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec curl -s -o /dev/null http://127.0.0.1:1/",
            group.procs_file().display()
        ))
        .status()
        .expect("run curl");
    assert_eq!(status.code(), Some(7), "curl should fail to connect");
    let after = bpf_stats::program_runs(probes.ebpf()).expect("program info");
    drop(stats);
    drop(probes);

    let connect4 = (before[program::CONNECT4], after[program::CONNECT4]);
    assert_eq!(
        connect4.1.run_count - connect4.0.run_count,
        1,
        "{connect4:?}"
    );
    assert!(connect4.1.run_time > connect4.0.run_time, "{connect4:?}");
    // The SYN left through egress (loopback), the RST came back through ingress.
    for name in [program::SKB_EGRESS, program::SKB_INGRESS] {
        assert!(
            after[name].run_count > before[name].run_count,
            "{name}: {:?} → {:?}",
            before[name],
            after[name]
        );
    }
}
