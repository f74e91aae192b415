//! Real AdmissionReview v1 bodies over real HTTPS to the running server.

mod support;

use serde_json::{Value, json};
use support::{Client, Profiles, Review, agent_daemonset, http_get, start_server, web_deployment};

async fn client(server: &support::TestServer) -> Client {
    let config = server.pki.client_config(rustls::DEFAULT_VERSIONS);
    Client::connect(server.running.https, config)
        .await
        .expect("TLS connection")
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn deployment_create_within_budget_is_allowed() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    let r = c
        .review(&Review::create(web_deployment("web", 3)).build())
        .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(warnings(&r).is_empty(), "{r}");
}

#[tokio::test]
async fn outage_shape_daemonset_is_denied_and_node_scoped_agent_is_allowed() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    let r = c.review(&Review::create(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403);
    let m = message(&r);
    assert!(
        m.contains("DaemonSet monitoring/agent over ControlPlaneBudget default (Enforce)"),
        "{m}"
    );
    assert!(
        m.contains("apiserver received bytes/s steady 264.1 MiB > 200.0 MiB"),
        "{m}"
    );
    assert!(m.contains("5000 pods, 5000 starting at once"), "{m}");
    assert!(m.contains("measured over 12 pods, 55 min"), "{m}");
    assert!(m.contains("node-scoped watch"), "{m}");

    let scoped = start_server(Profiles::File("profiles-node-scoped.json"), 5000).await;
    let mut c = client(&scoped).await;
    let r = c.review(&Review::create(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
}

#[tokio::test]
async fn scale_up_over_budget_is_denied_and_scale_down_allowed() {
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    let up = c
        .review(&Review::scale("default", "web", 3, 1000).build())
        .await;
    assert_eq!(up["allowed"], false, "{up}");
    assert!(
        message(&up).contains("1000 pods, 997 starting at once"),
        "{up}"
    );
    assert!(message(&up).contains("replicas ≤ 294"), "{up}");
    let fits = c
        .review(&Review::scale("default", "web", 3, 200).build())
        .await;
    assert_eq!(fits["allowed"], true, "{fits}");
    let down = c
        .review(&Review::scale("default", "web", 1000, 2).build())
        .await;
    assert_eq!(down["allowed"], true, "{down}");
    assert!(warnings(&down).is_empty());
}

#[tokio::test]
async fn delete_is_always_allowed() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    let r = c.review(&Review::delete(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    let mut pod = web_deployment("x", 1);
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    let r = c.review(&Review::delete(pod).build()).await;
    assert_eq!(r["allowed"], true, "deletes of any kind are allowed: {r}");
}

#[tokio::test]
async fn dry_run_is_evaluated_but_reserves_nothing() {
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    // web 3 → 270 and a new `api` Deployment of 270 pods (nginx: measured via web's image)
    // each fit alone (peak ≤ 4000 req/s) but not together.
    let dry = c
        .review(&Review::scale("default", "web", 3, 270).dry_run().build())
        .await;
    assert_eq!(dry["allowed"], true, "{dry}");
    let api = || Review::create(web_deployment("api", 270)).dry_run().build();
    let r = c.review(&api()).await;
    assert_eq!(r["allowed"], true, "the dry run reserved nothing: {r}");

    let real = c
        .review(&Review::scale("default", "web", 3, 270).build())
        .await;
    assert_eq!(real["allowed"], true, "{real}");
    let r = c.review(&api()).await;
    assert_eq!(r["allowed"], false, "the admitted scale-up counts: {r}");
    assert!(message(&r).contains("apiserver requests/s peak"), "{r}");
}

#[tokio::test]
async fn unmeasured_workload_is_allowed_up_to_the_canary_size() {
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    let new_app = |replicas| {
        let mut d = web_deployment("new-app", replicas);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("example/new-app:1");
        Review::create(d).build()
    };
    let r = c.review(&new_app(3)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        warnings(&r),
        ["headroom: Deployment default/new-app unmeasured; allowed as a canary (3 ≤ 3 pods)"]
    );
    let r = c.review(&new_app(4)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        message(&r).contains("run a canary first (set replicas to at most 3)"),
        "{r}"
    );
}

#[tokio::test]
async fn break_glass_is_allowed_with_warning_and_audit_annotation() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    let mut ds = agent_daemonset();
    ds["metadata"]["annotations"] = json!({"headroom.dev/break-glass": "INC-7: restore logs"});
    let r = c.review(&Review::create(ds).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        warnings(&r),
        ["headroom: budget not checked, break-glass: INC-7: restore logs"]
    );
    assert_eq!(r["auditAnnotations"]["break-glass"], "INC-7: restore logs");
    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    assert!(
        metrics.contains(r#"headroom_webhook_decisions_total{mode="Enforce",result="break_glass",kind="DaemonSet"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn missing_data_fails_open_with_warning_and_metric() {
    let server = start_server(Profiles::None, 5000).await;
    let mut c = client(&server).await;
    let r = c.review(&Review::create(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        warnings(&r),
        ["headroom: not evaluated, no profile data yet; allowed"]
    );
    let (status, _) = http_get(server.running.metrics, "/readyz").await;
    assert_eq!(status, 503);
    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    assert!(
        metrics.contains(r#"headroom_webhook_fail_opens_total{reason="missing"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("headroom_webhook_profile_data_age_seconds -1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_and_probes() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    c.review(&Review::create(agent_daemonset()).build()).await;
    c.review(&Review::create(web_deployment("web", 3)).build())
        .await;
    c.review(&Review::create(web_deployment("web", 3)).build())
        .await;
    let (status, body) = http_get(server.running.metrics, "/healthz").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "ok\n"));
    let (status, _) = http_get(server.running.metrics, "/readyz").await;
    assert_eq!(status, 200);
    let (status, metrics) = http_get(server.running.metrics, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"headroom_webhook_decisions_total{mode="Enforce",result="denied",kind="DaemonSet"} 1"#,
        r#"headroom_webhook_decisions_total{mode="Enforce",result="allowed",kind="Deployment"} 2"#,
        "headroom_webhook_admission_duration_seconds_count 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
    let age_line = metrics
        .lines()
        .find(|l| l.starts_with("headroom_webhook_profile_data_age_seconds "))
        .unwrap();
    let age: f64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((0.0..60.0).contains(&age), "{age_line}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_or_denial_never_a_panic() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let mut c = client(&server).await;

    let (status, body) = c.post("/validate", "{\"apiVersion\": ").await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).starts_with("body is not an AdmissionReview"),
        "{body:?}"
    );

    let (status, body) = c
        .post(
            "/validate",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        )
        .await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (400, &b"AdmissionReview has no request\n"[..])
    );

    let mut v1beta1 = Review::create(web_deployment("web", 1)).build();
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let (status, body) = c
        .post("/validate", serde_json::to_vec(&v1beta1).unwrap())
        .await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("expected apiVersion admission.k8s.io/v1"));

    let mut pod = web_deployment("x", 1);
    pod["kind"] = json!("Pod");
    pod["apiVersion"] = json!("v1");
    let (status, body) = c
        .post(
            "/validate",
            serde_json::to_vec(&Review::create(pod).build()).unwrap(),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body)
            .starts_with("unsupported kind core/v1 Pod: headroom evaluates"),
        "{body:?}"
    );

    // The API server validated the object; failing to read it is our defect: fail open.
    let mut no_selector = web_deployment("web", 1);
    no_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    let r = c.review(&Review::create(no_selector).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        warnings(&r),
        [
            "headroom: not evaluated, cannot parse request.object: missing field `spec.selector`; allowed"
        ]
    );

    let mut no_object = Review::create(web_deployment("web", 1)).build();
    no_object["request"]["object"] = Value::Null;
    let (status, body) = c
        .post("/validate", serde_json::to_vec(&no_object).unwrap())
        .await;
    assert_eq!(
        (status.as_u16(), &body[..]),
        (400, &b"request.object is missing\n"[..])
    );

    // Over the body limit: refused before parsing.
    let huge = vec![b' '; webhook::server::MAX_BODY_BYTES + 1];
    let (status, _) = c.post("/validate", huge).await;
    assert_eq!(status, 413);

    // A large but legal object (1 MiB annotation) is answered normally.
    let mut big = web_deployment("web", 3);
    big["metadata"]["annotations"] = json!({"example.com/blob": "x".repeat(1024 * 1024)});
    let r = c.review(&Review::create(big).build()).await;
    assert_eq!(r["allowed"], true);

    // The server is still healthy after all of that.
    let r = c
        .review(&Review::create(web_deployment("web", 3)).build())
        .await;
    assert_eq!(r["allowed"], true);
}

#[tokio::test]
async fn tls_1_2_clients_are_served() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let config = server.pki.client_config(&[&rustls::version::TLS12]);
    let mut c = Client::connect(server.running.https, config).await.unwrap();
    let r = c
        .review(&Review::create(web_deployment("web", 3)).build())
        .await;
    assert_eq!(r["allowed"], true);
}

#[tokio::test]
async fn certificate_files_are_reloaded_when_they_change() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let rotated = support::Pki::generate("rotated CA");
    rotated.write(&server.dir);
    let config = rotated.client_config(rustls::DEFAULT_VERSIONS);
    // The reloader polls every 200 ms; allow it a few seconds.
    let mut connected = None;
    for _ in 0..50 {
        if let Ok(c) = Client::connect(server.running.https, config.clone()).await {
            connected = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut c = connected.expect("the server presents the rotated certificate");
    let r = c
        .review(&Review::create(web_deployment("web", 3)).build())
        .await;
    assert_eq!(r["allowed"], true);
    let old = server.pki.client_config(rustls::DEFAULT_VERSIONS);
    assert!(
        Client::connect(server.running.https, old).await.is_err(),
        "old CA no longer matches"
    );
}

#[tokio::test]
async fn stale_data_fails_open_and_is_counted() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    // The same data, measured 700 s ago: its age is the measurements', not the fetch's.
    let mut snapshot = server.state.data().expect("loaded").snapshot.clone();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(700);
    for at in snapshot.nodes.as_mut().expect("nodes").values_mut() {
        *at = old;
    }
    server
        .state
        .set_snapshot(snapshot, std::time::SystemTime::now());
    let mut c = client(&server).await;
    let r = c.review(&Review::create(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{r}");
    assert!(
        w[0].starts_with("headroom: not evaluated, profile data is 70"),
        "{w:?}"
    );
    assert!(w[0].ends_with("s old (max 600s); allowed"), "{w:?}");
    assert!(r["auditAnnotations"]["fail-open"].is_string(), "{r}");
    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    assert!(
        metrics.contains(r#"headroom_webhook_fail_opens_total{reason="stale"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn profiles_polled_from_a_collector_endpoint() {
    let dir = support::temp_dir("collector");
    let profiles = std::fs::read_to_string(support::fresh_profiles("profiles-outage.json", &dir))
        .expect("fixture");
    let app = axum::Router::new().route(
        "/profiles",
        axum::routing::get(move || {
            let body = profiles.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let server = start_server(Profiles::Collectors(vec![collector]), 5000).await;
    let (status, _) = http_get(server.running.metrics, "/readyz").await;
    assert_eq!(status, 200, "ready once the first poll is in");
    let mut c = client(&server).await;
    let r = c.review(&Review::create(agent_daemonset()).build()).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(message(&r).contains("264.1 MiB > 200.0 MiB"), "{r}");
}

#[tokio::test]
async fn unparseable_objects_fail_open_in_every_mode_naming_the_field() {
    let server = start_server(Profiles::File("profiles-outage.json"), 5000).await;
    let mut c = client(&server).await;
    // The recorded Deployment with `replicas` of the wrong type.
    let mut bad = web_deployment("web", 3);
    bad["spec"]["replicas"] = json!("three");
    let r = c.review(&Review::create(bad.clone()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r["status"].is_null(), "{r}");
    let w = warnings(&r);
    assert_eq!(w.len(), 1, "{r}");
    assert!(
        w[0].starts_with(
            "headroom: not evaluated, cannot parse request.object: field `spec.replicas`: \
             invalid type: string \"three\", expected i32"
        ),
        "{w:?}"
    );
    assert!(
        r["auditAnnotations"]["fail-open"]
            .as_str()
            .is_some_and(|a| a.contains("`spec.replicas`")),
        "{r}"
    );

    // A wrong type deep in the pod template (the recorded DaemonSet), in an exempt namespace.
    let mut ds = agent_daemonset();
    ds["metadata"]["namespace"] = json!("kube-system");
    ds["spec"]["template"]["spec"]["containers"][0]["image"] = json!(["not", "a", "string"]);
    let r = c.review(&Review::create(ds.clone()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        warnings(&r)[0].contains("field `spec.template.spec.containers[0].image`"),
        "{r}"
    );

    // Warn and Audit modes answer the same.
    for mode in [webhook::budget::Mode::Warn, webhook::budget::Mode::Audit] {
        let mut budget = (*server.state.budget()).clone();
        budget.spec.mode = mode;
        server.state.set_budget(budget);
        let r = c.review(&Review::create(bad.clone()).build()).await;
        assert_eq!(r["allowed"], true, "{r}");
        assert!(warnings(&r)[0].contains("`spec.replicas`"), "{r}");
    }

    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    for line in [
        r#"headroom_webhook_fail_opens_total{reason="unparseable"} 4"#,
        r#"headroom_webhook_decisions_total{mode="Enforce",result="fail_open",kind="Deployment"} 1"#,
        r#"headroom_webhook_decisions_total{mode="Enforce",result="fail_open",kind="DaemonSet"} 1"#,
        r#"headroom_webhook_decisions_total{mode="Warn",result="fail_open",kind="Deployment"} 1"#,
        r#"headroom_webhook_decisions_total{mode="Audit",result="fail_open",kind="Deployment"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn cronjob_suspend_patch_is_allowed_unevaluated() {
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    // The recorded CronJob, 50 pods per run: unmeasured beyond the canary size.
    let mut old = support::fixture("cronjob-report.json");
    old["metadata"]["namespace"] = json!("default");
    old["spec"]["jobTemplate"]["spec"]["parallelism"] = json!(50);
    let r = c.review(&Review::create(old.clone()).build()).await;
    assert_eq!(r["allowed"], false, "evaluated, it is denied: {r}");

    // kubectl patch cronjob report -p '{"spec":{"suspend":true}}'
    let mut suspended = old.clone();
    suspended["spec"]["suspend"] = json!(true);
    let r = c.review(&Review::update(old, suspended).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(warnings(&r).is_empty(), "{r}");
    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    let line = r#"headroom_webhook_decisions_total{mode="Enforce",result="no_added_load",kind="CronJob"} 1"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line} in\n{metrics}"
    );
}

/// The recorded Deployment as its controller writes its ReplicaSet.
fn replicaset_of(deployment: &Value, replicas: i64) -> Value {
    let mut rs = deployment.clone();
    rs["kind"] = json!("ReplicaSet");
    rs["metadata"]["name"] = json!("web-7c5ddbdf54");
    rs["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
        "uid": "5b1e4c4e-6a43-4d5d-9f0e-0c1c3e0f7a11",
        "controller": true, "blockOwnerDeletion": true
    }]);
    rs["spec"]["replicas"] = json!(replicas);
    rs.as_object_mut().expect("object").remove("status");
    rs
}

#[tokio::test]
async fn replicasets_of_a_judged_controller_are_not_judged_again() {
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    let deployment = web_deployment("web", 3);
    // 1000 replicas would be denied (see scale_up_over_budget_is_denied…); the Deployment's
    // own change was judged, so its ReplicaSet's is not.
    let owned = replicaset_of(&deployment, 1000);
    let r = c.review(&Review::create(owned.clone()).build()).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(warnings(&r).is_empty(), "{r}");

    // A ReplicaSet of its own is judged.
    let mut orphan = owned;
    orphan["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let r = c.review(&Review::create(orphan).build()).await;
    assert_eq!(r["allowed"], false, "{r}");

    let (_, metrics) = http_get(server.running.metrics, "/metrics").await;
    let line = r#"headroom_webhook_decisions_total{mode="Enforce",result="owner_judged",kind="ReplicaSet"} 1"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line} in\n{metrics}"
    );
}

#[tokio::test]
async fn http2_bodies_over_the_limit_get_413_like_http1() {
    let server = start_server(Profiles::File("profiles-outage.json"), 10).await;
    let mut c = support::H2Client::connect(server.running.https, &server.pki)
        .await
        .expect("HTTP/2 over TLS");
    let review = serde_json::to_vec(&Review::create(web_deployment("web", 3)).build()).unwrap();
    let (status, body) = c.post("/validate", review.clone()).await.expect("answered");
    assert_eq!(status, 200, "{body:?}");

    let huge = vec![b' '; webhook::server::MAX_BODY_BYTES + 1];
    let (status, body) = c
        .post("/validate", huge.clone())
        .await
        .expect("an answer, not a stream error");
    assert_eq!(status, 413, "{body:?}");
    // Without a content-length the limit is found while reading: the same answer.
    let (status, body) = c
        .post_streamed("/validate", huge)
        .await
        .expect("an answer, not a stream error");
    assert_eq!(status, 413, "{body:?}");

    // A client still sending when the answer comes (the API server streams large bodies)
    // gets to finish: no stream reset, which clients report as an HTTP/2 framing error.
    let total = 3 * webhook::server::MAX_BODY_BYTES;
    let (status, _, sent) = c
        .post_while_sending("/validate", total)
        .await
        .expect("an answer, not a stream error");
    assert_eq!(status, 413);
    assert_eq!(
        sent, total,
        "the stream was reset before the client finished"
    );

    // The connection still serves the next review.
    let (status, _) = c.post("/validate", review).await.expect("answered");
    assert_eq!(status, 200);
}

/// The recorded StatefulSet (OrderedReady), running the image web is measured with.
fn db_statefulset(replicas: i64) -> Value {
    let mut db = support::fixture("statefulset-db.yaml");
    db["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
    db["spec"]["replicas"] = json!(replicas);
    db
}

fn parents(
    objects: &[(webhook::workload::Kind, Value)],
) -> std::sync::Arc<webhook::parents::Objects> {
    let mut parents = webhook::parents::Objects::default();
    for (kind, v) in objects {
        parents.insert(
            webhook::workload::Workload::from_value(*kind, "parent", v.clone())
                .expect("a recorded object"),
        );
    }
    std::sync::Arc::new(parents)
}

#[tokio::test]
async fn scale_reviews_are_judged_like_their_parent() {
    use webhook::workload::Kind;
    let server = start_server(Profiles::File("profiles-outage.json"), 100).await;
    let mut c = client(&server).await;
    let scale = |old, new| Review::scale_of("statefulsets", "default", "db", old, new).build();

    // Standalone: no parent to read; the Scale alone is unmeasured, and the answer says so.
    let r = c.review(&scale(3, 30)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(message(&r).contains("has no measured profile"), "{r}");
    assert_eq!(
        warnings(&r),
        [
            "headroom: StatefulSet default/db not read for this scale: its annotations, image and \
          strategy were not checked"
        ]
    );

    server.state.set_parents(parents(&[
        (Kind::StatefulSet, db_statefulset(3)),
        (Kind::Deployment, {
            let mut web = web_deployment("web", 3);
            web["metadata"]["annotations"] =
                json!({"headroom.dev/break-glass": "INC-9: traffic spike"});
            web
        }),
    ]));
    // Measured through the parent's image, within budget, and nothing left unchecked.
    let r = c.review(&scale(3, 30)).await;
    assert_eq!(r["allowed"], true, "{r}");
    assert!(warnings(&r).is_empty(), "{r}");
    // OrderedReady: one pod starts at a time, as for a patch of replicas.
    let r = c.review(&scale(3, 600)).await;
    assert_eq!(r["allowed"], false, "{r}");
    assert!(message(&r).contains("600 pods, 1 starting at once"), "{r}");
    let patch = c
        .review(&Review::update(db_statefulset(3), db_statefulset(600)).build())
        .await;
    assert!(
        message(&patch).contains("600 pods, 1 starting at once"),
        "{patch}"
    );

    // The parent's break-glass annotation counts for `kubectl scale`.
    let r = c
        .review(&Review::scale("default", "web", 3, 1000).build())
        .await;
    assert_eq!(r["allowed"], true, "{r}");
    assert_eq!(
        warnings(&r),
        ["headroom: budget not checked, break-glass: INC-9: traffic spike"]
    );
}
