//! Profile decoding (`ProfileList`, what collectors serve and the webhook polls; seeds:
//! the profile fixtures under `webhook/tests/`). Properties: a list that parses has every
//! rate finite and ≥ 0; merged with itself (two nodes reporting the same), its totals and
//! per-pod figures stay so; and the recorded workloads checked against it project finite,
//! non-negative numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook::{
    check::{self, Document},
    profile::{ProfileList, Snapshot},
};
use webhook_fuzz::{REVIEWS, assert_finding, assert_load, budget, inventory};

fuzz_target!(|data: &[u8]| {
    let Ok(list) = ProfileList::parse("fuzz.json", data) else {
        return;
    };
    let merged = Snapshot::merge([&list, &list]);
    assert_load(&merged.totals, "totals");
    for (workload, item) in &merged.workloads {
        assert_load(&item.steady, &format!("{workload} steady"));
        assert_load(&item.startup, &format!("{workload} startup"));
        assert_load(&item.current, &format!("{workload} current"));
    }
    let snapshot = Snapshot {
        nodes: None,
        ..merged
    };
    let documents: Vec<Document> = REVIEWS
        .iter()
        .map(|r| Document {
            origin: "recorded review".to_owned(),
            value: serde_json::from_str(r).expect("recorded review is JSON"),
        })
        .collect();
    if let Ok(report) = check::check(&documents, budget(), &snapshot, &inventory(), None) {
        report.findings.iter().for_each(assert_finding);
    }
});
