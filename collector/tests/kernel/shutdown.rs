//! The collector binary loads and attaches its programs at start and detaches everything
//! when it is stopped: SIGTERM (the kubelet stopping its pod) and SIGINT (Ctrl-C) each end
//! it with exit status 0, and none of the BPF programs and links it held stays in the
//! kernel; SIGKILL (an OOM kill, a node agent's crash) leaves nothing either, as every
//! attachment is a bpf link owned by the process's file descriptors and nothing is
//! pinned. Other kernel tests load the same programs at the same time, from this process,
//! so the test follows this collector's own ids (from its /proc/PID/fdinfo), never global
//! counts.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, ExitStatus},
    str::FromStr,
    thread,
    time::{Duration, Instant},
};

use collector::cgroup;
use collector_ebpf::program;

use crate::require_root;

/// The kernel programs: the collector attaches each one with a bpf link of its own.
const PROGRAMS: [&str; 8] = [
    program::CONNECT4,
    program::CONNECT6,
    program::SENDMSG4,
    program::SENDMSG6,
    program::SOCK_RELEASE,
    program::SKB_EGRESS,
    program::SKB_INGRESS,
    program::EXEC,
];
/// The cgroup links' attach types (`enum bpf_attach_type` of linux/bpf.h), in order.
const ATTACH_TYPES: [u32; 7] = [
    0,  // BPF_CGROUP_INET_INGRESS
    1,  // BPF_CGROUP_INET_EGRESS
    10, // BPF_CGROUP_INET4_CONNECT
    11, // BPF_CGROUP_INET6_CONNECT
    14, // BPF_CGROUP_UDP4_SENDMSG
    15, // BPF_CGROUP_UDP6_SENDMSG
    34, // BPF_CGROUP_INET_SOCK_RELEASE
];
/// How long the collector may take to start, and to exit once signalled.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long the kernel may take to free programs and links after their last holder went
/// (freeing waits for an RCU grace period, asynchronously).
const FREEING_PATIENCE: Duration = Duration::from_secs(10);

/// A bpf link as its fdinfo shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeldLink {
    id: u32,
    program: u32,
    link_type: String,
    cgroup_id: u64,
    attach_type: u32,
}

/// The BPF programs and links a process holds file descriptors of.
#[derive(Debug, Default)]
pub struct Held {
    programs: BTreeSet<u32>,
    links: Vec<HeldLink>,
}

fn field<T: FromStr>(fields: &BTreeMap<&str, &str>, key: &str) -> Option<T> {
    fields.get(key).and_then(|v| v.parse().ok())
}

/// Reads `/proc/PID/fdinfo/*`: a bpf link's shows `link_id:` (and its program's
/// `prog_id:`), a bpf program's shows `prog_id:` alone.
fn held_by(pid: u32) -> Held {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut held = Held::default();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}")) {
        // An fd closed since the listing has no fdinfo any more.
        let Ok(text) = fs::read_to_string(entry.expect("fdinfo entry").path()) else {
            continue;
        };
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim(), value.trim()))
            .collect();
        if let (Some(id), Some(program)) = (field(&fields, "link_id"), field(&fields, "prog_id")) {
            held.links.push(HeldLink {
                id,
                program,
                link_type: field(&fields, "link_type").unwrap_or_default(),
                cgroup_id: field(&fields, "cgroup_id").unwrap_or_default(),
                attach_type: field(&fields, "attach_type").unwrap_or(u32::MAX),
            });
        } else if let Some(program) = field(&fields, "prog_id") {
            held.programs.insert(program);
        }
    }
    held.links.sort_by_key(|l| l.attach_type);
    held
}

/// Every program loaded in the kernel now: id → name. Programs unloaded during the walk
/// are skipped.
fn loaded_programs() -> BTreeMap<u32, String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Every bpf link in the kernel now: id → its program's id.
fn loaded_links() -> BTreeMap<u32, u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| (l.id(), l.program_id()))
        .collect()
}

/// A program's name as the kernel keeps it (`BPF_OBJ_NAME_LEN`: 15 bytes and a NUL).
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// The collector binary, standalone; killed and reaped when dropped, also on failure.
pub struct Running {
    child: Child,
    log: PathBuf,
    listen: SocketAddr,
}

impl Running {
    fn start(tag: &str) -> Self {
        Self::start_with(tag, &[])
    }

    /// Standalone, with `extra` flags (`--apiserver ADDR`, `--dns-server ADDR`, …).
    pub fn start_with(tag: &str, extra: &[&str]) -> Self {
        Self::start_under(tag, extra, &[])
    }

