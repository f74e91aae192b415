use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use super::*;

fn web() -> Identity {
    Identity::container("ns1", "Deployment", "web", "web-abc", "app")
}

fn kubelet() -> Identity {
    Identity::node_process("kubelet")
}

/// A snapshot with one pod that talks to both, a node process that only talks to the
/// API server and some self-metrics.
fn sample() -> Snapshot {
    let mut snapshot = Snapshot::default();
    *snapshot.workload(web()).apiserver() = ApiServerStats {
        requests: 12,
        connections: 2,
        sent_bytes: 4096,
        received_bytes: 1_048_576,
        open_streams: 3,
        open_connections: 1,
    };
    let dns = snapshot.workload(web()).dns();
    dns.add_queries("A", 7).add_queries("AAAA", 5);
    dns.add_responses("NOERROR", 4).add_responses("NXDOMAIN", 8);
    dns.lookups = 3;
    dns.search_expansions = 9;
    dns.duration.observe(Duration::from_micros(200));
    dns.duration.observe(Duration::from_micros(800));
    dns.duration.observe(Duration::from_millis(30));
    dns.duration.observe(Duration::from_secs(7));
    snapshot.workload(kubelet()).apiserver().requests = 40;

    let own = &mut snapshot.collector;
    own.events_lost = 5;
    own.record_kernel_drops(&[1, 5, 0, 2]);
    own.maps.insert(
        "TRAFFIC".into(),
        MapFill {
            entries: 17,
            capacity: 16_384,
        },
    );
    own.evictions.insert("SOCKETS".into(), 3);
    own.programs.insert(
        "headroom_skb_egress".into(),
        ProgramRuns {
            run_count: 1000,
            run_time: Duration::from_micros(2500),
        },
    );
    own.program_stats_seconds = 12.5;
    snapshot
}

fn render(snapshot: Snapshot) -> String {
    Metrics::new(SharedSnapshot::new(snapshot)).encode_openmetrics()
}

/// Fails with the whole exposition when `line` is not one of its lines.
fn assert_line(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line\n  {line}\nin\n{text}"
    );
}

fn assert_no_line_starting(text: &str, start: &str) {
    assert!(
        !text.lines().any(|l| l.starts_with(start)),
        "unexpected line starting {start} in\n{text}"
    );
}

const WEB: &str =
    r#"namespace="ns1",workload_kind="Deployment",workload="web",pod="web-abc",container="app""#;
const KUBELET: &str = r#"namespace="",workload_kind="node",workload="kubelet",pod="",container="""#;

#[test]
fn apiserver_series_per_identity() {
    let text = render(sample());
    for line in [
        format!("headroom_apiserver_requests_total{{{WEB}}} 12"),
        format!("headroom_apiserver_requests_total{{{KUBELET}}} 40"),
        format!("headroom_apiserver_connections_total{{{WEB}}} 2"),
        format!("headroom_apiserver_sent_bytes_total{{{WEB}}} 4096"),
        format!("headroom_apiserver_received_bytes_total{{{WEB}}} 1048576"),
        format!("headroom_apiserver_open_streams{{{WEB}}} 3"),
        format!("headroom_apiserver_open_connections{{{WEB}}} 1"),
        format!("headroom_apiserver_open_streams{{{KUBELET}}} 0"),
    ] {
        assert_line(&text, &line);
    }
}

