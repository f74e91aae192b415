//! `ControlPlaneBudget`: the cluster-scoped CRD, also loadable from a file.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    error::Error,
    load::{Dimension, Load},
};

pub const API_VERSION: &str = "headroom.dev/v1alpha1";

/// Annotation that lets a change through whatever its projection; its value is the reason.
pub const BREAK_GLASS_ANNOTATION: &str = "headroom.dev/break-glass";
/// Annotation with a declared per-pod profile (`{"steady": {...}, "startup": {...}}`),
/// used for an unmeasured workload when the budget sets `trustDeclared`.
pub const DECLARED_PROFILE_ANNOTATION: &str = "headroom.dev/declared-profile";

/// What to do with a change whose projection is over budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Deny the change.
    #[default]
    Enforce,
    /// Allow it with a warning to the client.
    Warn,
    /// Allow it silently; record an audit annotation and a metric.
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "Enforce",
            Mode::Warn => "Warn",
            Mode::Audit => "Audit",
        }
    }
}

/// A limit on API server requests/s: a number, or `auto` — the headroom of the API
/// Priority and Fairness level the workload's requests land in (`webhook::capacity`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RequestLimit {
    PerSecond(f64),
    Auto,
}

impl Serialize for RequestLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestLimit::PerSecond(v) => serializer.serialize_f64(*v),
            RequestLimit::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for RequestLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Word(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(v) => Ok(RequestLimit::PerSecond(v)),
            Raw::Word(w) if w == "auto" => Ok(RequestLimit::Auto),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "apiserverRequestsPerSecond must be a number or `auto`, found `{w}`"
            ))),
        }
    }
}

impl JsonSchema for RequestLimit {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RequestLimit".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Kubernetes' structural schemas allow a number-or-string field only as
        // int-or-string (as maxSurge is): requests/s as a whole number, or `auto`.
        schemars::json_schema!({
            "description": "Requests/s, or `auto`: the headroom of the API Priority and \
                            Fairness level the workload's requests land in.",
            "x-kubernetes-int-or-string": true,
        })
    }
}

/// Limits per dimension; a dimension without a limit is not checked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_requests_per_second: Option<RequestLimit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_received_bytes_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_connections_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_queries_per_second: Option<f64>,
    /// With `apiserverRequestsPerSecond: auto`: the share (0 < x ≤ 1) of a priority
    /// level's capacity that changes are admitted up to.
    #[serde(skip_serializing_if = "is_default_target")]
    pub target_utilization: f64,
    /// With `auto`: requests/s a named priority level may carry, instead of its measured
    /// capacity × targetUtilization (`{workload-low: 300}`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub priority_levels: BTreeMap<String, f64>,
}

fn is_default_target(value: &f64) -> bool {
    *value == crate::capacity::DEFAULT_TARGET_UTILIZATION
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            apiserver_requests_per_second: None,
            apiserver_received_bytes_per_second: None,
            apiserver_connections_per_second: None,
            dns_queries_per_second: None,
            target_utilization: crate::capacity::DEFAULT_TARGET_UTILIZATION,
            priority_levels: BTreeMap::new(),
        }
    }
}

impl Limits {
    /// The fixed limit of `dimension`; `None` when it has none or it is `auto`.
    pub fn get(&self, dimension: Dimension) -> Option<f64> {
        match dimension {
            Dimension::ApiserverRequests => match self.apiserver_requests_per_second? {
                RequestLimit::PerSecond(v) => Some(v),
                RequestLimit::Auto => None,
            },
            Dimension::ApiserverReceivedBytes => self.apiserver_received_bytes_per_second,
            Dimension::ApiserverConnections => self.apiserver_connections_per_second,
            Dimension::DnsQueries => self.dns_queries_per_second,
        }
    }

    /// Whether requests are judged against the API server's own capacity.
    pub fn requests_auto(&self) -> bool {
        self.apiserver_requests_per_second == Some(RequestLimit::Auto)
    }
}

