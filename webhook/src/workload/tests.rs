use serde_json::{Value, json};

use super::*;

fn fixture_json(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    if name.ends_with(".json") {
        serde_json::from_str(&text).unwrap()
    } else {
        serde_yaml::from_str(&text).unwrap()
    }
}

fn deployment(replicas: i64, strategy: Value) -> Workload {
    let mut v = fixture_json("deployment-web.json");
    v["metadata"]["namespace"] = json!("default");
    v["spec"]["replicas"] = json!(replicas);
    v["spec"]["strategy"] = strategy;
    Workload::from_value(Kind::Deployment, "d", v).unwrap()
}

/// The same Deployment with another image: a template change.
fn with_image(w: Workload, image: &str) -> Workload {
    let mut text: Value = serde_json::from_str(w.template_text.as_deref().unwrap()).unwrap();
    text["spec"]["containers"][0]["image"] = json!(image);
    Workload {
        image: Some(image.to_owned()),
        template_text: Some(text.to_string()),
        ..w
    }
}

#[test]
fn reads_a_kubectl_deployment() {
    let w = deployment(3, json!({}));
    assert_eq!(w.reference.to_string(), "Deployment default/web");
    assert_eq!(w.image.as_deref(), Some("nginx:1.27"));
    assert_eq!(w.size, Size::Replicas(3));
    assert_eq!(w.pods(&Inventory::uniform(10), None), 3);
    assert_eq!(
        w.pods(&Inventory::uniform(10), Some(10)),
        10,
        "HPA maxReplicas"
    );
    assert_eq!(
        w.pods(&Inventory::uniform(10), Some(2)),
        3,
        "replicas above HPA max"
    );
}

#[test]
fn deployment_without_replicas_runs_one() {
    let mut v = fixture_json("deployment-web.json");
    v["spec"].as_object_mut().unwrap().remove("replicas");
    let w = Workload::from_value(Kind::Deployment, "d", v).unwrap();
    assert_eq!(w.size, Size::Replicas(1));
}

#[test]
fn create_starts_every_pod() {
    let w = deployment(40, json!({}));
    assert_eq!(w.concurrent_starts(None, 40, 0), 40);
}

#[test]
fn rolling_update_starts_surge_plus_unavailable() {
    let old = deployment(40, json!({}));
    let new = with_image(deployment(40, json!({})), "nginx:1.28");
    // 25% of 40 = 10 surge (up) + 10 unavailable (down).
    assert_eq!(new.concurrent_starts(Some(&old), 40, 40), 20);
    let tuned = with_image(
        deployment(
            40,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}}),
        ),
        "nginx:1.28",
    );
    assert_eq!(tuned.concurrent_starts(Some(&old), 40, 40), 5);
    let odd = with_image(deployment(3, json!({})), "nginx:1.28");
    // 25% of 3: surge rounds up to 1, unavailable rounds down to 0.
    assert_eq!(
        odd.concurrent_starts(Some(&deployment(3, json!({}))), 3, 3),
        1
    );
}

#[test]
fn recreate_starts_everything() {
    let old = deployment(40, json!({"type": "Recreate"}));
    let new = with_image(deployment(40, json!({"type": "Recreate"})), "nginx:1.28");
    assert_eq!(new.concurrent_starts(Some(&old), 40, 40), 40);
}

#[test]
fn scale_without_template_change_starts_only_added_pods() {
    let old = deployment(3, json!({}));
    let new = deployment(10, json!({}));
    assert_eq!(new.concurrent_starts(Some(&old), 10, 3), 7);
    assert_eq!(
        old.concurrent_starts(Some(&new), 3, 10),
        0,
        "scale-down starts nothing"
    );
    assert_eq!(new.concurrent_starts(Some(&new), 10, 10), 0, "no change");
}

#[test]
fn scale_and_rollout_add_up_but_never_exceed_pods() {
    let old = deployment(4, json!({"type": "Recreate"}));
    let new = with_image(deployment(8, json!({"type": "Recreate"})), "nginx:1.28");
    assert_eq!(new.concurrent_starts(Some(&old), 8, 4), 8);
}

