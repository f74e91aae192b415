//! An API server's `/metrics` text → API Priority and Fairness figures per priority level
//! (what `check --apiserver-metrics` reads from a CI job's files and `serve --kube` reads
//! through the client; seeds: the recorded v1.20.2 scrapes in webhook/tests/fixtures/apf/).
//! The input is one scrape, or two separated by a form feed (a window). Properties: every
//! figure the model gives is finite and ≥ 0, and the headroom never exceeds the capacity
//! at the target utilization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webhook::capacity::{self, LevelCapacity, model};

const TARGET: f64 = 0.7;

fn check(levels: &std::collections::BTreeMap<String, LevelCapacity>) {
    for (name, level) in levels {
        let finite = |what: &str, v: f64| {
            assert!(v.is_finite() && v >= 0.0, "{name}: {what} = {v}");
        };
        finite("seats", level.seats);
        finite("in use", level.in_use);
        level
            .seat_seconds_per_request
            .map(|v| finite("seat-seconds", v));
        level.capacity.map(|v| finite("capacity", v));
        if let Some(headroom) = level.headroom {
            finite("headroom", headroom);
            let capacity = level.capacity.expect("headroom comes from a capacity");
            assert!(
                headroom <= capacity * TARGET + 1e-9 * capacity.max(1.0),
                "{name}: headroom {headroom} over capacity {capacity} × {TARGET}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut scrapes = text.splitn(2, '\u{c}');
    let first = scrapes.next().unwrap_or_default();
    let Ok(before) = capacity::apf::parse(first, 1_000.0) else {
        return;
    };
    check(&model::capacity_at(&before, TARGET));
    if let Some(second) = scrapes.next()
        && let Ok(after) = capacity::apf::parse(second, 1_060.0)
    {
        check(&capacity::capacity(&before, &after, TARGET));
    }
});
