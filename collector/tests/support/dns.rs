//! A real DNS server and real DNS clients for the tests, and the ground truth for
//! Headroom's DNS measurements.
//!
//! [`Dnsmasq`] runs `/usr/sbin/dnsmasq` on its own loopback address (127.53.x.y, port 53:
//! getent can only use port 53), or for IPv6 on ::1 at a port of its own
//! ([`Dnsmasq::start_ipv6`]: there is one IPv6 loopback address; dig asks any port), with
//! no upstream and no /etc/hosts. It answers
//! [`EXAMPLE_COM`] (A and AAAA), [`KUBERNETES`] (A only: AAAA is an empty NOERROR) and the
//! SRV record [`KUBERNETES_SRV`]; every other name under `cluster.local` is NXDOMAIN, any
//! other name REFUSED (which glibc asks again once). Its query log, parsed by
//! [`Dnsmasq::queries`], is what the server really received: qtype, name, and the
//! client's address and port (the socket's local port, as the kernel events carry it).
//!
//! [`Client`]s are the commands the tests run: `dig` over UDP or TCP, and
//! `getent ahosts` resolving through glibc with this server's resolv.conf
//! ([`SEARCH`], `options ndots:5`) bind-mounted over /etc/resolv.conf in a private mount
//! namespace (`unshare -m`), so it makes the search-list expansion a pod would. A client
//! runs as it is ([`Client::run`]) or inside a cgroup ([`Client::run_in_cgroup`]: the
//! shell writes its pid to `cgroup.procs`, then execs the client, so every packet is the
//! cgroup's). Each needs root (port 53, mounts), as the kernel tests do.
#![allow(
    dead_code,
    reason = "included by several test crates, each using a different part"
)]

use std::{
    fs,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// The search list of the clients' resolv.conf, as in a pod of namespace `ns1`.
pub const SEARCH: [&str; 3] = [
    "ns1.svc.cluster.local",
    "svc.cluster.local",
    "cluster.local",
];
pub const NDOTS: usize = 5;

/// Answered with [`EXAMPLE_COM_V4`] and [`EXAMPLE_COM_V6`].
pub const EXAMPLE_COM: &str = "example.com";
pub const EXAMPLE_COM_V4: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);
pub const EXAMPLE_COM_V6: &str = "2606:2800:220:1:248:1893:25c8:1946";
/// Answered with [`KUBERNETES_V4`]; its AAAA is an empty NOERROR (NODATA).
pub const KUBERNETES: &str = "kubernetes.default.svc.cluster.local";
pub const KUBERNETES_V4: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// An SRV record pointing at [`KUBERNETES`]:443.
pub const KUBERNETES_SRV: &str = "_https._tcp.kubernetes.default.svc.cluster.local";

/// How long to wait for dnsmasq to start, or for its log to show a query.
const PATIENCE: Duration = Duration::from_secs(5);

/// One query as dnsmasq logged it on arrival.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedQuery {
    /// dnsmasq's serial number of the query.
    pub serial: u64,
    /// The client's address and port.
    pub from: SocketAddr,
    /// `A`, `AAAA`, `SRV`, … as dnsmasq names it (`type=65` style for some).
    pub qtype: String,
    /// The name as sent (dnsmasq keeps its case).
    pub name: String,
}

/// One answer as dnsmasq logged it (`config NAME is ANSWER`): an address, `NXDOMAIN`,
/// `NODATA`, `REFUSED (EDE: not ready)`, … — one line per answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedReply {
    /// The serial number of the query it answers.
    pub serial: u64,
    pub name: String,
    pub answer: String,
}

