//! Arbitrary objects inside a valid envelope: each recorded review (`webhook/demo/reviews/`)
//! with the input (any JSON value) as its object, as the object of an UPDATE whose old object
//! is the recorded one, and as the old object. Seeds: the recorded objects and the JSON
//! workload fixtures.
//!
//! Properties: every envelope is answered (an object the webhook cannot read is allowed and
//! counted, never a 400 — except a `null` object, which is a missing one) with a
//! well-formed AdmissionReview carrying the request's uid; the offline check of the same
//! review projects finite, non-negative numbers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use webhook::check::{self, Document};
use webhook_fuzz::{
    REVIEWS, assert_finding, assert_well_formed, budget, inventory, snapshot, state,
};

fuzz_target!(|data: &[u8]| {
    let Ok(object) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for recorded in REVIEWS {
        let review: Value = serde_json::from_str(recorded).expect("recorded review is JSON");
        for envelope in envelopes(&review, &object) {
            check_envelope(&envelope, &object);
        }
    }
});

/// The recorded review with `object` as its object, and as an UPDATE's new and old object.
fn envelopes(review: &Value, object: &Value) -> [Value; 3] {
    let recorded = review["request"]["object"].clone();
    let with = |operation: &str, new: &Value, old: Option<&Value>| {
        let mut r = review.clone();
        r["request"]["operation"] = operation.into();
        r["request"]["object"] = new.clone();
        if let Some(old) = old {
            r["request"]["oldObject"] = old.clone();
        }
        r
    };
    [
        with("CREATE", object, None),
        with("UPDATE", object, Some(&recorded)),
        with("UPDATE", &recorded, Some(object)),
    ]
}

fn check_envelope(envelope: &Value, object: &Value) {
    let body = serde_json::to_vec(envelope).expect("a Value serialises");
    let uid = envelope["request"]["uid"].as_str().expect("recorded uid");
    match state().review(&body) {
        Ok(out) => assert_well_formed(&out, uid),
        Err(bad) if envelope["request"]["object"].is_null() && object.is_null() => {
            assert!(bad.0.contains("missing"), "{}", bad.0);
        }
        Err(bad) => panic!("a valid envelope was refused: {}", bad.0),
    }
    let document = Document {
        origin: "fuzz".to_owned(),
        value: envelope.clone(),
    };
    if let Ok(report) = check::check(&[document], budget(), snapshot(), &inventory(), None) {
        report.findings.iter().for_each(assert_finding);
    }
}
