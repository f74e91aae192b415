//! A pod bound to the collector's node (created by hand: no scheduler, no kubelet), its
//! owners created as the Deployment and ReplicaSet controllers would, and a cgroup laid
//! out as the kubelet's systemd driver lays out its container. kubectl run from that
//! cgroup is that pod's traffic: the collector's `headroom_apiserver_requests_total` for
//! it must equal the server's audit log count of that client's requests, under labels
//! naming its Deployment.
use std::{
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use collector::cgroup::{self, ChildGroup};
use serde_json::{Value, json};

use crate::support::{Cluster, Process, free_port, http_get, one_per_request, wait_for};

const NODE: &str = "e2e-collector-node";
const DEPLOYMENT: &str = "chatty";
const HASH: &str = "5d8f9c7b6";
const CONTAINER: &str = "agent";
const CONTAINER_ID: &str = "4f1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3";

pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("effective uid");
    assert_eq!(
        uid, "0",
        "the collector loads eBPF programs: run as root (cargo xtask e2e)"
    );
}

fn created(cluster: &Cluster, object: &Value) -> Value {
    let out = cluster.run(
        &["create", "-o", "json", "-f", "-"],
        Some(&object.to_string()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("created object")
}

fn owner(object: &Value) -> Value {
    json!([{
        "apiVersion": object["apiVersion"], "kind": object["kind"],
        "name": object["metadata"]["name"], "uid": object["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": true
    }])
}

/// Node, namespace, the `default` and client ServiceAccounts (no token controller runs),
/// Deployment → ReplicaSet → Pod on the node, and the pod's status as a kubelet reports
/// it (the container's id). Returns the pod.
/// A namespace of its own per run: without a namespace controller a deleted namespace
/// never goes, so a second run against a kept control plane (`--keep`) cannot reuse one.
fn workload(cluster: &Cluster, namespace: &str) -> Value {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": NODE, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": NODE}}});
    let out = cluster.apply(&node);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.namespace(namespace);
    for sa in ["default", DEPLOYMENT] {
        created(
            cluster,
            &json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": namespace}}),
        );
    }
    let labels = json!({"app": DEPLOYMENT});
    let container = json!({"name": CONTAINER, "image": "registry.example/chatty:1.0"});
    let template = |labels: &Value| {
        json!({"metadata": {"labels": labels},
        "spec": {"containers": [container], "automountServiceAccountToken": false}})
    };
    let deployment = created(
        cluster,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template(&labels)}}),
    );
    let rs_labels = json!({"app": DEPLOYMENT, "pod-template-hash": HASH});
    let rs_name = format!("{DEPLOYMENT}-{HASH}");
    let replicaset = created(
        cluster,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs_name, "namespace": namespace, "labels": rs_labels,
                     "ownerReferences": owner(&deployment)},
        "spec": {"replicas": 1, "selector": {"matchLabels": rs_labels}, "template": template(&rs_labels)}}),
    );
    let mut pod_spec = template(&rs_labels)["spec"].clone();
    pod_spec["nodeName"] = json!(NODE);
    pod_spec["serviceAccountName"] = json!(DEPLOYMENT);
    let pod = created(
        cluster,
        &json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{rs_name}-x7k2p"), "namespace": namespace,
                     "labels": rs_labels, "ownerReferences": owner(&replicaset)},
        "spec": pod_spec}),
    );
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": CONTAINER, "image": "registry.example/chatty:1.0", "imageID": "",
        "containerID": format!("containerd://{CONTAINER_ID}"), "ready": true,
        "restartCount": 0, "started": true,
        "state": {"running": {"startedAt": "2026-12-03T10:00:00Z"}}}]}});
    let name = pod["metadata"]["name"].as_str().expect("pod name");
    cluster.ok(
        &[
            "patch",
            "pod",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ],
        None,
    );
    pod
}

/// The pod's container cgroup as the kubelet's systemd driver nests a BestEffort pod,
/// under a group of this test's own; removed innermost first.
struct PodCgroup(Vec<ChildGroup>);

impl PodCgroup {
    fn create(pod_uid: &str) -> PodCgroup {
        let root = cgroup::find_root().expect("cgroup v2 mount");
        let mut groups = vec![
            ChildGroup::create(&root, &format!("headroom-e2e-{}", std::process::id()))
                .expect("create cgroup"),
        ];
        for name in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
            format!("cri-containerd-{CONTAINER_ID}.scope"),
        ] {
            let parent = groups.last().expect("a parent").path().to_owned();
            groups.push(ChildGroup::create(&parent, &name).expect("create cgroup"));
        }
        PodCgroup(groups)
    }

    /// Runs `script` in bash that joins the container's cgroup first.
    fn command(&self, script: &str) -> Command {
        let procs = self.0.last().expect("container group").procs_file();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("echo $$ > {} && {script}", procs.display()))
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        while let Some(group) = self.0.pop() {
            drop(group);
        }
    }
}

