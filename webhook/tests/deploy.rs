//! deploy/ as `kubectl kustomize` renders it, checked against the code it deploys: the
//! objects are valid for Kubernetes (strict schemas, offline), the registration cannot
//! become the outage, the webhook's binary accepts the arguments the Deployment gives it,
//! RBAC grants exactly the API calls the webhook makes, the rules cover exactly what it
//! evaluates, and every PromQL expression shipped names only metrics that exist.
//!
//! Needs `kubectl` (with kustomize v5), `promtool` and the `kubernetes-validate` Python
//! package: `cargo xtask setup` installs or checks them.

mod manifests;

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Request,
    http::{Method, StatusCode},
    response::Response,
};
use manifests::{
    Rendered, container, expand_args, find, find_all, kubernetes_validate, quantity_cpu,
    quantity_memory, rbac_grants, workspace,
};
use serde_json::{Value, json};
use webhook::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    inventory::Inventory,
    metrics::Metrics,
    profile::Snapshot,
};

/// The oldest Kubernetes the manifests support (matchConditions are GA from 1.30) and
/// the one kubectl here speaks.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.32.0"];

const COMPONENTS: [&str; 3] = ["cert-manager", "prometheus-operator", "grafana-dashboard"];

fn default_render() -> Rendered {
    Rendered::kustomize(&workspace().join("deploy"))
}

#[test]
fn every_object_is_valid_for_kubernetes() {
    let all: Vec<&str> = COMPONENTS.to_vec();
    let mut renders = vec![("deploy/".to_owned(), default_render())];
    for component in COMPONENTS {
        renders.push((
            format!("deploy/ + {component}"),
            Rendered::with_components(&[component]),
        ));
    }
    renders.push((
        "deploy/ + every component".to_owned(),
        Rendered::with_components(&all),
    ));
    for (what, rendered) in &renders {
        for version in KUBERNETES_VERSIONS {
            let unchecked = kubernetes_validate(&rendered.text, version)
                .unwrap_or_else(|e| panic!("{what} against Kubernetes {version}: {e}"));
            // Only the custom kinds lack a schema; they are checked below and by the
            // component tests.
            let allowed: BTreeSet<&str> = [
                "ControlPlaneBudget",
                "Certificate",
                "Issuer",
                "PodMonitor",
                "PrometheusRule",
            ]
            .into();
            for kind in &unchecked {
                assert!(
                    allowed.contains(kind.as_str()),
                    "{what}: no schema checked {kind}"
                );
            }
        }
    }
}

#[test]
fn the_schema_check_rejects_unknown_fields() {
    // The check above is only worth something if it is strict: the same render with one
    // misspelt field must fail.
    let rendered = default_render();
    let bad = rendered.text.replacen(
        "sideEffects: None",
        "sideEffects: None\n  sideEffect: None",
        1,
    );
    assert_ne!(bad, rendered.text, "the field to misspell is in the render");
    let error = kubernetes_validate(&bad, KUBERNETES_VERSIONS[0])
        .expect_err("an unknown field must fail validation");
    assert!(error.contains("sideEffect"), "{error}");
}

