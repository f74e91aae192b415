use super::*;

const EXAMPLE: &str = r#"{
  "apiVersion": "headroom.dev/v1alpha1",
  "kind": "ProfileList",
  "node": "node-a",
  "generatedAt": "2026-11-22T05:00:00Z",
  "windowSeconds": 3600,
  "totals": {
    "apiserverRequestsPerSecond": 41.5,
    "apiserverReceivedBytesPerSecond": 1048576,
    "apiserverConnectionsPerSecond": 0.2,
    "dnsQueriesPerSecond": 120
  },
  "items": [
    {
      "workload": { "namespace": "kube-system", "kind": "DaemonSet", "name": "agent" },
      "image": "registry.example/agent:1.2",
      "pods": 12,
      "minutes": 55,
      "measuredSeconds": 3300,
      "steady":  { "apiserverRequestsPerSecond": 0.5, "apiserverReceivedBytesPerSecond": 2048,
                   "apiserverConnectionsPerSecond": 0.01, "dnsQueriesPerSecond": 3 },
      "startup": { "apiserverRequestsPerSecond": 4, "apiserverReceivedBytesPerSecond": 800000,
                   "apiserverConnectionsPerSecond": 0.05, "dnsQueriesPerSecond": 9 },
      "current": { "apiserverRequestsPerSecond": 6, "apiserverReceivedBytesPerSecond": 24576,
                   "apiserverConnectionsPerSecond": 0.12, "dnsQueriesPerSecond": 36 }
    }
  ]
}"#;

fn agent() -> WorkloadRef {
    WorkloadRef {
        namespace: "kube-system".into(),
        kind: "DaemonSet".into(),
        name: "agent".into(),
    }
}

#[test]
fn parses_the_documented_example() {
    let list = ProfileList::parse("example", EXAMPLE.as_bytes()).unwrap();
    assert_eq!(list.node, "node-a");
    assert_eq!(list.totals.apiserver_requests_per_second, 41.5);
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].workload, agent());
    assert_eq!(
        list.items[0].startup.apiserver_received_bytes_per_second,
        800_000.0
    );
}

#[test]
fn rejects_unknown_api_version() {
    let text = EXAMPLE.replace("headroom.dev/v1alpha1", "headroom.dev/v2");
    let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
    assert!(
        matches!(err, ProfileError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("headroom.dev/v2"), "{err}");
}

#[test]
fn rejects_negative_figures_naming_the_field() {
    let text = EXAMPLE.replace("\"dnsQueriesPerSecond\": 9", "\"dnsQueriesPerSecond\": -9");
    let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "profiles p.json: items[0].startup.dnsQueriesPerSecond: must be a finite number ≥ 0"
    );
}

#[test]
fn rejects_malformed_json_naming_the_source() {
    let err = ProfileList::parse("p.json", b"{\"apiVersion\": ").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("profiles p.json: not a headroom.dev/v1alpha1 ProfileList"),
        "{err}"
    );
}

#[test]
fn merge_adds_totals_and_current_and_keeps_worst_per_pod() {
    let a = ProfileList::parse("a", EXAMPLE.as_bytes()).unwrap();
    let mut b = a.clone();
    b.node = "node-b".into();
    b.items[0].pods = 3;
    b.items[0].minutes = 60;
    b.items[0].steady.apiserver_requests_per_second = 0.9;
    b.items[0].startup.apiserver_requests_per_second = 1.0;
    let snapshot = Snapshot::merge([&a, &b]);
    assert_eq!(snapshot.totals, a.totals * 2.0);
    let item = &snapshot.workloads[&agent()];
    assert_eq!(item.pods, 15);
    assert_eq!(item.minutes, 60);
    assert_eq!(item.steady.apiserver_requests_per_second, 0.9);
    assert_eq!(item.startup.apiserver_requests_per_second, 4.0);
    assert_eq!(item.current, a.items[0].current * 2.0);
    assert_eq!(snapshot.current_share(&agent()), a.items[0].current * 2.0);
}

#[test]
fn per_pod_prefers_own_measurement_then_image() {
    let list = ProfileList::parse("a", EXAMPLE.as_bytes()).unwrap();
    let snapshot = Snapshot::merge([&list]);
    let own = snapshot.per_pod(&agent(), None).unwrap();
    assert_eq!(
        own.provenance,
        Provenance::Measured {
            pods: 12,
            minutes: 55
        }
    );
    assert_eq!(own.steady.dns_queries_per_second, 3.0);

    let other = WorkloadRef {
        namespace: "monitoring".into(),
        kind: "DaemonSet".into(),
        name: "agent-copy".into(),
    };
    let by_image = snapshot
        .per_pod(&other, Some("registry.example/agent:1.2"))
        .unwrap();
    assert!(matches!(by_image.provenance, Provenance::Image { ref from, .. } if *from == agent()));
    assert_eq!(
        by_image.provenance.to_string(),
        "image registry.example/agent:1.2 as measured for DaemonSet kube-system/agent over 12 \
         pods, 55 min"
    );
    assert_eq!(snapshot.per_pod(&other, Some("nginx")), None);
    assert_eq!(snapshot.per_pod(&other, None), None);
    assert_eq!(snapshot.current_share(&other), Load::ZERO);
}

#[test]
fn an_item_with_zero_pods_is_unmeasured() {
    let mut list = ProfileList::parse("a", EXAMPLE.as_bytes()).unwrap();
    list.items[0].pods = 0;
    let snapshot = Snapshot::merge([&list]);
    assert_eq!(
        snapshot.per_pod(&agent(), Some("registry.example/agent:1.2")),
        None
    );
}
