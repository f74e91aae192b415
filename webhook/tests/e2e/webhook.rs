//! The webhook as the API server calls it: `headroom-webhook serve --kube` as a process,
//! registered the way deploy/ registers it (URL instead of Service, on loopback), with the
//! cluster objects it watches: 2,000 Nodes and the ControlPlaneBudget.
use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    support::{Cluster, Process, free_port, http_get, wait_for},
    test_pki::Pki,
};

pub const NODES: usize = 2000;
/// Nodes labelled into a small pool: what an eligible-nodes-only DaemonSet selects.
pub const SMALL_POOL: usize = 3;
const POOL_LABEL: &str = "headroom.dev/e2e-pool";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A recorded object from webhook/tests/fixtures, made applicable: the server-set
/// metadata and the status dropped.
pub fn fixture_object(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture exists");
    let mut object: Value = if name.ends_with(".json") {
        serde_json::from_str(&text).expect("fixture is JSON")
    } else {
        serde_yaml::from_str(&text).expect("fixture is YAML")
    };
    let object_map = object.as_object_mut().expect("an object");
    object_map.remove("status");
    if let Some(meta) = object_map
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        for key in [
            "creationTimestamp",
            "resourceVersion",
            "uid",
            "generation",
            "managedFields",
        ] {
            meta.remove(key);
        }
    }
    object
}

/// The recorded ProfileList fixture `name` as of now: its `generatedAt` set to the current
/// time (the webhook judges data older than the budget's maxDataAgeSeconds stale and
/// fails open), every figure as recorded. Written into the run's scratch directory.
pub fn fresh_profiles(cluster: &Cluster, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture exists");
    let mut list: Value = serde_json::from_str(&text).expect("fixture is JSON");
    let now = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date runs");
    list["generatedAt"] = json!(String::from_utf8_lossy(&now.stdout).trim());
    let path = cluster.scratch("profiles").join(name);
    std::fs::write(&path, list.to_string()).expect("write profiles");
    path
}

/// 2,000 Linux nodes (the first three in the small pool), created once per control plane
/// in parallel Lists, as kubelets would register them.
pub fn ensure_nodes(cluster: &Cluster) {
    let have = cluster
        .ok(
            &["get", "nodes", "-l", "headroom.dev/e2e", "-o", "name"],
            None,
        )
        .lines()
        .count();
    if have >= NODES {
        return;
    }
    let node = |i: usize| {
        let name = format!("e2e-node-{i:04}");
        let mut labels = json!({
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "headroom.dev/e2e": "true",
        });
        if i < SMALL_POOL {
            labels[POOL_LABEL] = json!("small");
        }
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})
    };
    let chunks: Vec<String> = (0..4)
        .map(|c| {
            let items: Vec<Value> = (c * NODES / 4..(c + 1) * NODES / 4).map(node).collect();
            json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
        })
        .collect();
    thread::scope(|s| {
        for list in &chunks {
            s.spawn(|| cluster.run(&["apply", "-f", "-"], Some(list)));
        }
    });
    let now = cluster.ok(
        &["get", "nodes", "-l", "headroom.dev/e2e", "-o", "name"],
        None,
    );
    assert_eq!(now.lines().count(), NODES, "nodes created");
}

/// The CRD from deploy/crd/ and webhook/tests/fixtures/budget.yaml as `default`, in `mode`.
pub fn ensure_budget(cluster: &Cluster, mode: &str) {
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crd/controlplanebudget.yaml");
    cluster.ok(&["apply", "-f", crd.to_str().expect("UTF-8 path")], None);
    cluster.ok(
        &[
            "wait",
            "--for=condition=established",
            "crd/controlplanebudgets.headroom.dev",
        ],
        None,
    );
    let mut budget = fixture_object("budget.yaml");
    budget["spec"]["mode"] = json!(mode);
    let out = cluster.apply(&budget);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn set_mode(cluster: &Cluster, mode: &str) {
    let patch = json!({"spec": {"mode": mode}}).to_string();
    cluster.ok(
        &[
            "patch",
            "controlplanebudget",
            "default",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
}

/// `headroom-webhook serve --kube` with its own certificate, profiles from a fixture.
pub struct Webhook {
    pub process: Process,
    pub addr: String,
    pub metrics: String,
    pub pki: Pki,
}

impl Webhook {
    pub fn start(cluster: &Cluster, kubeconfig: &Path, profiles: &str) -> Webhook {
        Webhook::start_for(cluster, kubeconfig, profiles, "default")
    }

    /// Enforcing the ControlPlaneBudget `budget`.
    pub fn start_for(
        cluster: &Cluster,
        kubeconfig: &Path,
        profiles: &str,
        budget: &str,
    ) -> Webhook {
        let profiles = fresh_profiles(cluster, profiles);
        let dir = cluster.scratch("serve");
        let pki = Pki::generate("headroom e2e webhook CA");
        let (cert, key) = pki.write(&dir);
        let addr = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_headroom-webhook"))
                .args(["serve", "--kube", "--refresh-seconds=1"])
                .arg(format!("--budget-name={budget}"))
                .arg(format!("--listen={addr}"))
                .arg(format!("--metrics-listen={metrics}"))
                .arg("--tls-cert")
                .arg(&cert)
                .arg("--tls-key")
                .arg(&key)
                .arg("--profiles")
                .arg(&profiles)
                .env("KUBECONFIG", kubeconfig)
                .env("RUST_LOG", "info"),
            &dir.join("webhook.log"),
        );
        Webhook {
            process,
            addr,
            metrics,
            pki,
        }
    }

    /// Waits for /readyz: however readiness is defined (profiles, watches synced), a
    /// review is only judged once the webhook says it is ready.
    pub fn wait_ready(&mut self) {
        wait_for("the webhook's /readyz", Duration::from_secs(60), || {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                panic!("the webhook exited ({status}): {}", self.process.log_text());
            }
            matches!(http_get(&self.metrics, "/readyz"), Ok((200, _))).then_some(())
        });
    }

    pub fn metrics_text(&self) -> String {
        http_get(&self.metrics, "/metrics").expect("GET /metrics").1
    }
}

/// deploy/'s ValidatingWebhookConfiguration pointed at `url` with `ca_pem`; deleted on drop.
pub struct Registration<'a> {
    cluster: &'a Cluster,
}

impl<'a> Registration<'a> {
    pub fn register(cluster: &'a Cluster, url: &str, ca_pem: &str) -> Registration<'a> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/webhook/validatingwebhookconfiguration.yaml");
        let text = std::fs::read_to_string(path).expect("read deploy's registration");
        let mut vwc: Value = serde_yaml::from_str(&text).expect("registration YAML");
        let webhook = &mut vwc["webhooks"][0];
        let hook = webhook.as_object_mut().expect("a webhook");
        // 1.20 has no matchConditions (a known gap, see deploy.rs); the rest is deploy's.
        hook.remove("matchConditions");
        hook.insert(
            "clientConfig".into(),
            json!({"url": format!("{url}/validate"), "caBundle": base64(ca_pem.as_bytes())}),
        );
        let out = cluster.apply(&vwc);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Registration { cluster }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.run(
            &[
                "delete",
                "validatingwebhookconfiguration",
                "headroom",
                "--ignore-not-found",
            ],
            None,
        );
    }
}

pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
