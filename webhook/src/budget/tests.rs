use kube::{CustomResourceExt, Resource};

use super::*;

const EXAMPLE: &str = r#"
apiVersion: headroom.dev/v1alpha1
kind: ControlPlaneBudget
metadata:
  name: default
spec:
  mode: Enforce
  limits:
    apiserverRequestsPerSecond: 2000
    apiserverReceivedBytesPerSecond: 209715200
    apiserverConnectionsPerSecond: 50
    dnsQueriesPerSecond: 20000
  burstFactor: 2
  perWorkloadShare: 0.25
  canarySize: 5
  exemptNamespaces: [kube-system, headroom]
"#;

#[test]
fn parses_a_budget_file_and_fills_defaults() {
    let budget = ControlPlaneBudget::parse("b.yaml", EXAMPLE).unwrap();
    let spec = &budget.spec;
    assert_eq!(spec.mode, Mode::Enforce);
    assert_eq!(
        spec.limits.apiserver_requests_per_second,
        Some(RequestLimit::PerSecond(2000.0))
    );
    assert_eq!(
        spec.limits.get(Dimension::ApiserverReceivedBytes),
        Some(209_715_200.0)
    );
    assert_eq!(spec.burst_factor, 2.0);
    assert_eq!(spec.per_workload_share, 0.25);
    assert_eq!(spec.canary_size, 5);
    assert_eq!(spec.exempt_namespaces, ["kube-system", "headroom"]);
    // Not in the file: the one Default.
    assert_eq!(
        spec.trust_declared,
        ControlPlaneBudgetSpec::default().trust_declared
    );
    assert_eq!(
        spec.max_data_age_seconds,
        ControlPlaneBudgetSpec::default().max_data_age_seconds
    );
}

#[test]
fn errors_name_the_field() {
    let cases = [
        ("burstFactor: 2", "burstFactor: 0.5", "spec.burstFactor"),
        (
            "perWorkloadShare: 0.25",
            "perWorkloadShare: 0",
            "spec.perWorkloadShare",
        ),
        (
            "dnsQueriesPerSecond: 20000",
            "dnsQueriesPerSecond: -1",
            "spec.limits",
        ),
    ];
    for (from, to, field) in cases {
        let err = ControlPlaneBudget::parse("b.yaml", &EXAMPLE.replace(from, to)).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidBudget { field: f, .. } if *f == field),
            "{to}: {err}"
        );
        assert!(
            err.to_string().starts_with("budget b.yaml: field `"),
            "{err}"
        );
    }
}

#[test]
fn a_budget_needs_a_limit() {
    let text = "apiVersion: headroom.dev/v1alpha1\nkind: ControlPlaneBudget\nmetadata: {name: x}\nspec: {mode: Warn}\n";
    let err = ControlPlaneBudget::parse("b.yaml", text).unwrap_err();
    assert!(err.to_string().contains("set at least one of"), "{err}");
}

#[test]
fn rejects_wrong_kind_and_unknown_mode() {
    let err = ControlPlaneBudget::parse("b.yaml", &EXAMPLE.replace("kind: Control", "kind: X"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("found `headroom.dev/v1alpha1` `XPlaneBudget`"),
        "{err}"
    );
    let err = ControlPlaneBudget::parse("b.yaml", &EXAMPLE.replace("mode: Enforce", "mode: Deny"))
        .unwrap_err();
    assert!(err.to_string().contains("unknown variant `Deny`"), "{err}");
}

#[test]
fn crd_is_cluster_scoped_in_headroom_dev() {
    let crd = ControlPlaneBudget::crd();
    assert_eq!(crd.spec.group, "headroom.dev");
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.kind, "ControlPlaneBudget");
    assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    assert!(
        crd.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
    assert_eq!(ControlPlaneBudget::api_version(&()), API_VERSION);
}

#[test]
fn status_headroom_is_limit_minus_current() {
    let spec = ControlPlaneBudget::parse("b.yaml", EXAMPLE).unwrap().spec;
    let current = Load {
        apiserver_requests_per_second: 500.0,
        ..Load::ZERO
    };
    let status = ControlPlaneBudgetStatus::compute(&spec, current);
    assert_eq!(status.headroom.apiserver_requests_per_second, Some(1500.0));
    assert_eq!(status.headroom.dns_queries_per_second, Some(20000.0));
}

#[test]
fn status_shows_no_headroom_for_a_dimension_without_a_limit() {
    let mut spec = ControlPlaneBudget::parse("b.yaml", EXAMPLE).unwrap().spec;
    spec.limits.dns_queries_per_second = None;
    let current = Load::from_array([500.0, 1.0, 1.0, 300.0]);
    let status = ControlPlaneBudgetStatus::compute(&spec, current);
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["headroom"]["apiserverRequestsPerSecond"], 1500.0);
    assert!(
        json["headroom"].get("dnsQueriesPerSecond").is_none(),
        "{json}"
    );
    assert_eq!(json["current"]["dnsQueriesPerSecond"], 300.0);
}

