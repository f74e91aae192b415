use super::*;

fn load(a: f64, b: f64, c: f64, d: f64) -> Load {
    Load {
        apiserver_requests_per_second: a,
        apiserver_received_bytes_per_second: b,
        apiserver_connections_per_second: c,
        dns_queries_per_second: d,
    }
}

#[test]
fn arithmetic_is_per_dimension() {
    let x = load(1.0, 2.0, 3.0, 4.0);
    let y = load(0.5, 4.0, 1.0, 10.0);
    assert_eq!(x + y, load(1.5, 6.0, 4.0, 14.0));
    assert_eq!(x - y, load(0.5, -2.0, 2.0, -6.0));
    assert_eq!(x * 2.0, load(2.0, 4.0, 6.0, 8.0));
    assert_eq!(x.max(y), load(1.0, 4.0, 3.0, 10.0));
    assert_eq!((x - y).clamp_non_negative(), load(0.5, 0.0, 2.0, 0.0));
}

#[test]
fn get_and_set_address_the_same_field() {
    for d in Dimension::ALL {
        let mut l = Load::ZERO;
        l.set(d, 7.0);
        assert_eq!(l.get(d), 7.0);
        assert_eq!(Dimension::ALL.iter().map(|x| l.get(*x)).sum::<f64>(), 7.0);
    }
}

#[test]
fn serde_uses_profile_field_names() {
    let json = serde_json::to_value(load(1.0, 2.0, 3.0, 4.0)).unwrap();
    for (i, d) in Dimension::ALL.into_iter().enumerate() {
        assert_eq!(json[d.field()], serde_json::json!((i + 1) as f64), "{d}");
    }
    let err = serde_json::from_str::<Load>(r#"{"dnsQueriesPerSecond": 5}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing field `apiserverRequestsPerSecond`"),
        "{err}"
    );
}

#[test]
fn invalid_values_are_found() {
    assert_eq!(load(1.0, 2.0, 3.0, 4.0).invalid_dimension(), None);
    assert_eq!(
        load(1.0, -2.0, 3.0, 4.0).invalid_dimension(),
        Some(Dimension::ApiserverReceivedBytes)
    );
    assert_eq!(
        load(1.0, 2.0, 3.0, f64::NAN).invalid_dimension(),
        Some(Dimension::DnsQueries)
    );
}

#[test]
fn formatting_is_readable() {
    assert_eq!(Dimension::ApiserverReceivedBytes.format(512.0), "512 B");
    assert_eq!(
        Dimension::ApiserverReceivedBytes.format(3.0 * 1024.0 * 1024.0),
        "3.0 MiB"
    );
    assert_eq!(Dimension::ApiserverRequests.format(1234.4), "1234");
    assert_eq!(Dimension::ApiserverRequests.format(2.26), "2.3");
    assert_eq!(Dimension::ApiserverConnections.format(0.0125), "0.013");
    assert_eq!(Dimension::DnsQueries.format(40.0), "40");
}

const EXAMPLE: &str = include_str!("../../../../webhook/tests/fixtures/profiles-outage.json");

#[test]
fn parses_a_complete_document() {
    let list = ProfileList::parse("example", EXAMPLE.as_bytes()).unwrap();
    assert_eq!(list.node, "node-a");
    assert_eq!(list.totals.apiserver_requests_per_second, 500.0);
}

#[test]
fn another_version_is_named_as_such() {
    let text = EXAMPLE.replace("headroom.dev/v1alpha1", "headroom.dev/v2");
    let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
    assert!(
        matches!(err, ProfileError::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("`headroom.dev/v2`"), "{err}");
    let text = EXAMPLE.replace("\"ProfileList\"", "\"PodList\"");
    let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("kind `PodList`"), "{err}");
}

#[test]
fn a_missing_or_renamed_field_is_an_error_naming_it() {
    for (field, renamed) in [
        ("\"windowSeconds\"", "\"windowSecs\""),
        ("\"minutes\"", "\"minutesMeasured\""),
        ("\"dnsQueriesPerSecond\"", "\"dnsQueriesPerSec\""),
        ("\"namespace\"", "\"ns\""),
    ] {
        let text = EXAMPLE.replacen(field, renamed, 1);
        let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
        assert!(matches!(err, ProfileError::Malformed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("missing field `{}`", field.trim_matches('"'))),
            "{err}"
        );
    }
}

#[test]
fn negative_or_non_finite_rates_name_the_field() {
    let text = EXAMPLE.replacen(
        "\"dnsQueriesPerSecond\": 3000",
        "\"dnsQueriesPerSecond\": -1",
        1,
    );
    let err = ProfileList::parse("p.json", text.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "profiles p.json: totals.dnsQueriesPerSecond: must be a finite number ≥ 0"
    );
}
