use collector_ebpf::{EndpointKind, event};

use super::{
    Estimator, EstimatorConfig, Owner, Protocol,
    coalescing::{Headers, batch_unit, coalescing_unit, requests_in},
    fixture::{self, CGROUP, Ev, Fixture, TGID},
};

const OWNER: Owner = Owner {
    cgroup_id: CGROUP,
    tgid: TGID,
};

/// Every recorded fixture: name and text.
const FIXTURES: &[(&str, &str)] = &[
    (
        "kubectl-get-pods",
        include_str!("fixtures/kubectl-get-pods.tap"),
    ),
    (
        "kubectl-get-raw",
        include_str!("fixtures/kubectl-get-raw.tap"),
    ),
    ("kubectl-watch", include_str!("fixtures/kubectl-watch.tap")),
    (
        "curl-h1-keepalive",
        include_str!("fixtures/curl-h1-keepalive.tap"),
    ),
    (
        "curl-h1-keepalive-tls12",
        include_str!("fixtures/curl-h1-keepalive-tls12.tap"),
    ),
    (
        "curl-h1-conn-per-request",
        include_str!("fixtures/curl-h1-conn-per-request.tap"),
    ),
    (
        "curl-h2-parallel",
        include_str!("fixtures/curl-h2-parallel.tap"),
    ),
    (
        "curl-h2-parallel-tls12",
        include_str!("fixtures/curl-h2-parallel-tls12.tap"),
    ),
    (
        "rust-h2-concurrent",
        include_str!("fixtures/rust-h2-concurrent.tap"),
    ),
    (
        "rust-h2-concurrent-even-bundles",
        include_str!("fixtures/rust-h2-concurrent-even-bundles.tap"),
    ),
    (
        "rust-h2-concurrent-whole-windows",
        include_str!("fixtures/rust-h2-concurrent-whole-windows.tap"),
    ),
    (
        "rust-h2-concurrent-first-record-a-multiple",
        include_str!("fixtures/rust-h2-concurrent-first-record-a-multiple.tap"),
    ),
    (
        "rust-h2-concurrent-records-beyond",
        include_str!("fixtures/rust-h2-concurrent-records-beyond.tap"),
    ),
    (
        "rust-h2-kernel-settings-ack-coalesced",
        include_str!("fixtures/rust-h2-kernel-settings-ack-coalesced.tap"),
    ),
    ("curl-h1-watch", include_str!("fixtures/curl-h1-watch.tap")),
];

fn feed(est: &mut Estimator, ev: &Ev) {
    match ev {
        Ev::Connect(e) => est.on_connect(e),
        Ev::Segment(e) => est.on_segment(e),
        Ev::Close(e) => est.on_close(e),
    }
}

fn replay(fx: &Fixture) -> Estimator {
    let mut est = Estimator::default();
    for ev in &fx.events {
        feed(&mut est, ev);
    }
    let end = fx.events.last().map_or(0, Ev::ts_ns);
    est.tick(end + 10_000_000_000);
    est
}

/// |estimate − truth| ≤ 10 % of truth: the accuracy the collector promises per pattern.
fn within_10_percent(estimate: u64, truth: u64) -> bool {
    estimate.abs_diff(truth) * 10 <= truth
}

#[test]
fn every_fixture_within_10_percent_of_served_requests() {
    let mut failures = Vec::new();
    for (name, text) in FIXTURES {
        let fx = fixture::parse(text);
        let truth = fx.requests();
        assert!(truth > 0, "{name}: fixture has no requests");
        let est = replay(&fx);
        let estimate = est.owner(&OWNER).map_or(0, |t| t.requests);
        println!("{name}: served {truth}, estimated {estimate}");
        if !within_10_percent(estimate, truth) {
            failures.push(format!("{name}: served {truth}, estimated {estimate}"));
        }
    }
    assert!(failures.is_empty(), "outside 10 %: {failures:#?}");
}

