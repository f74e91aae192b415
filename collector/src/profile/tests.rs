use super::{
    compute::{quantile, rate5m, startup_rate},
    store::{PodSeries, Sample},
    *,
};
use crate::identity::UNKNOWN_WORKLOAD_KIND;

const T0: f64 = 1_760_000_000.0;

fn web(pod: &str) -> Identity {
    Identity::container("default", "Deployment", "web", pod, "nginx")
}

fn row(identity: Identity, counters: Counters, started_at: Option<f64>) -> Row {
    Row {
        identity,
        counters,
        image: "nginx:1.27".into(),
        started_at,
    }
}

/// Feeds `pods` (identity, per-second rates, started_at) every 15 s from `from` to
/// `to`, counters starting at zero at each pod's start (or at `from`), with `burst`
/// extra per-second in each pod's first minute.
fn feed(
    store: &mut ProfileStore,
    pods: &[(Identity, [f64; 4], Option<f64>)],
    burst: [f64; 4],
    from: f64,
    to: f64,
) {
    let mut at = from;
    while at <= to {
        let rows = pods.iter().map(|(id, rates, started)| {
            let start = started.unwrap_or(from);
            let age = (at - start).max(0.0);
            let counters =
                std::array::from_fn(|d| (rates[d] * age + burst[d] * age.min(60.0)).round() as u64);
            row(id.clone(), counters, *started)
        });
        store.record(at, rows);
        at += 15.0;
    }
}

#[test]
fn quantile_matches_prometheus() {
    // quantile(0.95, 1..=20) in Prometheus: rank 18.05 → 19.05.
    let mut values: Vec<f64> = (1..=20).map(f64::from).collect();
    assert!((quantile(0.95, &mut values).expect("values") - 19.05).abs() < 1e-9);
    assert_eq!(quantile(0.95, &mut [3.0]), Some(3.0));
    assert_eq!(quantile(0.5, &mut [4.0, 1.0]), Some(2.5));
    assert_eq!(quantile(0.95, &mut []), None);
}

#[test]
fn rate_counts_a_reset_from_zero() {
    let mut samples: std::collections::VecDeque<Sample> = [
        (-300.0, 50),
        (0.0, 100),
        (15.0, 130),
        (30.0, 10),
        (45.0, 40),
    ]
    .into_iter()
    .map(|(at, n)| Sample {
        at,
        counters: [n, 0, 0, 0],
    })
    .collect();
    // 30 + 10 + 30 over the 45 s since the oldest sample in range.
    let rate = rate5m(&samples, 4).expect("a rate");
    assert!((rate[0] - 70.0 / 45.0).abs() < 1e-9, "{rate:?}");
    // A series that starts inside the range: over the whole 5 minutes.
    samples.pop_front();
    let rate = rate5m(&samples, 3).expect("a rate");
    assert!((rate[0] - 70.0 / 300.0).abs() < 1e-9, "{rate:?}");
    assert!(rate5m(&samples, 0).is_none());
}

#[test]
fn rate_looks_back_five_minutes_only() {
    let samples: std::collections::VecDeque<Sample> = (0..=40u32)
        .map(|i| Sample {
            at: f64::from(i) * 15.0,
            // 1/s for the first 5 minutes, 3/s after.
            counters: [
                u64::from(if i <= 20 { i * 15 } else { 300 + (i - 20) * 45 }),
                0,
                0,
                0,
            ],
        })
        .collect();
    let rate = rate5m(&samples, 40).expect("a rate");
    assert!((rate[0] - 3.0).abs() < 1e-9, "{rate:?}");
}

fn first_minute_series(start: f64, offset: f64) -> PodSeries {
    PodSeries {
        image: String::new(),
        started_at: Some(start),
        samples: (0..10)
            .map(|i| {
                let at = start + offset + f64::from(i) * 15.0;
                let age = at - start;
                let n = 10.0 * age.min(60.0) + (age - 60.0).max(0.0);
                Sample {
                    at,
                    counters: [n as u64, 0, 0, 0],
                }
            })
            .collect(),
    }
}

