//! `webhook check` manifest parsing and evaluation: YAML or JSON text, multi-document
//! streams and `List`s (seeds: the workload fixtures under `webhook/tests/fixtures/` and the
//! recorded reviews, which `check` judges too).
//! Properties: every finding comes from a document that was read, its projected numbers
//! are finite and non-negative, a denial says why, and the exit code matches the findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook::check::{self, EXIT_ALLOWED, EXIT_BAD_INPUT, EXIT_DENIED};
use webhook_fuzz::{assert_finding, budget, inventory, snapshot};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut documents = Vec::new();
    if check::split_documents("fuzz.yaml", text, &mut documents).is_err() {
        return;
    }
    let Ok(report) = check::check(&documents, budget(), snapshot(), &inventory(), None) else {
        return;
    };
    for finding in &report.findings {
        assert!(
            documents.iter().any(|d| d.origin == finding.document),
            "finding for a document never read: {}",
            finding.document
        );
        assert_finding(finding);
    }
    let expected = if report.findings.is_empty() {
        EXIT_BAD_INPUT
    } else if report.findings.iter().all(|f| f.allowed) {
        EXIT_ALLOWED
    } else {
        EXIT_DENIED
    };
    assert_eq!(report.exit_code(), expected);
});
