//! What the collector costs the node it runs on, measured against baselines taken in
//! the same run (`cargo xtask bench`, as root). Prints tables; asserts nothing.
//!
//! 1. Kernel run time per program run (the kernel's BPF stats) for the fast path (a
//!    packet to neither the API server nor DNS), the API-server path and the DNS path,
//!    against empty programs of the same type attached beside them (the floor).
//! 2. Loopback TCP throughput (iperf3, client and server pinned apart) without and with
//!    the collector's programs.
//! 3. DNS throughput (dnsperf against dnsmasq) without the collector, with it, with
//!    `tcpdump -w /dev/null port 53` instead, and with empty programs at the collector's
//!    hooks (what any program there costs); the collector's CPU and peak RSS meanwhile.
//!    dnsperf and dnsmasq are pinned to CPUs of their own when there are two, which
//!    steadies queries/s; the capturing process runs wherever the scheduler puts it.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::OwnedFd,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr},
};
use collector::{cgroup, ebpf::Probes, endpoint};
use collector_ebpf::{EndpointKind, program};

static FLOOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));
const COLLECTOR: &str = env!("CARGO_BIN_EXE_headroom-collector");
/// Rounds per configuration; configurations alternate so drift hits all alike.
const ROUNDS: usize = 3;
/// Rounds of the iperf3 comparison (its figure swings by ±10% between runs).
const IPERF_ROUNDS: usize = 5;
/// Rounds of the DNS comparison (its runs are short; more rounds steady the median).
const DNS_ROUNDS: usize = 7;
const DNS_ADDR: &str = "127.0.9.53";

fn main() -> anyhow::Result<()> {
    // cargo bench passes --bench; section names may follow (`-- dns`) to run only those.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted =
        |section: &str| only.is_empty() || only.iter().any(|o| section.contains(o.as_str()));
    if fs::read_to_string("/proc/self/status")?
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) != Some("0"))
    {
        bail!("the benchmark loads eBPF programs: run it as root (`cargo xtask bench`)");
    }
    let root = cgroup::find_root()?;
    if wanted("runtime") {
        program_run_time(&root)?;
    }
    if wanted("iperf3") {
        tcp_throughput(&root)?;
    }
    if wanted("dns") {
        dns_throughput()?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 1. ns per program run

/// Run count and total run time of one program so far.
fn stats(ebpf: &Ebpf, name: &str) -> anyhow::Result<(u64, u64)> {
    let info = ebpf
        .program(name)
        .with_context(|| format!("program {name}"))?
        .info()?;
    Ok((info.run_count(), info.run_time().as_nanos() as u64))
}

fn program_run_time(root: &std::path::Path) -> anyhow::Result<()> {
    let _stats: OwnedFd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling the kernel's BPF run-time statistics")?;
    let floor = attach_floor(root)?;
    let mut probes = Probes::attach(root)?;
    let mut events = probes.take_events()?;

    let measured = RecordServer::start()?;
    let unmeasured = RecordServer::start()?;
    probes.add_endpoint(endpoint::key_of(measured.addr), EndpointKind::ApiServer)?;
    let dns = Dnsmasq::start()?;
    probes.add_endpoint(
        endpoint::parse(&format!("{DNS_ADDR}:53"))?,
        EndpointKind::Dns,
    )?;

    println!("\n## Kernel run time per program run (BPF stats), {ROUNDS} rounds pooled\n");
    println!("| path | runs | ns/run | floor ns/run | ratio | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let phases: [Phase<'_>; 3] = [
        (
            "fast path (neither API server nor DNS)",
            "≤ 2× floor",
            Box::new(|| exchange_records(unmeasured.addr, 300, 10)),
        ),
        (
            "API server (TLS records followed)",
            "",
            Box::new(|| exchange_records(measured.addr, 300, 10)),
        ),
        (
            "DNS (message copied)",
            "",
            Box::new(|| dns.query_burst(3000)),
        ),
    ];
    for (label, target, phase) in &phases {
        let (ours, base) = pooled(&probes, &floor, &mut events, SKB, phase)?;
        print_run_time(label, target, ours, base);
    }
    // dnsperf sends on unconnected sockets: each query also runs the sendmsg hook.
    let (ours, base) = pooled(&probes, &floor, &mut events, SENDMSG, &|| {
        dns.query_burst(3000)
    })?;
    print_run_time("DNS sendmsg (unconnected UDP)", "", ours, base);
    Ok(())
}

/// The collector's programs and the floor's beside them, per kind of hook measured.
type Programs = (&'static [&'static str], &'static [&'static str]);
const SKB: Programs = (
    &[program::SKB_EGRESS, program::SKB_INGRESS],
    &["floor_skb_egress", "floor_skb_ingress"],
);
const SENDMSG: Programs = (
    &[program::SENDMSG4, program::SENDMSG6],
    &["floor_sendmsg4", "floor_sendmsg6"],
);