#[test]
fn min_coverage_is_a_fraction() {
    let text = EXAMPLE.replace("canarySize: 5", "canarySize: 5\n  minCoverage: 90");
    let err = ControlPlaneBudget::parse("b.yaml", &text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "budget b.yaml: field `spec.minCoverage`: must be in [0, 1]"
    );
    let spec = ControlPlaneBudget::parse("b.yaml", EXAMPLE).unwrap().spec;
    assert_eq!(spec.min_coverage, 0.9);
    assert_eq!(spec.max_data_age_seconds, 120);
    assert_eq!(spec.min_measured_seconds, 300);
}

/// `deploy/crd/controlplanebudget.yaml` must be what `headroom-webhook crd` prints.
#[test]
fn deployed_crd_is_up_to_date() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/crd/controlplanebudget.yaml"
    );
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    let generated = crd_yaml().unwrap();
    assert!(
        on_disk == generated,
        "deploy/crd/controlplanebudget.yaml is stale or missing: run `cargo xtask gen`"
    );
}

#[test]
fn requests_may_be_auto_with_a_target_and_per_level_limits() {
    let text = EXAMPLE.replace(
        "apiserverRequestsPerSecond: 2000",
        "apiserverRequestsPerSecond: auto\n    targetUtilization: 0.6\n    \
         priorityLevels: {workload-low: 300}",
    );
    let spec = ControlPlaneBudget::parse("b.yaml", &text).unwrap().spec;
    assert!(spec.limits.requests_auto());
    assert_eq!(spec.limits.get(Dimension::ApiserverRequests), None);
    assert_eq!(spec.limits.target_utilization, 0.6);
    assert_eq!(spec.limits.priority_levels["workload-low"], 300.0);
    // It round-trips as the word, and numbers stay numbers.
    let json = serde_json::to_value(&spec.limits).unwrap();
    assert_eq!(json["apiserverRequestsPerSecond"], "auto");
    let default = ControlPlaneBudget::parse("b.yaml", EXAMPLE).unwrap().spec;
    assert_eq!(default.limits.target_utilization, 0.7);
    assert_eq!(
        serde_json::to_value(&default.limits).unwrap()["apiserverRequestsPerSecond"],
        2000.0
    );
    // `auto` alone is a limit.
    let only_auto = "apiVersion: headroom.dev/v1alpha1\nkind: ControlPlaneBudget\n\
                     metadata: {name: a}\nspec: {limits: {apiserverRequestsPerSecond: auto}}\n";
    assert!(ControlPlaneBudget::parse("a.yaml", only_auto).is_ok());
}

#[test]
fn a_bad_auto_budget_names_what_to_change() {
    let cases = [
        (
            "apiserverRequestsPerSecond: 2000",
            "apiserverRequestsPerSecond: automatic",
            "must be a number or `auto`, found `automatic`",
        ),
        (
            "apiserverRequestsPerSecond: 2000",
            "apiserverRequestsPerSecond: auto\n    targetUtilization: 1.5",
            "field `spec.limits.targetUtilization`: must be in (0, 1]",
        ),
        (
            "apiserverRequestsPerSecond: 2000",
            "apiserverRequestsPerSecond: auto\n    priorityLevels: {workload-low: -3}",
            "field `spec.limits.priorityLevels`: workload-low must be a finite number",
        ),
    ];
    for (from, to, expected) in cases {
        let text = EXAMPLE.replace(from, to);
        let error = ControlPlaneBudget::parse("b.yaml", &text).unwrap_err();
        assert!(error.to_string().contains(expected), "{to}: {error}");
    }
}