#[test]
fn the_default_budget_is_what_the_webhook_loads() {
    let rendered = default_render();
    let budget = find(&rendered.docs, "ControlPlaneBudget", "default");
    let text = serde_yaml::to_string(budget).expect("YAML");
    let parsed = ControlPlaneBudget::parse("deploy/budget/default.yaml", &text)
        .unwrap_or_else(|e| panic!("{e}"));
    parsed
        .spec
        .validate("deploy/budget/default.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    // Every field is read as written (no unknown field silently ignored, no default
    // standing in for a misspelt one).
    let reserialized = serde_json::to_value(&parsed.spec).expect("JSON");
    assert_eq!(
        manifests::normalize_numbers(&reserialized),
        manifests::normalize_numbers(&budget["spec"]),
    );
    // The exemptions match the registration's.
    let exempt: BTreeSet<&str> = parsed
        .spec
        .exempt_namespaces
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(exempt, excluded_namespaces(&rendered));
    // The Deployment's --budget-name is this budget.
    let args = webhook_args(&rendered);
    assert!(
        args.contains(&"--budget-name=default".to_owned()),
        "{args:?}"
    );
}

fn webhook_deployment(rendered: &Rendered) -> &Value {
    find(&rendered.docs, "Deployment", "headroom-webhook")
}

/// The webhook container's arguments with `$(VAR)` expanded as the kubelet would.
fn webhook_args(rendered: &Rendered) -> Vec<String> {
    let deployment = webhook_deployment(rendered);
    let container = container(deployment, "webhook");
    expand_args(container, &rendered.docs)
}

fn excluded_namespaces(rendered: &Rendered) -> BTreeSet<&str> {
    let config = find(&rendered.docs, "ValidatingWebhookConfiguration", "headroom");
    let hooks = config["webhooks"].as_array().expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let expressions = hooks[0]["namespaceSelector"]["matchExpressions"]
        .as_array()
        .expect("a namespaceSelector with matchExpressions");
    let mut excluded = BTreeSet::new();
    for e in expressions {
        assert_eq!(e["key"], "kubernetes.io/metadata.name", "{e}");
        assert_eq!(e["operator"], "NotIn", "{e}");
        for v in e["values"].as_array().expect("values") {
            excluded.insert(v.as_str().expect("a name"));
        }
    }
    excluded
}

#[test]
fn the_registration_cannot_become_the_outage() {
    let rendered = default_render();
    let config = find(&rendered.docs, "ValidatingWebhookConfiguration", "headroom");
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    let timeout = hook["timeoutSeconds"].as_u64().expect("timeoutSeconds");
    assert!((1..=3).contains(&timeout), "timeoutSeconds {timeout}");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["matchPolicy"], "Equivalent");

    // kube-system and the namespace the webhook runs in are never sent to it.
    let deployment = webhook_deployment(&rendered);
    let own = deployment["metadata"]["namespace"]
        .as_str()
        .expect("namespace");
    let excluded = excluded_namespaces(&rendered);
    assert!(excluded.contains("kube-system"), "{excluded:?}");
    assert!(excluded.contains(own), "{own} not in {excluded:?}");

    // The client config reaches the webhook's HTTPS port at the path it serves.
    let service_ref = &hook["clientConfig"]["service"];
    assert_eq!(service_ref["namespace"], own);
    assert_eq!(service_ref["path"], "/validate");
    let service = find(
        &rendered.docs,
        "Service",
        service_ref["name"].as_str().expect("service name"),
    );
    let port = service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"] == service_ref["port"])
        .expect("the Service has the registered port");
    let container = container(deployment, "webhook");
    let target = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the targetPort names a container port");
    let args = webhook_args(&rendered);
    let listen = flag(&args, "--listen").expect("--listen");
    assert!(
        listen.ends_with(&format!(":{}", target["containerPort"])),
        "--listen={listen} vs {target}"
    );
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(
            &deployment["spec"]["template"]["metadata"]["labels"][k], v,
            "the Service selects the webhook's pods"
        );
    }

    // Two replicas that a drain cannot take down together, spread over nodes.
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pdb = find(&rendered.docs, "PodDisruptionBudget", "headroom-webhook");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert!(
        pdb["spec"]["maxUnavailable"] == 1 || pdb["spec"]["minAvailable"] == 1,
        "{pdb}"
    );
    let anti = &deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    let term = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        term["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // The TLS Secret is mounted where --tls-cert and --tls-key point.
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("a tls mount");
    let dir = mount["mountPath"].as_str().expect("mountPath");
    assert_eq!(
        flag(&args, "--tls-cert").as_deref(),
        Some(format!("{dir}/tls.crt").as_str())
    );
    assert_eq!(
        flag(&args, "--tls-key").as_deref(),
        Some(format!("{dir}/tls.key").as_str())
    );

    // Probes on the plain-HTTP port the webhook serves them on.
    let metrics_port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a metrics port");
    let metrics_listen = flag(&args, "--metrics-listen").expect("--metrics-listen");
    assert!(metrics_listen.ends_with(&format!(":{}", metrics_port["containerPort"])));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");

    // Least privilege: the webhook needs nothing from the node.
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert!(quantity_memory(&container["resources"]["limits"]["memory"]) > 0);
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

/// An AdmissionReview v1 request for `resource` (and `sub_resource`) carrying `object`.
fn review_body(
    group: &str,
    resource: &str,
    sub_resource: Option<&str>,
    operation: &str,
    object: &Value,
) -> Vec<u8> {
    let (kind_group, kind) = if sub_resource == Some("scale") {
        ("autoscaling", "Scale")
    } else {
        (group, object["kind"].as_str().expect("kind"))
    };
    let mut request = json!({
        "uid": "0d5f2b8e-0000-4000-8000-000000000001",
        "kind": {"group": kind_group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "name": object["metadata"]["name"],
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin"},
        "object": object,
        "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
        "dryRun": false
    });
    if let Some(sub) = sub_resource {
        request["subResource"] = json!(sub);
    }
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request
    }))
    .expect("JSON")
}

fn fixture(name: &str) -> Value {
    let path = workspace().join("webhook/tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if name.ends_with(".json") {
        serde_json::from_str(&text).expect("JSON fixture")
    } else {
        serde_yaml::from_str(&text).expect("YAML fixture")
    }
}

