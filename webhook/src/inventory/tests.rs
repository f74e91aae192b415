use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

use super::*;

fn group(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)], count: u64) -> NodeGroup {
    NodeGroup {
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        taints: taints
            .iter()
            .map(|(key, effect)| Taint {
                key: (*key).to_owned(),
                effect: (*effect).to_owned(),
                value: None,
                time_added: None,
            })
            .collect(),
        count,
    }
}

/// 100 linux workers, 3 tainted control-plane nodes, 10 gpu nodes tainted, 5 windows nodes.
fn cluster() -> Inventory {
    Inventory {
        groups: vec![
            group(
                "",
                &[
                    ("kubernetes.io/os", "linux"),
                    ("pool", "general"),
                    ("cores", "16"),
                ],
                &[],
                100,
            ),
            group(
                "cp-1",
                &[
                    ("kubernetes.io/os", "linux"),
                    ("node-role.kubernetes.io/control-plane", ""),
                ],
                &[("node-role.kubernetes.io/control-plane", "NoSchedule")],
                3,
            ),
            group(
                "",
                &[
                    ("kubernetes.io/os", "linux"),
                    ("pool", "gpu"),
                    ("cores", "64"),
                ],
                &[
                    ("nvidia.com/gpu", "NoSchedule"),
                    ("soft", "PreferNoSchedule"),
                ],
                10,
            ),
            group("", &[("kubernetes.io/os", "windows")], &[], 5),
        ],
    }
}

fn expr(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn with_affinity(terms: Vec<NodeSelectorTerm>) -> PodSpec {
    PodSpec {
        affinity: Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: terms,
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        }),
        ..PodSpec::default()
    }
}

fn term(expressions: Vec<NodeSelectorRequirement>) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: Some(expressions),
        match_fields: None,
    }
}

fn toleration(key: Option<&str>, operator: &str, effect: Option<&str>) -> Toleration {
    Toleration {
        key: key.map(str::to_owned),
        operator: Some(operator.to_owned()),
        effect: effect.map(str::to_owned),
        ..Toleration::default()
    }
}

#[test]
fn untainted_nodes_only_without_tolerations() {
    assert_eq!(cluster().total(), 118);
    assert_eq!(cluster().eligible_nodes(&PodSpec::default()), 105);
}

#[test]
fn node_selector_must_match_every_label() {
    let mut spec = PodSpec {
        node_selector: Some([("kubernetes.io/os".to_owned(), "linux".to_owned())].into()),
        ..PodSpec::default()
    };
    assert_eq!(cluster().eligible_nodes(&spec), 100);
    spec.node_selector
        .as_mut()
        .unwrap()
        .insert("pool".to_owned(), "gpu".to_owned());
    assert_eq!(cluster().eligible_nodes(&spec), 0, "gpu nodes are tainted");
    spec.tolerations = Some(vec![toleration(Some("nvidia.com/gpu"), "Exists", None)]);
    assert_eq!(cluster().eligible_nodes(&spec), 10);
}

#[test]
fn tolerate_everything() {
    let spec = PodSpec {
        tolerations: Some(vec![toleration(None, "Exists", None)]),
        ..PodSpec::default()
    };
    assert_eq!(cluster().eligible_nodes(&spec), 118);
}

#[test]
fn toleration_effect_and_value_must_match() {
    let wrong_effect = PodSpec {
        tolerations: Some(vec![toleration(
            Some("nvidia.com/gpu"),
            "Exists",
            Some("NoExecute"),
        )]),
        ..PodSpec::default()
    };
    assert_eq!(cluster().eligible_nodes(&wrong_effect), 105);
    let mut equal = toleration(
        Some("node-role.kubernetes.io/control-plane"),
        "Equal",
        Some("NoSchedule"),
    );
    equal.value = Some("x".to_owned());
    let wrong_value = PodSpec {
        tolerations: Some(vec![equal.clone()]),
        ..PodSpec::default()
    };
    assert_eq!(cluster().eligible_nodes(&wrong_value), 105);
    equal.value = None;
    let right = PodSpec {
        tolerations: Some(vec![equal]),
        ..PodSpec::default()
    };
    assert_eq!(cluster().eligible_nodes(&right), 108);
}

#[test]
fn daemonset_default_tolerations_cover_cordoned_nodes() {
    let inventory = Inventory {
        groups: vec![group(
            "",
            &[],
            &[("node.kubernetes.io/unschedulable", "NoSchedule")],
            4,
        )],
    };
    assert_eq!(inventory.eligible_nodes(&PodSpec::default()), 4);
}

