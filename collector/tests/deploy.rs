//! deploy/'s collector DaemonSet as `kubectl kustomize` renders it, checked against the
//! collector: the binary accepts its arguments and environment, it has the capabilities
//! preflight demands and no more, it mounts what it points at, and RBAC grants exactly
//! the API calls its watches make.
//!
//! Needs `kubectl` with kustomize v5 (`cargo xtask setup` checks it).

#[path = "../../webhook/tests/manifests/mod.rs"]
mod manifests;

use std::{
    collections::BTreeSet,
    convert::Infallible,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Request,
    http::StatusCode,
    response::Response,
};
use collector::{
    cluster::{Cluster, ClusterConfig, NODE_NAME_ENV},
    config::DEFAULT_PORT,
    preflight::missing_capabilities,
};
use manifests::{
    Rendered, container, environment, expand_args, find, quantity_cpu, quantity_memory,
    rbac_grants, workspace,
};
use serde_json::{Value, json};

fn render() -> Rendered {
    Rendered::kustomize(&workspace().join("deploy"))
}

fn daemonset(rendered: &Rendered) -> &Value {
    find(&rendered.docs, "DaemonSet", "headroom-collector")
}

/// Linux capability numbers of the names Kubernetes takes (`BPF` for CAP_BPF).
fn capability_bit(name: &str) -> u32 {
    match name {
        "NET_ADMIN" => 12,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("unexpected capability {other}"),
    }
}

#[test]
fn the_pod_has_what_preflight_demands_and_no_more() {
    let rendered = render();
    let ds = daemonset(&rendered);
    let pod = &ds["spec"]["template"]["spec"];
    let c = container(ds, "collector");
    let security = &c["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let added: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .expect("added capabilities")
        .iter()
        .map(|v| v.as_str().expect("a name"))
        .collect();
    let mask = added
        .iter()
        .fold(0u64, |m, name| m | 1 << capability_bit(name));
    assert_eq!(
        missing_capabilities(mask),
        Vec::<&str>::new(),
        "the collector's preflight would refuse {added:?}"
    );
    assert!(
        !added.contains(&"SYS_ADMIN"),
        "CAP_BPF + CAP_PERFMON stand in"
    );
    // Each one is needed: preflight's, plus SYS_RESOURCE for RLIMIT_MEMLOCK (kernels
    // before 5.11, collector/src/ebpf.rs).
    for name in &added {
        let without = mask & !(1 << capability_bit(name));
        assert!(
            !missing_capabilities(without).is_empty() || *name == "SYS_RESOURCE",
            "{name} is not needed"
        );
    }

    // The host's cgroup v2 hierarchy, read-only, at the path the collector is told.
    let env = environment(c, &rendered.docs);
    let args = expand_args(c, &rendered.docs);
    let root = args
        .iter()
        .find_map(|a| a.strip_prefix("--cgroup-root="))
        .or_else(|| {
            env.iter()
                .find(|(k, _)| k == "HEADROOM_CGROUP_ROOT")
                .map(|(_, v)| v.as_str())
        })
        .expect("--cgroup-root or HEADROOM_CGROUP_ROOT");
    let mount = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == root)
        .expect("a mount at the cgroup root");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/cgroup");
    // Besides it, only tracefs (read-only: the exec tracepoint's id), where the collector
    // looks for it; nothing else of the host is mounted.
    let tracefs = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/sys/kernel/tracing")
        .expect("tracefs where aya looks for tracepoint ids");
    assert_eq!(tracefs["readOnly"], true);
    let host_paths: Vec<&str> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            v["hostPath"]["path"]
                .as_str()
                .unwrap_or("(not a host path)")
        })
        .collect();
    assert_eq!(host_paths, ["/sys/fs/cgroup", "/sys/kernel/tracing"]);
    assert_ne!(
        pod["hostNetwork"], true,
        "the hooks see every network namespace"
    );
    assert_eq!(
        pod["hostPID"], true,
        "node processes are named from /proc/<host pid>"
    );
    assert_eq!(pod["dnsPolicy"], "Default", "the node's resolv.conf");

    // Every node, first to be scheduled and last to be evicted.
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["priorityClassName"], "system-node-critical");

    // Within the overhead targets: 5% of a core and 40 MiB.
    let requests = &c["resources"]["requests"];
    assert!(quantity_cpu(&requests["cpu"]) <= 0.05, "{requests}");
    assert!(
        quantity_memory(&requests["memory"]) <= 40 << 20,
        "{requests}"
    );
    let limits = &c["resources"]["limits"];
    assert!(quantity_cpu(&limits["cpu"]) >= quantity_cpu(&requests["cpu"]));
    assert!(quantity_memory(&limits["memory"]) >= quantity_memory(&requests["memory"]));
}