fn object_of_kind(kind: &str) -> Value {
    let mut object = match kind {
        "Deployment" => fixture("deployment-web.json"),
        "DaemonSet" => fixture("daemonset-agent.yaml"),
        "StatefulSet" => fixture("statefulset-db.yaml"),
        "Job" => fixture("job-migrate.json"),
        "CronJob" => fixture("cronjob-report.json"),
        "ReplicaSet" => {
            let mut rs = fixture("deployment-web.json");
            rs["kind"] = json!("ReplicaSet");
            if let Some(spec) = rs["spec"].as_object_mut() {
                spec.remove("strategy");
                spec.remove("progressDeadlineSeconds");
            }
            rs
        }
        "Scale" => json!({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}
        }),
        other => {
            let mut pod_like = fixture("deployment-web.json");
            pod_like["kind"] = json!(other);
            pod_like
        }
    };
    object["metadata"]["namespace"] = json!("default");
    object
}

#[test]
fn the_rules_register_exactly_what_the_webhook_evaluates() {
    let rendered = default_render();
    let config = find(&rendered.docs, "ValidatingWebhookConfiguration", "headroom");
    let rules = config["webhooks"][0]["rules"].as_array().expect("rules");
    let registered = |group: &str, resource: &str, operation: &str| {
        rules.iter().any(|r| {
            let has = |field: &str, value: &str| {
                r[field]
                    .as_array()
                    .expect("a list")
                    .iter()
                    .any(|v| v == value || v == "*")
            };
            has("apiGroups", group)
                && has("apiVersions", "v1")
                && has("resources", resource)
                && has("operations", operation)
        })
    };
    for r in rules {
        assert_eq!(r["scope"], "Namespaced", "{r}");
        let operations = r["operations"].as_array().expect("operations");
        assert!(
            !operations.iter().any(|o| o == "DELETE" || o == "*"),
            "DELETE is always allowed; sending it only costs the API server: {r}"
        );
    }

    // Every workload-like resource and subresource the API server has, the supported
    // ones and the neighbours a registration could include by mistake.
    let candidates: [(&str, &str, Option<&str>, &str); 16] = [
        ("apps", "deployments", None, "Deployment"),
        ("apps", "statefulsets", None, "StatefulSet"),
        ("apps", "daemonsets", None, "DaemonSet"),
        ("apps", "replicasets", None, "ReplicaSet"),
        ("apps", "controllerrevisions", None, "ControllerRevision"),
        ("batch", "jobs", None, "Job"),
        ("batch", "cronjobs", None, "CronJob"),
        ("", "pods", None, "Pod"),
        ("", "replicationcontrollers", None, "ReplicationController"),
        ("apps", "deployments", Some("scale"), "Scale"),
        ("apps", "statefulsets", Some("scale"), "Scale"),
        ("apps", "replicasets", Some("scale"), "Scale"),
        ("", "replicationcontrollers", Some("scale"), "Scale"),
        ("apps", "deployments", Some("status"), "Deployment"),
        ("apps", "daemonsets", Some("status"), "DaemonSet"),
        ("batch", "jobs", Some("status"), "Job"),
    ];
    let state = State::new(
        Budget::from(ControlPlaneBudget::new("default", Default::default())),
        Inventory::uniform(3),
    );
    state.set_snapshot(Snapshot::default(), SystemTime::now());
    for (group, resource, sub, kind) in candidates {
        for operation in ["CREATE", "UPDATE"] {
            if sub.is_some() && operation == "CREATE" {
                continue; // subresources are only ever updated
            }
            let object = object_of_kind(kind);
            let body = review_body(group, resource, sub, operation, &object);
            let evaluated = match state.review(&body) {
                Ok(_) => true,
                Err(e) if e.0.contains("unsupported") => false,
                Err(e) => panic!("{group}/{resource} {sub:?} {operation}: {}", e.0),
            };
            let name = match sub {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_owned(),
            };
            assert_eq!(
                registered(group, &name, operation),
                evaluated,
                "{operation} {group}/{name}: registered must equal evaluated"
            );
        }
    }
}

/// A local API server that records every request and answers lists (empty, or the
/// budget), watches (held open), gets and patches of the budget.
#[derive(Clone, Default)]
struct FakeApiServer {
    seen: Arc<Mutex<Vec<(Method, String, String)>>>,
}