#[test]
fn fixtures_end_with_nothing_open() {
    for (name, text) in FIXTURES {
        let fx = fixture::parse(text);
        let est = replay(&fx);
        let totals = est.owner(&OWNER).expect("owner tracked");
        assert_eq!(totals.connections_opened, fx.truth.len() as u64, "{name}");
        assert_eq!(totals.connections_open, 0, "{name}");
        assert_eq!(totals.open_streams, 0, "{name}");
        assert_eq!(est.stats().connections, 0, "{name}");
    }
}

/// A watch shows as an open stream while the server streams it (from a second after it
/// started — time to see the pushes — until it ends), and as closed after.
#[test]
fn watches_show_as_open_streams_while_open() {
    let mut checked = 0;
    for (name, text) in FIXTURES {
        let fx = fixture::parse(text);
        let watches: Vec<(u64, u64)> = fx
            .truth
            .iter()
            .flat_map(|t| {
                t.watches.iter().map(move |&(start, end)| {
                    // The server may notice the end after the close reached the kernel.
                    let end = match (end, t.closed_us) {
                        (Some(e), Some(c)) => e.min(c),
                        (e, c) => e.or(c).unwrap_or(start),
                    };
                    (start, end)
                })
            })
            .collect();
        let mut est = Estimator::default();
        let mut seen_open_late = vec![false; watches.len()];
        let mut max_streams = 0;
        for ev in &fx.events {
            feed(&mut est, ev);
            let ts = ev.ts_ns();
            let streams = est.owner(&OWNER).map_or(0, |t| t.open_streams);
            max_streams = max_streams.max(streams);
            for (i, &(start, end)) in watches.iter().enumerate() {
                let (start, end) = (fixture::us_to_ns(start), fixture::us_to_ns(end));
                // Well inside the watch: a second in, and before its end.
                if ts >= start + 1_000_000_000 && ts < end {
                    assert!(
                        streams >= 1,
                        "{name}: watch {i} open at {ts} but no open stream"
                    );
                    seen_open_late[i] = true;
                }
            }
        }
        for (i, seen) in seen_open_late.iter().enumerate() {
            let (start, end) = watches[i];
            if end > start + 1_500_000 {
                assert!(seen, "{name}: watch {i} never checked while open");
                checked += 1;
            }
        }
        if watches.is_empty() {
            assert_eq!(max_streams, 0, "{name}: a stream without any watch");
        }
        let end = fx.events.last().map_or(0, Ev::ts_ns);
        est.tick(end + 1);
        assert_eq!(est.owner(&OWNER).map_or(0, |t| t.open_streams), 0, "{name}");
    }
    assert!(checked >= 2, "only {checked} watches long enough to check");
}

// --- Synthetic sequences: one behaviour each --------------------------------------------

fn header(kind: u32, direction: u32, ts_ms: u64, cookie: u64) -> event::Header {
    event::Header {
        kind,
        direction,
        ts_ns: 1_000_000_000 + ts_ms * 1_000_000,
        cgroup_id: CGROUP,
        cookie,
        tgid: TGID,
        endpoint_kind: EndpointKind::ApiServer as u32,
    }
}

fn connect(ts_ms: u64, cookie: u64) -> event::Connect {
    event::Connect {
        header: header(event::CONNECT, 0, ts_ms, cookie),
        comm: *b"synthetic\0\0\0\0\0\0\0",
        protocol: 6,
        reserved: 0,
    }
}

fn segment(ts_ms: u64, cookie: u64, direction: u32, records: &[(u8, u16)]) -> event::Segment {
    let mut record = [event::Record::default(); event::MAX_RECORDS];
    for (slot, &(content_type, length)) in record.iter_mut().zip(records) {
        *slot = event::Record {
            content_type,
            reserved: 0,
            length,
        };
    }
    let shown = records.len().min(event::MAX_RECORDS);
    event::Segment {
        header: header(event::SEGMENT, direction, ts_ms, cookie),
        payload_len: records.iter().map(|&(_, l)| u32::from(l) + 5).sum(),
        records: shown as u32,
        records_beyond: (records.len() - shown) as u32,
        desync: 0,
        record,
    }
}

fn close(ts_ms: u64, cookie: u64) -> event::Close {
    event::Close {
        header: header(event::CLOSE, 0, ts_ms, cookie),
    }
}

