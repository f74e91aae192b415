//! The `ProfileList` document (`headroom.dev/v1alpha1`) as docs/profiles.md defines it,
//! and [`Load`], a rate in each of the four dimensions, with the arithmetic both binaries
//! do on it. Every field is required: a document missing one (an older or newer writer, a
//! renamed field) is rejected naming the field, never read as 0.
mod load;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use self::load::{Dimension, Load};

pub const API_VERSION: &str = "headroom.dev/v1alpha1";
pub const KIND: &str = "ProfileList";
/// The range of the 5-minute rates a profile is made of: a pod's steady figure is true
/// once it has been measured this long.
pub const RATE_WINDOW_SECONDS: u64 = 300;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "jsonschema", derive(schemars::JsonSchema))]
pub struct WorkloadRef {
    /// Empty for node processes.
    pub namespace: String,
    /// `Deployment`, `DaemonSet`, …, `Pod` for a bare pod, `node` for node processes.
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileItem {
    pub workload: WorkloadRef,
    /// The first app container's image; empty for node processes.
    pub image: String,
    /// Pods the figures rest on: those measured for a full rate window.
    pub pods: u64,
    pub minutes: u64,
    /// How long the workload's longest-measured pod has been sampled in the window; the
    /// figures are the rate window's own once this reaches it ([`RATE_WINDOW_SECONDS`]).
    pub measured_seconds: u64,
    pub steady: Load,
    pub startup: Load,
    pub current: Load,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileList {
    pub api_version: String,
    pub kind: String,
    pub node: String,
    /// RFC 3339, UTC, whole seconds.
    pub generated_at: String,
    pub window_seconds: u64,
    pub totals: Load,
    pub items: Vec<ProfileItem>,
}

/// Why a document is not a `ProfileList` this version reads; each names what to change.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "profiles {source_name}: apiVersion `{found_api_version}`, kind `{found_kind}`: expected \
         `{API_VERSION}` `{KIND}`"
    )]
    UnsupportedVersion {
        source_name: String,
        found_api_version: String,
        found_kind: String,
    },
    /// Not JSON, or a field missing or of the wrong type (serde's message names it).
    #[error("profiles {source_name}: not a {API_VERSION} {KIND}: {message}")]
    Malformed {
        source_name: String,
        message: String,
    },
    #[error("profiles {source_name}: {field}: {message}")]
    InvalidValue {
        source_name: String,
        field: String,
        message: String,
    },
}

/// Only the version fields, read first so that another version's document is named as
/// such rather than as a missing field.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

impl ProfileList {
    /// Parses and validates one `ProfileList` (JSON). `source_name` names the file or URL.
    pub fn parse(source_name: &str, bytes: &[u8]) -> Result<ProfileList, ProfileError> {
        let malformed = |e: serde_json::Error| ProfileError::Malformed {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        };
        let header: Header = serde_json::from_slice(bytes).map_err(malformed)?;
        if header.api_version != API_VERSION || header.kind != KIND {
            return Err(ProfileError::UnsupportedVersion {
                source_name: source_name.to_owned(),
                found_api_version: header.api_version,
                found_kind: header.kind,
            });
        }
        let list: ProfileList = serde_json::from_slice(bytes).map_err(malformed)?;
        list.validate(source_name)?;
        Ok(list)
    }

    /// Every rate finite and ≥ 0; the error names the first field that is not.
    pub fn validate(&self, source_name: &str) -> Result<(), ProfileError> {
        let invalid = |field: String, load: &Load| {
            load.invalid_dimension()
                .map(|d| ProfileError::InvalidValue {
                    source_name: source_name.to_owned(),
                    field: format!("{field}.{}", d.field()),
                    message: "must be a finite number ≥ 0".to_owned(),
                })
        };
        if self
            .generated_at
            .parse::<k8s_openapi::jiff::Timestamp>()
            .is_err()
        {
            return Err(ProfileError::InvalidValue {
                source_name: source_name.to_owned(),
                field: "generatedAt".to_owned(),
                message: format!(
                    "`{}` is not an RFC 3339 time (e.g. 2026-11-22T05:00:00Z)",
                    self.generated_at
                ),
            });
        }
        if let Some(e) = invalid("totals".to_owned(), &self.totals) {
            return Err(e);
        }
        for (i, item) in self.items.iter().enumerate() {
            for (name, load) in [
                ("steady", &item.steady),
                ("startup", &item.startup),
                ("current", &item.current),
            ] {
                if let Some(e) = invalid(format!("items[{i}].{name}"), load) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}