impl FakeApiServer {
    async fn start(budget: Value) -> (FakeApiServer, String) {
        let server = FakeApiServer::default();
        let seen = server.seen.clone();
        let app = Router::new().fallback(move |request: Request| {
            let seen = seen.clone();
            let budget = budget.clone();
            async move {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let query = request.uri().query().unwrap_or_default().to_owned();
                seen.lock()
                    .expect("lock")
                    .push((method.clone(), path.clone(), query.clone()));
                answer(&method, &path, &query, &budget)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, url)
    }

    fn seen(&self) -> Vec<(Method, String, String)> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A real kube-apiserver v1.20.2's FlowSchemas and APF metrics.
const APF_FLOW_SCHEMAS: &str = include_str!("fixtures/apf/v1.20.2-flowschemas.json");
const APF_METRICS: &str = include_str!("fixtures/apf/v1.20.2-after-600-lists.prom");

fn answer(method: &Method, path: &str, query: &str, budget: &Value) -> Response {
    let json_body = |code: StatusCode, v: Value| {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .expect("response")
    };
    if query
        .split('&')
        .any(|q| q == "watch=true" || q == "watch=1")
    {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(futures::stream::pending::<
                Result<Bytes, Infallible>,
            >()))
            .expect("response");
    }
    let budgets = "/apis/headroom.dev/v1alpha1/controlplanebudgets";
    match (method.as_str(), path) {
        ("GET", p) if p == format!("{budgets}/default") => {
            json_body(StatusCode::OK, budget.clone())
        }
        ("PATCH" | "PUT", p) if p == format!("{budgets}/default/status") => {
            json_body(StatusCode::OK, budget.clone())
        }
        ("GET", p) if p == budgets => json_body(
            StatusCode::OK,
            json!({"apiVersion": "headroom.dev/v1alpha1", "kind": "ControlPlaneBudgetList",
                   "metadata": {"resourceVersion": "7"}, "items": [budget]}),
        ),
        ("GET", "/api/v1/nodes") => json_body(
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": "7"},
                   "items": [{"metadata": {"name": "node-a", "resourceVersion": "1",
                              "labels": {"kubernetes.io/os": "linux"}}}]}),
        ),
        // Discovery: autoscaling/v2 serves HPAs.
        ("GET", "/apis/autoscaling/v2") => json_body(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "autoscaling/v2",
                   "resources": [{"name": "horizontalpodautoscalers", "singularName": "",
                                  "namespaced": true, "kind": "HorizontalPodAutoscaler",
                                  "verbs": ["list", "watch"]}]}),
        ),
        // The parents of scale reviews.
        ("GET", p) if p.starts_with("/apis/apps/v1/") => {
            let kind = match &p["/apis/apps/v1/".len()..] {
                "deployments" => "DeploymentList",
                "statefulsets" => "StatefulSetList",
                "replicasets" => "ReplicaSetList",
                other => panic!("unexpected apps/v1 resource {other}"),
            };
            json_body(
                StatusCode::OK,
                json!({"apiVersion": "apps/v1", "kind": kind,
                       "metadata": {"resourceVersion": "7"}, "items": []}),
            )
        }
        // Discovery: flowcontrol as 1.20 serves it (v1beta1; newer versions 404).
        ("GET", "/apis/flowcontrol.apiserver.k8s.io/v1beta1") => json_body(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": "flowcontrol.apiserver.k8s.io/v1beta1",
                   "resources": [{"name": "flowschemas", "singularName": "", "namespaced": false,
                                  "kind": "FlowSchema", "verbs": ["list", "watch"]}]}),
        ),
        ("GET", "/apis/flowcontrol.apiserver.k8s.io/v1beta1/flowschemas") => {
            let mut list: Value = serde_json::from_str(APF_FLOW_SCHEMAS).expect("recorded");
            list["kind"] = json!("FlowSchemaList");
            list["apiVersion"] = json!("flowcontrol.apiserver.k8s.io/v1beta1");
            list["metadata"] = json!({"resourceVersion": "7"});
            json_body(StatusCode::OK, list)
        }
        ("GET", "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Body::from(APF_METRICS))
            .expect("response"),
        ("GET", "/apis/autoscaling/v2/horizontalpodautoscalers") => json_body(
            StatusCode::OK,
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscalerList",
                   "metadata": {"resourceVersion": "7"}, "items": []}),
        ),
        _ => json_body(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": format!("{method} {path}")}),
        ),
    }
}

/// The budget as the API server would return it.
fn served_budget(rendered: &Rendered) -> Value {
    let mut budget = find(&rendered.docs, "ControlPlaneBudget", "default").clone();
    budget["metadata"]["resourceVersion"] = json!("5");
    budget["metadata"]["uid"] = json!("3c0b2f6e-2f7d-4a55-9a55-7f0c3f6e2a11");
    budget
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_accepts_the_deployments_arguments() {
    let rendered = default_render();
    let args = webhook_args(&rendered);
    let (server, url) = FakeApiServer::start(served_budget(&rendered)).await;
    let dir = manifests::temp_dir("webhook-args");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n"
        ),
    )
    .expect("kubeconfig");
    let run = |args: Vec<String>| {
        let kubeconfig = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_headroom-webhook"));
            cmd.args(&args)
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env("KUBECONFIG", &kubeconfig)
                .env("RUST_LOG", "info");
            manifests::run_with_timeout(cmd, Duration::from_secs(30))
        })
    };

    // The Deployment's arguments parse, the budget it names is fetched and accepted, and
    // start-up goes on to the certificate, which exists only in the pod.
    let (status, stderr) = run(args.clone()).await.expect("join");
    assert!(!status.success(), "there is no certificate here: {stderr}");
    assert!(!stderr.contains("Usage:"), "argument error: {stderr}");
    assert!(
        stderr.contains("/etc/headroom/tls/tls.crt") && stderr.contains("TLS"),
        "{stderr}"
    );
    assert!(
        server.seen().iter().any(|(m, p, _)| m == Method::GET
            && p == "/apis/headroom.dev/v1alpha1/controlplanebudgets/default"),
        "the budget was fetched: {:?}",
        server.seen()
    );

    // The check tells argument errors apart: an unknown flag fails in the parser.
    let mut bad = args;
    bad.push("--no-such-flag".to_owned());
    let (status, stderr) = run(bad).await.expect("join");
    assert!(!status.success());
    assert!(stderr.contains("Usage:"), "{stderr}");
}