const E: u32 = event::EGRESS;
const I: u32 = event::INGRESS;

/// TLS 1.3 handshake as curl/OpenSSL does it (SHA-384 Finished), then HTTP data.
fn tls13(est: &mut Estimator, cookie: u64) {
    est.on_connect(&connect(0, cookie));
    est.on_segment(&segment(1, cookie, E, &[(22, 512)]));
    est.on_segment(&segment(2, cookie, I, &[(22, 122), (20, 1), (23, 960)]));
    est.on_segment(&segment(3, cookie, E, &[(20, 1), (23, 69)]));
}

#[test]
fn tls12_learns_the_cipher_overhead_from_the_finished() {
    let mut est = Estimator::default();
    est.on_connect(&connect(0, 1));
    est.on_segment(&segment(1, 1, E, &[(22, 512)]));
    est.on_segment(&segment(2, 1, I, &[(22, 1009)]));
    // ChaCha20-Poly1305: overhead 16, so the Finished is 32 bytes.
    est.on_segment(&segment(3, 1, E, &[(22, 37), (20, 1), (22, 32)]));
    est.on_segment(&segment(4, 1, I, &[(20, 1), (22, 32)]));
    // 25 + 16: a 25-byte record only HTTP/2 sends (with GCM's 24 it would be 17, a PING).
    est.on_segment(&segment(5, 1, E, &[(23, 64 + 16), (23, 9 + 16)]));
    est.on_segment(&segment(6, 1, E, &[(23, 41)]));
    assert_eq!(est.connection(1).map(|c| c.protocol), Some(Protocol::Http2));
    est.on_close(&close(10, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(1));
}

#[test]
fn http2_preface_and_control_frames_are_not_requests() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    // Preface + SETTINGS(3) + WINDOW_UPDATE, then SETTINGS ack, WINDOW_UPDATEs, a PING
    // the server acks: no request among them.
    est.on_segment(&segment(4, 1, E, &[(23, 24 + 27 + 13 + 17)]));
    est.on_segment(&segment(5, 1, I, &[(23, 33 + 17)]));
    est.on_segment(&segment(
        6,
        1,
        E,
        &[(23, 9 + 17), (23, 13 + 17), (23, 26 + 17)],
    ));
    est.on_segment(&segment(7, 1, E, &[(23, 17 + 17)]));
    est.on_segment(&segment(8, 1, I, &[(23, 17 + 17)]));
    est.on_close(&close(3_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(0));
}

/// hyper writes the preface magic alone, and may write its SETTINGS ack into the record
/// of its first requests: then no other record is under 27 bytes, and more records than
/// may wait arrive before any is. The magic alone says HTTP/2.
#[test]
fn the_preface_magic_alone_means_http2() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 24 + 17)]));
    est.on_segment(&segment(4, 1, E, &[(23, 13 + 33 + 17)]));
    est.on_segment(&segment(5, 1, I, &[(23, 33 + 17)]));
    assert_eq!(est.connection(1).map(|c| c.protocol), Some(Protocol::Http2));
    // 10 requests, the first with 12 bytes of new literals, and the SETTINGS ack.
    // Then, as each response comes, one more request.
    est.on_segment(&segment(6, 1, E, &[(23, 10 * 36 + 12 + 9 + 17)]));
    for _ in 0..10 {
        est.on_segment(&segment(7, 1, I, &[(23, 8_212 + 17)]));
    }
    let max = est.config().max_pending as u64;
    for i in 0..2 * max {
        est.on_segment(&segment(10 + i, 1, E, &[(23, 36 + 17)]));
        est.on_segment(&segment(10 + i, 1, I, &[(23, 8_212 + 17)]));
    }
    est.on_close(&close(3_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(10 + 2 * max));
}

#[test]
fn a_17_byte_record_the_server_answers_with_data_is_a_request() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 70 + 17), (23, 9 + 17)]));
    est.on_segment(&segment(5, 1, E, &[(23, 17 + 17)]));
    est.on_segment(&segment(6, 1, I, &[(23, 300 + 17)]));
    est.on_close(&close(3_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(1));
}

