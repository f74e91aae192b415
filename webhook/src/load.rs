//! The four dimensions of control-plane load and a value per dimension: the collector's
//! wire type ([`collector::schema::profiles::Load`]), one definition for both binaries.

pub use collector::schema::profiles::{Dimension, Load};
use serde::{Deserialize, Deserializer};

/// Reads a [`Load`] in which an absent dimension is 0: for a declared profile, which a
/// person writes naming only what the workload uses. Never for measured data.
pub fn deserialize_partial<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Load, D::Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase", default, deny_unknown_fields)]
    #[derive(Default)]
    struct Partial {
        apiserver_requests_per_second: f64,
        apiserver_received_bytes_per_second: f64,
        apiserver_connections_per_second: f64,
        dns_queries_per_second: f64,
    }
    let p = Partial::deserialize(deserializer)?;
    Ok(Load {
        apiserver_requests_per_second: p.apiserver_requests_per_second,
        apiserver_received_bytes_per_second: p.apiserver_received_bytes_per_second,
        apiserver_connections_per_second: p.apiserver_connections_per_second,
        dns_queries_per_second: p.dns_queries_per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Declared {
        #[serde(deserialize_with = "deserialize_partial")]
        steady: Load,
    }

    #[test]
    fn a_declared_load_may_name_some_dimensions_but_no_unknown_one() {
        let d: Declared =
            serde_json::from_str(r#"{"steady": {"dnsQueriesPerSecond": 5}}"#).expect("partial");
        assert_eq!(d.steady, Load::from_array([0.0, 0.0, 0.0, 5.0]));
        let err = serde_json::from_str::<Declared>(r#"{"steady": {"dnsQueries": 5}}"#)
            .err()
            .expect("a misspelt dimension is an error");
        assert!(
            err.to_string().contains("unknown field `dnsQueries`"),
            "{err}"
        );
    }
}