    /// [`Self::start_with`], run by `wrapper` (a program and its arguments, e.g.
    /// `setpriv --bounding-set …`) when it is not empty.
    pub fn start_under(tag: &str, extra: &[&str], wrapper: &[&str]) -> Self {
        let listen = crate::free_port();
        let log = std::env::temp_dir().join(format!(
            "headroom-shutdown-{tag}-{}.log",
            std::process::id()
        ));
        let listen_arg = listen.to_string();
        let mut args = vec![
            "--standalone",
            "--node-name",
            "shutdown-test",
            "--listen",
            &listen_arg,
        ];
        args.extend_from_slice(extra);
        let mut command = crate::collector_command(&args);
        if let Some((program, wrapper_args)) = wrapper.split_first() {
            let mut wrapped = std::process::Command::new(program);
            wrapped
                .args(wrapper_args)
                .arg(command.get_program())
                .args(&args);
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => wrapped.env(key, value),
                    None => wrapped.env_remove(key),
                };
            }
            command = wrapped;
        }
        let child = crate::spawn_logged(&mut command, &log);
        Self { child, log, listen }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path`: the status line and body, `None` while it does not answer.
    fn get(&mut self, path: &str) -> Option<(String, String)> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the collector exited ({status}):\n{}", self.log());
        }
        let mut stream = TcpStream::connect(self.listen).ok()?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.listen
        );
        let mut response = String::new();
        stream.write_all(request.as_bytes()).ok()?;
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_owned(), body.to_owned()))
    }

    /// Whether /readyz answers 200: programs attached and the event loop running.
    fn ready(&mut self) -> bool {
        self.get("/readyz")
            .is_some_and(|(status, _)| status.starts_with("HTTP/1.1 200"))
    }

    /// The body of `GET path` (a 200), e.g. `/metrics` or `/dns/names`.
    pub fn fetch(&mut self, path: &str) -> String {
        match self.get(path) {
            Some((status, body)) if status.starts_with("HTTP/1.1 200") => body,
            other => panic!("GET {path}: {other:?}\n{}", self.log()),
        }
    }

    /// Resident memory now, in KiB: `field` of /proc/PID/status (`VmRSS:` in all,
    /// `RssAnon:` the heap and stacks, without mapped files and the BPF ring buffer).
    pub fn rss_kib(&self, field: &str) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.ready() {
            assert!(
                Instant::now() < deadline,
                "the collector was not ready within {PATIENCE:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How it exited, if it did within `patience`.
    pub fn exited_within(&mut self, patience: Duration) -> Option<ExitStatus> {
        crate::exited_within(&mut self.child, patience)
    }

    /// Sends `signal` and waits for the collector to exit.
    pub fn stop(&mut self, signal: libc::c_int) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
        crate::exited_within(&mut self.child, PATIENCE).unwrap_or_else(|| {
            panic!(
                "the collector still runs {PATIENCE:?} after signal {signal}:\n{}",
                self.log()
            )
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
    }
}

/// What a running collector holds, checked: exactly its programs, each attached at the
/// cgroup root by a link of its own (the exec tracepoint by a perf link).
pub fn attached(collector: &Running, name: &str) -> Held {
    let root = cgroup::find_root().expect("cgroup v2 mount");
    let root_id = cgroup::id_of(&root).expect("the root cgroup's id");
    let held = held_by(collector.pid());
    let log = collector.log();
    let linked: BTreeSet<u32> = held.links.iter().map(|l| l.program).collect();
    println!(
        "{name}: collector pid {} holds programs {:?}, links (id → program, attach type) {:?}",
        collector.pid(),
        held.programs,
        held.links
            .iter()
            .map(|l| (l.id, l.program, l.attach_type))
            .collect::<Vec<_>>()
    );
    let (cgroup_links, other_links): (Vec<&HeldLink>, Vec<&HeldLink>) =
        held.links.iter().partition(|l| l.link_type == "cgroup");
    assert_eq!(
        cgroup_links
            .iter()
            .map(|l| l.attach_type)
            .collect::<Vec<_>>(),
        ATTACH_TYPES,
        "{name}: one link per hook: {held:?}\n{log}"
    );
    // The exec tracepoint's: a perf event link (fdinfo shows no attach type for it).
    assert_eq!(
        other_links
            .iter()
            .map(|l| l.link_type.as_str())
            .collect::<Vec<_>>(),
        ["perf"],
        "{name}: the exec tracepoint by a link of its own: {held:?}\n{log}"
    );
    for link in cgroup_links {
        assert_eq!(
            (link.link_type.as_str(), link.cgroup_id),
            ("cgroup", root_id),
            "{name}: link {link:?} should be attached at the cgroup root {} (id {root_id})",
            root.display()
        );
    }
    assert_eq!(
        linked, held.programs,
        "{name}: every program held is attached, each by its own link: {held:?}"
    );
    let loaded = loaded_programs();
    let mut names: Vec<&str> = held
        .programs
        .iter()
        .map(|id| loaded.get(id).map_or("(not loaded)", String::as_str))
        .collect();
    names.sort_unstable();
    let mut expected: Vec<&str> = PROGRAMS.iter().map(|n| kernel_name(n)).collect();
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "{name}: the loaded programs of this collector, by kernel name"
    );
    let links = loaded_links();
    for link in &held.links {
        assert_eq!(
            links.get(&link.id),
            Some(&link.program),
            "{name}: link {} of program {} among the kernel's links",
            link.id,
            link.program
        );
    }
    held
}

/// The ids of `key` (`id`) in `bpftool -j prog show` or `bpftool -j link show`: the
/// kernel's lists as an operator reads them, from a tool other than the loader's.
fn bpftool_ids(what: &str) -> BTreeSet<u32> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", what, "show"])
        .output()
        .expect("bpftool (Debian package bpftool; cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool {what} show: {out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    list.as_array()
        .expect("a JSON list")
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .filter_map(|id| u32::try_from(id).ok())
        .collect()
}

/// After the collector exited: none of the programs and links it `held` is left in the
/// kernel (by aya's walk and by bpftool), and nothing of it is pinned in /sys/fs/bpf.
pub fn freed(held: &Held, name: &str, log: &str) {
    let link_ids: BTreeSet<u32> = held.links.iter().map(|l| l.id).collect();
    let leftovers = || {
        let programs: BTreeSet<u32> = loaded_programs()
            .into_keys()
            .filter(|id| held.programs.contains(id))
            .collect();
        let links: BTreeSet<u32> = loaded_links()
            .into_keys()
            .filter(|id| link_ids.contains(id))
            .collect();
        (programs, links)
    };
    let deadline = Instant::now() + FREEING_PATIENCE;
    let mut left = leftovers();
    while (!left.0.is_empty() || !left.1.is_empty()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        left = leftovers();
    }
    println!(
        "{name}: after exit, of its programs still loaded {:?}, of its links {:?}",
        left.0, left.1
    );
    assert_eq!(
        left,
        (BTreeSet::new(), BTreeSet::new()),
        "{name}: programs and links left in the kernel {FREEING_PATIENCE:?} after the \
         collector exited\n{log}"
    );
    let by_bpftool = (
        bpftool_ids("prog")
            .intersection(&held.programs)
            .copied()
            .collect::<BTreeSet<u32>>(),
        bpftool_ids("link")
            .intersection(&link_ids)
            .copied()
            .collect::<BTreeSet<u32>>(),
    );
    assert_eq!(
        by_bpftool,
        (BTreeSet::new(), BTreeSet::new()),
        "{name}: bpftool still lists programs or links of the collector"
    );
    let pinned: Vec<String> = fs::read_dir("/sys/fs/bpf")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("headroom"))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        pinned.is_empty(),
        "{name}: pinned in /sys/fs/bpf: {pinned:?}"
    );
}

/// Starts the collector, checks that it holds exactly its programs, each attached at the
/// cgroup root by a link of its own, stops it with `signal` and checks how it exited
/// (`exited`) and that none of those programs and links is left.
fn stop_with(signal: libc::c_int, name: &str, exited: impl Fn(ExitStatus) -> bool) {
    require_root();
    let mut collector = Running::start(name);
    collector.wait_ready();
    let held = attached(&collector, name);
    let status = collector.stop(signal);
    let log = collector.log();
    println!("{name}: collector exited with {status}");
    assert!(exited(status), "{name}: exit status {status}\n{log}");
    freed(&held, name, &log);
}

/// SIGTERM, as the kubelet stops a pod.
#[test]
fn sigterm_detaches_every_program_and_exits_0() {
    stop_with(libc::SIGTERM, "SIGTERM", |s| s.code() == Some(0));
}

/// SIGINT, as Ctrl-C stops it in a terminal.
#[test]
fn sigint_detaches_every_program_and_exits_0() {
    stop_with(libc::SIGINT, "SIGINT", |s| s.code() == Some(0));
}

/// SIGKILL, as the OOM killer or `kill -9` ends it: no handler runs, and still nothing
/// stays attached or loaded.
#[test]
fn sigkill_leaves_nothing_attached() {
    use std::os::unix::process::ExitStatusExt as _;
    stop_with(libc::SIGKILL, "SIGKILL", |s| {
        s.signal() == Some(libc::SIGKILL)
    });
}