#[test]
fn http1_counts_one_request_per_turn_even_with_a_split_body() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    // A POST whose body spans three records, then its response; then a GET.
    est.on_segment(&segment(4, 1, E, &[(23, 300), (23, 16_401)]));
    est.on_segment(&segment(5, 1, E, &[(23, 16_401), (23, 800)]));
    est.on_segment(&segment(6, 1, I, &[(23, 400)]));
    est.on_segment(&segment(7, 1, E, &[(23, 120)]));
    est.on_segment(&segment(8, 1, I, &[(23, 400)]));
    // HTTP/1.1 is decided once the window passes without an HTTP/2-only record.
    est.tick(1_000_000_000 + 2_000 * 1_000_000);
    assert_eq!(est.connection(1).map(|c| c.protocol), Some(Protocol::Http1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(2));
}

#[test]
fn coalesced_identical_headers_are_split_by_their_unit() {
    // hyper: 10 HEADERS in one record (the first with 12 bytes of new HPACK literals),
    // then 10 more, then single ones of 36 bytes.
    assert_eq!(
        coalescing_unit(&[372, 360, 360, 36, 36, 36, 144, 108]),
        Some(36)
    );
    // The same client when no request went alone (recorded in a live run).
    assert_eq!(coalescing_unit(&[372, 216, 72, 360, 324, 108]), Some(36));
    // Two records that merely share a divisor are not enough.
    assert_eq!(coalescing_unit(&[124, 248, 40]), None);
    // curl: alternating paths, one record each; 63 = 3 × 21 alone is a coincidence.
    assert_eq!(coalescing_unit(&[63, 21, 38, 21, 38, 21]), None);
    // Go discovery: varied sizes, none repeated.
    assert_eq!(coalescing_unit(&[124, 246, 32, 34, 130]), None);
}

/// Request records as hyper wrote them: the connection's first, then the rest.
fn hyper_records(first: u32, rest: &[u32]) -> Vec<Headers> {
    std::iter::once(Headers {
        plaintext: first,
        first: true,
    })
    .chain(rest.iter().map(|&plaintext| Headers {
        plaintext,
        first: false,
    }))
    .collect()
}

/// `n` response records of about `size` bytes, as the test server writes small responses.
fn alike_responses(n: u32, size: u32) -> Vec<u32> {
    (0..n).map(|i| size + (i % 3) * 12).collect()
}

/// From `fixtures/rust-h2-concurrent-even-bundles.tap`: 40 requests of 36 bytes in
/// bundles of 10 (the first with 12 bytes of new literals), 2, 10, 10 and 8. Every
/// bundle even, so sizes alone show 72; the 40 alike responses show 36.
#[test]
fn responses_decide_when_every_bundle_is_a_multiple_of_two_requests() {
    let records = hyper_records(372, &[72, 360, 360, 288]);
    let sizes: Vec<u32> = records.iter().map(|r| r.plaintext).collect();
    assert_eq!(coalescing_unit(&sizes), Some(72));
    let unit = batch_unit(&records, &alike_responses(40, 1322));
    assert_eq!(unit, Some(36));
    let total: u64 = records.iter().map(|&r| requests_in(r, 36)).sum();
    assert_eq!(total, 40);
}

/// From `fixtures/rust-h2-concurrent-whole-windows.tap`: every bundle a whole window of
/// 10. Sizes alone cannot tell 4 requests of 360 bytes from 40 of 36.
#[test]
fn responses_decide_when_every_bundle_is_a_whole_window() {
    let records = hyper_records(372, &[360, 360, 360]);
    assert_eq!(coalescing_unit(&[372, 360, 360, 360]), None);
    assert_eq!(batch_unit(&records, &alike_responses(41, 1322)), Some(36));
    // Four responses: four requests of 360 bytes (no split, however it is written).
    let four = batch_unit(&records, &alike_responses(4, 1322));
    let total: u64 = records
        .iter()
        .map(|&r| four.map_or(1, |unit| requests_in(r, unit)))
        .sum();
    assert_eq!(total, 4);
}