/// `/api/v1`, `/apis/<group>/<version>`: what resources a group/version serves.
fn is_discovery(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.first() {
        Some(&"api") => parts.len() <= 2,
        Some(&"apis") => parts.len() <= 3,
        _ => false,
    }
}

/// (API group, resource[/subresource], verb) of a request as RBAC sees it.
fn rbac_attributes(method: &Method, path: &str, query: &str) -> (String, String, String) {
    if path == "/metrics" {
        return (
            String::new(),
            path.to_owned(),
            method.as_str().to_lowercase(),
        );
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("not an API path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => panic!("unexpected API path: {path}"),
    };
    let watch = query
        .split('&')
        .any(|q| q == "watch=true" || q == "watch=1");
    let verb = match (method.as_str(), name, watch) {
        ("GET", _, true) => "watch",
        ("GET", None, false) => "list",
        ("GET", Some(_), false) => "get",
        ("PATCH", _, _) => "patch",
        ("PUT", _, _) => "update",
        ("POST", _, _) => "create",
        ("DELETE", _, _) => "delete",
        (other, _, _) => panic!("unexpected method {other}"),
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    (group, resource, verb.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_the_calls_the_webhook_makes() {
    let rendered = default_render();
    // With `auto` request limits, which add the API server's /metrics to its calls.
    let mut budget = served_budget(&rendered);
    budget["spec"]["limits"]["apiserverRequestsPerSecond"] = json!("auto");
    let (server, url) = FakeApiServer::start(budget).await;
    let client =
        kube::Client::try_from(kube::Config::new(url.parse().expect("url"))).expect("client");

    // What `serve --kube` does: fetch the budget, then watch and write its status.
    let budget = webhook::cluster::fetch_budget(client.clone(), "default")
        .await
        .expect("the budget is fetched");
    let state = Arc::new(State::new(Budget::from(budget), Inventory::default()));
    state.set_snapshot(Snapshot::default(), SystemTime::now());
    // And share what it admits through the status.
    let (share, admitted) = tokio::sync::mpsc::unbounded_channel();
    let sharing = tokio::spawn(webhook::reservation::shared::run(
        kube::Api::all(client.clone()),
        "default".to_owned(),
        state.clone(),
        admitted,
        Duration::from_millis(100),
        false,
    ));
    share
        .send(webhook::reservation::Reservation {
            workload: webhook::profile::WorkloadRef {
                namespace: "default".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            load: webhook::load::Load::ZERO,
            admitted_at: SystemTime::now(),
        })
        .expect("sharing runs");
    let health = Arc::new(webhook::cluster::health());
    let backoff = collector::watch::BackoffConfig::default().without_jitter();
    let task = tokio::spawn(webhook::cluster::run(
        client,
        state,
        health,
        "default".to_owned(),
        Duration::from_millis(100),
        backoff,
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    let used = loop {
        // Discovery (`/apis/<group>/<version>`) is granted to every authenticated client
        // by the built-in system:discovery role; RBAC here covers the resources.
        let used: BTreeSet<(String, String, String)> = server
            .seen()
            .iter()
            .filter(|(_, p, _)| !is_discovery(p))
            .map(|(m, p, q)| rbac_attributes(m, p, q))
            .collect();
        // Every watch has started and the status was written at least once.
        let watches = used.iter().filter(|(_, _, v)| v == "watch").count();
        let patched = used.iter().any(|(_, _, v)| v == "patch");
        let updated = used.iter().any(|(_, _, v)| v == "update");
        // Nodes, HPAs, budgets; Deployments, StatefulSets, ReplicaSets (scale parents);
        // FlowSchemas; and the API server's /metrics.
        let scraped = used.iter().any(|(_, r, _)| r == "/metrics");
        if watches == 7 && patched && updated && scraped {
            break used;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook's calls so far: {used:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    task.abort();
    sharing.abort();

    let deployment = webhook_deployment(&rendered);
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let namespace = deployment["metadata"]["namespace"].as_str().expect("ns");
    find(&rendered.docs, "ServiceAccount", account);
    let granted = rbac_grants(&rendered.docs, namespace, account);
    // All of it cluster-wide: nodes, budgets; HPAs of every namespace.
    let granted: BTreeSet<(String, String, String)> = granted
        .into_iter()
        .map(|g| {
            assert_eq!(
                g.namespace, None,
                "the webhook's reads are cluster-wide: {g:?}"
            );
            assert!(g.resource_names.is_empty(), "{g:?}");
            (g.group, g.resource, g.verb)
        })
        .collect();
    assert_eq!(
        granted, used,
        "RBAC must grant exactly what the webhook calls"
    );
}

/// The collector's sample names the dashboard and the rules may use: the families below,
/// each checked against the collector's metric sources (name and unit), with the sample
/// names its kind exposes. A family renamed or removed there fails here.
fn collector_metric_names() -> BTreeSet<String> {
    let dir = workspace().join("collector/src/metrics");
    let mut families: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("collector/src/metrics")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.push(workspace().join("collector/src/metrics.rs"));
    for path in files {
        let source = std::fs::read_to_string(&path).expect("a metrics source");
        for (i, _) in source.match_indices("Family::") {
            let call = &source[i..];
            let (with_unit, rest) = if let Some(rest) = call.strip_prefix("Family::new(") {
                (false, rest)
            } else if let Some(rest) = call.strip_prefix("Family::with_unit(") {
                (true, rest)
            } else {
                continue;
            };
            let Some(end) = rest.find(");") else { continue };
            let args = &rest[..end];
            let Some(name) = args.split('"').nth(1) else {
                continue;
            };
            let unit = with_unit.then(|| {
                let unit = args.rsplit("Unit::").next().expect("a unit");
                unit.trim().trim_end_matches(',').to_lowercase()
            });
            families.insert(name.to_owned(), unit);
        }
    }
    // How each family is encoded (collector/src/metrics/exposition.rs, watches.rs).
    let kinds: [(&str, &str); 27] = [
        ("apiserver_requests", "counter"),
        ("apiserver_connections", "counter"),
        ("apiserver_sent", "counter"),
        ("apiserver_received", "counter"),
        ("apiserver_open_streams", "gauge"),
        ("apiserver_open_connections", "gauge"),
        ("dns_queries", "counter"),
        ("dns_responses", "counter"),
        ("dns_lookups", "counter"),
        ("dns_search_expansions", "counter"),
        ("dns_query_duration", "histogram"),
        ("pod_start_time", "gauge"),
        ("collector_events_lost", "counter"),
        ("collector_kernel_drops", "counter"),
        ("collector_map_entries", "gauge"),
        ("collector_map_capacity", "gauge"),
        ("collector_map_evictions", "counter"),
        ("collector_program_runs", "counter"),
        ("collector_program_run", "counter"),
        ("collector_program_stats", "counter"),
        ("collector_build", "info"),
        ("collector_kube_lists", "counter"),
        ("collector_kube_events", "counter"),
        ("collector_kube_watch_errors", "counter"),
        ("collector_kube_last_event_timestamp", "gauge"),
        ("collector_kube_watch_ready", "gauge"),
        ("collector_kube_api_served", "gauge"),
    ];
    let mut names = BTreeSet::new();
    for (family, kind) in kinds {
        let unit = families.get(family).unwrap_or_else(|| {
            panic!("the collector no longer has the metric family {family}: update this table")
        });
        let base = match unit {
            Some(unit) => format!("headroom_{family}_{unit}"),
            None => format!("headroom_{family}"),
        };
        match kind {
            "counter" => {
                names.insert(format!("{base}_total"));
            }
            "gauge" => {
                names.insert(base);
            }
            "info" => {
                names.insert(format!("{base}_info"));
            }
            _ => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{base}{suffix}"));
                }
            }
        }
    }
    names
}

/// The webhook's sample names, from its real exposition.
fn webhook_metric_names() -> BTreeSet<String> {
    let metrics = Metrics::default();
    // The watches' families exist with `serve --kube`.
    let _ = metrics.watches.set(Arc::new(webhook::cluster::health()));
    metrics.record_decision("Enforce", "allowed", "Deployment");
    metrics.record_fail_open("stale");
    metrics.record_refresh_error("prometheus");
    // The priority levels' gauges exist with an `auto` budget's figures.
    metrics
        .levels
        .show(Some(&webhook::capacity::ApiserverCapacityStatus {
            observed_at: None,
            data_age_seconds: None,
            source: String::new(),
            levels: vec![webhook::capacity::PriorityLevelStatus {
                name: "workload-low".into(),
                seats: 1.0,
                capacity_requests_per_second: Some(1.0),
                in_use_requests_per_second: 0.0,
                limit_requests_per_second: Some(0.7),
                headroom_requests_per_second: Some(0.7),
                constraint: None,
            }],
        }));
    metrics
        .encode()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            l.split(['{', ' '])
                .next()
                .expect("a sample name")
                .to_owned()
        })
        .collect()
}

fn rules_file() -> Value {
    let path = workspace().join("deploy/prometheus/headroom-rules.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).expect("rules")).expect("rules YAML")
}

fn recorded_names(rules: &Value) -> BTreeSet<String> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect()
}

/// The `headroom_*` and `headroom:*` names a PromQL expression uses (label values and
/// other strings left out).
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut outside_strings = String::new();
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
            outside_strings.push(' ');
        } else if !quoted {
            outside_strings.push(c);
        }
    }
    outside_strings
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("headroom_") || t.starts_with("headroom:"))
        .map(str::to_owned)
        .collect()
}

fn dashboard() -> Value {
    let path = workspace().join("deploy/components/grafana-dashboard/headroom-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON")
}

fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

#[test]
fn promql_names_only_exported_or_recorded_metrics() {
    let rules = rules_file();
    let recorded = recorded_names(&rules);
    let collector = collector_metric_names();
    let webhook = webhook_metric_names();
    assert!(collector.contains("headroom_apiserver_requests_total"));
    assert!(
        webhook.contains("headroom_webhook_decisions_total"),
        "{webhook:?}"
    );
    let known: BTreeSet<&String> = recorded.iter().chain(&collector).chain(&webhook).collect();

    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("expr");
            for name in names_in(expr) {
                assert!(
                    known.contains(&name),
                    "rule {}: {name} is neither exported nor recorded",
                    rule["record"]
                );
            }
        }
    }
    let dashboard = dashboard();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = names_in(expr);
        assert!(
            !names.is_empty(),
            "panel {title}: no Headroom metric in {expr}"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "panel {title}: {name} is neither exported nor recorded"
            );
            used.insert(name);
        }
    }
    // The dashboard shows each of the four dimensions from the collector and the rules.
    for name in [
        "headroom_apiserver_requests_total",
        "headroom_apiserver_received_bytes_total",
        "headroom_apiserver_connections_total",
        "headroom_dns_queries_total",
        "headroom:cluster_apiserver_requests:rate5m",
        "headroom_webhook_decisions_total",
        "headroom_collector_events_lost_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn dashboard_queries_parse_as_promql() {
    // promtool parses every expression: as recording rules in a throwaway file.
    let dashboard = dashboard();
    let rules: Vec<Value> = dashboard_exprs(&dashboard)
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("headroom_dashboard:query_{i}"), "expr": expr}))
        .collect();
    let file = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = manifests::temp_dir("dashboard-promql");
    let path = dir.join("dashboard-rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).expect("YAML")).expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool runs (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every panel queries the selectable data source.
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    let ids: Vec<&Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| &p["id"])
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        ids.len(),
        "panel ids are unique"
    );
}