/// Run count and run time of `names` together so far.
fn sum_stats(ebpf: &Ebpf, names: &[&str]) -> anyhow::Result<(u64, u64)> {
    names.iter().try_fold((0, 0), |(runs, ns), name| {
        let (r, n) = stats(ebpf, name)?;
        Ok((runs + r, ns + n))
    })
}

/// (runs, ns) of the collector's and the floor's `programs` over ROUNDS runs of `phase`.
fn pooled(
    probes: &Probes,
    floor: &Ebpf,
    events: &mut aya::maps::RingBuf<aya::maps::MapData>,
    (ours, theirs): Programs,
    phase: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<((u64, u64), (u64, u64))> {
    let (mut mine, mut base) = ((0, 0), (0, 0));
    for _ in 0..ROUNDS {
        let before = (sum_stats(probes.ebpf(), ours)?, sum_stats(floor, theirs)?);
        phase()?;
        let after = (sum_stats(probes.ebpf(), ours)?, sum_stats(floor, theirs)?);
        mine.0 += after.0.0 - before.0.0;
        mine.1 += after.0.1 - before.0.1;
        base.0 += after.1.0 - before.1.0;
        base.1 += after.1.1 - before.1.1;
        collector::events::drain(events, |_| {});
    }
    Ok((mine, base))
}

fn print_run_time(
    label: &str,
    target: &str,
    (runs, ns): (u64, u64),
    (floor_runs, floor): (u64, u64),
) {
    let ns = ns as f64 / runs.max(1) as f64;
    let floor_ns = floor as f64 / floor_runs.max(1) as f64;
    println!(
        "| {label} | {runs} | {ns:.1} | {floor_ns:.1} | {:.2}× | {target} |",
        ns / floor_ns.max(0.001)
    );
}

/// A benchmark phase: its label, its target, and the traffic it makes.
type Phase<'a> = (
    &'static str,
    &'static str,
    Box<dyn Fn() -> anyhow::Result<()> + 'a>,
);

/// A loopback server that answers each TLS-shaped record with one record.
struct RecordServer {
    addr: SocketAddr,
}

impl RecordServer {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut header = [0u8; 5];
                    while stream.read_exact(&mut header).is_ok() {
                        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                        let mut body = vec![0u8; len];
                        if stream.read_exact(&mut body).is_err()
                            || stream.write_all(&record(600)).is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Self { addr })
    }
}

/// A TLS application_data record header and body of `len` bytes.
fn record(len: u16) -> Vec<u8> {
    let mut r = vec![23, 3, 3];
    r.extend_from_slice(&len.to_be_bytes());
    r.resize(5 + usize::from(len), 0xab);
    r
}