/// From `fixtures/rust-h2-concurrent-first-record-a-multiple.tap` (100 requests, 25 in
/// flight): the first record, 25 requests and 12 bytes of new literals, is 38 × 24, which
/// with 432 and 648 made 24 look like the unit. The first record is no witness.
#[test]
fn the_first_record_is_no_witness_of_a_unit() {
    let records = hyper_records(912, &[900, 612, 432, 648, 36, 36, 36]);
    let sizes: Vec<u32> = records.iter().map(|r| r.plaintext).collect();
    assert_eq!(coalescing_unit(&sizes), Some(24));
    assert_eq!(batch_unit(&records, &[]), Some(36));
    let total: u64 = records.iter().map(|&r| requests_in(r, 36)).sum();
    assert_eq!(total, 100);
}

/// Responses are evidence only when they look alike (one record each) and their number
/// fits a divisor within 10 %; otherwise what the sizes show stands.
#[test]
fn responses_that_do_not_fit_leave_the_sizes_unit() {
    let records = hyper_records(372, &[72, 360, 360, 288]);
    // Each response spread over a full record and a short one: not alike.
    let spread: Vec<u32> = (0..80)
        .map(|i| if i % 2 == 0 { 16_384 } else { 3_000 })
        .collect();
    assert_eq!(batch_unit(&records, &spread), Some(72));
    // Alike, but 31 of them: neither 20 (unit 72) nor 40 (unit 36) is within 10 %.
    assert_eq!(batch_unit(&records, &alike_responses(31, 1322)), Some(72));
    // Too few to go by.
    assert_eq!(batch_unit(&records, &alike_responses(3, 1322)), Some(72));
}

/// A kube-rs client starting different lists and watches at once: HEADERS of different
/// sizes share a record, and later requests differ too. No family of multiples, so
/// alike responses split nothing (one request per record: an undercount, never a guess).
#[test]
fn coalesced_different_requests_are_not_split_by_responses() {
    let records = hyper_records(251, &[44, 58, 61, 47, 52, 83]);
    assert_eq!(batch_unit(&records, &alike_responses(12, 900)), None);
}

/// The first record carries its requests plus fewer new HPACK literals than one request
/// (so it rounds down); a later bundle may carry a 9-byte SETTINGS ack or a 13-byte
/// WINDOW_UPDATE (so it rounds to nearest). Both seen in live taps.
#[test]
fn extra_bytes_beside_coalesced_requests_count_nothing() {
    let first = |plaintext| Headers {
        plaintext,
        first: true,
    };
    let later = |plaintext| Headers {
        plaintext,
        first: false,
    };
    assert_eq!(requests_in(first(10 * 36 + 12 + 9), 36), 10);
    assert_eq!(requests_in(first(48), 36), 1);
    assert_eq!(requests_in(later(10 * 36 + 9), 36), 10);
    assert_eq!(requests_in(later(4 * 36 + 13), 36), 4);
    assert_eq!(requests_in(later(20), 36), 1);
}

/// A batch after one that showed the unit (here begun because too many records waited)
/// keeps that unit when its records fit it: the responses since it began include those to
/// the requests still in flight from before, twice as many as its own here. Seen in a
/// kernel run (109 of 100).
#[test]
fn a_later_batch_keeps_the_unit_despite_responses_to_earlier_requests() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 24 + 17)]));
    est.on_segment(&segment(5, 1, E, &[(23, 33 + 13 + 17)]));
    est.on_segment(&segment(6, 1, E, &[(23, 9 + 17), (23, 372 + 17)]));
    for (ts, plaintext) in [(10, 36), (11, 36), (12, 180), (13, 108)] {
        est.on_segment(&segment(ts, 1, E, &[(23, plaintext + 17)]));
    }
    est.tick(1_000_000_000 + 1_100 * 1_000_000);
    assert_eq!(
        est.owner(&OWNER).map(|t| t.requests),
        Some(10 + 1 + 1 + 5 + 3)
    );
    // The batch's first request; then the ten requests still in flight from before are
    // answered; then the rest of its nine requests, each answered.
    est.on_segment(&segment(1_200, 1, E, &[(23, 36 + 17)]));
    for ts in 1_201..1_211 {
        est.on_segment(&segment(ts, 1, I, &[(23, 8_212 + 17)]));
    }
    est.on_segment(&segment(1_211, 1, I, &[(23, 8_212 + 17)]));
    for (ts, plaintext, answers) in [
        (1_212, 36, 1),
        (1_213, 180, 5),
        (1_214, 36, 1),
        (1_215, 36, 1),
    ] {
        est.on_segment(&segment(ts, 1, E, &[(23, plaintext + 17)]));
        for _ in 0..answers {
            est.on_segment(&segment(ts, 1, I, &[(23, 8_212 + 17)]));
        }
    }
    est.on_close(&close(3_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(20 + 9));
}