#[test]
fn startup_is_the_first_minute_interpolated() {
    // 10/s in the first minute, 1/s after.
    let series = first_minute_series(T0, 0.0);
    let rate = startup_rate(&series, T0).expect("a startup rate");
    assert!((rate[0] - 10.0).abs() < 1e-9, "{rate:?}");
    // Samples 7 s off the minute: interpolating across the end of the burst
    // underestimates a little (566 of 600 by the minute's end).
    let series = first_minute_series(T0, 7.0);
    let rate = startup_rate(&series, T0).expect("a startup rate");
    assert!((rate[0] - 9.44).abs() < 0.01, "{rate:?}");
    // Not yet a minute of samples.
    let mut young = first_minute_series(T0, 0.0);
    young.samples.truncate(4);
    assert_eq!(startup_rate(&young, T0), None);
}

#[test]
fn steady_is_p95_over_pods_and_startup_only_for_pods_seen_starting() {
    let created = T0;
    let mut store = ProfileStore::new(StoreConfig::default(), created);
    // Twenty pods at 1..=20 requests/s; the first started before the store (no
    // startup figure), the others two minutes in.
    let pods: Vec<(Identity, [f64; 4], Option<f64>)> = (1..=20)
        .map(|i| {
            let started = if i == 1 { T0 - 600.0 } else { T0 + 120.0 };
            (
                web(&format!("web-{i}")),
                [f64::from(i), 100.0, 0.01, 2.0],
                Some(started),
            )
        })
        .collect();
    let burst = [5.0, 10_000.0, 0.0, 3.0];
    let now = T0 + 1800.0;
    feed(&mut store, &pods, burst, T0, now);
    let list = profile_list(&store, "node-a", now, rfc3339(now));
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(
        item.workload,
        WorkloadRef {
            namespace: "default".into(),
            kind: "Deployment".into(),
            name: "web".into()
        }
    );
    assert_eq!(item.pods, 20);
    assert_eq!(item.minutes, 30);
    assert_eq!(item.image, "nginx:1.27");
    // The first minute's burst lifts fewer than 5% of a pod's 5-minute rates in
    // half an hour, so each pod's p95 is its steady rate: p95 over 1..=20 is 19.05.
    let steady = item.steady.apiserver_requests_per_second;
    assert!((steady - 19.05).abs() < 1e-6, "{steady}");
    // Startup: pods 2..=20 at i + 5 per second in the first minute; p95 over 19 pods.
    let mut expected: Vec<f64> = (2..=20).map(|i| f64::from(i) + 5.0).collect();
    let expected = quantile(0.95, &mut expected).expect("values");
    let startup = item.startup.apiserver_requests_per_second;
    assert!((startup - expected).abs() < 0.05, "{startup} vs {expected}");
    assert!((item.startup.apiserver_received_bytes_per_second - 10_100.0).abs() < 5.0);
    // Current: all pods together, now.
    let current = item.current.apiserver_requests_per_second;
    assert!((current - 210.0).abs() < 0.5, "{current}");
    assert!((list.totals.dns_queries_per_second - 40.0).abs() < 0.1);
}

#[test]
fn containers_of_a_pod_add_up() {
    let mut store = ProfileStore::new(StoreConfig::default(), T0);
    for i in 0..=40 {
        let at = T0 + f64::from(i) * 15.0;
        let n = u64::try_from(i).expect("small") * 15;
        let sidecar = Identity::container("default", "Deployment", "web", "web-1", "proxy");
        store.record(
            at,
            [
                row(web("web-1"), [n, 0, 0, 0], None),
                row(sidecar, [2 * n, 0, 0, 0], None),
            ],
        );
    }
    let list = profile_list(&store, "node-a", T0 + 600.0, String::new());
    assert!((list.items[0].current.apiserver_requests_per_second - 3.0).abs() < 1e-9);
}

