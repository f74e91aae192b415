//! The four dimensions of control-plane load and a value per dimension.

use std::{fmt, ops};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One dimension of control-plane load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    ApiserverRequests,
    ApiserverReceivedBytes,
    ApiserverConnections,
    DnsQueries,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [
        Dimension::ApiserverRequests,
        Dimension::ApiserverReceivedBytes,
        Dimension::ApiserverConnections,
        Dimension::DnsQueries,
    ];

    /// Short name used in messages and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::ApiserverRequests => "apiserver requests/s",
            Dimension::ApiserverReceivedBytes => "apiserver received bytes/s",
            Dimension::ApiserverConnections => "apiserver new connections/s",
            Dimension::DnsQueries => "DNS queries/s",
        }
    }

    /// The field name in profiles and budgets.
    pub fn field(self) -> &'static str {
        match self {
            Dimension::ApiserverRequests => "apiserverRequestsPerSecond",
            Dimension::ApiserverReceivedBytes => "apiserverReceivedBytesPerSecond",
            Dimension::ApiserverConnections => "apiserverConnectionsPerSecond",
            Dimension::DnsQueries => "dnsQueriesPerSecond",
        }
    }

    /// Formats a value of this dimension for a human: bytes get binary units.
    pub fn format(self, value: f64) -> String {
        match self {
            Dimension::ApiserverReceivedBytes => format_bytes(value),
            _ => format_number(value),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn format_number(value: f64) -> String {
    if value.abs() >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

fn format_bytes(value: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut scaled = value;
    let mut unit = 0;
    while scaled.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{scaled:.0} B")
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

/// A value per dimension: a rate (per second) of each kind of control-plane load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Load {
    pub apiserver_requests_per_second: f64,
    pub apiserver_received_bytes_per_second: f64,
    pub apiserver_connections_per_second: f64,
    pub dns_queries_per_second: f64,
}

impl Load {
    pub const ZERO: Load = Load {
        apiserver_requests_per_second: 0.0,
        apiserver_received_bytes_per_second: 0.0,
        apiserver_connections_per_second: 0.0,
        dns_queries_per_second: 0.0,
    };

    pub fn get(&self, dimension: Dimension) -> f64 {
        match dimension {
            Dimension::ApiserverRequests => self.apiserver_requests_per_second,
            Dimension::ApiserverReceivedBytes => self.apiserver_received_bytes_per_second,
            Dimension::ApiserverConnections => self.apiserver_connections_per_second,
            Dimension::DnsQueries => self.dns_queries_per_second,
        }
    }

    pub fn set(&mut self, dimension: Dimension, value: f64) {
        match dimension {
            Dimension::ApiserverRequests => self.apiserver_requests_per_second = value,
            Dimension::ApiserverReceivedBytes => self.apiserver_received_bytes_per_second = value,
            Dimension::ApiserverConnections => self.apiserver_connections_per_second = value,
            Dimension::DnsQueries => self.dns_queries_per_second = value,
        }
    }

    /// Applies `f` to every dimension.
    pub fn map(self, mut f: impl FnMut(Dimension, f64) -> f64) -> Load {
        let mut out = Load::ZERO;
        for d in Dimension::ALL {
            out.set(d, f(d, self.get(d)));
        }
        out
    }

    /// Per-dimension maximum.
    pub fn max(self, other: Load) -> Load {
        self.map(|d, v| v.max(other.get(d)))
    }

    /// Negative values (a share larger than the measured total) become zero.
    pub fn clamp_non_negative(self) -> Load {
        self.map(|_, v| v.max(0.0))
    }

    /// The first dimension whose value is negative or not finite.
    pub fn invalid_dimension(&self) -> Option<Dimension> {
        Dimension::ALL
            .into_iter()
            .find(|d| !self.get(*d).is_finite() || self.get(*d) < 0.0)
    }
}

impl ops::Add for Load {
    type Output = Load;
    fn add(self, rhs: Load) -> Load {
        self.map(|d, v| v + rhs.get(d))
    }
}

impl ops::AddAssign for Load {
    fn add_assign(&mut self, rhs: Load) {
        *self = *self + rhs;
    }
}

impl ops::Sub for Load {
    type Output = Load;
    fn sub(self, rhs: Load) -> Load {
        self.map(|d, v| v - rhs.get(d))
    }
}

impl ops::Mul<f64> for Load {
    type Output = Load;
    fn mul(self, rhs: f64) -> Load {
        self.map(|_, v| v * rhs)
    }
}

#[cfg(test)]
mod tests {
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
        let partial: Load = serde_json::from_str(r#"{"dnsQueriesPerSecond": 5}"#).unwrap();
        assert_eq!(partial, load(0.0, 0.0, 0.0, 5.0));
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
}