#[test]
fn prometheus_operator_component_scrapes_and_loads_the_rules() {
    let rendered = Rendered::with_components(&["prometheus-operator"]);
    let rule = find(&rendered.docs, "PrometheusRule", "headroom-profiles");
    assert_eq!(
        rule["spec"],
        rules_file(),
        "deploy/components/prometheus-operator/prometheusrule.yaml is stale: run `cargo xtask gen`"
    );

    let collector = find(&rendered.docs, "DaemonSet", "headroom-collector");
    let webhook = webhook_deployment(&rendered);
    for (monitor, workload, container_name) in [
        ("headroom-collector", collector, "collector"),
        ("headroom-webhook", webhook, "webhook"),
    ] {
        let monitor = find(&rendered.docs, "PodMonitor", monitor);
        assert_eq!(
            monitor["metadata"]["namespace"],
            workload["metadata"]["namespace"]
        );
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels")
        {
            assert_eq!(&labels[k], v, "the PodMonitor selects the pods");
        }
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        let container = container(workload, container_name);
        assert!(
            container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == endpoint["port"]),
            "the scraped port exists: {endpoint}"
        );
        assert_eq!(endpoint["path"], "/metrics");
    }
    // The collector's series carry the measured pod's namespace/pod/container: they
    // must win over the collector pod's own target labels.
    let monitor = find(&rendered.docs, "PodMonitor", "headroom-collector");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["honorLabels"], true);
}