/// The sum of `name`'s series whose labels contain `labels`.
fn series_sum(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[test]
#[ignore = "needs a kube-apiserver and root: run cargo xtask e2e"]
fn requests_of_a_pod_equal_the_audit_log_and_name_its_deployment() {
    let cluster = Cluster::from_env();
    require_root();
    let namespace = format!("e2e-collector-{}", std::process::id());
    let namespace = namespace.as_str();
    let pod = workload(&cluster, namespace);
    let pod_name = pod["metadata"]["name"].as_str().expect("name").to_owned();
    let group = PodCgroup::create(pod["metadata"]["uid"].as_str().expect("uid"));
    // Its ServiceAccount's token: the audit log's user names exactly this client.
    let kubeconfig = cluster.serviceaccount_kubeconfig(namespace, DEPLOYMENT);

    let dir = cluster.scratch("collector");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut collector = Process::spawn(
        Command::new(env!("CARGO_BIN_EXE_headroom-collector"))
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--node-name", NODE, "--listen", &listen]),
        &dir.join("collector.log"),
    );
    let labels = format!(
        r#"namespace="{namespace}",workload_kind="Deployment",workload="{DEPLOYMENT}",pod="{pod_name}",container="{CONTAINER}""#
    );
    // Ready, and its pod watch has this node's pod: one request from the pod shows up
    // under the pod's name.
    wait_for("the collector's /readyz", Duration::from_secs(60), || {
        if let Ok(Some(status)) = collector.child.try_wait() {
            panic!("the collector exited ({status}): {}", collector.log_text());
        }
        matches!(http_get(&listen, "/readyz"), Ok((200, _))).then_some(())
    });
    let kubectl = format!(
        "kubectl --kubeconfig {} --cache-dir {} -n {namespace}",
        kubeconfig.display(),
        dir.join("kube-cache").display()
    );
    // Requests of all kinds: discovery, gets, a 403 (nodes: no RBAC), and a watch.
    let script = format!(
        "{kubectl} get pods -o name >/dev/null 2>&1; \
         {kubectl} get nodes >/dev/null 2>&1; \
         {kubectl} get pod {pod_name} >/dev/null 2>&1; true"
    );
    // A Role of its own: `view` is aggregated, and no controller-manager aggregates it.
    cluster.ok(
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            namespace,
            "--verb=get,list,watch",
            "--resource=pods",
        ],
        None,
    );
    cluster.ok(
        &[
            "create",
            "rolebinding",
            "pod-reader",
            "-n",
            namespace,
            "--role=pod-reader",
            &format!("--serviceaccount={namespace}:{DEPLOYMENT}"),
        ],
        None,
    );
    let status = group.command(&script).status().expect("kubectl runs");
    assert!(status.success());
    let mut watch = Process::spawn(
        &mut group.command(&format!("exec {kubectl} get pods --watch -o name")),
        &dir.join("watch.log"),
    );
    // It prints the pod once its list is done and the watch goes out right after it;
    // a second more and the watch is open.
    wait_for(
        "kubectl's watch listing the pod",
        Duration::from_secs(30),
        || watch.log_text().contains("pod/").then_some(()),
    );
    thread::sleep(Duration::from_secs(1));
    watch.kill();

    let user = format!("system:serviceaccount:{namespace}:{DEPLOYMENT}");
    let requests = || -> Vec<Value> {
        cluster
            .audit()
            .into_iter()
            .filter(|e| e["user"]["username"] == user.as_str() && one_per_request(e))
            .collect()
    };
    let audited = || requests().len() as f64;
    // kube-apiserver 1.20 writes a watch's entry when the watch ends: once it has seen
    // kubectl's connection close.
    let made = wait_for(
        "the watch in the audit log",
        Duration::from_secs(15),
        || {
            let made = requests();
            made.iter().any(|e| e["verb"] == "watch").then_some(made)
        },
    );
    let expected = made.len() as f64;
    let verbs = |verb: &str, code: u16| {
        made.iter()
            .filter(|e| e["verb"] == verb && e["responseStatus"]["code"] == code)
            .count()
    };
    // Discovery and gets, one refused list, a watch: all are requests to count.
    assert!(verbs("get", 200) >= 3, "gets: {made:?}");
    assert_eq!(verbs("list", 403), 1, "the refused list of nodes");
    assert_eq!(verbs("watch", 200), 1, "the watch");
    let measured = wait_for(
        "the collector's count to reach the audit log's",
        Duration::from_secs(30),
        || {
            let (_, metrics) = http_get(&listen, "/metrics").ok()?;
            let count = series_sum(&metrics, "headroom_apiserver_requests_total", &labels)?;
            (count >= expected).then_some(count)
        },
    );
    assert_eq!(
        measured,
        expected,
        "collector vs the audit log's {user} (one entry per request)\n{}",
        collector.log_text()
    );
    assert_eq!(audited(), expected, "no request of that client came later");
    collector.kill();
}