#[test]
fn daemonset_runs_on_eligible_nodes() {
    let w =
        Workload::from_value(Kind::DaemonSet, "ds", fixture_json("daemonset-agent.yaml")).unwrap();
    assert_eq!(w.reference.to_string(), "DaemonSet monitoring/agent");
    assert_eq!(w.size, Size::PerNode);
    assert_eq!(w.pods(&Inventory::uniform(5000), None), 5000);
    assert_eq!(w.concurrent_starts(None, 5000, 0), 5000);
    // Default RollingUpdate: maxUnavailable 1, maxSurge 0.
    let mut v = fixture_json("daemonset-agent.yaml");
    v["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.example/agent:1.3");
    let updated = Workload::from_value(Kind::DaemonSet, "ds", v.clone()).unwrap();
    assert_eq!(updated.concurrent_starts(Some(&w), 5000, 5000), 1);
    v["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}});
    let wide = Workload::from_value(Kind::DaemonSet, "ds", v.clone()).unwrap();
    assert_eq!(wide.concurrent_starts(Some(&w), 5000, 5000), 500);
    v["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
    let on_delete = Workload::from_value(Kind::DaemonSet, "ds", v).unwrap();
    assert_eq!(on_delete.concurrent_starts(Some(&w), 5000, 5000), 0);
}

#[test]
fn statefulset_ordered_ready_starts_one_at_a_time() {
    let v = fixture_json("statefulset-db.yaml");
    let w = Workload::from_value(Kind::StatefulSet, "s", v.clone()).unwrap();
    assert_eq!(w.pods(&Inventory::default(), None), 3);
    assert_eq!(w.concurrent_starts(None, 3, 0), 1);
    let mut bigger = v.clone();
    bigger["spec"]["replicas"] = json!(9);
    let bigger = Workload::from_value(Kind::StatefulSet, "s", bigger).unwrap();
    assert_eq!(bigger.concurrent_starts(Some(&w), 9, 3), 1);

    let mut parallel = v;
    parallel["spec"]["podManagementPolicy"] = json!("Parallel");
    let p = Workload::from_value(Kind::StatefulSet, "s", parallel.clone()).unwrap();
    assert_eq!(p.concurrent_starts(None, 3, 0), 3);
    parallel["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:18");
    parallel["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}});
    let p2 = Workload::from_value(Kind::StatefulSet, "s", parallel).unwrap();
    assert_eq!(p2.concurrent_starts(Some(&p), 3, 3), 2);
}

#[test]
fn job_and_cronjob_run_parallelism() {
    let mut v = fixture_json("job-migrate.json");
    let j = Workload::from_value(Kind::Job, "j", v.clone()).unwrap();
    assert_eq!(j.pods(&Inventory::default(), None), 1);
    v["spec"]["parallelism"] = json!(20);
    v["spec"]["completions"] = json!(5);
    let j = Workload::from_value(Kind::Job, "j", v).unwrap();
    assert_eq!(
        j.pods(&Inventory::default(), None),
        5,
        "capped by completions"
    );
    assert_eq!(j.concurrent_starts(None, 5, 0), 5);

    let mut c = fixture_json("cronjob-report.json");
    c["spec"]["jobTemplate"]["spec"]["parallelism"] = json!(4);
    let cron = Workload::from_value(Kind::CronJob, "c", c).unwrap();
    assert_eq!(cron.pods(&Inventory::default(), None), 4);
    assert_eq!(
        cron.concurrent_starts(Some(&cron.clone()), 4, 4),
        4,
        "every run starts all"
    );
}

#[test]
fn scale_object_gives_replicas() {
    let scale = json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 12}
    });
    let w = Workload::from_scale(Kind::Deployment, "s", scale).unwrap();
    assert_eq!(w.reference.to_string(), "Deployment default/web");
    assert_eq!(w.pods(&Inventory::default(), None), 12);
    let old = Workload::from_scale(
        Kind::Deployment,
        "s",
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 4}}),
    )
    .unwrap();
    assert_eq!(w.concurrent_starts(Some(&old), 12, 4), 8);
}

#[test]
fn missing_or_wrong_fields_are_named() {
    let mut v = fixture_json("deployment-web.json");
    v["spec"].as_object_mut().unwrap().remove("selector");
    let err = Workload::from_value(Kind::Deployment, "web.yaml document 1", v).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web.yaml document 1: missing field `spec.selector`"
    );
    let mut v = fixture_json("deployment-web.json");
    v["spec"]["replicas"] = json!("three");
    let err = Workload::from_value(Kind::Deployment, "d", v).unwrap_err();
    assert!(
        err.to_string().contains("invalid type: string \"three\""),
        "{err}"
    );
    let err = Workload::from_value(Kind::Deployment, "d", json!({"metadata": {"name": "x"}}))
        .unwrap_err();
    assert_eq!(err.to_string(), "d: missing field `spec`");
}

#[test]
fn percentages_round_as_controllers_do() {
    let pct = IntOrString::String("25%".to_owned());
    assert_eq!(scaled(&pct, 10, true), 3);
    assert_eq!(scaled(&pct, 10, false), 2);
    assert_eq!(scaled(&IntOrString::Int(4), 10, false), 4);
    assert_eq!(scaled(&IntOrString::Int(-4), 10, false), 0);
    assert_eq!(scaled(&IntOrString::String("junk".into()), 10, true), 0);
}

#[test]
fn break_glass_needs_a_reason() {
    let mut w = deployment(3, json!({}));
    assert_eq!(w.break_glass_reason(), None);
    w.annotations.insert(
        crate::budget::BREAK_GLASS_ANNOTATION.to_owned(),
        "  ".to_owned(),
    );
    assert_eq!(w.break_glass_reason(), None);
    w.annotations.insert(
        crate::budget::BREAK_GLASS_ANNOTATION.to_owned(),
        "INC-42 restore service".to_owned(),
    );
    assert_eq!(w.break_glass_reason(), Some("INC-42 restore service"));
}

#[test]
fn autoscalers_index_by_target() {
    let hpa: HorizontalPodAutoscaler =
        serde_json::from_value(fixture_json("hpa-web.yaml")).unwrap();
    let mut hpas = Autoscalers::default();
    hpas.insert(&hpa);
    let web = WorkloadRef {
        namespace: "default".into(),
        kind: "Deployment".into(),
        name: "web".into(),
    };
    assert_eq!(hpas.max_for(&web), Some(10));
    let other = WorkloadRef {
        name: "api".into(),
        ..web
    };
    assert_eq!(hpas.max_for(&other), None);
}