#[test]
fn cert_manager_component_issues_the_mounted_certificate() {
    let rendered = Rendered::with_components(&["cert-manager"]);
    let certificate = find(&rendered.docs, "Certificate", "headroom-webhook");
    let deployment = webhook_deployment(&rendered);
    let namespace = deployment["metadata"]["namespace"].as_str().expect("ns");
    let secret = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("the tls volume")["secret"]["secretName"]
        .clone();
    assert_eq!(certificate["spec"]["secretName"], secret);
    assert_eq!(certificate["metadata"]["namespace"], namespace);
    let config = find(&rendered.docs, "ValidatingWebhookConfiguration", "headroom");
    let service = config["webhooks"][0]["clientConfig"]["service"]["name"]
        .as_str()
        .expect("service");
    let dns_names = certificate["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames");
    assert!(
        dns_names.contains(&json!(format!("{service}.{namespace}.svc"))),
        "the API server calls {service}.{namespace}.svc: {dns_names:?}"
    );
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{namespace}/headroom-webhook")
    );
    let issuer = certificate["spec"]["issuerRef"]["name"]
        .as_str()
        .expect("issuer");
    find(&rendered.docs, "Issuer", issuer);
    // The base leaves the CA bundle to this component or to the operator.
    assert!(!default_render().text.contains("cert-manager"));
}

