use super::*;

const BUDGET: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ControlPlaneBudget
metadata: {name: ci}
spec:
  limits: {apiserverRequestsPerSecond: 100}
  burstFactor: 1.5
  perWorkloadShare: 0.5
  canarySize: 2
"#;

fn snapshot() -> Snapshot {
    let one = |requests| Load {
        apiserver_requests_per_second: requests,
        ..Load::ZERO
    };
    let list = crate::profile::ProfileList {
        api_version: crate::profile::API_VERSION.into(),
        kind: crate::profile::KIND.into(),
        node: "node-a".into(),
        generated_at: "2026-11-22T05:00:00Z".into(),
        window_seconds: 3600,
        totals: one(10.0),
        items: vec![crate::profile::ProfileItem {
            workload: crate::profile::WorkloadRef {
                namespace: "default".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            image: "nginx:1.27".into(),
            pods: 3,
            minutes: 30,
            measured_seconds: 1800,
            steady: one(1.0),
            startup: one(2.0),
            current: Load::ZERO,
        }],
    };
    Snapshot::merge([&list])
}

fn docs(text: &str) -> Vec<Document> {
    let mut out = Vec::new();
    split_documents("m.yaml", text, &mut out).unwrap();
    out
}

fn deployment(name: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    \
         spec: {{containers: [{{name: c, image: 'nginx:1.27'}}]}}\n"
    )
}

#[test]
fn splits_multi_document_yaml_and_lists() {
    let text = format!(
        "{}---\n# comment only\n---\napiVersion: v1\nkind: List\nitems:\n- {{kind: ConfigMap, metadata: {{name: a}}}}\n- {{kind: Service, metadata: {{name: b}}}}\n",
        deployment("web", 3)
    );
    let d = docs(&text);
    let origins: Vec<&str> = d.iter().map(|d| d.origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "m.yaml document 1",
            "m.yaml document 3 item 1",
            "m.yaml document 3 item 2"
        ]
    );
}

#[test]
fn allowed_and_denied_with_exit_codes() {
    let budget = ControlPlaneBudget::parse("b", BUDGET).unwrap();
    let inventory = Inventory::uniform(10);
    let ok = check(
        &docs(&deployment("web", 10)),
        &budget,
        &snapshot(),
        &inventory,
        None,
    )
    .unwrap();
    assert_eq!(ok.findings.len(), 1);
    assert_eq!(ok.findings[0].result, "allowed");
    assert_eq!(ok.exit_code(), EXIT_ALLOWED);
    // 30 × 1 > 50 share? no: 30 ≤ 50; peak 10 + 30 + 60 = 100 ≤ 150; 60 pods: share 60 > 50.
    let bad = check(
        &docs(&deployment("web", 60)),
        &budget,
        &snapshot(),
        &inventory,
        None,
    )
    .unwrap();
    assert_eq!(bad.findings[0].result, "denied");
    assert_eq!(bad.exit_code(), EXIT_DENIED);
    let table = bad.to_table();
    assert!(table.starts_with("DOCUMENT"), "{table}");
    assert!(
        table.contains("m.yaml document 1  Deployment default/web  60"),
        "{table}"
    );
    assert!(
        table.contains("1 workloads checked, 1 denied, 0 other documents skipped"),
        "{table}"
    );
}

#[test]
fn earlier_workloads_count_against_later_ones() {
    let budget = ControlPlaneBudget::parse("b", BUDGET).unwrap();
    // Each alone: web-a 40 pods (image fallback from web) fits; together 10 + 40 + 40 > 100...
    // second: base 10 + 40 = 50, steady 90 ≤ 100, peak 90 + 80 = 170 > 150 → denied.
    let text = format!("{}---\n{}", deployment("a", 40), deployment("b", 40));
    let report = check(
        &docs(&text),
        &budget,
        &snapshot(),
        &Inventory::uniform(1),
        None,
    )
    .unwrap();
    let results: Vec<&str> = report.findings.iter().map(|f| f.result).collect();
    assert_eq!(results, ["allowed", "denied"]);
}

#[test]
fn hpa_in_the_same_manifests_raises_pods() {
    let budget = ControlPlaneBudget::parse("b", BUDGET).unwrap();
    let text = format!(
        "{}---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {{name: web}}\nspec:\n  \
         scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  maxReplicas: 80\n",
        deployment("web", 3)
    );
    let report = check(
        &docs(&text),
        &budget,
        &snapshot(),
        &Inventory::uniform(1),
        None,
    )
    .unwrap();
    assert_eq!(report.findings[0].pods, 80);
    assert_eq!(report.findings[0].result, "denied");
    assert_eq!(report.skipped, 1);
}

#[test]
fn bad_documents_name_file_and_document() {
    let budget = ControlPlaneBudget::parse("b", BUDGET).unwrap();
    let text = format!(
        "{}---\nkind: Deployment\nmetadata: {{name: x}}\nspec: {{replicas: 1}}\n",
        deployment("web", 1)
    );
    let err = check(
        &docs(&text),
        &budget,
        &snapshot(),
        &Inventory::uniform(1),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "m.yaml document 2: missing field `spec.selector`"
    );
    let err = check(
        &docs("metadata: {name: x}\n"),
        &budget,
        &snapshot(),
        &Inventory::uniform(1),
        None,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "m.yaml document 1: missing field `kind`");
    let mut out = Vec::new();
    let err = split_documents("m.yaml", "a: [1,\n", &mut out).unwrap_err();
    assert!(err.to_string().starts_with("m.yaml document 1: "), "{err}");
}