#[test]
fn affinity_operators() {
    let c = cluster();
    let count = |e: Vec<NodeSelectorRequirement>| c.eligible_nodes(&with_affinity(vec![term(e)]));
    assert_eq!(count(vec![expr("pool", "In", &["general", "gpu"])]), 100);
    assert_eq!(
        count(vec![expr("pool", "NotIn", &["general"])]),
        5,
        "windows nodes lack `pool`"
    );
    assert_eq!(count(vec![expr("pool", "Exists", &[])]), 100);
    assert_eq!(count(vec![expr("pool", "DoesNotExist", &[])]), 5);
    assert_eq!(count(vec![expr("cores", "Gt", &["8"])]), 100);
    assert_eq!(count(vec![expr("cores", "Lt", &["8"])]), 0);
    assert_eq!(
        count(vec![expr("cores", "Gt", &["x"])]),
        0,
        "non-integer bound matches nothing"
    );
    assert_eq!(count(vec![expr("pool", "Bogus", &[])]), 0);
    assert_eq!(
        count(vec![
            expr("kubernetes.io/os", "In", &["linux"]),
            expr("pool", "Exists", &[])
        ]),
        100,
        "expressions in a term are ANDed"
    );
}

#[test]
fn affinity_terms_are_ored_and_empty_terms_match_nothing() {
    let c = cluster();
    let spec = with_affinity(vec![
        term(vec![expr("kubernetes.io/os", "In", &["windows"])]),
        term(vec![expr("pool", "In", &["general"])]),
    ]);
    assert_eq!(c.eligible_nodes(&spec), 105);
    assert_eq!(c.eligible_nodes(&with_affinity(vec![term(vec![])])), 0);
    assert_eq!(c.eligible_nodes(&with_affinity(vec![])), 0);
}

#[test]
fn match_fields_by_node_name() {
    let spec = with_affinity(vec![NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![expr("metadata.name", "In", &["cp-1"])]),
    }]);
    let mut tolerant = spec.clone();
    tolerant.tolerations = Some(vec![toleration(None, "Exists", None)]);
    assert_eq!(cluster().eligible_nodes(&spec), 0, "cp-1 is tainted");
    assert_eq!(cluster().eligible_nodes(&tolerant), 3);
}

#[test]
fn uniform_inventory_has_linux_labels() {
    let inventory = Inventory::uniform(5000);
    assert_eq!(inventory.total(), 5000);
    let spec = PodSpec {
        node_selector: Some([("kubernetes.io/os".to_owned(), "linux".to_owned())].into()),
        ..PodSpec::default()
    };
    assert_eq!(inventory.eligible_nodes(&spec), 5000);
}

#[test]
fn parses_node_lists_and_node_streams() {
    let list = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: a, labels: {kubernetes.io/os: linux}}
- apiVersion: v1
  kind: Node
  metadata: {name: b}
  spec:
    taints: [{key: dedicated, value: infra, effect: NoSchedule}]
"#;
    let inventory = Inventory::parse("nodes.yaml", list).unwrap();
    assert_eq!(inventory.total(), 2);
    assert_eq!(inventory.groups[1].taints[0].key, "dedicated");
    assert_eq!(inventory.eligible_nodes(&PodSpec::default()), 1);

    let stream = "kind: Node\nmetadata: {name: a}\n---\nkind: Node\nmetadata: {name: b}\n";
    assert_eq!(Inventory::parse("n", stream).unwrap().total(), 2);

    let err = Inventory::parse("n.yaml", "kind: Pod\nmetadata: {name: a}\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "nodes n.yaml: document 1: kind `Pod`, expected Node, NodeList or List"
    );
}

#[test]
fn an_empty_operator_means_equal() {
    let mut nodes = Inventory {
        groups: vec![group("", &[], &[("dedicated", "NoSchedule")], 4)],
    };
    nodes.groups[0].taints[0].value = Some("infra".to_owned());
    let with = |operator: &str, value: &str| PodSpec {
        tolerations: Some(vec![Toleration {
            value: Some(value.to_owned()),
            ..toleration(Some("dedicated"), operator, Some("NoSchedule"))
        }]),
        ..PodSpec::default()
    };
    assert_eq!(nodes.eligible_nodes(&with("", "infra")), 4);
    assert_eq!(nodes.eligible_nodes(&with("Equal", "infra")), 4);
    assert_eq!(nodes.eligible_nodes(&with("", "other")), 0);
    let absent = PodSpec {
        tolerations: Some(vec![Toleration {
            key: Some("dedicated".to_owned()),
            value: Some("infra".to_owned()),
            ..Toleration::default()
        }]),
        ..PodSpec::default()
    };
    assert_eq!(nodes.eligible_nodes(&absent), 4);
}

#[test]
fn network_unavailable_is_tolerated_by_host_network_pods_only() {
    let nodes = Inventory {
        groups: vec![
            group("", &[], &[], 10),
            group(
                "",
                &[],
                &[("node.kubernetes.io/network-unavailable", "NoSchedule")],
                3,
            ),
        ],
    };
    assert_eq!(nodes.eligible_nodes(&PodSpec::default()), 10);
    let host_network = PodSpec {
        host_network: Some(true),
        ..PodSpec::default()
    };
    assert_eq!(nodes.eligible_nodes(&host_network), 13);
}
