//! The control plane `cargo xtask e2e` started (its coordinates come from the
//! environment), kubectl against it, its audit log, and child processes. One file for
//! both crates' end-to-end tests: the collector's include it by path.
use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// What `cargo xtask e2e` exports. Missing under `--ignored`: the test fails, it does
/// not pass without a server.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub audit_log: PathBuf,
    pub token: String,
    pub dir: PathBuf,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the end-to-end tests need a kube-apiserver, run `cargo xtask e2e`"
        )
    })
}

impl Cluster {
    pub fn from_env() -> Cluster {
        Cluster {
            kubeconfig: env("HEADROOM_E2E_KUBECONFIG").into(),
            audit_log: env("HEADROOM_E2E_AUDIT_LOG").into(),
            token: env("HEADROOM_E2E_TOKEN"),
            dir: env("HEADROOM_E2E_DIR").into(),
        }
    }

    /// A fresh directory for one test's files, inside the run's scratch directory.
    pub fn scratch(&self, name: &str) -> PathBuf {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.dir.join(format!(
            "{}-{name}-{}-{}",
            env!("CARGO_PKG_NAME"),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    }

    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs kubectl with `args` (and `stdin`), returning its output whatever the outcome.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.kubectl();
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("kubectl starts");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write kubectl stdin");
        }
        child.wait_with_output().expect("kubectl runs")
    }

    /// Runs kubectl, panicking with its stderr if it fails; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply(&self, object: &Value) -> Output {
        self.run(&["apply", "-f", "-"], Some(&object.to_string()))
    }

    pub fn get_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["get", "-o", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all, None)).expect("kubectl get -o json")
    }

    /// A namespace labelled as 1.21 and later label every namespace (1.20 does not; the
    /// registration's namespaceSelector reads `kubernetes.io/metadata.name`).
    pub fn namespace(&self, name: &str) {
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
        });
        let out = self.apply(&ns);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A kubeconfig for ServiceAccount `namespace/name`, its token from the TokenRequest
    /// API (no token controller runs here to make a Secret).
    pub fn serviceaccount_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self.ok(
            &["create", "token", name, "-n", namespace, "--duration=1h"],
            None,
        );
        let admin = std::fs::read_to_string(&self.kubeconfig).expect("admin kubeconfig");
        let path = self.scratch(name).join("kubeconfig");
        std::fs::write(&path, admin.replace(&self.token, token.trim())).expect("write kubeconfig");
        path
    }

    /// Every entry of the audit log so far.
    pub fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_log).expect("read the audit log");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit entry is JSON"))
            .collect()
    }
}

/// Entries that stand for one request each: ResponseComplete, or ResponseStarted for a
/// watch (whose ResponseComplete comes when it ends).
pub fn one_per_request(entry: &Value) -> bool {
    match entry["stage"].as_str() {
        Some("ResponseStarted") => entry["verb"] == "watch",
        Some("ResponseComplete") => entry["verb"] != "watch",
        _ => false,
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A child process killed when dropped, its output in a log file.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(cmd: &mut Command, log: &Path) -> Process {
        let file = std::fs::File::create(log).expect("create log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("process starts");
        Process {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Polls `check` every 250 ms until it returns Some, failing after `limit` with `what`.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not after {limit:?}");
        thread::sleep(Duration::from_millis(250));
    }
}