/// A value per dimension, each optional: the status's headroom (none for a dimension
/// without a fixed limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct PerDimension {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_requests_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_received_bytes_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_connections_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_queries_per_second: Option<f64>,
}

impl PerDimension {
    pub fn set(&mut self, dimension: Dimension, value: Option<f64>) {
        match dimension {
            Dimension::ApiserverRequests => self.apiserver_requests_per_second = value,
            Dimension::ApiserverReceivedBytes => self.apiserver_received_bytes_per_second = value,
            Dimension::ApiserverConnections => self.apiserver_connections_per_second = value,
            Dimension::DnsQueries => self.dns_queries_per_second = value,
        }
    }
}

/// The budget the control plane can afford, and how the webhook enforces it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "headroom.dev",
    version = "v1alpha1",
    kind = "ControlPlaneBudget",
    shortname = "cpb",
    status = "ControlPlaneBudgetStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPlaneBudgetSpec {
    /// Enforce (deny), Warn (allow with a warning) or Audit (allow, record only).
    pub mode: Mode,
    /// Sustained load the control plane can take, per dimension.
    pub limits: Limits,
    /// How far above the limit a rollout's peak may go (≥ 1).
    pub burst_factor: f64,
    /// The largest fraction (0 < share ≤ 1) of each limit one workload's steady load may use.
    pub per_workload_share: f64,
    /// Pods an unmeasured workload may run before it has a profile.
    pub canary_size: u32,
    /// Namespaces whose changes are never evaluated.
    pub exempt_namespaces: Vec<String>,
    /// Whether a `headroom.dev/declared-profile` annotation may stand in for a measurement.
    pub trust_declared: bool,
    /// Profile data whose newest measurement is older than this is stale: changes are
    /// allowed with a warning (fail-open, reason `stale`). The default, 120 s, is a
    /// refresh (15 s) plus a scrape and rule interval (≤ 60 s) with room to spare.
    pub max_data_age_seconds: u64,
    /// The fraction of the inventory's nodes whose data must be in hand (0 ≤ x ≤ 1); below
    /// it the cluster total is undercounted, so changes are allowed with a warning
    /// (fail-open, reason `partial`).
    pub min_coverage: f64,
    /// How much of the rate window (seconds) a workload's profile must cover before it is
    /// trusted; a profile covering less is treated as unmeasured (the canary rule).
    pub min_measured_seconds: u64,
}

impl Default for ControlPlaneBudgetSpec {
    fn default() -> Self {
        ControlPlaneBudgetSpec {
            mode: Mode::Enforce,
            limits: Limits::default(),
            burst_factor: 1.5,
            per_workload_share: 0.5,
            canary_size: 3,
            exempt_namespaces: vec!["kube-system".to_owned()],
            trust_declared: false,
            max_data_age_seconds: 120,
            min_coverage: 0.9,
            min_measured_seconds: collector::schema::profiles::RATE_WINDOW_SECONDS,
        }
    }
}

/// Current use and headroom per dimension, and what the data covered, as last evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPlaneBudgetStatus {
    /// The measured cluster total per dimension.
    pub current: Load,
    /// Limit minus current, for each dimension with a fixed limit (negative: over budget).
    pub headroom: PerDimension,
    /// RFC 3339 time of the newest measurement the status was computed from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<String>,
    /// Seconds between that measurement and the status being written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_age_seconds: Option<u64>,
    /// The fraction of the inventory's nodes whose data was in hand (see `minCoverage`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coverage: Option<f64>,
    /// With `apiserverRequestsPerSecond: auto`: the API server's capacity per priority
    /// level, as last measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apiserver_capacity: Option<crate::capacity::ApiserverCapacityStatus>,
    /// Increases admitted by any replica that the measurements do not show yet; written
    /// by the webhook with a resourceVersion precondition.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reservations: Vec<crate::reservation::ReservationStatus>,
}

