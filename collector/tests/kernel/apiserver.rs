//! API server traffic through the Agent, the code the collector binary runs: real clients
//! (curl, kubectl, a Rust HTTP/2 client) in child cgroups that stand for pods, against the
//! loopback TLS stand-in API server, whose counters are the ground truth. Connections
//! exact, bytes within 1 %, estimated requests within 10 % of the requests served, a watch
//! open while it streams; over IPv4 and IPv6.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use collector::{
    agent::{self, Agent},
    cgroup::{self, ChildGroup},
    dns::DnsConfig,
    ebpf::Probes,
    endpoint, events,
    metrics::{ApiServerStats, Identity, Snapshot},
};
use collector_ebpf::{EndpointKind, TrafficCounters, event};

use crate::{
    child_group, require_root,
    support::apiserver::{self as server, ApiServer, ServerConfig},
};

const PODS: &str = "/api/v1/namespaces/default/pods";
/// Longest a client may run before the test gives up on it.
const CLIENT_PATIENCE: Duration = Duration::from_secs(60);
/// Longest the collector may take to see what happened (events, closes, judgements).
const COLLECTOR_PATIENCE: Duration = Duration::from_secs(10);
/// Where the stand-in listens: IPv4 loopback, or IPv6 loopback (clients then connect
/// through `cgroup/connect6` and the packet hooks read IPv6 headers).
const IPV4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const IPV6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// The collector as the binary runs it — kernel programs attached at the cgroup root,
/// endpoints in their map, events fed to the [`Agent`] — except that the test drains the
/// ring buffer itself (while clients run, and before each snapshot). Dropping it
/// detaches the programs.
pub struct Collector {
    // The ring buffer is a map of the loaded object: dropped first.
    events: RingBuf<MapData>,
    agent: Agent,
    /// Every API server event, in ring buffer order, to explain a failure: its header
    /// and, for a segment, its TLS records ([`records_of`]).
    trace: Vec<(event::Header, String)>,
    /// The host's TCP retransmissions when the programs were attached.
    retransmitted_at_start: u64,
}

impl Collector {
    pub fn attach(endpoints: &[(SocketAddr, EndpointKind)]) -> Self {
        require_root();
        let root = cgroup::find_root().expect("cgroup v2 mount");
        let mut probes = Probes::attach(&root)
            .unwrap_or_else(|e| panic!("could not load and attach the kernel programs: {e}"));
        for &(addr, kind) in endpoints {
            probes
                .add_endpoint(endpoint::key_of(addr), kind)
                .unwrap_or_else(|e| panic!("add endpoint {addr} ({kind:?}): {e}"));
        }
        let events = probes.take_events().expect("events ring buffer");
        let agent = Agent::new(probes, DnsConfig::default()).expect("agent with default config");
        Self {
            events,
            agent,
            trace: Vec::new(),
            retransmitted_at_start: tcp_retransmitted_segments(),
        }
    }

    /// Feeds every event now in the ring buffer to the agent.
    pub fn pump(&mut self) -> usize {
        let (agent, trace) = (&mut self.agent, &mut self.trace);
        events::drain(&mut self.events, |ev| {
            if let Ok(ev) = &ev
                && ev.header().endpoint_kind == EndpointKind::ApiServer as u32
            {
                let records = match ev {
                    events::Event::Segment(segment) => records_of(segment),
                    _ => String::new(),
                };
                trace.push((*ev.header(), records));
            }
            agent.handle(ev);
        })
    }

    /// What explains a failed comparison: the TCP segments this host retransmitted since
    /// the programs were attached (any test's), and [`Self::trace_of`] the group.
    pub fn evidence(&self, group: &ChildGroup) -> String {
        format!(
            "TCP segments retransmitted on this host meanwhile: {}\n{}",
            tcp_retransmitted_segments().saturating_sub(self.retransmitted_at_start),
            self.trace_of(group)
        )
    }