#[test]
fn unknown_pods_count_in_totals_but_get_no_item() {
    let mut store = ProfileStore::new(StoreConfig::default(), T0);
    let unknown = Identity::container("", UNKNOWN_WORKLOAD_KIND, "", "0c9d4f1e", "4b8a3d8f0e6c");
    let kubelet = Identity::node_process("kubelet");
    feed(
        &mut store,
        &[
            (unknown, [2.0, 0.0, 0.0, 0.0], None),
            (kubelet, [1.0, 0.0, 0.0, 0.0], None),
        ],
        [0.0; 4],
        T0,
        T0 + 600.0,
    );
    let list = profile_list(&store, "node-a", T0 + 600.0, String::new());
    assert_eq!(
        list.items
            .iter()
            .map(|i| i.workload.kind.as_str())
            .collect::<Vec<_>>(),
        ["node"]
    );
    assert_eq!(list.items[0].workload.name, "kubelet");
    assert!((list.totals.apiserver_requests_per_second - 3.0).abs() < 1e-6);
}

#[test]
fn gone_pods_leave_current_then_the_window() {
    let mut store = ProfileStore::new(
        StoreConfig {
            window_seconds: 600.0,
            ..StoreConfig::default()
        },
        T0,
    );
    feed(
        &mut store,
        &[(web("web-1"), [1.0; 4], None)],
        [0.0; 4],
        T0,
        T0 + 300.0,
    );
    feed(
        &mut store,
        &[(web("web-2"), [1.0; 4], None)],
        [0.0; 4],
        T0 + 315.0,
        T0 + 600.0,
    );
    let list = profile_list(&store, "n", T0 + 600.0, String::new());
    // web-1 had its full rate window; web-2, sampled for 285 s, does not count yet.
    assert_eq!(list.items[0].pods, 1);
    // Only web-2 still reports; its series is younger than 5 minutes (285 s of 1/s):
    // like Prometheus' rate, the increase over the whole range.
    assert!((list.items[0].current.apiserver_requests_per_second - 0.95).abs() < 1e-6);
    feed(
        &mut store,
        &[(web("web-2"), [1.0; 4], None)],
        [0.0; 4],
        T0 + 615.0,
        T0 + 1215.0,
    );
    // web-1's samples fall out of window + rate range and it is forgotten.
    assert!(store.pods().keys().all(|k| k.pod == "web-2"));
}

#[test]
fn store_is_bounded_in_pods_and_samples() {
    let config = StoreConfig {
        max_pods: 3,
        window_seconds: 600.0,
        ..StoreConfig::default()
    };
    let mut store = ProfileStore::new(config, T0);
    for i in 0..5 {
        store.record(
            T0 + f64::from(i),
            [row(web(&format!("web-{i}")), [1; 4], None)],
        );
    }
    assert_eq!(
        store
            .pods()
            .keys()
            .map(|k| k.pod.as_str())
            .collect::<Vec<_>>(),
        ["web-2", "web-3", "web-4"]
    );
    // Samples faster than the interval are dropped; older than window + 5 min expire.
    let mut store = ProfileStore::new(StoreConfig::default(), T0);
    for i in 0..2000u32 {
        store.record(
            T0 + f64::from(i) * 5.0,
            [row(web("w"), [u64::from(i); 4], None)],
        );
    }
    let kept = store.pods().values().next().expect("a pod").samples.len();
    assert!((260..=262).contains(&kept), "{kept}");
}

