//! Profiles and cluster totals from the Prometheus HTTP API (`/api/v1/query`), through the
//! recording rules in [`crate::prometheus_rules`].

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use serde::Deserialize;

use crate::{
    error::Error,
    http_client,
    load::{Dimension, Load},
    profile::{ProfileItem, Snapshot, WorkloadRef},
    prometheus_rules as rules,
};

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
    /// `[unix time, "value"]`
    value: (f64, String),
}

/// One sample of an instant vector: its labels and value.
pub type LabeledValue = (HashMap<String, String>, f64);

/// Runs one instant query and returns (labels, value) pairs.
pub async fn query(base: &str, promql: &str) -> Result<Vec<LabeledValue>, Error> {
    let base = base.trim_end_matches('/');
    let url = format!(
        "{base}/api/v1/query?query={}",
        http_client::encode_query_value(promql)
    );
    let fail = |message: String| Error::Prometheus {
        url: base.to_owned(),
        query: promql.to_owned(),
        message,
    };
    let body = http_client::get(&url, super::FETCH_TIMEOUT)
        .await
        .map_err(|e| fail(e.to_string()))?;
    parse_response(&body).map_err(fail)
}

pub(crate) fn parse_response(body: &[u8]) -> Result<Vec<LabeledValue>, String> {
    let response: Response =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus API response: {e}"))?;
    if response.status != "success" {
        return Err(format!("status {}: {}", response.status, response.error));
    }
    let data = response.data.ok_or("response has no data")?;
    if data.result_type != "vector" {
        return Err(format!("expected a vector, got {}", data.result_type));
    }
    data.result
        .into_iter()
        .map(|s| {
            let value: f64 = s
                .value
                .1
                .parse()
                .map_err(|_| format!("value `{}` is not a number", s.value.1))?;
            Ok((
                s.metric,
                if value.is_finite() {
                    value.max(0.0)
                } else {
                    0.0
                },
            ))
        })
        .collect()
}

fn workload_of(labels: &HashMap<String, String>) -> Option<WorkloadRef> {
    Some(WorkloadRef {
        namespace: labels
            .get(rules::LABEL_NAMESPACE)
            .cloned()
            .unwrap_or_default(),
        kind: labels.get(rules::LABEL_KIND)?.clone(),
        name: labels.get(rules::LABEL_WORKLOAD)?.clone(),
    })
}

/// Per collector (`instance`: the node's name where the shipped PodMonitor scrapes it),
/// the time of its newest scraped sample. Not a recording rule: `timestamp()` of a raw
/// series is the scrape's time, which a rule's output would replace with its own.
pub const COLLECTOR_SCRAPES: &str = "max by (instance) (timestamp(headroom_collector_build_info))";

/// The collectors Prometheus holds fresh samples of, and when each was last scraped.
async fn scraped_nodes(base: &str) -> Result<BTreeMap<String, SystemTime>, Error> {
    Ok(query(base, COLLECTOR_SCRAPES)
        .await?
        .into_iter()
        .map(|(labels, at)| {
            let instance = labels.get("instance").cloned().unwrap_or_default();
            let at = Duration::try_from_secs_f64(at).unwrap_or_default();
            (instance, SystemTime::UNIX_EPOCH + at)
        })
        .collect())
}