impl ControlPlaneBudgetStatus {
    pub fn compute(spec: &ControlPlaneBudgetSpec, current: Load) -> Self {
        let mut headroom = PerDimension::default();
        for d in Dimension::ALL {
            headroom.set(d, spec.limits.get(d).map(|limit| limit - current.get(d)));
        }
        ControlPlaneBudgetStatus {
            current,
            headroom,
            ..ControlPlaneBudgetStatus::default()
        }
    }
}

impl ControlPlaneBudgetSpec {
    /// Checks every field; the error names the field and the value it needs.
    pub fn validate(&self, path: &str) -> Result<(), Error> {
        let invalid = |field: &'static str, message: &str| Error::InvalidBudget {
            path: path.to_owned(),
            field,
            message: message.to_owned(),
        };
        if !self.burst_factor.is_finite() || self.burst_factor < 1.0 {
            return Err(invalid("spec.burstFactor", "must be a number ≥ 1"));
        }
        if !(self.per_workload_share > 0.0 && self.per_workload_share <= 1.0) {
            return Err(invalid("spec.perWorkloadShare", "must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_coverage) {
            return Err(invalid("spec.minCoverage", "must be in [0, 1]"));
        }
        for d in Dimension::ALL {
            if let Some(limit) = self.limits.get(d)
                && (!limit.is_finite() || limit < 0.0)
            {
                return Err(Error::InvalidBudget {
                    path: path.to_owned(),
                    field: "spec.limits",
                    message: format!("{} must be a finite number ≥ 0", d.field()),
                });
            }
        }
        if !(self.limits.target_utilization > 0.0 && self.limits.target_utilization <= 1.0) {
            return Err(invalid(
                "spec.limits.targetUtilization",
                "must be in (0, 1]",
            ));
        }
        for (level, limit) in &self.limits.priority_levels {
            if !limit.is_finite() || *limit < 0.0 {
                return Err(Error::InvalidBudget {
                    path: path.to_owned(),
                    field: "spec.limits.priorityLevels",
                    message: format!("{level} must be a finite number ≥ 0 (requests/s)"),
                });
            }
        }
        if Dimension::ALL.iter().all(|d| self.limits.get(*d).is_none())
            && !self.limits.requests_auto()
        {
            return Err(invalid(
                "spec.limits",
                "set at least one of apiserverRequestsPerSecond (a number or `auto`), \
                 apiserverReceivedBytesPerSecond, apiserverConnectionsPerSecond, \
                 dnsQueriesPerSecond",
            ));
        }
        Ok(())
    }
}

impl ControlPlaneBudget {
    /// Parses a `ControlPlaneBudget` from YAML or JSON and validates it.
    pub fn parse(path: &str, text: &str) -> Result<ControlPlaneBudget, Error> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let api_version = value.get("apiVersion").and_then(|v| v.as_str());
        let kind = value.get("kind").and_then(|v| v.as_str());
        if api_version != Some(API_VERSION) || kind != Some("ControlPlaneBudget") {
            return Err(Error::Parse {
                path: path.to_owned(),
                message: format!(
                    "expected apiVersion `{API_VERSION}` and kind `ControlPlaneBudget`, found \
                     `{}` `{}`",
                    api_version.unwrap_or("<none>"),
                    kind.unwrap_or("<none>")
                ),
            });
        }
        let budget: ControlPlaneBudget =
            serde_yaml::from_value(value).map_err(|e| Error::Parse {
                path: path.to_owned(),
                message: format!("not a valid ControlPlaneBudget: {e}"),
            })?;
        budget.spec.validate(path)?;
        Ok(budget)
    }

    /// Reads and parses a budget file.
    pub fn load(path: &std::path::Path) -> Result<ControlPlaneBudget, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&path.display().to_string(), &text)
    }
}

/// The CRD as YAML, as `headroom-webhook crd` prints it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&ControlPlaneBudget::crd())
}

#[cfg(test)]
mod tests;