#[test]
fn ports_probes_and_node_name_are_the_collectors() {
    let rendered = render();
    let ds = daemonset(&rendered);
    let c = container(ds, "collector");
    let env = environment(c, &rendered.docs);
    let node = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|v| v["name"] == NODE_NAME_ENV)
        .expect("NODE_NAME is set");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let listen = env
        .iter()
        .find(|(k, _)| k == "HEADROOM_LISTEN")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
    let port = c["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a port named metrics");
    assert!(
        listen.ends_with(&format!(":{}", port["containerPort"])),
        "{listen}"
    );
    assert_eq!(port["containerPort"], DEFAULT_PORT);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    let annotations = &ds["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], DEFAULT_PORT.to_string());
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
}

#[test]
fn the_binary_accepts_the_daemonsets_arguments_and_environment() {
    let rendered = render();
    let c = container(daemonset(&rendered), "collector");
    let args = expand_args(c, &rendered.docs);
    let env = environment(c, &rendered.docs);
    let run = |args: &[String], env: &[(String, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_headroom-collector"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // What the kubelet sets in every pod.
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        manifests::run_with_timeout(cmd, Duration::from_secs(30))
    };

    // Flags and environment parse and validate, the in-cluster mode is chosen (NODE_NAME
    // is there), and start-up goes on to preflight, which stops here: no host cgroup
    // tree at the pod's mount path (as root) or no capabilities (otherwise).
    let (status, stderr) = run(&args, &env);
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("Usage:"), "argument error: {stderr}");
    assert!(!stderr.contains("invalid configuration"), "{stderr}");
    assert!(
        stderr.contains("cgroup root /host/sys/fs/cgroup is not a cgroup v2 hierarchy")
            || stderr.contains("needs root or the capabilities"),
        "{stderr}"
    );

    // The same run tells the other failures apart: an unknown flag, a bad value from the
    // environment, a missing NODE_NAME.
    let mut bad = args.clone();
    bad.push("--no-such-flag".to_owned());
    let (_, stderr) = run(&bad, &env);
    assert!(stderr.contains("Usage:"), "{stderr}");
    let mut bad_env = env.clone();
    bad_env.push(("HEADROOM_DNS_TOP_K".to_owned(), "0".to_owned()));
    let (_, stderr) = run(&args, &bad_env);
    assert!(stderr.contains("invalid configuration"), "{stderr}");
    let no_node: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k != NODE_NAME_ENV)
        .cloned()
        .collect();
    let (_, stderr) = run(&args, &no_node);
    assert!(stderr.contains("NODE_NAME is not set"), "{stderr}");
}

/// A local API server that records every request and answers discovery, lists (empty)
/// and watches (held open); with `slices: false` it serves no `discovery.k8s.io/v1`, as
/// a 1.20 API server.
async fn fake_api_server(slices: bool) -> (Arc<Mutex<Vec<(String, String)>>>, String) {
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |request: Request| {
        let record = record.clone();
        async move {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            record
                .lock()
                .expect("lock")
                .push((path.clone(), query.clone()));
            let watch = query
                .split('&')
                .any(|q| q == "watch=true" || q == "watch=1");
            let json_body = |code: StatusCode, body: serde_json::Value| {
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .expect("response")
            };
            if path.contains("discovery.k8s.io") && !slices {
                return json_body(
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                );
            }
            if path == "/apis/discovery.k8s.io/v1" {
                return json_body(
                    StatusCode::OK,
                    json!({"kind": "APIResourceList", "apiVersion": "v1",
                           "groupVersion": "discovery.k8s.io/v1",
                           "resources": [{"name": "endpointslices", "singularName": "",
                                          "namespaced": true, "kind": "EndpointSlice",
                                          "verbs": ["list", "watch"]}]}),
                );
            }
            if watch {
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from_stream(futures::stream::pending::<
                        Result<Bytes, Infallible>,
                    >()))
                    .expect("response");
            }
            let (api_version, kind) = if path.contains("endpointslices") {
                ("discovery.k8s.io/v1", "EndpointSliceList")
            } else if path.ends_with("/services") {
                ("v1", "ServiceList")
            } else if path.ends_with("/endpoints") {
                ("v1", "EndpointsList")
            } else {
                ("v1", "PodList")
            };
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"apiVersion": api_version, "kind": kind,
                           "metadata": {"resourceVersion": "1"}, "items": []})
                    .to_string(),
                ))
                .expect("response")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, url)
}

