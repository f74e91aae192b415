//! AdmissionReview body → decision, from raw bytes (seeds: the recorded reviews in
//! `webhook/demo/reviews/`). Property: a body the webhook answers gets a well-formed
//! AdmissionReview with the request's uid; one it refuses gets a 400 message saying why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook_fuzz::{assert_well_formed, state};

fuzz_target!(|body: &[u8]| {
    match state().review(body) {
        Ok(out) => {
            let sent: serde_json::Value =
                serde_json::from_slice(body).expect("an answered body is JSON");
            let uid = sent["request"]["uid"]
                .as_str()
                .expect("an answered body has a uid");
            assert_well_formed(&out, uid);
        }
        Err(bad) => assert!(!bad.0.is_empty(), "a 400 without a message"),
    }
});