#[test]
fn serialises_as_the_documented_schema() {
    let mut store = ProfileStore::new(StoreConfig::default(), T0);
    feed(
        &mut store,
        &[(web("web-1"), [1.0; 4], None)],
        [0.0; 4],
        T0,
        T0 + 600.0,
    );
    let shared = SharedProfiles::new(store, "node-a");
    let list = shared.profile_list(T0 + 600.0);
    let json: serde_json::Value = serde_json::to_value(&list).expect("serialises");
    assert_eq!(json["apiVersion"], "headroom.dev/v1alpha1");
    assert_eq!(json["kind"], "ProfileList");
    assert_eq!(json["node"], "node-a");
    assert_eq!(json["generatedAt"], "2025-10-09T09:03:20Z");
    assert_eq!(json["windowSeconds"], 3600);
    let item = &json["items"][0];
    assert_eq!(item["workload"]["kind"], "Deployment");
    for part in ["steady", "startup", "current"] {
        let mut keys: Vec<&str> = item[part]
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "apiserverConnectionsPerSecond",
                "apiserverReceivedBytesPerSecond",
                "apiserverRequestsPerSecond",
                "dnsQueriesPerSecond"
            ],
            "{part}"
        );
    }
    // The doc's example reads back into our types.
    let doc = include_str!("../../../docs/profiles.md");
    let example = doc
        .split("```json")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("an example in docs/profiles.md");
    let parsed: ProfileList = serde_json::from_str(example).expect("the documented example");
    assert_eq!(parsed.items[0].pods, 12);
}