/// `connections` connections, each sending `per_connection` records and reading replies.
fn exchange_records(
    addr: SocketAddr,
    connections: usize,
    per_connection: usize,
) -> anyhow::Result<()> {
    let request = record(200);
    let mut reply = vec![0u8; 605];
    for _ in 0..connections {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        for _ in 0..per_connection {
            s.write_all(&request)?;
            s.read_exact(&mut reply)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. iperf3

fn iperf3_gbps(port: u16) -> anyhow::Result<f64> {
    let mut server = pinned(1, "iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -s (apt-get install iperf3, or cargo xtask setup)")?;
    thread::sleep(Duration::from_millis(300));
    let out = pinned(0, "iperf3")
        .args(["-c", "127.0.0.1", "-p", &port.to_string(), "-t", "4", "-J"])
        .output()
        .context("running iperf3 -c")?;
    let _ = server.wait();
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .context("iperf3 reported no received throughput")
}

fn tcp_throughput(root: &std::path::Path) -> anyhow::Result<()> {
    const PORT: u16 = 5299;
    let mut runs: [Vec<f64>; 3] = Default::default();
    for round in 0..IPERF_ROUNDS {
        // Rotated like the DNS rounds, so that drift does not favour one configuration.
        for i in 0..3 {
            let at = (i + round) % 3;
            let gbps = match at {
                0 => iperf3_gbps(PORT)?,
                1 => {
                    let _probes = Probes::attach(root)?;
                    iperf3_gbps(PORT)?
                }
                _ => {
                    // Worst case: bulk data to a port the collector treats as the API
                    // server.
                    let mut probes = Probes::attach(root)?;
                    let mut events = probes.take_events()?;
                    probes.add_endpoint(
                        endpoint::parse(&format!("127.0.0.1:{PORT}"))?,
                        EndpointKind::ApiServer,
                    )?;
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let drain = {
                        let stop = stop.clone();
                        thread::spawn(move || {
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                collector::events::drain(&mut events, |_| {});
                                thread::sleep(Duration::from_millis(5));
                            }
                        })
                    };
                    let gbps = iperf3_gbps(PORT)?;
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = drain.join();
                    gbps
                }
            };
            runs[at].push(gbps);
        }
    }
    let [base, fast, measured] = runs;
    let (b, f, m) = (median(&base), median(&fast), median(&measured));
    println!(
        "\n## Loopback TCP throughput (iperf3 client and server pinned apart, 4 s, median of {IPERF_ROUNDS})\n"
    );
    println!("| configuration | Gbit/s | kept | target |");
    println!("|---|---:|---:|---|");
    println!("| no collector | {b:.2} | 100.0% | |");
    println!(
        "| collector, traffic not measured | {f:.2} | {:.1}% | ≥ 97% |",
        100.0 * f / b
    );
    println!(
        "| collector, traffic treated as API server | {m:.2} | {:.1}% | (worst case) |",
        100.0 * m / b
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. DNS

/// `program` pinned to `cpu` with taskset when the machine has two CPUs or more (the
/// load generator and the server then do not trade places between rounds), else as is.
fn pinned(cpu: usize, program: &str) -> Command {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    if cpus >= 2 {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string(), program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// dnsmasq on DNS_ADDR:53 answering every name under bench.test.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    fn start() -> anyhow::Result<Self> {
        let mut child = pinned(1, "dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={DNS_ADDR}"),
                "--port=53",
                "--address=/bench.test/10.0.0.1",
                "--cache-size=10000",
                "--dns-forward-max=1000",
                "--user=root",
                "--pid-file",
            ])
            .stderr(Stdio::null())
            .spawn()
            .context("starting dnsmasq (apt-get install dnsmasq-base, or cargo xtask setup)")?;
        // Ready once it answers.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            let ok = Command::new("dig")
                .args([
                    &format!("@{DNS_ADDR}"),
                    "+short",
                    "+tries=1",
                    "+time=1",
                    "ready.bench.test",
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.0.0.1"));
            if ok {
                // Answered by this dnsmasq, not another one already on the address (whose
                // CPU the per-query figures would then miss).
                if let Some(status) = child.try_wait()? {
                    bail!("dnsmasq exited ({status}): is another server on {DNS_ADDR}:53?");
                }
                return Ok(Self { child });
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("dnsmasq did not answer on {DNS_ADDR}:53")
    }

    /// Sends `n` queries with dnsperf at full speed.
    fn query_burst(&self, n: usize) -> anyhow::Result<()> {
        dnsperf(Some(n), 2).map(|_| ())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one dnsperf run did: its rate, the queries it completed and the CPU seconds
/// dnsperf itself used.
struct DnsperfRun {
    qps: f64,
    completed: u64,
    cpu_seconds: f64,
}

/// Runs dnsperf against dnsmasq.
fn dnsperf(max_queries: Option<usize>, seconds: u32) -> anyhow::Result<DnsperfRun> {
    let names = std::env::temp_dir().join("headroom-bench-names.txt");
    if !names.exists() {
        let text: String = (0..1000).map(|i| format!("n{i}.bench.test A\n")).collect();
        fs::write(&names, text)?;
    }
    let mut cmd = pinned(0, "dnsperf");
    cmd.args(["-s", DNS_ADDR, "-p", "53", "-d"])
        .arg(&names)
        .args(["-l", &seconds.to_string(), "-c", "2", "-q", "64"]);
    if let Some(n) = max_queries {
        cmd.args(["-n", &(n / 1000).max(1).to_string()]);
    }
    // dnsperf is the only child reaped meanwhile, so the children's CPU grows by its CPU.
    let cpu_before = children_cpu_seconds();
    let out = cmd
        .output()
        .context("running dnsperf (apt-get install dnsperf, or cargo xtask setup)")?;
    let cpu_seconds = children_cpu_seconds() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no '{name}' in dnsperf output:\n{text}"))
    };
    Ok(DnsperfRun {
        qps: field("Queries per second:")?,
        completed: field("Queries completed:")? as u64,
        cpu_seconds,
    })
}

/// CPU seconds (user + system) of this process's reaped children so far.
fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process so far.
fn cpu_and_peak_rss(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/pid/stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the comm start at field 3 (state); utime is 14, stime 15.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = 100.0; // USER_HZ on Linux
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 / hz, hwm))
}

fn start_collector() -> anyhow::Result<Child> {
    // HEADROOM_BENCH_COLLECTOR runs another build (e.g. the last commit's) in the same
    // setting, for a before/after comparison.
    let binary = std::env::var_os("HEADROOM_BENCH_COLLECTOR").unwrap_or_else(|| COLLECTOR.into());
    let mut child = Command::new(binary)
        .args(["--dns-server", &format!("{DNS_ADDR}:53")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting headroom-collector")?;
    let stderr = child.stderr.take().context("collector stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line?.contains("measuring") {
            thread::spawn(move || lines.for_each(drop));
            return Ok(child);
        }
    }
    bail!("the collector exited before it started measuring")
}

fn start_tcpdump() -> anyhow::Result<Child> {
    let mut child = Command::new("tcpdump")
        .args(["-i", "lo", "-w", "/dev/null", "port", "53"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tcpdump (apt-get install tcpdump, or cargo xtask setup)")?;
    let stderr = child.stderr.take().context("tcpdump stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        if line?.contains("listening on") {
            thread::spawn(move || lines.for_each(drop));
            return Ok(child);
        }
    }
    bail!("tcpdump exited before it started listening")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// What captures DNS during a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    Nothing,
    Collector,
    Tcpdump,
    /// Empty programs at the collector's packet and send hooks, attached by this process.
    Floor,
}

/// The floor programs attached at the cgroup v2 root `root` for as long as the value
/// lives.
fn attach_floor(root: &std::path::Path) -> anyhow::Result<Ebpf> {
    let root = fs::File::open(root)?;
    let mut floor = Ebpf::load(FLOOR).context("loading the floor programs")?;
    for (name, attach) in [
        ("floor_skb_egress", CgroupSkbAttachType::Egress),
        ("floor_skb_ingress", CgroupSkbAttachType::Ingress),
    ] {
        let prog: &mut CgroupSkb = floor.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
        prog.attach(&root, attach, CgroupAttachMode::Single)?;
    }
    for name in ["floor_sendmsg4", "floor_sendmsg6"] {
        let prog: &mut CgroupSockAddr = floor.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
        prog.attach(&root, CgroupAttachMode::Single)?;
    }
    Ok(floor)
}

/// One measured dnsperf run under `capture`.
struct DnsRound {
    qps: f64,
    /// CPU µs per completed query of dnsperf, dnsmasq and the capturing process.
    cpu_us_per_query: f64,
    /// The capturing process's CPU, in cores, and its peak RSS (KiB).
    capture_cores: f64,
    /// The capturing process's own CPU µs per completed query: the steadiest of these
    /// figures on a shared machine (dnsperf's and dnsmasq's CPU swing with the host).
    capture_us_per_query: f64,
    capture_peak_kib: u64,
}

fn dns_round(dns: &Dnsmasq, capture: Capture, seconds: u32) -> anyhow::Result<DnsRound> {
    let floor = match capture {
        Capture::Floor => Some(attach_floor(&cgroup::find_root()?)?),
        _ => None,
    };
    let capturer = match capture {
        Capture::Nothing | Capture::Floor => None,
        Capture::Collector => Some(start_collector()?),
        Capture::Tcpdump => Some(start_tcpdump()?),
    };
    // A short unmeasured run first: each configuration is measured in its steady state
    // (the collector's tables and dnsmasq's sockets warm), alike for all three.
    dnsperf(None, 1)?;
    let capture_cpu = |c: &Option<Child>| {
        c.as_ref()
            .map_or(Ok((0.0, 0)), |c| cpu_and_peak_rss(c.id()))
    };
    let (server0, _) = cpu_and_peak_rss(dns.child.id())?;
    let (cap0, _) = capture_cpu(&capturer)?;
    let started = Instant::now();
    let run = dnsperf(None, seconds)?;
    let elapsed = started.elapsed().as_secs_f64();
    let (server1, _) = cpu_and_peak_rss(dns.child.id())?;
    let (cap1, peak) = capture_cpu(&capturer)?;
    if let Some(c) = capturer {
        stop(c);
    }
    drop(floor);
    let cpu = run.cpu_seconds + (server1 - server0) + (cap1 - cap0);
    Ok(DnsRound {
        qps: run.qps,
        cpu_us_per_query: 1e6 * cpu / run.completed.max(1) as f64,
        capture_cores: (cap1 - cap0) / elapsed,
        capture_us_per_query: 1e6 * (cap1 - cap0) / run.completed.max(1) as f64,
        capture_peak_kib: peak,
    })
}

fn dns_throughput() -> anyhow::Result<()> {
    const SECONDS: u32 = 4;
    const CONFIGS: [Capture; 4] = [
        Capture::Nothing,
        Capture::Collector,
        Capture::Tcpdump,
        Capture::Floor,
    ];
    let dns = Dnsmasq::start()?;
    dnsperf(None, 2)?;
    let mut rounds: [Vec<DnsRound>; 4] = Default::default();
    for round in 0..DNS_ROUNDS {
        // Rotate the order so that drift and leftovers of one configuration do not always
        // fall on the same next one.
        for i in 0..CONFIGS.len() {
            let at = (i + round) % CONFIGS.len();
            rounds[at].push(dns_round(&dns, CONFIGS[at], SECONDS)?);
        }
    }
    let qps = |rs: &[DnsRound]| median(&rs.iter().map(|r| r.qps).collect::<Vec<_>>());
    let cost = |rs: &[DnsRound]| median(&rs.iter().map(|r| r.cpu_us_per_query).collect::<Vec<_>>());
    let [b, o, t, f] = [0, 1, 2, 3].map(|i| qps(&rounds[i]));
    let [cb, co, ct, cf] = [0, 1, 2, 3].map(|i| cost(&rounds[i]));
    let loss = |q: f64| 1.0 - q / b;
    let cores = median(
        &rounds[1]
            .iter()
            .map(|r| r.capture_cores)
            .collect::<Vec<_>>(),
    );
    let own = |rs: &[DnsRound]| {
        median(
            &rs.iter()
                .map(|r| r.capture_us_per_query)
                .collect::<Vec<_>>(),
        )
    };
    let rss = rounds[1]
        .iter()
        .map(|r| r.capture_peak_kib)
        .max()
        .unwrap_or(0);
    println!(
        "\n## DNS throughput (dnsperf → dnsmasq on loopback, {SECONDS} s after 1 s warm-up, median of {DNS_ROUNDS})\n"
    );
    println!(
        "CPU µs/query: dnsperf + dnsmasq + the capturing process, per completed query (less \
         sensitive to other load on the machine than queries/s). Floor: empty programs at \
         the collector's hooks (cgroup_skb ingress and egress, sendmsg4/6 at the root), \
         what any program there costs.\n"
    );
    println!("| configuration | queries/s | kept | CPU µs/query | added | target |");
    println!("|---|---:|---:|---:|---:|---|");
    println!("| nothing capturing | {b:.0} | 100.0% | {cb:.2} | | |");
    let row = |name: &str, q: f64, c: f64, target: &str| {
        println!(
            "| {name} | {q:.0} | {:.1}% | {c:.2} | {:+.2} | {target} |",
            100.0 * q / b,
            c - cb
        );
    };
    row("headroom-collector", o, co, "≥ 95%, loss ≤ ½ of tcpdump's");
    row("tcpdump -w /dev/null port 53", t, ct, "(peer)");
    row("empty programs at the same hooks", f, cf, "(floor)");
    let ratio = |ours: f64, theirs: f64| {
        if theirs > 0.0 {
            format!("{:.2}", ours / theirs)
        } else {
            "n/a: tcpdump lost nothing".into()
        }
    };
    println!(
        "\nloss: collector {:.1}%, tcpdump {:.1}% (ratio {}), floor {:.1}% (the collector beyond the floor: {:.1}%); \
         CPU added per query: collector/tcpdump {:.2}×; collector CPU {:.1}% of a core (median), peak RSS {:.1} MiB — targets ≤ 5% and ≤ 40 MiB",
        100.0 * loss(o),
        100.0 * loss(t),
        ratio(loss(o), loss(t)),
        100.0 * loss(f),
        100.0 * (loss(o) - loss(f)),
        (co - cb) / (ct - cb),
        100.0 * cores,
        rss as f64 / 1024.0
    );
    println!(
        "own CPU per query (the capturing process alone, user + system): collector {:.3} µs, tcpdump {:.3} µs",
        own(&rounds[1]),
        own(&rounds[2])
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