#[test]
fn families_have_help_type_and_unit() {
    let text = render(sample());
    let expected = "\
# HELP headroom_apiserver_sent_bytes TCP payload bytes sent to the Kubernetes API server.
# TYPE headroom_apiserver_sent_bytes counter
# UNIT headroom_apiserver_sent_bytes bytes
";
    assert!(text.contains(expected), "{text}");
    assert_line(&text, "# TYPE headroom_apiserver_open_streams gauge");
    assert_line(
        &text,
        "# TYPE headroom_dns_query_duration_seconds histogram",
    );
    assert_line(&text, "# UNIT headroom_dns_query_duration_seconds seconds");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn dns_series_by_qtype_and_rcode() {
    let text = render(sample());
    for line in [
        format!("headroom_dns_queries_total{{{WEB},qtype=\"A\"}} 7"),
        format!("headroom_dns_queries_total{{{WEB},qtype=\"AAAA\"}} 5"),
        format!("headroom_dns_responses_total{{{WEB},rcode=\"NOERROR\"}} 4"),
        format!("headroom_dns_responses_total{{{WEB},rcode=\"NXDOMAIN\"}} 8"),
        format!("headroom_dns_lookups_total{{{WEB}}} 3"),
        format!("headroom_dns_search_expansions_total{{{WEB}}} 9"),
    ] {
        assert_line(&text, &line);
    }
}

#[test]
fn dns_duration_histogram_is_cumulative() {
    let text = render(sample());
    let buckets: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("headroom_dns_query_duration_seconds"))
        .collect();
    let le = |bound: &str, n: u64| {
        format!("headroom_dns_query_duration_seconds_bucket{{le=\"{bound}\",{WEB}}} {n}")
    };
    let expected = vec![
        format!("headroom_dns_query_duration_seconds_sum{{{WEB}}} 7.031"),
        format!("headroom_dns_query_duration_seconds_count{{{WEB}}} 4"),
        le("0.00025", 1),
        le("0.0005", 1),
        le("0.001", 2),
        le("0.0025", 2),
        le("0.005", 2),
        le("0.01", 2),
        le("0.025", 2),
        le("0.05", 3),
        le("0.1", 3),
        le("0.25", 3),
        le("0.5", 3),
        le("1.0", 3),
        le("2.5", 3),
        le("5.0", 3),
        le("+Inf", 4),
    ];
    assert_eq!(buckets, expected);
}

#[test]
fn a_node_process_without_dns_has_no_dns_series() {
    let text = render(sample());
    assert_no_line_starting(&text, &format!("headroom_dns_lookups_total{{{KUBELET}"));
    assert_no_line_starting(
        &text,
        &format!("headroom_dns_query_duration_seconds_count{{{KUBELET}"),
    );
}

#[test]
fn a_gone_pod_disappears_with_the_next_snapshot() {
    let shared = SharedSnapshot::new(sample());
    let metrics = Metrics::new(shared.clone());
    assert_line(
        &metrics.encode_openmetrics(),
        &format!("headroom_apiserver_requests_total{{{WEB}}} 12"),
    );
    let mut next = sample();
    next.workloads.remove(&web());
    shared.publish(next);
    let text = metrics.encode_openmetrics();
    assert!(!text.contains("pod=\"web-abc\""), "{text}");
    assert_line(
        &text,
        &format!("headroom_apiserver_requests_total{{{KUBELET}}} 40"),
    );
}

#[test]
fn families_without_series_are_left_out() {
    let text = render(Snapshot::default());
    assert_no_line_starting(&text, "# HELP headroom_apiserver");
    assert_no_line_starting(&text, "# HELP headroom_dns");
    assert_line(&text, "headroom_collector_events_lost_total 0");
}

#[test]
fn self_metrics() {
    let text = render(sample());
    for line in [
        "headroom_collector_events_lost_total 5",
        r#"headroom_collector_kernel_drops_total{reason="event_lost"} 5"#,
        r#"headroom_collector_kernel_drops_total{reason="socket_insert"} 0"#,
        r#"headroom_collector_kernel_drops_total{reason="tls_desync"} 2"#,
        r#"headroom_collector_kernel_drops_total{reason="traffic_insert"} 1"#,
        r#"headroom_collector_map_entries{map="TRAFFIC"} 17"#,
        r#"headroom_collector_map_capacity{map="TRAFFIC"} 16384"#,
        r#"headroom_collector_map_evictions_total{map="SOCKETS"} 3"#,
        r#"headroom_collector_program_runs_total{program="headroom_skb_egress"} 1000"#,
        r#"headroom_collector_program_run_seconds_total{program="headroom_skb_egress"} 0.0025"#,
        "headroom_collector_program_stats_seconds_total 12.5",
        concat!(
            r#"headroom_collector_build_info{version=""#,
            env!("CARGO_PKG_VERSION"),
            r#""} 1"#
        ),
    ] {
        assert_line(&text, line);
    }
}