#[tokio::test]
async fn handler_serves_json() {
    let mut store = ProfileStore::new(StoreConfig::default(), now() - 600.0);
    let start = now() - 600.0;
    feed(
        &mut store,
        &[(web("web-1"), [1.0; 4], None)],
        [0.0; 4],
        start,
        start + 600.0,
    );
    let response = handler(State(SharedProfiles::new(store, "node-a"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(b"application/json".as_slice())
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    let list: ProfileList = serde_json::from_slice(&body).expect("a ProfileList");
    assert_eq!(list.node, "node-a");
    assert_eq!(list.items.len(), 1);
}

/// Every leaf of a JSON document: its path and value.
fn leaves(path: String, value: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                leaves(format!("{path}.{k}"), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(format!("{path}[{i}]"), v, out);
            }
        }
        leaf => out.push((path, leaf.clone())),
    }
}

/// What the handler serves, read with the webhook's reader (the shared schema's
/// `ProfileList::parse`): every field arrives, none as 0 or empty.
#[tokio::test]
async fn served_profiles_read_back_whole_with_the_webhooks_reader() {
    let created = now() - 1800.0;
    let mut store = ProfileStore::new(StoreConfig::default(), created);
    // Started after the store began: its first minute (the startup burst) was seen.
    let pod = (web("web-1"), [2.0; 4], Some(created + 60.0));
    feed(&mut store, &[pod], [5.0; 4], created + 60.0, now());
    let response = handler(State(SharedProfiles::new(store, "node-a"))).await;
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("a body");
    let read = crate::schema::profiles::ProfileList::parse("/profiles", &body)
        .expect("the webhook reads what the collector serves");
    assert_eq!(read.items.len(), 1);
    let mut fields = Vec::new();
    leaves(
        String::new(),
        &serde_json::to_value(&read).expect("serialises"),
        &mut fields,
    );
    let served: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let mut served_fields = Vec::new();
    leaves(String::new(), &served, &mut served_fields);
    assert_eq!(fields, served_fields, "nothing lost or added in reading");
    for (path, value) in &fields {
        let set = match value {
            serde_json::Value::Number(n) => n.as_f64().is_some_and(|v| v > 0.0),
            serde_json::Value::String(s) => !s.is_empty(),
            _ => false,
        };
        assert!(set, "{path} arrived as {value}");
    }
}

/// A canary's first minutes: three pods of a DaemonSet's new version starting at `T0` on
/// a node whose collector has run for an hour, each making 1 request/s (and 1 of each
/// other dimension) plus a first-minute burst.
fn canary_at(age: f64) -> ProfileList {
    let created = T0 - 3600.0;
    let mut store = ProfileStore::new(StoreConfig::default(), created);
    let pods: Vec<_> = (1..=3)
        .map(|i| {
            let pod = Identity::container(
                "monitoring",
                "DaemonSet",
                "agent",
                format!("agent-canary-{i}"),
                "agent",
            );
            (pod, [1.0; 4], Some(T0))
        })
        .collect();
    feed(&mut store, &pods, [5.0; 4], T0, T0 + age);
    profile_list(&store, "node-a", T0 + age, rfc3339(T0 + age))
}

/// The ages of the recorded canary snapshots the webhook's tests read
/// (webhook/tests/fixtures/canary/), and the file each is in.
const CANARY_AGES: [(f64, &str); 5] = [
    (0.0, "0s"),
    (20.0, "20s"),
    (60.0, "1m"),
    (180.0, "3m"),
    (360.0, "6m"),
];

/// Until a pod has a full rate window it is listed (its current share, how long it has
/// been measured) but not counted: no pods, no steady figure diluted by its youth.
#[test]
fn a_canary_counts_once_it_has_a_full_rate_window() {
    for (age, _) in CANARY_AGES {
        let list = canary_at(age);
        let item = &list.items[0];
        // Sampled every 15 s: the span of the samples taken so far.
        assert_eq!(
            item.measured_seconds,
            (age / 15.0).floor() as u64 * 15,
            "{age}"
        );
        if age < store::RATE_RANGE_SECONDS {
            assert_eq!(item.pods, 0, "{age}");
            assert_eq!(item.steady, Load::default(), "{age}");
        } else {
            assert_eq!(item.pods, 3, "{age}");
            // At least the true 1/s (the p95 still holds the first minute's burst), not 1/s
            // diluted by the time before the pod existed.
            assert!(
                item.steady.apiserver_requests_per_second >= 1.0,
                "{age}: {:?}",
                item.steady
            );
        }
        // The first minute is seen from 60 s on: 1/s + a 5/s burst.
        let startup = item.startup.apiserver_requests_per_second;
        if age >= 60.0 {
            assert!((startup - 6.0).abs() < 0.05, "{age}: {startup}");
        } else {
            assert_eq!(startup, 0.0, "{age}");
        }
    }
}

/// The recorded snapshots are what the collector computes; set HEADROOM_WRITE_FIXTURES=1
/// to write them after a change to the maths.
#[test]
fn recorded_canary_snapshots_are_what_the_collector_computes() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook/tests/fixtures/canary");
    for (age, name) in CANARY_AGES {
        let json = serde_json::to_string_pretty(&canary_at(age)).expect("serialises") + "\n";
        let path = dir.join(format!("canary-{name}.json"));
        if std::env::var_os("HEADROOM_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&dir).expect("fixture dir");
            std::fs::write(&path, &json).expect("write fixture");
        }
        let recorded = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            recorded,
            json,
            "{} is stale: rerun with HEADROOM_WRITE_FIXTURES=1",
            path.display()
        );
    }
}

/// A range of one sampling interval (the demo's 15 s) is full when the next sample lands
/// a little short of it: samples come every interval give or take the tick's jitter.
#[test]
fn a_range_is_full_within_the_ticks_jitter() {
    let config = StoreConfig {
        rate_range_seconds: 15.0,
        ..StoreConfig::default()
    };
    let mut store = ProfileStore::new(config, T0 - 60.0);
    store.record(T0, [row(web("web-1"), [0; 4], Some(T0))]);
    // Traffic between the samples, the second one 14.99 s after the first.
    store.record(T0 + 14.99, [row(web("web-1"), [30; 4], Some(T0))]);
    let list = profile_list(&store, "node-a", T0 + 15.0, rfc3339(T0 + 15.0));
    let item = &list.items[0];
    assert_eq!(item.pods, 1, "{item:?}");
    assert!(
        (item.steady.apiserver_requests_per_second - 2.0).abs() < 1e-9,
        "30 requests over the 15 s range: {:?}",
        item.steady
    );
}