#[test]
fn grafana_component_ships_the_dashboard() {
    let rendered = Rendered::with_components(&["grafana-dashboard"]);
    let map = find_all(&rendered.docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap labelled grafana_dashboard: \"1\"");
    let json_text = map["data"]["headroom-dashboard.json"]
        .as_str()
        .expect("the dashboard file");
    let shipped: Value = serde_json::from_str(json_text).expect("JSON");
    assert_eq!(shipped, dashboard());
    assert_eq!(shipped["uid"], "headroom-overview");
}

#[test]
fn images_are_the_placeholders_an_overlay_sets() {
    let rendered = default_render();
    let images: BTreeSet<String> = rendered
        .docs
        .iter()
        .filter_map(|d| d["spec"]["template"]["spec"]["containers"].as_array())
        .flatten()
        .map(|c| c["image"].as_str().expect("image").to_owned())
        .collect();
    let names: BTreeSet<&str> = images
        .iter()
        .map(|i| i.split(':').next().expect("name"))
        .collect();
    assert_eq!(names, ["headroom-collector", "headroom-webhook"].into());
    // Labels platform tooling reads.
    for doc in &rendered.docs {
        let labels = &doc["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/part-of"], "headroom",
            "{} {}",
            doc["kind"], doc["metadata"]["name"]
        );
    }
    let cpu = quantity_cpu(
        &container(webhook_deployment(&rendered), "webhook")["resources"]["requests"]["cpu"],
    );
    assert!(cpu > 0.0);
}

/// Evaluates a CEL expression on each `object` with cel-python (standard CEL, which the
/// expression sticks to), as the API server does for a matchCondition.
fn evaluate_cel(expression: &str, objects: &[Value]) -> Vec<bool> {
    const SCRIPT: &str = "
import json, sys, celpy
env = celpy.Environment()
program = env.program(env.compile(sys.argv[1]))
for obj in json.load(sys.stdin):
    result = program.evaluate(celpy.json_to_cel({'object': obj}))
    if not isinstance(result, celpy.celtypes.BoolType):
        sys.exit(f'not a bool: {result!r}')
    print(json.dumps(bool(result)))
";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT, expression])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (cargo xtask setup installs cel-python)");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&serde_json::to_vec(objects).expect("JSON"))
            .expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "CEL {expression}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a bool"))
        .collect()
}

#[test]
fn the_match_condition_skips_only_children_of_evaluated_owners() {
    let rendered = default_render();
    let config = find(&rendered.docs, "ValidatingWebhookConfiguration", "headroom");
    let conditions = config["webhooks"][0]["matchConditions"]
        .as_array()
        .expect("matchConditions");
    let owned = |mut object: Value, api_version: &str, kind: &str, controller: Option<bool>| {
        let mut owner = json!({"apiVersion": api_version, "kind": kind, "name": "owner",
                               "uid": "0b7c1f0e-1c55-4b55-8e55-2f0c3f6e2a11"});
        if let Some(c) = controller {
            owner["controller"] = json!(c);
        }
        object["metadata"]["ownerReferences"] = json!([owner]);
        object
    };
    // (object, whether the webhook must see it)
    let cases = [
        (object_of_kind("Deployment"), true),
        (object_of_kind("ReplicaSet"), true),
        (object_of_kind("Job"), true),
        (object_of_kind("Scale"), true),
        (
            owned(
                object_of_kind("ReplicaSet"),
                "apps/v1",
                "Deployment",
                Some(true),
            ),
            false,
        ),
        (
            owned(object_of_kind("Job"), "batch/v1", "CronJob", Some(true)),
            false,
        ),
        // Owned but not controlled, or controlled by something the webhook never saw.
        (
            owned(object_of_kind("ReplicaSet"), "apps/v1", "Deployment", None),
            true,
        ),
        (
            owned(
                object_of_kind("ReplicaSet"),
                "apps/v1",
                "Deployment",
                Some(false),
            ),
            true,
        ),
        (
            owned(
                object_of_kind("StatefulSet"),
                "example.com/v1",
                "Database",
                Some(true),
            ),
            true,
        ),
        (
            owned(
                object_of_kind("Deployment"),
                "argoproj.io/v1alpha1",
                "Rollout",
                Some(true),
            ),
            true,
        ),
    ];
    let objects: Vec<Value> = cases.iter().map(|(o, _)| o.clone()).collect();
    let expected: Vec<bool> = cases.iter().map(|(_, e)| *e).collect();
    // The API server sends a request only when every condition is true.
    let mut sent = vec![true; objects.len()];
    for condition in conditions {
        let expression = condition["expression"].as_str().expect("expression");
        for (s, r) in sent.iter_mut().zip(evaluate_cel(expression, &objects)) {
            *s &= r;
        }
    }
    assert_eq!(sent, expected);
}