    /// The API server events of one cgroup, per socket in order: `C` connect, `>`/`<`
    /// segment out/in, `X` close, with milliseconds since the socket's first event and a
    /// segment's TLS records ([`records_of`]).
    pub fn trace_of(&self, group: &ChildGroup) -> String {
        let mut sockets: Vec<(u64, u64, String)> = Vec::new();
        for (h, records) in self.trace.iter().filter(|(h, _)| h.cgroup_id == group.id()) {
            let at = match sockets.iter().position(|(cookie, ..)| *cookie == h.cookie) {
                Some(at) => at,
                None => {
                    sockets.push((h.cookie, h.ts_ns, String::new()));
                    sockets.len() - 1
                }
            };
            let (_, first, line) = &mut sockets[at];
            let mark = match (h.kind, h.direction) {
                (event::CONNECT, _) => "C",
                (event::CLOSE, _) => "X",
                (_, event::EGRESS) => ">",
                _ => "<",
            };
            line.push_str(&format!(
                " {mark}{}{records}",
                (h.ts_ns - *first) / 1_000_000
            ));
        }
        sockets
            .iter()
            .map(|(cookie, _, line)| format!("socket {cookie}:{line}\n"))
            .collect()
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// How long a gone cgroup's series stay (the binary's `--series-grace-period`).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.agent = self.agent.with_grace(grace);
        self
    }

    pub fn agent_mut(&mut self) -> &mut Agent {
        &mut self.agent
    }

    /// The kernel's traffic counters of one cgroup (every process and endpoint kind).
    pub fn traffic_of(&mut self, group: &ChildGroup) -> TrafficCounters {
        let mut total = TrafficCounters::default();
        let traffic = self.agent.probes_mut().traffic().expect("read traffic map");
        for (key, counters) in &traffic {
            if key.cgroup_id == group.id() {
                total.accumulate(counters);
            }
        }
        total
    }

    /// What the collector would publish now.
    pub fn snapshot(&mut self) -> Snapshot {
        self.pump();
        self.agent
            .snapshot(agent::monotonic_ns())
            .expect("agent snapshot")
    }

