//! The four dimensions of control-plane load and a value per dimension.

use std::{fmt, ops};

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
/// Every field is required on the wire: a missing one is an error naming it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "jsonschema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
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

    /// The values in the order of [`Dimension::ALL`].
    pub fn from_array([a, b, c, d]: [f64; 4]) -> Self {
        Self {
            apiserver_requests_per_second: a,
            apiserver_received_bytes_per_second: b,
            apiserver_connections_per_second: c,
            dns_queries_per_second: d,
        }
    }

    pub fn to_array(self) -> [f64; 4] {
        Dimension::ALL.map(|d| self.get(d))
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
