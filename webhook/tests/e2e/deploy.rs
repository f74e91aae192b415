//! deploy/ against a real 1.20 API server: `kubectl apply --dry-run=server` of every
//! object of the rendered kustomization. What 1.20 cannot take is named below as a known
//! version gap: the test asserts the server still refuses it for that reason (so the list
//! stays true), and that the object with only that part removed passes.
use std::path::Path;

use serde_json::Value;

use crate::support::Cluster;

/// A part of deploy/ that Kubernetes 1.20 does not have: (kind, what the server or
/// kubectl says, why, how the rest of the object is still checked).
struct Gap {
    kind: &'static str,
    refusal: &'static str,
    why: &'static str,
    strip: fn(&mut Value),
}

const GAPS: &[Gap] = &[
    Gap {
        kind: "PodDisruptionBudget",
        refusal: "no matches for kind \"PodDisruptionBudget\" in version \"policy/v1\"",
        why: "policy/v1 PodDisruptionBudget is 1.21+ (1.20 has policy/v1beta1)",
        strip: |o| o["apiVersion"] = "policy/v1beta1".into(),
    },
    Gap {
        kind: "Deployment",
        refusal: "unknown field \"sleep\"",
        why: "lifecycle.preStop.sleep is 1.29+ (beta 1.30)",
        strip: |o| {
            let containers = &mut o["spec"]["template"]["spec"]["containers"];
            for c in containers.as_array_mut().into_iter().flatten() {
                c.as_object_mut().map(|c| c.remove("lifecycle"));
            }
        },
    },
    Gap {
        kind: "ValidatingWebhookConfiguration",
        refusal: "unknown field \"matchConditions\"",
        why: "admission webhook matchConditions are 1.28+ (beta; GA 1.30)",
        strip: |o| {
            for w in o["webhooks"].as_array_mut().into_iter().flatten() {
                w.as_object_mut().map(|w| w.remove("matchConditions"));
            }
        },
    },
];

fn rendered() -> Vec<Value> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&deploy)
        .output()
        .expect("kubectl kustomize runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_yaml::from_value::<Value>(serde::Deserialize::deserialize(doc).expect("YAML"))
                .expect("object")
        })
        .collect()
}

fn name(o: &Value) -> String {
    format!(
        "{} {}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// `kubectl apply --dry-run=server` of one object: Ok, or kubectl's error.
fn dry_run(cluster: &Cluster, object: &Value) -> Result<(), String> {
    let out = cluster.run(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&object.to_string()),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
#[ignore = "needs a kube-apiserver: run cargo xtask e2e"]
fn deploy_objects_pass_server_dry_run_except_named_version_gaps() {
    let cluster = Cluster::from_env();
    let objects = rendered();
    // What a dry run of the rest needs for real: the namespace and the budget's kind.
    for o in &objects {
        if o["kind"] == "Namespace" || o["kind"] == "CustomResourceDefinition" {
            let out = cluster.apply(o);
            assert!(
                out.status.success(),
                "{}: {}",
                name(o),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    cluster.ok(
        &[
            "wait",
            "--for=condition=established",
            "crd/controlplanebudgets.headroom.dev",
        ],
        None,
    );
    let mut failures = Vec::new();
    let mut gaps_seen = Vec::new();
    for object in &objects {
        let gap = GAPS.iter().find(|g| object["kind"] == g.kind);
        match (gap, dry_run(&cluster, object)) {
            (None, Ok(())) => {}
            (None, Err(e)) => failures.push(format!("{}: {e}", name(object))),
            (Some(gap), Ok(())) => failures.push(format!(
                "{}: accepted although listed as a 1.20 gap ({}): remove it from GAPS",
                name(object),
                gap.why
            )),
            (Some(gap), Err(e)) if !e.contains(gap.refusal) => failures.push(format!(
                "{}: refused, but not for its known gap ({}): {e}",
                name(object),
                gap.why
            )),
            (Some(gap), Err(_)) => {
                let mut stripped = object.clone();
                (gap.strip)(&mut stripped);
                if let Err(e) = dry_run(&cluster, &stripped) {
                    failures.push(format!(
                        "{} without its gap ({}): {e}",
                        name(object),
                        gap.why
                    ));
                }
                gaps_seen.push(gap.kind);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let mut expected: Vec<&str> = GAPS.iter().map(|g| g.kind).collect();
    expected.sort_unstable();
    gaps_seen.sort_unstable();
    assert_eq!(gaps_seen, expected, "every known gap is in deploy/, once");
    assert!(objects.len() >= 15, "rendered {} objects", objects.len());
}