#[test]
fn hostile_process_names_are_escaped() {
    // A node process picks its own comm; it must not be able to break the exposition.
    let mut snapshot = Snapshot::default();
    snapshot
        .workload(Identity::node_process("a\"b\\c\nd"))
        .apiserver()
        .requests = 1;
    let text = render(snapshot);
    assert_line(
        &text,
        r#"headroom_apiserver_requests_total{namespace="",workload_kind="node",workload="a\"b\\c\nd",pod="",container=""} 1"#,
    );
}

#[test]
fn histogram_count_is_the_sum_of_its_buckets() {
    let mut histogram = DurationHistogram::default();
    for micros in [1, 250, 251, 5_000_000, 5_000_001] {
        histogram.observe(Duration::from_micros(micros));
    }
    // A bound is inclusive (`le`): 250 µs lands in the first bucket, 251 µs in the next.
    assert_eq!(histogram.buckets[0], 2);
    assert_eq!(histogram.buckets[1], 1);
    assert_eq!(histogram.buckets[DNS_DURATION_BOUNDS.len() - 1], 1);
    assert_eq!(histogram.buckets[DNS_DURATION_BOUNDS.len()], 1);
    assert_eq!(histogram.count(), 5);
    let mut merged = histogram.clone();
    merged.merge(&histogram);
    assert_eq!(merged.count(), 10);
    assert!((merged.sum_seconds - 2.0 * histogram.sum_seconds).abs() < 1e-12);
}

#[test]
fn prometheus_text_renames_counter_and_info_families() {
    let text = Metrics::new(SharedSnapshot::new(sample())).encode_prometheus_text();
    let expected = "\
# HELP headroom_apiserver_sent_bytes_total TCP payload bytes sent to the Kubernetes API server.
# TYPE headroom_apiserver_sent_bytes_total counter
";
    assert!(text.contains(expected), "{text}");
    assert_line(&text, "# TYPE headroom_collector_build_info gauge");
    assert_line(&text, "# TYPE headroom_apiserver_open_streams gauge");
    assert_line(
        &text,
        "# TYPE headroom_dns_query_duration_seconds histogram",
    );
    assert_line(&text, "headroom_collector_events_lost_total 5");
    assert_no_line_starting(&text, "# UNIT");
    assert_no_line_starting(&text, "# EOF");
}

/// Runs `promtool` with `args`, `input` on stdin; returns its combined output.
fn promtool(args: &[&str], input: &str) -> (bool, String) {
    let promtool = Path::new("/usr/bin/promtool");
    assert!(
        promtool.exists(),
        "promtool is missing: install the prometheus package (cargo xtask setup)"
    );
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("wait for promtool");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success() && text.trim().is_empty(), text)
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let text = Metrics::new(SharedSnapshot::new(sample())).encode_prometheus_text();
    let (ok, complaints) = promtool(&["check", "metrics"], &text);
    assert!(ok, "promtool check metrics:\n{complaints}\non\n{text}");
}

#[test]
fn promtool_check_metrics_is_not_a_rubber_stamp() {
    // The same linter must reject what it should, or the test above proves nothing.
    let bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n";
    let (ok, complaints) = promtool(&["check", "metrics"], bad);
    assert!(!ok);
    assert!(complaints.contains("_total"), "{complaints}");
}