/// A running dnsmasq; stopped, and its files removed, on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    addr: IpAddr,
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq on port 53 of a loopback address no other server here uses (tests
    /// run in parallel, in several processes). Panics, saying why, if it cannot.
    pub fn start() -> Self {
        // Spread processes over the third octet, servers of one process over the fourth.
        Self::start_at("a 127.53.x.y address", |pid, n| {
            let addr = Ipv4Addr::new(127, 53, (pid % 251) as u8 + 1, (n % 251) as u8 + 1);
            (IpAddr::V4(addr), 53)
        })
    }

    /// Starts dnsmasq on ::1 at a port no other server here uses: below the ephemeral
    /// range, processes spread over blocks of 32 ports. Only dig can ask it (glibc asks
    /// port 53 only). Panics, saying why, if it cannot.
    pub fn start_ipv6() -> Self {
        Self::start_at("::1", |pid, n| {
            let port = 20_000 + (pid % 251) as u16 * 32 + (n % 32) as u16;
            (IpAddr::V6(Ipv6Addr::LOCALHOST), port)
        })
    }

    /// Tries the addresses `candidate(pid, n)` gives for the n-th server of this process
    /// until dnsmasq starts on one that nothing else holds.
    fn start_at(what: &str, candidate: impl Fn(u32, u32) -> (IpAddr, u16)) -> Self {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let mut last_error = String::new();
        for _ in 0..32 {
            let n = STARTED.fetch_add(1, Ordering::Relaxed);
            let (addr, port) = candidate(pid, n);
            if !port_free(addr, port) {
                continue;
            }
            let dir = std::env::temp_dir().join(format!("headroom-dnsmasq-{pid}-{n}"));
            fs::create_dir_all(&dir).expect("create the dnsmasq scratch directory");
            match Self::spawn(addr, port, &dir) {
                Ok(child) => {
                    let server = Self {
                        addr,
                        port,
                        child,
                        dir,
                    };
                    server.write_client_files();
                    return server;
                }
                Err(error) => {
                    last_error = error;
                    let _ = fs::remove_dir_all(&dir);
                }
            }
        }
        panic!("could not start {DNSMASQ} on {what}: {last_error}");
    }

    fn spawn(addr: IpAddr, port: u16, dir: &Path) -> Result<Child, String> {
        let log = dir.join("queries.log");
        let mut child = Command::new(DNSMASQ)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={addr}"),
                &format!("--port={port}"),
                "--pid-file=",
                "--user=root",
                "--cache-size=0",
                "--log-queries=extra",
                &format!("--log-facility={}", log.display()),
                &format!("--host-record={EXAMPLE_COM},{EXAMPLE_COM_V4},{EXAMPLE_COM_V6}"),
                &format!("--host-record={KUBERNETES},{KUBERNETES_V4}"),
                &format!("--srv-host={KUBERNETES_SRV},{KUBERNETES},443"),
                "--local=/cluster.local/",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {DNSMASQ} (Debian package dnsmasq-base): {e}"))?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let output = child
                    .wait_with_output()
                    .map(|o| o.stderr)
                    .unwrap_or_default();
                return Err(format!(
                    "dnsmasq on {} exited with {status}: {}",
                    SocketAddr::new(addr, port),
                    String::from_utf8_lossy(&output).trim()
                ));
            }
            // Started once it logged so and holds the port (our own bind is refused).
            let started = fs::read_to_string(&log).is_ok_and(|text| text.contains("started"));
            if started && !port_free(addr, port) {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "dnsmasq on {} did not start within {PATIENCE:?}",
                    SocketAddr::new(addr, port)
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn write_client_files(&self) {
        let resolv_conf = format!(
            "search {}\noptions ndots:{NDOTS}\nnameserver {}\n",
            SEARCH.join(" "),
            self.addr
        );
        fs::write(self.resolv_conf(), resolv_conf).expect("write resolv.conf");
        // Only DNS answers host lookups: /etc/hosts and other sources must not.
        fs::write(self.nsswitch_conf(), "hosts: dns\n").expect("write nsswitch.conf");
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The server's address and port, e.g. for the collector's DNS endpoint map.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    /// The resolv.conf the getent clients use (right only on port 53: resolv.conf names
    /// no port).
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    fn nsswitch_conf(&self) -> PathBuf {
        self.dir.join("nsswitch.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("queries.log")
    }

    /// Every query dnsmasq has received so far, in arrival order.
    pub fn queries(&self) -> Vec<LoggedQuery> {
        fs::read_to_string(self.log_path())
            .map(|text| parse_log(&text))
            .unwrap_or_default()
    }

    /// Every answer dnsmasq has logged so far, in order (the server's side of rcodes).
    pub fn replies(&self) -> Vec<LoggedReply> {
        fs::read_to_string(self.log_path())
            .map(|text| parse_replies(&text))
            .unwrap_or_default()
    }

    /// Serial numbers of the queries dnsmasq answered NXDOMAIN, in order.
    pub fn nxdomain_serials(&self) -> Vec<u64> {
        let mut serials: Vec<u64> = self
            .replies()
            .iter()
            .filter(|r| r.answer == "NXDOMAIN")
            .map(|r| r.serial)
            .collect();
        serials.dedup();
        serials
    }

    /// Waits (up to a few seconds) until at least `count` queries are logged; returns
    /// them all. A test asserts the exact count on what it gets.
    pub fn wait_for_queries(&self, count: usize) -> Vec<LoggedQuery> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let queries = self.queries();
            if queries.len() >= count || Instant::now() > deadline {
                return queries;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// `dig` over UDP for `name` and `qtype` (`A`, `AAAA`, `SRV`, …): one try, no retry.
    pub fn dig(&self, name: &str, qtype: &str) -> Client {
        Client::new(self.dig_args(name, qtype))
    }

    /// `dig +tcp`: the same over TCP.
    pub fn dig_tcp(&self, name: &str, qtype: &str) -> Client {
        let mut args = self.dig_args(name, qtype);
        args.push("+tcp".to_owned());
        Client::new(args)
    }

    fn dig_args(&self, name: &str, qtype: &str) -> Vec<String> {
        [
            "dig",
            &format!("@{}", self.addr),
            "-p",
            &self.port.to_string(),
            "+tries=1",
            "+time=3",
            name,
            qtype,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `getent ahosts NAME`: glibc's getaddrinfo (A and AAAA side by side) with this
    /// server's resolv.conf, so the search list applies as in a pod.
    pub fn getent_ahosts(&self, name: &str) -> Client {
        self.getent("ahosts", name)
    }

    /// `getent ahostsv4 NAME`: the same, A queries only.
    pub fn getent_ahostsv4(&self, name: &str) -> Client {
        self.getent("ahostsv4", name)
    }

    fn getent(&self, database: &str, name: &str) -> Client {
        assert_eq!(
            self.port, 53,
            "glibc asks nameservers on port 53 only: start this server with Dnsmasq::start"
        );
        // The files are passed as arguments, not spliced into the script: no quoting.
        let script = "mount --bind \"$0\" /etc/resolv.conf \
                      && mount --bind \"$1\" /etc/nsswitch.conf \
                      && exec getent \"$2\" \"$3\"";
        Client::new(vec![
            "unshare".to_owned(),
            "--mount".to_owned(),
            "--propagation".to_owned(),
            "private".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
            self.resolv_conf().display().to_string(),
            self.nsswitch_conf().display().to_string(),
            database.to_owned(),
            name.to_owned(),
        ])
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether nothing holds `addr`:`port` (UDP or TCP): we can bind both ourselves.
fn port_free(addr: IpAddr, port: u16) -> bool {
    let udp = UdpSocket::bind((addr, port));
    let tcp = TcpListener::bind((addr, port));
    match (udp, tcp) {
        (Ok(_), Ok(_)) => true,
        (Err(e), _) | (_, Err(e)) if e.kind() == ErrorKind::PermissionDenied => {
            panic!("binding port {port} needs root (run the DNS tests as root): {e}")
        }
        _ => false,
    }
}

/// Parses dnsmasq's `--log-queries=extra` lines:
/// `Nov 22 04:54:13 dnsmasq[25578]: 1 127.0.0.1/58296 query[A] example.com from 127.0.0.1`.
pub fn parse_log(text: &str) -> Vec<LoggedQuery> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("]: ")?;
            let mut words = rest.split_whitespace();
            let serial = words.next()?.parse().ok()?;
            let (ip, port) = words.next()?.rsplit_once('/')?;
            let qtype = words.next()?.strip_prefix("query[")?.strip_suffix(']')?;
            let name = words.next()?;
            Some(LoggedQuery {
                serial,
                from: SocketAddr::new(ip.parse().ok()?, port.parse().ok()?),
                qtype: qtype.to_owned(),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// Parses dnsmasq's answer lines:
/// `Nov 22 05:25:45 dnsmasq[5026]: 1 127.0.0.1/38075 config nothere.cluster.local is NXDOMAIN`.
pub fn parse_replies(text: &str) -> Vec<LoggedReply> {
    text.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once("]: ")?;
            let mut words = rest.splitn(4, ' ');
            let serial = words.next()?.parse().ok()?;
            let _client = words.next()?;
            if words.next()? != "config" {
                return None;
            }
            let (name, answer) = words.next()?.split_once(" is ")?;
            Some(LoggedReply {
                serial,
                name: name.to_owned(),
                answer: answer.to_owned(),
            })
        })
        .collect()
}

/// The names glibc tries for `name` with [`SEARCH`] and ndots:5, in order, until one is
/// answered: under each suffix first when the name has fewer than 5 dots, as is first
/// otherwise; only as is when it ends with a dot.
pub fn search_tries(name: &str) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        return vec![absolute.to_owned()];
    }
    let expanded = SEARCH.iter().map(|suffix| format!("{name}.{suffix}"));
    if name.matches('.').count() >= NDOTS {
        std::iter::once(name.to_owned()).chain(expanded).collect()
    } else {
        expanded.chain(std::iter::once(name.to_owned())).collect()
    }
}

/// A client command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    argv: Vec<String>,
}

impl Client {
    pub fn new(argv: Vec<String>) -> Self {
        assert!(!argv.is_empty(), "a client needs a program");
        Self { argv }
    }

    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The command line for `sh -c`, every argument single-quoted.
    pub fn shell(&self) -> String {
        self.argv
            .iter()
            .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The command, to run as it is.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]).stdin(Stdio::null());
        command
    }

    /// The command run inside the cgroup whose `cgroup.procs` is `procs`: a shell joins
    /// the group, then execs the client (same pid), so all its traffic is the group's.
    pub fn command_in_cgroup(&self, procs: &Path) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("echo $$ > \"$0\" && exec \"$@\"")
            .arg(procs)
            .args(&self.argv)
            .stdin(Stdio::null());
        command
    }

    /// Runs the client to completion. A client that cannot start fails the test.
    pub fn run(&self) -> Output {
        self.command()
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.argv[0]))
    }

    /// Runs the client to completion inside a cgroup (see [`Self::command_in_cgroup`]).
    pub fn run_in_cgroup(&self, procs: &Path) -> Output {
        self.command_in_cgroup(procs)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} in {}: {e}", self.argv[0], procs.display()))
    }
}

/// The status dig printed (`NOERROR`, `NXDOMAIN`, …) from its
/// `;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242` line.
pub fn dig_status(output: &Output) -> Option<String> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (_, rest) = stdout.split_once(", status: ")?;
    let status = rest.split(',').next()?;
    Some(status.trim().to_owned())
}

/// The distinct addresses `getent ahosts` printed, in order.
pub fn getent_addresses(output: &Output) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(addr) = line.split_whitespace().next().and_then(|w| w.parse().ok())
            && !addresses.contains(&addr)
        {
            addresses.push(addr);
        }
    }
    addresses
}
