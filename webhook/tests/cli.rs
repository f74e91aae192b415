//! The real `headroom-webhook` binary on manifest files: exit codes and output.

mod support;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use support::{fixtures, temp_dir};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_headroom-webhook"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("the binary exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

fn check(manifest: &str, profiles: &str, nodes: &str, extra: &[&str]) -> Output {
    let budget = path("budget.yaml");
    let profiles = path(profiles);
    let mut args = vec![
        "check",
        "-f",
        manifest,
        "--budget",
        &budget,
        "--profiles",
        &profiles,
        "--nodes",
        nodes,
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

const WEB_AND_DB: &str = "apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 10
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: nginx, image: 'nginx:1.27'}]}
";

fn write(dir: &Path, name: &str, content: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write manifest");
    p.display().to_string()
}

#[test]
fn all_allowed_exits_0_with_a_table() {
    let dir = temp_dir("cli");
    let manifest = write(&dir, "app.yaml", WEB_AND_DB);
    let out = check(&manifest, "profiles-outage.json", "100", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("DOCUMENT"), "{stdout}");
    assert!(
        stdout.contains("app.yaml document 2  Deployment default/web  10    10      allowed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 workloads checked, 0 denied, 1 other documents skipped"),
        "{stdout}"
    );
}

#[test]
fn outage_daemonset_exits_1_with_numbers() {
    let out = check(
        &path("daemonset-agent.yaml"),
        "profiles-outage.json",
        "5000",
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("DaemonSet monitoring/agent  5000  5000    denied"),
        "{stdout}"
    );
    assert!(
        stdout.contains("apiserver received bytes/s steady 264.1 MiB > 200.0 MiB"),
        "{stdout}"
    );

    let ok = check(
        &path("daemonset-agent.yaml"),
        "profiles-node-scoped.json",
        "5000",
        &[],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
}

#[test]
fn json_output_is_machine_readable() {
    let out = check(
        &path("daemonset-agent.yaml"),
        "profiles-outage.json",
        "5000",
        &["--output", "json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let finding = &report["findings"][0];
    assert_eq!(finding["workload"], "DaemonSet monitoring/agent");
    assert_eq!(finding["result"], "denied");
    assert_eq!(finding["allowed"], false);
    assert_eq!(finding["pods"], 5000);
    // 20 MiB + 5000 × 50 KiB
    assert_eq!(
        finding["steady"]["apiserverReceivedBytesPerSecond"],
        20971520.0 + 5000.0 * 51200.0
    );
}

#[test]
fn stdin_and_directories() {
    let budget = path("budget.yaml");
    let profiles = path("profiles-outage.json");
    let out = run(
        &[
            "check",
            "-f",
            "-",
            "--budget",
            &budget,
            "--profiles",
            &profiles,
            "--nodes",
            "3",
        ],
        Some(WEB_AND_DB),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("<stdin> document 2"));

    let dir = temp_dir("cli-dir");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    write(&dir, "a.yaml", WEB_AND_DB);
    write(
        &dir.join("sub"),
        "b.yml",
        &std::fs::read_to_string(path("daemonset-agent.yaml")).unwrap(),
    );
    write(&dir, "notes.txt", "not a manifest");
    let out = check(
        &dir.display().to_string(),
        "profiles-outage.json",
        "5000",
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("2 workloads checked, 1 denied"), "{stdout}");
}

#[test]
fn nodes_file_counts_eligible_nodes() {
    let dir = temp_dir("cli-nodes");
    let nodes = write(
        &dir,
        "nodes.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {kind: Node, metadata: {name: a, labels: {kubernetes.io/os: linux}}}\n\
         - {kind: Node, metadata: {name: b, labels: {kubernetes.io/os: windows}}}\n",
    );
    let budget = path("budget.yaml");
    let profiles = path("profiles-outage.json");
    let manifest = path("daemonset-agent.yaml");
    let out = run(
        &[
            "check",
            "-f",
            &manifest,
            "--budget",
            &budget,
            "--profiles",
            &profiles,
            "--nodes-file",
            &nodes,
        ],
        None,
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("DaemonSet monitoring/agent  1     1       allowed"),
        "{stdout}"
    );
}

#[test]
fn bad_input_exits_2_naming_file_and_document() {
    let dir = temp_dir("cli-bad");
    let manifest = write(
        &dir,
        "broken.yaml",
        &format!(
            "{WEB_AND_DB}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\nspec: {{replicas: 2}}\n"
        ),
    );
    let out = check(&manifest, "profiles-outage.json", "3", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!("error: {manifest} document 3: missing field `spec.selector`")
    );

    let yaml = write(&dir, "bad.yaml", "kind: Deployment\nmetadata: [\n");
    let out = check(&yaml, "profiles-outage.json", "3", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("error: {yaml} document 1: ")),
        "{}",
        text(&out.stderr)
    );

    let out = check(
        &dir.join("missing.yaml").display().to_string(),
        "profiles-outage.json",
        "3",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("missing.yaml"),
        "{}",
        text(&out.stderr)
    );

    let bad_budget = write(
        &dir,
        "budget.yaml",
        "apiVersion: headroom.dev/v1alpha1\nkind: ControlPlaneBudget\nmetadata: {name: b}\nspec: {burstFactor: 0.5, limits: {dnsQueriesPerSecond: 1}}\n",
    );
    let profiles = path("profiles-outage.json");
    let out = run(
        &[
            "check",
            "-f",
            &manifest,
            "--budget",
            &bad_budget,
            "--profiles",
            &profiles,
            "--nodes",
            "3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("field `spec.burstFactor`: must be a number ≥ 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["check", "-f", "x.yaml"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--budget"),
        "{}",
        text(&out.stderr)
    );
    let budget = path("budget.yaml");
    let profiles = path("profiles-outage.json");
    let out = run(
        &[
            "check",
            "-f",
            "x.yaml",
            "--budget",
            &budget,
            "--profiles",
            &profiles,
            "--prometheus",
            "http://p",
            "--nodes",
            "1",
        ],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "profiles and prometheus are exclusive"
    );
    let out = run(
        &[
            "check",
            "-f",
            "x.yaml",
            "--budget",
            &budget,
            "--profiles",
            &profiles,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "a node inventory is required");
}

#[test]
fn crd_subcommand_prints_the_crd() {
    let out = run(&["crd"], None);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n")
    );
    assert!(stdout.contains("name: controlplanebudgets.headroom.dev"));
}

#[test]
fn serve_fails_fast_on_bad_flags_and_files() {
    let budget = path("budget.yaml");
    let out = run(
        &["serve", "--tls-cert", "c", "--tls-key", "k", "--nodes", "3"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "a budget or --kube is required");
    assert!(
        text(&out.stderr).contains("--budget"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        &[
            "serve",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--kube",
            "--nodes",
            "3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "--nodes conflicts with --kube");
    let dir = temp_dir("cli-serve");
    let cert = write(&dir, "tls.crt", "not a certificate");
    let key = write(&dir, "tls.key", "not a key");
    let out = run(
        &[
            "serve",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--budget",
            &budget,
            "--nodes",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "error: TLS certificate {cert}: no PEM certificate found"
        )),
        "{stderr}"
    );
}

fn demo_review(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo/reviews")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn admission_review_bodies_are_judged_like_the_webhook_does() {
    let out = check(
        &demo_review("daemonset-agent-create.json"),
        "profiles-outage.json",
        "5000",
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("DaemonSet monitoring/agent  5000  5000    denied"),
        "{stdout}"
    );

    let out = check(
        &demo_review("deployment-web-create.json"),
        "profiles-outage.json",
        "5000",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // An UPDATE of deployments/scale, 3 → 1000: judged against its oldObject.
    let out = check(
        &demo_review("deployment-web-scale-1000.json"),
        "profiles-outage.json",
        "100",
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("1000 pods, 997 starting at once"),
        "{stdout}"
    );
}

#[test]
fn nothing_to_judge_exits_2_with_the_reason() {
    let dir = temp_dir("cli-nothing");
    let service = write(
        &dir,
        "service.yaml",
        WEB_AND_DB.split("---").next().expect("first document"),
    );
    let out = check(&service, "profiles-outage.json", "3", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: nothing to check: no document is a workload headroom evaluates \
             ({service} document 1: kind Service). It evaluates apps/v1 Deployment"
        )),
        "{stderr}"
    );

    // A recorded review turned into a DELETE adds no load: nothing judged either.
    let mut review: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo_review("deployment-web-create.json")).expect("review"),
    )
    .expect("JSON");
    review["request"]["operation"] = "DELETE".into();
    review["request"]["oldObject"] = review["request"]["object"].take();
    let delete = write(&dir, "delete.json", &review.to_string());
    let out = check(&delete, "profiles-outage.json", "3", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!("{delete} document 1: AdmissionReview DELETE")),
        "{}",
        text(&out.stderr)
    );

    // …and a review of a kind headroom does not evaluate.
    review["request"]["operation"] = "CREATE".into();
    review["request"]["kind"] = serde_json::json!({"group": "", "version": "v1", "kind": "Pod"});
    let pod = write(&dir, "pod.json", &review.to_string());
    let out = check(&pod, "profiles-outage.json", "3", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("AdmissionReview of kind core/v1 Pod"),
        "{}",
        text(&out.stderr)
    );
}

/// `limits.apiserverRequestsPerSecond: auto` offline: a real kube-apiserver v1.20.2's
/// /metrics, scraped before and after 600 LISTs (tests/fixtures/apf/), and its default
/// FlowSchemas, which put default/default in workload-low.
#[test]
fn auto_requests_are_judged_against_the_priority_level_from_metrics_files() {
    let dir = temp_dir("cli-auto");
    let budget = std::fs::read_to_string(fixtures().join("budget.yaml"))
        .expect("budget fixture")
        .replace(
            "apiserverRequestsPerSecond: 2000",
            "apiserverRequestsPerSecond: auto\n    priorityLevels: {workload-low: 300}",
        );
    let budget = write(&dir, "budget.yaml", &budget);
    let manifest = write(
        &dir,
        "web.yaml",
        &WEB_AND_DB.replace("replicas: 10", "replicas: 20"),
    );
    let (before, after) = (
        path("apf/v1.20.2-before-load.prom"),
        path("apf/v1.20.2-after-600-lists.prom"),
    );
    let profiles = path("profiles-outage.json");
    let base = [
        "check",
        "-f",
        &manifest,
        "--budget",
        &budget,
        "--profiles",
        &profiles,
        "--nodes",
        "3",
    ];
    let with_metrics = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        run(&args, None)
    };
    // The files in either order: the window is between their recorded scrape times.
    let out = with_metrics(&[
        "--apiserver-metrics",
        &after,
        "--apiserver-metrics",
        &before,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    for part in [
        "apiserver requests/s peak 367 > 300 (workload-low's limit)",
        "Priority level workload-low (FlowSchema service-accounts, serviceaccount \
         default/default): limit 300 req/s (priorityLevels), in use 133, this change adds 234 \
         at peak.",
        "replicas ≤ 14",
    ] {
        assert!(stdout.contains(part), "{part} not in {stdout}");
    }

    let out = with_metrics(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("apiserverRequestsPerSecond is `auto`: give the API server's metrics with --apiserver-metrics FILE"),
        "{}",
        text(&out.stderr)
    );
    let out = with_metrics(&["--apiserver-metrics", &profiles]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("API Priority and Fairness is off"),
        "{}",
        text(&out.stderr)
    );
    // FlowSchemas given: a List as `kubectl get flowschemas,prioritylevelconfigurations
    // -o yaml` prints it (other kinds skipped); without one for service accounts the
    // change is not judged (fail-open), and says why.
    let schemas = write(
        &dir,
        "flowschemas.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: flowcontrol.apiserver.k8s.io/v1beta1\n  \
         kind: PriorityLevelConfiguration\n  metadata: {name: x}\n  spec: {type: Exempt}\n- \
         apiVersion: flowcontrol.apiserver.k8s.io/v1beta1\n  kind: FlowSchema\n  metadata: \
         {name: masters}\n  spec:\n    matchingPrecedence: 1\n    priorityLevelConfiguration: \
         {name: exempt}\n    rules: [{subjects: [{kind: Group, group: {name: system:masters}}]}]\n",
    );
    let out = with_metrics(&["--apiserver-metrics", &after, "--flowschemas", &schemas]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("fail_open")
            && stdout.contains("no FlowSchema takes serviceaccount default/default"),
        "{stdout}"
    );
}