#[test]
fn promtool_parses_the_openmetrics_exposition() {
    // promtool 2.42 lints only the 0.0.4 format; its OpenMetrics parser is reached
    // through block import, which wants a timestamp on every sample.
    let text = render(sample());
    let stamped: String = text
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("headroom-om-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let input = dir.join("metrics.om");
    std::fs::write(&input, &stamped).expect("write exposition");
    let output = Command::new("/usr/bin/promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(dir.join("blocks"))
        .output()
        .expect("run promtool");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "promtool rejected the OpenMetrics exposition: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn pod_start_time_per_pod_without_container() {
    let mut snapshot = sample();
    snapshot
        .pod_start_times
        .insert(PodLabels::new(&web(), "nginx:1.27"), 1_767_225_600.5);
    let text = render(snapshot);
    let expected = "\
# HELP headroom_pod_start_time_seconds Unix time the pod's first container started; image: its first app container's.
# TYPE headroom_pod_start_time_seconds gauge
# UNIT headroom_pod_start_time_seconds seconds
headroom_pod_start_time_seconds{namespace=\"ns1\",workload_kind=\"Deployment\",workload=\"web\",pod=\"web-abc\",image=\"nginx:1.27\"} 1767225600.5
";
    assert!(text.contains(expected), "{text}");
    // Without pods the family is left out.
    assert_no_line_starting(&render(sample()), "# HELP headroom_pod_start_time_seconds");
}

/// Three watches: pods relisted once after a 410 and failed during an outage; the
/// EndpointSlice watch has not finished its first list; the Endpoints fallback idles.
#[derive(Debug)]
struct Watches;

impl WatchHealthSource for Watches {
    fn watch_health(&self) -> Vec<WatchHealth> {
        vec![
            WatchHealth {
                resource: "pods",
                lists: 2,
                events: 14,
                errors: vec![("expired", 1), ("watch_failed", 3)],
                last_event_unix_seconds: Some(1_767_225_600.25),
                ready: Some(true),
                served: true,
            },
            WatchHealth {
                resource: "endpointslices",
                lists: 1,
                events: 0,
                errors: vec![("expired", 0), ("watch_failed", 0)],
                last_event_unix_seconds: None,
                ready: Some(false),
                served: true,
            },
            WatchHealth {
                resource: "endpoints",
                lists: 0,
                events: 0,
                errors: vec![("expired", 0), ("watch_failed", 0)],
                last_event_unix_seconds: None,
                ready: None,
                served: true,
            },
        ]
    }
}

fn render_with_watches() -> String {
    let mut metrics = Metrics::new(SharedSnapshot::new(sample()));
    metrics.register_watches(std::sync::Arc::new(Watches));
    metrics.encode_openmetrics()
}

#[test]
fn own_watches_by_resource_and_reason() {
    let text = render_with_watches();
    let expected = "\
# HELP headroom_collector_kube_lists Lists the collector's own watches made (the first, then one per 410 Gone), by resource.
# TYPE headroom_collector_kube_lists counter
headroom_collector_kube_lists_total{resource=\"pods\"} 2
headroom_collector_kube_lists_total{resource=\"endpointslices\"} 1
";
    assert!(text.contains(expected), "{text}");
    for line in [
        "headroom_collector_kube_events_total{resource=\"pods\"} 14",
        "headroom_collector_kube_events_total{resource=\"endpointslices\"} 0",
        "# TYPE headroom_collector_kube_watch_errors counter",
        "headroom_collector_kube_watch_errors_total{resource=\"pods\",reason=\"expired\"} 1",
        "headroom_collector_kube_watch_errors_total{resource=\"pods\",reason=\"watch_failed\"} 3",
        "headroom_collector_kube_watch_errors_total{resource=\"endpointslices\",reason=\"expired\"} 0",
        "# TYPE headroom_collector_kube_last_event_timestamp_seconds gauge",
        "# UNIT headroom_collector_kube_last_event_timestamp_seconds seconds",
        "headroom_collector_kube_last_event_timestamp_seconds{resource=\"pods\"} 1767225600.25",
        "# TYPE headroom_collector_kube_watch_ready gauge",
        "headroom_collector_kube_watch_ready{resource=\"pods\"} 1",
        "headroom_collector_kube_watch_ready{resource=\"endpointslices\"} 0",
        "headroom_collector_kube_api_served{resource=\"endpoints\"} 1",
    ] {
        assert_line(&text, line);
    }
    // An idle fallback has no readiness to report.
    assert_no_line_starting(
        &text,
        "headroom_collector_kube_watch_ready{resource=\"endpoints\"}",
    );
    // No event yet: no timestamp (not a misleading 0).
    assert_no_line_starting(
        &text,
        "headroom_collector_kube_last_event_timestamp_seconds{resource=\"endpointslices\"}",
    );
    // Standalone registers no watches, and shows none.
    assert_no_line_starting(&render(sample()), "# HELP headroom_collector_kube");
}

#[test]
fn promtool_check_metrics_accepts_the_watch_families() {
    let mut metrics = Metrics::new(SharedSnapshot::new(sample()));
    metrics.register_watches(std::sync::Arc::new(Watches));
    let text = metrics.encode_prometheus_text();
    assert!(
        text.contains("headroom_collector_kube_lists_total"),
        "{text}"
    );
    let (ok, complaints) = promtool(&["check", "metrics"], &text);
    assert!(ok, "promtool check metrics:\n{complaints}\non\n{text}");
}