/// A unit a batch showed holds for the connection: a lone bundle a later batch sees is
/// split by it when it is an exact multiple, and anything else counts one.
#[test]
fn a_unit_shown_once_splits_later_exact_multiples() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 24 + 17)]));
    est.on_segment(&segment(5, 1, E, &[(23, 33 + 13 + 17)]));
    est.on_segment(&segment(6, 1, I, &[(23, 33 + 17)]));
    est.on_segment(&segment(7, 1, E, &[(23, 9 + 17), (23, 372 + 17)]));
    for (ts, plaintext) in [(20, 360), (30, 36), (40, 36), (50, 144), (60, 108)] {
        est.on_segment(&segment(ts, 1, E, &[(23, plaintext + 17)]));
    }
    est.tick(1_000_000_000 + 2_000 * 1_000_000);
    assert_eq!(
        est.owner(&OWNER).map(|t| t.requests),
        Some(10 + 10 + 1 + 1 + 4 + 3)
    );
    // Seconds later, alone in their batches: a window of 10, then a different request.
    est.on_segment(&segment(5_000, 1, E, &[(23, 360 + 17)]));
    est.on_segment(&segment(8_000, 1, E, &[(23, 130 + 17)]));
    est.on_close(&close(12_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(29 + 10 + 1));
}

#[test]
fn a_stream_opens_on_repeated_pushes_and_closes_with_the_connection() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 150)]));
    est.on_segment(&segment(5, 1, I, &[(23, 200)]));
    let mut ts = 5;
    for _ in 0..3 {
        ts += 500;
        est.on_segment(&segment(ts, 1, I, &[(23, 700)]));
    }
    assert_eq!(est.owner(&OWNER).map(|t| t.open_streams), Some(1));
    est.on_close(&close(ts + 10, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.open_streams), Some(0));
}

/// Found by the `tls_records` fuzz target: a connection that opened while the owner table
/// was full of busy owners was not counted as open; once its owner got a place, its stream
/// showed as open on no open connection. It is counted when its owner gets a place.
#[test]
fn a_connection_opened_while_the_owners_were_full_is_counted_once_its_owner_has_a_place() {
    let mut est = Estimator::new(EstimatorConfig {
        max_owners: 1,
        ..EstimatorConfig::default()
    });
    let other = Owner {
        cgroup_id: CGROUP + 1,
        tgid: TGID,
    };
    let of_other = |mut s: event::Segment| {
        s.header.cgroup_id = other.cgroup_id;
        s
    };
    tls13(&mut est, 1);
    // Seen mid-stream (no Connect) while OWNER, busy, holds the only place.
    est.on_segment(&of_other(segment(4, 2, E, &[(23, 150)])));
    assert_eq!(est.owner(&other), None);
    est.on_close(&close(5, 1));
    est.on_segment(&of_other(segment(6, 2, I, &[(23, 200)])));
    let mut ts = 6;
    for _ in 0..3 {
        ts += 500;
        est.on_segment(&of_other(segment(ts, 2, I, &[(23, 700)])));
    }
    let totals = est
        .owner(&other)
        .copied()
        .expect("the other owner has the place now");
    assert_eq!(
        (
            totals.connections_opened,
            totals.connections_open,
            totals.open_streams
        ),
        (1, 1, 1),
        "{totals:?}"
    );
    est.on_close(&close(ts + 10, 2));
    let totals = est.owner(&other).copied().expect("kept until idle");
    assert_eq!(
        (
            totals.connections_opened,
            totals.connections_open,
            totals.open_streams
        ),
        (1, 0, 0),
        "{totals:?}"
    );
}

