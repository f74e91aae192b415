//! The kernel's BPF run-time stats, read through `metrics::bpf_stats`, against ground
//! truth: a process that makes exactly one connect() in a cgroup of its own. Needs
//! root, like the kernel tests (`cargo xtask test`); fails rather than skips.
use std::{
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use collector::{
    cgroup::{self, ChildGroup},
    ebpf::Probes,
    metrics::bpf_stats,
};
use collector_ebpf::program;

/// The kernel's stats are global: the tests here take turns.
static STATS: Mutex<()> = Mutex::new(());

fn child_group(what: &str) -> ChildGroup {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "loads eBPF programs: run as root (`cargo xtask test`)"
    );
    let root = cgroup::find_root().expect("cgroup v2");
    ChildGroup::create(&root, &format!("headroom-{what}-{}", std::process::id()))
        .expect("child cgroup")
}

/// One connect() from `group` to an IPv4 literal on a closed port: refused at once, no DNS.
fn connect_once(group: &ChildGroup) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {} && exec curl -s -o /dev/null http://127.0.0.1:1/",
            group.procs_file().display()
        ))
        .status()
        .expect("run curl");
    assert_eq!(status.code(), Some(7), "curl should fail to connect");
}

/// Runs of the attached connect4 program so far.
fn connect4_runs(probes: &Probes) -> u64 {
    bpf_stats::program_runs(probes.ebpf()).expect("program info")[program::CONNECT4].run_count
}

/// A runtime of its own for the sampler task, which runs while the test blocks.
fn sampler_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("runtime")
}

#[test]
fn run_count_and_time_of_the_attached_programs() {
    let _turn = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let group = child_group("bpf-stats");
    // Attached at the child group, the programs run for its processes only.
    let probes = Probes::attach(group.path()).expect("attach");
    let stats = bpf_stats::enable_run_time_stats().expect("enable BPF run-time stats");

    let before = bpf_stats::program_runs(probes.ebpf()).expect("program info");
    for name in [program::CONNECT4, program::SKB_EGRESS, program::SKB_INGRESS] {
        assert!(before.contains_key(name), "{name} missing from {before:?}");
    }
    connect_once(&group);
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

/// Sampled stats count runs inside a sample and none between samples, and the clock
/// says how long they were on.
#[test]
fn sampled_stats_count_only_while_a_sample_is_on() {
    let _turn = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let group = child_group("bpf-sampled");
    let probes = Probes::attach(group.path()).expect("attach");
    let connects = || connect4_runs(&probes);
    let runtime = sampler_runtime();
    let clock = bpf_stats::StatsClock::default();
    // Off for 1.5 s, on for 1.5 s, off again from 3 s.
    let sampling = bpf_stats::Sampling {
        on: Duration::from_millis(1500),
        every: Duration::from_secs(3),
    };
    let started = Instant::now();
    let sampler = runtime.spawn(bpf_stats::run(
        bpf_stats::ProgramStats::Sampled,
        sampling,
        clock.clone(),
    ));
    let at = |ms| std::thread::sleep(Duration::from_millis(ms).saturating_sub(started.elapsed()));
    let within = |what: &str, ms| {
        assert!(
            started.elapsed() < Duration::from_millis(ms),
            "{what} took until {:?}: too slow for the test's schedule",
            started.elapsed()
        );
    };
    let count = |n| {
        let before = connects();
        for _ in 0..n {
            connect_once(&group);
        }
        connects() - before
    };
    let before_sample = count(1);
    within("the connect before the sample", 1400);
    at(1700);
    let inside = count(2);
    let on_so_far = clock.seconds();
    within("the connects inside the sample", 2900);
    at(3200);
    let after_sample = count(1);
    within("the connect after the sample", 4400);
    let seconds = clock.seconds();
    sampler.abort();
    drop(runtime);

    assert_eq!(
        before_sample, 0,
        "a connect before the first sample is not counted"
    );
    assert_eq!(inside, 2, "two connects inside the sample");
    assert_eq!(after_sample, 0, "a connect after the sample is not counted");
    assert!(
        on_so_far > 0.1,
        "the clock runs during the sample: {on_so_far} s"
    );
    assert!(
        (1.4..=1.7).contains(&seconds),
        "stats on for {seconds} s; the sample lasts 1.5 s"
    );
}

/// `off` never turns the stats on; `always` keeps them on until dropped.
#[test]
fn off_counts_nothing_and_always_counts_until_stopped() {
    let _turn = STATS.lock().unwrap_or_else(|e| e.into_inner());
    let group = child_group("bpf-modes");
    let probes = Probes::attach(group.path()).expect("attach");
    let connects = || connect4_runs(&probes);
    let runtime = sampler_runtime();
    for (mode, expected) in [
        (bpf_stats::ProgramStats::Off, 0),
        (bpf_stats::ProgramStats::Always, 1),
    ] {
        let clock = bpf_stats::StatsClock::default();
        let task = runtime.spawn(bpf_stats::run(
            mode,
            bpf_stats::Sampling::DEFAULT,
            clock.clone(),
        ));
        std::thread::sleep(Duration::from_millis(200));
        let before = connects();
        connect_once(&group);
        assert_eq!(connects() - before, expected, "{mode:?}");
        task.abort();
        // The aborted task's guard turned the stats off.
        std::thread::sleep(Duration::from_millis(50));
        let stopped = connects();
        connect_once(&group);
        assert_eq!(
            connects(),
            stopped,
            "{mode:?}: counted after the task stopped"
        );
        let seconds = clock.seconds();
        if expected == 0 {
            assert_eq!(seconds, 0.0, "{mode:?}");
        } else {
            assert!(seconds > 0.15, "{mode:?}: on for {seconds} s");
        }
    }
}
