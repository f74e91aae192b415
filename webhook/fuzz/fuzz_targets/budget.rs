//! `ControlPlaneBudget` decoding (YAML or JSON, as `--budget` files and the CRD carry it;
//! seed: `webhook/tests/fixtures/budget.yaml`). Properties: a budget that parses is valid
//! (limits finite and ≥ 0, burst factor ≥ 1, shares in range) and survives a round trip
//! through YAML unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook::{budget::ControlPlaneBudget, load::Dimension};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(budget) = ControlPlaneBudget::parse("fuzz.yaml", text) else {
        return;
    };
    let spec = &budget.spec;
    for d in Dimension::ALL {
        if let Some(limit) = spec.limits.get(d) {
            assert!(limit.is_finite() && limit >= 0.0, "{}: {limit}", d.field());
        }
    }
    assert!(spec.burst_factor.is_finite() && spec.burst_factor >= 1.0);
    assert!(spec.per_workload_share > 0.0 && spec.per_workload_share <= 1.0);
    assert!((0.0..=1.0).contains(&spec.min_coverage));
    let yaml = serde_yaml::to_string(&budget).expect("a parsed budget serialises");
    let again = ControlPlaneBudget::parse("round-trip.yaml", &yaml)
        .unwrap_or_else(|e| panic!("a parsed budget does not parse again: {e}\n{yaml}"));
    assert_eq!(again.spec, budget.spec, "{yaml}");
});
