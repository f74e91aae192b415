//! `check --apiserver-metrics FILE [--apiserver-metrics FILE] [--flowschemas FILE]`: the
//! API server's capacity per priority level for `apiserverRequestsPerSecond: auto`, offline.
//! Two scrapes give a window (rates, as the webhook measures them); one gives the
//! server's lifetime figures and in use from what executes at that moment.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::{
    capacity::{self, ApiserverCapacity, FlowSchema, Scrape},
    error::Error,
};

/// The FlowSchemas a kube-apiserver v1.20.2 creates by default (recorded from the real
/// server of `cargo xtask e2e`), for when `--flowschemas` is not given. Later releases
/// keep the same schemas for service accounts.
pub const DEFAULT_FLOW_SCHEMAS: &str =
    include_str!("../../tests/fixtures/apf/v1.20.2-flowschemas.json");
const DEFAULT_FLOW_SCHEMAS_NAME: &str = "the default FlowSchemas of kube-apiserver v1.20.2";

/// Reads one or two `/metrics` files and the FlowSchemas (`kubectl get flowschemas -o
/// yaml`; other kinds in the List are skipped) into the capacity a decision reads.
pub fn load(
    metrics: &[PathBuf],
    flow_schemas: Option<&Path>,
    target_utilization: f64,
) -> Result<ApiserverCapacity, Error> {
    let mut scrapes = metrics
        .iter()
        .map(|path| read_scrape(path))
        .collect::<Result<Vec<_>, _>>()?;
    scrapes.sort_by(|a, b| a.at.total_cmp(&b.at));
    let (levels, newest) = match scrapes.as_slice() {
        [one] => (capacity::capacity_at(one, target_utilization), one.at),
        [before, after] if after.at > before.at => (
            capacity::capacity(before, after, target_utilization),
            after.at,
        ),
        [_, _] => {
            return Err(Error::Parse {
                path: metrics[1].display().to_string(),
                message: "both --apiserver-metrics files were taken at the same time; give \
                          two scrapes some seconds apart, or one"
                    .to_owned(),
            });
        }
        _ => {
            return Err(Error::Parse {
                path: "--apiserver-metrics".to_owned(),
                message: "give one or two files (a scrape, or two scrapes of one server)"
                    .to_owned(),
            });
        }
    };
    let (name, text) = match flow_schemas {
        Some(path) => (path.display().to_string(), read(path)?),
        None => (
            DEFAULT_FLOW_SCHEMAS_NAME.to_owned(),
            DEFAULT_FLOW_SCHEMAS.to_owned(),
        ),
    };
    let source = metrics
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ");
    Ok(ApiserverCapacity {
        levels,
        flow_schemas: parse_flow_schemas(&name, &text)?,
        observed_at: SystemTime::UNIX_EPOCH + Duration::from_secs_f64(newest.max(0.0)),
        source: format!("{source} (one API server's /metrics)"),
    })
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// A scrape taken at the time its first line records (`… scraped at unix T`, as the
/// recorded fixtures carry), else at the file's modification time.
fn read_scrape(path: &Path) -> Result<Scrape, Error> {
    let text = read(path)?;
    let recorded = text
        .lines()
        .next()
        .filter(|l| l.starts_with('#'))
        .and_then(|l| l.split_once("scraped at unix "))
        .and_then(|(_, t)| t.trim().parse::<f64>().ok());
    let at = match recorded {
        Some(at) => at,
        None => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|source| Error::Read {
                path: path.to_owned(),
                source,
            })?
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64(),
    };
    capacity::apf::parse(&text, at).map_err(|e| Error::Parse {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The FlowSchemas of a List (YAML or JSON); items of other kinds are skipped.
pub fn parse_flow_schemas(name: &str, text: &str) -> Result<Vec<FlowSchema>, Error> {
    let list: serde_json::Value = serde_yaml::from_str(text).map_err(|e| Error::Parse {
        path: name.to_owned(),
        message: e.to_string(),
    })?;
    let items = list
        .get("items")
        .and_then(|i| i.as_array())
        .ok_or_else(|| Error::Parse {
            path: name.to_owned(),
            message: "expected a List (`kubectl get flowschemas -o yaml`) with `items`".to_owned(),
        })?;
    let schemas = items
        .iter()
        .filter(|item| item.get("kind").and_then(|k| k.as_str()) == Some("FlowSchema"))
        .map(|item| {
            serde_json::from_value::<FlowSchema>(item.clone()).map_err(|e| Error::Parse {
                path: name.to_owned(),
                message: format!("not a FlowSchema: {e}"),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if schemas.is_empty() {
        return Err(Error::Parse {
            path: name.to_owned(),
            message: "no FlowSchema in it (`kubectl get flowschemas -o yaml`)".to_owned(),
        });
    }
    Ok(schemas)
}
