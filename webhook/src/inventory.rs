//! The node inventory, and which nodes a DaemonSet's pods can run on: nodeSelector,
//! required node affinity, and taints against tolerations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec, Taint, Toleration};
use serde::Deserialize;

use crate::error::Error;

/// Nodes that look alike, counted once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeGroup {
    /// The node's name (for `matchFields`); empty for stand-in nodes.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub count: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inventory {
    pub groups: Vec<NodeGroup>,
}

impl Inventory {
    /// `n` stand-in nodes: Linux, no taints, the well-known os/arch labels.
    pub fn uniform(n: u64) -> Inventory {
        let labels = [
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Inventory {
            groups: vec![NodeGroup {
                name: String::new(),
                labels,
                taints: Vec::new(),
                count: n,
            }],
        }
    }

    pub fn from_nodes(nodes: impl IntoIterator<Item = Node>) -> Inventory {
        let groups = nodes
            .into_iter()
            .map(|node| NodeGroup {
                name: node.metadata.name.unwrap_or_default(),
                labels: node.metadata.labels.unwrap_or_default(),
                taints: node.spec.and_then(|s| s.taints).unwrap_or_default(),
                count: 1,
            })
            .collect();
        Inventory { groups }
    }

    /// Parses `kubectl get nodes -o yaml|json` output (a `List`/`NodeList`) or a stream of
    /// `Node` documents.
    pub fn parse(path: &str, text: &str) -> Result<Inventory, Error> {
        let invalid = |message: String| Error::InvalidNodes {
            path: path.to_owned(),
            message,
        };
        let mut nodes = Vec::new();
        for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| invalid(format!("document {}: {e}", i + 1)))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            let items = match kind {
                "Node" => vec![value],
                "List" | "NodeList" => match value.get("items") {
                    Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                    _ => Vec::new(),
                },
                other => {
                    return Err(invalid(format!(
                        "document {}: kind `{other}`, expected Node, NodeList or List",
                        i + 1
                    )));
                }
            };
            for item in items {
                let node: Node = serde_yaml::from_value(item)
                    .map_err(|e| invalid(format!("document {}: not a Node: {e}", i + 1)))?;
                nodes.push(node);
            }
        }
        Ok(Inventory::from_nodes(nodes))
    }

    pub fn total(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// How many nodes a DaemonSet with this pod spec runs a pod on.
    pub fn eligible_nodes(&self, spec: &PodSpec) -> u64 {
        let tolerations: Vec<Toleration> = spec
            .tolerations
            .iter()
            .flatten()
            .cloned()
            .chain(daemonset_default_tolerations(
                spec.host_network.unwrap_or(false),
            ))
            .collect();
        self.groups
            .iter()
            .filter(|g| node_selector_matches(spec, g))
            .filter(|g| required_affinity_matches(spec, g))
            .filter(|g| taints_tolerated(&g.taints, &tolerations))
            .map(|g| g.count)
            .sum()
    }
}

/// Tolerations the DaemonSet controller adds to every DaemonSet pod (Kubernetes'
/// `AddOrUpdateDaemonPodTolerations`), with network-unavailable for hostNetwork pods only.
fn daemonset_default_tolerations(host_network: bool) -> impl Iterator<Item = Toleration> {
    let network = host_network.then_some(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .into_iter()
    .chain(network)
    .map(|(key, effect)| Toleration {
        key: Some(key.to_owned()),
        operator: Some("Exists".to_owned()),
        effect: Some(effect.to_owned()),
        ..Toleration::default()
    })
}

fn node_selector_matches(spec: &PodSpec, node: &NodeGroup) -> bool {
    spec.node_selector
        .iter()
        .flatten()
        .all(|(k, v)| node.labels.get(k) == Some(v))
}

fn required_affinity_matches(spec: &PodSpec, node: &NodeGroup) -> bool {
    let Some(selector) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    // Terms are ORed; a term with no requirement matches nothing.
    selector.node_selector_terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!expressions.is_empty() || !fields.is_empty())
            && expressions
                .iter()
                .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)))
            && fields.iter().all(|r| {
                let value = (r.key == "metadata.name" && !node.name.is_empty())
                    .then_some(node.name.as_str());
                requirement_matches(r, value)
            })
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let as_int = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(as_int),
                values.first().and_then(|b| as_int(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

fn taints_tolerated(taints: &[Taint], tolerations: &[Toleration]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    // An empty or absent operator means Equal, as in the API.
    match tol.operator.as_deref().unwrap_or_default() {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" | "" => {
            key == taint.key
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