/// Reads every rule and builds the snapshot. An empty answer where there must be data
/// (no collector scraped, no cluster total) is missing data, never zero load.
pub async fn fetch(base: &str) -> Result<Snapshot, Error> {
    let mut snapshot = Snapshot {
        nodes: Some(scraped_nodes(base).await?),
        ..Snapshot::default()
    };
    let mut missing = Vec::new();
    if snapshot.nodes.as_ref().is_some_and(BTreeMap::is_empty) {
        missing.push("headroom_collector_build_info".to_owned());
    }
    let mut items: HashMap<WorkloadRef, ProfileItem> = HashMap::new();
    for d in Dimension::ALL {
        let name = rules::cluster_total(d);
        let answer = query(base, &name).await?;
        if answer.is_empty() {
            missing.push(name);
        }
        snapshot
            .totals
            .set(d, answer.into_iter().map(|(_, v)| v).sum());
        for (name, field) in [
            (rules::pod_steady(d), Field::Steady),
            (rules::pod_startup(d), Field::Startup),
            (rules::workload_current(d), Field::Current),
        ] {
            for (labels, value) in query(base, &name).await? {
                let Some(w) = workload_of(&labels) else {
                    continue;
                };
                let entry = entry(&mut items, w, &labels);
                let load: &mut Load = match field {
                    Field::Steady => &mut entry.steady,
                    Field::Startup => &mut entry.startup,
                    Field::Current => &mut entry.current,
                };
                load.set(d, value);
            }
        }
    }
    for (name, is_pods) in [
        (rules::WORKLOAD_PODS, true),
        (rules::WORKLOAD_MINUTES, false),
    ] {
        for (labels, value) in query(base, name).await? {
            let Some(w) = workload_of(&labels) else {
                continue;
            };
            let entry = entry(&mut items, w, &labels);
            // Counts of pods and minutes: whole numbers.
            let whole = value.round() as u64;
            if is_pods {
                entry.pods = whole;
            } else {
                entry.minutes = whole;
                entry.measured_seconds = whole * 60;
            }
        }
    }
    // Each measured workload's image: the one its newest pod runs. An image alone is no
    // profile, so workloads measured in no dimension are not added.
    let mut newest: HashMap<WorkloadRef, f64> = HashMap::new();
    for (labels, started) in query(base, rules::WORKLOAD_IMAGE).await? {
        let (Some(w), Some(image)) = (workload_of(&labels), labels.get(rules::LABEL_IMAGE)) else {
            continue;
        };
        let Some(item) = items.get_mut(&w) else {
            continue;
        };
        if newest.get(&w).is_none_or(|&at| started > at) {
            item.image.clone_from(image);
            newest.insert(w, started);
        }
    }
    snapshot.workloads = items;
    snapshot.index_images();
    if let Some(first) = missing.first() {
        snapshot.missing = Some(match missing.len() {
            1 => format!("Prometheus has no series for {first}"),
            n => format!("Prometheus has no series for {first} (+{} more)", n - 1),
        });
    }
    Ok(snapshot)
}

enum Field {
    Steady,
    Startup,
    Current,
}

fn entry<'a>(
    items: &'a mut HashMap<WorkloadRef, ProfileItem>,
    workload: WorkloadRef,
    labels: &HashMap<String, String>,
) -> &'a mut ProfileItem {
    let item = items
        .entry(workload.clone())
        .or_insert_with(|| ProfileItem {
            workload,
            image: String::new(),
            pods: 0,
            minutes: 0,
            measured_seconds: 0,
            steady: Load::ZERO,
            startup: Load::ZERO,
            current: Load::ZERO,
        });
    if item.image.is_empty()
        && let Some(image) = labels.get(rules::LABEL_IMAGE)
    {
        item.image.clone_from(image);
    }
    item
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vectors_and_errors() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"namespace":"a","workload_kind":"Deployment","workload":"w"},"value":[1700000000.1,"2.5"]},
            {"metric":{},"value":[1700000000.1,"NaN"]}]}}"#;
        let samples = parse_response(ok).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].1, 2.5);
        assert_eq!(samples[1].1, 0.0, "NaN counts as zero");
        assert_eq!(
            workload_of(&samples[0].0).unwrap().to_string(),
            "Deployment a/w"
        );
        assert_eq!(workload_of(&samples[1].0), None);

        let err =
            parse_response(br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .unwrap_err();
        assert_eq!(err, "status error: parse error");
        let err =
            parse_response(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .unwrap_err();
        assert_eq!(err, "expected a vector, got matrix");
        assert!(
            parse_response(b"<html>")
                .unwrap_err()
                .starts_with("not a Prometheus API response")
        );
    }
}