/// Found by the `tls_records` fuzz target: an owner forgotten to make room took its
/// requests with it, so the sum the agent exports fell. Its last totals wait in
/// `drain_evicted` for the agent to carry on.
#[test]
fn an_owner_forgotten_to_make_room_hands_over_its_totals() {
    let mut est = Estimator::new(EstimatorConfig {
        max_owners: 1,
        ..EstimatorConfig::default()
    });
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 150)]));
    est.on_segment(&segment(5, 1, I, &[(23, 1200)]));
    est.on_close(&close(6, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(1));
    assert_eq!(est.drain_evicted().count(), 0);
    let mut other = connect(7, 2);
    other.header.cgroup_id = CGROUP + 1;
    est.on_connect(&other);
    assert_eq!(est.owner(&OWNER), None);
    let evicted: Vec<_> = est.drain_evicted().collect();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert_eq!((evicted[0].0, evicted[0].1.requests), (OWNER, 1));
    assert_eq!(est.drain_evicted().count(), 0, "drained once");
}

#[test]
fn request_response_traffic_is_no_stream() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    let mut ts = 3;
    for _ in 0..10 {
        ts += 300;
        est.on_segment(&segment(ts, 1, E, &[(23, 150)]));
        est.on_segment(&segment(ts + 1, 1, I, &[(23, 1200)]));
        est.on_segment(&segment(ts + 2, 1, I, &[(23, 1200)]));
    }
    assert_eq!(est.owner(&OWNER).map(|t| t.open_streams), Some(0));
    est.on_close(&close(ts + 10, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(10));
}

#[test]
fn connections_are_bounded_and_evictions_counted() {
    let mut est = Estimator::new(EstimatorConfig {
        max_connections: 4,
        ..EstimatorConfig::default()
    });
    for cookie in 0..10 {
        tls13(&mut est, cookie);
    }
    let stats = est.stats();
    assert_eq!(stats.connections, 4);
    assert_eq!(stats.evicted_connections, 6);
    // Evicted connections are closed for their owner.
    assert_eq!(est.owner(&OWNER).map(|t| t.connections_open), Some(4));
    assert_eq!(est.owner(&OWNER).map(|t| t.connections_opened), Some(10));
}

#[test]
fn a_forgotten_cgroup_leaves_nothing_and_its_late_segments_are_ignored() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 64 + 17)]));
    let mut other = connect(5, 2);
    other.header.cgroup_id = CGROUP + 1;
    est.on_connect(&other);
    est.forget_cgroup(CGROUP);
    assert!(est.owner(&OWNER).is_none());
    assert!(est.connection(1).is_none());
    assert_eq!(est.stats().connections, 1, "the other cgroup's stays");
    // A socket that outlived its cgroup: its segments do not bring the owner back.
    est.on_segment(&segment(6, 1, E, &[(23, 64 + 17)]));
    assert!(est.owner(&OWNER).is_none());
    assert_eq!(est.stats().late_segments, 1);
}

#[test]
fn owners_are_bounded_and_only_idle_ones_evicted() {
    let mut est = Estimator::new(EstimatorConfig {
        max_owners: 2,
        ..EstimatorConfig::default()
    });
    let open = |est: &mut Estimator, cookie: u64, tgid: u32| {
        let mut c = connect(cookie, cookie);
        c.header.tgid = tgid;
        est.on_connect(&c);
    };
    open(&mut est, 1, 1);
    open(&mut est, 2, 2);
    open(&mut est, 3, 3); // both owners busy: not tracked
    assert_eq!(est.owners().count(), 2);
    est.on_close(&close(5, 1));
    open(&mut est, 4, 4); // owner 1 is idle now: evicted
    assert_eq!(est.stats().evicted_owners, 1);
    assert!(
        est.owner(&Owner {
            cgroup_id: CGROUP,
            tgid: 4
        })
        .is_some()
    );
}

