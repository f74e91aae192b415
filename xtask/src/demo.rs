//! `cargo xtask demo`: the main job on this machine with embedded defaults. Starts the
//! collector, makes API-server-like traffic from two cgroups that stand for pods, and
//! prints what the kernel measured for each.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{setup, shell};

/// A pod that calls the API server: how many connections, request and reply sizes.
struct DemoPod {
    name: &'static str,
    connections: u32,
    request_bytes: usize,
}

const PODS: &[DemoPod] = &[
    DemoPod {
        name: "headroom-demo-chatty-agent",
        connections: 40,
        request_bytes: 600,
    },
    DemoPod {
        name: "headroom-demo-quiet-agent",
        connections: 3,
        request_bytes: 200,
    },
];
/// What the stand-in API server answers on each connection (a LIST-sized reply).
const REPLY_BYTES: usize = 16 * 1024;

pub fn run() -> anyhow::Result<()> {
    if !shell::is_root() {
        bail!("the demo loads eBPF programs and creates cgroups: run `sudo -E cargo xtask demo`");
    }
    setup::run()?;
    shell::run(shell::cargo().args(["build", "--locked", "--quiet", "-p", "collector"]))?;
    let collector_bin = target_dir().join("debug/headroom-collector");

    let apiserver = TcpListener::bind("127.0.0.1:0").context("binding the stand-in API server")?;
    let apiserver_addr = apiserver.local_addr()?;
    thread::spawn(move || serve_apiserver(apiserver));
    println!("stand-in API server listening on {apiserver_addr}\n");

    let root = cgroup2_root()?;
    let groups: Vec<Group> = PODS
        .iter()
        .map(|p| Group::create(&root, p.name))
        .collect::<anyhow::Result<_>>()?;

    let mut collector = Command::new(&collector_bin)
        .args(["--apiserver", &apiserver_addr.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", collector_bin.display()))?;
    wait_until_measuring(&mut collector)?;

    for (pod, group) in PODS.iter().zip(&groups) {
        println!(
            "{}: {} connections, {} B requests, {} B replies",
            pod.name, pod.connections, pod.request_bytes, REPLY_BYTES
        );
        let script = format!(
            "echo $$ > {procs} && for i in $(seq {n}); do exec 3<>/dev/tcp/{host}/{port}; \
             printf '%s' '{payload}' >&3; head -c {REPLY_BYTES} <&3 >/dev/null; exec 3>&-; done",
            procs = group.path.join("cgroup.procs").display(),
            n = pod.connections,
            host = apiserver_addr.ip(),
            port = apiserver_addr.port(),
            payload = "r".repeat(pod.request_bytes),
        );
        shell::run(Command::new("bash").arg("-c").arg(script))?;
    }
    println!("\nwhat the collector measured, per cgroup:\n");
    // SIGTERM: the collector prints its table, detaches its programs and exits.
    shell::run(Command::new("kill").args(["-TERM", &collector.id().to_string()]))?;
    let status = collector.wait()?;
    if !status.success() {
        bail!("the collector exited with {status}");
    }
    drop(groups);
    Ok(())
}

/// Reads each request, then answers with a LIST-sized reply.
fn serve_apiserver(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(&[b'x'; REPLY_BYTES]);
        });
    }
}

fn wait_until_measuring(collector: &mut Child) -> anyhow::Result<()> {
    let stderr = collector.stderr.take().context("collector stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        eprintln!("{line}");
        if line.contains("measuring") {
            // Keep forwarding the collector's messages.
            thread::spawn(move || lines.map_while(Result::ok).for_each(|l| eprintln!("{l}")));
            return Ok(());
        }
    }
    bail!("the collector exited before it started measuring")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shell::workspace_root().join("target"))
}

fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let out = shell::output(Command::new("findmnt").args(["-n", "-t", "cgroup2", "-o", "TARGET"]))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(PathBuf::from)
        .context("no cgroup v2 hierarchy is mounted")
}

/// A demo cgroup, removed on drop.
struct Group {
    path: PathBuf,
}

impl Group {
    fn create(root: &Path, name: &str) -> anyhow::Result<Self> {
        let path = root.join(name);
        if !path.exists() {
            std::fs::create_dir(&path)
                .with_context(|| format!("creating cgroup {}", path.display()))?;
        }
        Ok(Self { path })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
