//! The collector as its ServiceAccount with deploy/'s RBAC: the server refuses none of
//! its requests (no 403 in the audit log), and it made each one the RBAC is there for.
use std::{path::Path, process::Command, thread, time::Duration};

use serde_json::{Value, json};

use crate::support::{Cluster, Process, free_port, http_get, one_per_request, wait_for};

const USER: &str = "system:serviceaccount:headroom:headroom-collector";
const NODE: &str = "e2e-collector-rbac-node";

fn describe(e: &Value) -> String {
    format!(
        "{} {} → {}",
        e["verb"].as_str().unwrap_or("?"),
        e["requestURI"].as_str().unwrap_or("?"),
        e["responseStatus"]["code"]
    )
}

#[test]
#[ignore = "needs a kube-apiserver and root: run cargo xtask e2e"]
fn collector_as_its_serviceaccount_is_refused_nothing() {
    let cluster = Cluster::from_env();
    crate::requests::require_root();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}});
    assert!(cluster.apply(&node).status.success());
    cluster.namespace("headroom");
    let rbac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector/rbac.yaml");
    cluster.ok(&["apply", "-f", rbac.to_str().expect("UTF-8 path")], None);
    let kubeconfig = cluster.serviceaccount_kubeconfig("headroom", "headroom-collector");
    let from = cluster.audit().len();

    let dir = cluster.scratch("rbac");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut collector = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_headroom-collector"))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--node-name", NODE, "--listen", &listen]),
        &dir.join("collector.log"),
    );
    wait_for("the collector's /readyz", Duration::from_secs(60), || {
        if let Ok(Some(status)) = collector.child.try_wait() {
            panic!("the collector exited ({status}): {}", collector.log_text());
        }
        matches!(http_get(&listen, "/readyz"), Ok((200, _))).then_some(())
    });
    let mine = || -> Vec<Value> {
        cluster
            .audit()
            .into_iter()
            .skip(from)
            .filter(|e| e["user"]["username"] == USER && one_per_request(e))
            .collect()
    };
    // Each watch it opens starts with a list: pods (this node's), the API server's
    // addresses in default (the `kubernetes` EndpointSlices, or on a server without
    // discovery.k8s.io/v1 such as 1.20 the Endpoints), the kube-dns Service.
    let listed = |requests: &[Value], resource: &str| {
        requests
            .iter()
            .any(|e| e["verb"] == "list" && e["objectRef"]["resource"] == resource)
    };
    wait_for("its lists", Duration::from_secs(30), || {
        let requests = mine();
        let addresses = listed(&requests, "endpointslices") || listed(&requests, "endpoints");
        (addresses && ["pods", "services"].iter().all(|r| listed(&requests, r))).then_some(())
    });
    // A few seconds of steady running, then stop it: its watches end and show too.
    thread::sleep(Duration::from_secs(3));
    collector.kill();
    let requests = mine();
    let refused: Vec<String> = requests
        .iter()
        .filter(|e| e["responseStatus"]["code"] == 403)
        .map(describe)
        .collect();
    assert!(
        refused.is_empty(),
        "refused by deploy/'s RBAC: {refused:#?}\nall: {:#?}",
        requests.iter().map(describe).collect::<Vec<_>>()
    );
}
