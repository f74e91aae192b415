//! Inputs the fuzz targets (`cargo xtask fuzz`, `webhook/fuzz/`) found, kept as ordinary
//! tests with the input in `fixtures/fuzz/`.

use std::path::PathBuf;

use serde_json::Value;
use webhook::{
    admission::{Budget, State},
    budget::ControlPlaneBudget,
    inventory::Inventory,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn state() -> State {
    let budget = ControlPlaneBudget::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/budget.yaml"),
    )
    .expect("fixture budget");
    State::new(Budget::from(budget), Inventory::uniform(5))
}

/// `admission_body`: a recorded review whose `userInfo.groups` holds bytes that are not
/// UTF-8. serde_json does not check strings it skips, so the webhook answers it (as it
/// should: the field is not its business); the answer must still carry the uid. The
/// harness had read the uid with a full JSON parse, which refuses the body.
#[test]
fn a_body_with_invalid_utf8_in_a_skipped_field_is_answered_with_its_uid() {
    let body = fixture("fuzz/admission-body-invalid-utf8-in-ignored-field.json");
    assert!(
        std::str::from_utf8(&body).is_err(),
        "the input is not UTF-8"
    );
    let out = state().review(&body).expect("answered, not a 400");
    let review: Value = serde_json::from_slice(&out).expect("the answer is JSON");
    assert_eq!(
        review["response"]["uid"],
        "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    );
    assert!(review["response"]["allowed"].is_boolean(), "{review}");
}