    /// Pumps events for `period` (the estimator judges records up to 1 s after them).
    pub fn pump_for(&mut self, period: Duration) {
        let end = Instant::now() + period;
        while Instant::now() < end {
            self.pump();
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Snapshots until `done` holds for one (or [`COLLECTOR_PATIENCE`] passes: the
    /// caller's assertions then say what is missing).
    pub fn snapshot_when(&mut self, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + COLLECTOR_PATIENCE;
        loop {
            let snap = self.snapshot();
            if done(&snap) || Instant::now() >= deadline {
                return snap;
            }
            self.pump_for(Duration::from_millis(50));
        }
    }

    /// [`Self::run`], and every client must succeed.
    pub fn run_ok(&mut self, commands: Vec<Command>) -> Vec<Output> {
        let names: Vec<String> = commands.iter().map(|c| format!("{c:?}")).collect();
        let outputs = self.run(commands);
        for (name, output) in names.iter().zip(&outputs) {
            assert!(
                output.status.success(),
                "{name} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        outputs
    }

    /// Runs the commands side by side to completion, draining events meanwhile (the
    /// kernel wakes nobody until the buffer is a sixteenth full). A client that hangs
    /// fails the test; its exit status is the caller's to judge.
    pub fn run(&mut self, commands: Vec<Command>) -> Vec<Output> {
        let mut children = Vec::new();
        for mut command in commands {
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {command:?} (is it installed?): {e}"));
            let pid = child.id();
            children.push((
                format!("{command:?}"),
                pid,
                thread::spawn(move || child.wait_with_output()),
            ));
        }
        let deadline = Instant::now() + CLIENT_PATIENCE;
        while children.iter().any(|(_, _, t)| !t.is_finished()) && Instant::now() < deadline {
            self.pump();
            thread::sleep(Duration::from_millis(5));
        }
        let mut outputs = Vec::new();
        for (command, pid, waiter) in children {
            let hung = !waiter.is_finished();
            if hung {
                // SAFETY: kill has no memory preconditions; the pid is our unwaited child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let output = waiter
                .join()
                .expect("client waiter")
                .expect("wait for client");
            assert!(!hung, "{command} ran longer than {CLIENT_PATIENCE:?}");
            outputs.push(output);
        }
        self.pump();
        outputs
    }
}

/// A segment's TLS records for a trace: lengths of application data (23), `type:length`
/// of others, `+n` records beyond the listed ones, `!` lost record boundaries.
fn records_of(segment: &event::Segment) -> String {
    let listed = (segment.records as usize).min(event::MAX_RECORDS);
    let mut out: Vec<String> = segment.record[..listed]
        .iter()
        .map(|r| match r.content_type {
            23 => r.length.to_string(),
            other => format!("{other}:{}", r.length),
        })
        .collect();
    if segment.records_beyond > 0 {
        out.push(format!("+{}", segment.records_beyond));
    }
    if segment.desync != 0 {
        out.push("!".to_owned());
    }
    if out.is_empty() {
        String::new()
    } else {
        format!("[{}]", out.join(","))
    }
}

/// `RetransSegs` of this network namespace (/proc/net/snmp), 0 if unreadable.
fn tcp_retransmitted_segments() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "RetransSegs")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0)
}

/// A client left running (a watch); killed and reaped when dropped, also on failure.
pub struct Background {
    child: std::process::Child,
    what: String,
}

impl Background {
    pub fn start(mut command: Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?} (is it installed?): {e}"));
        Self {
            child,
            what: format!("{command:?}"),
        }
    }

    /// Panics if the client has exited (a watch should still be running).
    pub fn assert_running(&mut self) {
        let status = self.child.try_wait().expect("poll client");
        assert!(status.is_none(), "{} exited early: {status:?}", self.what);
    }
}

impl Background {
    /// Waits for the client to exit by itself (up to [`CLIENT_PATIENCE`]).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        crate::exited_within(&mut self.child, CLIENT_PATIENCE)
            .unwrap_or_else(|| panic!("{} ran longer than {CLIENT_PATIENCE:?}", self.what))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` run inside `group`: a shell joins the group, then execs the command (same
/// pid), so every socket it opens is the group's.
pub fn in_cgroup(command: &Command, group: &ChildGroup) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(group.procs_file())
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// How the collector names a child cgroup of the root when there is no cluster.
pub fn identity_of(group: &ChildGroup) -> Identity {
    let name = group
        .path()
        .file_name()
        .expect("a child cgroup has a name")
        .to_string_lossy();
    Identity::node_process(name)
}

fn apiserver_of(snap: &Snapshot, who: &Identity) -> ApiServerStats {
    snap.workloads
        .get(who)
        .and_then(|w| w.apiserver)
        .unwrap_or_default()
}

/// Whether every connection of each identity has been seen opening and closing.
fn all_closed(snap: &Snapshot, who: &[&Identity]) -> bool {
    who.iter().all(|id| {
        let api = apiserver_of(snap, id);
        api.connections > 0 && api.open_connections == 0
    })
}

/// The stand-in API server with PodLists of a realistic size (20 pods, a few KiB). A
/// connection's last TLS record (a 24-byte close_notify) may cross a close and reach no
/// socket: the server counts it written, or the kernel counts it sent, and the other side
/// never sees it. Real API server traffic dwarfs that; tiny test responses must too.
fn start_server(tls12_only: bool) -> ApiServer {
    start_server_on(IPV4, tls12_only)
}

/// [`start_server`] listening on `bind`.
fn start_server_on(bind: IpAddr, tls12_only: bool) -> ApiServer {
    ApiServer::start(ServerConfig {
        pods: 20,
        tls12_only,
        bind,
        ..ServerConfig::default()
    })
}

/// What the server really saw.
#[derive(Clone, Copy, Debug, Default)]
struct Served {
    connections: u64,
    bytes_read: u64,
    bytes_written: u64,
    requests: u64,
}

impl Served {
    fn of(server: &ApiServer) -> Self {
        Self {
            connections: server.connections_accepted(),
            bytes_read: server.bytes_read(),
            bytes_written: server.bytes_written(),
            requests: server.requests_total(),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            connections: self.connections - before.connections,
            bytes_read: self.bytes_read - before.bytes_read,
            bytes_written: self.bytes_written - before.bytes_written,
            requests: self.requests - before.requests,
        }
    }
}

/// Waits until the server has finished with every connection it accepted, so its byte
/// counters are final.
fn wait_server_done(server: &ApiServer) {
    let closed = server.wait_for(COLLECTOR_PATIENCE, |s| {
        s.connections().iter().all(|c| c.closed_ns.is_some())
    });
    assert!(
        closed,
        "server connections still open after the clients exited"
    );
}

/// Holds the collector's view of one identity to the server's ground truth, after the
/// traffic ended: connections exact, bytes within 1 %, requests within 10 %, nothing
/// left open.
fn assert_measured(label: &str, served: Served, api: ApiServerStats, evidence: &str) {
    println!(
        "{label}: connections server {} kernel {} | bytes to server {} kernel {} | \
         bytes from server {} kernel {} | requests served {} estimated {} | open streams {}",
        served.connections,
        api.connections,
        served.bytes_read,
        api.sent_bytes,
        served.bytes_written,
        api.received_bytes,
        served.requests,
        api.requests,
        api.open_streams,
    );
    assert!(served.requests > 0, "{label}: the clients made no request");
    assert_eq!(
        api.connections, served.connections,
        "{label}: connections, kernel vs server\n{evidence}"
    );
    assert!(
        api.sent_bytes.abs_diff(served.bytes_read) * 100 <= served.bytes_read,
        "{label}: bytes sent {} vs {} read by the server (more than 1 % off; retransmissions? \
         see retransmitted_bytes_are_counted_once)\n{evidence}",
        api.sent_bytes,
        served.bytes_read
    );
    assert!(
        api.received_bytes.abs_diff(served.bytes_written) * 100 <= served.bytes_written,
        "{label}: bytes received {} vs {} written by the server (more than 1 % off; \
         retransmissions? see retransmitted_bytes_are_counted_once)\n{evidence}",
        api.received_bytes,
        served.bytes_written
    );
    assert!(
        api.requests.abs_diff(served.requests) * 10 <= served.requests,
        "{label}: {} requests estimated, {} served (more than 10 % off)\n{evidence}",
        api.requests,
        served.requests
    );
    assert_eq!(
        api.open_connections, 0,
        "{label}: connections left open\n{evidence}"
    );
    assert_eq!(
        api.open_streams, 0,
        "{label}: streams left open\n{evidence}"
    );
}

/// The Rust client as a process of its own (this test binary, running
/// [`rust_h2_client_process`]), so it can run inside a cgroup: `n` GETs of the pod list
/// over one HTTP/2 connection, `concurrency` in flight.
fn rust_h2_client(server: &ApiServer, n: usize, concurrency: usize) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("path of this test binary"));
    command
        .args([
            "--exact",
            "apiserver::rust_h2_client_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env(
            RUST_CLIENT_ENV,
            format!(
                "{} {} {PODS} {n} {concurrency}",
                server.addr(),
                server.ca_path().display()
            ),
        );
    command
}

const RUST_CLIENT_ENV: &str = "HEADROOM_TEST_RUST_H2_CLIENT";

/// Not a test: the client process [`rust_h2_client`] starts (does nothing without its
/// environment variable).
#[test]
#[ignore = "the Rust HTTP/2 client process that other kernel tests start in a cgroup"]
fn rust_h2_client_process() {
    let Ok(spec) = std::env::var(RUST_CLIENT_ENV) else {
        return;
    };
    let words: Vec<&str> = spec.split(' ').collect();
    let [addr, ca, path, n, concurrency] = words[..] else {
        panic!("{RUST_CLIENT_ENV}: want ADDR CA PATH N CONCURRENCY, got {spec:?}");
    };
    let ca_pem = std::fs::read_to_string(ca).expect("read the server's CA");
    let statuses = server::rust_h2_client(
        addr.parse().expect("server address"),
        &ca_pem,
        path,
        n.parse().expect("request count"),
        concurrency.parse().expect("concurrency"),
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

/// A traffic pattern: the client commands, run one after another.
struct Pattern {
    name: &'static str,
    tls12_only: bool,
    clients: fn(&ApiServer) -> Vec<Command>,
}

fn curl_urls(server: &ApiServer, flags: &[&str], paths: &[&str]) -> Command {
    let mut command = server.curl();
    command.args(flags);
    for path in paths {
        command.arg(server.url(path)).arg("-o").arg("/dev/null");
    }
    command
}

/// curl's `--connect-to` that sends it through an IPv6 socket to the IPv4 server's
/// v4-mapped address (`::ffff:127.0.0.1`), as a dual-stack client connects; the URLs and
/// the certificate check keep the IPv4 address.
fn via_v4_mapped(server: &ApiServer) -> String {
    let IpAddr::V4(ip) = server.addr().ip() else {
        panic!(
            "a v4-mapped address needs an IPv4 server, not {}",
            server.addr()
        );
    };
    format!("::[{}]:{}", ip.to_ipv6_mapped(), server.addr().port())
}

const KEEPALIVE_PATHS: [&str; 8] = [
    "/version", "/api", "/apis", "/api/v1", PODS, PODS, "/api", PODS,
];

fn h2_paths() -> Vec<&'static str> {
    (0..12)
        .map(|i| if i % 2 == 0 { PODS } else { "/api/v1" })
        .collect()
}

const PATTERNS: &[Pattern] = &[
    Pattern {
        name: "curl-h1-keepalive",
        tls12_only: false,
        clients: |s| vec![curl_urls(s, &["--http1.1"], &KEEPALIVE_PATHS)],
    },
    Pattern {
        name: "curl-h1-keepalive-v4-mapped",
        tls12_only: false,
        // cgroup/connect6 sees ::ffff:127.0.0.1; the packets are IPv4.
        clients: |s| {
            let flags = ["--http1.1", "--connect-to", &via_v4_mapped(s)];
            vec![curl_urls(s, &flags, &KEEPALIVE_PATHS)]
        },
    },
    Pattern {
        name: "curl-h1-conn-per-request",
        tls12_only: false,
        // A process per request: each connects, asks once, says close_notify and goes.
        clients: |s| {
            [PODS, "/version", PODS, "/api", PODS, PODS]
                .iter()
                .map(|path| curl_urls(s, &["--http1.1"], &[path]))
                .collect()
        },
    },
    Pattern {
        name: "curl-h2-multiplexed",
        tls12_only: false,
        clients: |s| {
            vec![curl_urls(
                s,
                &["--http2", "--parallel", "--parallel-max", "12"],
                &h2_paths(),
            )]
        },
    },
    Pattern {
        name: "curl-h2-multiplexed-tls12",
        tls12_only: true,
        clients: |s| {
            vec![curl_urls(
                s,
                &["--http2", "--parallel", "--parallel-max", "12"],
                &h2_paths(),
            )]
        },
    },
    Pattern {
        name: "rust-h2-multiplexed",
        tls12_only: false,
        clients: |s| vec![rust_h2_client(s, 100, 10)],
    },
    Pattern {
        name: "kubectl",
        tls12_only: false,
        clients: |s| {
            let mut commands = Vec::new();
            for _ in 0..2 {
                let mut get = s.kubectl();
                get.args(["get", "pods"]);
                commands.push(get);
            }
            for _ in 0..3 {
                let mut raw = s.kubectl();
                raw.args(["get", "--raw", PODS]);
                commands.push(raw);
            }
            commands
        },
    },
];

/// Runs one pattern's clients in a cgroup of their own against the stand-in on `bind`
/// and holds the collector's numbers for that cgroup to the server's.
fn check(name: &str, bind: IpAddr) {
    require_root();
    let pattern = PATTERNS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pattern {name}"));
    let server = start_server_on(bind, pattern.tls12_only);
    let family = if bind.is_ipv6() { "ipv6" } else { "ipv4" };
    // The same pattern runs over both families at once: a cgroup for each.
    let pod = child_group(&format!("api-{name}-{family}"));
    let label = format!("{name} over {family} ({})", server.addr());
    let mut collector = Collector::attach(&[(server.addr(), EndpointKind::ApiServer)]);
    let clients = (pattern.clients)(&server);
    for client in &clients {
        collector.run_ok(vec![in_cgroup(client, &pod)]);
    }
    wait_server_done(&server);
    let who = identity_of(&pod);
    let snap = collector.snapshot_when(|snap| all_closed(snap, &[&who]));
    assert_measured(
        &label,
        Served::of(&server),
        apiserver_of(&snap, &who),
        &collector.evidence(&pod),
    );
    assert_eq!(
        snap.collector.events_lost, 0,
        "{label}: events lost: {:?}",
        snap.collector
    );
}

macro_rules! pattern_tests {
    ($($test:ident => $name:literal on $bind:expr,)*) => {$(
        #[test]
        fn $test() {
            check($name, $bind);
        }
    )*};
}

pattern_tests! {
    curl_http1_keepalive => "curl-h1-keepalive" on IPV4,
    curl_http1_connection_per_request => "curl-h1-conn-per-request" on IPV4,
    curl_http2_multiplexed => "curl-h2-multiplexed" on IPV4,
    curl_http2_multiplexed_tls12 => "curl-h2-multiplexed-tls12" on IPV4,
    kubectl_discovery_list_and_raw_get => "kubectl" on IPV4,
    // IPv6: connect6 sees the client's sockaddr_in6, the skb hooks IPv6 headers.
    curl_http1_keepalive_over_ipv6 => "curl-h1-keepalive" on IPV6,
    curl_http2_multiplexed_over_ipv6 => "curl-h2-multiplexed" on IPV6,
    // An IPv6 socket to a v4-mapped address: connect6 with the IPv4 endpoint's key.
    curl_http1_keepalive_v4_mapped => "curl-h1-keepalive-v4-mapped" on IPV4,
}

/// The Rust (hyper) HTTP/2 client with requests in flight together: it coalesces the
/// HEADERS of the requests it has queued into one record.
#[test]
fn rust_http2_client_multiplexed() {
    check("rust-h2-multiplexed", IPV4);
}

/// Two pods in the root network namespace (like hostNetwork pods: same addresses, same
/// ports space) talk to one API server; each is measured as itself. Ground truth per pod
/// from the server's counters before and after each one's turn.
#[test]
fn two_host_network_pods_are_attributed_separately() {
    require_root();
    let server = start_server(false);
    let first = child_group("api-hostnet-a");
    let second = child_group("api-hostnet-b");
    let mut collector = Collector::attach(&[(server.addr(), EndpointKind::ApiServer)]);

    let before = Served::of(&server);
    collector.run_ok(vec![in_cgroup(
        &curl_urls(&server, &["--http1.1"], &KEEPALIVE_PATHS),
        &first,
    )]);
    wait_server_done(&server);
    let after_first = Served::of(&server);
    let mut kubectl = server.kubectl();
    kubectl.args(["get", "pods"]);
    collector.run_ok(vec![
        in_cgroup(&kubectl, &second),
        in_cgroup(&curl_urls(&server, &["--http2"], &[PODS]), &second),
    ]);
    wait_server_done(&server);
    let after_second = Served::of(&server);

    let (a, b) = (identity_of(&first), identity_of(&second));
    let snap = collector.snapshot_when(|snap| all_closed(snap, &[&a, &b]));
    assert_measured(
        "pod a (curl)",
        after_first.since(before),
        apiserver_of(&snap, &a),
        &collector.evidence(&first),
    );
    assert_measured(
        "pod b (kubectl, curl)",
        after_second.since(after_first),
        apiserver_of(&snap, &b),
        &collector.evidence(&second),
    );
}

/// A watch is an open stream while the server streams it, and closed once the client has
/// gone: kubectl (HTTP/2) in one pod, curl (HTTP/1.1, chunked) in another, each against
/// its own server so each pod has its own ground truth.
#[test]
fn a_watch_is_an_open_stream_while_it_streams() {
    require_root();
    let kubectl_server = start_server(false);
    let curl_server = start_server(false);
    let kubectl_pod = child_group("api-watch-kubectl");
    let curl_pod = child_group("api-watch-curl");
    let mut collector = Collector::attach(&[
        (kubectl_server.addr(), EndpointKind::ApiServer),
        (curl_server.addr(), EndpointKind::ApiServer),
    ]);
    let (kubectl_id, curl_id) = (identity_of(&kubectl_pod), identity_of(&curl_pod));

    let mut kubectl = kubectl_server.kubectl();
    kubectl.args(["get", "pods", "--watch"]);
    let mut curl = curl_server.curl();
    curl.arg("--http1.1")
        .arg(curl_server.url(&format!("{PODS}?watch=1")));
    let mut watches = [
        Background::start(in_cgroup(&kubectl, &kubectl_pod)),
        Background::start(in_cgroup(&curl, &curl_pod)),
    ];
    let deadline = Instant::now() + COLLECTOR_PATIENCE;
    while (kubectl_server.open_watches(), curl_server.open_watches()) != (1, 1)
        && Instant::now() < deadline
    {
        collector.pump_for(Duration::from_millis(20));
    }
    assert_eq!(
        (kubectl_server.open_watches(), curl_server.open_watches()),
        (1, 1),
        "both watches should be streaming"
    );
    // Streams open after a couple of unsolicited pushes (one every 200 ms here).
    let open = collector.snapshot_when(|snap| {
        apiserver_of(snap, &kubectl_id).open_streams == 1
            && apiserver_of(snap, &curl_id).open_streams == 1
    });
    for watch in &mut watches {
        watch.assert_running();
    }
    assert_eq!(
        (kubectl_server.open_watches(), curl_server.open_watches()),
        (1, 1),
        "a watch ended early"
    );
    for (label, who) in [("kubectl", &kubectl_id), ("curl", &curl_id)] {
        let api = apiserver_of(&open, who);
        println!(
            "{label} watch streaming: server open watches 1, estimated open streams {}, \
             open connections {}",
            api.open_streams, api.open_connections
        );
        assert_eq!(api.open_streams, 1, "{label}: the watch is streaming");
        assert!(api.open_connections >= 1, "{label}: {api:?}");
    }

    drop(watches);
    wait_server_done(&kubectl_server);
    wait_server_done(&curl_server);
    assert_eq!(
        kubectl_server.open_watches() + curl_server.open_watches(),
        0
    );
    let closed = collector.snapshot_when(|snap| all_closed(snap, &[&kubectl_id, &curl_id]));
    assert_measured(
        "kubectl get pods --watch",
        Served::of(&kubectl_server),
        apiserver_of(&closed, &kubectl_id),
        &collector.evidence(&kubectl_pod),
    );
    assert_measured(
        "curl --http1.1 pods?watch=1",
        Served::of(&curl_server),
        apiserver_of(&closed, &curl_id),
        &collector.evidence(&curl_pod),
    );
}

/// One connection per request where the server closes (`Connection: close`): the client's
/// TLS close_notify (a 24-byte TLS 1.3 alert record) reaches a socket the server has
/// already closed, so the server never reads it while the kernel rightly counts it as
/// sent. Everything else holds to the server's counts as usual.
#[test]
fn server_closed_connections_count_the_unread_close_notify() {
    require_root();
    const CLOSE_NOTIFY: u64 = 5 + 2 + 1 + 16;
    let server = start_server(false);
    let pod = child_group("api-conn-close");
    let mut collector = Collector::attach(&[(server.addr(), EndpointKind::ApiServer)]);
    let curl = curl_urls(
        &server,
        &["--http1.1", "-H", "Connection: close"],
        &[PODS; 6],
    );
    collector.run_ok(vec![in_cgroup(&curl, &pod)]);
    wait_server_done(&server);
    let who = identity_of(&pod);
    let snap = collector.snapshot_when(|snap| all_closed(snap, &[&who]));
    let mut served = Served::of(&server);
    println!(
        "connection: close: server read {} bytes; + {} unread close_notify alerts of \
         {CLOSE_NOTIFY} bytes",
        served.bytes_read, served.connections
    );
    served.bytes_read += served.connections * CLOSE_NOTIFY;
    assert_measured(
        "curl Connection: close",
        served,
        apiserver_of(&snap, &who),
        &collector.evidence(&pod),
    );
}

const TCP_LOOP_ENV: &str = "HEADROOM_TEST_TCP_LOOP";
/// The port the loop process listens on, in its own network namespace.
const TCP_LOOP_PORT: u16 = 6443;

/// Not a test: the process [`retransmitted_bytes_are_counted_once`] starts in a cgroup and
/// a network namespace of its own. It connects to itself on 127.0.0.1:[`TCP_LOOP_PORT`],
/// writes the number of bytes its environment variable says, and checks that the other end
/// read exactly those (does nothing without the variable).
#[test]
#[ignore = "the TCP process that a kernel test starts in a cgroup and network namespace"]
fn tcp_loop_process() {
    use std::io::{Read as _, Write as _};
    let Ok(spec) = std::env::var(TCP_LOOP_ENV) else {
        return;
    };
    let bytes: usize = spec.parse().expect("byte count");
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", TCP_LOOP_PORT)).expect("bind the loop port");
    let reader = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n,
            }
        }
    });
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", TCP_LOOP_PORT)).expect("connect to self");
    stream.write_all(&vec![b'x'; bytes]).expect("write");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shut down");
    let read = reader.join().expect("reader");
    println!("tcp loop: wrote {bytes} bytes, read {read}");
    assert_eq!(read, bytes);
}

/// TCP sends a segment again when it was lost (or its ACK was late: a tail loss probe, as
/// on a busy node): the application's bytes cross the egress hook twice. Bytes sent are
/// the application's bytes, each counted once. A token bucket with a tiny queue on the
/// loopback of a private network namespace (the only way to make loss on demand here:
/// this kernel has no netem) drops segments for sure.
#[test]
fn retransmitted_bytes_are_counted_once() {
    require_root();
    const BYTES: u64 = 256 << 10;
    let pod = child_group("api-retransmit");
    let endpoint = SocketAddr::from(([127, 0, 0, 1], TCP_LOOP_PORT));
    let mut collector = Collector::attach(&[(endpoint, EndpointKind::ApiServer)]);
    let script = "ip link set lo up && ip link set lo mtu 1500 \
                  && tc qdisc add dev lo root tbf rate 200mbit burst 3000 limit 3000 \
                  && \"$0\" --exact apiserver::tcp_loop_process --ignored --nocapture \
                     --test-threads=1 --quiet \
                  && tc -s qdisc show dev lo && nstat -asz TcpRetransSegs TcpOutSegs";
    let mut command = Command::new("unshare");
    command
        .args(["--net", "sh", "-c", script])
        .arg(std::env::current_exe().expect("path of this test binary"))
        .env(TCP_LOOP_ENV, BYTES.to_string());
    let output = collector.run_ok(vec![in_cgroup(&command, &pod)]);
    let report = String::from_utf8_lossy(&output[0].stdout);
    println!("{report}");
    let dropped = report
        .split_once("dropped ")
        .and_then(|(_, rest)| rest.split(',').next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .expect("the qdisc's statistics");
    assert!(
        dropped > 0,
        "the token bucket dropped nothing: no loss made"
    );

    let traffic = collector.traffic_of(&pod);
    println!(
        "retransmission: application wrote {BYTES} bytes; the qdisc dropped {dropped} \
         segments; kernel counted sent {} bytes in {} packets",
        traffic.sent_bytes, traffic.sent_packets
    );
    assert_eq!(
        traffic.sent_bytes, BYTES,
        "bytes sent, kernel vs what the application wrote (retransmissions counted again?)"
    );
}

/// The last segment of a connection can reach user space after its Close: the ingress
/// program read the socket table before `sock_release` emptied it, but its event landed
/// in the ring buffer after the Close (seen here under load: `… >20 X20 <20` in a
/// socket's trace, the server's close_notify arriving as the client exits). Such a
/// segment must not open the connection again: it would stay open for ever. The events
/// below are exactly that order, fed to the Agent as the ring buffer hands them over.
#[test]
fn a_segment_after_close_does_not_reopen_the_connection() {
    require_root();
    let pod = child_group("api-late-segment");
    let mut collector = Collector::attach(&[]);
    let start = agent::monotonic_ns();
    let header = |kind, direction, ms: u64| event::Header {
        kind,
        direction,
        ts_ns: start + ms * 1_000_000,
        cgroup_id: pod.id(),
        cookie: u64::MAX - u64::from(std::process::id()),
        tgid: std::process::id(),
        endpoint_kind: EndpointKind::ApiServer as u32,
    };
    let segment = |direction, ms, content_type, length: u16| {
        let mut record = [event::Record::default(); event::MAX_RECORDS];
        record[0] = event::Record {
            content_type,
            reserved: 0,
            length,
        };
        events::Event::Segment(event::Segment {
            header: header(event::SEGMENT, direction, ms),
            payload_len: 5 + u32::from(length),
            records: 1,
            records_beyond: 0,
            desync: 0,
            record,
        })
    };
    let events = [
        events::Event::Connect(event::Connect {
            header: header(event::CONNECT, event::EGRESS, 0),
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            protocol: 6,
            reserved: 0,
        }),
        // ClientHello, the server's flight, then the client's Finished (TLS 1.3).
        segment(event::EGRESS, 1, 22, 512),
        segment(event::INGRESS, 2, 22, 122),
        segment(event::EGRESS, 3, 23, 53),
        // A request and its response, then the client's close_notify.
        segment(event::EGRESS, 4, 23, 100),
        segment(event::INGRESS, 5, 23, 2_000),
        segment(event::EGRESS, 6, 23, 19),
        events::Event::Close(event::Close {
            header: header(event::CLOSE, event::EGRESS, 7),
        }),
        // The server's close_notify, delivered after the Close.
        segment(event::INGRESS, 7, 23, 19),
    ];
    for ev in events {
        collector.agent.handle(Ok(ev));
    }
    let who = identity_of(&pod);
    let snap = collector.snapshot();
    let api = apiserver_of(&snap, &who);
    println!("after Connect … Close, late segment: {api:?}");
    assert_eq!(api.requests, 1, "the one request");
    assert_eq!(
        api.open_connections, 0,
        "a segment after the Close reopened the connection"
    );
}
