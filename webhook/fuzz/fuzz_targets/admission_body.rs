//! AdmissionReview body → decision, from raw bytes (seeds: the recorded reviews in
//! `webhook/demo/reviews/`). Property: a body the webhook answers gets a well-formed
//! AdmissionReview with the request's uid; one it refuses gets a 400 message saying why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use webhook_fuzz::{assert_well_formed, state};

/// Just the uid, read as leniently as the webhook reads a body: serde_json does not check
/// the UTF-8 of strings it skips, so a full `Value` parse may refuse an answered body
/// (`webhook/tests/fuzz_regressions.rs`).
#[derive(Deserialize)]
struct Sent {
    request: Uid,
}

#[derive(Deserialize)]
struct Uid {
    uid: String,
}

fuzz_target!(|body: &[u8]| {
    match state().review(body) {
        Ok(out) => {
            let sent: Sent = serde_json::from_slice(body).expect("an answered body has a uid");
            assert_well_formed(&out, &sent.request.uid);
        }
        Err(bad) => assert!(!bad.0.is_empty(), "a 400 without a message"),
    }
});
