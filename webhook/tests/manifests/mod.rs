//! Rendering deploy/ and reading what it renders; shared by the deploy tests of the
//! webhook and the collector (`#[path]` there).
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde::Deserialize as _;
use serde_json::Value;

/// The workspace root (both crates live one level below it).
pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("a workspace").to_path_buf()
}

/// A fresh directory under the system temp dir, unique per process and call.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "headroom-deploy-{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// What `kubectl kustomize` printed, and its documents.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub docs: Vec<Value>,
}

impl Rendered {
    pub fn kustomize(dir: &Path) -> Rendered {
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("kubectl runs (cargo xtask setup checks it is installed)");
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        let docs = serde_yaml::Deserializer::from_str(&text)
            .map(|doc| Value::deserialize(doc).expect("kustomize prints YAML"))
            .filter(|v| !v.is_null())
            .collect();
        Rendered { text, docs }
    }

    /// deploy/ with `components` (names under deploy/components), as an operator's
    /// overlay would include them. kustomize wants relative paths, so the overlay refers
    /// to deploy/ from the temp dir up through the root.
    pub fn with_components(components: &[&str]) -> Rendered {
        let dir = temp_dir("overlay");
        let up = "../".repeat(dir.components().count().saturating_sub(1));
        let deploy = workspace().join("deploy");
        let deploy = deploy
            .strip_prefix("/")
            .expect("an absolute workspace path")
            .display()
            .to_string();
        let mut text = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {up}{deploy}\ncomponents:\n"
        );
        for c in components {
            text.push_str(&format!("  - {up}{deploy}/components/{c}\n"));
        }
        std::fs::write(dir.join("kustomization.yaml"), text).expect("write overlay");
        let rendered = Rendered::kustomize(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        rendered
    }
}

pub fn find_all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one object of `kind` named `name` (ConfigMaps: before kustomize's hash suffix).
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} {name} in the render");
    found[0]
}

/// The container `name` of a workload's pod template.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The container's environment as the kubelet would set it: literal values, ConfigMap
/// keys from the render, and the downward API's fields (`spec.nodeName` → `node-a`).
pub fn environment(container: &Value, docs: &[Value]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_owned()
        } else if let Some(key_ref) = var["valueFrom"].get("configMapKeyRef") {
            let map = find_all(docs, "ConfigMap")
                .into_iter()
                .find(|m| m["metadata"]["name"] == key_ref["name"])
                .unwrap_or_else(|| panic!("{name}: no ConfigMap {}", key_ref["name"]));
            map["data"][key_ref["key"].as_str().expect("key")]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no key {}", key_ref["key"]))
                .to_owned()
        } else if let Some(field) = var["valueFrom"].get("fieldRef") {
            match field["fieldPath"].as_str() {
                Some("spec.nodeName") => "node-a".to_owned(),
                Some("metadata.namespace") => "headroom".to_owned(),
                other => panic!("{name}: unexpected fieldRef {other:?}"),
            }
        } else {
            panic!("{name}: unexpected env source {var}");
        };
        env.push((name, value));
    }
    env
}

/// The container's args with `$(VAR)` replaced from its environment; every reference
/// must resolve.
pub fn expand_args(container: &Value, docs: &[Value]) -> Vec<String> {
    let env = environment(container, docs);
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut arg = a.as_str().expect("a string argument").to_owned();
            for (name, value) in &env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            assert!(!arg.contains("$("), "unresolved reference in {arg}");
            arg
        })
        .collect()
}

/// Validates every object against Kubernetes `version`'s JSON schemas, strictly (unknown
/// fields fail), offline: the `kubernetes-validate` package bundles the schemas. Returns
/// the kinds it had no schema for (custom resources); an invalid object is the error.
pub fn kubernetes_validate(text: &str, version: &str) -> Result<Vec<String>, String> {
    let dir = temp_dir("validate");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, text).expect("write");
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--quiet",
            "-k",
            version,
        ])
        .arg(&file)
        .output()
        .expect("python3 runs (cargo xtask setup installs kubernetes-validate)");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || stdout.lines().any(|l| l.starts_with("ERROR")) {
        return Err(format!("{stdout}{stderr}"));
    }
    let mut unchecked = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.split("Couldn't find schema for kind ").nth(1) {
            unchecked.push(rest.split_whitespace().next().expect("a kind").to_owned());
        } else if !line.trim().is_empty() {
            return Err(format!("unexpected output: {line}"));
        }
    }
    Ok(unchecked)
}

/// CPU cores of a quantity such as `50m` or `1`.
pub fn quantity_cpu(q: &Value) -> f64 {
    let text = q
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| q.to_string());
    match text.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().expect("millicores") / 1000.0,
        None => text.parse().expect("cores"),
    }
}

/// Bytes of a quantity such as `40Mi` or `1Gi`.
pub fn quantity_memory(q: &Value) -> u64 {
    let text = q
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| q.to_string());
    for (suffix, factor) in [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().expect("a whole number") * factor;
        }
    }
    text.parse().expect("bytes")
}

/// One permission as RBAC evaluates it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// None: every namespace (a ClusterRoleBinding), or cluster-scoped.
    pub namespace: Option<String>,
    pub group: String,
    pub resource: String,
    pub verb: String,
    pub resource_names: Vec<String>,
}

/// Every permission the ServiceAccount `namespace/account` gets from the render's
/// bindings.
pub fn rbac_grants(docs: &[Value], namespace: &str, account: &str) -> Vec<Grant> {
    let mut grants = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let bound = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
            });
        if !bound {
            continue;
        }
        let binding_ns = binding["metadata"]["namespace"].as_str().map(str::to_owned);
        let role_ref = &binding["roleRef"];
        let role_kind = role_ref["kind"].as_str().expect("roleRef kind");
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == role_kind
                    && d["metadata"]["name"] == role_ref["name"]
                    && (role_kind == "ClusterRole"
                        || d["metadata"]["namespace"] == binding["metadata"]["namespace"])
            })
            .unwrap_or_else(|| panic!("{role_kind} {} is in the render", role_ref["name"]));
        let scope = if binding["kind"] == "ClusterRoleBinding" {
            None
        } else {
            binding_ns
        };
        for rule in role["rules"].as_array().expect("rules") {
            let list = |field: &str| -> Vec<String> {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().expect("a string").to_owned())
                    .collect()
            };
            let names = list("resourceNames");
            // A non-resource URL (`/metrics`) as (no group, the URL, verb).
            for url in list("nonResourceURLs") {
                for verb in list("verbs") {
                    assert!(url != "*" && verb != "*", "no wildcards: {rule}");
                    grants.push(Grant {
                        namespace: scope.clone(),
                        group: String::new(),
                        resource: url.clone(),
                        verb,
                        resource_names: Vec::new(),
                    });
                }
            }
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "no wildcards in Headroom's RBAC: {rule}"
                        );
                        grants.push(Grant {
                            namespace: scope.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            resource_names: names.clone(),
                        });
                    }
                }
            }
        }
    }
    grants.sort();
    grants
}

/// The same JSON with every number as a float, so `2` and `2.0` compare equal.
pub fn normalize_numbers(v: &Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().expect("a number")),
        Value::Array(a) => Value::Array(a.iter().map(normalize_numbers).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), normalize_numbers(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Runs `cmd` to its end or `timeout` (then kills it); its exit status and stderr.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let text = reader.join().unwrap_or_default();
            panic!("still running after {timeout:?} ({status}): {text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap_or_default())
}