#[test]
fn per_connection_pending_records_are_bounded() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 9 + 17)])); // HTTP/2
    let max = est.config().max_pending as u64;
    for i in 0..(3 * max) {
        est.on_segment(&segment(5, 1, E, &[(23, 60 + (i % 7) as u16 * 10)]));
    }
    // Nothing waits beyond the bound: what was judged early is already counted.
    let counted = est.owner(&OWNER).map_or(0, |t| t.requests);
    assert!(counted >= 2 * max, "{counted} of {} judged", 3 * max);
}

#[test]
fn records_beyond_the_listed_ones_are_estimated_like_them() {
    let mut est = Estimator::default();
    tls13(&mut est, 1);
    est.on_segment(&segment(4, 1, E, &[(23, 64 + 17), (23, 9 + 17)]));
    // 16 HEADERS of alternating sizes in one segment: 12 listed, 4 beyond.
    let records: Vec<(u8, u16)> = (0..16).map(|i| (23, 40 + (i % 2) * 17)).collect();
    est.on_segment(&segment(5, 1, E, &records));
    est.on_close(&close(3_000, 1));
    assert_eq!(est.owner(&OWNER).map(|t| t.requests), Some(16));
}

#[test]
fn other_endpoint_kinds_are_ignored() {
    let mut est = Estimator::default();
    let mut c = connect(0, 1);
    c.header.endpoint_kind = EndpointKind::Dns as u32;
    est.on_connect(&c);
    assert_eq!(est.stats().connections, 0);
}

/// The kernel's segments need not match the server's reads: GRO/GSO merge them, MSS
/// splits them. The estimate must not depend on where segment boundaries fall.
#[test]
fn segmentation_does_not_change_the_estimate() {
    fn records_of(s: &event::Segment) -> Vec<event::Record> {
        s.record[..s.records as usize].to_vec()
    }
    fn with_records(base: &event::Segment, records: &[event::Record], len: u32) -> Ev {
        let mut seg = *base;
        seg.record = [event::Record::default(); event::MAX_RECORDS];
        let shown = records.len().min(event::MAX_RECORDS);
        seg.record[..shown].copy_from_slice(&records[..shown]);
        seg.records = shown as u32;
        seg.records_beyond = (records.len() - shown) as u32;
        seg.payload_len = len;
        Ev::Segment(seg)
    }
    // One segment per record (a record's tail rides in the next, header-less segment).
    let split = |events: &[Ev]| -> Vec<Ev> {
        events
            .iter()
            .flat_map(|ev| match ev {
                Ev::Segment(s) if s.records > 1 => records_of(s)
                    .iter()
                    .map(|r| with_records(s, std::slice::from_ref(r), u32::from(r.length) + 5))
                    .collect(),
                other => vec![*other],
            })
            .collect()
    };
    // Consecutive segments of one direction and connection within 2 ms merged into one.
    let merge = |events: &[Ev]| -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for ev in events {
            if let (Some(Ev::Segment(prev)), Ev::Segment(s)) = (out.last(), ev)
                && prev.header.cookie == s.header.cookie
                && prev.header.direction == s.header.direction
                && s.header.ts_ns - prev.header.ts_ns <= 2_000_000
            {
                let mut records = records_of(prev);
                records.extend(records_of(s));
                let merged = with_records(prev, &records, prev.payload_len + s.payload_len);
                *out.last_mut().expect("last") = merged;
                continue;
            }
            out.push(*ev);
        }
        out
    };
    for (name, text) in FIXTURES {
        let fx = fixture::parse(text);
        let truth = fx.requests();
        for (how, events) in [("split", split(&fx.events)), ("merged", merge(&fx.events))] {
            let mut est = Estimator::default();
            for ev in &events {
                feed(&mut est, ev);
            }
            est.tick(events.last().map_or(0, Ev::ts_ns) + 10_000_000_000);
            let estimate = est.owner(&OWNER).map_or(0, |t| t.requests);
            assert!(
                within_10_percent(estimate, truth),
                "{name} {how}: served {truth}, estimated {estimate}"
            );
        }
    }
}
