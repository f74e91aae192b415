//! Files replaced by garbage while the webhook runs: the certificate (and its key) and the
//! budget. The old one keeps serving and deciding, the failure is logged and counted once
//! per change, and a good file after the bad one is taken up. The real binary, so that the
//! log asserted is the one an operator reads.
#![expect(clippy::unwrap_used, reason = "tests")]

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::{Client, Pki, http_get, temp_dir};

/// `headroom-webhook serve` on loopback, killed when dropped; its log in a file.
struct Webhook {
    child: Child,
    log: PathBuf,
    https: SocketAddr,
    metrics: SocketAddr,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `address=` in the log line `…headroom webhook serving https=… metrics=…`.
fn logged_addr(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .and_then(|a| a.parse().ok())
}

impl Webhook {
    fn start(dir: &Path, budget: &Path) -> Webhook {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let profiles = support::fresh_profiles("profiles-outage.json", dir);
        let log = dir.join("webhook.log");
        let child = Command::new(env!("CARGO_BIN_EXE_headroom-webhook"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(["--nodes", "5000", "--refresh-seconds", "1"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--budget")
            .arg(budget)
            .arg("--profiles")
            .arg(&profiles)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run headroom-webhook");
        for _ in 0..1000 {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text
                .lines()
                .find(|l| l.contains("headroom webhook serving"))
            {
                return Webhook {
                    https: logged_addr(line, "https=").expect("https address in the log"),
                    metrics: logged_addr(line, "metrics=").expect("metrics address in the log"),
                    child,
                    log,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the webhook did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Waits (up to 10 s) for /readyz: the first profiles are in, so reviews are judged.
    async fn await_ready(&self) {
        for _ in 0..1000 {
            if http_get(self.metrics, "/readyz").await.0 == axum::http::StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not ready after 10 s: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    async fn reload_errors(&self, file: &str) -> u64 {
        let (_, metrics) = http_get(self.metrics, "/metrics").await;
        let prefix = format!("headroom_webhook_reload_errors_total{{file=\"{file}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.parse().unwrap())
    }

    /// Waits (up to 10 s) until `file`'s reload errors reach `n`.
    async fn await_reload_errors(&self, file: &str, n: u64) {
        for _ in 0..1000 {
            if self.reload_errors(file).await >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(self.reload_errors(file).await, n, "{}", self.log());
    }

    async fn review(&self, pki: &Pki, body: &Value) -> Value {
        let config = pki.client_config(rustls::DEFAULT_VERSIONS);
        let mut client = Client::connect(self.https, config)
            .await
            .expect("a TLS connection with the first certificate");
        client.review(body).await
    }
}

/// The demo's recorded `kubectl create` of the outage-shaped DaemonSet: over the fixture
/// budget on 5,000 nodes (Enforce: denied).
fn agent_create() -> Value {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/reviews/daemonset-agent-create.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn fixture_budget() -> String {
    std::fs::read_to_string(support::fixtures().join("budget.yaml")).unwrap()
}

#[tokio::test]
async fn a_certificate_replaced_by_garbage_keeps_the_old_one_serving() {
    let dir = temp_dir("reload-certificate");
    let pki = Pki::generate("reload CA");
    pki.write(&dir);
    let budget = dir.join("budget.yaml");
    std::fs::write(&budget, fixture_budget()).unwrap();
    let webhook = Webhook::start(&dir, &budget);
    webhook.await_ready().await;
    assert_eq!(
        webhook.review(&pki, &agent_create()).await["allowed"],
        false
    );

    std::fs::write(dir.join("tls.crt"), "garbage, not PEM\n").unwrap();
    webhook.await_reload_errors("certificate", 1).await;
    let log = webhook.log();
    assert!(
        log.contains("TLS reload failed; the old certificate keeps serving")
            && log.contains("no PEM certificate found"),
        "{log}"
    );
    // New connections still get the old certificate, and are answered.
    let r = webhook.review(&pki, &agent_create()).await;
    assert_eq!(r["allowed"], false, "{r}");

    // Counted once for the change, not once per look (it looks every second).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(webhook.reload_errors("certificate").await, 1);

    // A garbage key next to a good certificate: the same.
    let rotated = Pki::generate("rotated CA");
    std::fs::write(dir.join("tls.crt"), &rotated.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), "garbage, not a key\n").unwrap();
    webhook.await_reload_errors("certificate", 2).await;
    let r = webhook.review(&pki, &agent_create()).await;
    assert_eq!(r["allowed"], false, "{r}");

    // A good pair after the bad ones is taken up.
    rotated.write(&dir);
    let config = rotated.client_config(rustls::DEFAULT_VERSIONS);
    let mut rotated_in = false;
    for _ in 0..100 {
        if Client::connect(webhook.https, config.clone()).await.is_ok() {
            rotated_in = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated_in, "{}", webhook.log());
    assert!(webhook.log().contains("TLS certificate reloaded"));
}

#[tokio::test]
async fn a_budget_replaced_by_garbage_keeps_the_old_one_deciding() {
    let dir = temp_dir("reload-budget");
    let pki = Pki::generate("reload CA");
    pki.write(&dir);
    let budget = dir.join("budget.yaml");
    std::fs::write(&budget, fixture_budget()).unwrap();
    let webhook = Webhook::start(&dir, &budget);
    webhook.await_ready().await;
    let r = webhook.review(&pki, &agent_create()).await;
    assert_eq!(r["allowed"], false, "{r}");

    // Not YAML, then YAML that is not a valid budget: each a change that does not load.
    let invalid = fixture_budget().replace("burstFactor: 2", "burstFactor: -1");
    for (n, garbage) in
        [("{{{ not yaml", 1), (invalid.as_str(), 2)].map(|(text, n)| (n, text.to_owned()))
    {
        std::fs::write(&budget, garbage).unwrap();
        webhook.await_reload_errors("budget", n).await;
        let r = webhook.review(&pki, &agent_create()).await;
        assert_eq!(r["allowed"], false, "the old Enforce budget decides: {r}");
        assert_eq!(r["status"]["code"], 403, "{r}");
    }
    let log = webhook.log();
    assert_eq!(
        log.matches("budget reload failed; the old budget keeps deciding")
            .count(),
        2,
        "{log}"
    );
    assert!(
        log.contains("burstFactor"),
        "the log names the field: {log}"
    );

    // A good budget after the bad ones is taken up: Warn allows with a warning.
    std::fs::write(
        &budget,
        fixture_budget().replace("mode: Enforce", "mode: Warn"),
    )
    .unwrap();
    let mut r = Value::Null;
    for _ in 0..100 {
        r = webhook.review(&pki, &agent_create()).await;
        if r["allowed"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(r["allowed"], true, "{r}");
    assert!(!r["warnings"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(webhook.reload_errors("budget").await, 2);
}
