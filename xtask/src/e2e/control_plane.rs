//! etcd and kube-apiserver on loopback, each in a process group of its own, stopped when
//! the `ControlPlane` is dropped (success or failure) and by a SIGINT/SIGTERM handler
//! (Ctrl-C, or CI cancelling the job).
use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::signal::unix::SignalKind;

use super::pki::{self, Files};
use crate::shell;

/// Process groups started and not yet stopped: what the signal handler stops.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub url: String,
    pub version: String,
    pub files: Files,
    // Dropped in reverse order of start: the API server before its storage.
    apiserver: Daemon,
    etcd: Daemon,
}

impl ControlPlane {
    pub fn start(dir: &Path, kube_apiserver: &Path) -> anyhow::Result<Self> {
        let files = pki::write(dir)?;
        let etcd = start_etcd(dir)?;
        let port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        pki::write_kubeconfig(&files, &url)?;
        let apiserver = Daemon::spawn(
            Command::new(kube_apiserver).args(apiserver_args(&files, &etcd.url, port)),
            "kube-apiserver",
            dir,
        )?;
        let mut plane = Self {
            url,
            version: String::new(),
            files,
            apiserver,
            etcd: etcd.daemon,
        };
        plane.wait_ready(Duration::from_secs(60))?;
        plane.version = plane.server_version()?;
        Ok(plane)
    }

    /// `kubectl` with the admin kubeconfig.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.files.kubeconfig);
        cmd
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let out = self.kubectl().args(["get", "--raw", "/readyz"]).output();
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            self.apiserver.check_alive()?;
            self.etcd.check_alive()?;
            if start.elapsed() > limit {
                bail!(
                    "kube-apiserver was not ready after {limit:?}: {}; its log: {}",
                    out.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_else(|e| e.to_string()),
                    self.apiserver.log.display()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// gitVersion from the server's /version.
    fn server_version(&self) -> anyhow::Result<String> {
        let out = shell::output(self.kubectl().args(["get", "--raw", "/version"]))?;
        let body: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("/version is not JSON")?;
        body["gitVersion"]
            .as_str()
            .map(str::to_string)
            .context("/version has no gitVersion")
    }

    /// Leaves both processes running (for `--keep`); returns their pids.
    pub fn detach(self) -> (u32, u32) {
        let pids = (self.etcd.child.id(), self.apiserver.child.id());
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|p| *p != pids.0 && *p != pids.1);
        drop(running);
        std::mem::forget(self);
        pids
    }
}

struct Etcd {
    daemon: Daemon,
    url: String,
}

fn start_etcd(dir: &Path) -> anyhow::Result<Etcd> {
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut daemon = Daemon::spawn(
        Command::new("etcd")
            .arg("--name=e2e")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={url}"))
            .arg(format!("--advertise-client-urls={url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=e2e={peer_url}")),
        "etcd",
        dir,
    )?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        daemon.check_alive()?;
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "etcd did not listen on {url} within 20 s; its log: {}",
                daemon.log.display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(Etcd { daemon, url })
}

fn apiserver_args(files: &Files, etcd: &str, port: u16) -> Vec<String> {
    let p = |path: &PathBuf| path.display().to_string();
    vec![
        format!("--etcd-servers={etcd}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        // 1.20 still serves plain HTTP on 8080 unless told not to.
        "--insecure-port=0".into(),
        format!("--tls-cert-file={}", p(&files.serving_cert)),
        format!("--tls-private-key-file={}", p(&files.serving_key)),
        format!("--client-ca-file={}", p(&files.ca_cert)),
        format!("--token-auth-file={}", p(&files.tokens)),
        "--authorization-mode=RBAC".into(),
        "--service-account-issuer=https://kubernetes.default.svc".into(),
        format!("--service-account-key-file={}", p(&files.sa_pub)),
        format!("--service-account-signing-key-file={}", p(&files.sa_key)),
        "--api-audiences=https://kubernetes.default.svc".into(),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        // No kubelet answers on 127.0.0.1 as an endpoint of the kubernetes Service.
        "--endpoint-reconciler-type=none".into(),
        format!("--audit-policy-file={}", p(&files.audit_policy)),
        format!("--audit-log-path={}", p(&files.audit_log)),
        "--profiling=false".into(),
        // It taints every new Node not-ready until a kubelet reports Ready; no kubelet
        // runs here, and the webhook counts the nodes a DaemonSet's pods can land on.
        "--disable-admission-plugins=TaintNodesByCondition".into(),
    ]
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// A process in a group of its own, its output in `<dir>/<name>.log`; the group is
/// stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
#[derive(Debug)]
struct Daemon {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Daemon {
    fn spawn(cmd: &mut Command, name: &'static str, dir: &Path) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        // Registered before the handler could miss it: the lock is held across spawn.
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", shell::describe(cmd)))?;
        running.push(child.id());
        Ok(Self { child, name, log })
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log: {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pgid = self.child.id();
        signal_group(pgid, "TERM");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        signal_group(pgid, "KILL");
        let _ = self.child.wait();
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != pgid);
    }
}

fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// On SIGINT or SIGTERM: stop every process group still running, then exit 130. The
/// tests, in our own process group, get Ctrl-C's SIGINT themselves.
pub fn stop_on_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the signal handler")?;
    // Registered here, before any process starts, not when the thread first polls.
    let (mut interrupt, mut terminate) = {
        let _guard = runtime.enter();
        let listen = |kind| tokio::signal::unix::signal(kind).context("handling signals");
        (
            listen(SignalKind::interrupt())?,
            listen(SignalKind::terminate())?,
        )
    };
    thread::spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        });
        let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).clone();
        eprintln!("xtask e2e: interrupted, stopping the control plane");
        for pgid in &running {
            signal_group(*pgid, "TERM");
        }
        thread::sleep(Duration::from_secs(2));
        for pgid in &running {
            signal_group(*pgid, "KILL");
        }
        std::process::exit(130);
    });
    Ok(())
}