/// One request as RBAC sees it: (namespace, group, resource, verb, the name a
/// `metadata.name` field selector pins).
type Call = (Option<String>, String, String, String, Option<String>);

fn rbac_call(path: &str, query: &str) -> Call {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not an API path: {path}"),
    };
    let (namespace, resource) = match rest {
        ["namespaces", ns, resource] => (Some((*ns).to_owned()), *resource),
        [resource] => (None, *resource),
        _ => panic!("the collector only lists and watches collections: {path}"),
    };
    let params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let watch = params
        .iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
    let pinned = params
        .iter()
        .find(|(k, _)| k == "fieldSelector")
        .and_then(|(_, v)| v.strip_prefix("metadata.name="))
        .map(str::to_owned);
    let verb = if watch { "watch" } else { "list" };
    (
        namespace,
        group,
        resource.to_owned(),
        verb.to_owned(),
        pinned,
    )
}

/// Percent-decoding of a query value (`%3D` → `=`).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| u8::from_str_radix(&v[i + 1..i + 3], 16).ok())
            .flatten();
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// The calls of the collector's watches until each has started (discovery left out: the
/// built-in system:discovery role grants it to every authenticated client).
async fn calls_of_the_watches(slices: bool) -> BTreeSet<Call> {
    let (seen, url) = fake_api_server(slices).await;
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");
    let mut config = ClusterConfig::new("node-a", "10.96.0.1:443".parse().expect("addr"));
    config.backoff.start_jitter = Duration::ZERO;
    let cluster = Cluster::start(client, config);
    let deadline = Instant::now() + Duration::from_secs(20);
    let calls = loop {
        let calls: BTreeSet<Call> = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| !p.trim_matches('/').ends_with("/v1"))
            .map(|(p, q)| rbac_call(p, q))
            .collect();
        if calls.iter().filter(|c| c.3 == "watch").count() == 3 {
            break calls;
        }
        assert!(
            Instant::now() < deadline,
            "the collector's calls so far: {calls:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(cluster);
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_the_calls_the_watches_make() {
    let rendered = render();
    let ds = daemonset(&rendered);
    // On a server with EndpointSlices v1, and on one without (the core/v1 Endpoints
    // fallback): the union of the calls.
    let mut calls = BTreeSet::new();
    for slices in [true, false] {
        calls.extend(calls_of_the_watches(slices).await);
    }

    let account = ds["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let namespace = ds["metadata"]["namespace"].as_str().expect("namespace");
    find(&rendered.docs, "ServiceAccount", account);
    let grants = rbac_grants(&rendered.docs, namespace, account);

    // Every call is allowed...
    for (ns, group, resource, verb, pinned) in &calls {
        let allowed = grants.iter().any(|g| {
            (g.namespace.is_none() || g.namespace == *ns)
                && g.group == *group
                && g.resource == *resource
                && g.verb == *verb
                && (g.resource_names.is_empty()
                    || pinned
                        .as_ref()
                        .is_some_and(|n| g.resource_names.contains(n)))
        });
        assert!(
            allowed,
            "{verb} {group}/{resource} in {ns:?} ({pinned:?}) is not granted"
        );
    }
    // ...and every grant is used, in the narrowest scope the call allows.
    for g in &grants {
        let used = calls.iter().any(|(ns, group, resource, verb, pinned)| {
            *group == g.group
                && *resource == g.resource
                && *verb == g.verb
                && (g.namespace.is_none() || g.namespace == *ns)
                && (g.resource_names.is_empty() || pinned.is_some())
        });
        assert!(used, "{g:?} is granted but never used");
        let namespaced_call = calls
            .iter()
            .find(|c| c.1 == g.group && c.2 == g.resource)
            .and_then(|c| c.0.clone());
        if namespaced_call.is_some() {
            assert_eq!(
                g.namespace, namespaced_call,
                "a Role in that namespace suffices"
            );
        }
        let pinned_call = calls
            .iter()
            .find(|c| c.1 == g.group && c.2 == g.resource)
            .and_then(|c| c.4.clone());
        if let Some(name) = pinned_call {
            assert_eq!(g.resource_names, vec![name], "resourceNames can pin it");
        }
    }
}
