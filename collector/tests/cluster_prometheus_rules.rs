//! The shipped recording rules (deploy/prometheus): valid for promtool, their unit
//! tests pass, and they record every name the webhook reads.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// Runs promtool (Debian's `prometheus` package) and returns its output; fails the
/// test with promtool's words when it fails.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e} (apt-get install prometheus)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn recorded_names() -> Vec<String> {
    let rules = std::fs::read_to_string(deploy().join("headroom-rules.yaml")).expect("the rules");
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", "headroom-rules.yaml"]);
    let count = recorded_names().len();
    assert!(
        out.contains(&format!("SUCCESS: {count} rules found")),
        "{out}"
    );
}

#[test]
fn rules_unit_tests_pass() {
    let out = promtool(&["test", "rules", "headroom-rules.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn rules_record_every_name_the_webhook_reads() {
    // The webhook's list of rule names lives in its doc comment, in backticks.
    let webhook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook/src/prometheus_rules.rs");
    let text = std::fs::read_to_string(&webhook).expect("webhook/src/prometheus_rules.rs");
    let wanted: Vec<&str> = text
        .split('`')
        .filter(|s| s.starts_with("headroom:") && !s.contains(' '))
        .collect();
    assert_eq!(wanted.len(), 19, "{wanted:?}");
    let recorded = recorded_names();
    for name in wanted {
        assert!(
            recorded.iter().any(|r| r == name),
            "the webhook reads {name}, which deploy/prometheus does not record"
        );
    }
}
