//! Kernel tests: load Headroom's real programs into this kernel, make traffic from child
//! cgroups that stand for pods, and compare what the kernel counted with what the other
//! side really saw. They need root (CAP_BPF, CAP_NET_ADMIN, cgroup writes) and fail —
//! never skip — when they cannot load the programs. One test binary, one module per
//! subject; shared pieces are here and in `../support`.
#[path = "../support/mod.rs"]
mod support;

mod apiserver;
mod capabilities;
mod dns;
mod dns_default;
mod faults;
mod maps;
mod nat;
mod self_client;
mod shutdown;
mod traffic;

use std::process::Command;

use collector::cgroup;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "kernel tests load eBPF programs and create cgroups: run them as root (`cargo xtask test`)"
    );
}

/// A child cgroup for one test, named after it and this process.
pub fn child_group(name: &str) -> cgroup::ChildGroup {
    let root = cgroup::find_root().expect("cgroup v2 mount");
    cgroup::ChildGroup::create(
        &root,
        &format!("headroom-test-{name}-{}", std::process::id()),
    )
    .expect("create cgroup")
}

/// Runs a bash script inside `group`: the shell joins the cgroup first, so the sockets
/// it and its children create belong to that cgroup. Returns the shell's pid.
pub fn run_in_cgroup(group: &cgroup::ChildGroup, script: &str) -> u32 {
    let full = format!("echo $$ > {} && {script}", group.procs_file().display());
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&full)
        .spawn()
        .expect("run bash");
    let pid = child.id();
    let status = child.wait().expect("wait for bash");
    assert!(status.success(), "client script failed ({status}): {full}");
    pid
}

/// The collector binary with `args`, as outside any cluster: no in-pod environment and
/// no config file from the environment.
pub fn collector_command<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_headroom-collector"));
    command
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("HEADROOM_CONFIG");
    command
}

/// Starts `command` with its output (both streams) in `log` and no standard input.
pub fn spawn_logged(command: &mut Command, log: &std::path::Path) -> std::process::Child {
    let output = std::fs::File::create(log).expect("collector log");
    command
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone().expect("log handle"))
        .stderr(output)
        .spawn()
        .expect("run headroom-collector")
}

/// A loopback address with a port free a moment ago (for a server a test starts).
pub fn free_port() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address")
}

/// How `child` exited, if it did within `patience`.
pub fn exited_within(
    child: &mut std::process::Child,
    patience: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("poll a child process") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
