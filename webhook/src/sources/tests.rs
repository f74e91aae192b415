use axum::{Router, extract::Query, routing::get};

use super::*;
use crate::{
    load::{Dimension, Load},
    prometheus_rules as rules,
};

/// A collector's document for `node`, serialised as the collector serves it.
fn list(node: &str, pods: u64, requests: f64) -> String {
    let one = |requests| Load {
        apiserver_requests_per_second: requests,
        ..Load::ZERO
    };
    let list = ProfileList {
        api_version: crate::profile::API_VERSION.into(),
        kind: crate::profile::KIND.into(),
        node: node.into(),
        generated_at: "2026-11-22T05:00:00Z".into(),
        window_seconds: 3600,
        totals: one(requests),
        items: vec![crate::profile::ProfileItem {
            workload: crate::profile::WorkloadRef {
                namespace: "default".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            image: "nginx:1.27".into(),
            pods,
            minutes: 30,
            measured_seconds: 1800,
            steady: one(requests),
            startup: Load::ZERO,
            current: one(1.0),
        }],
    };
    serde_json::to_string(&list).unwrap()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn merges_collectors_and_skips_a_failing_one() {
    let a = serve(Router::new().route("/profiles", get(|| async { list("a", 2, 3.0) }))).await;
    let b = serve(Router::new().route("/profiles", get(|| async { list("b", 5, 4.0) }))).await;
    let broken = serve(Router::new().route("/profiles", get(|| async { "{}" }))).await;
    let snapshot = Source::Collectors(vec![a.clone(), format!("{b}/"), broken])
        .fetch()
        .await
        .unwrap();
    assert_eq!(snapshot.totals.apiserver_requests_per_second, 7.0);
    let web = snapshot.workloads.values().next().unwrap();
    assert_eq!(web.pods, 7);
    assert_eq!(web.steady.apiserver_requests_per_second, 4.0);
    assert_eq!(web.current.apiserver_requests_per_second, 2.0);
    assert_eq!(snapshot.images["nginx:1.27"], web.workload);

    let err = Source::Collectors(vec!["http://127.0.0.1:1".into()])
        .fetch()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
}

#[test]
fn profiles_url_forms() {
    assert_eq!(profiles_url("http://n:9100"), "http://n:9100/profiles");
    assert_eq!(profiles_url("http://n:9100/"), "http://n:9100/profiles");
    assert_eq!(
        profiles_url("http://n:9100/profiles"),
        "http://n:9100/profiles"
    );
}

#[tokio::test]
async fn reads_recording_rules_from_the_prometheus_api() {
    async fn answer(Query(q): Query<std::collections::HashMap<String, String>>) -> String {
        let query = q.get("query").cloned().unwrap_or_default();
        let labels = r#"{"namespace":"default","workload_kind":"Deployment","workload":"web"}"#;
        let image = |image: &str| {
            format!(
                r#"{{"namespace":"default","workload_kind":"Deployment","workload":"web","image":"{image}"}}"#
            )
        };
        let other = r#"{"namespace":"default","workload_kind":"Deployment","workload":"unmeasured","image":"redis:8"}"#;
        let values: Vec<(String, &str)> =
            if query == rules::cluster_total(Dimension::ApiserverRequests) {
                vec![("{}".into(), "120")]
            } else if query == rules::pod_steady(Dimension::ApiserverRequests) {
                vec![(labels.into(), "1.5")]
            } else if query == rules::pod_startup(Dimension::ApiserverReceivedBytes) {
                vec![(labels.into(), "65536")]
            } else if query == rules::WORKLOAD_PODS {
                vec![(labels.into(), "8")]
            } else if query == rules::WORKLOAD_MINUTES {
                vec![(labels.into(), "42")]
            } else if query == prometheus::COLLECTOR_SCRAPES {
                vec![
                    (r#"{"instance":"node-a"}"#.into(), "1700000000.5"),
                    (r#"{"instance":"node-b"}"#.into(), "1699999990"),
                ]
            } else if query == rules::WORKLOAD_IMAGE {
                // Mid-rollout: the newer image's pods started later.
                vec![
                    (image("nginx:1.28"), "1700000600"),
                    (image("nginx:1.27"), "1700000000"),
                    (other.into(), "1700000000"),
                ]
            } else {
                Vec::new()
            };
        let result = values
            .iter()
            .map(|(m, v)| format!(r#"{{"metric":{m},"value":[1700000000,"{v}"]}}"#))
            .collect::<Vec<_>>()
            .join(",");
        format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{result}]}}}}"#)
    }
    let url = serve(Router::new().route("/api/v1/query", get(answer))).await;
    let snapshot = Source::Prometheus(url).fetch().await.unwrap();
    assert_eq!(snapshot.totals.apiserver_requests_per_second, 120.0);
    let web = snapshot.workloads.values().next().unwrap();
    assert_eq!(web.workload.to_string(), "Deployment default/web");
    assert_eq!((web.pods, web.minutes), (8, 42));
    assert_eq!(web.steady.apiserver_requests_per_second, 1.5);
    assert_eq!(web.startup.apiserver_received_bytes_per_second, 65536.0);
    assert_eq!(web.image, "nginx:1.28", "the newest pod's image");
    assert_eq!(snapshot.images["nginx:1.28"], web.workload);
    assert_eq!(snapshot.workloads.len(), 1, "an image alone is no profile");
    // When each collector was last scraped, from the samples' own timestamps.
    let nodes = snapshot.nodes.as_ref().unwrap();
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);
    assert_eq!(
        snapshot.measured_at(),
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500))
    );
    // Three of the four cluster totals answered with no series: missing, not zero.
    assert_eq!(
        snapshot.missing.as_deref(),
        Some(
            "Prometheus has no series for headroom:cluster_apiserver_received_bytes:rate5m (+2 \
             more)"
        )
    );

    let err = Source::Prometheus("http://127.0.0.1:1".into())
        .fetch()
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(
            "Prometheus query `max by (instance) (timestamp(headroom_collector_build_info))`"
        ),
        "{err}"
    );
}
