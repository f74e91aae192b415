//! Which priority level a workload's requests land in: its pods' service account matched
//! against the FlowSchemas as the API server matches them — the schema of the lowest
//! `matchingPrecedence` (ties by name) with a rule whose subjects include the service
//! account and whose resource rules cover its requests. A workload's requests are taken
//! to be general ones (get/list/watch of any resource): a schema narrowed to some
//! resources or verbs (the leader-election ones) does not decide its level.
//!
//! Read in the shape every served version shares (`flowcontrol.apiserver.k8s.io`
//! v1beta1 through v1), so one reader serves 1.20's v1beta1 and today's v1.

use serde::Deserialize;

/// API server's default for a FlowSchema without `matchingPrecedence`.
const DEFAULT_PRECEDENCE: i64 = 1000;

#[derive(Clone, Debug, Deserialize)]
pub struct FlowSchemaList {
    pub items: Vec<FlowSchema>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FlowSchema {
    pub metadata: Metadata,
    pub spec: FlowSchemaSpec,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Metadata {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowSchemaSpec {
    pub matching_precedence: Option<i64>,
    pub priority_level_configuration: Named,
    #[serde(default)]
    pub rules: Vec<Rules>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    #[serde(default)]
    pub subjects: Vec<Subject>,
    #[serde(default)]
    pub resource_rules: Vec<ResourceRule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subject {
    pub kind: String,
    pub user: Option<Named>,
    pub group: Option<Named>,
    pub service_account: Option<ServiceAccountSubject>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServiceAccountSubject {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub cluster_scope: bool,
}

/// The schema and priority level a service account's general requests land in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub flow_schema: String,
    pub priority_level: String,
}

/// Where `namespace/service_account`'s requests go, or `None` when no schema takes them
/// (the API server then rejects them: a cluster without the catch-all schema).
pub fn place(schemas: &[FlowSchema], namespace: &str, service_account: &str) -> Option<Placement> {
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let groups = [
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_owned(),
    ];
    let mut ordered: Vec<&FlowSchema> = schemas.iter().collect();
    ordered.sort_by(|a, b| {
        let precedence = |s: &FlowSchema| s.spec.matching_precedence.unwrap_or(DEFAULT_PRECEDENCE);
        precedence(a)
            .cmp(&precedence(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    ordered
        .into_iter()
        .find(|schema| {
            schema.spec.rules.iter().any(|rules| {
                rules
                    .subjects
                    .iter()
                    .any(|s| subject_matches(s, &user, &groups, namespace, service_account))
                    && rules
                        .resource_rules
                        .iter()
                        .any(|r| covers_general(r, namespace))
            })
        })
        .map(|schema| Placement {
            flow_schema: schema.metadata.name.clone(),
            priority_level: schema.spec.priority_level_configuration.name.clone(),
        })
}

fn subject_matches(
    subject: &Subject,
    user: &str,
    groups: &[String],
    namespace: &str,
    service_account: &str,
) -> bool {
    match subject.kind.as_str() {
        "User" => subject
            .user
            .as_ref()
            .is_some_and(|u| u.name == "*" || u.name == user),
        "Group" => subject
            .group
            .as_ref()
            .is_some_and(|g| g.name == "*" || groups.contains(&g.name)),
        "ServiceAccount" => subject.service_account.as_ref().is_some_and(|sa| {
            sa.namespace == namespace && (sa.name == "*" || sa.name == service_account)
        }),
        _ => false,
    }
}

/// Whether a rule takes list/watch/get of any resource in `namespace`.
fn covers_general(rule: &ResourceRule, namespace: &str) -> bool {
    let any = |list: &[String]| list.iter().any(|v| v == "*");
    let verbs = any(&rule.verbs)
        || ["get", "list", "watch"]
            .iter()
            .all(|verb| rule.verbs.iter().any(|v| v == verb));
    let namespaced = any(&rule.namespaces) || rule.namespaces.iter().any(|n| n == namespace);
    verbs && any(&rule.api_groups) && any(&rule.resources) && namespaced
}
